//! `limmat relay`: settings from flags, `LIMMAT_…` environment variables and a TOML file
//! (`--config`), merged in that order of precedence and then mapped onto [`RelayConfig`]. A
//! setting's flag is its spec name in kebab-case, its file key the name itself, its variable
//! the name in upper case after `LIMMAT_`; each is defined once, in [`settings`].

mod settings;

use crate::runtime::Choice;
use anyhow::Context;
use clap::{Args, Subcommand};
use limmat_relay::auth::{AuthMode, Authenticator, resolve_mode};
use limmat_relay::cluster::{ClusterConfig, LiveSet};
use limmat_relay::{Relay, RelayConfig};
use settings::{FileOnly, RelaySettings};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    /// TOML file of settings, each named like its flag in snake_case (hold_time = "30s"; see
    /// examples/relay.toml). Flags override LIMMAT_… variables, which override the file.
    /// [env: LIMMAT_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the settings and that the certificates and key files load, print
    /// "configuration OK" and exit, without listening.
    #[arg(long)]
    check_config: bool,
    #[command(flatten)]
    settings: RelaySettings,
}

/// Names the configuration file when `--config` is not given.
const CONFIG_ENV: &str = "LIMMAT_CONFIG";

/// `limmat relay --help`: each setting's variable after its help line.
pub fn with_env_in_help(command: clap::Command) -> clap::Command {
    settings::with_env_in_help(command)
}

/// Every variable the relay reads, for the check of misspelt ones.
pub fn env_names() -> impl Iterator<Item = String> {
    settings::env_names().chain([CONFIG_ENV.to_owned()])
}

#[derive(Subcommand, Debug)]
enum RelayCommand {
    /// Issue a device key: a derived one (--master-secret-file) or a new random one (--new).
    Key(crate::key::KeyArgs),
}

impl RelayArgs {
    /// Flags over `LIMMAT_…` variables over the file over the defaults. Every source is read
    /// and checked, even where a higher one overrides it, so a typo never lies in wait.
    fn into_config(self) -> anyhow::Result<(RelayConfig, ClusterConfig, Choice)> {
        let env = crate::settings::from_env::<RelaySettings>()?;
        let path = match self.config {
            Some(path) => Some(path),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => None,
            },
        };
        let (file, file_only) = match path {
            Some(path) => settings::from_file(&path)?,
            None => (RelaySettings::default(), FileOnly::default()),
        };
        settings::merge(settings::merge(self.settings, env), file).into_config(file_only)
    }
}

/// What `Relay::bind` checks before it binds: the settings, the certificates, the
/// authentication mode and, when keys are required, the key files.
fn check(config: &RelayConfig) -> anyhow::Result<()> {
    config.validate()?;
    for pair in &config.certs {
        limmat_relay::tls::check(pair)?;
    }
    let loopback_only = config.listen.iter().all(|l| l.addr.ip().is_loopback());
    let mode = resolve_mode(config.auth, config.keys.any(), loopback_only)?;
    config.check_mode(mode)?;
    if mode == AuthMode::Keys {
        Authenticator::load(&config.keys)?;
    }
    Ok(())
}

/// A relay ready to run: its configuration, and the runtime it runs on.
pub struct Prepared {
    config: RelayConfig,
    clustered: bool,
    /// The runtime layout and threads the relay's settings ask for.
    pub runtime: Choice,
}

/// Reads and merges the settings before any runtime exists, since they choose the runtime;
/// `None` when the command is done already (`relay key`, `--check-config`).
pub fn prepare(mut args: RelayArgs) -> anyhow::Result<Option<Prepared>> {
    if let Some(RelayCommand::Key(key)) = args.command.take() {
        crate::key::run(key)?;
        return Ok(None);
    }
    let check_only = args.check_config;
    let (config, cluster, runtime) = args.into_config()?;
    let clustered = cluster.is_clustered();
    let config = with_cluster(config, cluster)?;
    if check_only {
        check(&config).context("the configuration is not valid")?;
        crate::key::print_out(format_args!("configuration OK"))?;
        return Ok(None);
    }
    Ok(Some(Prepared {
        config,
        clustered,
        runtime,
    }))
}

pub async fn run(prepared: Prepared, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Prepared {
        config,
        clustered,
        runtime,
    } = prepared;
    if config.admin.is_some() {
        crate::metrics::install();
    }
    tracing::debug!(
        runtime = %runtime.layout,
        threads = runtime.thread_count(),
        data_path = ?config.data_path,
        "relay runtime"
    );
    let relay = Relay::bind(config)
        .await
        .context("the relay cannot start")?;
    let handle = relay.handle();
    tokio::spawn(reload_on_sighup(handle.clone()));
    if clustered {
        tokio::spawn(log_members(handle.live_members()));
    }
    // SIGTERM or SIGINT: a clustered node hands its devices to the other nodes first (7.6); a
    // standalone relay stops at once. Either way open pipes get drain_timeout.
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.drain().await;
    });
    relay.run().await;
    Ok(())
}

/// The relay's configuration with its cluster part.
fn with_cluster(mut config: RelayConfig, cluster: ClusterConfig) -> anyhow::Result<RelayConfig> {
    config.cluster = cluster;
    Ok(config)
}

/// One info line per member that joins or leaves this node's live set (7.2), after the first
/// view: "cluster: member up" and "cluster: member down".
async fn log_members(mut live: tokio::sync::watch::Receiver<std::sync::Arc<LiveSet>>) {
    let ids = |set: &LiveSet| -> BTreeSet<String> {
        set.members()
            .iter()
            .map(|m| m.node_id.to_string())
            .collect()
    };
    let mut known = ids(&live.borrow_and_update());
    while live.changed().await.is_ok() {
        let now = ids(&live.borrow_and_update());
        for up in now.difference(&known) {
            tracing::info!(node_id = %up, members = now.len(), "cluster: member up");
        }
        for down in known.difference(&now) {
            tracing::info!(node_id = %down, members = now.len(), "cluster: member down");
        }
        known = now;
    }
}

/// SIGHUP reads the certificates and device keys again; whatever does not load keeps the old
/// one in force.
async fn reload_on_sighup(handle: limmat_relay::RelayHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "cannot watch SIGHUP; certificates still reload when their files change"
            );
            return;
        };
        while hup.recv().await.is_some() {
            let replaced = handle.reload_certificates();
            tracing::info!(replaced, "SIGHUP: certificates reloaded");
            match handle.reload_keys() {
                Ok(()) => tracing::info!("SIGHUP: device keys reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: device keys not reloaded; the previous keys stay in force")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = handle;
}
