//! limmat-mux/1 (spec section 5) as pure data: the stream metadata the relay sends with each
//! CONNECT stream (5.3), and a frame-boundary scanner for the HTTP/2 byte stream.
//!
//! HTTP/2 itself is the `h2` crate's job. Two things it does not offer are done here, without
//! I/O: the relay (the HTTP/2 *client*) must send `GOAWAY(NO_ERROR, 0)` when it drains (5.7),
//! which `h2` only lets a server do, and the device must notice that GOAWAY to open its
//! replacement at once. Both only need to know where frames begin in one direction of the
//! connection, which [`FrameScanner`] tracks from the 9-byte frame headers; the one frame the
//! relay adds is the fixed [`GOAWAY_NO_ERROR`].

use crate::route::RouteForm;
use std::net::SocketAddr;

/// The client connection preface every HTTP/2 client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `GOAWAY` frame type (RFC 9113 §6.8).
pub const FRAME_GOAWAY: u8 = 0x7;

/// `GOAWAY` with last-stream-id 0 and `NO_ERROR`, as the relay sends it on drain (5.7): a
/// 9-byte header (length 8, type 7, no flags, stream 0) and an 8-byte payload of zeros.
pub const GOAWAY_NO_ERROR: [u8; 17] =
    [0, 0, 8, FRAME_GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Field names of the stream metadata (5.3).
pub mod field {
    /// The device's domain.
    pub const DOMAIN: &str = "limmat-domain";
    /// The client's address and port, as the relay saw them.
    pub const CLIENT_ADDR: &str = "limmat-client-addr";
    /// The client leg kind ([`Listener`](super::Listener)).
    pub const LISTENER: &str = "limmat-listener";
    /// How the domain was found ([`Route`](super::Route)).
    pub const ROUTE: &str = "limmat-route";
    /// The server name the client asked for, when it used TLS.
    pub const SNI: &str = "limmat-sni";
    /// The cluster node the stream arrived at (section 7).
    pub const NODE: &str = "limmat-node";
}

/// The client leg kind (2.6.5), as `limmat-listener` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// A plain listener.
    Plain,
    /// A TLS listener, the relay terminated TLS.
    TlsTerminated,
    /// SNI-routed to a device that terminates TLS itself.
    TlsPassthrough,
}

impl Listener {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Plain => "plain",
            Listener::TlsTerminated => "tls-terminated",
            Listener::TlsPassthrough => "tls-passthrough",
        }
    }

    /// Reads a header value; `None` for an unknown one.
    pub fn parse(value: &[u8]) -> Option<Self> {
        [
            Listener::Plain,
            Listener::TlsTerminated,
            Listener::TlsPassthrough,
        ]
        .into_iter()
        .find(|l| l.as_str().as_bytes() == value)
    }
}

/// How the relay found the client's domain, as `limmat-route` names it: `path` means the
/// request target carries the `/<domain>` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The `/<domain>` prefix of the request target.
    Path,
    /// The `Host` field's subdomain label.
    Host,
    /// The TLS ClientHello's server name.
    Sni,
}

impl Route {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Path => "path",
            Route::Host => "host",
            Route::Sni => "sni",
        }
    }

    /// Reads a header value; `None` for an unknown one.
    pub fn parse(value: &[u8]) -> Option<Self> {
        [Route::Path, Route::Host, Route::Sni]
            .into_iter()
            .find(|r| r.as_str().as_bytes() == value)
    }
}

impl From<RouteForm> for Route {
    fn from(form: RouteForm) -> Self {
        match form {
            RouteForm::Path => Route::Path,
            RouteForm::Host => Route::Host,
        }
    }
}

/// Appends `addr` as `limmat-client-addr` carries it (5.3): `1.2.3.4:5678` or
/// `[2001:db8::1]:5678`, exactly the text of `SocketAddr`'s `Display`. IPv4 is written digit
/// by digit: through `core::fmt` an address cost about 1,700 instructions, a twentieth of all
/// the relay's user-space work for a mux stream (callgrind).
pub fn write_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_decimal(u16::from(octet), out);
            }
            out.push(b':');
            write_decimal(v4.port(), out);
        }
        SocketAddr::V6(v6) => out.extend_from_slice(v6.to_string().as_bytes()),
    }
}

/// Appends `n` in decimal.
pub fn write_decimal(mut n: u16, out: &mut Vec<u8>) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Where frames begin in one direction of an HTTP/2 connection. Feed it every byte that
/// crosses, in order; it skips the client preface when told to, then follows frame headers.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    /// Preface bytes still to skip.
    preface: usize,
    header: [u8; 9],
    /// Header bytes collected so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload: usize,
}

impl FrameScanner {
    /// For bytes a client sends: the 24-byte preface, then frames.
    pub fn client() -> Self {
        Self::skipping(PREFACE.len())
    }

    /// For bytes a server sends: frames from the first byte.
    pub fn server() -> Self {
        Self::skipping(0)
    }

    fn skipping(preface: usize) -> Self {
        Self {
            preface,
            header: [0; 9],
            have: 0,
            payload: 0,
        }
    }

    /// Whether the bytes fed so far end exactly between two frames (after the preface): a
    /// whole frame may be inserted here.
    pub fn at_boundary(&self) -> bool {
        self.preface == 0 && self.have == 0 && self.payload == 0
    }

    /// Consumes `bytes`, calling `on_frame(type)` for each frame whose header completes.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                bytes = &bytes[n..];
            } else if self.payload > 0 {
                let n = self.payload.min(bytes.len());
                self.payload -= n;
                bytes = &bytes[n..];
            } else {
                let n = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == 9 {
                    self.have = 0;
                    let h = self.header;
                    self.payload =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    on_frame(h[3]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr_text(addr: SocketAddr) -> String {
        let mut out = Vec::new();
        write_addr(addr, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for addr in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.100.9:80",
            "127.0.0.1:5678",
            "[2001:db8::1]:5678",
            "[::ffff:1.2.3.4]:1",
            "[fe80::1%3]:443",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(addr_text(addr), addr.to_string());
        }
    }

    proptest! {
        #[test]
        fn any_address_is_written_as_display_writes_it(
            ip in any::<[u8; 4]>(),
            ip6 in any::<[u16; 8]>(),
            port in any::<u16>(),
        ) {
            let v4 = SocketAddr::from((ip, port));
            prop_assert_eq!(addr_text(v4), v4.to_string());
            let v6 = SocketAddr::from((ip6, port));
            prop_assert_eq!(addr_text(v6), v6.to_string());
        }
    }

    /// A client's opening bytes: preface, an empty SETTINGS, a PING, a GOAWAY.
    fn sample() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
        b.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]); // PING
        b.extend_from_slice(&GOAWAY_NO_ERROR);
        b
    }

    #[test]
    fn goaway_bytes() {
        assert_eq!(
            GOAWAY_NO_ERROR,
            *b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        );
    }

    #[test]
    fn frames_are_found_across_any_split() {
        let bytes = sample();
        for split in 0..=bytes.len() {
            let mut s = FrameScanner::client();
            let mut seen = Vec::new();
            s.feed(&bytes[..split], |t| seen.push(t));
            s.feed(&bytes[split..], |t| seen.push(t));
            assert_eq!(seen, [4, 6, FRAME_GOAWAY], "split at {split}");
            assert!(s.at_boundary());
        }
        // Byte by byte, with the boundaries where they are.
        let mut s = FrameScanner::client();
        let mut boundaries = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            s.feed(std::slice::from_ref(b), |_| {});
            if s.at_boundary() {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(boundaries, [24, 24 + 9, 24 + 9 + 17, 24 + 9 + 17 + 17]);
    }

    #[test]
    fn server_side_has_no_preface() {
        let mut s = FrameScanner::server();
        assert!(s.at_boundary());
        let mut seen = Vec::new();
        s.feed(&[0, 1, 0, 0, 0, 0, 0, 0, 1], |t| seen.push(t)); // DATA of 256 bytes
        assert!(!s.at_boundary());
        s.feed(&[0; 256], |t| seen.push(t));
        assert!(s.at_boundary());
        assert_eq!(seen, [0]);
    }

    #[test]
    fn names() {
        for l in [
            Listener::Plain,
            Listener::TlsTerminated,
            Listener::TlsPassthrough,
        ] {
            assert_eq!(Listener::parse(l.as_str().as_bytes()), Some(l));
        }
        assert_eq!(Listener::parse(b"PLAIN"), None);
        for r in [Route::Path, Route::Host, Route::Sni] {
            assert_eq!(Route::parse(r.as_str().as_bytes()), Some(r));
        }
        assert_eq!(Route::from(RouteForm::Host), Route::Host);
    }
}
