//! The forward proxy's egress policy (spec 6.4): which resolved addresses a device may reach.
//!
//! A proxy on a public relay is a server-side request forgery risk: a device could reach the
//! relay's loopback services, the cloud metadata endpoint or the operator's private network.
//! So every *resolved address* is judged (never the name alone, which DNS rebinding could
//! change), by the operator's rules in order, then the built-in deny set of every non-public
//! range (`limmat_wire::net`, which the gateway's webhooks obey too), then the default; the
//! relay's own endpoints are denied before any rule is looked at.

use limmat_wire::net::{Cidr, canonical, deny_range};
use limmat_wire::proxy::Host;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Connect.
    Allow,
    /// Refuse with `403 egress-denied`.
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            _ => Err(format!("{s:?} is not allow or deny")),
        }
    }
}

/// A host pattern: an exact name, or `*.suffix` for every name below `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// Every name below this suffix (`*.suffix`), not the suffix itself.
    Suffix(String),
}

impl HostPattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => name == exact,
            HostPattern::Suffix(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!(
                "{s:?} is not a host pattern such as api.example.com or *.example.com"
            ));
        }
        Ok(match wild {
            true => HostPattern::Suffix(name.to_owned()),
            false => HostPattern::Exact(name.to_owned()),
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// Ports as `443,8883,1000-2000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(Vec<(u16, u16)>);

impl Ports {
    fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }
}

impl FromStr for Ports {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port list such as 443,8883,1000-2000");
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p > 0);
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let range = match item.split_once('-') {
                Some((lo, hi)) => (port(lo).ok_or_else(bad)?, port(hi).ok_or_else(bad)?),
                None => {
                    let p = port(item).ok_or_else(bad)?;
                    (p, p)
                }
            };
            if range.0 > range.1 {
                return Err(bad());
            }
            ranges.push(range);
        }
        Ok(Ports(ranges))
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            match lo == hi {
                true => write!(f, "{sep}{lo}")?,
                false => write!(f, "{sep}{lo}-{hi}")?,
            }
        }
        Ok(())
    }
}

/// One `[[egress.rule]]`, or an `--egress-allow`/`--egress-deny` value. Every condition given
/// must hold; a rule with none matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    /// What a match does.
    pub action: Action,
    /// Matched against each resolved address.
    pub cidr: Option<Cidr>,
    /// Matched against the requested name (never against an IP literal).
    pub host: Option<HostPattern>,
    /// Matched against the port.
    pub ports: Option<Ports>,
    /// The device domains the rule applies to; empty: every domain.
    pub domains: Vec<String>,
}

impl EgressRule {
    /// A command-line rule: a CIDR or a host pattern, optionally followed by `:PORTS`
    /// (`10.1.2.0/24:443`, `*.example.com`, `127.0.0.1/32`, `::1/128:8080`). An IPv6 range
    /// followed by ports needs its `/prefix`, so the last `:` is not taken for a port.
    pub fn parse(action: Action, s: &str) -> Result<Self, String> {
        let s = s.trim();
        let with_ports = s.rsplit_once(':').and_then(|(what, ports)| {
            let ports = ports.parse::<Ports>().ok()?;
            let unambiguous = !what.contains(':') || what.contains('/');
            unambiguous.then_some((what, Some(ports)))
        });
        let (what, ports) = with_ports.unwrap_or((s, None));
        let mut rule = EgressRule {
            action,
            cidr: None,
            host: None,
            ports,
            domains: Vec::new(),
        };
        match what.parse::<Cidr>() {
            Ok(cidr) => rule.cidr = Some(cidr),
            Err(_) => {
                rule.host = Some(what.parse().map_err(|_| {
                    format!(
                        "{s:?} is not an egress rule: a CIDR (10.1.2.0/24) or a host pattern \
                         (*.example.com), optionally followed by :PORTS (:443,8000-8100)"
                    )
                })?);
            }
        }
        Ok(rule)
    }

    fn matches(&self, domain: &str, host: &Host, addr: SocketAddr) -> bool {
        let domain_ok = self.domains.is_empty() || self.domains.iter().any(|d| d == domain);
        let cidr_ok = self.cidr.as_ref().is_none_or(|c| c.contains(addr.ip()));
        let host_ok = self.host.as_ref().is_none_or(|p| match host {
            Host::Name(name) => p.matches(name),
            Host::Ip(_) => false,
        });
        let ports_ok = self.ports.as_ref().is_none_or(|p| p.contains(addr.port()));
        domain_ok && cidr_ok && host_ok && ports_ok
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.action)?;
        if let Some(c) = &self.cidr {
            write!(f, " {c}")?;
        }
        if let Some(h) = &self.host {
            write!(f, " {h}")?;
        }
        if let Some(p) = &self.ports {
            write!(f, " ports {p}")?;
        }
        if !self.domains.is_empty() {
            write!(f, " for {}", self.domains.join(","))?;
        }
        Ok(())
    }
}

/// The egress settings: rules in order, and what applies when neither a rule nor the
/// built-in deny set matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    /// The rules, first match wins.
    pub rules: Vec<EgressRule>,
    /// What applies when no rule and no built-in range matches (`allow`).
    pub default: Action,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            default: Action::Allow,
        }
    }
}

/// The verdict on one resolved address, with the rule that decided it (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the address may be connected to.
    pub allowed: bool,
    /// The rule, range or default that decided.
    pub rule: String,
}

/// The policy of one relay: its settings and its own endpoints.
#[derive(Debug, Clone)]
pub struct Policy {
    config: EgressConfig,
    /// Every address and port this node listens on (public and admin listeners).
    own: Vec<SocketAddr>,
}

impl Policy {
    /// The policy of `config` for a node listening on `own`.
    pub fn new(config: EgressConfig, own: Vec<SocketAddr>) -> Self {
        Self { config, own }
    }

    /// Judges one resolved address for a device of `domain` that asked for `host`.
    pub fn check(&self, domain: &str, host: &Host, addr: SocketAddr) -> Verdict {
        if self.is_own(addr) {
            return Verdict {
                allowed: false,
                rule: "the relay's own endpoint".into(),
            };
        }
        if let Some(rule) = self
            .config
            .rules
            .iter()
            .find(|r| r.matches(domain, host, addr))
        {
            return Verdict {
                allowed: rule.action == Action::Allow,
                rule: rule.to_string(),
            };
        }
        if let Some(range) = deny_range(addr.ip()) {
            return Verdict {
                allowed: false,
                rule: format!("built-in deny {range}"),
            };
        }
        Verdict {
            allowed: self.config.default == Action::Allow,
            rule: format!("default {}", self.config.default),
        }
    }

    /// `addr` is one of this node's endpoints. A listener on an unspecified address is
    /// reachable at every local address; loopback and unspecified ones are known here, and
    /// [`Policy::is_self_connection`] catches the others after connecting.
    pub fn is_own(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.own.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == addr.port()
                && (own_ip == ip
                    || (own_ip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        })
    }

    /// A connection that ended up on this host (its local and peer addresses are the same
    /// address) at the port of one of this node's listeners.
    pub fn is_self_connection(&self, local: SocketAddr, peer: SocketAddr) -> bool {
        canonical(local.ip()) == canonical(peer.ip())
            && self.own.iter().any(|own| own.port() == peer.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }

    fn ip(s: &str) -> Host {
        Host::Ip(addr(s).ip())
    }

    fn policy(rules: &[(Action, &str)]) -> Policy {
        let rules = rules
            .iter()
            .map(|(a, r)| EgressRule::parse(*a, r).unwrap())
            .collect();
        Policy::new(
            EgressConfig {
                rules,
                default: Action::Allow,
            },
            vec![addr("127.0.0.1:8080"), addr("0.0.0.0:9090")],
        )
    }

    #[test]
    fn builtin_set_denies_every_private_range() {
        let p = policy(&[]);
        for a in [
            "127.0.0.1:80",
            "10.1.2.3:80",
            "172.16.0.1:80",
            "172.31.255.255:80",
            "192.168.1.1:80",
            "169.254.169.254:80",
            "0.0.0.0:80",
            "100.64.0.1:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "198.18.0.1:80",
            "[::1]:80",
            "[::]:80",
            "[fe80::1]:80",
            "[fd00::1]:80",
            "[ff02::1]:80",
            "[2001:db8::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:10.0.0.1]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "[2002:7f00:1::]:80",
            "[::127.0.0.1]:80",
        ] {
            let a = addr(a);
            let v = p.check("dom", &Host::Ip(a.ip()), a);
            assert!(!v.allowed, "{a} allowed by {}", v.rule);
        }
        for a in [
            "93.184.216.34:443",
            "172.32.0.1:80",
            "[2606:4700::1111]:443",
            "[::ffff:1.1.1.1]:53",
        ] {
            let a = addr(a);
            assert!(p.check("dom", &Host::Ip(a.ip()), a).allowed, "{a}");
        }
    }

    #[test]
    fn rules_first_match_wins_and_may_open_the_builtin_set() {
        let p = policy(&[
            (Action::Deny, "127.0.0.1/32:22"),
            (Action::Allow, "127.0.0.1/32"),
            (Action::Deny, "*.example.com"),
            (Action::Allow, "10.1.2.0/24:443,8000-8100"),
        ]);
        assert!(
            !p.check("d", &ip("127.0.0.1:22"), addr("127.0.0.1:22"))
                .allowed
        );
        assert!(
            p.check("d", &ip("127.0.0.1:3000"), addr("127.0.0.1:3000"))
                .allowed
        );
        // The mapped form of an allowed address is the same address.
        assert!(
            p.check(
                "d",
                &ip("[::ffff:127.0.0.1]:3000"),
                addr("[::ffff:127.0.0.1]:3000")
            )
            .allowed
        );
        let v = p.check("d", &name("api.example.com"), addr("93.184.216.34:443"));
        assert!(!v.allowed);
        assert_eq!(v.rule, "deny *.example.com");
        // `*.example.com` is only below the name.
        assert!(
            p.check("d", &name("example.com"), addr("93.184.216.34:443"))
                .allowed
        );
        assert!(p.check("d", &name("x"), addr("10.1.2.3:8050")).allowed);
        assert!(!p.check("d", &name("x"), addr("10.1.2.3:80")).allowed);
    }

    #[test]
    fn own_endpoints_are_always_denied() {
        let p = policy(&[
            (Action::Allow, "127.0.0.1/32"),
            (Action::Allow, "0.0.0.0/0"),
        ]);
        for a in [
            "127.0.0.1:8080",
            "[::ffff:127.0.0.1]:8080",
            "127.0.0.1:9090",
            "127.0.0.2:9090",
            "0.0.0.0:9090",
            "[::1]:9090",
        ] {
            let a = addr(a);
            let v = p.check("d", &Host::Ip(a.ip()), a);
            assert!(!v.allowed, "{a}");
            assert_eq!(v.rule, "the relay's own endpoint");
        }
        assert!(
            p.check("d", &ip("127.0.0.1:8081"), addr("127.0.0.1:8081"))
                .allowed
        );
        assert!(p.is_self_connection(addr("192.0.2.7:40000"), addr("192.0.2.7:9090")));
        assert!(!p.is_self_connection(addr("192.0.2.7:40000"), addr("192.0.2.8:9090")));
    }

    #[test]
    fn rules_for_some_domains_only() {
        let mut rule = EgressRule::parse(Action::Allow, "10.1.2.0/24").unwrap();
        rule.domains = vec!["backend-dev".into()];
        let p = Policy::new(
            EgressConfig {
                rules: vec![rule],
                default: Action::Deny,
            },
            vec![],
        );
        assert!(
            p.check("backend-dev", &name("h"), addr("10.1.2.3:80"))
                .allowed
        );
        assert!(!p.check("other", &name("h"), addr("10.1.2.3:80")).allowed);
        let v = p.check("other", &name("h"), addr("93.184.216.34:80"));
        assert_eq!((v.allowed, v.rule.as_str()), (false, "default deny"));
    }

    #[test]
    fn rule_syntax() {
        let r = EgressRule::parse(Action::Allow, "::1/128:8080").unwrap();
        assert_eq!(r.to_string(), "allow ::1/128 ports 8080");
        let r = EgressRule::parse(Action::Deny, "fe80::/10").unwrap();
        assert_eq!(r.to_string(), "deny fe80::/10");
        let r = EgressRule::parse(Action::Allow, "2001:db8::1").unwrap();
        assert_eq!(r.to_string(), "allow 2001:db8::1/128");
        let r = EgressRule::parse(Action::Allow, "*.Example.com.:443,1000-2000").unwrap();
        assert_eq!(r.to_string(), "allow *.example.com ports 443,1000-2000");
        for bad in [
            "",
            "a b",
            "*.",
            "10.0.0.0/33",
            "h:0",
            "h:2-1",
            "h:x",
            "a..b",
        ] {
            assert!(EgressRule::parse(Action::Allow, bad).is_err(), "{bad:?}");
        }
    }
}
