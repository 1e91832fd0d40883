//! `limmat tunnel --config tunnel.toml`: several tunnels ("services") in one process and one
//! runtime, the way frp and rathole work, reloaded on SIGHUP without touching the services
//! that did not change.
//!
//! **One definition per key.** A `[[service]]` table is turned into the command line that
//! `limmat tunnel` would take (`mode`, `local`, `relay`, `domain` as the positional arguments,
//! every other key `snake_case` as its `--kebab-case` flag) and parsed by the same clap
//! definition, [`TunnelArgs`]. So a file key cannot drift from its flag: it goes through the
//! flag's parser and default, and a new tunnel flag is a file key at once. What the command
//! line cannot say (a key that is no flag, a missing `domain`, a bad `mode`) is checked here
//! first, so that every error names the file, the service (1-based, in file order) and the key.
//!
//! **Reload.** A service is identified by its whole definition. On SIGHUP the file is read
//! again: services whose definition is unchanged keep running untouched; removed or changed
//! ones are stopped (and waited for, so that a changed client-mode service can bind its port
//! again), then new or changed ones are started. A file that does not load leaves everything
//! as it is and logs why.
//!
//! **Mux connections.** Services do not share a limmat-mux/1 connection, even on one relay:
//! the mux handshake is `POST /<domain>` (spec 5.1) and the relay admits, counts and routes a
//! mux connection for that one domain (4.4, 5.8), so each service with mux holds its own
//! connection(s) — `mux_connections` of them — to its relay.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, FromArgMatches};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::tunnel::{self, Mode, TunnelArgs};
use crate::tunnel_status::{self, Board};

/// Top-level keys: the services, and the defaults every service takes unless it sets its own.
const TOP_KEYS: [&str; 3] = ["service", "relay", "secret_key"];
/// The keys that are positional arguments on the command line, in their order.
const POSITIONAL: [&str; 4] = ["mode", "local", "relay", "domain"];
/// Flags that make no sense inside a service.
const NOT_SERVICE_KEYS: [&str; 3] = ["config", "status", "help"];
/// How long a stopped service gets to close its connections before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One `[[service]]` of the file, parsed.
pub(crate) struct Service {
    /// Its place in the file, from 1.
    pub(crate) index: usize,
    /// Its parsed settings, written out (domains case-folded, durations parsed): its identity
    /// across reloads. It holds the key: never log it.
    argv: String,
    /// What `limmat tunnel` parsed from it.
    pub(crate) args: TunnelArgs,
    /// Its domain, else its local address: the name in its log lines.
    pub(crate) label: String,
}

/// Reads and checks every service of `file`; an error names the file, the service and the key.
pub(crate) fn load(file: &Path) -> anyhow::Result<Vec<Service>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the tunnel configuration {}", file.display()))?;
    parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// The services of a configuration text.
fn parse(text: &str) -> Result<Vec<Service>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    for key in table.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            return Err(unknown(key, TOP_KEYS.iter()));
        }
    }
    let default = |key: &str| match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{key}` = {other}: expected a string")),
    };
    let defaults = Defaults {
        relay: default("relay")?,
        secret_key: default("secret_key")?,
    };
    let services = match table.get("service") {
        None => return Err("no [[service]]: add at least one".into()),
        Some(toml::Value::Array(services)) => services,
        Some(_) => return Err("`service` must be an array of tables: write [[service]]".into()),
    };
    let command = TunnelArgs::augment_args(clap::Command::new("tunnel").no_binary_name(true));
    let mut seen = HashSet::new();
    let mut parsed = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let index = i + 1;
        let toml::Value::Table(service) = service else {
            return Err(format!("service {index}: expected a table ([[service]])"));
        };
        let service = one(service, &defaults, &command, index)
            .map_err(|e| format!("service {index}: {e}"))?;
        if let Some(first) = seen.replace(service.argv.clone()) {
            let same = parsed.iter().find(|s: &&Service| s.argv == first);
            let first = same.map_or(0, |s| s.index);
            return Err(format!(
                "service {index} is the same as service {first}: remove one"
            ));
        }
        parsed.push(service);
    }
    Ok(parsed)
}

/// The top-level defaults.
struct Defaults {
    relay: Option<String>,
    secret_key: Option<String>,
}

/// One service table as `limmat tunnel`'s command line, then parsed by it.
fn one(
    table: &toml::Table,
    defaults: &Defaults,
    command: &clap::Command,
    index: usize,
) -> Result<Service, String> {
    let flags: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_SERVICE_KEYS.contains(l))
        .map(|l| l.replace('-', "_"))
        .collect();
    let known = || {
        POSITIONAL
            .iter()
            .copied()
            .chain(flags.iter().map(String::as_str))
    };
    for key in table.keys() {
        if !known().any(|k| k == key) {
            let names: Vec<&str> = known().collect();
            return Err(unknown(key, names.iter()));
        }
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        table.get(key).map(|v| scalar(key, v)).transpose()
    };
    let mode_name = text("mode")?.ok_or("missing key `mode` (server, proxy, client or egress)")?;
    let mode = <Mode as clap::ValueEnum>::from_str(&mode_name, true).map_err(|_| {
        format!("`mode` = {mode_name:?}: not a mode; expected server, proxy, client or egress")
    })?;
    let local = text("local")?.ok_or("missing key `local` (host:port)")?;
    let mut argv = vec![mode_name.to_ascii_lowercase(), local.clone()];
    let domain = text("domain")?;
    let label = if mode == Mode::Egress {
        if let Some(relay) = table.get("relay") {
            return Err(format!(
                "`relay` = {relay}: egress mode reaches the relay as `egress_proxy`"
            ));
        }
        if let Some(domain) = &domain {
            argv.push(format!("--domain={domain}"));
        }
        local
    } else {
        let relay = text("relay")?
            .or_else(|| defaults.relay.clone())
            .ok_or("missing key `relay` (and no top-level `relay`)")?;
        let domain = domain.ok_or("missing key `domain`")?;
        argv.extend([relay, domain.clone()]);
        domain
    };
    let key = text("secret_key")?.or_else(|| {
        // A client does not register, so it has no use for the default key.
        (mode != Mode::Client)
            .then(|| defaults.secret_key.clone())
            .flatten()
    });
    if let Some(key) = key {
        argv.push(format!("--secret-key={key}"));
    }
    for (key, value) in table {
        if POSITIONAL.contains(&key.as_str()) || key == "secret_key" {
            continue;
        }
        let long = key.replace('_', "-");
        let takes_value = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .is_some_and(|a| a.get_action().takes_values());
        if takes_value {
            argv.push(format!("--{long}={}", scalar(key, value)?));
        } else {
            match value {
                toml::Value::Boolean(true) => argv.push(format!("--{long}")),
                toml::Value::Boolean(false) => {}
                other => return Err(format!("`{key}` = {other}: expected true or false")),
            }
        }
    }
    let matches = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| clap_problem(&e))?;
    let args = TunnelArgs::from_arg_matches(&matches).map_err(|e| clap_problem(&e))?;
    let label = args.domain.clone().unwrap_or(label);
    Ok(Service {
        index,
        argv: format!("{args:?}"),
        args,
        label,
    })
}

/// A key's value as the text of its flag; tables and arrays are no flag values.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "`{key}` = {other}: expected a string, number or boolean"
        )),
    }
}

/// An unknown key, with the nearest known one.
fn unknown<'a>(key: &str, known: impl Iterator<Item = &'a &'a str>) -> String {
    match crate::settings::suggest(key, known) {
        Some(near) => format!("unknown key `{key}` (did you mean `{near}`?)"),
        None => format!("unknown key `{key}`"),
    }
}

/// clap's first line, without its `error: ` prefix: it names the flag and the problem.
fn clap_problem(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// With `--config` the tunnel's settings are the file's: a flag given beside it would be
/// ignored without a word, so it is refused.
fn only_config(args: &TunnelArgs) -> anyhow::Result<()> {
    let command = TunnelArgs::augment_args(clap::Command::new("tunnel").no_binary_name(true));
    let bare = command
        .try_get_matches_from(["--config", "-"])
        .and_then(|m| TunnelArgs::from_arg_matches(&m));
    let Ok(mut bare) = bare else {
        return Ok(()); // Cannot happen: the defaults parse.
    };
    bare.config = None;
    // The runtime is the process's, not a service's.
    (bare.runtime, bare.worker_threads) = (args.runtime, args.worker_threads);
    if format!("{bare:?}") != format!("{args:?}") {
        anyhow::bail!(
            "with --config, give the tunnel's arguments and flags in the file (each [[service]], \
             or the top-level relay and secret_key); only --status, --runtime and \
             --worker-threads go beside it"
        );
    }
    Ok(())
}

/// A service that runs.
struct Running {
    id: u64,
    index: usize,
    argv: String,
    label: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs every service of `file` until `shutdown`, reloading the file on SIGHUP. A service that
/// cannot start at launch stops everything with its error; after a reload it is logged.
pub(crate) async fn run(mut args: TunnelArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (Some(file), status) = (args.config.take(), args.status.take()) else {
        anyhow::bail!("--config FILE is missing");
    };
    only_config(&args)?;
    let services = load(&file)?;
    let board = Arc::new(Board::default());
    let server = match status {
        Some(addr) => {
            Some(tunnel_status::serve(addr, board.clone(), shutdown.child_token()).await?)
        }
        None => None,
    };
    let result = run_services(file, services, board, shutdown).await;
    if let Some(server) = server {
        server.abort();
        let _ = server.await;
    }
    result
}

/// Runs `services`, then the reloads of `file`, each service listed on `board`.
async fn run_services(
    file: PathBuf,
    services: Vec<Service>,
    board: Arc<Board>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<(u64, anyhow::Result<()>)>();
    let mut running: Vec<Running> = Vec::new();
    let mut next_id = 0u64;
    let mut start = |service: Service, running: &mut Vec<Running>| {
        next_id += 1;
        let (id, ended_tx) = (next_id, ended_tx.clone());
        let stop = shutdown.child_token();
        let span = info_span!("service", name = %service.label);
        let work = tunnel::run_listed(service.args, stop.clone(), board.clone());
        let task = tokio::spawn(
            async move {
                let _ = ended_tx.send((id, work.await));
            }
            .instrument(span),
        );
        info!(index = service.index, name = %service.label, "service started");
        running.push(Running {
            id,
            index: service.index,
            argv: service.argv,
            label: service.label,
            stop,
            task,
        });
    };
    info!(file = %file.display(), services = services.len(), "tunnel services starting");
    for service in services {
        start(service, &mut running);
    }
    let mut reloaded = false;
    loop {
        #[cfg(unix)]
        let hup = hangup.recv();
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = hup => {
                reloaded = true;
                let services = match load(&file) {
                    Ok(services) => services,
                    Err(e) => {
                        warn!("not reloaded, the services keep running as they are: {e:#}");
                        continue;
                    }
                };
                let wanted: HashSet<&String> = services.iter().map(|s| &s.argv).collect();
                let (keep, gone): (Vec<_>, Vec<_>) =
                    running.drain(..).partition(|r| wanted.contains(&r.argv));
                let stopped = gone.len();
                for old in gone {
                    old.stop.cancel();
                    if tokio::time::timeout(STOP_GRACE, old.task).await.is_err() {
                        warn!(name = %old.label, "service did not stop in time");
                    }
                    info!(index = old.index, name = %old.label, "service stopped");
                }
                running = keep;
                let unchanged = running.len();
                let mut started = 0;
                for service in services {
                    if running.iter().all(|r| r.argv != service.argv) {
                        started += 1;
                        start(service, &mut running);
                    }
                }
                info!(file = %file.display(), started, stopped, unchanged, "tunnel services reloaded");
            }
            Some((id, result)) = ended.recv() => {
                let Some(at) = running.iter().position(|r| r.id == id) else {
                    continue; // stopped by a reload
                };
                let service = running.remove(at);
                match result {
                    Err(e) if !reloaded => {
                        for other in &running {
                            other.stop.cancel();
                        }
                        for other in running {
                            let _ = other.task.await;
                        }
                        return Err(anyhow!(
                            "{}: service {} ({}): {e:#}",
                            file.display(),
                            service.index,
                            service.label
                        ));
                    }
                    Err(e) => error!(index = service.index, name = %service.label, "service failed: {e:#}"),
                    Ok(()) => info!(index = service.index, name = %service.label, "service ended"),
                }
            }
        }
    }
    for service in running {
        service.stop.cancel();
        let _ = service.task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn services_take_the_tunnel_flags() {
        let services = parse(
            r#"
relay = "relay.example.com:8080"
secret_key = "top"

[[service]]
mode = "server"
local = "127.0.0.1:8000"
domain = "Web"
transport = "mux"
min_listeners = 3
mux_ping_interval = "10s"

[[service]]
mode = "proxy"
local = "127.0.0.1:22"
relay = "tls:other:443"
domain = "ssh"
secret_key = "own"
no_certificate_verification = true

[[service]]
mode = "client"
local = "127.0.0.1:10022"
domain = "ssh"

[[service]]
mode = "egress"
local = "127.0.0.1:3128"
egress_proxy = "http://relay.example.com:8080"
domain = "web"
"#,
        )
        .unwrap();
        assert_eq!(services.len(), 4);
        let web = &services[0].args;
        assert_eq!(web.mode, Some(Mode::Server));
        assert_eq!(services[0].label, "web");
        assert_eq!(web.relay.as_ref().unwrap().port, 8080);
        assert_eq!(web.domain.as_deref(), Some("web"));
        assert_eq!(web.secret_key.as_deref(), Some("top"));
        assert_eq!(web.min_listeners, 3);
        assert_eq!(web.mux_ping_interval, Duration::from_secs(10));
        assert_eq!(web.transport, limmat_agent::Transport::Mux);
        let ssh = &services[1].args;
        assert!(ssh.relay.as_ref().unwrap().tls && ssh.no_certificate_verification);
        assert_eq!(ssh.secret_key.as_deref(), Some("own"));
        assert_eq!(
            services[2].args.secret_key, None,
            "a client takes no default key"
        );
        let egress = &services[3].args;
        assert_eq!(egress.egress_domain.as_deref(), Some("web"));
        assert!(egress.relay.is_none() && egress.domain.is_none());
    }

    /// The example loads, and every key it shows (commented or not) is a key of a service.
    #[test]
    fn the_example_loads_and_names_real_keys() {
        let example = include_str!("../../../examples/tunnel.toml");
        let services = parse(example).unwrap();
        assert_eq!(services.len(), 2);
        let uncommented: String = example
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.contains('…') && !l.starts_with("mode = \"egress"))
            .map(|l| format!("{l}\n"))
            .collect();
        // Each commented key, set on the first service, must parse (values as shown).
        for line in uncommented.lines().filter(|l| l.contains(" = ")) {
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            let key = key.trim();
            if TOP_KEYS.contains(&key) || key.contains(' ') || key.contains('#') {
                continue;
            }
            let text = format!(
                "relay = \"r\"\n[[service]]\nmode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"d\"\n{}\n",
                line.split('#').next().unwrap_or(line).trim()
            );
            let Err(e) = parse(&text) else { continue };
            assert!(
                !e.contains("unknown key"),
                "examples/tunnel.toml shows {key}: {e}"
            );
        }
    }

    #[test]
    fn errors_name_the_service_and_the_key() {
        let base = "relay = \"r\"\n[[service]]\nmode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"a\"\n[[service]]\n";
        for (second, expected) in [
            (
                "mode = \"server\"\nlocal = \"127.0.0.1:1\"\n",
                "service 2: missing key `domain`",
            ),
            (
                "mode = \"sever\"\nlocal = \"127.0.0.1:1\"\ndomain = \"b\"\n",
                "service 2: `mode` = \"sever\": not a mode",
            ),
            (
                "mode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"b\"\nmin_listener = 2\n",
                "service 2: unknown key `min_listener` (did you mean `min_listeners`?)",
            ),
            (
                "mode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"b\"\nmin_listeners = 0\n",
                "service 2: invalid value '0' for '--min-listeners <N>'",
            ),
            (
                "mode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"b\"\nconfig = \"x\"\n",
                "service 2: unknown key `config`",
            ),
            (
                "mode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"A\"\n",
                "service 2 is the same as service 1",
            ),
            (
                "mode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"b\"\nno_certificate_verification = 1\n",
                "expected true or false",
            ),
        ] {
            let e = err(&format!("{base}{second}"));
            assert!(e.contains(expected), "{second}: {e}");
        }
        assert!(err("relay = \"r\"\n").contains("no [[service]]"));
        assert!(err("rellay = \"r\"\n[[service]]\n").contains("did you mean `relay`"));
        assert!(
            err("[[service]]\nmode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"b\"\n")
                .contains("missing key `relay`")
        );
    }
}
