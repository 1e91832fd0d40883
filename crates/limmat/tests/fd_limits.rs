//! A relay out of file descriptors (hardening issue, item 3), with the real binary under a
//! limit of 64 open files: a flood of idle connections uses them up; the connections past the
//! limit are reset at once (not left hanging in the backlog, not a storm of failed accepts),
//! one warning says so, and once the flood is gone the relay serves normally again.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn out_of_descriptors_the_relay_resets_new_connections_and_recovers() {
    let mut relay = Limmat::spawn_with_file_limit(
        64,
        &["relay", "--listen", "127.0.0.1:0", "--client-wait", "0s"],
    );
    let addr = relay.listening_addr();

    // More idle connections than the relay has descriptors.
    let mut flood = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            flood.push(s);
        }
    }
    relay.wait_for("out of file descriptors: new connections are reset");
    // Some were reset: their reads fail at once with a reset (the others wait for a head).
    let start = Instant::now();
    let mut reset = 0;
    while reset == 0 && start.elapsed() < PATIENCE {
        for s in &mut flood {
            let mut byte = [0u8; 1];
            if s.read(&mut byte)
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset)
            {
                reset += 1;
            }
        }
    }
    assert!(reset > 0, "no connection past the limit was reset");
    let warnings = relay
        .log
        .iter()
        .filter(|l| l.contains("out of file descriptors"))
        .count();
    assert_eq!(warnings, 1, "one warning per streak");

    // The flood leaves; a client is served again (an offline domain: its 504).
    drop(flood);
    let start = Instant::now();
    let answer = loop {
        let mut s = TcpStream::connect(addr).expect("the relay still listens");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /nobody/ HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        if got.starts_with(b"HTTP/1.1 504") {
            break got;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "not served after the flood: {got:?}"
        );
    };
    assert!(answer.starts_with(b"HTTP/1.1 504"));
    relay.wait_for("file descriptors available again");
}
