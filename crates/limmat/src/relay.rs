//! `limmat relay`: command-line flags mapped onto [`RelayConfig`], one flag per setting of the
//! spec (the setting's name in kebab-case).

use crate::units;
use anyhow::Context;
use clap::{Args, Subcommand};
use limmat_relay::auth::{AuthMode, KeySources};
use limmat_relay::{CertPaths, Cidr, LimitConfig, Listen, Rate, Relay, RelayConfig};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    /// Address to listen on for devices and clients (repeatable); `tls:ADDR` for TLS.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: Vec<Listen>,
    /// PEM certificate chain for TLS listeners (repeatable, paired with --key in order; chosen
    /// by SNI, the first is the default). Reloaded when the file changes or on SIGHUP.
    #[arg(long = "cert", value_name = "FILE")]
    cert: Vec<PathBuf>,
    /// PEM private key for the --cert at the same position.
    #[arg(long = "key", value_name = "FILE")]
    key: Vec<PathBuf>,
    /// The ClientHello and TLS handshake must be done within this.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::duration)]
    tls_handshake_timeout: Duration,
    /// Public hostname of the relay (repeatable); turns on <domain>.<hostname> routing.
    #[arg(long = "hostname", value_name = "NAME")]
    hostname: Vec<String>,
    /// A waiting device gets 204 after this long (1s to 74s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::duration)]
    hold_time: Duration,
    /// How long a client waits for a device before 504 (0 = answer at once).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = units::duration)]
    client_wait: Duration,
    /// Close a pipe after this long without a byte either way (0 = never).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = units::duration)]
    idle_timeout: Duration,
    /// Waiting connections allowed per domain (0 = no cap); more get 429.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_per_domain: usize,
    /// Retry-After of the 429 sent over max-per-domain.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::duration)]
    cap_retry_after: Duration,
    /// Longest request head; longer heads are closed with no response.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = units::size)]
    max_head: usize,
    /// A head must be complete this long after accept or a 204.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::duration)]
    head_timeout: Duration,
    /// Clients allowed to wait per domain (0 = no limit); more get 504 at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_waiting_clients: usize,
    /// Answer a new connection's first handshake with 204, as Yaler v2.1 does.
    #[arg(long)]
    first_post_renew: bool,
    /// Where `GET /` is redirected (307); without it, 504.
    #[arg(long, value_name = "URI")]
    root_uri: Option<String>,
    /// How long open pipes may finish after SIGTERM or SIGINT.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::duration)]
    drain_timeout: Duration,
    /// `keys`: every device needs a key (the default when a key source is given); `open`:
    /// any device may register any domain (allowed by default on loopback-only relays).
    #[arg(long, value_name = "open|keys")]
    auth: Option<AuthMode>,
    /// TOML file of [[device_key]] entries (domain, sha256) and revoked_keys (repeatable).
    #[arg(long = "keys-file", value_name = "FILE")]
    keys_file: Vec<PathBuf>,
    /// Master secret for derived keys lmk1.… (repeatable, for rotation).
    #[arg(long = "master-secret-file", value_name = "FILE")]
    master_secret_file: Vec<PathBuf>,
    /// Open connections per client address (IPv6 per /64); 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_conns_per_ip: usize,
    /// New connections per address, as RATE/UNIT:BURST; 0 = no limit.
    #[arg(long, value_name = "RATE", default_value = "500/s:1000")]
    conn_rate_per_ip: Rate,
    /// Failed device authentications per address before 429; 0 = no limit.
    #[arg(long, value_name = "RATE", default_value = "10/min:20")]
    auth_failures_per_ip: Rate,
    /// Device handshakes per domain (each pairing returns one); 0 = no limit.
    #[arg(long, value_name = "RATE", default_value = "10/s:64")]
    handshake_rate_per_domain: Rate,
    /// Address ranges the per-address limits do not apply to (repeatable; `none` for no
    /// exemption at all).
    #[arg(long = "limit-exempt", value_name = "CIDR", default_values = ["127.0.0.0/8", "::1/128"], value_parser = exempt)]
    limit_exempt: Vec<Option<Cidr>>,
    /// Open connections of the whole relay; at the limit it stops accepting; 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    max_connections: usize,
}

#[derive(Subcommand, Debug)]
enum RelayCommand {
    /// Issue a device key: a derived one (--master-secret-file) or a new random one (--new).
    Key(crate::key::KeyArgs),
}

impl RelayArgs {
    fn into_config(self) -> anyhow::Result<RelayConfig> {
        if self.cert.len() != self.key.len() {
            anyhow::bail!(
                "{} --cert but {} --key: give one --key for each --cert, in the same order",
                self.cert.len(),
                self.key.len()
            );
        }
        let certs = self
            .cert
            .into_iter()
            .zip(self.key)
            .map(|(cert, key)| CertPaths { cert, key })
            .collect();
        Ok(RelayConfig {
            listen: self.listen,
            certs,
            tls_handshake_timeout: self.tls_handshake_timeout,
            hostnames: self.hostname,
            hold_time: self.hold_time,
            client_wait: self.client_wait,
            idle_timeout: self.idle_timeout,
            max_per_domain: self.max_per_domain,
            cap_retry_after: self.cap_retry_after,
            max_head: self.max_head,
            head_timeout: self.head_timeout,
            max_waiting_clients: self.max_waiting_clients,
            first_post_renew: self.first_post_renew,
            root_uri: self.root_uri,
            drain_timeout: self.drain_timeout,
            auth: self.auth,
            keys: KeySources {
                keys_files: self.keys_file,
                master_secret_files: self.master_secret_file,
                ..KeySources::default()
            },
            limits: LimitConfig {
                max_conns_per_ip: self.max_conns_per_ip,
                conn_rate_per_ip: self.conn_rate_per_ip,
                auth_failures_per_ip: self.auth_failures_per_ip,
                handshake_rate_per_domain: self.handshake_rate_per_domain,
                limit_exempt: self.limit_exempt.into_iter().flatten().collect(),
            },
            max_connections: self.max_connections,
        })
    }
}

pub async fn run(mut args: RelayArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(RelayCommand::Key(key)) = args.command.take() {
        return crate::key::run(key);
    }
    let relay = Relay::bind(args.into_config()?)
        .await
        .context("the relay cannot start")?;
    let handle = relay.handle();
    tokio::spawn(reload_on_sighup(handle.clone()));
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.shutdown();
    });
    relay.run().await;
    Ok(())
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

/// A `--limit-exempt` value: a range, or `none`.
fn exempt(value: &str) -> Result<Option<Cidr>, String> {
    match value {
        "none" => Ok(None),
        range => range.parse().map(Some),
    }
}
