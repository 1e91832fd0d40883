//! Arbitrary bytes through everything that reads a head: the end-of-head scanner (H1) under
//! several splits of the same bytes, the lenient request scanner and its classification
//! (H3–H13, 2.1.3), client routing (2.5) with a fixed set of relay hostnames, and the device
//! side's reading of relay responses and redirects (2.9).
//!
//! Besides "no panic", it checks the invariants the relay relies on: the head never extends past
//! the input, the end does not depend on how the bytes were split into reads, and every domain
//! key consists only of H6 bytes, folded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use limmat_wire::head::head_len;
use limmat_wire::reply::{Redirect, Reply};
use limmat_wire::route::{MAX_DOMAIN_LEN, RELAY_DOMAIN, is_domain_byte, is_registrable};
use limmat_wire::{ClientRoute, HeadScanner, Hostnames, Kind, RequestHead, RouteForm};

/// The relay hostnames routing is checked against: plain, mixed case with a trailing dot, and
/// an IPv4 literal.
const HOSTNAMES: [&str; 3] = ["relay.example.com", "Relay.Example.NET.", "192.0.2.1"];

fuzz_target!(|data: &[u8]| {
    let end = check_scanner(data);
    // The relay parses the head without the bytes after it; the parsers are total, so an
    // incomplete head (the whole input) is fed too.
    let head = end.and_then(|n| data.get(..n)).unwrap_or(data);
    check_request(head, data.len());
    check_reply(head);
    check_domain_key_bytes(data);
    let _ = Redirect::parse(data).map(|r| check_redirect(&r));
});

/// H1: the same end for the whole buffer, one byte per read, and reads of pseudo-random sizes.
fn check_scanner(data: &[u8]) -> Option<usize> {
    let whole = head_len(data);
    if let Some(n) = whole {
        assert!(n <= data.len(), "head of {n} bytes in {} bytes", data.len());
        assert!(
            n >= 2 && data.get(n - 1) == Some(&b'\n'),
            "a head ends with LF"
        );
        // The end is the first one: the head alone ends at the same place.
        assert_eq!(head_len(&data[..n]), Some(n));
        assert_eq!(head_len(&data[..n - 1]), None);
    }
    // One byte per read.
    assert_eq!(scan_in_reads(data, |_| 1), whole, "one byte per read");
    // Reads of 1 to 64 bytes, sizes drawn from a generator seeded by the input itself.
    let mut state = fnv1a(data) | 1;
    let sizes = move |_| {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % 64).unwrap_or(0) + 1
    };
    assert_eq!(scan_in_reads(data, sizes), whole, "random reads");
    // Two reads, split in the middle, with a scanner reset and reused in between.
    let mut scanner = HeadScanner::new();
    let _ = scanner.scan(data);
    scanner.reset();
    let mid = data.len() / 2;
    let first = scanner.scan(&data[..mid]);
    assert_eq!(
        first.or_else(|| scanner.scan(data)),
        whole,
        "split at {mid}"
    );
    whole
}

/// Feeds `data` to one scanner as a growing buffer, `read(i)` more bytes at the i-th read, and
/// returns the first end found.
fn scan_in_reads(data: &[u8], mut read: impl FnMut(usize) -> usize) -> Option<usize> {
    let mut scanner = HeadScanner::new();
    let mut have = 0;
    let mut i = 0;
    while have < data.len() {
        have = (have + read(i)).min(data.len());
        i += 1;
        if let Some(n) = scanner.scan(&data[..have]) {
            assert!(n <= have, "head of {n} bytes in a buffer of {have}");
            return Some(n);
        }
    }
    None
}

fn check_request(head: &[u8], input_len: usize) {
    let h = RequestHead::parse(head);
    assert!(h.domain.len() <= input_len);
    assert_folded_domain(&h.domain);
    assert!(h.path.is_empty() || h.path.starts_with(b"/"));
    assert!(
        !h.target
            .iter()
            .any(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')),
        "target {:?}",
        h.target
    );
    if let Some(host) = h.host {
        assert!(
            !host
                .iter()
                .any(|b| matches!(b, b':' | b' ' | b'\t' | b'\r' | b'\n')),
            "host {host:?}"
        );
    }
    match h.kind() {
        Kind::ForwardConnect => {
            assert_eq!(h.method, b"CONNECT");
            assert!(!h.target.starts_with(b"/"));
        }
        Kind::Device(protocol) => assert_eq!(h.upgrade, Some(protocol)),
        Kind::Client => assert_eq!(h.upgrade, None),
    }
    for names in [&HOSTNAMES[..], &[]] {
        let hostnames = Hostnames::new(names);
        match ClientRoute::of(&h, &hostnames) {
            // A Host label is never empty (2.5.2), so only the path gives the empty domain.
            ClientRoute::Empty => assert!(h.domain.is_empty()),
            ClientRoute::Unregistrable => {}
            ClientRoute::Domain { domain, form } => {
                assert!(is_registrable(&domain), "{domain:?}");
                assert_ne!(domain, RELAY_DOMAIN);
                assert!(domain.len() <= MAX_DOMAIN_LEN);
                assert_folded_domain(&domain);
                match form {
                    RouteForm::Path => assert_eq!(domain, h.domain),
                    RouteForm::Host => {
                        assert!(!hostnames.is_empty());
                        let host = h.host.unwrap_or_default();
                        assert!(
                            host.to_ascii_lowercase().starts_with(domain.as_bytes()),
                            "{domain:?} from host {host:?}"
                        );
                        assert_eq!(host.get(domain.len()), Some(&b'.'));
                    }
                }
            }
        }
    }
}

fn check_reply(head: &[u8]) {
    let Ok(reply) = Reply::parse(head) else {
        return;
    };
    assert!(reply.status <= 999);
    assert!(head.starts_with(b"HTTP/1."));
    if let Some(redirect) = reply.location.and_then(Redirect::parse) {
        check_redirect(&redirect);
    }
}

fn check_redirect(r: &Redirect) {
    assert!(!r.host.is_empty());
    assert!(!r.host.contains([':', '/']), "host {:?}", r.host);
    assert!(is_registrable(&r.domain), "{:?}", r.domain);
    assert_folded_domain(&r.domain);
}

/// The domain of the path `/<data>` and a Host label made of the data: H6 bytes only.
fn check_domain_key_bytes(data: &[u8]) {
    let mut path = b"/".to_vec();
    path.extend_from_slice(data);
    assert_folded_domain(&limmat_wire::request::domain_of_path(&path));
    if let ClientRoute::Domain { domain, .. } = ClientRoute::from_label(data) {
        assert_folded_domain(&domain);
        assert_eq!(domain.as_bytes(), data.to_ascii_lowercase());
    }
    if let Ok(Ok(key)) = std::str::from_utf8(data).map(limmat_wire::route::parse_domain) {
        assert!(is_registrable(&key));
        assert_folded_domain(&key);
    }
}

/// H6: every byte of a domain key is in the set, and `A-Z` are folded.
fn assert_folded_domain(domain: &str) {
    assert!(
        domain
            .bytes()
            .all(|b| is_domain_byte(b) && !b.is_ascii_uppercase()),
        "domain {domain:?}"
    );
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
