//! The gateway's settings (`gateway-api.md` §5.10): the sections of `gateway.toml` with the
//! names and defaults of the specification. Unknown keys are refused (`deny_unknown_fields`),
//! and [`GatewayConfig::validate`] checks ranges, so a bad file stops start-up with a message
//! naming the key. The CLI layers flags and `LIMMAT_…` variables on top of this.
//!
//! A setting is one field of its section (with its doc and its default in the section's
//! `Default`). Durations are written `"5s"`, `"10m"`, `"72h"`; the numeric keys of earlier
//! versions (`retry_base_s = 5`) are still read, with a deprecation warning, and messages
//! about them name the key as written ([`DEPRECATED_SECONDS`]).

use crate::backend::sim::SimConfig;
pub use crate::config_value::ConfigError;
use crate::config_value::{check, duration};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The whole `gateway.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// `[gateway]`: the name and the state directory.
    pub gateway: GatewaySection,
    /// `[api]`: the local listener, its token and limits.
    pub api: ApiSection,
    /// `[relay]`: serving through a Limmat relay (§1.2).
    pub relay: RelaySection,
    /// `[backend]`: which backend, on which adapter (§6).
    pub backend: BackendSection,
    /// `[presence]`: the presence timers (§3.3).
    pub presence: PresenceSection,
    /// `[beacons]`: the event log (§5.3).
    pub beacons: BeaconsSection,
    /// `[webhooks]`: delivery, retries, limits, SSRF and proxy (§5).
    pub webhooks: WebhooksSection,
    /// `[sim]`: the simulated world (§6.2).
    pub sim: SimConfig,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySection {
    /// Shown in events (`gateway`) and in `GET /`.
    pub name: String,
    /// Where the redb state database lives (exclusively locked).
    pub state_dir: PathBuf,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            name: "limmat-gateway".into(),
            state_dir: PathBuf::from("limmat-gateway-state"),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// The local listener (`--listen`), e.g. `127.0.0.1:8000`.
    pub listen: Option<String>,
    /// When set, every request needs `Authorization: Bearer <token>` (§1.3).
    pub token: Option<String>,
    /// Base for absolute links instead of `http://` + `Host` + prefix (§1.2).
    pub public_base_url: Option<String>,
    /// CORS origins \[O\]; none by default.
    pub cors_origins: Vec<String>,
    /// `[api.limits]`: timeouts and the connection cap of every listener.
    pub limits: crate::listener::Limits,
}

/// `[relay]`: serve the API through a Limmat relay as well (§1.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySection {
    /// `HOST:PORT` of the relay; `None` serves locally only.
    pub address: Option<String>,
    /// The gateway's domain on the relay (`--domain`): its path prefix `/<domain>/` and
    /// subdomain; case-insensitive, and not one of [`RESERVED_SEGMENTS`].
    pub domain: Option<String>,
    /// The device key presented to the relay (`--secret-key`); also the default
    /// `webhooks.proxy_key`.
    pub secret_key: Option<String>,
    /// Waiting connections kept open (default 4).
    pub pool: usize,
    /// PTTH relay connections in use at most (default 32).
    pub max_connections: usize,
    /// `auto` (default: limmat-mux/1 when the relay offers it, else PTTH for an hour), `mux`
    /// or `ptth` (relay-protocol.md 5.8).
    pub transport: String,
    /// Streams served at once on the mux connection (default 4096): clients served through
    /// the relay at the same time, not capped by `max_connections`, so slow clients held up
    /// to `api.limits` cannot take every way in.
    pub mux_streams: u32,
    /// The outbound proxy to the relay (`--relay-proxy`): `http://[user:password@]host:port`,
    /// `https://…`, `socks5://…`, `socks5h://…`, or `none`; unset reads the proxy variables
    /// as curl does.
    pub relay_proxy: Option<String>,
    /// Where `relay_proxy` was set, for the start-up log line; the file unless a flag or
    /// variable overrode it.
    #[serde(skip)]
    pub relay_proxy_from: Option<&'static str>,
}

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            address: None,
            domain: None,
            secret_key: None,
            pool: 4,
            max_connections: 32,
            transport: "auto".into(),
            mux_streams: 4096,
            relay_proxy: None,
            relay_proxy_from: None,
        }
    }
}

/// `[backend]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendSection {
    /// `sim` or `bluez`.
    pub kind: BackendKind,
    /// The BlueZ adapter (`hci0`).
    pub adapter: String,
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection {
            kind: BackendKind::Sim,
            adapter: "hci0".into(),
        }
    }
}

/// Which backend serves the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `sim`: the deterministic simulator (§6.2), the default.
    #[default]
    Sim,
    /// `bluez`: BlueZ through `bluer` (§6.3; cargo feature `bluez`).
    Bluez,
}

/// `[presence]` (§3.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSection {
    /// An absent beacon enters only when heard at this RSSI or stronger, −127 to 20 dBm;
    /// unset (the default), at any RSSI.
    pub enter_rssi: Option<i16>,
    /// A present beacon's `updated` events come at most this often (default 10 s).
    #[serde(with = "duration")]
    pub update_interval: Duration,
    /// A beacon unheard this long has left (default 30 s).
    #[serde(with = "duration")]
    pub leave_after: Duration,
    /// Telemetry events of an address come at most this often (default 60 s).
    #[serde(with = "duration")]
    pub telemetry_interval: Duration,
}

impl Default for PresenceSection {
    fn default() -> Self {
        PresenceSection {
            enter_rssi: None,
            update_interval: Duration::from_secs(10),
            leave_after: Duration::from_secs(30),
            telemetry_interval: Duration::from_secs(60),
        }
    }
}

/// `[beacons]` (§5.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconsSection {
    /// The event log keeps entries at least this long, for SSE resumption (default 600 s).
    #[serde(with = "duration")]
    pub log_retention: Duration,
}

impl Default for BeaconsSection {
    fn default() -> Self {
        BeaconsSection {
            log_retention: Duration::from_secs(600),
        }
    }
}

/// `[webhooks]` (§5.5–§5.9).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    /// The first retry's nominal delay (default 5 s, §5.5).
    #[serde(with = "duration")]
    pub retry_base: Duration,
    /// Each further consecutive failure multiplies the delay by this, ≥ 1 (default 4).
    pub retry_factor: f64,
    /// The longest nominal delay between retries (default 8 h).
    #[serde(with = "duration")]
    pub retry_max_delay: Duration,
    /// A message's attempts before it becomes a dead letter, ≥ 1 (default 16, §5.5).
    pub max_attempts: u32,
    /// A message older than this is a dead letter (default 72 h).
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// A subscription with messages and no success for this long is disabled (default 5 days).
    #[serde(with = "duration")]
    pub disable_after: Duration,
    /// Requests in flight across all subscriptions, ≥ 1 (default 16, §5.6).
    pub max_in_flight: usize,
    /// Above this many queued events a subscription's queue coalesces `beacon.updated`
    /// (default 1000, §5.6).
    pub coalesce_threshold: usize,
    /// A queue's most events; beyond, the oldest become dead letters, ≥ 1 (default 100 000).
    pub max_backlog: usize,
    /// DNS, TCP and TLS of one attempt (default 10 s, 1–60 s, §5.7).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// One attempt's request up to the response head (default 15 s, 1–60 s).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Extra PEM roots for HTTPS receivers.
    pub ca_file: Option<PathBuf>,
    /// The most subscriptions; one more gets `409` (default 64, 1–10000, §5.7).
    pub max_subscriptions: usize,
    /// CIDRs exempt from the SSRF deny list (§5.8).
    pub allow_networks: Vec<String>,
    /// `http://relay:port`: deliver through a forward proxy (§5.9).
    pub proxy: Option<String>,
    /// The proxy's bearer key; defaults to the relay secret key.
    pub proxy_key: Option<String>,
    /// Dead letters older than this are purged (default 7 days, §3.8).
    #[serde(with = "duration")]
    pub dead_letter_retention: Duration,
    /// The most dead letters per subscription; beyond, the oldest are purged, ≥ 1 (default
    /// 10000).
    pub dead_letter_max: usize,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        WebhooksSection {
            retry_base: Duration::from_secs(5),
            retry_factor: 4.0,
            retry_max_delay: Duration::from_secs(8 * 3600),
            max_attempts: 16,
            max_age: Duration::from_secs(72 * 3600),
            disable_after: Duration::from_secs(5 * 86400),
            max_in_flight: 16,
            coalesce_threshold: 1000,
            max_backlog: 100_000,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(15),
            ca_file: None,
            max_subscriptions: 64,
            allow_networks: Vec::new(),
            proxy: None,
            proxy_key: None,
            dead_letter_retention: Duration::from_secs(7 * 86400),
            dead_letter_max: 10_000,
        }
    }
}

fn positive(key: &str, v: Duration) -> Result<(), ConfigError> {
    check(
        !v.is_zero(),
        key,
        show(v),
        "a positive duration such as \"5s\"",
    )
}

/// A duration as the file writes it: `"5s"`, `"1m 30s"`, `"250ms"`.
fn show(d: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

/// The numeric keys of earlier versions, a number of seconds each, and the duration key that
/// replaces each: `(section, old key, new key)`.
pub const DEPRECATED_SECONDS: &[(&str, &str, &str)] = &[
    ("presence", "update_interval_s", "update_interval"),
    ("presence", "leave_after_s", "leave_after"),
    ("presence", "telemetry_interval_s", "telemetry_interval"),
    ("beacons", "log_retention_s", "log_retention"),
    ("webhooks", "retry_base_s", "retry_base"),
    ("webhooks", "retry_max_delay_s", "retry_max_delay"),
    ("webhooks", "max_age_s", "max_age"),
    ("webhooks", "disable_after_s", "disable_after"),
    ("webhooks", "connect_timeout_s", "connect_timeout"),
    ("webhooks", "timeout_s", "timeout"),
    (
        "webhooks",
        "dead_letter_retention_s",
        "dead_letter_retention",
    ),
    ("api.limits", "head_timeout_s", "head_timeout"),
    ("api.limits", "idle_timeout_s", "idle_timeout"),
    ("api.limits", "body_timeout_s", "body_timeout"),
    ("api.limits", "request_timeout_s", "request_timeout"),
    ("api.limits", "send_timeout_s", "send_timeout"),
];

/// A deprecated key that a file used: `webhooks.timeout_s = 0.5` now read as
/// `webhooks.timeout = "500ms"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecated {
    /// `webhooks.timeout_s`.
    pub old: String,
    /// `webhooks.timeout`.
    pub new: String,
    /// The value as written.
    pub value: String,
    /// The same as a duration: `"500ms"`.
    pub duration: String,
}

/// The table at a dotted `section` path (`api.limits`), if the file has it.
fn section_mut<'t>(table: &'t mut toml::Table, section: &str) -> Option<&'t mut toml::Table> {
    section
        .split('.')
        .try_fold(table, |t, name| match t.get_mut(name) {
            Some(toml::Value::Table(inner)) => Some(inner),
            _ => None,
        })
}

/// Rewrites the deprecated numeric keys of `table` to their duration keys.
fn migrate(table: &mut toml::Table) -> Result<Vec<Deprecated>, String> {
    let mut used = Vec::new();
    for (section, old, new) in DEPRECATED_SECONDS {
        let Some(t) = section_mut(table, section) else {
            continue;
        };
        let Some(value) = t.remove(*old) else {
            continue;
        };
        let key = format!("{section}.{old}");
        if t.contains_key(*new) {
            return Err(format!(
                "{key} and {section}.{new} are the same setting: give {section}.{new}"
            ));
        }
        let seconds = match value {
            toml::Value::Integer(n) => n as f64,
            toml::Value::Float(f) => f,
            other => return Err(format!("{key} = {other}: expected a number of seconds")),
        };
        let d = Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("{key} = {value}: expected a number of seconds ≥ 0"))?;
        t.insert(
            (*new).to_owned(),
            toml::Value::String(humantime::format_duration(d).to_string()),
        );
        used.push(Deprecated {
            old: key,
            new: format!("{section}.{new}"),
            value: value.to_string(),
            duration: show(d),
        });
    }
    Ok(used)
}

/// The first path segments the API reserves (§1.2): a relay domain may not be one of them.
pub const RESERVED_SEGMENTS: [&str; 6] = [
    "gap",
    "gatt",
    "management",
    "beacon",
    "openapi.json",
    "metrics",
];

impl GatewayConfig {
    /// Parse `gateway.toml` text; unknown keys and wrong types name the key.
    pub fn from_toml(text: &str) -> Result<GatewayConfig, String> {
        let (config, deprecated) = GatewayConfig::parse(text)?;
        for d in &deprecated {
            tracing::warn!(
                "gateway.toml: {} = {} is deprecated; write {} = {} instead",
                d.old,
                d.value,
                d.new,
                d.duration
            );
        }
        Ok(config)
    }

    /// Parse and check `gateway.toml` text, returning the deprecated keys it used. A range
    /// error about such a key names it as written.
    pub fn parse(text: &str) -> Result<(GatewayConfig, Vec<Deprecated>), String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let deprecated = migrate(&mut table)?;
        let config: GatewayConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        if let Err(mut e) = config.validate() {
            if let Some(d) = deprecated.iter().find(|d| d.new == e.key) {
                e.key.clone_from(&d.old);
                e.value.clone_from(&d.value);
            }
            return Err(e.to_string());
        }
        Ok((config, deprecated))
    }

    /// Range checks the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.gateway.name.is_empty(),
            "gateway.name",
            "\"\"",
            "a non-empty name",
        )?;
        self.presence.validate()?;
        positive("beacons.log_retention", self.beacons.log_retention)?;
        self.api.limits.validate()?;
        self.relay.validate()?;
        self.webhooks.validate()
    }
}

impl PresenceSection {
    /// The `[presence]` checks of [`GatewayConfig::validate`].
    fn validate(&self) -> Result<(), ConfigError> {
        let p = self;
        if let Some(r) = p.enter_rssi {
            check(
                (-127..=20).contains(&r),
                "presence.enter_rssi",
                r,
                "-127 to 20 dBm",
            )?;
        }
        positive("presence.update_interval", p.update_interval)?;
        positive("presence.leave_after", p.leave_after)?;
        positive("presence.telemetry_interval", p.telemetry_interval)?;
        Ok(())
    }
}

impl RelaySection {
    /// The `[relay]` checks of [`GatewayConfig::validate`].
    fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        check(r.pool >= 1, "relay.pool", r.pool, "at least 1")?;
        check(
            r.max_connections >= r.pool,
            "relay.max_connections",
            r.max_connections,
            "at least relay.pool",
        )?;
        check(
            ["auto", "mux", "ptth"].contains(&r.transport.as_str()),
            "relay.transport",
            &r.transport,
            "auto, mux or ptth",
        )?;
        check(
            (1..=65_535).contains(&r.mux_streams),
            "relay.mux_streams",
            r.mux_streams,
            "1 to 65535",
        )?;
        if let Some(domain) = &r.domain {
            check(
                !RESERVED_SEGMENTS
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(domain)),
                "relay.domain",
                domain,
                "a domain that is not a reserved first path segment (gap, gatt, management, beacon, openapi.json, metrics)",
            )?;
        }
        Ok(())
    }
}

impl WebhooksSection {
    /// The `[webhooks]` checks of [`GatewayConfig::validate`].
    fn validate(&self) -> Result<(), ConfigError> {
        let w = self;
        positive("webhooks.retry_base", w.retry_base)?;
        check(
            w.retry_factor.is_finite() && w.retry_factor >= 1.0,
            "webhooks.retry_factor",
            w.retry_factor,
            "a number ≥ 1",
        )?;
        positive("webhooks.retry_max_delay", w.retry_max_delay)?;
        check(
            w.max_attempts >= 1,
            "webhooks.max_attempts",
            w.max_attempts,
            "at least 1",
        )?;
        positive("webhooks.max_age", w.max_age)?;
        positive("webhooks.disable_after", w.disable_after)?;
        check(
            w.max_in_flight >= 1,
            "webhooks.max_in_flight",
            w.max_in_flight,
            "at least 1",
        )?;
        check(
            w.max_backlog >= 1,
            "webhooks.max_backlog",
            w.max_backlog,
            "at least 1",
        )?;
        let attempt = Duration::from_secs(1)..=Duration::from_secs(60);
        check(
            attempt.contains(&w.connect_timeout),
            "webhooks.connect_timeout",
            show(w.connect_timeout),
            "1 to 60 seconds",
        )?;
        check(
            attempt.contains(&w.timeout),
            "webhooks.timeout",
            show(w.timeout),
            "1 to 60 seconds",
        )?;
        check(
            (1..=10_000).contains(&w.max_subscriptions),
            "webhooks.max_subscriptions",
            w.max_subscriptions,
            "1 to 10000",
        )?;
        positive("webhooks.dead_letter_retention", w.dead_letter_retention)?;
        check(
            w.dead_letter_max >= 1,
            "webhooks.dead_letter_max",
            w.dead_letter_max,
            "at least 1",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let c = GatewayConfig::default();
        c.validate().unwrap();
        assert_eq!(c.relay.pool, 4);
        assert_eq!(c.relay.max_connections, 32);
        assert_eq!(c.webhooks.max_attempts, 16);
        assert_eq!(c.webhooks.max_subscriptions, 64);
        assert_eq!(c.presence.leave_after, Duration::from_secs(30));
    }

    #[test]
    fn durations_and_the_deprecated_numeric_keys() {
        let (c, deprecated) =
            GatewayConfig::parse("[webhooks]\nretry_base = \"250ms\"\nmax_age = \"72h\"\n")
                .unwrap();
        assert_eq!(c.webhooks.retry_base, Duration::from_millis(250));
        assert_eq!(c.webhooks.max_age, Duration::from_secs(72 * 3600));
        assert!(deprecated.is_empty());
        let (c, deprecated) =
            GatewayConfig::parse("[presence]\nleave_after_s = 0.6\n[webhooks]\ntimeout_s = 2\n")
                .unwrap();
        assert_eq!(c.presence.leave_after, Duration::from_millis(600));
        assert_eq!(c.webhooks.timeout, Duration::from_secs(2));
        let old: Vec<&str> = deprecated.iter().map(|d| d.old.as_str()).collect();
        assert_eq!(old, ["presence.leave_after_s", "webhooks.timeout_s"]);
        let (c, deprecated) =
            GatewayConfig::parse("[api.limits]\nhead_timeout_s = 2.5\nidle_timeout = \"1s\"\n")
                .unwrap();
        assert_eq!(c.api.limits.head_timeout, Duration::from_millis(2500));
        assert_eq!(c.api.limits.idle_timeout, Duration::from_secs(1));
        assert_eq!(deprecated.len(), 1);
        assert_eq!(deprecated[0].new, "api.limits.head_timeout");
        let e = GatewayConfig::from_toml("[api.limits]\nsend_timeout = \"2h\"\n").unwrap_err();
        assert!(e.starts_with("api.limits.send_timeout = 2h: "), "{e}");
        let e = GatewayConfig::from_toml("[webhooks]\ntimeout = \"500ms\"\n").unwrap_err();
        assert!(e.starts_with("webhooks.timeout = \"500ms\": "), "{e}");
        let e = GatewayConfig::from_toml("[webhooks]\ntimeout_s = -1\n").unwrap_err();
        assert!(e.contains("webhooks.timeout_s = -1"), "{e}");
        let e = GatewayConfig::from_toml("[webhooks]\ntimeout = 5\n").unwrap_err();
        assert!(e.contains("\"5s\""), "{e}");
        let e =
            GatewayConfig::from_toml("[webhooks]\ntimeout = \"5s\"\ntimeout_s = 5\n").unwrap_err();
        assert!(e.contains("same setting"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = GatewayConfig::from_toml("[webhooks]\nretry_bse_s = 1\n").unwrap_err();
        assert!(e.contains("retry_bse_s"), "{e}");
        let e = GatewayConfig::from_toml("[webhooks]\ntimeout_s = 0.5\n").unwrap_err();
        assert!(e.contains("webhooks.timeout_s"), "{e}");
        let e = GatewayConfig::from_toml("[relay]\ndomain = \"GAP\"\n").unwrap_err();
        assert!(e.contains("relay.domain"), "{e}");
        let e = GatewayConfig::from_toml("[backend]\nkind = \"hci\"\n").unwrap_err();
        assert!(e.contains("kind"), "{e}");
    }
}
