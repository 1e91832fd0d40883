//! Client routing on real sockets, asserting raw bytes: compatibility checklist items 21–32
//! (relay-protocol.md 2.4.6–2.5).

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The device receives the 101 and then exactly `request`.
async fn expect_request(device: &mut TcpStream, request: &[u8]) {
    let got = read_n(device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[..UPGRADE.len()], UPGRADE);
    assert_eq!(
        String::from_utf8_lossy(&got[UPGRADE.len()..]),
        String::from_utf8_lossy(request)
    );
}

fn with_hostname(c: &mut limmat_relay::RelayConfig) {
    c.hostnames = vec!["relay.example.com".into()];
}

#[tokio::test]
async fn item_21_path_form_is_forwarded_unchanged() {
    let relay = start(|_| {}).await;
    let mut device = relay.device("dom").await;
    let request = b"GET /dom/x?y=1 HTTP/1.1\r\nHost: relay:8080\r\nAccept: */*\r\n\r\n";
    let client = relay.send(request).await;
    expect_request(&mut device, request).await;
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn item_22_subdomain_form_routes_by_host_whatever_the_path() {
    let relay = start(with_hostname).await;
    let mut device = relay.device("dom").await;
    let request = b"GET /other/led HTTP/1.1\r\nHost: Dom.relay.example.com:80\r\n\r\n";
    let client = relay.send(request).await;
    expect_request(&mut device, request).await;
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn item_23_hosts_that_route_by_path() {
    let relay = start(with_hostname).await;
    for host in [
        "RELAY.example.com:80",
        "relay.example.com.",
        "192.0.2.1:80",
        "[2001:db8::1]:80",
        "example.com",
    ] {
        let mut device = relay.device("dom").await;
        let request = format!("GET /dom/x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let client = relay.send(request.as_bytes()).await;
        expect_request(&mut device, request.as_bytes()).await;
        drop((device, client));
    }
    relay.stop().await;
    // Without hostnames, routing is always by path.
    let relay = start(|_| {}).await;
    let mut device = relay.device("dom").await;
    let request = b"GET /dom HTTP/1.1\r\nHost: other.relay.example.com\r\n\r\n";
    let client = relay.send(request).await;
    expect_request(&mut device, request).await;
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn item_24_absolute_form_authority_wins_over_host() {
    let relay = start(with_hostname).await;
    let mut device = relay.device("dom").await;
    let request =
        b"GET http://dom.relay.example.com/x HTTP/1.1\r\nHost: other.relay.example.com\r\n\r\n";
    let client = relay.send(request).await;
    expect_request(&mut device, request).await;
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn item_25_no_device_gives_504_after_client_wait() {
    let wait = Duration::from_millis(400);
    let relay = start(|c| c.client_wait = wait).await;
    let started = tokio::time::Instant::now();
    let mut client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    assert!(started.elapsed() >= wait - Duration::from_millis(50));
    relay.stop().await;
    // With client_wait = 0 the 504 is immediate, even with no limit on waiting.
    let relay = start(|c| c.client_wait = Duration::ZERO).await;
    let mut client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    assert_eq!(*relay.handle.stats().waiting_clients().borrow(), 0);
    relay.stop().await;
}

#[tokio::test]
async fn item_26_device_arriving_during_the_wait_is_paired() {
    let relay = start(|c| {
        c.client_wait = Duration::from_secs(30);
        c.hold_time = Duration::from_secs(1);
    })
    .await;
    let request = b"GET /dom/a HTTP/1.1\r\n\r\n";
    let client = relay.send(request).await;
    relay.waiting_clients(1).await;
    // A new handshake.
    let mut device = relay.send(&handshake("dom")).await;
    expect_request(&mut device, request).await;
    relay.waiting_clients(0).await;
    drop((device, client));
    // A re-POST after a 204.
    let mut device = relay.device("dom").await;
    assert_eq!(read_n(&mut device, RENEW.len()).await, RENEW);
    let client = relay.send(request).await;
    relay.waiting_clients(1).await;
    device.write_all(&handshake("dom")).await.unwrap();
    expect_request(&mut device, request).await;
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn item_27_root_uri() {
    let relay = start(|c| c.root_uri = Some("https://limmat.example/docs?x=1".into())).await;
    let mut client = relay.send(b"GET / HTTP/1.1\r\n\r\n").await;
    expect_response_then_close(
        &mut client,
        b"HTTP/1.1 307 \r\nLocation: https://limmat.example/docs?x=1\r\n\r\n",
    )
    .await;
    relay.stop().await;
    let relay = start(|c| c.client_wait = Duration::from_secs(60)).await;
    let mut client = relay.send(b"GET / HTTP/1.1\r\n\r\n").await;
    expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    relay.stop().await;
}

#[tokio::test]
async fn item_28_unregistrable_domains_get_504_at_once() {
    // client_wait is long: an answer within the test's patience means it was immediate.
    let relay = start(|c| {
        c.client_wait = Duration::from_secs(60);
        with_hostname(c);
    })
    .await;
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(256));
    for request in [
        &b"GET /relay_domain/x HTTP/1.1\r\n\r\n"[..],
        b"GET /RELAY_DOMAIN HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: d@v.relay.example.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: relay_domain.relay.example.com\r\n\r\n",
        long.as_bytes(),
    ] {
        let mut client = relay.send(request).await;
        expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn item_29_two_clients_two_devices_oldest_first() {
    let relay = start(|_| {}).await;
    let mut older = relay.device("dom").await;
    let mut newer = relay.device("dom").await;
    let first = b"GET /dom/1 HTTP/1.1\r\n\r\n";
    let second = b"GET /dom/2 HTTP/1.1\r\n\r\n";
    let c1 = relay.send(first).await;
    expect_request(&mut older, first).await;
    let c2 = relay.send(second).await;
    expect_request(&mut newer, second).await;
    drop((older, newer, c1, c2));
    relay.stop().await;
}

#[tokio::test]
async fn item_31_client_leaving_while_waiting_consumes_no_device() {
    let relay = start(|c| c.client_wait = Duration::from_secs(30)).await;
    let client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    relay.waiting_clients(1).await;
    drop(client);
    relay.waiting_clients(0).await;
    let mut device = relay.device("dom").await;
    // Still waiting, and the next client gets it.
    let request = b"GET /dom/next HTTP/1.1\r\n\r\n";
    let client = relay.send(request).await;
    expect_request(&mut device, request).await;
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn item_32_max_waiting_clients() {
    let relay = start(|c| {
        c.client_wait = Duration::from_secs(30);
        c.max_waiting_clients = 2;
    })
    .await;
    let a = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    let b = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    relay.waiting_clients(2).await;
    let mut third = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    expect_response_then_close(&mut third, GATEWAY_TIMEOUT).await;
    // Other domains have their own limit.
    let other = relay.send(b"GET /other HTTP/1.1\r\n\r\n").await;
    relay.waiting_clients(3).await;
    drop((a, b, other));
    relay.waiting_clients(0).await;
    relay.stop().await;
}

#[tokio::test]
async fn waiting_client_bytes_are_forwarded_too() {
    // Bytes a client sends while it waits are buffered and reach the device after the head.
    let relay = start(|c| c.client_wait = Duration::from_secs(30)).await;
    let mut client = relay
        .send(b"POST /dom/up HTTP/1.1\r\nContent-Length: 6\r\n\r\n")
        .await;
    relay.waiting_clients(1).await;
    client.write_all(b"abc").await.unwrap();
    client.write_all(b"def").await.unwrap();
    let mut device = relay.send(&handshake("dom")).await;
    expect_request(
        &mut device,
        b"POST /dom/up HTTP/1.1\r\nContent-Length: 6\r\n\r\nabcdef",
    )
    .await;
    drop((device, client));
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_answers_waiting_clients_and_closes_waiting_devices() {
    let relay = start(|c| c.client_wait = Duration::from_secs(30)).await;
    let mut client = relay.send(b"GET /nobody HTTP/1.1\r\n\r\n").await;
    relay.waiting_clients(1).await;
    let mut device = relay.device("dom").await;
    let handle = relay.handle.clone();
    let stopped = tokio::spawn(relay.stop());
    expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    // Devices are closed without a response; they reconnect with backoff.
    expect_response_then_close(&mut device, b"").await;
    stopped.await.unwrap();
    assert_eq!(*handle.stats().open_connections().borrow(), 0);
}

/// Issue 12: a browser asking for an offline domain gets a `504` with a short HTML page;
/// a script (no `text/html` in `Accept`), a root request and a device keep the exact bytes.
#[tokio::test]
async fn browsers_get_an_offline_page_others_the_exact_504() {
    let relay = start(|c| c.client_wait = Duration::ZERO).await;
    let browser = b"GET /my-device/ HTTP/1.1\r\nHost: relay\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\r\n";
    let mut client = relay.send(browser).await;
    let got = String::from_utf8(read_to_end(&mut client).await).unwrap();
    let (head, body) = got.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 504 \r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/html"), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
    assert!(body.contains("my-device is offline"), "{body}");

    for script in [
        &b"GET /my-device/ HTTP/1.1\r\nAccept: */*\r\n\r\n"[..],
        b"GET /my-device/ HTTP/1.1\r\n\r\n",
        // No domain: the exact answer even for a browser.
        b"GET / HTTP/1.1\r\nAccept: text/html\r\n\r\n",
    ] {
        let mut client = relay.send(script).await;
        expect_response_then_close(&mut client, GATEWAY_TIMEOUT).await;
    }
    relay.stop().await;
}
