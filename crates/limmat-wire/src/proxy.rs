//! The forward proxy's byte rules (spec 6): which heads are proxy requests, their targets and
//! credentials, the origin-form rewrite of an absolute-form request, and the proxy's responses.
//!
//! Unlike the lenient Yaler scanner, these rules are strict: a proxy request names a host the
//! relay will connect to on a device's behalf, so anything ambiguous (a user-info part, two
//! `Content-Length`s, a field name with a space before its colon) is refused rather than
//! guessed at. Every function is total: any bytes give an answer, never a panic.

use crate::request::RequestHead;
use crate::route::Hostnames;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The answer to a `CONNECT` once the origin connection stands (6.3).
pub const CONNECTED: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

/// The `Via` value appended to forwarded requests (6.3).
pub const VIA: &str = "1.1 limmat";

/// The fields that never travel past a proxy (6.3), besides those named in `Connection`.
/// `Proxy-*` fields are dropped as a family: they are meant for this hop.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "te", "trailer", "upgrade"];

/// A host to connect to: a DNS name (lower case, no trailing dot) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Where a proxy request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub host: Host,
    /// The port, always explicit.
    pub port: u16,
}

impl Target {
    /// `host:port`, with brackets around an IPv6 literal: a `Host` value or a `CONNECT` target.
    pub fn authority(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            host => format!("{host}:{}", self.port),
        }
    }
}

/// An absolute-form `http://` target, split for the origin-form rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteTarget {
    /// The origin to connect to.
    pub target: Target,
    /// Path and query in origin form: starts with `/`; a fragment is dropped.
    pub path: Vec<u8>,
    /// The URI named the port; otherwise the `Host` field carries none.
    pub explicit_port: bool,
}

/// Why a target is refused with `400 bad-target` (6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// No host.
    NoHost,
    /// A host that is neither a DNS name nor an IP literal.
    Host,
    /// A missing (CONNECT), zero, or malformed port.
    Port,
    /// A scheme other than `http`; TLS and WebSocket go through `CONNECT`.
    Scheme,
    /// `user@host`: credentials in the URI are refused rather than forwarded.
    UserInfo,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetError::NoHost => "the target has no host",
            TargetError::Host => "the target's host is not a DNS name or an IP literal",
            TargetError::Port => "the target's port is missing or not 1 to 65535",
            TargetError::Scheme => "only http:// is proxied; use CONNECT for TLS",
            TargetError::UserInfo => "the target carries user information",
        })
    }
}

impl std::error::Error for TargetError {}

/// Whether a head is a forward-proxy request (2.1.3a, 6.1): an authority-form `CONNECT`
/// always; with the proxy on, also an absolute-form target (`scheme://…`) whose host is not a
/// relay hostname nor a subdomain of one. A target that only has a colon before its first
/// slash but no `://` stays a lenient Yaler target (H5).
pub fn is_proxy_request(head: &RequestHead<'_>, proxy_on: bool, hostnames: &Hostnames) -> bool {
    if head.method == b"CONNECT" && !head.target.starts_with(b"/") {
        return true;
    }
    if !proxy_on {
        return false;
    }
    let Some((_, rest)) = split_scheme(head.target) else {
        return false;
    };
    let authority = &rest[..rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len())];
    // The host as written, brackets and user info aside, for the hostname comparison only.
    let host_port = match memchr::memrchr(b'@', authority) {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = match host_port.strip_prefix(b"[") {
        Some(v6) => &v6[..memchr::memchr(b']', v6).unwrap_or(v6.len())],
        None => &host_port[..memchr::memchr(b':', host_port).unwrap_or(host_port.len())],
    };
    !hostnames.is_relay_host(host)
}

/// `scheme://rest` with a scheme of RFC 3986 bytes.
fn split_scheme(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', target)?;
    let (scheme, rest) = (&target[..colon], &target[colon..]);
    let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let rest = rest.strip_prefix(b"://")?;
    valid.then_some((scheme, rest))
}

/// The target of an authority-form `CONNECT`: `host:port` or `[v6]:port`, port required.
pub fn parse_authority(target: &[u8]) -> Result<Target, TargetError> {
    let (host, port) = split_host_port(target)?;
    match port {
        Some(port) => Ok(Target {
            host: parse_host(host)?,
            port,
        }),
        None => Err(TargetError::Port),
    }
}

/// An absolute-form target: only `http://`, without user info, port 80 unless given.
pub fn parse_absolute(target: &[u8]) -> Result<AbsoluteTarget, TargetError> {
    let Some((scheme, rest)) = split_scheme(target) else {
        return Err(TargetError::NoHost);
    };
    if !scheme.eq_ignore_ascii_case(b"http") {
        return Err(TargetError::Scheme);
    }
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains(&b'@') {
        return Err(TargetError::UserInfo);
    }
    let (host, port) = split_host_port(authority)?;
    let tail = &tail[..memchr::memchr(b'#', tail).unwrap_or(tail.len())];
    let mut path = Vec::with_capacity(tail.len() + 1);
    if !tail.starts_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(tail);
    Ok(AbsoluteTarget {
        target: Target {
            host: parse_host(host)?,
            port: port.unwrap_or(80),
        },
        path,
        explicit_port: port.is_some(),
    })
}

/// Splits `host[:port]` or `[v6][:port]`. An empty port (`host:`) counts as none.
fn split_host_port(authority: &[u8]) -> Result<(&[u8], Option<u16>), TargetError> {
    let (host, port) = if let Some(inner) = authority.strip_prefix(b"[") {
        let close = memchr::memchr(b']', inner).ok_or(TargetError::Host)?;
        let after = &inner[close + 1..];
        let port = match after {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return Err(TargetError::Host),
        };
        (&authority[..close + 2], port)
    } else {
        match memchr::memrchr(b':', authority) {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(TargetError::NoHost);
    }
    let port = match port {
        None | Some([]) => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Ok((host, port))
}

fn parse_port(digits: &[u8]) -> Result<u16, TargetError> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(TargetError::Port);
    }
    let value = digits
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    match u16::try_from(value) {
        Ok(0) | Err(_) => Err(TargetError::Port),
        Ok(port) => Ok(port),
    }
}

/// A host: `[v6]`, a dotted-quad IPv4 literal, or a DNS name (letters, digits, `-`, `_`, dots
/// between non-empty labels, one trailing dot dropped, at most 253 bytes), folded to lower case.
fn parse_host(host: &[u8]) -> Result<Host, TargetError> {
    if let Some(inner) = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        let text = std::str::from_utf8(inner).map_err(|_| TargetError::Host)?;
        return text
            .parse::<Ipv6Addr>()
            .map(|v6| Host::Ip(IpAddr::V6(v6)))
            .map_err(|_| TargetError::Host);
    }
    let name = host.strip_suffix(b".").unwrap_or(host);
    let text = std::str::from_utf8(name).map_err(|_| TargetError::Host)?;
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(Host::Name(text.to_ascii_lowercase()))
    } else {
        Err(TargetError::Host)
    }
}

/// The `Proxy-Authorization` of a head (6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No `Proxy-Authorization` line.
    Missing,
    /// More than one `Proxy-Authorization` line: a failure, as for devices (4.1.1).
    Several,
    /// `Bearer <key>`.
    Bearer(&'a [u8]),
    /// `Basic <base64 of user:password>`, still encoded.
    Basic(&'a [u8]),
    /// Another scheme, or a scheme without a credential.
    Unsupported,
}

/// Reads the `Proxy-Authorization` lines of a head.
pub fn credentials(head: &[u8]) -> Credentials<'_> {
    let mut found = Credentials::Missing;
    for (name, value) in fields(head) {
        if !name.eq_ignore_ascii_case(b"proxy-authorization") {
            continue;
        }
        if found != Credentials::Missing {
            return Credentials::Several;
        }
        let scheme_end = value
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(value.len());
        let (scheme, rest) = value.split_at(scheme_end);
        let rest = trim(rest);
        let token = &rest[..rest
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .unwrap_or(rest.len())];
        found = if token.is_empty() {
            Credentials::Unsupported
        } else if scheme.eq_ignore_ascii_case(b"bearer") {
            Credentials::Bearer(token)
        } else if scheme.eq_ignore_ascii_case(b"basic") {
            Credentials::Basic(token)
        } else {
            Credentials::Unsupported
        };
    }
    found
}

/// The header fields of a head as `(name, value)`, value trimmed of SP/HT. Lines that are not
/// `name:value` with a token name (no whitespace before the colon) and continuation lines are
/// skipped: the proxy forwards only what it can read unambiguously.
pub fn fields(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        let name = &line[..colon];
        let token = !name.is_empty() && name.iter().all(|&b| is_tchar(b));
        token.then(|| (name, trim(&line[colon + 1..])))
    })
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

/// How the body of a forwarded request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: nothing after the head belongs to this request.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: forwarded as it comes until the origin answers.
    Chunked,
}

/// Why a request's body framing is refused (`400`): the ambiguities request smuggling uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Both `Content-Length` and `Transfer-Encoding`, or `Content-Length`s that differ.
    Ambiguous,
    /// A `Content-Length` that is not a number, or a transfer coding that does not end in
    /// `chunked`.
    Invalid,
}

/// The body framing of a request head (RFC 9112, 6.3), strictly.
pub fn body(head: &[u8]) -> Result<Body, BodyError> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for (name, value) in fields(head) {
        if name.eq_ignore_ascii_case(b"content-length") {
            for item in value.split(|&b| b == b',').map(trim) {
                if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                    return Err(BodyError::Invalid);
                }
                let n = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
                if length.is_some_and(|l| l != n) {
                    return Err(BodyError::Ambiguous);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').map(trim).next();
            chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        }
    }
    match (length, chunked) {
        (Some(_), Some(_)) => Err(BodyError::Ambiguous),
        (_, Some(false)) => Err(BodyError::Invalid),
        (_, Some(true)) => Ok(Body::Chunked),
        (Some(0), None) | (None, None) => Ok(Body::None),
        (Some(n), None) => Ok(Body::Length(n)),
    }
}

/// The request sent to the origin (6.3): HTTP/1.1 in origin form, the hop-by-hop fields, every
/// field named in `Connection` and every `Proxy-*` field removed, `Host` set from the target,
/// `Via: 1.1 limmat` appended, and `Connection: close`: one request per origin connection.
pub fn origin_request(head: &[u8], target: &AbsoluteTarget) -> Vec<u8> {
    let method = &head[..head
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(head.len())];
    let listed: Vec<Vec<u8>> = fields(head)
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(|token| trim(token).to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    let mut out = Vec::with_capacity(head.len() + 64);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(&target.path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    let host = match (&target.target.host, target.explicit_port) {
        (_, true) => target.target.authority(),
        (Host::Ip(IpAddr::V6(v6)), false) => format!("[{v6}]"),
        (host, false) => host.to_string(),
    };
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields(head) {
        let lower = name.to_ascii_lowercase();
        let dropped = lower == b"host"
            || lower == b"proxy-connection"
            || lower.starts_with(b"proxy-")
            || HOP_BY_HOP.iter().any(|h| h.as_bytes() == lower.as_slice())
            || listed.contains(&lower);
        if dropped {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        // A bare CR or a NUL inside a value is a line break to some servers: a field could be
        // smuggled past the rewrite. RFC 9110 (5.5) allows replacing them with SP.
        out.extend(value.iter().map(|&b| match b {
            b'\r' | 0 => b' ',
            b => b,
        }));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(VIA.as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out
}

/// The proxy's refusals (6.3), each with its status and `Limmat-Error` token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A malformed target, a missing port or a scheme other than `http` (`400 bad-target`).
    BadTarget,
    /// The egress policy denied every resolved address (`403 egress-denied`).
    EgressDenied,
    /// Missing or invalid `Proxy-Authorization`.
    Auth,
    /// A limit was hit; the `Retry-After` in seconds.
    RateLimited(u64),
    /// No addresses (`502 dns-failed`).
    DnsFailed,
    /// Refused or reset by every allowed address (`502 connect-failed`).
    ConnectFailed,
    /// `proxy_connect_timeout` passed (`504 connect-timeout`).
    ConnectTimeout,
}

impl Refusal {
    /// The response status.
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadTarget => 400,
            Refusal::EgressDenied => 403,
            Refusal::Auth => 407,
            Refusal::RateLimited(_) => 429,
            Refusal::DnsFailed | Refusal::ConnectFailed => 502,
            Refusal::ConnectTimeout => 504,
        }
    }

    /// The `Limmat-Error` token.
    pub fn token(self) -> &'static str {
        match self {
            Refusal::BadTarget => "bad-target",
            Refusal::EgressDenied => "egress-denied",
            Refusal::Auth => "auth",
            Refusal::RateLimited(_) => "rate-limited",
            Refusal::DnsFailed => "dns-failed",
            Refusal::ConnectFailed => "connect-failed",
            Refusal::ConnectTimeout => "connect-timeout",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::BadTarget => "Bad Request",
            Refusal::EgressDenied => "Forbidden",
            Refusal::Auth => "Proxy Authentication Required",
            Refusal::RateLimited(_) => "Too Many Requests",
            Refusal::DnsFailed | Refusal::ConnectFailed => "Bad Gateway",
            Refusal::ConnectTimeout => "Gateway Timeout",
        }
    }

    /// The exact response bytes (6.3).
    pub fn response(self) -> Vec<u8> {
        let extra = match self {
            Refusal::Auth => "Proxy-Authenticate: Bearer\r\n".to_owned(),
            Refusal::RateLimited(secs) => format!(
                "Retry-After: {}\r\n",
                secs.clamp(1, u64::from(crate::response::MAX_RETRY_AFTER))
            ),
            _ => String::new(),
        };
        format!(
            "HTTP/1.1 {} {}\r\n{extra}Content-Length: 0\r\nConnection: close\r\nLimmat-Error: {}\r\n\r\n",
            self.status(),
            self.reason(),
            self.token()
        )
        .into_bytes()
    }
}

/// What a proxy client sends to open a tunnel: `CONNECT authority` with `Host` and, if given,
/// the `Proxy-Authorization` value. `authority` is `host:port` with an IPv6 host bracketed, as
/// [`Target::authority`] writes it; it and the value are the caller's, checked or configured,
/// and are written as given.
pub fn connect_request(authority: &str, proxy_authorization: Option<&str>) -> Vec<u8> {
    let mut out = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(value) = proxy_authorization {
        out.push_str("Proxy-Authorization: ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A head with every `Proxy-Authorization` line replaced by one carrying `value`, inserted
/// after the request line: what `limmat tunnel egress` does to a device program's requests.
/// Line endings are kept; only complete heads should be given.
pub fn with_proxy_authorization(head: &[u8], value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + value.len() + 24);
    let mut lines = head.split_inclusive(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        out.extend_from_slice(first);
    }
    out.extend_from_slice(b"Proxy-Authorization: ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in lines {
        let is_auth = line.len() >= 20 && line[..20].eq_ignore_ascii_case(b"proxy-authorization:");
        if !is_auth {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Hostnames {
        Hostnames::new(list)
    }

    fn proxy(head: &[u8], hostnames: &[&str]) -> bool {
        is_proxy_request(&RequestHead::parse(head), true, &names(hostnames))
    }

    #[test]
    fn which_heads_are_proxy_requests() {
        assert!(proxy(b"CONNECT example.org:443 HTTP/1.1\r\n\r\n", &[]));
        assert!(!proxy(b"CONNECT /dom HTTP/1.1\r\n\r\n", &[]));
        assert!(proxy(
            b"GET http://example.org/ HTTP/1.1\r\n\r\n",
            &["relay.test"]
        ));
        assert!(proxy(
            b"GET ftp://example.org/ HTTP/1.1\r\n\r\n",
            &["relay.test"]
        ));
        // The relay's own names, and their subdomains, are Yaler requests.
        assert!(!proxy(
            b"GET http://relay.test/dom HTTP/1.1\r\n\r\n",
            &["relay.test"]
        ));
        assert!(!proxy(
            b"GET http://RELAY.test.:80/d HTTP/1.1\r\n\r\n",
            &["relay.test"]
        ));
        assert!(!proxy(
            b"GET http://dom.relay.test/ HTTP/1.1\r\n\r\n",
            &["relay.test"]
        ));
        assert!(proxy(
            b"GET http://evilrelay.test/ HTTP/1.1\r\n\r\n",
            &["relay.test"]
        ));
        // Lenient Yaler targets without `://` are not.
        assert!(!proxy(b"GET https:relay:443/Dom/x HTTP/1.1\r\n\r\n", &[]));
        assert!(!proxy(
            b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n",
            &[]
        ));
        // With the proxy off only CONNECT counts (it gets 501).
        let head = RequestHead::parse(b"GET http://example.org/ HTTP/1.1\r\n\r\n");
        assert!(!is_proxy_request(&head, false, &names(&[])));
    }

    #[test]
    fn connect_targets() {
        let t = parse_authority(b"Example.ORG.:443").unwrap();
        assert_eq!(t.host, Host::Name("example.org".into()));
        assert_eq!(t.port, 443);
        let t = parse_authority(b"[::1]:22").unwrap();
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(t.authority(), "[::1]:22");
        let t = parse_authority(b"[::ffff:127.0.0.1]:80").unwrap();
        assert_eq!(t.host, Host::Ip("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(
            parse_authority(b"10.0.0.1:8883").unwrap().host,
            Host::Ip("10.0.0.1".parse().unwrap())
        );
        for (bad, why) in [
            (&b"example.org"[..], TargetError::Port),
            (b"example.org:", TargetError::Port),
            (b"example.org:0", TargetError::Port),
            (b"example.org:65536", TargetError::Port),
            (b"example.org:+80", TargetError::Port),
            (b"example.org:080a", TargetError::Port),
            (b":443", TargetError::NoHost),
            (b"", TargetError::NoHost),
            (b"[::1]", TargetError::Port),
            (b"[::1:443", TargetError::Host),
            (b"[zz]:443", TargetError::Host),
            (b"::1:443", TargetError::Host),
            (b"a..b:443", TargetError::Host),
            (b"a b:443", TargetError::Host),
            (b"a/b:443", TargetError::Host),
            (b"\xff:443", TargetError::Host),
            (b"user@host:443", TargetError::Host),
        ] {
            assert_eq!(
                parse_authority(bad),
                Err(why),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn absolute_targets() {
        let t = parse_absolute(b"http://Example.org/a/b?c=d#frag").unwrap();
        assert_eq!(t.target.host, Host::Name("example.org".into()));
        assert_eq!(t.target.port, 80);
        assert_eq!(t.path, b"/a/b?c=d");
        assert!(!t.explicit_port);
        let t = parse_absolute(b"HTTP://127.0.0.1:8080").unwrap();
        assert_eq!(t.path, b"/");
        assert_eq!(t.target.port, 8080);
        assert!(t.explicit_port);
        assert_eq!(parse_absolute(b"http://h?q").unwrap().path, b"/?q");
        assert_eq!(parse_absolute(b"http://[::1]:81/").unwrap().target.port, 81);
        for (bad, why) in [
            (&b"ftp://example.org/"[..], TargetError::Scheme),
            (b"https://example.org/", TargetError::Scheme),
            (b"ws://example.org/", TargetError::Scheme),
            (b"http://user:pw@example.org/", TargetError::UserInfo),
            (b"http:///path", TargetError::NoHost),
            (b"http://:80/", TargetError::NoHost),
            (b"http://h:99999/", TargetError::Port),
            (b"http://h:0/", TargetError::Port),
            (b"/relative", TargetError::NoHost),
            (b"http//h/", TargetError::NoHost),
        ] {
            assert_eq!(
                parse_absolute(bad),
                Err(why),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn proxy_credentials() {
        let c = |head: &'static [u8]| credentials(head);
        assert_eq!(c(b"GET http://h/ HTTP/1.1\r\n\r\n"), Credentials::Missing);
        assert_eq!(
            c(b"CONNECT h:1 HTTP/1.1\r\nproxy-authorization:  bearer  k.1-_ \r\n\r\n"),
            Credentials::Bearer(b"k.1-_")
        );
        assert_eq!(
            c(b"CONNECT h:1 HTTP/1.1\nProxy-Authorization: Basic ZDprZXk=\n\n"),
            Credentials::Basic(b"ZDprZXk=")
        );
        assert_eq!(
            c(b"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: Bearer\r\n\r\n"),
            Credentials::Unsupported
        );
        assert_eq!(
            c(b"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: Digest x\r\n\r\n"),
            Credentials::Unsupported
        );
        assert_eq!(
            c(b"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: Bearer a\r\nProxy-Authorization: Bearer a\r\n\r\n"),
            Credentials::Several
        );
        // The device handshake's field is not the proxy's, and a space before the colon
        // makes a line no field at all.
        assert_eq!(
            c(b"CONNECT h:1 HTTP/1.1\r\nAuthorization: Bearer a\r\nProxy-Authorization : Bearer b\r\n\r\n"),
            Credentials::Missing
        );
    }

    #[test]
    fn body_framing() {
        let b = |head: &'static [u8]| body(head);
        assert_eq!(b(b"GET http://h/ HTTP/1.1\r\n\r\n"), Ok(Body::None));
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Ok(Body::Length(12))
        );
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"),
            Ok(Body::Length(3))
        );
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Ok(Body::Chunked)
        );
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\n"),
            Err(BodyError::Ambiguous)
        );
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(BodyError::Ambiguous)
        );
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(BodyError::Invalid)
        );
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(BodyError::Invalid)
        );
        assert_eq!(
            b(b"POST http://h/ HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Err(BodyError::Invalid)
        );
    }

    #[test]
    fn origin_form_rewrite() {
        let head = b"GET http://Example.org:8080/p?q=1 HTTP/1.1\r\n\
            Host: wrong.example\r\n\
            Proxy-Authorization: Bearer secret\r\n\
            Proxy-Connection: keep-alive\r\n\
            Connection: keep-alive, X-Drop\r\n\
            Keep-Alive: 5\r\n\
            X-Drop: 1\r\n\
            TE: trailers\r\n\
            Trailer: X\r\n\
            Upgrade: websocket\r\n\
            Accept: */*\r\n\
            X-Keep:  kept value \r\n\
            Bad Field: x\r\n\
            \r\n";
        let target = parse_absolute(b"http://Example.org:8080/p?q=1").unwrap();
        assert_eq!(
            String::from_utf8(origin_request(head, &target)).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nHost: example.org:8080\r\nAccept: */*\r\n\
             X-Keep: kept value\r\nVia: 1.1 limmat\r\nConnection: close\r\n\r\n"
        );
        let target = parse_absolute(b"http://h/").unwrap();
        let out = origin_request(
            b"GET http://h/ HTTP/1.1\r\nX: a\rHost: evil\0b\r\n\r\n",
            &target,
        );
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a Host: evil b\r\nVia: 1.1 limmat\r\nConnection: close\r\n\r\n"
        );
        let target = parse_absolute(b"http://[::1]/").unwrap();
        let out = origin_request(b"POST http://[::1]/ HTTP/1.0\n\n", &target);
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nHost: [::1]\r\nVia: 1.1 limmat\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn refusal_bytes() {
        assert_eq!(
            Refusal::Auth.response(),
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Bearer\r\n\
              Content-Length: 0\r\nConnection: close\r\nLimmat-Error: auth\r\n\r\n"
        );
        assert_eq!(
            Refusal::RateLimited(0).response(),
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\
              Connection: close\r\nLimmat-Error: rate-limited\r\n\r\n"
        );
        assert_eq!(
            Refusal::EgressDenied.response(),
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\
              Limmat-Error: egress-denied\r\n\r\n"
        );
        for (r, status) in [
            (Refusal::BadTarget, b"400"),
            (Refusal::DnsFailed, b"502"),
            (Refusal::ConnectFailed, b"502"),
            (Refusal::ConnectTimeout, b"504"),
        ] {
            assert_eq!(&r.response()[9..12], status);
        }
    }

    #[test]
    fn client_side_heads() {
        let target = parse_authority(b"Example.org:443").unwrap();
        assert_eq!(
            connect_request(&target.authority(), Some("Bearer k")),
            b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\
              Proxy-Authorization: Bearer k\r\n\r\n"
        );
        assert_eq!(
            connect_request("[::1]:22", None),
            b"CONNECT [::1]:22 HTTP/1.1\r\nHost: [::1]:22\r\n\r\n"
        );
        assert_eq!(
            with_proxy_authorization(
                b"GET http://h/ HTTP/1.1\r\nproxy-authorization: Basic x\r\nA: b\r\n\r\n",
                "Bearer k"
            ),
            b"GET http://h/ HTTP/1.1\r\nProxy-Authorization: Bearer k\r\nA: b\r\n\r\n"
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let head = RequestHead::parse(&bytes);
                let _ = is_proxy_request(&head, true, &Hostnames::new(["relay.test"]));
                let _ = parse_authority(head.target);
                if let Ok(t) = parse_absolute(head.target) {
                    prop_assert!(t.path.starts_with(b"/"));
                    let out = origin_request(&bytes, &t);
                    // Every CR starts a CRLF: no field can hide behind a bare CR.
                    for (i, &b) in out.iter().enumerate() {
                        if b == b'\r' {
                            prop_assert_eq!(out.get(i + 1), Some(&b'\n'));
                        }
                    }
                    let lower = out.to_ascii_lowercase();
                    prop_assert!(!lower.windows(7).any(|w| w == b"\nproxy-"));
                }
                let _ = credentials(&bytes);
                let _ = body(&bytes);
                let _ = with_proxy_authorization(&bytes, "Bearer k");
            }

            #[test]
            fn rewrite_keeps_one_field_per_line(fields in proptest::collection::vec(
                "(Proxy-Authorization|Connection|X-A|Host| X|Keep-Alive)[: ]{0,2}[ -~\r\t\x00]{0,20}",
                0..8,
            )) {
                let head = format!("GET http://h:8/p HTTP/1.1\r\n{}\r\n\r\n", fields.join("\r\n"));
                let Ok(t) = parse_absolute(b"http://h:8/p") else { return Err(TestCaseError::fail("target")) };
                let out = origin_request(head.as_bytes(), &t);
                let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
                prop_assert!(text.starts_with("get /p http/1.1\r\nhost: h:8\r\n"));
                prop_assert!(text.ends_with("\r\nvia: 1.1 limmat\r\nconnection: close\r\n\r\n"));
                prop_assert_eq!(text.matches("\nhost:").count(), 1);
                prop_assert!(!text.contains("\nproxy-") && !text.contains("\nkeep-alive:"));
                prop_assert_eq!(text.matches('\r').count(), text.matches("\r\n").count());
            }

            #[test]
            fn targets_without_panic(target in "[a-zA-Z0-9:/\\[\\]@.%?#-]{0,40}") {
                let _ = parse_authority(target.as_bytes());
                let _ = parse_absolute(target.as_bytes());
                let _ = parse_absolute(format!("http://{target}").as_bytes());
            }
        }
    }
}
