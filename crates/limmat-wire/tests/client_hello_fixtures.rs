//! The SNI peek (spec 2.6.2) on ClientHello bytes that real TLS clients sent, captured once and
//! kept as hex fixtures, so the hand-built hellos of the unit tests are checked against reality.

use limmat_wire::tls::{MAX_RECORD, Peek, peek_client_hello};

/// Decodes a fixture: hex digits, whitespace ignored, lines starting with `#` are comments.
fn fixture(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .flat_map(|line| line.bytes().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII hex");
            u8::from_str_radix(pair, 16).expect("hex digits")
        })
        .collect()
}

/// The fixture decides at its last byte with `sni`, and is `NeedMore` on every shorter prefix.
fn assert_real_hello(bytes: &[u8], sni: &str) {
    let expected = Peek::Done {
        sni: Some(sni.to_owned()),
        record_len: bytes.len(),
    };
    assert_eq!(peek_client_hello(bytes), expected);
    for len in 0..bytes.len() {
        match peek_client_hello(&bytes[..len]) {
            Peek::NeedMore(n) => assert!(n > len && n <= MAX_RECORD, "NeedMore({n}) at {len}"),
            done => panic!("decided at {len} of {}: {done:?}", bytes.len()),
        }
    }
    // What the client sends next does not change the decision.
    let mut more = bytes.to_vec();
    more.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    assert_eq!(peek_client_hello(&more), expected);
}

#[test]
fn curl_client_hello() {
    let bytes = fixture(include_str!("fixtures/curl_client_hello.hex"));
    assert_eq!(bytes.len(), 517);
    assert_real_hello(&bytes, "dom.relay.example.com");
}

#[test]
fn openssl_client_hello_with_mixed_case_name() {
    // `-servername Dom.Relay.Example.COM`: the relay routes on the folded name.
    let bytes = fixture(include_str!("fixtures/openssl_client_hello.hex"));
    assert_eq!(bytes.len(), 327);
    assert_real_hello(&bytes, "dom.relay.example.com");
}

#[test]
fn rustls_client_hello() {
    // What the agent's TLS stack sends to a relay it reaches by DNS name.
    let bytes = fixture(include_str!("fixtures/rustls_client_hello.hex"));
    assert_eq!(bytes.len(), 263);
    assert_real_hello(&bytes, "dom.relay.example.com");
}
