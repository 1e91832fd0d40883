//! `limmat relay`: settings from flags, `LIMMAT_…` environment variables and a TOML file
//! (`--config`), merged in that order of precedence and then mapped onto [`RelayConfig`]. A
//! setting's flag is its spec name in kebab-case, its file key the name itself, its variable
//! the name in upper case after `LIMMAT_`.

use crate::config_file::{self, CONFIG_ENV};
use crate::units;
use anyhow::Context;
use clap::{Args, Subcommand};
use limmat_relay::auth::{AuthMode, Authenticator, DeviceKey, KeySources, resolve_mode};
use limmat_relay::{
    Action, CertPaths, Cidr, EgressConfig, EgressRule, LimitConfig, Listen, Rate, Relay,
    RelayConfig,
};
use std::path::PathBuf;
use std::time::Duration;
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
    settings: Settings,
}

/// Every relay setting, unset unless its source gives it: flags, variables and the file each
/// fill one of these, and [`Settings::or`] merges them before the defaults apply. The defaults
/// are therefore written in the help text rather than given to clap, which would make a
/// default flag override the file.
#[derive(Args, Debug, Default)]
pub struct Settings {
    /// Address to listen on for devices and clients (repeatable); `tls:ADDR` for TLS.
    /// [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<Vec<Listen>>,
    /// PEM certificate chain for TLS listeners (repeatable, paired with --key in order; chosen
    /// by SNI, the first is the default). Reloaded when the file changes or on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<Vec<PathBuf>>,
    /// PEM private key for the --cert at the same position.
    #[arg(long, value_name = "FILE")]
    pub key: Option<Vec<PathBuf>>,
    /// The ClientHello and TLS handshake must be done within this. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub tls_handshake_timeout: Option<Duration>,
    /// Public hostname of the relay (repeatable); turns on <domain>.<hostname> routing.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<Vec<String>>,
    /// A waiting device gets 204 after this long (1s to 74s). [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = config_file::hold_time)]
    pub hold_time: Option<Duration>,
    /// How long a client waits for a device before 504 (0 = answer at once). [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub client_wait: Option<Duration>,
    /// Close a pipe after this long without a byte either way (0 = never). [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub idle_timeout: Option<Duration>,
    /// Waiting connections allowed per domain (0 = no cap); more get 429. [default: 32]
    #[arg(long, value_name = "N")]
    pub max_per_domain: Option<usize>,
    /// Retry-After of the 429 sent over max-per-domain. [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub cap_retry_after: Option<Duration>,
    /// Longest request head; longer heads are closed with no response. [default: 16KiB]
    #[arg(long, value_name = "SIZE", value_parser = units::size)]
    pub max_head: Option<usize>,
    /// A head must be complete this long after accept or a 204. [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub head_timeout: Option<Duration>,
    /// Clients allowed to wait per domain (0 = no limit); more get 504 at once.
    /// [default: 256]
    #[arg(long, value_name = "N")]
    pub max_waiting_clients: Option<usize>,
    /// Answer a new connection's first handshake with 204, as Yaler v2.1 does (`=false` turns
    /// off what the file or LIMMAT_FIRST_POST_RENEW turned on). [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub first_post_renew: Option<bool>,
    /// Where `GET /` is redirected (307); without it, 504.
    #[arg(long, value_name = "URI")]
    pub root_uri: Option<String>,
    /// How long open pipes may finish after SIGTERM or SIGINT. [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub drain_timeout: Option<Duration>,
    /// limmat-mux/1: PING a mux device after this long without receiving anything. [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub mux_ping_interval: Option<Duration>,
    /// limmat-mux/1: a mux device whose PING ACK takes longer is dead and dropped. [default: 20s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub mux_ping_timeout: Option<Duration>,
    /// `keys`: every device needs a key (the default when a key source is given); `open`:
    /// any device may register any domain (allowed by default on loopback-only relays).
    #[arg(long, value_name = "open|keys")]
    pub auth: Option<AuthMode>,
    /// TOML file of [[device_key]] entries (domain, sha256) and revoked_keys (repeatable).
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<Vec<PathBuf>>,
    /// Master secret for derived keys lmk1.… (repeatable, for rotation).
    #[arg(long, value_name = "FILE")]
    pub master_secret_file: Option<Vec<PathBuf>>,
    /// Open connections per client address (IPv6 per /64); 0 = no limit. [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_conns_per_ip: Option<usize>,
    /// New connections per address, as RATE/UNIT:BURST; 0 = no limit. [default: 500/s:1000]
    #[arg(long, value_name = "RATE")]
    pub conn_rate_per_ip: Option<Rate>,
    /// Failed device authentications per address before 429; 0 = no limit.
    /// [default: 10/min:20]
    #[arg(long, value_name = "RATE")]
    pub auth_failures_per_ip: Option<Rate>,
    /// Device handshakes per domain (each pairing returns one); 0 = no limit.
    /// [default: 10/s:64]
    #[arg(long, value_name = "RATE")]
    pub handshake_rate_per_domain: Option<Rate>,
    /// Address ranges the per-address limits do not apply to (repeatable; `none` for no
    /// exemption at all). [default: 127.0.0.0/8, ::1/128]
    #[arg(long, value_name = "CIDR", value_parser = config_file::exempt)]
    pub limit_exempt: Option<Vec<Option<Cidr>>>,
    /// Open connections of the whole relay; at the limit it stops accepting; 0 = no limit.
    /// [default: 65536]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Admin listener: /healthz, /readyz, /metrics, the JSON API and the dashboard.
    /// [default: none]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<std::net::SocketAddr>,
    /// File holding the admin bearer token; required when --admin is not loopback.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Let authenticated devices use the relay as an HTTP proxy (CONNECT host:port and
    /// http:// requests, spec section 6); needs device keys. [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub forward_proxy: Option<bool>,
    /// Forward proxy: let devices reach RULE, a CIDR or host pattern with optional :PORTS
    /// (127.0.0.1/32, 10.1.2.0/24:443, *.example.com:443,8883); repeatable. Checked before the
    /// built-in deny set of private, loopback, link-local and other non-public ranges.
    #[arg(long, value_name = "RULE", value_parser = config_file::allow_rule)]
    pub egress_allow: Option<Vec<EgressRule>>,
    /// Forward proxy: never let devices reach RULE (same syntax); repeatable. Deny rules are
    /// checked before allow rules.
    #[arg(long, value_name = "RULE", value_parser = config_file::deny_rule)]
    pub egress_deny: Option<Vec<EgressRule>>,
    /// Forward proxy: what applies to an address that no rule and no built-in range matches.
    /// [default: allow]
    #[arg(long, value_name = "allow|deny")]
    pub egress_default: Option<Action>,
    /// Forward proxy: resolving and connecting to a target must be done within this.
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = units::duration)]
    pub proxy_connect_timeout: Option<Duration>,
    /// Forward proxy: concurrent tunnels and requests per device domain (0 = no limit); more
    /// get 429. [default: 64]
    #[arg(long, value_name = "N")]
    pub proxy_max_per_domain: Option<usize>,
    /// `[[egress.rule]]` tables of the file (spec 6.4.2), in order; no flag.
    #[arg(skip)]
    pub egress_rule: Option<Vec<EgressRule>>,
    /// `[[device_key]]` entries of the file (spec 4.1.2); no flag.
    #[arg(skip)]
    pub device_key: Option<Vec<DeviceKey>>,
    /// `revoked_keys` of the file; no flag.
    #[arg(skip)]
    pub revoked_keys: Option<Vec<String>>,
}

#[derive(Subcommand, Debug)]
enum RelayCommand {
    /// Issue a device key: a derived one (--master-secret-file) or a new random one (--new).
    Key(crate::key::KeyArgs),
}

impl Settings {
    /// Each setting from `self` if given, else from `lower`. Certificates and keys go
    /// together, since they pair by position.
    fn or(self, lower: Settings) -> Settings {
        let (cert, key) = match self.cert.is_some() || self.key.is_some() {
            true => (self.cert, self.key),
            false => (lower.cert, lower.key),
        };
        Settings {
            listen: self.listen.or(lower.listen),
            cert,
            key,
            tls_handshake_timeout: self.tls_handshake_timeout.or(lower.tls_handshake_timeout),
            hostname: self.hostname.or(lower.hostname),
            hold_time: self.hold_time.or(lower.hold_time),
            client_wait: self.client_wait.or(lower.client_wait),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            max_per_domain: self.max_per_domain.or(lower.max_per_domain),
            cap_retry_after: self.cap_retry_after.or(lower.cap_retry_after),
            max_head: self.max_head.or(lower.max_head),
            head_timeout: self.head_timeout.or(lower.head_timeout),
            max_waiting_clients: self.max_waiting_clients.or(lower.max_waiting_clients),
            first_post_renew: self.first_post_renew.or(lower.first_post_renew),
            root_uri: self.root_uri.or(lower.root_uri),
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            mux_ping_interval: self.mux_ping_interval.or(lower.mux_ping_interval),
            mux_ping_timeout: self.mux_ping_timeout.or(lower.mux_ping_timeout),
            auth: self.auth.or(lower.auth),
            keys_file: self.keys_file.or(lower.keys_file),
            master_secret_file: self.master_secret_file.or(lower.master_secret_file),
            max_conns_per_ip: self.max_conns_per_ip.or(lower.max_conns_per_ip),
            conn_rate_per_ip: self.conn_rate_per_ip.or(lower.conn_rate_per_ip),
            auth_failures_per_ip: self.auth_failures_per_ip.or(lower.auth_failures_per_ip),
            handshake_rate_per_domain: self
                .handshake_rate_per_domain
                .or(lower.handshake_rate_per_domain),
            limit_exempt: self.limit_exempt.or(lower.limit_exempt),
            max_connections: self.max_connections.or(lower.max_connections),
            admin: self.admin.or(lower.admin),
            admin_token_file: self.admin_token_file.or(lower.admin_token_file),
            forward_proxy: self.forward_proxy.or(lower.forward_proxy),
            egress_allow: self.egress_allow.or(lower.egress_allow),
            egress_deny: self.egress_deny.or(lower.egress_deny),
            egress_default: self.egress_default.or(lower.egress_default),
            proxy_connect_timeout: self.proxy_connect_timeout.or(lower.proxy_connect_timeout),
            proxy_max_per_domain: self.proxy_max_per_domain.or(lower.proxy_max_per_domain),
            egress_rule: self.egress_rule.or(lower.egress_rule),
            device_key: self.device_key.or(lower.device_key),
            revoked_keys: self.revoked_keys.or(lower.revoked_keys),
        }
    }

    /// The merged settings with the defaults filled in.
    fn into_config(self) -> anyhow::Result<RelayConfig> {
        let cert = self.cert.unwrap_or_default();
        let key = self.key.unwrap_or_default();
        if cert.len() != key.len() {
            anyhow::bail!(
                "{} --cert but {} --key: give one --key for each --cert, in the same order",
                cert.len(),
                key.len()
            );
        }
        let certs = cert
            .into_iter()
            .zip(key)
            .map(|(cert, key)| CertPaths { cert, key })
            .collect();
        let d = RelayConfig::default();
        let limits = d.limits;
        Ok(RelayConfig {
            listen: self.listen.unwrap_or_else(|| {
                vec![Listen::plain(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    8080,
                )))]
            }),
            certs,
            tls_handshake_timeout: self
                .tls_handshake_timeout
                .unwrap_or(d.tls_handshake_timeout),
            hostnames: self.hostname.unwrap_or_default(),
            hold_time: self.hold_time.unwrap_or(d.hold_time),
            client_wait: self.client_wait.unwrap_or(d.client_wait),
            idle_timeout: self.idle_timeout.unwrap_or(d.idle_timeout),
            max_per_domain: self.max_per_domain.unwrap_or(d.max_per_domain),
            cap_retry_after: self.cap_retry_after.unwrap_or(d.cap_retry_after),
            max_head: self.max_head.unwrap_or(d.max_head),
            head_timeout: self.head_timeout.unwrap_or(d.head_timeout),
            max_waiting_clients: self.max_waiting_clients.unwrap_or(d.max_waiting_clients),
            first_post_renew: self.first_post_renew.unwrap_or(d.first_post_renew),
            root_uri: self.root_uri,
            drain_timeout: self.drain_timeout.unwrap_or(d.drain_timeout),
            mux_ping_interval: self.mux_ping_interval.unwrap_or(d.mux_ping_interval),
            mux_ping_timeout: self.mux_ping_timeout.unwrap_or(d.mux_ping_timeout),
            splice: d.splice,
            auth: self.auth,
            keys: KeySources {
                keys_files: self.keys_file.unwrap_or_default(),
                master_secret_files: self.master_secret_file.unwrap_or_default(),
                device_keys: self.device_key.unwrap_or_default(),
                revoked_keys: self.revoked_keys.unwrap_or_default(),
            },
            limits: LimitConfig {
                max_conns_per_ip: self.max_conns_per_ip.unwrap_or(limits.max_conns_per_ip),
                conn_rate_per_ip: self.conn_rate_per_ip.unwrap_or(limits.conn_rate_per_ip),
                auth_failures_per_ip: self
                    .auth_failures_per_ip
                    .unwrap_or(limits.auth_failures_per_ip),
                handshake_rate_per_domain: self
                    .handshake_rate_per_domain
                    .unwrap_or(limits.handshake_rate_per_domain),
                limit_exempt: match self.limit_exempt {
                    Some(ranges) => ranges.into_iter().flatten().collect(),
                    None => limits.limit_exempt,
                },
            },
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            admin: self.admin,
            admin_token_file: self.admin_token_file,
            forward_proxy: self.forward_proxy.unwrap_or(d.forward_proxy),
            // The file's rule tables in their order, then deny rules, then allow rules: flags
            // cannot keep their relative order, and a deny first is the safe reading.
            egress: EgressConfig {
                rules: [self.egress_rule, self.egress_deny, self.egress_allow]
                    .into_iter()
                    .flatten()
                    .flatten()
                    .collect(),
                default: self.egress_default.unwrap_or(d.egress.default),
            },
            proxy_connect_timeout: self
                .proxy_connect_timeout
                .unwrap_or(d.proxy_connect_timeout),
            proxy_max_per_domain: self.proxy_max_per_domain.unwrap_or(d.proxy_max_per_domain),
        })
    }
}

impl RelayArgs {
    /// Flags over `LIMMAT_…` variables over the file over the defaults. Every source is read
    /// and checked, even where a higher one overrides it, so a typo never lies in wait.
    fn into_config(self) -> anyhow::Result<RelayConfig> {
        let env = config_file::from_env()?;
        let path = match self.config {
            Some(path) => Some(path),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => None,
            },
        };
        let file = match path {
            Some(path) => config_file::from_file(&path)?,
            None => Settings::default(),
        };
        self.settings.or(env).or(file).into_config()
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

pub async fn run(mut args: RelayArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(RelayCommand::Key(key)) = args.command.take() {
        return crate::key::run(key);
    }
    let check_only = args.check_config;
    let config = args.into_config()?;
    if check_only {
        check(&config).context("the configuration is not valid")?;
        crate::key::print_out(format_args!("configuration OK"))?;
        return Ok(());
    }
    let relay = Relay::bind(config)
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
