//! Domain keys and client routing (spec 1, H6 and 2.5).
//!
//! A client names its device either in the path (`/<domain>/…`) or, when the relay has
//! hostnames configured, as the first label of the host (`<domain>.relay.example.com`). These
//! rules are also what the agent and `limmat tunnel` use to validate a domain given on the CLI.
//! The domain keys themselves (H6) are [`crate::domain`]'s, re-exported here.

use crate::domain::fold_domain_run;
pub use crate::domain::{
    DomainError, MAX_DOMAIN_LEN, RELAY_DOMAIN, is_domain_byte, is_registrable, parse_domain,
};
use crate::request::RequestHead;

/// The relay's configured hostnames, normalised for comparison (M1).
#[derive(Debug, Clone, Default)]
pub struct Hostnames {
    names: Vec<Vec<u8>>,
}

impl Hostnames {
    /// Normalises the configured hostnames: case-folded, without a trailing dot.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            names: names
                .into_iter()
                .map(|n| normalise_host(n.as_ref().as_bytes()).to_vec())
                .collect(),
        }
    }

    /// Whether no hostname is configured (subdomain routing is off).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `host` equals a configured hostname, ASCII-case-insensitively, one trailing dot ignored.
    pub fn contains(&self, host: &[u8]) -> bool {
        let host = normalise_host(host);
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    /// `host` is a relay hostname or a subdomain of one (6.1): such absolute-form targets are
    /// Yaler requests, never proxy requests.
    pub fn is_relay_host(&self, host: &[u8]) -> bool {
        let host = normalise_host(host);
        self.names.iter().any(|n| {
            host.eq_ignore_ascii_case(n)
                || (host.len() > n.len()
                    && host[host.len() - n.len()..].eq_ignore_ascii_case(n)
                    && host[host.len() - n.len() - 1] == b'.')
        })
    }

    /// The subdomain tests of 2.5.2. On success, the first label of `host`.
    pub fn subdomain_label<'h>(&self, host: &'h [u8]) -> Option<&'h [u8]> {
        if self.is_empty() || self.contains(host) || is_ipv4_literal(host) {
            return None;
        }
        if host.starts_with(b"[") || host.iter().filter(|&&b| b == b'.').count() < 2 {
            return None;
        }
        let label = &host[..memchr::memchr(b'.', host)?];
        (!label.is_empty()).then_some(label)
    }
}

fn normalise_host(host: &[u8]) -> &[u8] {
    host.strip_suffix(b".").unwrap_or(host)
}

/// A dotted-quad IPv4 literal such as `192.0.2.1` (one trailing dot tolerated).
fn is_ipv4_literal(host: &[u8]) -> bool {
    let host = normalise_host(host);
    let mut parts = 0;
    for part in host.split(|&b| b == b'.') {
        parts += 1;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    parts == 4
}

/// How a client's domain was found (2.5); it tells a mux device whether the path carries the
/// `/<domain>` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteForm {
    /// The path's `/<domain>` prefix.
    Path,
    /// The `Host` field's subdomain label.
    Host,
}

/// Where a client request goes (2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRoute {
    /// The empty domain: `307` to `root_uri` if set, else `504` (2.5.3).
    Empty,
    /// `relay_domain`, too long, or a Host label with bytes outside H6: `504` (2.5.4).
    Unregistrable,
    /// A registrable domain key.
    Domain {
        /// The domain key, folded.
        domain: String,
        /// Whether the path or the Host label gave it.
        form: RouteForm,
    },
}

impl ClientRoute {
    /// Routes a client head. Subdomain form applies only when hostnames are configured and
    /// the host passes every test of 2.5.2; otherwise the path decides.
    pub fn of(head: &RequestHead<'_>, hostnames: &Hostnames) -> Self {
        match head.host.and_then(|host| hostnames.subdomain_label(host)) {
            Some(label) => Self::from_label(label),
            None => Self::from_key(head.domain.clone(), RouteForm::Path),
        }
    }

    /// Routes by an SNI or Host label (subdomain form).
    pub fn from_label(label: &[u8]) -> Self {
        if !label.iter().all(|&b| is_domain_byte(b)) {
            return ClientRoute::Unregistrable;
        }
        Self::from_key(fold_domain_run(label), RouteForm::Host)
    }

    fn from_key(domain: String, form: RouteForm) -> Self {
        if domain.is_empty() {
            ClientRoute::Empty
        } else if !is_registrable(&domain) {
            ClientRoute::Unregistrable
        } else {
            ClientRoute::Domain { domain, form }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(head: &[u8], hostnames: &[&str]) -> ClientRoute {
        ClientRoute::of(&RequestHead::parse(head), &Hostnames::new(hostnames))
    }

    fn domain(d: &str, form: RouteForm) -> ClientRoute {
        ClientRoute::Domain {
            domain: d.into(),
            form,
        }
    }

    #[test]
    fn path_form() {
        // Checklist 21: the domain comes from the first path segment.
        assert_eq!(
            route(b"GET /Dom/x HTTP/1.1\r\nHost: relay\r\n\r\n", &[]),
            domain("dom", RouteForm::Path)
        );
    }

    #[test]
    fn subdomain_form() {
        // Checklist 22: the host decides, whatever the path.
        let names = ["relay.example.com"];
        assert_eq!(
            route(
                b"GET /other/x HTTP/1.1\r\nHost: Dom.relay.example.com:8080\r\n\r\n",
                &names
            ),
            domain("dom", RouteForm::Host)
        );
        assert_eq!(
            route(
                b"GET / HTTP/1.1\r\nHost: dom.relay.example.com\r\n\r\n",
                &names
            ),
            domain("dom", RouteForm::Host)
        );
    }

    #[test]
    fn hosts_that_route_by_path() {
        // Checklist 23.
        let names = ["relay.example.com"];
        for host in [
            &b"Relay.Example.COM:80"[..],
            b"relay.example.com.",
            b"192.0.2.1",
            b"[2001:db8::1]:80",
            b"example.com",
            b".a.b",
        ] {
            let mut head = b"GET /dom/x HTTP/1.1\r\nHost: ".to_vec();
            head.extend_from_slice(host);
            head.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                route(&head, &names),
                domain("dom", RouteForm::Path),
                "{}",
                String::from_utf8_lossy(host)
            );
        }
        // Without hostnames, always by path.
        assert_eq!(
            route(
                b"GET /dom HTTP/1.1\r\nHost: a.relay.example.com\r\n\r\n",
                &[]
            ),
            domain("dom", RouteForm::Path)
        );
    }

    #[test]
    fn absolute_form_authority_wins() {
        // Checklist 24.
        assert_eq!(
            route(
                b"GET http://dev.relay.example.com/x HTTP/1.1\r\nHost: relay.example.com\r\n\r\n",
                &["relay.example.com"]
            ),
            domain("dev", RouteForm::Host)
        );
    }

    #[test]
    fn empty_and_unregistrable() {
        // Checklist 27, 28.
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n", &[]), ClientRoute::Empty);
        assert_eq!(route(b"GET /?x HTTP/1.1\r\n\r\n", &[]), ClientRoute::Empty);
        assert_eq!(
            route(b"GET /Relay_Domain/x HTTP/1.1\r\n\r\n", &[]),
            ClientRoute::Unregistrable
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(256));
        assert_eq!(route(long.as_bytes(), &[]), ClientRoute::Unregistrable);
        let ok = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(255));
        assert!(matches!(
            route(ok.as_bytes(), &[]),
            ClientRoute::Domain { .. }
        ));
        assert_eq!(
            route(
                b"GET / HTTP/1.1\r\nHost: d@v.relay.example.com\r\n\r\n",
                &["relay.example.com"]
            ),
            ClientRoute::Unregistrable
        );
        assert_eq!(
            route(
                b"GET / HTTP/1.1\r\nHost: relay_domain.relay.example.com\r\n\r\n",
                &["relay.example.com"]
            ),
            ClientRoute::Unregistrable
        );
    }

    #[test]
    fn ipv4_literals() {
        assert!(is_ipv4_literal(b"127.0.0.1"));
        assert!(is_ipv4_literal(b"127.0.0.1."));
        assert!(!is_ipv4_literal(b"127.0.0"));
        assert!(!is_ipv4_literal(b"a.0.0.1"));
        assert!(!is_ipv4_literal(b"1.2.3.4.5"));
    }
}
