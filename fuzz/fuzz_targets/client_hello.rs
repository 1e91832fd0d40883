//! The SNI peek (spec 2.6.2, D1) on arbitrary bytes and on every prefix of them, as a relay
//! sees a ClientHello arrive in reads of any size.
//!
//! Each input is tried twice: as it is (the first bytes of a connection), and as the body of a
//! ClientHello inside a well-formed handshake record, so that mutations reach the hello and
//! extension parsers instead of mostly dying at the record header.
//!
//! Invariants, besides "no panic": `NeedMore(n)` only with `len < n <= MAX_RECORD`, the same `n`
//! for every prefix up to `n`, and progress once `n` bytes are there (no endless wait); the first
//! `Done` never changes when more bytes arrive; a `Done` names a record that lies in the buffer,
//! and a host name is non-empty, folded ASCII without control bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use limmat_wire::tls::{MAX_RECORD, Peek, peek_client_hello};

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&in_client_hello_record(data));
});

/// `body` as a ClientHello body in one handshake record (truncated to fit one record).
fn in_client_hello_record(body: &[u8]) -> Vec<u8> {
    let body = &body[..body.len().min(MAX_RECORD - 5 - 4)];
    let fragment_len = u16::try_from(body.len() + 4).expect("fits one record");
    let hello_len = u32::try_from(body.len()).expect("fits one record");
    let mut record = vec![22, 3, 1];
    record.extend(fragment_len.to_be_bytes());
    record.push(1);
    record.extend(&hello_len.to_be_bytes()[1..]);
    record.extend(body);
    record
}

fn check(data: &[u8]) {
    let whole = peek_client_hello(data);
    check_done(data, &whole);
    // Every prefix shorter than this must still answer NeedMore(wait_until).
    let mut wait_until = 0;
    let mut decided_at = None;
    for len in 0..=data.len() {
        let prefix = &data[..len];
        match peek_client_hello(prefix) {
            Peek::NeedMore(n) => {
                assert!(n > len && n <= MAX_RECORD, "NeedMore({n}) at {len}");
                if len < wait_until {
                    assert_eq!(n, wait_until, "NeedMore changed at {len}");
                } else if len > 0 {
                    // Progress: the count asked for before was reached, so it must grow.
                    assert!(n > wait_until, "NeedMore({n}) again at {len}");
                }
                wait_until = n;
            }
            done => {
                assert!(len >= wait_until, "decided at {len}, before {wait_until}");
                check_done(prefix, &done);
                assert_eq!(
                    done, whole,
                    "the first Done at {len} is not the final answer"
                );
                decided_at = Some(len);
                break;
            }
        }
    }
    let Some(decided_at) = decided_at else {
        // Still waiting: the input is a strict prefix of a first record.
        assert!(matches!(whole, Peek::NeedMore(n) if n > data.len()));
        // Filling it up to the asked count must make progress.
        if let Peek::NeedMore(n) = whole {
            let mut filled = data.to_vec();
            filled.resize(n, 0);
            match peek_client_hello(&filled) {
                Peek::NeedMore(m) => assert!(m > n, "NeedMore({m}) after filling to {n}"),
                done => check_done(&filled, &done),
            }
        }
        return;
    };
    // Longer buffers, and bytes appended after the input, do not change the decision.
    for len in [decided_at + 1, (decided_at + data.len()) / 2] {
        if let Some(prefix) = data.get(..len) {
            assert_eq!(peek_client_hello(prefix), whole, "changed at {len}");
        }
    }
    let mut more = data.to_vec();
    more.extend_from_slice(&[0x16, 0x03, 0x03, 0x40, 0x00, 0x01]);
    assert_eq!(peek_client_hello(&more), whole, "changed by appended bytes");
}

fn check_done(buf: &[u8], answer: &Peek) {
    let Peek::Done { sni, record_len } = answer else {
        return;
    };
    let record_len = *record_len;
    if record_len == 0 {
        assert_eq!(*sni, None, "an SNI without a record");
        return;
    }
    assert!(record_len >= 5 && record_len <= buf.len() && record_len <= MAX_RECORD);
    let [22, 3, minor, hi, lo, ..] = *buf else {
        panic!("record_len {record_len} for a header that is not a handshake record");
    };
    assert!(minor >= 1);
    assert_eq!(record_len, 5 + usize::from(u16::from_be_bytes([hi, lo])));
    if let Some(name) = sni {
        assert!(!name.is_empty() && name != ".");
        assert!(
            name.bytes()
                .all(|b| (0x20..0x7f).contains(&b) && !b.is_ascii_uppercase()),
            "name {name:?}"
        );
    }
}
