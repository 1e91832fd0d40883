//! `limmat tunnel (server|proxy|client) <local> <relay> <domain>`: the device side and its
//! client counterpart, in YalerTunnel2's argument shape (spec 2.9), so that scripts written
//! for YalerTunnel keep working; and `limmat tunnel egress <local> --egress-proxy URL`, a local
//! HTTP proxy port that sends device programs' requests through the relay's forward proxy
//! (spec 6) with the device's key.
//!
//! Arguments are parsed into typed addresses and a checked domain by clap, so a typo stops the
//! program with a message naming the bad value instead of being retried by the backoff. For
//! the same reason the TLS configuration (CA file, system roots) is loaded before anything is
//! opened.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use limmat_agent::tunnel::{self as modes, ClientConfig, TunnelClient};
use limmat_agent::{
    Agent, AgentConfig, EgressProxy, LocalAddr, ProxyAuth, RelayAddr, RelayProxy, TlsOptions,
    Transport,
};
use tokio_util::sync::CancellationToken;

use crate::tunnel_status::{self, Board, ServiceInfo};

/// Where the key is read from when `--secret-key` is not given, to keep it out of `ps`.
const SECRET_KEY_ENV: &str = "LIMMAT_SECRET_KEY";

#[derive(Args, Debug)]
pub struct TunnelArgs {
    /// server: relay clients to <LOCAL>; proxy: the same after a `CONNECT /<domain>` from a
    /// tunnel client; client: accept on <LOCAL> and tunnel to <DOMAIN>'s proxy; egress: a
    /// local HTTP proxy port on <LOCAL> whose requests go through --egress-proxy with the key.
    #[arg(value_enum, required_unless_present = "config")]
    pub(crate) mode: Option<Mode>,
    /// host:port of the local service (server, proxy) or to listen on (client). `tls:` connects
    /// to the local service over TLS (server, proxy).
    #[arg(value_name = "LOCAL", required_unless_present = "config")]
    pub(crate) local: Option<LocalAddr>,
    /// The relay, [tls:|tcp:]host[:port]. `tls:` selects TLS, and so does port 443 without a
    /// prefix; `tcp:` forces plain TCP. The port defaults to 80, or 443 with `tls:`.
    #[arg(value_name = "RELAY", required_unless_present_any = ["egress_proxy", "config"])]
    pub(crate) relay: Option<RelayAddr>,
    /// The relay domain to register (server, proxy) or to reach (client).
    #[arg(value_name = "DOMAIN", value_parser = parse_domain, required_unless_present_any = ["egress_proxy", "config"])]
    pub(crate) domain: Option<String>,
    /// egress: the relay's forward proxy, http://host[:port] (port 80 by default).
    #[arg(long, value_name = "URL", value_parser = parse_proxy_url)]
    pub(crate) egress_proxy: Option<String>,
    /// egress: the device's domain; the key is then sent as Basic <domain>:<key> instead of
    /// Bearer <key> (a key names its domain either way).
    #[arg(long = "domain", id = "egress_domain", value_name = "D", value_parser = parse_domain)]
    pub(crate) egress_domain: Option<String>,
    /// Device key, sent as `Authorization: Bearer` (server, proxy). Defaults to the
    /// LIMMAT_SECRET_KEY environment variable.
    #[arg(long, value_name = "K")]
    pub(crate) secret_key: Option<String>,
    /// Connections kept waiting at the relay (server, proxy).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    pub(crate) min_listeners: usize,
    /// Cap on waiting plus relayed connections (server, proxy), or on open tunnels (client).
    #[arg(long, value_name = "M", default_value_t = 128, value_parser = at_least_one)]
    pub(crate) max_sockets: usize,
    /// PEM file of CA certificates trusted, besides the system roots, for TLS to the relay (and
    /// to a `tls:` local service).
    #[arg(long, value_name = "F")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Do not verify TLS certificates. The connection is encrypted but anyone on the path can
    /// impersonate the relay; for tests only.
    #[arg(long, conflicts_with = "ca_file")]
    pub(crate) no_certificate_verification: bool,
    /// `transport/pass-through` (or `pass-through`): ask the relay to hand this device the
    /// raw TLS of SNI-routed clients, so that the device terminates their TLS (server, proxy).
    #[arg(long, value_name = "S", value_parser = parse_relay_security)]
    relay_security: Option<RelaySecurity>,
    /// Device transport (server, proxy): `auto` tries limmat-mux/1 (one HTTP/2 connection
    /// carries every client) and uses PTTH/1.0 for an hour with a relay that does not speak it;
    /// `mux` never falls back; `ptth` is one waiting connection per client, as with Yaler.
    #[arg(long, value_name = "ptth|mux|auto", default_value = "auto")]
    pub(crate) transport: Transport,
    /// Mux connections kept open to the relay (server, proxy; with mux or auto).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    pub(crate) mux_connections: usize,
    /// limmat-mux/1: PING the relay after this long without receiving anything, so that a dead
    /// path (a blackhole, a NAT that forgot the flow) is found; below 60 s keeps NATs open.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::units::duration)]
    pub(crate) mux_ping_interval: std::time::Duration,
    /// limmat-mux/1: a relay whose PING ACK takes longer is dead; the agent reconnects.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = crate::units::duration)]
    pub(crate) mux_ping_timeout: std::time::Duration,
    /// Reach the relay through this outbound proxy (every mode): http://[user:password@]host:port
    /// (CONNECT), https://… (TLS to the proxy), socks5://… (the agent resolves the relay) or
    /// socks5h://… (the proxy does). Without the flag the variables are read as curl reads
    /// them: https_proxy/HTTPS_PROXY for a TLS relay, http_proxy for a plain one, then
    /// all_proxy/ALL_PROXY, minus no_proxy/NO_PROXY. `none` ignores them.
    #[arg(long, value_name = "URL|none", value_parser = parse_relay_proxy)]
    pub(crate) relay_proxy: Option<RelayProxy>,
    /// Run every `[[service]]` of this TOML file in one process (keys: the flags above in
    /// snake_case, plus `mode`, `local`, `relay`, `domain`); SIGHUP reloads it.
    #[arg(long, value_name = "FILE", conflicts_with = "mode")]
    pub(crate) config: Option<PathBuf>,
    /// How a plain TCP relay connection and the local one move their bytes: `splice` in the
    /// kernel, `copy` through the tunnel, or `auto`, copying until a direction turns out to be
    /// bulk and splicing from then on (Linux; elsewhere always copy). TLS and mux copy.
    #[arg(long, value_name = "auto|splice|copy", default_value = "auto", value_parser = crate::settings::from_str::<limmat_agent::DataPath>)]
    pub(crate) data_path: limmat_agent::DataPath,
    /// How the tunnel spreads its work over threads: `current-thread` runs everything on one
    /// thread, `multi-thread` on tokio's work-stealing pool of --worker-threads.
    #[arg(long, value_name = "current-thread|multi-thread", default_value = "current-thread", value_parser = parse_runtime)]
    pub(crate) runtime: crate::runtime::Layout,
    /// Workers of `multi-thread` (0 = one per core).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = crate::runtime::threads)]
    pub(crate) worker_threads: usize,
    /// Serve the agent's state on ADDR: `GET /status` (JSON) and `GET /metrics` (Prometheus).
    /// A bare port listens on 127.0.0.1.
    #[arg(long, value_name = "ADDR", value_parser = tunnel_status::parse_status_addr)]
    pub(crate) status: Option<std::net::SocketAddr>,
}

/// `--runtime`: `per-core` is the relay's (it needs listeners to share).
fn parse_runtime(value: &str) -> Result<crate::runtime::Layout, String> {
    match value.parse()? {
        crate::runtime::Layout::PerCore => {
            Err("per-core is the relay's; the tunnel runs current-thread or multi-thread".into())
        }
        layout => Ok(layout),
    }
}

impl TunnelArgs {
    /// The runtime the tunnel runs on.
    pub(crate) fn runtime(&self) -> crate::runtime::Choice {
        crate::runtime::Choice {
            layout: self.runtime,
            threads: self.worker_threads,
        }
    }
}

fn parse_relay_proxy(value: &str) -> Result<RelayProxy, String> {
    value.parse::<RelayProxy>().map_err(|e| e.to_string())
}

/// `--relay-proxy`, or the environment as curl reads it.
fn relay_proxy(args: &TunnelArgs) -> RelayProxy {
    args.relay_proxy.clone().unwrap_or(RelayProxy::Environment)
}

/// The values of `--relay-security`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RelaySecurity {
    PassThrough,
}

fn parse_relay_security(value: &str) -> Result<RelaySecurity, String> {
    if value.eq_ignore_ascii_case("transport/pass-through")
        || value.eq_ignore_ascii_case("pass-through")
    {
        Ok(RelaySecurity::PassThrough)
    } else {
        Err(format!(
            "unknown relay security `{value}`; the only value is `transport/pass-through`"
        ))
    }
}

/// The four modes of `limmat tunnel`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Server,
    Proxy,
    Client,
    Egress,
}

/// `http://host[:port][/]` or `host:port`, as `host:port`.
fn parse_proxy_url(url: &str) -> Result<String, String> {
    let lower = url.to_ascii_lowercase();
    let rest = match lower.split_once("://") {
        Some(("http", _)) => &url[7..],
        Some((scheme, _)) => {
            return Err(format!(
                "the egress proxy is reached over http://, not {scheme}://"
            ));
        }
        None => url,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let target = limmat_wire::proxy::parse_authority(authority.as_bytes())
        .or_else(|_| limmat_wire::proxy::parse_authority(format!("{authority}:80").as_bytes()))
        .map_err(|e| format!("{url:?} is not http://host[:port]: {e}"))?;
    Ok(target.authority())
}

fn parse_domain(domain: &str) -> Result<String, limmat_wire::route::DomainError> {
    limmat_wire::route::parse_domain(domain)
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n > limmat_agent::agent::MAX_POOL => {
            Err(format!("must be at most {}", limmat_agent::agent::MAX_POOL))
        }
        Ok(n) => Ok(n),
        Err(_) => Err("must be a whole number".into()),
    }
}

/// One tunnel, and its `--status` port if asked for.
pub async fn run(args: TunnelArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let board = Arc::new(Board::default());
    let server = match args.status {
        Some(addr) => {
            Some(tunnel_status::serve(addr, board.clone(), shutdown.child_token()).await?)
        }
        None => None,
    };
    let result = run_listed(args, shutdown, board).await;
    if let Some(server) = server {
        server.abort();
        let _ = server.await;
    }
    result
}

/// One tunnel, listed on `board` while it runs.
pub(crate) async fn run_listed(
    args: TunnelArgs,
    shutdown: CancellationToken,
    board: Arc<Board>,
) -> anyhow::Result<()> {
    let (Some(mode), Some(local)) = (args.mode, args.local.clone()) else {
        anyhow::bail!("give <MODE> and <LOCAL>, or --config FILE");
    };
    if mode != Mode::Egress && (args.egress_proxy.is_some() || args.egress_domain.is_some()) {
        anyhow::bail!("--egress-proxy and --domain are for egress mode");
    }
    if matches!(mode, Mode::Server | Mode::Proxy) && local.port == 0 {
        anyhow::bail!(
            "the local address {local} has port 0: server and proxy modes connect to it, so it needs a real port",
        );
    }
    let info = ServiceInfo {
        mode: match mode {
            Mode::Server => "server",
            Mode::Proxy => "proxy",
            Mode::Client => "client",
            Mode::Egress => "egress",
        },
        domain: args.domain.clone().or_else(|| args.egress_domain.clone()),
        relay: (args.relay.as_ref().map(ToString::to_string)).or_else(|| args.egress_proxy.clone()),
        local: local.to_string(),
        transport: args.transport.to_string(),
    };
    match mode {
        Mode::Client => {
            let _listed = board.list(info, None);
            if args.secret_key.is_some() {
                tracing::warn!("--secret-key is for server and proxy modes; ignored");
            }
            if args.relay_security.is_some() {
                tracing::warn!("--relay-security is for server and proxy modes; ignored");
            }
            let mut config = ClientConfig::new(relay(&args)?, home_domain(&args)?);
            config.tls = tls_options(&args);
            config.relay_proxy = relay_proxy(&args);
            config.max_sockets = args.max_sockets;
            config.data_path = args.data_path;
            let client = TunnelClient::bind(&local, config)
                .await
                .context("cannot start the tunnel")?;
            client.run(shutdown).await;
        }
        Mode::Server => {
            let agent = agent(args)?;
            let _listed = board.list(info, Some(agent.status()));
            let run = modes::run_server(agent, local.clone(), shutdown);
            modes::with_local_check(&local, run).await;
        }
        Mode::Proxy => {
            let agent = agent(args)?;
            let _listed = board.list(info, Some(agent.status()));
            let run = modes::run_proxy(agent, local.clone(), shutdown);
            modes::with_local_check(&local, run).await;
        }
        Mode::Egress => {
            let _listed = board.list(info, None);
            run_egress(args, local, shutdown).await?;
        }
    }
    Ok(())
}

/// Egress mode: the local proxy port, until `shutdown`.
async fn run_egress(
    args: TunnelArgs,
    local: LocalAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(proxy) = args.egress_proxy.clone() else {
        anyhow::bail!("egress mode needs --egress-proxy http://relay:port");
    };
    if args.relay.is_some() || args.domain.is_some() {
        anyhow::bail!(
            "egress mode takes only <LOCAL>: give the relay as --egress-proxy and the domain as --domain"
        );
    }
    if local.tls {
        anyhow::bail!(
            "egress mode listens for plain HTTP proxy requests: give <LOCAL> without tls:"
        );
    }
    let Some(key) = secret_key(args.secret_key.clone()) else {
        anyhow::bail!("egress mode needs the device key: give --secret-key or LIMMAT_SECRET_KEY");
    };
    let auth = match args.egress_domain.clone() {
        Some(domain) => ProxyAuth::Basic { domain, key },
        None => ProxyAuth::Bearer(key),
    };
    let addr = format!("{}:{}", local.host, local.port);
    let egress = EgressProxy::bind(&addr, proxy, auth, args.max_sockets)
        .await
        .with_context(|| format!("cannot listen on {local}"))?
        .with_relay_proxy(&relay_proxy(&args))
        .context("cannot start the egress proxy")?;
    egress.run(shutdown).await;
    Ok(())
}

/// `<RELAY>`, required in every mode but egress.
fn relay(args: &TunnelArgs) -> anyhow::Result<RelayAddr> {
    args.relay
        .clone()
        .context("this mode needs <RELAY> and <DOMAIN>")
}

/// `<DOMAIN>`, required in every mode but egress.
fn home_domain(args: &TunnelArgs) -> anyhow::Result<String> {
    args.domain
        .clone()
        .context("this mode needs <RELAY> and <DOMAIN>")
}

/// `--secret-key`, else `LIMMAT_SECRET_KEY`. A key from a mounted secrets file often ends in
/// a newline; an empty variable is unset.
fn secret_key(flag: Option<String>) -> Option<String> {
    flag.or_else(|| {
        std::env::var(SECRET_KEY_ENV)
            .ok()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
    })
}

fn tls_options(args: &TunnelArgs) -> TlsOptions {
    let mut options = TlsOptions::default();
    options.ca_file = args.ca_file.clone();
    options.no_certificate_verification = args.no_certificate_verification;
    options
}

/// The device side of server and proxy modes.
fn agent(args: TunnelArgs) -> anyhow::Result<Agent> {
    let mut config = AgentConfig::new(relay(&args)?, home_domain(&args)?);
    config.tls = tls_options(&args);
    config.relay_proxy = relay_proxy(&args);
    config.pass_through = args.relay_security == Some(RelaySecurity::PassThrough);
    config.secret_key = secret_key(args.secret_key);
    config.min_listeners = args.min_listeners;
    config.max_sockets = args.max_sockets;
    config.transport = args.transport;
    config.mux_connections = args.mux_connections;
    config.mux_ping_interval = args.mux_ping_interval;
    config.mux_ping_timeout = args.mux_ping_timeout;
    config.data_path = args.data_path;
    let agent = Agent::new(config).context("cannot start the tunnel")?;
    if let Some(local) = args.local.as_ref().filter(|l| l.tls) {
        // Load the roots now, not at the first client.
        agent.connector().prepare().with_context(|| {
            format!("cannot start the tunnel: TLS to the local service {local}")
        })?;
    }
    Ok(agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: TunnelArgs,
    }

    fn parse(line: &str) -> Result<TunnelArgs, String> {
        Cli::try_parse_from(std::iter::once("tunnel").chain(line.split_whitespace()))
            .map(|cli| cli.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn relay_proxy_flag() {
        let args = parse("server localhost:22 relay dom").unwrap();
        assert_eq!(relay_proxy(&args), RelayProxy::Environment);
        let args = parse("client localhost:22 relay dom --relay-proxy none").unwrap();
        assert_eq!(relay_proxy(&args), RelayProxy::Direct);
        let args =
            parse("egress localhost:3128 --egress-proxy http://r --relay-proxy socks5h://u:p@h")
                .unwrap();
        let RelayProxy::Url(url) = relay_proxy(&args) else {
            panic!("{:?}", args.relay_proxy);
        };
        assert_eq!(url.to_string(), "socks5h://u:***@h:1080");
        let err = parse("proxy localhost:22 relay dom --relay-proxy ftp://h").unwrap_err();
        assert!(err.contains("use http, https, socks5 or socks5h"), "{err}");
    }

    #[test]
    fn yalertunnel_argument_shape() {
        let args =
            parse("proxy localhost:22 relay.example.com:80 GsIoT-1 --min-listeners 4").unwrap();
        assert_eq!(args.mode, Some(Mode::Proxy));
        assert_eq!(args.local, Some(LocalAddr::new("localhost", 22)));
        assert_eq!(args.relay, Some(RelayAddr::plain("relay.example.com", 80)));
        assert_eq!(args.domain.as_deref(), Some("gsiot-1"));
        assert_eq!((args.min_listeners, args.max_sockets), (4, 128));
        let args = parse("client 127.0.0.1:10022 relay dom --secret-key k").unwrap();
        assert_eq!(args.relay.unwrap().port, 80);
        assert_eq!(args.secret_key.as_deref(), Some("k"));
        assert_eq!(args.relay_security, None);
        assert!(args.ca_file.is_none() && !args.no_certificate_verification);
    }

    #[test]
    fn tls_flags() {
        let args = parse(
            "server tls:localhost:8443 tls:relay dom --ca-file /etc/ca.pem \
             --relay-security transport/pass-through",
        )
        .unwrap();
        assert!(args.local.unwrap().tls);
        let relay = args.relay.clone().unwrap();
        assert_eq!(relay, "relay:443".parse().unwrap());
        assert!(relay.tls);
        assert_eq!(args.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(args.relay_security, Some(RelaySecurity::PassThrough));
        let args =
            parse("server localhost:80 relay:443 dom --no-certificate-verification").unwrap();
        assert!(args.relay.unwrap().tls && args.no_certificate_verification);
        assert!(
            !parse("server localhost:80 tcp:relay:443 dom")
                .unwrap()
                .relay
                .unwrap()
                .tls
        );
        let args = parse("proxy localhost:22 relay dom --relay-security pass-through").unwrap();
        assert_eq!(args.relay_security, Some(RelaySecurity::PassThrough));
    }

    /// A CA file that is missing or holds no certificate stops the tunnel before it connects.
    #[tokio::test]
    async fn bad_ca_files_stop_the_tunnel() {
        let empty = std::env::temp_dir().join(format!("limmat-cli-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for (file, expected) in [
            ("/nonexistent/ca.pem".to_owned(), "cannot read the CA file"),
            (empty.display().to_string(), "contains no PEM certificate"),
        ] {
            for mode in ["server", "client"] {
                // The CA file is read before anything is bound or opened.
                let line = format!("{mode} 127.0.0.1:1 tls:127.0.0.1:1 dom --ca-file {file}");
                let err = run(parse(&line).unwrap(), CancellationToken::new())
                    .await
                    .unwrap_err();
                let err = format!("{err:#}");
                assert!(
                    err.contains(expected) && err.contains(&file),
                    "{line}: {err}"
                );
            }
        }
        let _ = std::fs::remove_file(&empty);
    }

    #[test]
    fn egress_mode_arguments() {
        let args =
            parse("egress 127.0.0.1:3128 --egress-proxy http://relay:8080 --domain Dev").unwrap();
        assert_eq!(args.mode, Some(Mode::Egress));
        assert_eq!(args.egress_proxy.as_deref(), Some("relay:8080"));
        assert_eq!(args.egress_domain.as_deref(), Some("dev"));
        assert!(args.relay.is_none() && args.domain.is_none());
        let args = parse("egress 127.0.0.1:0 --egress-proxy relay").unwrap();
        assert_eq!(args.egress_proxy.as_deref(), Some("relay:80"));
        let args = parse("egress 127.0.0.1:0 --egress-proxy http://[::1]:81/").unwrap();
        assert_eq!(args.egress_proxy.as_deref(), Some("[::1]:81"));
        for (line, expected) in [
            (
                "egress 127.0.0.1:0 --egress-proxy https://relay",
                "not https://",
            ),
            (
                "egress 127.0.0.1:0 --egress-proxy http://a/b",
                "not http://host",
            ),
            ("server 127.0.0.1:1", "RELAY"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[tokio::test]
    async fn egress_mode_needs_its_flags() {
        for (line, expected) in [
            (
                "egress 127.0.0.1:0 relay dom --egress-proxy relay:1",
                "only <LOCAL>",
            ),
            (
                "egress tls:127.0.0.1:0 --egress-proxy relay:1 --secret-key k",
                "without tls:",
            ),
            (
                "server 127.0.0.1:1 relay dom --egress-proxy relay:1",
                "for egress mode",
            ),
        ] {
            let err = run(parse(line).unwrap(), CancellationToken::new())
                .await
                .unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{line}: {err:#}");
        }
    }

    #[test]
    fn bad_arguments_name_the_problem() {
        for (line, expected) in [
            ("server localhost relay dom", "port is required"),
            ("server localhost:22 relay:x dom", "relay:x"),
            ("server localhost:22 relay relay_domain", "reserved"),
            ("server localhost:22 relay a/b", "domain contains"),
            (
                "server localhost:22 relay dom --max-sockets 2305843009213693952",
                "at most 65535",
            ),
            (
                "server localhost:22 relay dom --min-listeners 0",
                "min-listeners",
            ),
            ("bridge localhost:22 relay dom", "bridge"),
            (
                "server localhost:22 relay dom --relay-security e2e",
                "unknown relay security `e2e`",
            ),
            (
                "server localhost:22 relay dom --ca-file f --no-certificate-verification",
                "cannot be used with",
            ),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
