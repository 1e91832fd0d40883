//! The two non-flag sources of `limmat relay` settings: a TOML file (`--config`) and `LIMMAT_…`
//! environment variables. Both fill a [`Settings`] by setting name, so a setting has one parser
//! whatever its source, and errors name the file key or variable, the value and what was
//! expected.

use crate::relay::Settings;
use crate::units;
use anyhow::{Context, anyhow};
use limmat_relay::auth::{AuthMode, DeviceKey};
use limmat_relay::egress::{HostPattern, Ports};
use limmat_relay::{Action, Cidr, EgressRule, Listen, Rate};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The prefix of every relay environment variable: `LIMMAT_HOLD_TIME` sets `hold_time`.
pub const ENV_PREFIX: &str = "LIMMAT_";
/// Names the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "LIMMAT_CONFIG";

/// The settings that flags, variables and the file share, by snake_case name. `cert` and `key`
/// are flags and variables; the file pairs them as `[[cert]]` tables instead.
const NAMES: &[&str] = &[
    "listen",
    "cert",
    "key",
    "tls_handshake_timeout",
    "hostname",
    "hold_time",
    "client_wait",
    "idle_timeout",
    "max_per_domain",
    "cap_retry_after",
    "max_head",
    "head_timeout",
    "max_waiting_clients",
    "first_post_renew",
    "root_uri",
    "drain_timeout",
    "mux_ping_interval",
    "mux_ping_timeout",
    "auth",
    "keys_file",
    "master_secret_file",
    "max_conns_per_ip",
    "conn_rate_per_ip",
    "auth_failures_per_ip",
    "handshake_rate_per_domain",
    "limit_exempt",
    "max_connections",
    "admin",
    "admin_token_file",
    "forward_proxy",
    "egress_allow",
    "egress_deny",
    "egress_default",
    "proxy_connect_timeout",
    "proxy_max_per_domain",
];

/// Keys only the file has: certificate pairs and static keys (spec 4.1.2).
const FILE_ONLY: &[&str] = &["certs", "device_key", "revoked_keys", "egress"];

/// A value before its setting's parser sees it.
enum Raw {
    /// An environment variable: lists are comma-separated.
    Env(String),
    /// A TOML string, number or boolean.
    Scalar(String),
    /// A TOML array of those.
    List(Vec<String>),
}

/// Parses a single value; a TOML array is refused.
fn one<T>(raw: Raw, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
    match raw {
        Raw::Env(s) | Raw::Scalar(s) => parse(s.trim()),
        Raw::List(_) => Err("expected a single value, not a list".into()),
    }
}

/// Parses a list: a TOML array, a single TOML value, or a comma-separated variable.
fn many<T>(raw: Raw, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items = match raw {
        Raw::Env(s) => {
            let items: Vec<String> = s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            // "," would otherwise silently replace the file's list with nothing.
            if items.is_empty() {
                return Err("expected a comma-separated list with at least one value".into());
            }
            items
        }
        Raw::Scalar(s) => vec![s],
        Raw::List(items) => items,
    };
    items.iter().map(|s| parse(s.trim())).collect()
}

fn from_str<T: FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

fn socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| "expected an address such as 127.0.0.1:9090".to_owned())
}

fn text(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

fn path(s: &str) -> Result<PathBuf, String> {
    match s {
        "" => Err("expected a file name".into()),
        s => Ok(PathBuf::from(s)),
    }
}

/// A count such as `1024`; `0` usually turns the limit off.
pub fn count(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a whole number such as 0 or 1024"))
}

/// `true` or `false`.
pub fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{s:?} is not true or false")),
    }
}

/// A hold time, checked here too so that the file key or variable is named: devices read with
/// a 75 s timeout, so a longer wait without a byte would cut them off (D2).
pub fn hold_time(s: &str) -> Result<Duration, String> {
    let d = units::duration(s)?;
    if d < Duration::from_secs(1) || d >= Duration::from_secs(75) {
        return Err(format!(
            "hold_time must be from 1s to 74s, below the devices' 75 s read timeout ({s:?} given)"
        ));
    }
    Ok(d)
}

/// A `limit_exempt` value: a range, or `none`.
pub fn exempt(value: &str) -> Result<Option<Cidr>, String> {
    match value {
        "none" => Ok(None),
        range => range.parse().map(Some),
    }
}

/// An `--egress-allow` value.
pub fn allow_rule(s: &str) -> Result<EgressRule, String> {
    EgressRule::parse(Action::Allow, s)
}

/// An `--egress-deny` value.
pub fn deny_rule(s: &str) -> Result<EgressRule, String> {
    EgressRule::parse(Action::Deny, s)
}

/// A list of egress rules. In a variable, a rule's port list has commas too
/// (`LIMMAT_EGRESS_ALLOW=10.0.0.0/8:443,8883,*.example.com`): an item that is only a port or
/// a port range continues the rule before it.
fn rules(raw: Raw, action: Action) -> Result<Vec<EgressRule>, String> {
    let raw = match raw {
        Raw::Env(s) => {
            let mut items: Vec<String> = Vec::new();
            for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let port_only = item.bytes().all(|b| b.is_ascii_digit() || b == b'-');
                match items.last_mut() {
                    Some(last) if port_only && last.contains(':') => {
                        last.push(',');
                        last.push_str(item);
                    }
                    _ => items.push(item.to_owned()),
                }
            }
            Raw::List(items)
        }
        other => other,
    };
    many(raw, |s| EgressRule::parse(action, s))
}

/// Stores `raw` in the setting `name`; `Ok(false)` if there is no such setting.
fn set(s: &mut Settings, name: &str, raw: Raw) -> Result<bool, String> {
    match name {
        "listen" => s.listen = Some(many(raw, from_str::<Listen>)?),
        "cert" => s.cert = Some(many(raw, path)?),
        "key" => s.key = Some(many(raw, path)?),
        "tls_handshake_timeout" => s.tls_handshake_timeout = Some(one(raw, units::duration)?),
        "hostname" => s.hostname = Some(many(raw, text)?),
        "hold_time" => s.hold_time = Some(one(raw, hold_time)?),
        "client_wait" => s.client_wait = Some(one(raw, units::duration)?),
        "idle_timeout" => s.idle_timeout = Some(one(raw, units::duration)?),
        "max_per_domain" => s.max_per_domain = Some(one(raw, count)?),
        "cap_retry_after" => s.cap_retry_after = Some(one(raw, units::duration)?),
        "max_head" => s.max_head = Some(one(raw, units::size)?),
        "head_timeout" => s.head_timeout = Some(one(raw, units::duration)?),
        "max_waiting_clients" => s.max_waiting_clients = Some(one(raw, count)?),
        "first_post_renew" => s.first_post_renew = Some(one(raw, boolean)?),
        "root_uri" => s.root_uri = Some(one(raw, text)?),
        "drain_timeout" => s.drain_timeout = Some(one(raw, units::duration)?),
        "mux_ping_interval" => s.mux_ping_interval = Some(one(raw, units::duration)?),
        "mux_ping_timeout" => s.mux_ping_timeout = Some(one(raw, units::duration)?),
        "auth" => s.auth = Some(one(raw, from_str::<AuthMode>)?),
        "keys_file" => s.keys_file = Some(many(raw, path)?),
        "master_secret_file" => s.master_secret_file = Some(many(raw, path)?),
        "max_conns_per_ip" => s.max_conns_per_ip = Some(one(raw, count)?),
        "conn_rate_per_ip" => s.conn_rate_per_ip = Some(one(raw, from_str::<Rate>)?),
        "auth_failures_per_ip" => s.auth_failures_per_ip = Some(one(raw, from_str::<Rate>)?),
        "handshake_rate_per_domain" => {
            s.handshake_rate_per_domain = Some(one(raw, from_str::<Rate>)?)
        }
        "limit_exempt" => s.limit_exempt = Some(many(raw, exempt)?),
        "max_connections" => s.max_connections = Some(one(raw, count)?),
        "admin" => s.admin = Some(one(raw, socket_addr)?),
        "admin_token_file" => s.admin_token_file = Some(one(raw, path)?),
        "forward_proxy" => s.forward_proxy = Some(one(raw, boolean)?),
        "egress_allow" => s.egress_allow = Some(rules(raw, Action::Allow)?),
        "egress_deny" => s.egress_deny = Some(rules(raw, Action::Deny)?),
        "egress_default" => s.egress_default = Some(one(raw, from_str::<Action>)?),
        "proxy_connect_timeout" => s.proxy_connect_timeout = Some(one(raw, units::duration)?),
        "proxy_max_per_domain" => s.proxy_max_per_domain = Some(one(raw, count)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// The `LIMMAT_…` variable of a setting.
pub fn env_name(setting: &str) -> String {
    format!("{ENV_PREFIX}{}", setting.to_ascii_uppercase())
}

/// Reads the `LIMMAT_…` variable of every setting. An empty variable counts as unset, as
/// container tools often define them empty; other `LIMMAT_` variables belong to other commands
/// (`LIMMAT_SECRET_KEY`) and are left alone.
pub fn from_env() -> anyhow::Result<Settings> {
    let mut settings = Settings::default();
    for name in NAMES {
        let var = env_name(name);
        let value = match std::env::var(&var) {
            Ok(value) if value.trim().is_empty() => continue,
            Ok(value) => value,
            Err(std::env::VarError::NotPresent) => continue,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(anyhow!("{var}: the value is not valid UTF-8"));
            }
        };
        set(&mut settings, name, Raw::Env(value.clone()))
            .map_err(|problem| anyhow!("{var}={value:?}: {problem}"))?;
    }
    Ok(settings)
}

/// A `[[cert]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertTable {
    cert: PathBuf,
    key: PathBuf,
}

/// The `[egress]` table: `default` and `[[egress.rule]]` (spec 6.4.2).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressTable {
    default: Option<String>,
    #[serde(default)]
    rule: Vec<RuleTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    action: String,
    cidr: Option<String>,
    host: Option<String>,
    /// `"443,8883,1000-2000"`, or a single port as a number.
    ports: Option<toml::Value>,
    #[serde(default)]
    domains: Vec<String>,
}

impl RuleTable {
    fn into_rule(self) -> Result<EgressRule, String> {
        let ports = match self.ports {
            None => None,
            Some(toml::Value::String(s)) => Some(s.parse::<Ports>()?),
            Some(toml::Value::Integer(n)) => Some(n.to_string().parse::<Ports>()?),
            Some(other) => return Err(format!("ports = {other}: expected \"443,8000-8100\"")),
        };
        let domains = self
            .domains
            .iter()
            .map(|d| limmat_wire::route::parse_domain(d).map_err(|e| format!("domain {d:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(EgressRule {
            action: self.action.parse()?,
            cidr: self.cidr.as_deref().map(str::parse::<Cidr>).transpose()?,
            host: self
                .host
                .as_deref()
                .map(str::parse::<HostPattern>)
                .transpose()?,
            ports,
            domains,
        })
    }
}

/// Reads a configuration file: every key must be a setting.
pub fn from_file(file: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the configuration file {}", file.display()))?;
    parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// The file's text to settings; errors name the key, its value and what was expected.
fn parse(source: &str) -> Result<Settings, String> {
    let table: toml::Table = toml::from_str(source).map_err(|e| e.to_string())?;
    let mut settings = Settings::default();
    let mut certs: Option<Vec<CertTable>> = None;
    let mut egress_default = None;
    for (key, value) in table {
        let bad = |problem: String| format!("{key} = {value}: {problem}");
        match key.as_str() {
            "cert" | "certs" => {
                if certs.is_some() {
                    return Err("give certificates as either [[cert]] or certs, not both".into());
                }
                let tables = value.clone().try_into::<Vec<CertTable>>().map_err(|e| {
                    bad(format!(
                        "expected [[cert]] tables with cert = \"FILE\" and key = \"FILE\" ({})",
                        e.message().trim_end()
                    ))
                })?;
                certs = Some(tables);
            }
            "key" => {
                return Err(bad(
                    "a private key goes next to its certificate: [[cert]] cert = \"…\" key = \"…\""
                        .into(),
                ));
            }
            "device_key" => {
                let keys = value.clone().try_into::<Vec<DeviceKey>>().map_err(|e| {
                    bad(format!(
                        "expected [[device_key]] tables with domain and sha256 ({})",
                        e.message().trim_end()
                    ))
                })?;
                settings.device_key = Some(keys);
            }
            "egress" => {
                let table = value.clone().try_into::<EgressTable>().map_err(|e| {
                    bad(format!(
                        "expected an [egress] table with default and [[egress.rule]] tables of \
                         action, cidr, host, ports and domains ({})",
                        e.message().trim_end()
                    ))
                })?;
                let rules = table
                    .rule
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        r.into_rule()
                            .map_err(|e| format!("egress.rule #{}: {e}", i + 1))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                settings.egress_rule = Some(rules);
                if let Some(default) = table.default {
                    egress_default = Some(
                        default
                            .parse::<Action>()
                            .map_err(|e| format!("egress.default: {e}"))?,
                    );
                }
            }
            "revoked_keys" => {
                let keys = many(raw(&value).map_err(&bad)?, text).map_err(&bad)?;
                settings.revoked_keys = Some(keys);
            }
            name => {
                let known = set(&mut settings, name, raw(&value).map_err(&bad)?).map_err(&bad)?;
                if !known {
                    return Err(match suggest(name) {
                        Some(near) => format!("unknown key {name:?} (did you mean {near}?)"),
                        None => format!("unknown key {name:?}"),
                    });
                }
            }
        }
    }
    if let Some(default) = egress_default {
        if settings.egress_default.is_some() {
            return Err(
                "give the default as either egress_default or egress.default, not both".into(),
            );
        }
        settings.egress_default = Some(default);
    }
    if let Some(certs) = certs {
        let (cert, key) = certs.into_iter().map(|c| (c.cert, c.key)).unzip();
        settings.cert = Some(cert);
        settings.key = Some(key);
    }
    Ok(settings)
}

/// A TOML value as the text a flag would carry; tables and dates are not settings.
fn raw(value: &toml::Value) -> Result<Raw, String> {
    fn scalar(value: &toml::Value) -> Result<String, String> {
        match value {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
                Err("expected a string, number or boolean".into())
            }
        }
    }
    match value {
        toml::Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Result<_, _>>()
            .map(Raw::List),
        other => scalar(other).map(Raw::Scalar),
    }
}

/// The known key closest to an unknown one: the flag spelling, or one or two typos away.
fn suggest(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.trim_start_matches("--").replace('-', "_");
    NAMES
        .iter()
        .chain(FILE_ONLY)
        .filter(|n| **n != "key")
        .map(|n| (distance(&unknown, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance, for short key names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_parses_from_the_file() {
        let s = parse(
            r#"
            listen = ["127.0.0.1:8080", "tls:0.0.0.0:443"]
            hold_time = "20s"
            max_head = "8KiB"
            max_per_domain = 0
            first_post_renew = true
            conn_rate_per_ip = "500/s:1000"
            limit_exempt = "none"
            revoked_keys = ["sha256:00"]
            [[cert]]
            cert = "a.pem"
            key = "a.key"
            [[device_key]]
            domain = "d"
            sha256 = "00"
            "#,
        )
        .unwrap();
        assert_eq!(s.listen.unwrap().len(), 2);
        assert_eq!(s.hold_time, Some(Duration::from_secs(20)));
        assert_eq!(s.max_head, Some(8192));
        assert_eq!(s.max_per_domain, Some(0));
        assert_eq!(s.first_post_renew, Some(true));
        assert_eq!(s.limit_exempt, Some(vec![None]));
        assert_eq!(s.cert, Some(vec![PathBuf::from("a.pem")]));
        assert_eq!(s.key, Some(vec![PathBuf::from("a.key")]));
        assert_eq!(s.device_key.unwrap()[0].domain, "d");
        assert_eq!(s.revoked_keys.unwrap(), ["sha256:00"]);
    }

    #[test]
    fn certs_may_be_an_inline_array() {
        let s = parse(r#"certs = [{ cert = "a.pem", key = "a.key" }]"#).unwrap();
        assert_eq!(s.key, Some(vec![PathBuf::from("a.key")]));
        let e = parse(r#"certs = [{ cert = "a.pem" }]"#).err().unwrap();
        assert!(e.contains("certs") && e.contains("key"), "{e}");
    }

    #[test]
    fn errors_name_key_value_and_expectation() {
        let e = parse(r#"hold_time = "90s""#).err().unwrap();
        assert!(
            e.starts_with(r#"hold_time = "90s": "#) && e.contains("1s to 74s"),
            "{e}"
        );
        let e = parse("hold_tme = \"30s\"").err().unwrap();
        assert_eq!(e, r#"unknown key "hold_tme" (did you mean hold_time?)"#);
        let e = parse("max-head = 1").err().unwrap();
        assert!(e.contains("did you mean max_head?"), "{e}");
        let e = parse("hold_time = [\"1s\"]").err().unwrap();
        assert!(e.contains("single value"), "{e}");
        let e = parse("listen = [{a = 1}]").err().unwrap();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn egress_settings() {
        let s = parse(
            r#"
            forward_proxy = true
            egress_allow = ["127.0.0.1/32", "*.example.com:443,8883"]
            proxy_max_per_domain = 8
            [egress]
            default = "deny"
            [[egress.rule]]
            action = "allow"
            cidr = "10.1.2.0/24"
            ports = 443
            domains = ["Backend"]
            [[egress.rule]]
            action = "deny"
            host = "*.internal"
            "#,
        )
        .unwrap();
        assert_eq!(s.forward_proxy, Some(true));
        assert_eq!(s.egress_default, Some(Action::Deny));
        assert_eq!(s.proxy_max_per_domain, Some(8));
        let allow = s.egress_allow.unwrap();
        assert_eq!(allow[1].to_string(), "allow *.example.com ports 443,8883");
        let table = s.egress_rule.unwrap();
        assert_eq!(
            table[0].to_string(),
            "allow 10.1.2.0/24 ports 443 for backend"
        );
        assert_eq!(table[1].to_string(), "deny *.internal");
        let e = parse("[[egress.rule]]\naction = \"maybe\"").err().unwrap();
        assert!(e.contains("egress.rule #1") && e.contains("maybe"), "{e}");
        let e = parse("egress_deny = [\"not a rule\"]").err().unwrap();
        assert!(e.starts_with("egress_deny = "), "{e}");
        // In a variable, port lists continue the rule before them.
        let mut s = Settings::default();
        let value = "10.0.0.0/8:443,8883,1000-2000, *.example.com,127.0.0.1/32";
        set(&mut s, "egress_allow", Raw::Env(value.into())).unwrap();
        let rules: Vec<String> = s
            .egress_allow
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            rules,
            [
                "allow 10.0.0.0/8 ports 443,8883,1000-2000",
                "allow *.example.com",
                "allow 127.0.0.1/32"
            ]
        );
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let mut s = Settings::default();
        set(
            &mut s,
            "listen",
            Raw::Env("127.0.0.1:1, tls:[::1]:2".into()),
        )
        .unwrap();
        assert_eq!(
            s.listen.unwrap()[1],
            Listen::tls("[::1]:2".parse().unwrap())
        );
    }
}
