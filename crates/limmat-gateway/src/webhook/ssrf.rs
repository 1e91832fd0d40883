//! SSRF protection for subscriber URLs (`gateway-api.md` §5.8, URL rules of §3.7).
//!
//! Subscriber URLs are user input, so the gateway must not become a way into its own network.
//! The deny list is the relay's built-in egress deny set (relay-protocol §6.4.3, in
//! `limmat_wire::net`), so the gateway refuses every destination the relay's forward proxy
//! refuses: loopback, private, link-local, unspecified, shared, benchmarking, documentation,
//! IETF, multicast and reserved ranges, unless a CIDR of `webhooks.allow_networks` covers them.
//! IPv4-mapped, NAT64, 6to4 and IPv4-compatible addresses are judged by the IPv4 address
//! inside; `localhost` and `*.localhost` are denied without asking a resolver.
//!
//! At registration a name is refused only if every address it resolves to is denied (a name
//! that does not resolve is accepted: the gateway may be offline). At every attempt the name is
//! resolved again and the denied addresses are dropped; the caller connects only to one of the
//! returned addresses, pinned for that connection, so DNS rebinding cannot slip through.

use async_trait::async_trait;
use limmat_wire::net;
pub use limmat_wire::net::Cidr;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use url::{Host, Url};

/// URLs longer than this are refused (§3.7).
pub const MAX_URL_LEN: usize = 2048;
/// How long registration waits for a resolver before treating the name as unresolvable.
pub const REGISTRATION_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `webhooks.allow_networks`: the CIDRs exempt from the deny list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<Cidr>,
}

impl AllowList {
    /// Parses the configured CIDRs; a bad one is an error that names the key and the value.
    pub fn parse<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, String> {
        let nets = cidrs
            .iter()
            .map(|c| parse_network(c.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { nets })
    }

    /// Whether a CIDR covers the address, as it is or as its embedded IPv4 address.
    pub fn covers(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V6(v6) => net::embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|n| n.contains(ip) || v4.is_some_and(|v4| n.contains(v4)))
    }

    /// Whether the gateway may connect to the address.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_denied(ip) || self.covers(ip)
    }
}

/// One `webhooks.allow_networks` entry: a network with its prefix length, `a.b.c.d/n` or
/// `v6/n` (a bare address is refused, so that a forgotten `/n` is not silently `/32`).
fn parse_network(s: &str) -> Result<Cidr, String> {
    let bad =
        || format!("webhooks.allow_networks: {s:?} is not a CIDR such as 10.1.2.0/24 or fd00::/8");
    match s.contains('/') {
        true => s.parse().map_err(|_| bad()),
        false => Err(bad()),
    }
}

/// Whether an address is in the deny list (before `allow_networks`): the relay's built-in
/// deny set of relay-protocol §6.4.3, so a webhook can reach nothing the relay's forward proxy
/// would refuse. An IPv4 address embedded in IPv6 (mapped, NAT64, 6to4, compatible) is judged
/// as that IPv4 address.
pub fn is_denied(ip: IpAddr) -> bool {
    net::is_denied(ip)
}

/// `localhost` and `*.localhost` (with or without a trailing dot), denied without resolving.
pub fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Why a subscriber URL or a delivery destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The URL breaks a rule of §3.7 (not absolute http/https, too long, userinfo, fragment).
    #[error("{0}")]
    Invalid(String),
    /// Every destination the URL leads to is denied (§5.8).
    #[error("{0} is not an allowed destination")]
    Denied(String),
    /// Resolving the name failed at delivery time (a `connect` failure, not an SSRF one).
    #[error("cannot resolve {host}: {reason}")]
    Unresolved { host: String, reason: String },
}

/// The destination of a checked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// A domain name (lower case, as the URL parser normalises it) or an IP literal.
    pub host: TargetHost,
    pub port: u16,
    pub url: Url,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    Name(String),
    Ip(IpAddr),
}

impl Target {
    /// `host` or `[v6]`, as written in `Host` headers and `CONNECT` targets (without the port).
    pub fn host_text(&self) -> String {
        match &self.host {
            TargetHost::Name(n) => n.clone(),
            TargetHost::Ip(IpAddr::V4(a)) => a.to_string(),
            TargetHost::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        }
    }

    /// `host:port` with the port always explicit: the `CONNECT` target (relay-protocol §6.3
    /// requires the port).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host_text(), self.port)
    }

    /// The `Host` field: the port omitted when it is the scheme's default, as the URL had it.
    pub fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host_text()
        } else {
            self.authority()
        }
    }
}

/// Checks the URL rules of §3.7: an absolute `http` or `https` URL of at most 2048 characters,
/// with a host, no userinfo and no fragment. IP literals come out normalised (`0x7f.1` is
/// `127.0.0.1`), so the address checks see what a connection would reach.
pub fn parse_url(url: &str) -> Result<Target, SsrfError> {
    let invalid = |why: &str| Err(SsrfError::Invalid(why.to_string()));
    if url.chars().count() > MAX_URL_LEN {
        return invalid("the URL is longer than 2048 characters");
    }
    let parsed = match Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Err(SsrfError::Invalid(format!("not an absolute URL: {e}"))),
    };
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return invalid("the URL's scheme is not http or https"),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return invalid("the URL carries userinfo");
    }
    if parsed.fragment().is_some() {
        return invalid("the URL carries a fragment");
    }
    let host = match parsed.host() {
        Some(Host::Domain(d)) => TargetHost::Name(d.to_string()),
        Some(Host::Ipv4(a)) => TargetHost::Ip(IpAddr::V4(a)),
        Some(Host::Ipv6(a)) => TargetHost::Ip(IpAddr::V6(a)),
        None => return invalid("the URL has no host"),
    };
    let Some(port) = parsed.port_or_known_default() else {
        return invalid("the URL has no port");
    };
    Ok(Target {
        https,
        host,
        port,
        url: parsed,
    })
}

/// Resolves names to addresses. The system resolver is the default; tests and embedders may
/// plug another in (the checks on what comes back are the same).
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// The literal-address and `localhost` checks, which need no resolver. `Ok(Some(ip))` for an
/// allowed literal, `Ok(None)` for a name that still has to be resolved.
pub fn check_literal(target: &Target, allow: &AllowList) -> Result<Option<IpAddr>, SsrfError> {
    match &target.host {
        TargetHost::Ip(ip) if allow.permits(*ip) => Ok(Some(*ip)),
        TargetHost::Ip(ip) => Err(SsrfError::Denied(ip.to_string())),
        TargetHost::Name(n) if is_localhost(n) => Err(SsrfError::Denied(n.clone())),
        TargetHost::Name(_) => Ok(None),
    }
}

/// The registration check (§3.7, §5.8), with the system resolver.
pub async fn check_registration(url: &str, allow: &AllowList) -> Result<(), SsrfError> {
    check_registration_with(url, allow, &SystemResolver).await
}

/// The registration check with a given resolver: URL rules, then a literal directly, then a
/// name refused only if it resolves and every address is denied.
pub async fn check_registration_with(
    url: &str,
    allow: &AllowList,
    resolver: &dyn Resolve,
) -> Result<(), SsrfError> {
    let target = parse_url(url)?;
    if check_literal(&target, allow)?.is_some() {
        return Ok(());
    }
    let TargetHost::Name(name) = &target.host else {
        return Ok(());
    };
    let resolved = tokio::time::timeout(
        REGISTRATION_RESOLVE_TIMEOUT,
        resolver.resolve(name, target.port),
    )
    .await;
    match resolved {
        Ok(Ok(addrs)) if !addrs.is_empty() && addrs.iter().all(|a| !allow.permits(a.ip())) => {
            Err(SsrfError::Denied(name.clone()))
        }
        // Allowed addresses, or a name that does not resolve (now).
        _ => Ok(()),
    }
}

/// The per-attempt check: resolves again and keeps the allowed addresses only, in resolver
/// order. No allowed address left is [`SsrfError::Denied`]; a failed lookup is
/// [`SsrfError::Unresolved`].
pub async fn resolve_for_attempt(
    target: &Target,
    allow: &AllowList,
    resolver: &dyn Resolve,
) -> Result<Vec<SocketAddr>, SsrfError> {
    if let Some(ip) = check_literal(target, allow)? {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let TargetHost::Name(name) = &target.host else {
        return Err(SsrfError::Denied(target.host_text()));
    };
    let addrs = resolver
        .resolve(name, target.port)
        .await
        .map_err(|e| SsrfError::Unresolved {
            host: name.clone(),
            reason: e.to_string(),
        })?;
    if addrs.is_empty() {
        return Err(SsrfError::Unresolved {
            host: name.clone(),
            reason: "no addresses".into(),
        });
    }
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| allow.permits(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(SsrfError::Denied(name.clone()));
    }
    Ok(allowed)
}

/// A fixed name → addresses table, for tests and for pinning names in embedded setups.
#[cfg(feature = "test-util")]
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: std::collections::HashMap<String, Vec<IpAddr>>,
}

#[cfg(feature = "test-util")]
impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        self.names.insert(name.to_ascii_lowercase(), addrs.to_vec());
        self
    }

    pub fn into_arc(self) -> std::sync::Arc<dyn Resolve> {
        std::sync::Arc::new(self)
    }
}

#[async_trait]
#[cfg(feature = "test-util")]
impl Resolve for StaticResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        match self.names.get(&host.to_ascii_lowercase()) {
            Some(addrs) => Ok(addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} is not in the table"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_list_of_5_8() {
        for denied in [
            "127.0.0.1",
            "127.255.255.254",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "fc00::1",
            "fdff::1",
            "169.254.169.254",
            "fe80::1",
            "febf::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
            "64:ff9b::7f00:1",
        ] {
            assert!(is_denied(ip(denied)), "{denied} should be denied");
        }
        for allowed in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "fec0::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b:1::a00:1", // not the well-known NAT64 prefix
        ] {
            assert!(!is_denied(ip(allowed)), "{allowed} should be allowed");
        }
    }

    #[test]
    fn allow_networks() {
        let allow = AllowList::parse(&["127.0.0.1/32", "fd00::/8", "10.1.2.0/24"]).unwrap();
        assert!(allow.permits(ip("127.0.0.1")));
        assert!(!allow.permits(ip("127.0.0.2")));
        assert!(allow.permits(ip("::ffff:127.0.0.1")));
        assert!(allow.permits(ip("fd12::1")));
        assert!(!allow.permits(ip("fc00::1")));
        assert!(allow.permits(ip("10.1.2.200")));
        assert!(!allow.permits(ip("10.1.3.1")));
        assert!(allow.permits(ip("8.8.8.8")));
        assert!(
            AllowList::parse(&["0.0.0.0/0"])
                .unwrap()
                .permits(ip("10.0.0.1"))
        );
        assert!(AllowList::parse(&["::/0"]).unwrap().permits(ip("::1")));
        for bad in [
            "127.0.0.1",
            "127.0.0.1/33",
            "::/129",
            "localhost/8",
            "1.2.3/8",
            "",
        ] {
            let e = AllowList::parse(&[bad]).unwrap_err();
            assert!(e.contains("webhooks.allow_networks"), "{e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn url_rules_of_3_7() {
        let t = parse_url("https://Example.COM/hook?x=1").unwrap();
        assert!(t.https);
        assert_eq!(t.host, TargetHost::Name("example.com".into()));
        assert_eq!(t.port, 443);
        assert_eq!(t.host_header(), "example.com");
        let t = parse_url("http://[::1]:8080/").unwrap();
        assert_eq!(t.host, TargetHost::Ip(ip("::1")));
        assert_eq!(t.authority(), "[::1]:8080");
        // Obfuscated IPv4 literals come out normalised.
        let t = parse_url("http://0x7f.1/").unwrap();
        assert_eq!(t.host, TargetHost::Ip(ip("127.0.0.1")));
        for bad in [
            "ftp://example.com/",
            "/relative",
            "example.com/hook",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "http://example.com/#frag",
            "http://example.com/#",
            "mailto:a@example.com",
            "",
        ] {
            assert!(
                matches!(parse_url(bad), Err(SsrfError::Invalid(_))),
                "{bad:?}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(long.len(), 2048);
        assert!(parse_url(&long).is_ok());
        assert!(parse_url(&format!("{long}a")).is_err());
    }

    #[tokio::test]
    async fn registration_checklist_31() {
        let none = AllowList::default();
        let resolver = StaticResolver::new()
            .with("internal.example", &[ip("10.0.0.5"), ip("192.168.0.5")])
            .with("mixed.example", &[ip("10.0.0.5"), ip("93.184.215.14")])
            .with("loop.example", &[ip("127.0.0.1")]);
        for url in [
            "http://127.0.0.1/hook",
            "http://[::1]/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/hook",
            "http://LOCALHOST./hook",
            "http://api.localhost:8080/hook",
            "http://[::ffff:7f00:1]/hook",
            "http://2130706433/hook", // 127.0.0.1 as one number
            "http://internal.example/hook",
        ] {
            let r = check_registration_with(url, &none, &resolver).await;
            assert!(matches!(r, Err(SsrfError::Denied(_))), "{url}: {r:?}");
        }
        for url in [
            "http://mixed.example/hook",   // one public address suffices
            "http://nowhere.example/hook", // does not resolve: accepted
            "https://93.184.215.14/hook",
        ] {
            check_registration_with(url, &none, &resolver)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        // allow_networks covers them.
        let allow = AllowList::parse(&["127.0.0.1/32", "::1/128"]).unwrap();
        for url in [
            "http://127.0.0.1/hook",
            "http://[::1]/hook",
            "http://loop.example/hook",
        ] {
            check_registration_with(url, &allow, &resolver)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        // localhost stays denied whatever the allow list says: it is never resolved.
        assert!(
            check_registration_with("http://localhost/", &allow, &resolver)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn attempt_drops_denied_addresses() {
        let none = AllowList::default();
        let resolver = StaticResolver::new()
            .with(
                "rebind.example",
                &[ip("127.0.0.1"), ip("93.184.215.14"), ip("::1")],
            )
            .with("loop.example", &[ip("127.0.0.1"), ip("::1")]);
        let t = parse_url("http://rebind.example:8080/").unwrap();
        assert_eq!(
            resolve_for_attempt(&t, &none, &resolver).await.unwrap(),
            vec!["93.184.215.14:8080".parse::<SocketAddr>().unwrap()]
        );
        let t = parse_url("http://loop.example/").unwrap();
        assert_eq!(
            resolve_for_attempt(&t, &none, &resolver).await,
            Err(SsrfError::Denied("loop.example".into()))
        );
        let t = parse_url("http://gone.example/").unwrap();
        assert!(matches!(
            resolve_for_attempt(&t, &none, &resolver).await,
            Err(SsrfError::Unresolved { .. })
        ));
        let t = parse_url("http://localhost:9/").unwrap();
        assert!(matches!(
            resolve_for_attempt(&t, &none, &SystemResolver).await,
            Err(SsrfError::Denied(_))
        ));
    }
}
