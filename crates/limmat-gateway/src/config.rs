//! The gateway's settings (`gateway-api.md` §5.10): the sections of `gateway.toml` with the
//! names and defaults of the specification. Unknown keys are refused (`deny_unknown_fields`),
//! and [`GatewayConfig::validate`] checks ranges, so a bad file stops start-up with a message
//! naming the key. The CLI layers flags and `LIMMAT_…` variables on top of this.

use crate::backend::sim::SimConfig;
use serde::Deserialize;
use std::path::PathBuf;

/// The whole `gateway.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    pub api: ApiSection,
    pub relay: RelaySection,
    pub backend: BackendSection,
    pub presence: PresenceSection,
    pub beacons: BeaconsSection,
    pub webhooks: WebhooksSection,
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
    /// CORS origins [O]; none by default.
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
    pub domain: Option<String>,
    pub secret_key: Option<String>,
    /// Waiting connections kept open (default 4).
    pub pool: usize,
    /// Relay connections in use at most (default 32).
    pub max_connections: usize,
}

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            address: None,
            domain: None,
            secret_key: None,
            pool: 4,
            max_connections: 32,
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
    #[default]
    Sim,
    Bluez,
}

/// `[presence]` (§3.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSection {
    pub enter_rssi: Option<i16>,
    pub update_interval_s: f64,
    pub leave_after_s: f64,
    pub telemetry_interval_s: f64,
}

impl Default for PresenceSection {
    fn default() -> Self {
        PresenceSection {
            enter_rssi: None,
            update_interval_s: 10.0,
            leave_after_s: 30.0,
            telemetry_interval_s: 60.0,
        }
    }
}

/// `[beacons]` (§5.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconsSection {
    /// The event log keeps entries at least this long, for SSE resumption.
    pub log_retention_s: f64,
}

impl Default for BeaconsSection {
    fn default() -> Self {
        BeaconsSection {
            log_retention_s: 600.0,
        }
    }
}

/// `[webhooks]` (§5.5–§5.9).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    pub retry_base_s: f64,
    pub retry_factor: f64,
    pub retry_max_delay_s: f64,
    pub max_attempts: u32,
    pub max_age_s: f64,
    pub disable_after_s: f64,
    pub max_in_flight: usize,
    pub coalesce_threshold: usize,
    pub max_backlog: usize,
    pub connect_timeout_s: f64,
    pub timeout_s: f64,
    /// Extra PEM roots for HTTPS receivers.
    pub ca_file: Option<PathBuf>,
    pub max_subscriptions: usize,
    /// CIDRs exempt from the SSRF deny list (§5.8).
    pub allow_networks: Vec<String>,
    /// `http://relay:port`: deliver through a forward proxy (§5.9).
    pub proxy: Option<String>,
    /// The proxy's bearer key; defaults to the relay secret key.
    pub proxy_key: Option<String>,
    pub dead_letter_retention_s: f64,
    pub dead_letter_max: usize,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        WebhooksSection {
            retry_base_s: 5.0,
            retry_factor: 4.0,
            retry_max_delay_s: 8.0 * 3600.0,
            max_attempts: 16,
            max_age_s: 72.0 * 3600.0,
            disable_after_s: 5.0 * 86400.0,
            max_in_flight: 16,
            coalesce_threshold: 1000,
            max_backlog: 100_000,
            connect_timeout_s: 10.0,
            timeout_s: 15.0,
            ca_file: None,
            max_subscriptions: 64,
            allow_networks: Vec::new(),
            proxy: None,
            proxy_key: None,
            dead_letter_retention_s: 7.0 * 86400.0,
            dead_letter_max: 10_000,
        }
    }
}

/// A configuration value out of range: the key, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {expected}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub expected: String,
}

/// `Ok` if `ok`, else the error naming `key`, `value` and what was `expected`.
pub(crate) fn check(
    ok: bool,
    key: &str,
    value: impl ToString,
    expected: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            key: key.into(),
            value: value.to_string(),
            expected: expected.into(),
        })
    }
}

fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
    check(
        v.is_finite() && v > 0.0,
        key,
        v,
        "a positive number of seconds",
    )
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
        let config: GatewayConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Range checks the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.gateway.name.is_empty(),
            "gateway.name",
            "\"\"",
            "a non-empty name",
        )?;
        let p = &self.presence;
        if let Some(r) = p.enter_rssi {
            check(
                (-127..=20).contains(&r),
                "presence.enter_rssi",
                r,
                "-127 to 20 dBm",
            )?;
        }
        positive("presence.update_interval_s", p.update_interval_s)?;
        positive("presence.leave_after_s", p.leave_after_s)?;
        positive("presence.telemetry_interval_s", p.telemetry_interval_s)?;
        positive("beacons.log_retention_s", self.beacons.log_retention_s)?;
        self.api.limits.validate()?;
        let r = &self.relay;
        check(r.pool >= 1, "relay.pool", r.pool, "at least 1")?;
        check(
            r.max_connections >= r.pool,
            "relay.max_connections",
            r.max_connections,
            "at least relay.pool",
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
        let w = &self.webhooks;
        positive("webhooks.retry_base_s", w.retry_base_s)?;
        check(
            w.retry_factor.is_finite() && w.retry_factor >= 1.0,
            "webhooks.retry_factor",
            w.retry_factor,
            "a number ≥ 1",
        )?;
        positive("webhooks.retry_max_delay_s", w.retry_max_delay_s)?;
        check(
            w.max_attempts >= 1,
            "webhooks.max_attempts",
            w.max_attempts,
            "at least 1",
        )?;
        positive("webhooks.max_age_s", w.max_age_s)?;
        positive("webhooks.disable_after_s", w.disable_after_s)?;
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
        check(
            (1.0..=60.0).contains(&w.connect_timeout_s),
            "webhooks.connect_timeout_s",
            w.connect_timeout_s,
            "1 to 60 seconds",
        )?;
        check(
            (1.0..=60.0).contains(&w.timeout_s),
            "webhooks.timeout_s",
            w.timeout_s,
            "1 to 60 seconds",
        )?;
        check(
            (1..=10_000).contains(&w.max_subscriptions),
            "webhooks.max_subscriptions",
            w.max_subscriptions,
            "1 to 10000",
        )?;
        positive(
            "webhooks.dead_letter_retention_s",
            w.dead_letter_retention_s,
        )?;
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
        assert_eq!(c.presence.leave_after_s, 30.0);
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
