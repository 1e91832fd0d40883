//! The agent against scripted fake relays: checklist 43–51 and bad input from the relay.
//! Timing is checked on tokio's paused clock, which jumps to the next timer whenever every
//! task is idle, so "after 75 s" takes no real time and "at once" means "no timer fired".

mod common;

use std::time::Duration;

use common::{FakeRelay, RENEW, Running, UPGRADE};
use limmat_agent::{Agent, AgentError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Checklist 43: the canonical handshake, `Authorization` only with a key, domain folded.
#[tokio::test(start_paused = true)]
async fn handshake_bytes_are_exact() {
    let relay = FakeRelay::bind().await;
    for key in [None, Some("s3cr3t.K_ey")] {
        let mut config = relay.config("GsIoT-Dom");
        config.secret_key = key.map(str::to_owned);
        let (agent, _conns) = Running::collecting(config);
        let (_peer, head) = relay.accept_head().await;
        assert_eq!(
            String::from_utf8_lossy(&head),
            String::from_utf8_lossy(&relay.handshake("gsiot-dom", key))
        );
        agent.stop().await;
    }
}

/// Checklist 44: a `204` is followed by the next handshake on the same connection.
#[tokio::test(start_paused = true)]
async fn renewal_resends_on_the_same_connection() {
    let relay = FakeRelay::bind().await;
    let (mut agent, mut conns) = Running::collecting(relay.config("dom"));
    let (mut peer, first) = relay.accept_head().await;
    for _ in 0..3 {
        peer.send(RENEW).await;
        assert_eq!(peer.read_head().await, first);
    }
    peer.send(UPGRADE).await;
    conns.recv().await.unwrap();
    // The replacement is a new connection: 4 handshakes on the first, 1 on the second.
    relay.accept_head().await;
    let status = agent.until(|s| s.handshakes == 5).await;
    assert_eq!(
        (status.openings, status.upgrades, status.failures),
        (2, 1, 0)
    );
    agent.stop().await;
}

/// Checklist 44: bytes after a `204` head are a protocol error: close, back off, reconnect.
#[tokio::test(start_paused = true)]
async fn bytes_after_a_renewal_close_the_connection() {
    let relay = FakeRelay::bind().await;
    let (mut agent, _conns) = Running::collecting(relay.config("dom"));
    let (mut peer, _) = relay.accept_head().await;
    peer.send(b"HTTP/1.1 204 \r\n\r\nHTTP/1.1 101 \r\n\r\n")
        .await;
    assert_eq!(peer.read_to_end().await, b"");
    agent.until(|s| s.failures == 1).await;
    let (_peer, _) = relay.accept_head().await;
    agent.stop().await;
}

/// Checklist 51: interim `1xx` responses other than `101` are skipped.
#[tokio::test(start_paused = true)]
async fn interim_responses_are_skipped() {
    let relay = FakeRelay::bind().await;
    let (agent, mut conns) = Running::collecting(relay.config("dom"));
    let (mut peer, _) = relay.accept_head().await;
    peer.send(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    peer.send(b"HTTP/1.1 102 Processing\r\nX: y\r\n\r\nHTTP/1.1 101 \r\n\r\nhi")
        .await;
    let mut conn = conns.recv().await.unwrap();
    let mut hi = [0u8; 2];
    conn.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi");
    agent.stop().await;
}

/// Checklist 50: bytes in the same read as the `101` come first, then the socket's.
#[tokio::test(start_paused = true)]
async fn bytes_with_the_101_reach_the_service_first() {
    let relay = FakeRelay::bind().await;
    let (agent, mut conns) = Running::collecting(relay.config("dom"));
    let (mut peer, _) = relay.accept_head().await;
    peer.send(&[UPGRADE, b"GET /dom/x HTTP/1.1\r\n"].concat())
        .await;
    let mut conn = conns.recv().await.unwrap();
    assert_eq!(conn.leftover(), b"GET /dom/x HTTP/1.1\r\n");
    peer.send(b"Host: a\r\n\r\n").await;
    peer.stream.shutdown().await.unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"GET /dom/x HTTP/1.1\r\nHost: a\r\n\r\n");
    conn.write_all(b"reply").await.unwrap();
    drop(conn);
    assert_eq!(peer.read_to_end().await, b"reply");
    agent.stop().await;
}

/// Checklist 49: N connections wait at once, and a `101` is replaced at once.
#[tokio::test(start_paused = true)]
async fn the_pool_keeps_n_waiting_and_replaces_at_once() {
    let relay = FakeRelay::bind().await;
    let mut config = relay.config("dom");
    config.min_listeners = 3;
    let start = Instant::now();
    let (mut agent, mut conns) = Running::collecting(config);
    let (mut peers, mut held) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        peers.push(relay.accept_head().await.0);
    }
    agent.until(|s| s.waiting == 3).await;
    for round in 1..=3 {
        let mut peer = peers.remove(0);
        peer.send(UPGRADE).await;
        // The replacement: no backoff timer may fire before it arrives.
        peers.push(relay.accept_head().await.0);
        let status = agent.until(|s| s.upgrades == round && s.waiting == 3).await;
        assert_eq!(status.relayed, round as usize);
        assert_eq!(status.openings, 3 + round);
        held.push(conns.recv().await.unwrap());
    }
    assert_eq!(Instant::now(), start, "no timer fired");
    agent.stop().await;
}

/// `max_sockets` caps waiting plus relayed connections; dropping a relayed one frees a socket.
#[tokio::test(start_paused = true)]
async fn max_sockets_caps_waiting_plus_relayed() {
    let relay = FakeRelay::bind().await;
    let mut config = relay.config("dom");
    config.max_sockets = 2;
    let (mut agent, mut conns) = Running::collecting(config);
    for _ in 0..2 {
        relay.accept_head().await.0.send(UPGRADE).await;
    }
    let held = [conns.recv().await.unwrap(), conns.recv().await.unwrap()];
    let status = agent.until(|s| s.relayed == 2).await;
    assert_eq!((status.waiting, status.openings), (0, 2));
    // Nothing is opened while both sockets are relayed, however long we wait.
    let third = tokio::time::timeout(Duration::from_secs(3600), relay.accept()).await;
    assert!(third.is_err());
    drop(held);
    relay.accept_head().await;
    agent.until(|s| s.relayed == 0 && s.waiting == 1).await;
    agent.stop().await;
}

/// Checklist 45: `307` and `308`, `Location` in any case, the domain from the path; the target
/// is kept for later connections until an attempt to it fails.
#[tokio::test(start_paused = true)]
async fn redirects_are_followed_and_kept_until_they_fail() {
    for (status, field) in [(307, "Location"), (308, "location"), (307, "LOCATION")] {
        let home = FakeRelay::bind().await;
        let other = FakeRelay::bind().await;
        let (mut agent, _conns) = Running::collecting(home.config("dom"));
        let (mut peer, _) = home.accept_head().await;
        peer.send(
            format!(
                "HTTP/1.1 {status} \r\n{field}: http://127.0.0.1:{}/NewDom/x?y\r\n\r\n",
                other.port
            )
            .as_bytes(),
        )
        .await;
        let (mut there, head) = other.accept_head().await;
        assert_eq!(head, other.handshake("newdom", None));
        // A 101 there: the replacement goes straight there too, at once.
        let start = Instant::now();
        there.send(UPGRADE).await;
        let (mut there, _) = other.accept_head().await;
        assert_eq!(Instant::now(), start);
        // It fails: back to the configured relay.
        there
            .send(b"HTTP/1.1 401 \r\nWWW-Authenticate: Bearer\r\n\r\n")
            .await;
        let (_peer, head) = home.accept_head().await;
        assert_eq!(head, home.handshake("dom", None));
        assert_eq!(agent.until(|s| s.failures == 1).await.upgrades, 1);
        agent.stop().await;
    }
}

/// Checklist 45: after 5 redirects in a row without `101` or `204`, the attempt fails.
#[tokio::test(start_paused = true)]
async fn five_redirects_in_a_row_then_failure() {
    let home = FakeRelay::bind().await;
    let other = FakeRelay::bind().await;
    let location = format!(
        "HTTP/1.1 307 \r\nLocation: http://127.0.0.1:{}/dom\r\n\r\n",
        other.port
    );
    let (mut agent, _conns) = Running::collecting(home.config("dom"));
    let (mut peer, _) = home.accept_head().await;
    peer.send(location.as_bytes()).await;
    for _ in 0..5 {
        let (mut peer, _) = other.accept_head().await;
        peer.send(location.as_bytes()).await;
    }
    // The sixth redirect is not followed: failure, backoff, and back home.
    let status = agent.until(|s| s.failures == 1).await;
    assert_eq!(status.openings, 6);
    home.accept_head().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(600), other.accept())
            .await
            .is_err()
    );
    agent.stop().await;
}

/// A `204` in between starts the count of redirects in a row again.
#[tokio::test(start_paused = true)]
async fn a_renewal_resets_the_redirect_count() {
    let relay = FakeRelay::bind().await;
    let location = format!(
        "HTTP/1.1 307 \r\nLocation: http://127.0.0.1:{}/dom\r\n\r\n",
        relay.port
    );
    let (mut agent, _conns) = Running::collecting(relay.config("dom"));
    for _ in 0..4 {
        relay.accept_head().await.0.send(location.as_bytes()).await;
    }
    let (mut peer, _) = relay.accept_head().await;
    peer.send(RENEW).await;
    peer.read_head().await;
    peer.send(location.as_bytes()).await;
    // Four more make five since the 204; without the reset, the second would be the sixth.
    for _ in 0..4 {
        relay.accept_head().await.0.send(location.as_bytes()).await;
    }
    let (mut peer, _) = relay.accept_head().await;
    assert_eq!(agent.status.borrow().failures, 0);
    peer.send(UPGRADE).await;
    agent.until(|s| s.upgrades == 1).await;
    agent.stop().await;
}

/// Checklist 46: `429` with `Retry-After: n` holds the next attempt back n seconds.
#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let relay = FakeRelay::bind().await;
    let (mut agent, _conns) = Running::collecting(relay.config("dom"));
    let (mut peer, _) = relay.accept_head().await;
    peer.send(b"HTTP/1.1 429 \r\nRetry-After: 30\r\n\r\n").await;
    let sent = Instant::now();
    relay.accept_head().await;
    let waited = Instant::now() - sent;
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    assert_eq!(agent.until(|_| true).await.failures, 0);
    agent.stop().await;
}

/// `Retry-After: 0` (which this relay never sends) still waits a second: no reconnect loop.
#[tokio::test(start_paused = true)]
async fn retry_after_zero_waits_a_second() {
    let relay = FakeRelay::bind().await;
    let (agent, _conns) = Running::collecting(relay.config("dom"));
    let (mut peer, _) = relay.accept_head().await;
    peer.send(b"HTTP/1.1 429 \r\nRetry-After: 0\r\n\r\n").await;
    let sent = Instant::now();
    relay.accept_head().await;
    assert!(Instant::now() - sent >= Duration::from_secs(1));
    agent.stop().await;
}

/// Checklist 46: a `Retry-After` that is not delta-seconds is an ordinary failure (1 s stage).
#[tokio::test(start_paused = true)]
async fn a_bad_retry_after_is_an_ordinary_failure() {
    for value in ["soon", "Fri, 07 Nov 2025 10:00:00 GMT", "", "-1"] {
        let relay = FakeRelay::bind().await;
        let (mut agent, _conns) = Running::collecting(relay.config("dom"));
        let opened = Instant::now();
        let (mut peer, _) = relay.accept_head().await;
        peer.send(format!("HTTP/1.1 429 \r\nRetry-After: {value}\r\n\r\n").as_bytes())
            .await;
        relay.accept_head().await;
        let spacing = Instant::now() - opened;
        assert!(
            spacing >= Duration::from_millis(667) && spacing <= Duration::from_millis(1333),
            "{value}: {spacing:?}"
        );
        assert_eq!(agent.until(|s| s.failures == 1).await.failures, 1);
        agent.stop().await;
    }
}

/// A `429` holds back every listener slot, not only the one that got it.
#[tokio::test(start_paused = true)]
async fn retry_after_holds_back_all_slots() {
    let relay = FakeRelay::bind().await;
    let mut config = relay.config("dom");
    config.min_listeners = 2;
    let (mut agent, _conns) = Running::collecting(config);
    let (mut a, _) = relay.accept_head().await;
    let (mut b, _) = relay.accept_head().await;
    agent.until(|s| s.waiting == 2).await;
    a.send(b"HTTP/1.1 429 \r\nRetry-After: 60\r\n\r\n").await;
    let sent = Instant::now();
    agent.until(|s| s.waiting == 1).await;
    b.send(b"HTTP/1.1 401 \r\n\r\n").await;
    for _ in 0..2 {
        relay.accept_head().await;
        assert!(Instant::now() - sent >= Duration::from_secs(60));
    }
    agent.stop().await;
}

/// Checklist 48: no response within 75 s: close and reconnect.
#[tokio::test(start_paused = true)]
async fn no_response_within_75s_reconnects() {
    let relay = FakeRelay::bind().await;
    let (mut agent, _conns) = Running::collecting(relay.config("dom"));
    let (mut silent, _) = relay.accept_head().await;
    let sent = Instant::now();
    assert_eq!(silent.read_to_end().await, b"");
    assert_eq!(Instant::now() - sent, Duration::from_secs(75));
    relay.accept_head().await;
    assert_eq!(agent.until(|s| s.failures == 1).await.openings, 2);
    agent.stop().await;
}

/// The 75 s run from each handshake: a renewal starts a new wait.
#[tokio::test(start_paused = true)]
async fn each_handshake_gets_its_own_75s() {
    let relay = FakeRelay::bind().await;
    let (agent, _conns) = Running::collecting(relay.config("dom"));
    let (mut peer, _) = relay.accept_head().await;
    tokio::time::sleep(Duration::from_secs(70)).await;
    peer.send(RENEW).await;
    peer.read_head().await;
    let renewed = Instant::now();
    assert_eq!(peer.read_to_end().await, b"");
    assert_eq!(Instant::now() - renewed, Duration::from_secs(75));
    agent.stop().await;
}

/// Bad input from the relay is a failure followed by the backoff, never a panic.
#[tokio::test(start_paused = true)]
async fn bad_responses_fail_and_back_off() {
    let oversized = [b"HTTP/1.1 101 \r\nX: ".as_slice(), &[b'a'; 17 * 1024]].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"garbage\r\n\r\n".to_vec()),
        ("binary", vec![0, 255, 10, 10]),
        ("eof mid-head", b"HTTP/1.1 101 \r\nUpgr".to_vec()),
        ("eof at once", Vec::new()),
        ("oversized head", oversized),
        (
            "401",
            b"HTTP/1.1 401 \r\nWWW-Authenticate: Bearer\r\n\r\n".to_vec(),
        ),
        ("504", b"HTTP/1.1 504 \r\n\r\n".to_vec()),
        ("200", b"HTTP/1.1 200 OK\r\n\r\n".to_vec()),
        (
            "two Locations",
            b"HTTP/1.1 307 \r\nLocation: http://a:1/d\r\nLocation: http://b:1/d\r\n\r\n".to_vec(),
        ),
        (
            "bad Location",
            b"HTTP/1.1 307 \r\nLocation: ftp://a/d\r\n\r\n".to_vec(),
        ),
        ("no Location", b"HTTP/1.1 308 \r\n\r\n".to_vec()),
        (
            "Location to relay_domain",
            b"HTTP/1.1 307 \r\nLocation: http://a:1/relay_domain\r\n\r\n".to_vec(),
        ),
        (
            "two Retry-Afters",
            b"HTTP/1.1 429 \r\nRetry-After: 1\r\nRetry-After: 1\r\n\r\n".to_vec(),
        ),
        ("429 without Retry-After", b"HTTP/1.1 429 \r\n\r\n".to_vec()),
        ("HTTP/2", b"HTTP/2 101\r\n\r\n".to_vec()),
    ];
    let relay = FakeRelay::bind().await;
    let (mut agent, _conns) = Running::collecting(relay.config("dom"));
    let mut opened = Instant::now();
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let (mut peer, _) = relay.accept_head().await;
        let gap = Instant::now() - opened;
        assert!(
            i == 0 || (Duration::from_millis(667)..=Duration::from_millis(1333)).contains(&gap),
            "before {name}: {gap:?}"
        );
        opened = Instant::now();
        let _ = peer.stream.write_all(bytes).await;
        let _ = peer.stream.shutdown().await;
        let status = agent.until(|s| s.failures == i as u64 + 1).await;
        assert_eq!(status.upgrades, 0, "{name}");
    }
    agent.stop().await;
}

/// Shutdown closes waiting connections and ends handler tasks.
#[tokio::test(start_paused = true)]
async fn shutdown_closes_everything() {
    let relay = FakeRelay::bind().await;
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let agent = Agent::new(relay.config("dom")).unwrap();
    let agent = Running::start(agent, move |mut conn| {
        let started = started_tx.clone();
        async move {
            let _ = started.send(());
            // A handler that would run for ever: shutdown must drop it.
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink).await;
            std::future::pending::<()>().await;
        }
    });
    let (mut piped, _) = relay.accept_head().await;
    piped.send(UPGRADE).await;
    started.recv().await.unwrap();
    let (mut waiting, _) = relay.accept_head().await;
    agent.stop().await;
    assert_eq!(waiting.read_to_end().await, b"");
    assert_eq!(piped.read_to_end().await, b"");
}

#[test]
fn bad_configurations_are_refused() {
    let relay = limmat_agent::RelayAddr::plain("127.0.0.1", 80);
    let config = |f: fn(&mut limmat_agent::AgentConfig)| {
        let mut c = limmat_agent::AgentConfig::new(relay.clone(), "dom");
        f(&mut c);
        Agent::new(c).err()
    };
    assert!(matches!(
        config(|c| c.domain = "Relay_Domain".into()),
        Some(AgentError::Domain { .. })
    ));
    assert!(matches!(
        config(|c| c.domain = "a/b".into()),
        Some(AgentError::Domain { .. })
    ));
    assert!(matches!(
        config(|c| c.min_listeners = 0),
        Some(AgentError::NoListeners)
    ));
    assert!(matches!(
        config(|c| c.max_sockets = 0),
        Some(AgentError::TooFewSockets { .. })
    ));
    assert!(matches!(
        config(|c| c.secret_key = Some("a\r\nX: y".into())),
        Some(AgentError::BadKey)
    ));
    assert!(matches!(
        config(|c| {
            c.relay.tls = true;
            c.tls.ca_file = Some("/nonexistent/ca.pem".into());
        }),
        Some(AgentError::Tls {
            error: limmat_agent::TlsError::CaFileRead { .. },
            ..
        })
    ));
    assert!(config(|_| {}).is_none());
}

/// A handler that panics while building its future loses that connection only: the slot
/// keeps a connection waiting and the next client is served.
#[tokio::test(start_paused = true)]
async fn a_panicking_handler_does_not_end_the_slot() {
    let relay = FakeRelay::bind().await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    let agent = Agent::new(relay.config("dom")).unwrap();
    let counter = calls.clone();
    let running = Running::start(agent, move |conn| {
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("a handler bug");
        }
        let tx = tx.clone();
        async move {
            let _ = tx.send(conn);
        }
    });
    let (mut first, _) = relay.accept_head().await;
    first.send(UPGRADE).await;
    // The replacement connection still comes, and the next pairing reaches the handler.
    let replacement = tokio::time::timeout(Duration::from_secs(60), relay.accept_head()).await;
    let (mut second, _) = replacement.expect("the slot survived the panic");
    second.send(UPGRADE).await;
    assert!(served.recv().await.is_some());
    running.stop().await;
}

/// Issue 14 item 5: the owner a device was redirected to dies (a SIGKILLed cluster node). The
/// agent goes back to the configured relay at once, not to the dead owner, and follows the
/// new redirect; while the configured relay still points at the dead owner (failure detection
/// takes up to 2 s), the attempts stay in the 1 s stage of the backoff.
#[tokio::test(start_paused = true)]
async fn a_dead_owner_sends_the_device_home_at_once() {
    let home = FakeRelay::bind().await;
    let owner = FakeRelay::bind().await;
    let redirect = |to: &FakeRelay| {
        format!(
            "HTTP/1.1 307 \r\nLocation: http://127.0.0.1:{}/dom\r\n\r\n",
            to.port
        )
    };
    let (mut agent, _conns) = Running::collecting(home.config("dom"));
    let (mut peer, _) = home.accept_head().await;
    peer.send(redirect(&owner).as_bytes()).await;
    let (mut there, _) = owner.accept_head().await;
    // Waiting at the owner, renewed once: then the owner dies with the connection open.
    tokio::time::sleep(Duration::from_secs(20)).await;
    there.send(RENEW).await;
    there.read_head().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let died = Instant::now();
    drop(there);
    let dead_port = owner.port;
    drop(owner);
    // Back home at once, with no backoff step.
    let (mut peer, head) = home.accept_head().await;
    assert_eq!(Instant::now(), died);
    assert_eq!(head, home.handshake("dom", None));
    // Home has not noticed yet and redirects to the dead owner twice: each failure costs at
    // most one jittered 1 s step before the next try at home.
    let stale = format!("HTTP/1.1 307 \r\nLocation: http://127.0.0.1:{dead_port}/dom\r\n\r\n");
    peer.send(stale.as_bytes()).await;
    let mut last = Instant::now();
    for _ in 0..2 {
        let (mut peer, _) = home.accept_head().await;
        assert!(Instant::now() - last <= Duration::from_millis(1_334));
        last = Instant::now();
        peer.send(stale.as_bytes()).await;
    }
    // Then home knows the new owner, and the device is there within a step.
    let new_owner = FakeRelay::bind().await;
    let (mut peer, _) = home.accept_head().await;
    assert!(Instant::now() - last <= Duration::from_millis(1_334));
    peer.send(redirect(&new_owner).as_bytes()).await;
    let (mut there, head) = new_owner.accept_head().await;
    assert_eq!(head, new_owner.handshake("dom", None));
    assert!(Instant::now() - died <= Duration::from_secs(5));
    there.send(UPGRADE).await;
    agent.until(|s| s.upgrades == 1).await;
    agent.stop().await;
}
