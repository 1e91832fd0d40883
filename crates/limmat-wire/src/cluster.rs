//! The cluster's internal listener protocol (spec 7.1 and 7.5) as pure functions.
//!
//! Nodes of one cluster talk HTTP/1.1 to each other's internal listener: probes
//! (`GET /limmat/cluster/1/{node,health,members}`) and client forwarding (`CONNECT /<domain>`
//! with the `Limmat-*` fields of 7.5). Unlike the public listeners, which must accept whatever
//! fifteen years of device libraries send, only Limmat nodes speak here, so the parser is
//! strict: a duplicate field, a missing field or a malformed value is a `400` that names it.
//!
//! The forwarding head is written by one node and read by another, so both directions live
//! here and are tested against each other byte for byte. Values that come from a client (the
//! SNI) are checked before they are written into a head, so a client cannot inject fields.

use crate::domain::{fold_domain_run, is_domain_byte, is_registrable};
use crate::mux::Route;
use std::net::SocketAddr;

/// The path prefix of every internal endpoint; `1` is the protocol version.
pub const PREFIX: &str = "/limmat/cluster/1/";

/// The owner's answer to an accepted forward (7.5). The client's stream follows.
pub const FORWARD_ACCEPTED: &[u8] = b"HTTP/1.1 200 \r\n\r\n";

/// A request without the cluster secret (7.1).
pub const UNAUTHORIZED: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n\
Content-Length: 0\r\nConnection: close\r\n\r\n";

/// How the client reached the forwarding node (the `Limmat-Listener` field of 7.5). An
/// SNI-routed client is forwarded still encrypted; the owner makes the TLS decision of 2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardLeg {
    /// A client of a plain listener; the stream is its bytes.
    Plain,
    /// A client whose TLS the forwarding node terminated; the stream is the decrypted bytes.
    TlsTerminated,
    /// An SNI-routed client; the stream is its raw TLS bytes from the ClientHello on.
    TlsSni,
}

impl ForwardLeg {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardLeg::Plain => "plain",
            ForwardLeg::TlsTerminated => "tls-terminated",
            ForwardLeg::TlsSni => "tls-sni",
        }
    }

    pub fn parse(value: &[u8]) -> Option<Self> {
        [
            ForwardLeg::Plain,
            ForwardLeg::TlsTerminated,
            ForwardLeg::TlsSni,
        ]
        .into_iter()
        .find(|l| l.as_str().as_bytes() == value)
    }
}

/// One forwarded client (7.5): what the owner needs to treat the stream that follows exactly
/// like a client of that kind on its own listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The domain key.
    pub domain: String,
    /// The node the sender believes owns the domain (`Host`), informative.
    pub owner: String,
    /// `Limmat-Hops`: 1 from the first forwarding node, one more per further hop.
    pub hops: u32,
    /// `Limmat-Listener`.
    pub leg: ForwardLeg,
    /// `Limmat-Route`: how the first node found the domain.
    pub route: Route,
    /// `Limmat-Client-Addr`: the original client's address.
    pub client_addr: SocketAddr,
    /// `Limmat-Public-Port`: the port of the listener the client used.
    pub public_port: u16,
    /// `Limmat-Sni`: the client's server name, when it sent one.
    pub sni: Option<String>,
}

/// A value that cannot be written into a forwarding head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The domain is not a registrable domain key (2.2 H6, 1).
    Domain,
    /// The owner's node id is empty or has bytes outside visible ASCII.
    Owner,
    /// The SNI has bytes outside visible ASCII.
    Sni,
    /// The cluster secret is empty or has bytes outside visible ASCII.
    Secret,
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EncodeError::Domain => "the domain is not a registrable domain key",
            EncodeError::Owner => "the node id is empty or not visible ASCII",
            EncodeError::Sni => "the server name is not visible ASCII",
            EncodeError::Secret => "the cluster secret is empty or not visible ASCII",
        })
    }
}

impl std::error::Error for EncodeError {}

/// The `Location` of the 7.4 redirect: `http[s]://<host>:<port><path>`, the owner's public
/// host and port followed by the original target path (`/` when it was empty). An IPv6 host
/// is bracketed.
pub fn location(host: &str, port: u16, tls: bool, path: &[u8]) -> Vec<u8> {
    let scheme = if tls { "https" } else { "http" };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let mut out = format!("{scheme}://{host}:{port}").into_bytes();
    match path.first() {
        Some(b'/') => out.extend_from_slice(path),
        _ => {
            out.push(b'/');
            out.extend_from_slice(path);
        }
    }
    out
}

/// Visible ASCII without SP: what a node id, an SNI or the secret may contain, so that none of
/// them can end a field or a line.
pub fn is_token(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl Forward {
    /// The forwarding head of 7.5, exactly.
    pub fn encode(&self, secret: &[u8]) -> Result<Vec<u8>, EncodeError> {
        if !is_registrable(&self.domain)
            || !self.domain.bytes().all(is_domain_byte)
            || fold_domain_run(self.domain.as_bytes()) != self.domain
        {
            return Err(EncodeError::Domain);
        }
        if !is_token(self.owner.as_bytes()) {
            return Err(EncodeError::Owner);
        }
        if !is_token(secret) {
            return Err(EncodeError::Secret);
        }
        if self.sni.as_ref().is_some_and(|s| !is_token(s.as_bytes())) {
            return Err(EncodeError::Sni);
        }
        let mut head = Vec::with_capacity(256 + secret.len());
        head.extend_from_slice(b"CONNECT /");
        head.extend_from_slice(self.domain.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        head.extend_from_slice(self.owner.as_bytes());
        head.extend_from_slice(b"\r\nAuthorization: Bearer ");
        head.extend_from_slice(secret);
        head.extend_from_slice(
            format!(
                "\r\nLimmat-Hops: {}\r\nLimmat-Listener: {}\r\nLimmat-Route: {}\r\n\
                 Limmat-Client-Addr: {}\r\nLimmat-Public-Port: {}\r\n",
                self.hops,
                self.leg.as_str(),
                self.route.as_str(),
                self.client_addr,
                self.public_port
            )
            .as_bytes(),
        );
        if let Some(sni) = &self.sni {
            head.extend_from_slice(b"Limmat-Sni: ");
            head.extend_from_slice(sni.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        Ok(head)
    }
}

/// What a request to the internal listener asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Internal {
    /// `GET /limmat/cluster/1/node`: this node's document.
    Node,
    /// `GET /limmat/cluster/1/health`: 200 while serving, 503 while draining.
    Health,
    /// `GET /limmat/cluster/1/members`: this node's view of the cluster.
    Members,
    /// `CONNECT /<domain>`: a forwarded client (7.5).
    Forward(Forward),
}

/// Why a request to the internal listener is refused (after its secret was checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalError {
    /// `404`: not an internal endpoint.
    NotFound,
    /// `405`: an endpoint with the wrong method; the value is the `Allow` field.
    MethodNotAllowed(&'static str),
    /// `400`: the named field is missing, repeated or malformed.
    BadRequest(&'static str),
}

impl InternalError {
    /// The exact response.
    pub fn response(self) -> Vec<u8> {
        match self {
            InternalError::NotFound => text_response(404, "Not Found", &[], "not found\n"),
            InternalError::MethodNotAllowed(allow) => text_response(
                405,
                "Method Not Allowed",
                &[("Allow", allow)],
                "method not allowed\n",
            ),
            InternalError::BadRequest(what) => {
                text_response(400, "Bad Request", &[], &format!("bad request: {what}\n"))
            }
        }
    }
}

/// The `Authorization` of an internal request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` field, or not the `Bearer` scheme.
    Missing,
    /// Exactly one `Authorization: Bearer <token>`.
    Token(&'a [u8]),
    /// More than one `Authorization` field: refused like a wrong secret.
    Several,
}

/// A parsed internal request head: the secret it carries and what it asks for. The caller
/// checks the secret (in constant time) before it looks at `request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalHead<'a> {
    pub bearer: Bearer<'a>,
    pub request: Result<Internal, InternalError>,
}

/// Parses a complete request head (as found by [`crate::HeadScanner`]) sent to the internal
/// listener. Total: any bytes give an answer, never a panic.
pub fn parse_internal(head: &[u8]) -> InternalHead<'_> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut fields = Fields::default();
    let mut bad_field = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        if let Err(name) = fields.add(line) {
            bad_field.get_or_insert(name);
        }
    }
    let bearer = fields.bearer();
    let request = match bad_field {
        Some(name) => Err(InternalError::BadRequest(name)),
        None => route_request(request_line, &fields),
    };
    InternalHead { bearer, request }
}

fn route_request(line: &[u8], fields: &Fields<'_>) -> Result<Internal, InternalError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InternalError::BadRequest("request line"));
    };
    if !version.starts_with(b"HTTP/1.") {
        return Err(InternalError::BadRequest("request line"));
    }
    if let Some(endpoint) = target.strip_prefix(PREFIX.as_bytes()) {
        let request = match endpoint {
            b"node" => Internal::Node,
            b"health" => Internal::Health,
            b"members" => Internal::Members,
            _ => return Err(InternalError::NotFound),
        };
        return if method == b"GET" {
            Ok(request)
        } else {
            Err(InternalError::MethodNotAllowed("GET"))
        };
    }
    if method != b"CONNECT" {
        return Err(InternalError::NotFound);
    }
    let domain = match target.strip_prefix(b"/") {
        Some(d) if !d.is_empty() && d.iter().all(|&b| is_domain_byte(b)) => fold_domain_run(d),
        _ => return Err(InternalError::BadRequest("request target")),
    };
    if !is_registrable(&domain) {
        return Err(InternalError::BadRequest("request target"));
    }
    fields.forward(domain).map(Internal::Forward)
}

/// The fields an internal request may carry, each at most once.
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
    authorization_lines: u32,
    hops: Option<&'a [u8]>,
    listener: Option<&'a [u8]>,
    route: Option<&'a [u8]>,
    client_addr: Option<&'a [u8]>,
    public_port: Option<&'a [u8]>,
    sni: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// Records one field line; `Err(name)` for a line that is not a field or a repeated field.
    fn add(&mut self, line: &'a [u8]) -> Result<(), &'static str> {
        let colon = memchr::memchr(b':', line).ok_or("header line")?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        let slot = match () {
            _ if name.eq_ignore_ascii_case(b"authorization") => {
                self.authorization_lines += 1;
                self.authorization.get_or_insert(value);
                return Ok(());
            }
            _ if name.eq_ignore_ascii_case(b"host") => (&mut self.host, "Host"),
            _ if name.eq_ignore_ascii_case(b"limmat-hops") => (&mut self.hops, "Limmat-Hops"),
            _ if name.eq_ignore_ascii_case(b"limmat-listener") => {
                (&mut self.listener, "Limmat-Listener")
            }
            _ if name.eq_ignore_ascii_case(b"limmat-route") => (&mut self.route, "Limmat-Route"),
            _ if name.eq_ignore_ascii_case(b"limmat-client-addr") => {
                (&mut self.client_addr, "Limmat-Client-Addr")
            }
            _ if name.eq_ignore_ascii_case(b"limmat-public-port") => {
                (&mut self.public_port, "Limmat-Public-Port")
            }
            _ if name.eq_ignore_ascii_case(b"limmat-sni") => (&mut self.sni, "Limmat-Sni"),
            // Other fields (a proxy's, a future version's) are ignored.
            _ => return Ok(()),
        };
        match slot.0.replace(value) {
            None => Ok(()),
            Some(_) => Err(slot.1),
        }
    }

    fn bearer(&self) -> Bearer<'a> {
        match (self.authorization_lines, self.authorization) {
            (0, _) | (_, None) => Bearer::Missing,
            (1, Some(value)) => match value.split_at_checked(7) {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                    Bearer::Token(trim(token))
                }
                _ => Bearer::Missing,
            },
            _ => Bearer::Several,
        }
    }

    fn forward(&self, domain: String) -> Result<Forward, InternalError> {
        let bad = InternalError::BadRequest;
        let owner = self
            .host
            .filter(|h| is_token(h))
            .ok_or(bad("Host"))?
            .to_vec();
        let hops = self
            .hops
            .and_then(decimal)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or(bad("Limmat-Hops"))?;
        let leg = self
            .listener
            .and_then(ForwardLeg::parse)
            .ok_or(bad("Limmat-Listener"))?;
        let route = self
            .route
            .and_then(Route::parse)
            .ok_or(bad("Limmat-Route"))?;
        let client_addr = self
            .client_addr
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .ok_or(bad("Limmat-Client-Addr"))?;
        let public_port = self
            .public_port
            .and_then(decimal)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(bad("Limmat-Public-Port"))?;
        let sni = match self.sni {
            None => None,
            Some(v) if is_token(v) => Some(String::from_utf8_lossy(v).into_owned()),
            Some(_) => return Err(bad("Limmat-Sni")),
        };
        Ok(Forward {
            domain,
            // `is_token` admits only ASCII.
            owner: String::from_utf8_lossy(&owner).into_owned(),
            hops,
            leg,
            route,
            client_addr,
            public_port,
            sni,
        })
    }
}

/// Up to 10 decimal digits, nothing else.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

/// A complete response with a body: status line with reason, the given extra fields,
/// `Content-Type`, `Content-Length` and `Connection: close`.
fn response(status: u16, reason: &str, extra: &[(&str, &str)], kind: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn text_response(status: u16, reason: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    response(
        status,
        reason,
        extra,
        "text/plain; charset=utf-8",
        body.as_bytes(),
    )
}

/// A JSON answer of an internal endpoint: `200 OK`, or `503 Service Unavailable` (a draining
/// node's `health`).
pub fn json_response(ok: bool, body: &[u8]) -> Vec<u8> {
    let (status, reason) = if ok {
        (200, "OK")
    } else {
        (503, "Service Unavailable")
    };
    response(status, reason, &[], "application/json", body)
}

/// How the owner answered a forwarding head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardReply {
    /// `200`: the client's stream follows.
    Accepted,
    /// Any other status: `401` means the nodes do not share a secret.
    Refused(u16),
    /// Not an HTTP response at all.
    Garbage,
}

/// Reads the owner's answer to a forwarding head (a complete response head).
pub fn forward_reply(head: &[u8]) -> ForwardReply {
    match crate::reply::Reply::parse(head) {
        Ok(reply) if reply.status == 200 => ForwardReply::Accepted,
        Ok(reply) => ForwardReply::Refused(reply.status),
        Err(_) => ForwardReply::Garbage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Forward {
        Forward {
            domain: "gsiot-ffmq-ttd5".into(),
            owner: "node-b".into(),
            hops: 1,
            leg: ForwardLeg::TlsSni,
            route: Route::Sni,
            client_addr: "[2001:db8::1]:5678".parse().unwrap(),
            public_port: 443,
            sni: Some("gsiot-ffmq-ttd5.relay.example.com".into()),
        }
    }

    #[test]
    fn forward_head_exact_bytes() {
        let head = sample().encode(b"s3cret").unwrap();
        assert_eq!(
            head,
            b"CONNECT /gsiot-ffmq-ttd5 HTTP/1.1\r\nHost: node-b\r\n\
              Authorization: Bearer s3cret\r\nLimmat-Hops: 1\r\n\
              Limmat-Listener: tls-sni\r\nLimmat-Route: sni\r\n\
              Limmat-Client-Addr: [2001:db8::1]:5678\r\nLimmat-Public-Port: 443\r\n\
              Limmat-Sni: gsiot-ffmq-ttd5.relay.example.com\r\n\r\n"
        );
        let plain = Forward {
            leg: ForwardLeg::Plain,
            route: Route::Path,
            client_addr: "1.2.3.4:80".parse().unwrap(),
            public_port: 8080,
            sni: None,
            hops: 2,
            ..sample()
        };
        assert_eq!(
            plain.encode(b"k").unwrap(),
            b"CONNECT /gsiot-ffmq-ttd5 HTTP/1.1\r\nHost: node-b\r\nAuthorization: Bearer k\r\n\
              Limmat-Hops: 2\r\nLimmat-Listener: plain\r\nLimmat-Route: path\r\n\
              Limmat-Client-Addr: 1.2.3.4:80\r\nLimmat-Public-Port: 8080\r\n\r\n"
        );
    }

    #[test]
    fn the_receiver_reads_what_the_sender_writes() {
        for leg in [
            ForwardLeg::Plain,
            ForwardLeg::TlsTerminated,
            ForwardLeg::TlsSni,
        ] {
            for route in [Route::Path, Route::Host, Route::Sni] {
                let sent = Forward {
                    leg,
                    route,
                    ..sample()
                };
                let head = sent.encode(b"secret-xyz").unwrap();
                assert_eq!(crate::head::head_len(&head), Some(head.len()));
                let parsed = parse_internal(&head);
                assert_eq!(parsed.bearer, Bearer::Token(b"secret-xyz"));
                assert_eq!(parsed.request, Ok(Internal::Forward(sent)));
            }
        }
    }

    #[test]
    fn values_that_could_inject_fields_are_refused() {
        let sni = Forward {
            sni: Some("a.example.com\r\nLimmat-Hops: 9".into()),
            ..sample()
        };
        assert_eq!(sni.encode(b"k"), Err(EncodeError::Sni));
        let owner = Forward {
            owner: "node b".into(),
            ..sample()
        };
        assert_eq!(owner.encode(b"k"), Err(EncodeError::Owner));
        assert_eq!(sample().encode(b"a b"), Err(EncodeError::Secret));
        assert_eq!(sample().encode(b""), Err(EncodeError::Secret));
        for domain in ["", "relay_domain", "a/b", "UPPER", "a b"] {
            let f = Forward {
                domain: domain.into(),
                ..sample()
            };
            assert_eq!(f.encode(b"k"), Err(EncodeError::Domain), "{domain:?}");
        }
    }

    #[test]
    fn probes() {
        for (path, want) in [
            ("node", Internal::Node),
            ("health", Internal::Health),
            ("members", Internal::Members),
        ] {
            let head = format!(
                "GET /limmat/cluster/1/{path} HTTP/1.1\r\nAuthorization: bearer  t0k \r\n\r\n"
            );
            let parsed = parse_internal(head.as_bytes());
            assert_eq!(parsed.bearer, Bearer::Token(b"t0k"));
            assert_eq!(parsed.request, Ok(want));
        }
        let post = parse_internal(b"POST /limmat/cluster/1/node HTTP/1.1\r\n\r\n");
        assert_eq!(post.bearer, Bearer::Missing);
        assert_eq!(post.request, Err(InternalError::MethodNotAllowed("GET")));
        assert_eq!(
            parse_internal(b"GET /limmat/cluster/1/nodes HTTP/1.1\n\n").request,
            Err(InternalError::NotFound)
        );
        assert_eq!(
            parse_internal(b"GET /dom HTTP/1.1\r\n\r\n").request,
            Err(InternalError::NotFound)
        );
    }

    #[test]
    fn bearer_forms() {
        let p = |h: &'static [u8]| parse_internal(h).bearer;
        assert_eq!(p(b"GET / HTTP/1.1\r\n\r\n"), Bearer::Missing);
        assert_eq!(
            p(b"GET / HTTP/1.1\r\nAuthorization: Basic abc\r\n\r\n"),
            Bearer::Missing
        );
        assert_eq!(
            p(b"GET / HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n"),
            Bearer::Missing
        );
        assert_eq!(
            p(b"GET / HTTP/1.1\r\nAuthorization: Bearer a\r\nauthorization: Bearer a\r\n\r\n"),
            Bearer::Several
        );
    }

    #[test]
    fn malformed_forwards_name_the_field() {
        let good = sample().encode(b"k").unwrap();
        let text = String::from_utf8(good).unwrap();
        let cases = [
            ("Limmat-Hops: 1", "Limmat-Hops: 0", "Limmat-Hops"),
            ("Limmat-Hops: 1", "Limmat-Hops: -1", "Limmat-Hops"),
            ("Limmat-Hops: 1", "Limmat-Hops: 99999999999", "Limmat-Hops"),
            ("Limmat-Hops: 1\r\n", "", "Limmat-Hops"),
            (
                "Limmat-Listener: tls-sni",
                "Limmat-Listener: tls",
                "Limmat-Listener",
            ),
            ("Limmat-Route: sni", "Limmat-Route: SNI", "Limmat-Route"),
            (
                "Limmat-Client-Addr: [2001:db8::1]:5678",
                "Limmat-Client-Addr: 1.2.3.4",
                "Limmat-Client-Addr",
            ),
            (
                "Limmat-Public-Port: 443",
                "Limmat-Public-Port: 70000",
                "Limmat-Public-Port",
            ),
            ("Host: node-b\r\n", "", "Host"),
            (
                "Limmat-Hops: 1",
                "Limmat-Hops: 1\r\nlimmat-hops: 2",
                "Limmat-Hops",
            ),
            (
                "Limmat-Hops: 1",
                "Limmat-Hops: 1\r\nno colon here",
                "header line",
            ),
            ("CONNECT /gsiot-ffmq-ttd5 ", "CONNECT / ", "request target"),
            (
                "CONNECT /gsiot-ffmq-ttd5 ",
                "CONNECT /relay_domain ",
                "request target",
            ),
            (
                "CONNECT /gsiot-ffmq-ttd5 ",
                "CONNECT /a/b ",
                "request target",
            ),
            ("HTTP/1.1\r\nHost", "HTTP/1.1 x\r\nHost", "request line"),
        ];
        for (from, to, field) in cases {
            assert!(text.contains(from), "{from}");
            let head = text.replacen(from, to, 1);
            assert_eq!(
                parse_internal(head.as_bytes()).request,
                Err(InternalError::BadRequest(field)),
                "{head:?}"
            );
        }
        // The domain is folded like any domain key (H6).
        let upper = text.replacen("/gsiot-ffmq-ttd5", "/GSIOT-ffmq-TTD5", 1);
        assert_eq!(
            parse_internal(upper.as_bytes()).request,
            Ok(Internal::Forward(sample()))
        );
    }

    #[test]
    fn responses() {
        assert!(UNAUTHORIZED.starts_with(b"HTTP/1.1 401 "));
        assert_eq!(
            crate::head::head_len(UNAUTHORIZED),
            Some(UNAUTHORIZED.len())
        );
        assert_eq!(
            InternalError::BadRequest("Limmat-Hops").response(),
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 25\r\nConnection: close\r\n\r\nbad request: Limmat-Hops\n"
        );
        assert_eq!(
            json_response(false, b"{}"),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        assert!(
            InternalError::MethodNotAllowed("GET")
                .response()
                .starts_with(b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n")
        );
    }

    #[test]
    fn forward_replies() {
        assert_eq!(forward_reply(FORWARD_ACCEPTED), ForwardReply::Accepted);
        assert_eq!(forward_reply(UNAUTHORIZED), ForwardReply::Refused(401));
        assert_eq!(
            forward_reply(b"SSH-2.0-OpenSSH\r\n\r\n"),
            ForwardReply::Garbage
        );
    }

    #[test]
    fn any_bytes_parse_without_panic() {
        let samples: [&[u8]; 6] = [
            b"",
            b"\n",
            b"CONNECT",
            b"CONNECT /x HTTP/1.1\r\n:\r\n\r\n",
            b"\xff\xfe /\xff HTTP/1.1\r\nLimmat-Sni: \xff\r\n\r\n",
            b"GET /limmat/cluster/1/ HTTP/1.1\r\n\r\n",
        ];
        for s in samples {
            let _ = parse_internal(s);
        }
    }
}
