//! The two addresses of `limmat tunnel` (spec 2.9): the relay, `[tls:|tcp:]host[:port]`, and the
//! local service, `[tls:|tcp:]host:port`.
//!
//! They are parsed once, up front, so that a typo is a clear error naming the bad value rather
//! than a connection failure retried for months by the backoff.

use std::fmt;
use std::str::FromStr;

/// Why an address given by a user is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} address `{value}`: {reason}")]
pub struct AddrError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

/// Where the relay is. The port defaults to 80 (or 443 with TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddr {
    /// A DNS name or an IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Whether the relay is reached over TLS: a `tls:` (or `ssl:`) prefix, or port 443 without
    /// a `tcp:` prefix.
    pub tls: bool,
}

impl RelayAddr {
    /// A plain-TCP relay address.
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: false,
        }
    }
}

impl FromStr for RelayAddr {
    type Err = AddrError;

    fn from_str(value: &str) -> Result<Self, AddrError> {
        let err = |reason| AddrError {
            what: "relay",
            value: value.to_owned(),
            reason,
        };
        let (tls, rest) = split_scheme(value);
        let (host, port) = split_host_port(rest).map_err(err)?;
        let port = match port {
            Some(0) => return Err(err("the port must be a number from 1 to 65535")),
            Some(p) => p,
            None if tls == Some(true) => 443,
            None => 80,
        };
        let tls = tls.unwrap_or(port == 443);
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("tls:")?;
        }
        write_host_port(f, &self.host, self.port)
    }
}

/// The local service (server and proxy modes) or the local listening address (client mode,
/// where port 0 asks for any free port; the modes that connect to it refuse port 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddr {
    pub host: String,
    pub port: u16,
    /// Whether the local service is reached over TLS: only an explicit `tls:` (or `ssl:`)
    /// prefix. Unlike the relay's, port 443 does not imply TLS here: with pass-through the
    /// client's own TLS bytes must reach a local HTTPS server as they are.
    pub tls: bool,
}

impl LocalAddr {
    /// A plain-TCP local address.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: false,
        }
    }
}

impl From<std::net::SocketAddr> for LocalAddr {
    fn from(addr: std::net::SocketAddr) -> Self {
        Self::new(addr.ip().to_string(), addr.port())
    }
}

impl FromStr for LocalAddr {
    type Err = AddrError;

    fn from_str(value: &str) -> Result<Self, AddrError> {
        let err = |reason| AddrError {
            what: "local",
            value: value.to_owned(),
            reason,
        };
        let (tls, rest) = split_scheme(value);
        match split_host_port(rest).map_err(err)? {
            (host, Some(port)) => Ok(Self {
                tls: tls == Some(true),
                ..Self::new(host, port)
            }),
            (_, None) => Err(err("a port is required, as in `localhost:8080`")),
        }
    }
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("tls:")?;
        }
        write_host_port(f, &self.host, self.port)
    }
}

/// Splits off a `tls:`, `ssl:` (TLS) or `tcp:` (plain) prefix, in any case.
fn split_scheme(value: &str) -> (Option<bool>, &str) {
    match value.split_once(':') {
        Some((s, rest)) if s.eq_ignore_ascii_case("tls") || s.eq_ignore_ascii_case("ssl") => {
            (Some(true), rest)
        }
        Some((s, rest)) if s.eq_ignore_ascii_case("tcp") => (Some(false), rest),
        _ => (None, value),
    }
}

/// Splits `host[:port]`, with an IPv6 literal in brackets (`[::1]:80`).
fn split_host_port(value: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs a closing `]`")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address between `[` and `]`");
        }
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("expected `:port` after `]`")?,
                ),
            ),
        }
    } else {
        match value.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("an IPv6 address must be written in brackets, as in `[::1]:80`");
            }
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
        return Err("the host contains a space or `/`");
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| "the port must be a number from 1 to 65535")?,
        ),
    };
    Ok((host, port))
}

fn write_host_port(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(s: &str) -> Result<(String, u16, bool), AddrError> {
        s.parse::<RelayAddr>().map(|a| (a.host, a.port, a.tls))
    }

    #[test]
    fn relay_addresses() {
        assert_eq!(
            relay("relay.example.com"),
            Ok(("relay.example.com".into(), 80, false))
        );
        assert_eq!(relay("relay:8080"), Ok(("relay".into(), 8080, false)));
        assert_eq!(relay("[::1]"), Ok(("::1".into(), 80, false)));
        assert_eq!(relay("[::1]:81"), Ok(("::1".into(), 81, false)));
        assert_eq!(relay("tcp:relay:443"), Ok(("relay".into(), 443, false)));
        assert_eq!(relay("relay:443"), Ok(("relay".into(), 443, true)));
        assert_eq!(relay("tls:relay"), Ok(("relay".into(), 443, true)));
        assert_eq!(relay("SSL:[::1]:8443"), Ok(("::1".into(), 8443, true)));
        assert_eq!(RelayAddr::plain("::1", 80).to_string(), "[::1]:80");
    }

    #[test]
    fn bad_relay_addresses_name_the_value() {
        for bad in [
            "",
            ":80",
            "relay:",
            "relay:0",
            "relay:99999",
            "::1",
            "[::1",
            "[x]:1",
            "a/b",
        ] {
            let err = bad.parse::<RelayAddr>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn local_addresses_need_a_port() {
        assert_eq!("localhost:22".parse(), Ok(LocalAddr::new("localhost", 22)));
        assert_eq!("[::1]:22".parse(), Ok(LocalAddr::new("::1", 22)));
        // Port 0 is for client mode's listener ("any free port").
        assert_eq!("127.0.0.1:0".parse(), Ok(LocalAddr::new("127.0.0.1", 0)));
        assert_eq!(
            "tcp:localhost:443".parse(),
            Ok(LocalAddr::new("localhost", 443))
        );
        let tls: LocalAddr = "TLS:[::1]:8443".parse().unwrap();
        assert_eq!((tls.host.as_str(), tls.port, tls.tls), ("::1", 8443, true));
        assert_eq!(tls.to_string(), "tls:[::1]:8443");
        assert!(!"localhost:443".parse::<LocalAddr>().unwrap().tls);
        assert!("tls:localhost".parse::<LocalAddr>().is_err());
        assert!("localhost:65536".parse::<LocalAddr>().is_err());
        let err = "localhost".parse::<LocalAddr>().unwrap_err().to_string();
        assert!(err.contains("port is required"), "{err}");
    }
}
