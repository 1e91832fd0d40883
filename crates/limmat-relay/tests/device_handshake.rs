//! Device handshakes on real sockets, asserting raw bytes: compatibility checklist items 1–20
//! (relay-protocol.md 2.2–2.4).

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The device is waiting for `domain`: a client for it gets paired with this connection.
async fn assert_paired(relay: &TestRelay, device: &mut tokio::net::TcpStream, domain: &str) {
    let request = format!("GET /{domain}/probe HTTP/1.1\r\nHost: relay\r\n\r\n");
    let _client = relay.send(request.as_bytes()).await;
    let got = read_n(device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[..UPGRADE.len()], UPGRADE);
    assert_eq!(&got[UPGRADE.len()..], request.as_bytes());
}

async fn registers(head: &[u8], domain: &str) {
    let relay = start(|_| {}).await;
    let mut device = relay.send(head).await;
    relay.waiting_devices(1).await;
    assert_paired(&relay, &mut device, domain).await;
    drop(device);
    relay.stop().await;
}

async fn is_client_request(head: &[u8]) {
    let relay = start(|c| c.client_wait = Duration::ZERO).await;
    let mut s = relay.send(head).await;
    expect_response_then_close(&mut s, GATEWAY_TIMEOUT).await;
    relay.stop().await;
}

#[tokio::test]
async fn item_01_post_and_get_register_without_connection_field() {
    registers(
        b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\r\n",
        "dom",
    )
    .await;
    registers(b"GET /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n", "dom").await;
}

#[tokio::test]
async fn item_02_x_relay_protocol() {
    registers(
        b"POST /dom HTTP/1.1\r\nX-Relay-Protocol: PTTH/1.0\r\n\r\n",
        "dom",
    )
    .await;
}

#[tokio::test]
async fn item_03_token_matching() {
    registers(b"POST /dom HTTP/1.1\r\nupgrade:PTTH/1.0\r\n\r\n", "dom").await;
    registers(
        b"POST /dom HTTP/1.1\r\nUpgrade: foo, PTTH/1.0\r\n\r\n",
        "dom",
    )
    .await;
    is_client_request(b"POST /dom HTTP/1.1\r\nUpgrade: ptth/1.0\r\n\r\n").await;
    is_client_request(b"POST /dom HTTP/1.1\r\nUpgrade : PTTH/1.0\r\n\r\n").await;
}

#[tokio::test]
async fn item_04_folded_continuation() {
    registers(
        b"POST /dom HTTP/1.1\r\nUpgrade: foo,\r\n PTTH/1.0\r\n\r\n",
        "dom",
    )
    .await;
}

#[tokio::test]
async fn item_05_domain_rules() {
    registers(
        b"POST /GsIoT-X/led?y HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n",
        "gsiot-x",
    )
    .await;
    registers(
        b"POST /A%2Fb HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n",
        "a%2fb",
    )
    .await;
    for end in ["/", "?", "#", ":", "@", " "] {
        let head = format!("POST /dom{end}x HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n");
        registers(head.as_bytes(), "dom").await;
    }
}

#[tokio::test]
async fn item_06_absolute_form() {
    registers(
        b"POST http://relay:80/dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n",
        "dom",
    )
    .await;
}

#[tokio::test]
async fn item_07_bare_lf_and_one_byte_per_write() {
    registers(b"POST /dom HTTP/1.1\nUpgrade: PTTH/1.0\n\n", "dom").await;
    let relay = start(|_| {}).await;
    let mut device = relay.connect().await;
    device.set_nodelay(true).unwrap();
    for byte in handshake("dom") {
        device.write_all(&[byte]).await.unwrap();
        device.flush().await.unwrap();
    }
    relay.waiting_devices(1).await;
    assert_paired(&relay, &mut device, "dom").await;
    drop(device);
    relay.stop().await;
}

#[tokio::test]
async fn item_08_device_host_is_ignored() {
    let names = ["relay.example.com"];
    let relay = start(|c| c.hostnames = names.map(String::from).to_vec()).await;
    // A Host that would route a client to `other` does not change the device's domain.
    let mut device = relay
        .send(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nHost: other.relay.example.com\r\n\r\n")
        .await;
    relay.waiting_devices(1).await;
    assert_paired(&relay, &mut device, "dom").await;
    drop(device);
    relay.stop().await;
    registers(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n", "dom").await;
}

#[tokio::test]
async fn item_09_body_and_pipelined_bytes_are_discarded() {
    let relay = start(|_| {}).await;
    let mut head = handshake("dom");
    head.extend_from_slice(b"BODY-BYTES GET /x HTTP/1.1\r\n\r\n");
    let mut device = relay.send(&head).await;
    relay.waiting_devices(1).await;
    device.write_all(b"more bytes while waiting").await.unwrap();
    // Paired: the device reads exactly the 101 and the client's bytes, none of its own.
    assert_paired(&relay, &mut device, "dom").await;
    drop(device);
    relay.stop().await;
}

#[tokio::test]
async fn item_10_renewal_after_hold_time_three_times() {
    let hold = Duration::from_secs(1);
    let relay = start(|c| c.hold_time = hold).await;
    let mut device = relay.device("dom").await;
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(read_n(&mut device, RENEW.len()).await, RENEW);
        let waited = started.elapsed();
        assert!(
            waited + Duration::from_millis(200) >= hold && waited <= hold * 2,
            "{waited:?}"
        );
        device.write_all(&handshake("dom")).await.unwrap();
    }
    relay.waiting_devices(1).await;
    assert_paired(&relay, &mut device, "dom").await;
    drop(device);
    relay.stop().await;
}

#[tokio::test]
async fn item_11_first_post_renew() {
    let relay = start(|c| c.first_post_renew = true).await;
    let mut device = relay.send(&handshake("dom")).await;
    assert_eq!(read_n(&mut device, RENEW.len()).await, RENEW);
    assert_eq!(*relay.handle.stats().waiting_devices().borrow(), 0);
    device.write_all(&handshake("dom")).await.unwrap();
    relay.waiting_devices(1).await;
    assert_paired(&relay, &mut device, "dom").await;
    drop(device);
    relay.stop().await;
}

#[tokio::test]
async fn item_12_exact_101_followed_by_client_bytes() {
    let relay = start(|_| {}).await;
    let mut device = relay.device("dom").await;
    let request = b"GET /dom/led?on HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhello";
    let client = relay.send(request).await;
    let got = read_n(&mut device, 57 + request.len()).await;
    assert_eq!(&got[..57], UPGRADE);
    assert_eq!(&got[57..], request);
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn item_13_reserved_and_empty_domains_get_401() {
    let relay = start(|_| {}).await;
    let long = format!(
        "POST /{} HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n",
        "a".repeat(256)
    );
    for head in [
        &b"POST / HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n"[..],
        b"POST /Relay_Domain HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n",
        b"POST /?x HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n",
        long.as_bytes(),
    ] {
        let mut s = relay.send(head).await;
        expect_response_then_close(&mut s, UNAUTHORIZED).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn item_14_every_response_starts_with_status_line() {
    // Device libraries read 12 bytes and take bytes 9 to 11 as the status; byte 12 is SP.
    let relay = start(|c| {
        c.client_wait = Duration::ZERO;
        c.hold_time = Duration::from_secs(1);
        c.max_per_domain = 1;
        c.root_uri = Some("http://example.com/".into());
    })
    .await;
    let mut responses = Vec::new();
    let mut device = relay.device("dom").await;
    responses.push(read_n(&mut device, RENEW.len()).await[..13].to_vec()); // 204
    device.write_all(&handshake("dom")).await.unwrap();
    relay.waiting_devices(1).await;
    let mut over_cap = relay.send(&handshake("dom")).await;
    responses.push(read_n(&mut over_cap, 13).await); // 429
    let client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    responses.push(read_n(&mut device, 13).await); // 101
    let mut reserved = relay.send(&handshake("relay_domain")).await;
    responses.push(read_n(&mut reserved, 13).await); // 401
    let mut nobody = relay.send(b"GET /nobody HTTP/1.1\r\n\r\n").await;
    responses.push(read_n(&mut nobody, 13).await); // 504
    let mut root = relay.send(b"GET / HTTP/1.1\r\n\r\n").await;
    responses.push(read_n(&mut root, 13).await); // 307
    let statuses: Vec<&[u8]> = responses.iter().map(|r| &r[9..12]).collect();
    assert_eq!(
        statuses,
        [&b"204"[..], b"429", b"101", b"401", b"504", b"307"]
    );
    for r in &responses {
        assert_eq!(&r[..9], b"HTTP/1.1 ");
        assert_eq!(r[12], b' ');
    }
    drop((device, client, over_cap, reserved, nobody, root));
    relay.stop().await;
}

#[tokio::test]
async fn item_15_cap_gives_429_and_pipes_do_not_count() {
    let relay = start(|_| {}).await;
    let mut devices = Vec::new();
    for _ in 0..32 {
        devices.push(relay.device("dom").await);
    }
    let mut extra = relay.send(&handshake("dom")).await;
    expect_response_then_close(&mut extra, b"HTTP/1.1 429 \r\nRetry-After: 30\r\n\r\n").await;
    // Another domain is not affected.
    let other = relay.device("other").await;
    // Pair one: its pipe no longer counts, so a new device may wait.
    let mut first = devices.remove(0);
    assert_paired(&relay, &mut first, "dom").await;
    relay.pipes(1).await;
    devices.push(relay.device("dom").await);
    drop((devices, first, other));
    relay.stop().await;
}

#[tokio::test]
async fn item_16_max_head() {
    let padding = format!("X-Pad: {}\r\n", "p".repeat(10 * 1024));
    let head = format!("POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n{padding}\r\n");
    registers(head.as_bytes(), "dom").await;

    let relay = start(|c| c.max_head = 2048).await;
    let mut s = relay.send(head.as_bytes()).await;
    expect_response_then_close(&mut s, b"").await;
    relay.stop().await;
}

#[tokio::test]
async fn item_17_slow_heads_are_closed_silently() {
    let relay = start(|c| c.head_timeout = Duration::from_millis(600)).await;
    // Half a head, then nothing.
    let mut half = relay.send(b"POST /dom HTTP/1.1\r\nUpgr").await;
    // Slowloris: one byte every 100 ms never finishes in time.
    let mut slow = relay.connect().await;
    let started = Instant::now();
    let mut closed = false;
    for &byte in handshake("dom").iter().cycle().take(100) {
        if slow.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        if tokio::time::timeout(Duration::from_millis(100), slow.readable())
            .await
            .is_ok()
        {
            closed = true;
            break;
        }
    }
    assert!(closed && started.elapsed() < Duration::from_secs(5));
    expect_response_then_close(&mut slow, b"").await;
    expect_response_then_close(&mut half, b"").await;
    relay.stop().await;
}

#[tokio::test]
async fn item_18_device_closing_while_waiting_is_removed() {
    let relay = start(|c| c.client_wait = Duration::from_millis(300)).await;
    let device = relay.device("dom").await;
    drop(device);
    relay.waiting_devices(0).await;
    relay.open_connections(0).await;
    let mut client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    relay.stop().await;
}

#[tokio::test]
async fn item_19_dptth_waits_and_renews_but_is_never_paired() {
    let relay = start(|c| {
        c.hold_time = Duration::from_secs(1);
        c.client_wait = Duration::from_millis(200);
    })
    .await;
    let mut device = relay
        .send(b"POST /dom HTTP/1.1\r\nUpgrade: DPTTH/1.0\r\n\r\n")
        .await;
    relay.waiting_devices(1).await;
    let mut client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    assert_eq!(read_n(&mut device, RENEW.len()).await, RENEW);
    drop(device);
    relay.stop().await;
}

#[tokio::test]
async fn authority_connect_gets_501_without_forward_proxy() {
    // Deviation D7, checklist 83.
    let relay = start(|_| {}).await;
    let mut s = relay
        .send(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
        .await;
    expect_response_then_close(&mut s, b"HTTP/1.1 501 \r\n\r\n").await;
    relay.stop().await;
}

#[tokio::test]
async fn garbage_after_a_204_is_classified_again() {
    let relay = start(|c| {
        c.hold_time = Duration::from_secs(1);
        c.client_wait = Duration::ZERO;
        c.head_timeout = Duration::from_millis(500);
    })
    .await;
    // A complete non-device head after the 204 is a client request.
    let mut device = relay.device("dom").await;
    assert_eq!(read_n(&mut device, RENEW.len()).await, RENEW);
    device.write_all(b"garbage /nobody\r\n\r\n").await.unwrap();
    expect_response_then_close(&mut device, GATEWAY_TIMEOUT).await;
    relay.waiting_devices(0).await;
    // Bytes that never make a head are closed at head_timeout, with no response.
    let mut device = relay.device("dom").await;
    assert_eq!(read_n(&mut device, RENEW.len()).await, RENEW);
    device.write_all(b"\x00\x01\x02 no head").await.unwrap();
    expect_response_then_close(&mut device, b"").await;
    relay.stop().await;
}

#[tokio::test]
async fn renewal_to_another_domain_is_admitted_afresh() {
    let relay = start(|c| c.hold_time = Duration::from_secs(1)).await;
    let mut device = relay.device("one").await;
    assert_eq!(read_n(&mut device, RENEW.len()).await, RENEW);
    device.write_all(&handshake("two")).await.unwrap();
    relay.waiting_devices(1).await;
    assert_paired(&relay, &mut device, "two").await;
    drop(device);
    relay.stop().await;
}

#[tokio::test]
async fn yalertunnel2_handshake_shape_registers() {
    // YalerTunnel2 always writes the port in Host and appends User-Agent and Content-Length: 0.
    registers(
        b"POST /gsiot-ffmq-ttd5 HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\
          Host: relay.example.com:80\r\nUser-Agent: YalerTunnel/2.3.2\r\nContent-Length: 0\r\n\r\n",
        "gsiot-ffmq-ttd5",
    )
    .await;
}
