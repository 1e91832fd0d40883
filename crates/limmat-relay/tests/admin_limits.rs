//! The admin listener under slow and flooding clients (hardening issue, item 3): half a head
//! is closed after the head timeout; past its own small cap a new connection closes the oldest
//! one, so a flood never holds more descriptors than the cap and a probe is still served; and
//! the public listener serves clients all the while.

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
async fn past_the_cap_the_oldest_connections_give_way_to_probes() {
    let relay = relay_with_admin().await;
    // A flood of idle connections, three times the cap.
    let mut flood = Vec::new();
    for _ in 0..3 * ADMIN_CAP {
        flood.push(TcpStream::connect(relay.admin.unwrap()).await.unwrap());
    }
    // A probe in the middle of it is served, well before any head timeout.
    let start = Instant::now();
    let answer = healthz(&relay).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(start.elapsed() < HEAD_TIMEOUT, "{:?}", start.elapsed());
    // The oldest of the flood were closed to make room: at most the cap stay open.
    let mut closed = 0;
    for s in &mut flood {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(20), s.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert!(
        closed >= 2 * ADMIN_CAP,
        "{closed} of {} closed",
        flood.len()
    );
    // The public listener is untouched: a client of an offline domain gets its 504 at once.
    let mut client = TcpStream::connect(relay.addr).await.unwrap();
    client
        .write_all(b"GET /nobody/ HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = until_closed(&mut client).await;
    assert!(got.starts_with(b"HTTP/1.1 504"), "{got:?}");
}
