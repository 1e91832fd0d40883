//! The lenient request-head scanner (spec 2.2, rules H3–H13) and head classification (2.1.3).
//!
//! The relay must accept whatever the device libraries of the last fifteen years send, so this
//! is deliberately not an HTTP parser: nothing is validated, only the few facts the relay routes
//! on are extracted, each by an exact byte rule. Every function is total: any byte string gives
//! an answer and never a panic.

use crate::domain::fold_domain_run;

/// The upgrade tokens a device handshake may carry (H9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `PTTH/1.0`: one waiting connection serves one client.
    Ptth,
    /// `DPTTH/1.0`: waits and renews like PTTH but is never paired (M9).
    Dptth,
    /// `limmat-mux/1`: one connection carries many clients as HTTP/2 streams (section 5).
    Mux,
}

impl Protocol {
    /// The token as it appears in `Upgrade`.
    pub const fn token(self) -> &'static [u8] {
        match self {
            Protocol::Ptth => b"PTTH/1.0",
            Protocol::Dptth => b"DPTTH/1.0",
            Protocol::Mux => b"limmat-mux/1",
        }
    }

    const ALL: [Protocol; 3] = [Protocol::Ptth, Protocol::Dptth, Protocol::Mux];
}

/// The `Authorization` lines of a head (H12, 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// No line.
    None,
    /// Exactly one line; the value with leading SP/HT skipped, up to CR or LF.
    One(&'a [u8]),
    /// More than one line: always an authentication failure (4.1.1).
    Several,
}

/// What a complete head is, in the order of spec 2.1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An authority-form `CONNECT host:port` (2.1.3a, D7): the forward proxy's, never a device's.
    ForwardConnect,
    /// A device handshake with the winning upgrade token (2.1.3b).
    Device(Protocol),
    /// Anything else is a client request (2.1.3c).
    Client,
}

/// The facts the relay takes from one head. Borrowed slices point into the head's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The first SP-separated field of the first line.
    pub method: &'a [u8],
    /// The request target (H4).
    pub target: &'a [u8],
    /// The host of an absolute-form target, port dropped (H5).
    pub target_host: Option<&'a [u8]>,
    /// The path (H5): empty, or starting with `/`.
    pub path: &'a [u8],
    /// The domain key from the path (H6), case-folded; empty for the empty domain.
    pub domain: String,
    /// The host used for client routing (H11): the target host, else the first `Host` value.
    pub host: Option<&'a [u8]>,
    /// The last upgrade token found in `Upgrade` and `X-Relay-Protocol` lines (H9).
    pub upgrade: Option<Protocol>,
    /// `X-Relay-Security` carries `transport/pass-through` (H10).
    pub pass_through: bool,
    /// The `Authorization` lines (H12).
    pub authorization: Authorization<'a>,
}

impl<'a> RequestHead<'a> {
    /// Scans a head. `head` should end with its terminator, as found by [`crate::HeadScanner`];
    /// bytes after the terminator must not be included (H13 is the caller's business).
    pub fn parse(head: &'a [u8]) -> Self {
        let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
        let first_line = &head[..line_end];
        let (method, target) = split_request_line(first_line);
        let (target_host, path) = split_target(target);
        let mut parsed = RequestHead {
            method,
            target,
            target_host,
            path,
            domain: domain_of_path(path),
            host: target_host,
            upgrade: None,
            pass_through: false,
            authorization: Authorization::None,
        };
        parsed.scan_fields(head, line_end);
        parsed
    }

    /// Classifies the head (2.1.3). The forward proxy's absolute-form requests are told apart
    /// by the relay, which knows its hostnames; here they are client requests.
    pub fn kind(&self) -> Kind {
        if self.method == b"CONNECT" && !self.target.starts_with(b"/") {
            Kind::ForwardConnect
        } else if let Some(protocol) = self.upgrade {
            Kind::Device(protocol)
        } else {
            Kind::Client
        }
    }

    fn scan_fields(&mut self, head: &'a [u8], first_line_end: usize) {
        let mut host_seen = false;
        // Which field a continuation line (obsolete folding) belongs to.
        let mut folded_into = Field::Other;
        let mut start = first_line_end + 1;
        while start < head.len() {
            let end = memchr::memchr(b'\n', &head[start..]).map_or(head.len(), |i| start + i + 1);
            let line = &head[start..end];
            start = end;
            if matches!(line.first(), Some(b' ' | b'\t')) {
                self.scan_value(folded_into, line);
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                folded_into = Field::Other;
                continue;
            };
            let name = &line[..colon];
            // H7: no whitespace between the name and its colon.
            if name.iter().any(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                folded_into = Field::Other;
                continue;
            }
            let field = Field::of(name);
            let value = &line[colon..];
            match field {
                Field::Host if !host_seen => {
                    host_seen = true;
                    if self.host.is_none() {
                        self.host = Some(host_value(&value[1..]));
                    }
                }
                Field::Authorization => {
                    self.authorization = match self.authorization {
                        Authorization::None => Authorization::One(auth_value(&value[1..])),
                        _ => Authorization::Several,
                    };
                }
                _ => {}
            }
            self.scan_value(field, value);
            folded_into = field;
        }
    }

    /// Looks for tokens (H8) in a field value, which starts with the field's `:` or with the
    /// SP/HT of a continuation line and ends with its LF.
    fn scan_value(&mut self, field: Field, value: &[u8]) {
        match field {
            Field::Upgrade => {
                for (i, &before) in value.iter().enumerate() {
                    if !is_token_start_delimiter(before) {
                        continue;
                    }
                    let rest = &value[i + 1..];
                    if let Some(p) = Protocol::ALL
                        .into_iter()
                        .find(|p| token_at(rest, p.token()))
                    {
                        self.upgrade = Some(p);
                    }
                }
            }
            Field::Security => {
                let found = value.iter().enumerate().any(|(i, &before)| {
                    is_token_start_delimiter(before)
                        && token_at(&value[i + 1..], b"transport/pass-through")
                });
                self.pass_through |= found;
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `Upgrade` and `X-Relay-Protocol`.
    Upgrade,
    Security,
    Host,
    Authorization,
    Other,
}

impl Field {
    fn of(name: &[u8]) -> Self {
        if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"x-relay-protocol") {
            Field::Upgrade
        } else if name.eq_ignore_ascii_case(b"x-relay-security") {
            Field::Security
        } else if name.eq_ignore_ascii_case(b"host") {
            Field::Host
        } else if name.eq_ignore_ascii_case(b"authorization") {
            Field::Authorization
        } else {
            Field::Other
        }
    }
}

fn is_token_start_delimiter(b: u8) -> bool {
    matches!(b, b':' | b',' | b' ' | b'\t')
}

/// `rest` starts with `token`, followed by `,` SP HT CR or LF (H8).
fn token_at(rest: &[u8], token: &[u8]) -> bool {
    rest.starts_with(token)
        && matches!(
            rest.get(token.len()),
            Some(b',' | b' ' | b'\t' | b'\r' | b'\n')
        )
}

/// H4: method and request target of the first line.
fn split_request_line(line: &[u8]) -> (&[u8], &[u8]) {
    let Some(sp) = memchr::memchr(b' ', line) else {
        return (trim_line_end(line), &[]);
    };
    let rest = &line[sp + 1..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    (&line[..sp], &rest[..end])
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// H5: the target host (absolute form only) and the path.
pub(crate) fn split_target(target: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if target.starts_with(b"/") {
        return (None, target);
    }
    let first_slash = memchr::memchr(b'/', target).unwrap_or(target.len());
    match memchr::memchr(b':', &target[..first_slash]) {
        Some(colon) => {
            let after = &target[colon + 1..];
            let skip = after.iter().take_while(|&&b| b == b'/').count();
            let authority = &after[skip..];
            let host_end = authority
                .iter()
                .position(|&b| b == b':' || b == b'/')
                .unwrap_or(authority.len());
            let host = &authority[..host_end];
            let path = memchr::memchr(b'/', &authority[host_end..])
                .map_or(&[][..], |i| &authority[host_end + i..]);
            (Some(host), path)
        }
        None => (None, &target[first_slash..]),
    }
}

/// Whether a request head's `Accept` fields name `text/html`: a browser, which is shown a page
/// rather than a bare status when its device is offline. Any `Accept` line counts, in any case;
/// `*/*` alone does not (scripts send it).
pub fn accepts_html(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        let Some(colon) = memchr::memchr(b':', line) else {
            return false;
        };
        line[..colon].eq_ignore_ascii_case(b"accept")
            && line[colon + 1..]
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"text/html"))
    })
}

/// H6: the domain key of a path.
pub fn domain_of_path(path: &[u8]) -> String {
    match path.split_first() {
        Some((b'/', rest)) => fold_domain_run(rest),
        _ => String::new(),
    }
}

/// H11: a `Host` value, leading SP/HT skipped, ending at `:` SP HT CR or LF.
fn host_value(value: &[u8]) -> &[u8] {
    field_value(value, |b| matches!(b, b':' | b' ' | b'\t' | b'\r' | b'\n'))
}

/// An `Authorization` value: leading SP/HT skipped, up to CR or LF.
fn auth_value(value: &[u8]) -> &[u8] {
    field_value(value, |b| b == b'\r' || b == b'\n')
}

/// A field value after its colon: leading SP/HT skipped, up to the first byte that `ends` it.
fn field_value(value: &[u8], ends: impl Fn(u8) -> bool) -> &[u8] {
    let skip = value
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let value = &value[skip..];
    let end = value.iter().position(|&b| ends(b)).unwrap_or(value.len());
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> RequestHead<'_> {
        RequestHead::parse(head)
    }

    #[test]
    fn canonical_handshake() {
        let h = parse(
            b"POST /gsiot-ffmq-ttd5 HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\
              Host: relay.example.com:80\r\n\r\n",
        );
        assert_eq!(h.method, b"POST");
        assert_eq!(h.target, b"/gsiot-ffmq-ttd5");
        assert_eq!(h.domain, "gsiot-ffmq-ttd5");
        assert_eq!(h.host, Some(&b"relay.example.com"[..]));
        assert_eq!(h.kind(), Kind::Device(Protocol::Ptth));
        assert!(!h.pass_through);
        assert_eq!(h.authorization, Authorization::None);
    }

    #[test]
    fn any_method_and_no_connection_field() {
        // Checklist 1.
        let h = parse(b"GET /dom HTTP/1.0\r\nUpgrade: PTTH/1.0\r\n\r\n");
        assert_eq!(h.kind(), Kind::Device(Protocol::Ptth));
        assert_eq!(h.domain, "dom");
        let h = parse(b"FOO /dom\r\nUpgrade: PTTH/1.0\r\n\r\n");
        assert_eq!(h.kind(), Kind::Device(Protocol::Ptth));
    }

    #[test]
    fn x_relay_protocol_is_equivalent() {
        // Checklist 2.
        let h = parse(b"POST /dom HTTP/1.1\r\nX-Relay-Protocol: PTTH/1.0\r\n\r\n");
        assert_eq!(h.kind(), Kind::Device(Protocol::Ptth));
        let h = parse(b"POST /dom HTTP/1.1\r\nx-relay-protocol:limmat-mux/1\r\n\r\n");
        assert_eq!(h.kind(), Kind::Device(Protocol::Mux));
    }

    #[test]
    fn token_rules() {
        // Checklist 3.
        for head in [
            &b"POST /d HTTP/1.1\r\nupgrade:PTTH/1.0\r\n\r\n"[..],
            b"POST /d HTTP/1.1\r\nUpgrade: foo, PTTH/1.0\r\n\r\n",
            b"POST /d HTTP/1.1\r\nUpgrade:\tPTTH/1.0,foo\r\n\r\n",
            b"POST /d HTTP/1.1\nUPGRADE: PTTH/1.0 \n\n",
        ] {
            assert_eq!(parse(head).kind(), Kind::Device(Protocol::Ptth));
        }
        for head in [
            &b"POST /d HTTP/1.1\r\nUpgrade: ptth/1.0\r\n\r\n"[..],
            b"POST /d HTTP/1.1\r\nUpgrade : PTTH/1.0\r\n\r\n",
            b"POST /d HTTP/1.1\r\nUpgrade: xPTTH/1.0\r\n\r\n",
            b"POST /d HTTP/1.1\r\nUpgrade: PTTH/1.01\r\n\r\n",
            b"POST /d HTTP/1.1\r\nUpgrade: PTTH/1.0/x\r\n\r\n",
            b"POST /d HTTP/1.1\r\nX-Upgrade: PTTH/1.0\r\n\r\n",
            b"POST /d HTTP/1.1\r\n Upgrade: PTTH/1.0\r\n\r\n",
            b"POST /d PTTH/1.0\r\n\r\n",
        ] {
            assert_eq!(parse(head).kind(), Kind::Client, "{:?}", head);
        }
    }

    #[test]
    fn dptth_is_not_ptth() {
        let h = parse(b"POST /d HTTP/1.1\r\nUpgrade: DPTTH/1.0\r\n\r\n");
        assert_eq!(h.kind(), Kind::Device(Protocol::Dptth));
    }

    #[test]
    fn last_token_wins() {
        let h = parse(b"POST /d HTTP/1.1\r\nUpgrade: PTTH/1.0, limmat-mux/1\r\n\r\n");
        assert_eq!(h.upgrade, Some(Protocol::Mux));
        let h = parse(
            b"POST /d HTTP/1.1\r\nUpgrade: limmat-mux/1\r\nX-Relay-Protocol: DPTTH/1.0\r\n\r\n",
        );
        assert_eq!(h.upgrade, Some(Protocol::Dptth));
    }

    #[test]
    fn folded_continuation_line_is_scanned() {
        // Checklist 4.
        let h = parse(b"POST /d HTTP/1.1\r\nUpgrade: foo,\r\n PTTH/1.0\r\n\r\n");
        assert_eq!(h.kind(), Kind::Device(Protocol::Ptth));
        // A continuation of another field does not count.
        let h = parse(b"POST /d HTTP/1.1\r\nX-Other: foo,\r\n PTTH/1.0\r\n\r\n");
        assert_eq!(h.kind(), Kind::Client);
        let h =
            parse(b"POST /d HTTP/1.1\r\nX-Relay-Security: a,\r\n\ttransport/pass-through\r\n\r\n");
        assert!(h.pass_through);
    }

    #[test]
    fn domain_rules() {
        // Checklist 5.
        let cases: [(&[u8], &str); 12] = [
            (b"POST /GsIoT-X/led?y HTTP/1.1\r\n\r\n", "gsiot-x"),
            (b"POST /A%2Fb HTTP/1.1\r\n\r\n", "a%2fb"),
            (b"POST /dom?x HTTP/1.1\r\n\r\n", "dom"),
            (b"POST /dom#x HTTP/1.1\r\n\r\n", "dom"),
            (b"POST /dom:8 HTTP/1.1\r\n\r\n", "dom"),
            (b"POST /dom@x HTTP/1.1\r\n\r\n", "dom"),
            (b"POST /dom HTTP/1.1\r\n\r\n", "dom"),
            (
                b"POST /a.b_c~d!$&'()*+,;= HTTP/1.1\r\n\r\n",
                "a.b_c~d!$&'()*+,;=",
            ),
            (b"POST / HTTP/1.1\r\n\r\n", ""),
            (b"POST /?dom HTTP/1.1\r\n\r\n", ""),
            (b"POST * HTTP/1.1\r\n\r\n", ""),
            (b"POST\r\n\r\n", ""),
        ];
        for (head, domain) in cases {
            assert_eq!(
                parse(head).domain,
                domain,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        // A tab ends the target too.
        assert_eq!(parse(b"POST /dom\tHTTP/1.1\r\n\r\n").domain, "dom");
    }

    #[test]
    fn absolute_form_target() {
        // Checklist 6 and 24.
        let h =
            parse(b"POST http://relay:80/dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nHost: x.y.z\r\n\r\n");
        assert_eq!(h.domain, "dom");
        assert_eq!(h.target_host, Some(&b"relay"[..]));
        assert_eq!(h.host, Some(&b"relay"[..]));
        let h = parse(b"GET http://dom.relay.example.com/x HTTP/1.1\r\n\r\n");
        assert_eq!(h.host, Some(&b"dom.relay.example.com"[..]));
        assert_eq!(h.path, b"/x");
        assert_eq!(h.domain, "x");
        // An authority without a path gives the empty domain (M2).
        let h = parse(b"GET http://relay HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, b"");
        assert_eq!(h.domain, "");
        let h = parse(b"GET https:relay:443/Dom/x HTTP/1.1\r\n\r\n");
        assert_eq!(h.target_host, Some(&b"relay"[..]));
        assert_eq!(h.domain, "dom");
        // Not absolute: no colon before the first slash.
        let h = parse(b"GET abc/dom:1 HTTP/1.1\r\n\r\n");
        assert_eq!(h.target_host, None);
        assert_eq!(h.domain, "dom");
    }

    #[test]
    fn host_field() {
        let h =
            parse(b"GET /x HTTP/1.1\r\nHost: \t Dom.Relay.Example.com:8080\r\nHost: other\r\n\r\n");
        assert_eq!(h.host, Some(&b"Dom.Relay.Example.com"[..]));
        let h = parse(b"GET /x HTTP/1.1\r\nHost:[::1]:80\r\n\r\n");
        assert_eq!(h.host, Some(&b"["[..]));
        let h = parse(b"GET /x HTTP/1.1\r\nHost :a.b.c\r\n\r\n");
        assert_eq!(h.host, None);
        let h = parse(b"GET /x HTTP/1.1\nhost: a b\n\n");
        assert_eq!(h.host, Some(&b"a"[..]));
    }

    #[test]
    fn pass_through_flag() {
        let h = parse(
            b"POST /d HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nX-Relay-Security: transport/pass-through\r\n\r\n",
        );
        assert!(h.pass_through);
        let h = parse(b"POST /d HTTP/1.1\r\nX-Relay-Security: transport/pass-throughx\r\n\r\n");
        assert!(!h.pass_through);
    }

    #[test]
    fn authorization_lines() {
        let h = parse(b"POST /d HTTP/1.1\r\nAuthorization:  Bearer abc \r\n\r\n");
        assert_eq!(h.authorization, Authorization::One(b"Bearer abc "));
        let h = parse(
            b"POST /d HTTP/1.1\r\nAuthorization: Bearer a\r\nauthorization: Bearer a\r\n\r\n",
        );
        assert_eq!(h.authorization, Authorization::Several);
    }

    #[test]
    fn authority_connect_is_forward_proxy() {
        assert_eq!(
            parse(b"CONNECT example.org:443 HTTP/1.1\r\n\r\n").kind(),
            Kind::ForwardConnect
        );
        assert_eq!(parse(b"CONNECT /dom HTTP/1.1\r\n\r\n").kind(), Kind::Client);
        // Even with an upgrade token (2.1.3: the forward proxy is classified first).
        assert_eq!(
            parse(b"CONNECT a:1 HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n").kind(),
            Kind::ForwardConnect
        );
    }

    #[test]
    fn bare_lf_head() {
        // Checklist 7 (parsing half).
        let h = parse(b"POST /dom HTTP/1.1\nUpgrade: PTTH/1.0\n\n");
        assert_eq!(h.kind(), Kind::Device(Protocol::Ptth));
        assert_eq!(h.domain, "dom");
    }

    #[test]
    fn browsers_accept_html() {
        let firefox = b"GET /d HTTP/1.1\r\nHost: r\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\n\r\n";
        assert!(accepts_html(firefox));
        assert!(accepts_html(b"GET /d HTTP/1.1\nACCEPT:TEXT/HTML\n\n"));
        assert!(!accepts_html(b"GET /d HTTP/1.1\r\nAccept: */*\r\n\r\n"));
        assert!(!accepts_html(
            b"GET /d HTTP/1.1\r\nX-Accept: text/html\r\n\r\n"
        ));
        // The request line is not a field.
        assert!(!accepts_html(b"GET /accept:text/html HTTP/1.1\r\n\r\n"));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let h = RequestHead::parse(&bytes);
                let _ = h.kind();
                prop_assert!(h.domain.len() <= bytes.len());
            }

            #[test]
            fn header_soup_parses(lines in proptest::collection::vec(
                "(Upgrade|X-Relay-Protocol|Host|Authorization|X-Relay-Security| )[: ]{0,2}[ -~]{0,20}",
                0..8,
            )) {
                let head = format!("POST /d HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
                let _ = RequestHead::parse(head.as_bytes()).kind();
            }
        }
    }
}
