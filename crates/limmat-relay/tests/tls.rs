//! TLS on real sockets with real rustls clients (spec 2.6): terminated devices and clients,
//! SNI routing before termination, pass-through that the relay cannot read, the pairing table
//! (no downgrade), ALPN, `close_notify`, large ClientHellos and certificate reload. Checklist
//! items 52–60.

mod common;

use common::tls::*;
use common::*;
use limmat_relay::{Listen, RelayConfig};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const HOST: &str = "relay.example.com";
const DEVICE_HOST: &str = "dom.relay.example.com";

/// A relay with a plain and a TLS listener and a certificate for the hostname and its
/// subdomains.
async fn tls_relay(relay_cert: &Pem, configure: impl FnOnce(&mut RelayConfig)) -> TestRelay {
    let certs = vec![relay_cert.paths.clone()];
    start(move |c| {
        c.listen = vec![
            Listen::plain("127.0.0.1:0".parse().unwrap()),
            Listen::tls("127.0.0.1:0".parse().unwrap()),
        ];
        c.hostnames = vec![HOST.into()];
        c.certs = certs;
        configure(c);
    })
    .await
}

fn relay_pem() -> Pem {
    pem(&[HOST, "*.relay.example.com"])
}

/// A device over TLS (SNI = the relay's hostname, so the relay terminates it), waiting.
async fn tls_device(
    relay: &TestRelay,
    connector: &TlsConnector,
    extra: &str,
) -> TlsStream<TcpStream> {
    let before = *relay.handle.stats().waiting_devices().borrow();
    let mut device = tls_connect(relay.addrs[1], HOST, connector).await.unwrap();
    let head =
        format!("POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nHost: {HOST}:443\r\n{extra}\r\n");
    device.write_all(head.as_bytes()).await.unwrap();
    relay.waiting_devices(before + 1).await;
    device
}

#[tokio::test]
async fn item_52_56_tls_device_and_sni_routed_client_are_terminated() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |_| {}).await;
    let trusting = connector(&[&cert.der], &[]);
    let mut device = tls_device(&relay, &trusting, "").await;
    // An SNI-routed HTTPS client: the relay picks the device, then terminates with the wildcard.
    let mut client = tls_connect(relay.addrs[1], DEVICE_HOST, &trusting)
        .await
        .unwrap();
    let request = b"GET /led HTTP/1.1\r\nHost: dom.relay.example.com\r\n\r\n";
    client.write_all(request).await.unwrap();
    let got = read_exact_tls(&mut device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[..UPGRADE.len()], UPGRADE);
    assert_eq!(&got[UPGRADE.len()..], request);
    device
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\non")
        .await
        .unwrap();
    assert_eq!(
        read_exact_tls(&mut client, 40).await,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\non"
    );
    drop((client, device));
    relay.stop().await;
}

#[tokio::test]
async fn item_53_https_client_is_never_paired_with_a_plain_device() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |c| c.client_wait = Duration::from_millis(300)).await;
    let trusting = connector(&[&cert.der], &[]);
    // Only a plain device waits: a terminated HTTPS client gets 504 inside TLS.
    let plain_device = relay.device("dom").await;
    let mut client = tls_connect(relay.addrs[1], HOST, &trusting).await.unwrap();
    client
        .write_all(b"GET /dom/x HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end_tls(&mut client).await, GATEWAY_TIMEOUT);
    // An SNI-routed client too.
    let mut client = tls_connect(relay.addrs[1], DEVICE_HOST, &trusting)
        .await
        .unwrap();
    client.write_all(b"GET /x HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(read_to_end_tls(&mut client).await, GATEWAY_TIMEOUT);
    assert_eq!(
        *relay.handle.stats().waiting_devices().borrow(),
        1,
        "the plain device is untouched"
    );
    // With a TLS device waiting as well, the HTTPS client is served by it.
    let mut device = tls_device(&relay, &trusting, "").await;
    let mut client = tls_connect(relay.addrs[1], HOST, &trusting).await.unwrap();
    let request = b"GET /dom/y HTTP/1.1\r\n\r\n";
    client.write_all(request).await.unwrap();
    let got = read_exact_tls(&mut device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[UPGRADE.len()..], request);
    drop((client, device, plain_device));
    relay.stop().await;
}

#[tokio::test]
async fn item_54_plain_client_reaches_a_tls_device() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |_| {}).await;
    let trusting = connector(&[&cert.der], &[]);
    let mut device = tls_device(&relay, &trusting, "").await;
    let request = b"GET /dom/plain HTTP/1.1\r\n\r\n";
    let mut client = relay.send(request).await;
    let got = read_exact_tls(&mut device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[UPGRADE.len()..], request);
    device.write_all(b"pong").await.unwrap();
    assert_eq!(read_n(&mut client, 4).await, b"pong");
    drop((client, device));
    relay.stop().await;
}

#[tokio::test]
async fn item_55_pass_through_device_gets_the_raw_client_hello_and_the_relay_cannot_read() {
    let relay_cert = relay_pem();
    // The device's own certificate: the relay never has it.
    let device_cert = pem(&[DEVICE_HOST]);
    let relay = tls_relay(&relay_cert, |_| {}).await;
    let mut device = relay
        .send(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nX-Relay-Security: transport/pass-through\r\n\r\n")
        .await;
    relay.waiting_devices(1).await;
    // The client trusts only the device's certificate: if the relay terminated, it would fail.
    let client = spawn_secret_client(relay.addrs[1], DEVICE_HOST, &device_cert);
    assert_eq!(read_n(&mut device, UPGRADE.len()).await, UPGRADE);
    let mut first = [0u8; 1];
    device.peek(&mut first).await.unwrap();
    assert_eq!(first[0], 0x16, "a TLS handshake record follows the 101");
    serve_secret_as_device(device, &device_cert, DEVICE_HOST).await;
    assert_eq!(client.await.unwrap(), b"secret answer");
    relay.stop().await;
}

/// A ClientHello of about `size` bytes in one record, with `sni` and a padding extension.
fn client_hello(sni: &str, size: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let mut list = vec![0u8];
    list.extend_from_slice(&(name.len() as u16).to_be_bytes());
    list.extend_from_slice(name);
    let mut sni_ext = (list.len() as u16).to_be_bytes().to_vec();
    sni_ext.extend_from_slice(&list);
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni_ext);
    let padding = size.saturating_sub(ext.len());
    ext.extend_from_slice(&21u16.to_be_bytes());
    ext.extend_from_slice(&(padding as u16).to_be_bytes());
    ext.extend(std::iter::repeat_n(0u8, padding));
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn item_57_a_6_kib_client_hello_still_routes_by_sni() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |_| {}).await;
    let mut device = relay
        .send(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nX-Relay-Security: transport/pass-through\r\n\r\n")
        .await;
    relay.waiting_devices(1).await;
    let hello = client_hello(DEVICE_HOST, 6 * 1024);
    assert!(hello.len() > 6 * 1024);
    let mut client = TcpStream::connect(relay.addrs[1]).await.unwrap();
    // Sent in small pieces: the relay waits for the whole record.
    for chunk in hello.chunks(1000) {
        client.write_all(chunk).await.unwrap();
    }
    let got = read_n(&mut device, UPGRADE.len() + hello.len()).await;
    assert_eq!(&got[..UPGRADE.len()], UPGRADE);
    assert!(
        got[UPGRADE.len()..] == hello[..],
        "the raw ClientHello, byte for byte"
    );
    drop((client, device));
    relay.stop().await;
}

#[tokio::test]
async fn item_58_sni_routed_client_without_device_gets_504_inside_tls() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |c| c.client_wait = Duration::from_millis(200)).await;
    let trusting = connector(&[&cert.der], &[]);
    let mut client = tls_connect(relay.addrs[1], "nobody.relay.example.com", &trusting)
        .await
        .unwrap();
    assert_eq!(read_to_end_tls(&mut client).await, GATEWAY_TIMEOUT);
    // A label outside the domain set: 504 at once, also inside TLS.
    let mut client = tls_connect(relay.addrs[1], "relay_domain.relay.example.com", &trusting)
        .await
        .unwrap();
    assert_eq!(read_to_end_tls(&mut client).await, GATEWAY_TIMEOUT);
    relay.stop().await;
}

#[tokio::test]
async fn item_59_terminated_legs_never_negotiate_h2() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |c| c.client_wait = Duration::ZERO).await;
    let offering_h2 = connector(&[&cert.der], &[b"h2", b"http/1.1"]);
    let client = tls_connect(relay.addrs[1], HOST, &offering_h2)
        .await
        .unwrap();
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let client2 = tls_connect(relay.addrs[1], DEVICE_HOST, &offering_h2)
        .await
        .unwrap();
    assert_eq!(client2.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop((client, client2));
    relay.stop().await;
}

#[tokio::test]
async fn item_60_close_notify_is_a_fin_and_the_response_still_flows() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |_| {}).await;
    let trusting = connector(&[&cert.der], &[]);
    let mut device = tls_device(&relay, &trusting, "").await;
    let mut client = tls_connect(relay.addrs[1], HOST, &trusting).await.unwrap();
    let request = b"GET /dom/x HTTP/1.0\r\n\r\n";
    client.write_all(request).await.unwrap();
    client.shutdown().await.unwrap(); // close_notify, then FIN
    let got = read_to_end_tls(&mut device).await;
    assert_eq!(&got[UPGRADE.len()..], request, "EOF after the request");
    device
        .write_all(b"HTTP/1.0 200 OK\r\n\r\nbye")
        .await
        .unwrap();
    device.shutdown().await.unwrap();
    assert_eq!(
        read_to_end_tls(&mut client).await,
        b"HTTP/1.0 200 OK\r\n\r\nbye"
    );
    relay.pipes(0).await;
    drop((client, device));
    relay.stop().await;
}

#[tokio::test]
async fn certificates_reload_without_a_restart() {
    let first = relay_pem();
    let relay = tls_relay(&first, |c| c.client_wait = Duration::ZERO).await;
    let second = relay_pem();
    let trusting_both = connector(&[&first.der, &second.der], &[]);
    let seen = |tls: &TlsStream<TcpStream>| tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let client = tls_connect(relay.addrs[1], HOST, &trusting_both)
        .await
        .unwrap();
    assert_eq!(seen(&client), first.der);
    // New files in place of the old ones, then a reload (what SIGHUP does).
    std::fs::copy(&second.paths.cert, &first.paths.cert).unwrap();
    std::fs::copy(&second.paths.key, &first.paths.key).unwrap();
    assert_eq!(relay.handle.reload_certificates(), 1);
    let client = tls_connect(relay.addrs[1], HOST, &trusting_both)
        .await
        .unwrap();
    assert_eq!(seen(&client), second.der);
    // A broken file keeps the current certificate in service.
    std::fs::write(&first.paths.key, "garbage").unwrap();
    assert_eq!(relay.handle.reload_certificates(), 0);
    let client = tls_connect(relay.addrs[1], HOST, &trusting_both)
        .await
        .unwrap();
    assert_eq!(seen(&client), second.der);
    drop(client);
    relay.stop().await;
}

#[tokio::test]
async fn silent_and_garbage_tls_connections_are_closed() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |c| {
        c.tls_handshake_timeout = Duration::from_millis(300)
    })
    .await;
    // Nothing at all: closed at the handshake timeout, with no response.
    let mut silent = TcpStream::connect(relay.addrs[1]).await.unwrap();
    assert_eq!(read_to_end(&mut silent).await, b"");
    // Not TLS: the relay tries to terminate, rustls rejects it, the connection closes.
    let mut garbage = TcpStream::connect(relay.addrs[1]).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = read_to_end(&mut garbage).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1"),
        "no plaintext HTTP answer on a TLS listener"
    );
    relay.open_connections(0).await;
    relay.stop().await;
}

/// Issue 12: a browser on a TLS listener, routed by path after the relay terminated its TLS,
/// gets the offline page inside TLS; an SNI-routed browser, whose head the relay never read,
/// keeps the exact 504 of 2.6.6.
#[tokio::test]
async fn a_terminated_browser_gets_the_offline_page_an_sni_routed_one_the_exact_504() {
    let cert = relay_pem();
    let relay = tls_relay(&cert, |c| c.client_wait = Duration::ZERO).await;
    let trusting = connector(&[&cert.der], &[]);
    let browser = b"GET /dom/ HTTP/1.1\r\nAccept: text/html,*/*;q=0.8\r\n\r\n";
    let mut client = tls_connect(relay.addrs[1], HOST, &trusting).await.unwrap();
    client.write_all(browser).await.unwrap();
    let page = String::from_utf8(read_to_end_tls(&mut client).await).unwrap();
    assert!(page.starts_with("HTTP/1.1 504 \r\n"), "{page}");
    assert!(page.contains("\r\nContent-Type: text/html"), "{page}");
    assert!(page.contains("dom is offline"), "{page}");
    let mut client = tls_connect(relay.addrs[1], DEVICE_HOST, &trusting)
        .await
        .unwrap();
    client.write_all(browser).await.unwrap();
    assert_eq!(read_to_end_tls(&mut client).await, GATEWAY_TIMEOUT);
    relay.stop().await;
}
