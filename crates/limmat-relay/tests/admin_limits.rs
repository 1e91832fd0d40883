//! The admin listener under slow and flooding clients (hardening issue, item 3): half a head
//! is closed after the head timeout, a flood past its own small cap is answered `503` at once
//! (so it never holds more descriptors than the cap), and the public listener serves clients
//! all the while.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The admin listener's limits (`admin/listener.rs`).
const ADMIN_CAP: usize = 32;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

async fn relay_with_admin() -> TestRelay {
    start(|c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.client_wait = Duration::ZERO;
    })
    .await
}

/// Reads until the peer closes; what arrived and when it closed.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
    (got, start.elapsed())
}

async fn healthz(relay: &TestRelay) -> String {
    let mut s = TcpStream::connect(relay.admin.unwrap()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = until_closed(&mut s).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn half_a_head_is_closed_after_the_head_timeout() {
    let relay = relay_with_admin().await;
    let mut slow = TcpStream::connect(relay.admin.unwrap()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(relay.admin.unwrap()).await.unwrap();
    let ((_, slow_after), (_, idle_after)) =
        tokio::join!(until_closed(&mut slow), until_closed(&mut idle));
    for after in [slow_after, idle_after] {
        assert!(
            after >= HEAD_TIMEOUT - Duration::from_millis(100) && after < PATIENCE,
            "closed after {after:?}"
        );
    }
    assert!(healthz(&relay).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_flood_past_the_cap_gets_503_and_the_public_listener_keeps_serving() {
    let relay = relay_with_admin().await;
    // Fill the cap with idle connections (each accepted and waiting for its head).
    let mut held = Vec::new();
    for _ in 0..ADMIN_CAP {
        held.push(TcpStream::connect(relay.admin.unwrap()).await.unwrap());
    }
    // Past the cap: a complete 503 at once, then the close.
    let mut busy = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(relay.admin.unwrap()).await.unwrap();
        let (got, after) = until_closed(&mut s).await;
        busy.push((String::from_utf8_lossy(&got).into_owned(), after));
    }
    for (text, after) in &busy {
        assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}");
        assert!(text.contains("Retry-After: 1\r\n"), "{text:?}");
        assert!(text.ends_with("admin listener busy\r\n"), "{text:?}");
        assert!(*after < HEAD_TIMEOUT, "{after:?}");
    }
    // The public listener is untouched: a client of an offline domain gets its 504 at once.
    let mut client = TcpStream::connect(relay.addr).await.unwrap();
    client
        .write_all(b"GET /nobody/ HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = until_closed(&mut client).await;
    assert!(got.starts_with(b"HTTP/1.1 504"), "{got:?}");
    // When the held connections go, the probes answer again.
    drop(held);
    let start = Instant::now();
    loop {
        let answer = healthz(&relay).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{answer:?}");
        tokio::task::yield_now().await;
    }
}
