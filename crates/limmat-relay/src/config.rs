//! Relay settings (spec 2–3) with their defaults, and the checks that refuse a relay that
//! would misbehave, such as a hold time the devices' 75 s read timeout would cut short (D2).

use crate::auth::{AuthMode, KeySources};
use crate::egress::EgressConfig;
use crate::limits::LimitConfig;
use crate::tls::CertPaths;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A listener: `ADDR` (plain) or `tls:ADDR` (`ssl:` is an alias), spec 2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Whether the listener terminates TLS.
    pub tls: bool,
}

impl Listen {
    /// A plain listener on `addr`.
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: false }
    }

    /// A TLS listener on `addr`.
    pub fn tls(addr: SocketAddr) -> Self {
        Self { addr, tls: true }
    }
}

impl Listen {
    /// Splits a listener's optional scheme (`tls:`, `ssl:`, `tcp:`) from its address:
    /// whether it is TLS, and the address text.
    pub fn split_scheme(s: &str) -> (bool, &str) {
        match s.split_once(':') {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case("tls") || scheme.eq_ignore_ascii_case("ssl") =>
            {
                (true, rest)
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tcp") => (false, rest),
            _ => (false, s),
        }
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, addr) = Listen::split_scheme(s);
        let addr = addr.parse().map_err(|_| {
            format!("{s:?} is not a listener such as 127.0.0.1:8080 or tls:0.0.0.0:443")
        })?;
        Ok(Self { addr, tls })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls {
            write!(f, "tls:{}", self.addr)
        } else {
            write!(f, "{}", self.addr)
        }
    }
}

/// Everything a relay node needs to run. [`Default`] gives the spec's defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Listeners, plain or TLS; devices and clients share them (2.1).
    pub listen: Vec<Listen>,
    /// Certificates for TLS listeners, chosen by SNI; the first is the default (2.6.1).
    pub certs: Vec<CertPaths>,
    /// The ClientHello and the TLS handshake must be done within this (D8).
    pub tls_handshake_timeout: Duration,
    /// Public hostnames; configuring any turns on subdomain routing (2.5.2).
    pub hostnames: Vec<String>,
    /// A waiting device gets `204` after this long (D2): 1 s to 74 s.
    pub hold_time: Duration,
    /// A client waits this long for a device before `504` (D4); zero answers at once.
    pub client_wait: Duration,
    /// A pipe with no byte either way for this long is closed (D5); zero means never.
    pub idle_timeout: Duration,
    /// Waiting, renewing and mux connections per domain (D6); zero means no cap.
    pub max_per_domain: usize,
    /// The `Retry-After` of the per-domain cap's `429` (D6).
    pub cap_retry_after: Duration,
    /// A head longer than this is closed with no response (D1).
    pub max_head: usize,
    /// A head must be complete this long after accept or a `204` (D8).
    pub head_timeout: Duration,
    /// Clients waiting per domain beyond which a new one gets `504` at once (4.3); 0: no limit.
    pub max_waiting_clients: usize,
    /// The first handshake on a new connection gets `204` instead of waiting (D3).
    pub first_post_renew: bool,
    /// Where `GET /` is redirected; without it the empty domain gets `504` (2.5.3).
    pub root_uri: Option<String>,
    /// How long in-flight pipes may finish after a shutdown starts (7.6).
    pub drain_timeout: Duration,
    /// `auth` (4.2): `None` picks `keys` when a key source is configured, else `open` on
    /// loopback-only relays (and refuses to start otherwise).
    pub auth: Option<AuthMode>,
    /// Static keys, keys files and master secrets (4.1).
    pub keys: KeySources,
    /// Per-source and per-domain limits (4.3).
    pub limits: LimitConfig,
    /// Open connections of the whole node; at the limit the relay stops accepting and the
    /// kernel's backlog queues new ones (4.3). Zero: no limit.
    pub max_connections: usize,
    /// The admin listener: probes, metrics, the JSON API and the dashboard.
    pub admin: Option<SocketAddr>,
    /// A file holding the admin bearer token; required when `admin` is not loopback.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The forward proxy for devices (section 6): off unless set, refused in open mode.
    pub forward_proxy: bool,
    /// The proxy's egress rules and default (6.4).
    pub egress: EgressConfig,
    /// Resolving and connecting to a proxy target must be done within this (6.3).
    pub proxy_connect_timeout: Duration,
    /// Concurrent proxy tunnels and requests per device domain; more get 429 (6.3). 0: none.
    pub proxy_max_per_domain: usize,
    /// limmat-mux/1: PING a mux connection after this long without receiving anything (5.6).
    pub mux_ping_interval: Duration,
    /// limmat-mux/1: a mux connection whose PING ACK takes longer than this is dead (5.6).
    pub mux_ping_timeout: Duration,
    /// How the bytes of plain TCP pairs move: `splice(2)` in the kernel, copies through user
    /// space, or (`auto`) copies until a direction turns out to be bulk, then splice (Linux
    /// only; elsewhere always copies). Mux streams and TLS legs always copy.
    pub data_path: DataPath,
    /// Current-thread runtimes the relay starts besides the caller's, each on its own thread
    /// and with its own `SO_REUSEPORT` accept socket per listener (the `per-core` layout); the
    /// kernel spreads new connections over them. 0: everything is accepted on the caller's
    /// runtime.
    pub accept_runtimes: usize,
    /// One info line per client request (target `limmat::access`); off, the same facts are
    /// logged at debug.
    pub access_log: bool,
    /// Clustering (section 7): standalone unless `cluster.seeds` are given; a standalone relay
    /// opens no cluster socket and owns every domain.
    pub cluster: crate::cluster::ClusterConfig,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            certs: Vec::new(),
            tls_handshake_timeout: Duration::from_secs(10),
            hostnames: Vec::new(),
            hold_time: Duration::from_secs(30),
            client_wait: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_per_domain: 32,
            cap_retry_after: Duration::from_secs(30),
            max_head: 16 * 1024,
            head_timeout: Duration::from_secs(10),
            max_waiting_clients: 256,
            first_post_renew: false,
            root_uri: None,
            drain_timeout: Duration::from_secs(30),
            auth: None,
            keys: KeySources::default(),
            limits: LimitConfig::default(),
            max_connections: 65536,
            admin: None,
            admin_token_file: None,
            forward_proxy: false,
            egress: EgressConfig::default(),
            proxy_connect_timeout: Duration::from_secs(10),
            proxy_max_per_domain: 64,
            mux_ping_interval: limmat_mux::settings::PING_INTERVAL,
            mux_ping_timeout: limmat_mux::settings::PING_TIMEOUT,
            data_path: DataPath::Auto,
            accept_runtimes: 0,
            access_log: true,
            cluster: crate::cluster::ClusterConfig::default(),
        }
    }
}

pub use limmat_mux::DataPath;

/// A setting that the relay refuses to start with, naming the setting and what it expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No `listen` address.
    #[error("no listener: give at least one --listen ADDR")]
    NoListener,
    /// `hold_time` outside 1–74 s (D2).
    #[error("hold_time is {0:?}; it must be from 1s to 74s, below the devices' 75 s read timeout")]
    HoldTime(Duration),
    /// `max_head` below 256 bytes.
    #[error("max_head is {0} bytes; it must be at least 256")]
    MaxHead(usize),
    /// `head_timeout` of zero.
    #[error("head_timeout must be greater than zero")]
    HeadTimeout,
    /// An admin listener off loopback without a token file.
    #[error(
        "the admin listener {0} is not on a loopback address: give --admin-token-file so that only operators can use it"
    )]
    AdminToken(SocketAddr),
    /// `tls_handshake_timeout` of zero.
    #[error("tls_handshake_timeout must be greater than zero")]
    TlsHandshakeTimeout,
    /// A TLS listener without a certificate.
    #[error("the TLS listener {0} needs a certificate: give --cert FILE --key FILE")]
    NoCertificate(Listen),
    /// A duration setting (named) longer than a year.
    #[error("{0} is {1:?}; it must be at most 365 days")]
    TooLong(&'static str, Duration),
    /// A `hostname` that is not a DNS name.
    #[error("hostname {0:?} is not a DNS name")]
    Hostname(String),
    /// A `root_uri` that is not an absolute http(s) URI.
    #[error("root_uri {0:?} must be an absolute http:// or https:// URI without CR or LF")]
    RootUri(String),
    /// The forward proxy on a relay without device authentication (6.2).
    #[error(
        "forward_proxy needs device authentication, but auth is open: give --keys-file or \
         --master-secret-file (the proxy must never be open)"
    )]
    ProxyInOpenMode,
    /// `proxy_connect_timeout` of zero.
    #[error("proxy_connect_timeout must be greater than zero")]
    ProxyConnectTimeout,
}

impl RelayConfig {
    /// Checks every setting; the relay calls this before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::NoListener);
        }
        if self.hold_time < Duration::from_secs(1) || self.hold_time >= Duration::from_secs(75) {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.max_head < 256 {
            return Err(ConfigError::MaxHead(self.max_head));
        }
        if self.head_timeout.is_zero() {
            return Err(ConfigError::HeadTimeout);
        }
        if let Some(admin) = self.admin
            && !admin.ip().is_loopback()
            && self.admin_token_file.is_none()
        {
            return Err(ConfigError::AdminToken(admin));
        }
        if self.tls_handshake_timeout.is_zero() {
            return Err(ConfigError::TlsHandshakeTimeout);
        }
        if let Some(l) = self.listen.iter().find(|l| l.tls)
            && self.certs.is_empty()
        {
            return Err(ConfigError::NoCertificate(*l));
        }
        // Deadlines are computed as now + setting: keep them far from overflowing an Instant.
        const LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);
        for (name, value) in [
            ("head_timeout", self.head_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
            ("client_wait", self.client_wait),
            ("idle_timeout", self.idle_timeout),
            ("cap_retry_after", self.cap_retry_after),
            ("drain_timeout", self.drain_timeout),
            ("proxy_connect_timeout", self.proxy_connect_timeout),
            ("mux_ping_interval", self.mux_ping_interval),
            ("mux_ping_timeout", self.mux_ping_timeout),
        ] {
            if value > LIMIT {
                return Err(ConfigError::TooLong(name, value));
            }
        }
        for name in &self.hostnames {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(ConfigError::Hostname(name.clone()));
            }
        }
        if self.proxy_connect_timeout.is_zero() {
            return Err(ConfigError::ProxyConnectTimeout);
        }
        if let Some(uri) = &self.root_uri {
            let lower = uri.to_ascii_lowercase();
            let absolute = lower.starts_with("http://") || lower.starts_with("https://");
            if !absolute || uri.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(ConfigError::RootUri(uri.clone()));
            }
        }
        Ok(())
    }

    /// The forward proxy is never open (4.2, 6): refused when devices are not authenticated.
    pub fn check_mode(&self, mode: AuthMode) -> Result<(), ConfigError> {
        if self.forward_proxy && mode == AuthMode::Open {
            return Err(ConfigError::ProxyInOpenMode);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RelayConfig {
        RelayConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..RelayConfig::default()
        }
    }

    #[test]
    fn listeners_parse() {
        assert_eq!(
            "127.0.0.1:80".parse(),
            Ok(Listen::plain("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            "tls:[::1]:443".parse(),
            Ok(Listen::tls("[::1]:443".parse().unwrap()))
        );
        assert_eq!(
            "SSL:0.0.0.0:443".parse(),
            Ok(Listen::tls("0.0.0.0:443".parse().unwrap()))
        );
        assert!(
            "tls:nowhere"
                .parse::<Listen>()
                .unwrap_err()
                .contains("tls:nowhere")
        );
        let c = RelayConfig {
            listen: vec!["tls:127.0.0.1:0".parse().unwrap()],
            ..config()
        };
        assert!(matches!(c.validate(), Err(ConfigError::NoCertificate(_))));
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn hold_time_bounds() {
        // Checklist 20.
        for (secs, ok) in [(0, false), (1, true), (74, true), (75, false), (120, false)] {
            let c = RelayConfig {
                hold_time: Duration::from_secs(secs),
                ..config()
            };
            assert_eq!(c.validate().is_ok(), ok, "{secs}s");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let c = RelayConfig {
            listen: vec![],
            ..config()
        };
        assert_eq!(c.validate(), Err(ConfigError::NoListener));
        let c = RelayConfig {
            hostnames: vec!["relay example".into()],
            ..config()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("relay example")
        );
        let c = RelayConfig {
            client_wait: Duration::MAX,
            ..config()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("client_wait")
        );
        let c = RelayConfig {
            root_uri: Some("example.com".into()),
            ..config()
        };
        assert!(matches!(c.validate(), Err(ConfigError::RootUri(_))));
        let c = RelayConfig {
            forward_proxy: true,
            ..config()
        };
        assert_eq!(
            c.check_mode(AuthMode::Open),
            Err(ConfigError::ProxyInOpenMode)
        );
        assert_eq!(c.check_mode(AuthMode::Keys), Ok(()));
    }
}
