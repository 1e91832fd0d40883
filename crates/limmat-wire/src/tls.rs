//! The SNI peek on a `tls` listener (spec 2.6.2, deviation D1).
//!
//! Before it decides whether to terminate a client's TLS or to pass it through untouched, the
//! relay must learn the server name the client asked for, and it must do so without consuming
//! anything it may later have to forward byte for byte. So it buffers the first TLS record, at
//! most one full record ([`MAX_RECORD`]), and reads the `server_name` extension out of the
//! ClientHello in it. This module is that decision as a pure function of the buffered bytes.
//!
//! It is deliberately narrow. Only a ClientHello that lies complete inside the first record
//! counts: a hello split across records (which no common client sends) gets no SNI, and so does
//! every structural error anywhere. No SNI is never fatal: the relay then terminates TLS and
//! routes on the head inside it, so a strict answer here costs nothing but a missed SNI route.
//! The one thing the function must never do is wait for bytes that cannot change its answer,
//! so [`Peek::NeedMore`] is returned only while the first record is incomplete, and the buffer
//! it asks for never exceeds [`MAX_RECORD`].

/// The most a relay buffers before deciding: one full record (D1).
pub const MAX_RECORD: usize = RECORD_HEADER + MAX_FRAGMENT;

/// A record header: content type, version (two bytes), fragment length (two bytes).
const RECORD_HEADER: usize = 5;
/// The largest fragment a TLS record may carry (RFC 8446, 5.1).
const MAX_FRAGMENT: usize = 16 * 1024;
/// Record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 1;
/// Extension type `server_name` (RFC 6066, 3).
const EXT_SERVER_NAME: u16 = 0;
/// `NameType` `host_name` in a `ServerNameList`.
const NAME_HOST: u8 = 0;
/// The longest `legacy_session_id` (RFC 8446, 4.1.2).
const MAX_SESSION_ID: usize = 32;

/// The answer of [`peek_client_hello`] for the bytes buffered so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// More bytes are needed: the answer cannot change before the buffer holds at least this
    /// many bytes in total. Always more than the buffer holds and at most [`MAX_RECORD`].
    NeedMore(usize),
    /// The decision is made and more bytes will not change it.
    Done {
        /// The host name of the ClientHello's `server_name` extension: lower-cased, one
        /// trailing dot stripped. `None` for no SNI, whatever the reason.
        sni: Option<String>,
        /// The length of the complete first record (header included) the decision was made
        /// on, so `buf[..record_len]` is that record; 0 when the bytes were rejected from the
        /// record header alone (not a handshake record of TLS 1.0 or later, or too long).
        record_len: usize,
    },
}

/// Whether a connection's first byte can start a TLS handshake record. A cheap test for a
/// listener that wants to tell TLS from plain HTTP (no HTTP method starts with byte 22).
pub fn is_probably_tls(first_byte: u8) -> bool {
    first_byte == CONTENT_HANDSHAKE
}

/// Looks for the SNI in `buf`, the first bytes a client sent on a `tls` listener (2.6.2).
///
/// Call it again with the longer buffer after each read while it answers
/// [`Peek::NeedMore`]. It is total: any bytes give an answer, never a panic. The header bytes
/// are checked as they arrive, so a byte that cannot start a TLS 1.0+ handshake record (plain
/// HTTP, an SSLv2 hello) is answered at once; otherwise the answer waits for the whole first
/// record and looks only inside it.
pub fn peek_client_hello(buf: &[u8]) -> Peek {
    let not_tls = Peek::Done {
        sni: None,
        record_len: 0,
    };
    let header_so_far_ok = buf.first().is_none_or(|&t| t == CONTENT_HANDSHAKE)
        && buf.get(1).is_none_or(|&major| major == 3)
        && buf.get(2).is_none_or(|&minor| minor >= 1);
    if !header_so_far_ok {
        return not_tls;
    }
    let Some(&[_, _, _, len_hi, len_lo]) = buf.get(..RECORD_HEADER) else {
        // The next header byte that can be checked on its own, then the length as a whole.
        return Peek::NeedMore(if buf.len() < 3 {
            buf.len() + 1
        } else {
            RECORD_HEADER
        });
    };
    let fragment_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if fragment_len > MAX_FRAGMENT {
        return not_tls;
    }
    let record_len = RECORD_HEADER + fragment_len;
    match buf.get(RECORD_HEADER..record_len) {
        Some(fragment) => Peek::Done {
            sni: sni_of_handshake_fragment(fragment),
            record_len,
        },
        None => Peek::NeedMore(record_len),
    }
}

/// The SNI of a ClientHello that fills the start of a handshake record's fragment. Bytes after
/// the ClientHello (a further handshake message) are ignored.
fn sni_of_handshake_fragment(fragment: &[u8]) -> Option<String> {
    let mut r = Reader::new(fragment);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let hello = r.vec24()?;
    sni_of_client_hello(hello)
}

/// The SNI of a ClientHello body (RFC 8446, 4.1.2; RFC 5246, 7.4.1.2 for TLS 1.2 and older).
fn sni_of_client_hello(hello: &[u8]) -> Option<String> {
    let mut r = Reader::new(hello);
    let _legacy_version = r.take(2)?;
    let _random = r.take(32)?;
    if r.vec8()?.len() > MAX_SESSION_ID {
        return None;
    }
    if r.vec16()?.len() % 2 != 0 {
        return None;
    }
    let _compression_methods = r.vec8()?;
    if r.is_empty() {
        // A hello without extensions (allowed before TLS 1.3) has no SNI.
        return None;
    }
    let mut extensions = Reader::new(r.vec16()?);
    if !r.is_empty() {
        return None;
    }
    let mut sni = None;
    let mut seen_server_name = false;
    // Every extension is walked, also after the SNI: an overrun anywhere is an error.
    while !extensions.is_empty() {
        let ext_type = extensions.u16()?;
        let data = extensions.vec16()?;
        if ext_type == EXT_SERVER_NAME {
            if seen_server_name {
                return None;
            }
            seen_server_name = true;
            sni = host_name_of_server_name(data)?;
        }
    }
    sni
}

/// The first `host_name` entry of a `server_name` extension's data, checked and normalised.
/// `None` for a structural error; `Some(None)` for a well-formed list without a usable name.
fn host_name_of_server_name(data: &[u8]) -> Option<Option<String>> {
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16()?);
    if !r.is_empty() {
        return None;
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        // Every NameType defined so far carries a 16-bit length-prefixed name; unknown types
        // are read the same way, as common TLS stacks do.
        let name = list.vec16()?;
        if name_type == NAME_HOST && host.is_none() {
            host = Some(name);
        }
    }
    Some(host.and_then(normalise_host_name))
}

/// A host name as the relay routes on it: ASCII without control bytes, lower-cased, one
/// trailing dot stripped, not empty.
fn normalise_host_name(name: &[u8]) -> Option<String> {
    if !name.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some(
        name.iter()
            .map(|&b| char::from(b.to_ascii_lowercase()))
            .collect(),
    )
}

/// A cursor over TLS wire encodings; every read checks its length and fails with `None`.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        let &[hi, lo] = self.take(2)? else {
            return None;
        };
        Some(u16::from_be_bytes([hi, lo]))
    }

    fn u24(&mut self) -> Option<usize> {
        let &[a, b, c] = self.take(3)? else {
            return None;
        };
        usize::try_from(u32::from_be_bytes([0, a, b, c])).ok()
    }

    /// A byte string with a one-byte length prefix (`opaque x<0..2^8-1>`).
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A byte string with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A byte string with a three-byte length prefix (a handshake message body).
    fn vec24(&mut self) -> Option<&'a [u8]> {
        let n = self.u24()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A small builder for ClientHello bytes, field by field as RFC 8446 4.1.2 lays them out.

    fn vec8(bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![u8::try_from(bytes.len()).unwrap()];
        v.extend_from_slice(bytes);
        v
    }

    fn vec16(bytes: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    }

    fn vec24(bytes: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(bytes.len()).unwrap().to_be_bytes()[1..].to_vec();
        v.extend_from_slice(bytes);
        v
    }

    fn ext(ext_type: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ext_type.to_be_bytes().to_vec();
        v.extend(vec16(data));
        v
    }

    /// A `server_name` extension with these (name_type, name) entries.
    fn server_name(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for &(name_type, name) in entries {
            list.push(name_type);
            list.extend(vec16(name));
        }
        ext(EXT_SERVER_NAME, &vec16(&list))
    }

    fn sni(host: &str) -> Vec<u8> {
        server_name(&[(NAME_HOST, host.as_bytes())])
    }

    /// The extensions of a modern TLS 1.3 client, with post-quantum key shares large enough to
    /// make a ~6 KiB hello in one record (checklist 57).
    fn modern_extensions(host: &str) -> Vec<Vec<u8>> {
        let mut key_shares = Vec::new();
        // X25519MLKEM768, MLKEM768, MLKEM1024, SecP384r1MLKEM1024, X25519.
        for (group, len) in [
            (0x11ec_u16, 1216),
            (0x0201, 1184),
            (0x0202, 1568),
            (0x11ed, 1665),
            (0x001d, 32),
        ] {
            key_shares.extend(group.to_be_bytes());
            key_shares.extend(vec16(&vec![0xa5; len]));
        }
        vec![
            sni(host),
            // extended_master_secret, empty.
            ext(0x0017, &[]),
            // supported_groups.
            ext(
                0x000a,
                &vec16(&[0x11, 0xec, 0x02, 0x01, 0x02, 0x02, 0x00, 0x1d]),
            ),
            // signature_algorithms.
            ext(0x000d, &vec16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01])),
            // application_layer_protocol_negotiation: h2, http/1.1.
            ext(0x0010, &vec16(b"\x02h2\x08http/1.1")),
            // supported_versions: TLS 1.3, TLS 1.2.
            ext(0x002b, &vec8(&[0x03, 0x04, 0x03, 0x03])),
            // psk_key_exchange_modes.
            ext(0x002d, &vec8(&[1])),
            // key_share.
            ext(0x0033, &vec16(&key_shares)),
            // padding, as some clients add to step over middlebox bugs.
            ext(0x0015, &[0; 512]),
        ]
    }

    /// A ClientHello body: legacy_version, random, session_id, cipher_suites,
    /// compression_methods, then the extensions (none at all for `None`).
    fn client_hello_body(extensions: Option<&[Vec<u8>]>) -> Vec<u8> {
        let mut v = vec![0x03, 0x03];
        v.extend([0x5a; 32]);
        v.extend(vec8(&[0x1e; 32]));
        v.extend(vec16(&[
            0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f,
        ]));
        v.extend(vec8(&[0]));
        if let Some(extensions) = extensions {
            v.extend(vec16(&extensions.concat()));
        }
        v
    }

    fn handshake(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![msg_type];
        v.extend(vec24(body));
        v
    }

    /// A record as clients send their first one: legacy record version TLS 1.0.
    fn record(content_type: u8, fragment: &[u8]) -> Vec<u8> {
        let mut v = vec![content_type, 3, 1];
        v.extend(vec16(fragment));
        v
    }

    fn hello(extensions: &[Vec<u8>]) -> Vec<u8> {
        record(
            CONTENT_HANDSHAKE,
            &handshake(CLIENT_HELLO, &client_hello_body(Some(extensions))),
        )
    }

    /// Where the extensions block's length sits in a record built by [`hello`]: record header,
    /// handshake header, version, random, session id, suites, compression.
    const EXTENSIONS_AT: usize = 5 + 4 + 2 + 32 + (1 + 32) + (2 + 10) + (1 + 1);

    fn set_u16(bytes: &mut [u8], at: usize, value: u16) {
        bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    fn done(sni: Option<&str>, record_len: usize) -> Peek {
        Peek::Done {
            sni: sni.map(String::from),
            record_len,
        }
    }

    fn sni_of(record: &[u8]) -> Option<String> {
        match peek_client_hello(record) {
            Peek::Done { sni, record_len } => {
                assert_eq!(record_len, record.len(), "the whole record is the decision");
                sni
            }
            other => panic!("no decision on a complete record: {other:?}"),
        }
    }

    /// Asserts the answer for every prefix of `bytes`: `NeedMore` with a growing, bounded count
    /// until the first record is complete, then the same `Done` for every longer prefix.
    fn assert_prefixes(bytes: &[u8], expected: &Peek) {
        let mut decided_at = None;
        for len in 0..=bytes.len() {
            match peek_client_hello(&bytes[..len]) {
                Peek::NeedMore(n) => {
                    assert!(decided_at.is_none(), "NeedMore after Done at {len}");
                    assert!(n > len && n <= MAX_RECORD, "NeedMore({n}) at {len}");
                    if len >= RECORD_HEADER {
                        assert_eq!(n, 5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]])));
                    }
                }
                done => {
                    decided_at.get_or_insert(len);
                    assert_eq!(&done, expected, "prefix of {len} bytes");
                }
            }
        }
        assert!(decided_at.is_some(), "never decided");
    }

    #[test]
    fn large_modern_hello_gives_its_sni() {
        // Checklist 57: a ~6 KiB ClientHello in one record still routes by SNI.
        let first = hello(&modern_extensions("dom.relay.example.com"));
        assert!(
            first.len() > 6 * 1024 && first.len() < MAX_RECORD,
            "{}",
            first.len()
        );
        let expected = done(Some("dom.relay.example.com"), first.len());
        assert_eq!(peek_client_hello(&first), expected);
        // Bytes after the first record (the client's next flight) change nothing.
        let mut more = first.clone();
        more.extend(record(23, b"early data"));
        assert_eq!(peek_client_hello(&more), expected);
        assert_prefixes(&more, &expected);
    }

    #[test]
    fn truncated_at_every_length() {
        for record in [hello(&[sni("a.b.c")]), hello(&modern_extensions("a.b.c"))] {
            assert_prefixes(&record, &done(Some("a.b.c"), record.len()));
            // The counts: one header byte at a time, then the header, then the record.
            assert_eq!(peek_client_hello(&[]), Peek::NeedMore(1));
            assert_eq!(peek_client_hello(&record[..1]), Peek::NeedMore(2));
            assert_eq!(peek_client_hello(&record[..2]), Peek::NeedMore(3));
            assert_eq!(peek_client_hello(&record[..3]), Peek::NeedMore(5));
            assert_eq!(peek_client_hello(&record[..4]), Peek::NeedMore(5));
            assert_eq!(
                peek_client_hello(&record[..5]),
                Peek::NeedMore(record.len())
            );
        }
    }

    #[test]
    fn no_server_name_extension() {
        let mut extensions = modern_extensions("unused");
        extensions.remove(0);
        assert_eq!(sni_of(&hello(&extensions)), None);
        // A hello without any extensions (TLS 1.2 and older allow it).
        let record = record(
            CONTENT_HANDSHAKE,
            &handshake(CLIENT_HELLO, &client_hello_body(None)),
        );
        assert_eq!(sni_of(&record), None);
        // An empty extensions block.
        assert_eq!(sni_of(&hello(&[])), None);
    }

    #[test]
    fn first_host_name_entry_counts() {
        let record = hello(&[server_name(&[
            (7, b"not-a-host-name"),
            (NAME_HOST, b"Dom.Relay.Example.com"),
            (NAME_HOST, b"other.relay.example.com"),
        ])]);
        assert_eq!(sni_of(&record).as_deref(), Some("dom.relay.example.com"));
        // A list with no host_name entry at all.
        assert_eq!(sni_of(&hello(&[server_name(&[(1, b"x.y.z")])])), None);
        // An empty list.
        assert_eq!(sni_of(&hello(&[server_name(&[])])), None);
        // A bad first host_name is not replaced by a later good one.
        let record = hello(&[server_name(&[
            (NAME_HOST, b"a\0.b.c"),
            (NAME_HOST, b"a.b.c"),
        ])]);
        assert_eq!(sni_of(&record), None);
    }

    #[test]
    fn names_are_folded_and_one_trailing_dot_stripped() {
        assert_eq!(
            sni_of(&hello(&[sni("DOM.Relay.EXAMPLE.com")])).as_deref(),
            Some("dom.relay.example.com")
        );
        assert_eq!(
            sni_of(&hello(&[sni("dom.relay.example.com.")])).as_deref(),
            Some("dom.relay.example.com")
        );
        assert_eq!(sni_of(&hello(&[sni("a.b.c..")])).as_deref(), Some("a.b.c."));
    }

    #[test]
    fn unusable_names_give_no_sni() {
        for name in [
            &b""[..],
            b".",
            b"a\0b.c.d",
            b"a\tb.c.d",
            b"a\x7fb.c.d",
            "dö.a.b".as_bytes(),
        ] {
            let record = hello(&[server_name(&[(NAME_HOST, name)])]);
            assert_eq!(sni_of(&record), None, "{name:?}");
        }
    }

    #[test]
    fn header_rejections_are_immediate() {
        // Declared length over 16384: decided from the header alone.
        assert_eq!(peek_client_hello(&[22, 3, 1, 0x40, 0x01]), done(None, 0));
        assert_eq!(peek_client_hello(&[22, 3, 3, 0xff, 0xff]), done(None, 0));
        // Exactly 16384 is allowed: wait for the full record.
        assert_eq!(
            peek_client_hello(&[22, 3, 1, 0x40, 0x00]),
            Peek::NeedMore(MAX_RECORD)
        );
        // Application data, alert, change_cipher_spec.
        for content_type in [20, 21, 23] {
            assert_eq!(peek_client_hello(&[content_type]), done(None, 0));
            let mut r = hello(&[sni("a.b.c")]);
            r[0] = content_type;
            assert_eq!(peek_client_hello(&r), done(None, 0));
        }
        // SSLv2-compatible hello: the first byte has the high bit set.
        assert_eq!(
            peek_client_hello(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
            done(None, 0)
        );
        // Plain HTTP on a TLS listener.
        assert_eq!(peek_client_hello(b"GET / HTTP/1.1\r\n"), done(None, 0));
        // Major version other than 3, SSL 3.0.
        assert_eq!(peek_client_hello(&[22, 2]), done(None, 0));
        assert_eq!(peek_client_hello(&[22, 3, 0]), done(None, 0));
        // TLS 1.0 to 1.3 record versions and later minors are fine.
        for minor in [1, 2, 3, 4, 0xff] {
            assert_eq!(peek_client_hello(&[22, 3, minor]), Peek::NeedMore(5));
        }
        assert!(is_probably_tls(22));
        assert!(!is_probably_tls(b'G'));
        assert!(!is_probably_tls(0x80));
    }

    #[test]
    fn hello_split_across_two_records_has_no_sni() {
        let message = handshake(CLIENT_HELLO, &client_hello_body(Some(&[sni("a.b.c")])));
        let (first, second) = message.split_at(40);
        let first = record(CONTENT_HANDSHAKE, first);
        let mut bytes = first.clone();
        bytes.extend(record(CONTENT_HANDSHAKE, second));
        assert_prefixes(&bytes, &done(None, first.len()));
        // The same with a split inside the handshake header.
        let (first, second) = message.split_at(2);
        let first = record(CONTENT_HANDSHAKE, first);
        let mut bytes = first.clone();
        bytes.extend(record(CONTENT_HANDSHAKE, second));
        assert_prefixes(&bytes, &done(None, first.len()));
    }

    #[test]
    fn structural_errors_give_no_sni() {
        let good = hello(&[sni("a.b.c"), ext(0x0017, &[]), ext(0x002b, &vec8(&[3, 4]))]);
        assert_eq!(sni_of(&good).as_deref(), Some("a.b.c"));
        let ext_block = u16::from_be_bytes([good[EXTENSIONS_AT], good[EXTENSIONS_AT + 1]]);
        let first_ext = EXTENSIONS_AT + 2;
        let patched = |at: usize, value: u16| {
            let mut v = good.clone();
            set_u16(&mut v, at, value);
            v
        };
        // The last extension's length (an error after a good SNI still counts).
        let last_ext_len = good.len() - 5;
        // The handshake length, one more than the record holds.
        let mut hello_overruns = good.clone();
        let hello_len = u32::try_from(good.len() - 9 + 1).unwrap().to_be_bytes();
        hello_overruns[6..9].copy_from_slice(&hello_len[1..]);
        let cases = [
            (
                "extensions block overruns the hello",
                patched(EXTENSIONS_AT, ext_block + 1),
            ),
            (
                "extensions block short of the hello's end",
                patched(EXTENSIONS_AT, ext_block - 1),
            ),
            (
                "server_name length overruns the block",
                patched(first_ext + 2, 0xffff),
            ),
            (
                "server name list overruns the extension",
                patched(first_ext + 4, 0x00ff),
            ),
            (
                "server name list short of the extension",
                patched(first_ext + 4, 0),
            ),
            ("host name overruns the list", patched(first_ext + 7, 6)),
            (
                "a later extension overruns the block",
                patched(last_ext_len, 4),
            ),
            ("hello overruns the record", hello_overruns),
        ];
        for (what, bytes) in cases {
            assert_eq!(sni_of(&bytes), None, "{what}");
        }

        // Session id over 32 bytes; an odd cipher suites length.
        let body = client_hello_body(Some(&[sni("a.b.c")]));
        let mut long_session = body[..34].to_vec();
        long_session.extend(vec8(&[1; 33]));
        long_session.extend_from_slice(&body[34 + 33..]);
        let r = record(CONTENT_HANDSHAKE, &handshake(CLIENT_HELLO, &long_session));
        assert_eq!(sni_of(&r), None, "session id of 33");
        let mut odd_suites = body[..34 + 33].to_vec();
        odd_suites.extend(vec16(&[0x13, 0x01, 0x13]));
        odd_suites.extend_from_slice(&body[34 + 33 + 12..]);
        let r = record(CONTENT_HANDSHAKE, &handshake(CLIENT_HELLO, &odd_suites));
        assert_eq!(sni_of(&r), None, "odd cipher suites");

        // Two server_name extensions.
        assert_eq!(sni_of(&hello(&[sni("a.b.c"), sni("a.b.c")])), None);
        // Not a ClientHello, and a zero-length record.
        let r = record(CONTENT_HANDSHAKE, &handshake(2, &body));
        assert_eq!(sni_of(&r), None);
        assert_eq!(peek_client_hello(&[22, 3, 1, 0, 0]), done(None, 5));
        // A record cut inside the handshake header.
        assert_eq!(sni_of(&record(CONTENT_HANDSHAKE, &[1, 0])), None);
    }

    #[test]
    fn bytes_after_the_hello_inside_the_record_are_ignored() {
        let mut fragment = handshake(CLIENT_HELLO, &client_hello_body(Some(&[sni("a.b.c")])));
        fragment.extend(handshake(99, b"whatever"));
        assert_eq!(
            sni_of(&record(CONTENT_HANDSHAKE, &fragment)).as_deref(),
            Some("a.b.c")
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The invariants the relay relies on, for one input and all its prefixes.
        fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
            let whole = peek_client_hello(bytes);
            let mut decided: Option<Peek> = None;
            for len in 0..=bytes.len() {
                let answer = peek_client_hello(&bytes[..len]);
                match (&answer, &decided) {
                    (Peek::NeedMore(n), None) => {
                        prop_assert!(*n > len && *n <= MAX_RECORD);
                    }
                    (Peek::Done { record_len, .. }, None) => {
                        prop_assert!(*record_len <= len);
                        prop_assert_eq!(&answer, &whole);
                        decided = Some(answer);
                    }
                    (_, Some(first)) => prop_assert_eq!(&answer, first),
                }
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                check(&bytes)?;
            }

            #[test]
            fn handshake_headers(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut bytes = vec![22, 3, 1];
                bytes.extend(u16::try_from(tail.len().min(150)).unwrap().to_be_bytes());
                bytes.extend(tail);
                check(&bytes)?;
            }

            #[test]
            fn mutated_hellos(flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4)) {
                let mut bytes = hello(&[server_name(&[(1, b"x"), (NAME_HOST, b"a.b.c")]), ext(0x002b, &vec8(&[3, 4]))]);
                for (at, value) in flips {
                    let at = at.index(bytes.len());
                    bytes[at] = value;
                }
                check(&bytes)?;
            }
        }
    }
}
