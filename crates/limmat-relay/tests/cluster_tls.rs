//! Clustered relays with TLS listeners (spec 7.4, 7.5, checklist 86–87): a device over TLS at a
//! non-owner is redirected with `https`; TLS-terminated, SNI-routed and SNI pass-through clients
//! at a non-owner are forwarded one hop, and the owner makes the TLS decision of 2.6 itself.
//! The domain is `dom`, which node-b owns in {node-a, node-b} (the vectors of 7.3).

mod common;

use common::cluster::{Node, node, until_live};
use common::tls::*;
use common::{UPGRADE, handshake, read_n};
use limmat_relay::{Listen, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "relay.example.com";
const DEVICE_HOST: &str = "dom.relay.example.com";

/// node-a on 127.0.0.2 and node-b on 127.0.0.3, each with a plain and a TLS listener and the
/// same certificate for the hostname and its subdomains.
async fn tls_nodes(cert: &Pem) -> (Node, Node) {
    let tweak = |ip: &'static str| {
        let certs = vec![cert.paths.clone()];
        move |c: &mut RelayConfig| {
            c.listen = vec![
                Listen::plain(format!("{ip}:0").parse().unwrap()),
                Listen::tls(format!("{ip}:0").parse().unwrap()),
            ];
            c.hostnames = vec![HOST.into()];
            c.certs = certs;
        }
    };
    let a = node("127.0.0.2", "node-a", &[], tweak("127.0.0.2")).await;
    let b = node("127.0.0.3", "node-b", &[a.gossip], tweak("127.0.0.3")).await;
    until_live(&[&a, &b], &["node-a", "node-b"]).await;
    assert_eq!(a.handle.owner_of("dom").as_deref(), Some("node-b"));
    (a, b)
}

/// Checklist 86 over TLS: the 307 names `https` and the owner's TLS port, inside TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_device_at_a_non_owner_is_redirected_with_https() {
    let cert = pem(&[HOST, "*.relay.example.com"]);
    let (a, b) = tls_nodes(&cert).await;
    let trusting = connector(&[&cert.der], &[]);
    let mut device = tls_connect(a.addrs[1], HOST, &trusting).await.unwrap();
    device
        .write_all(b"POST /dom/x HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_end_tls(&mut device).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!(
            "HTTP/1.1 307 \r\nLocation: https://127.0.0.3:{}/dom/x\r\n\r\n",
            b.addrs[1].port()
        )
    );
    a.stop().await;
    b.stop().await;
}

/// Checklist 87: a TLS-terminated client (path form) and an SNI-routed client at node-a reach
/// the TLS device at node-b; the device gets their decrypted bytes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_and_sni_routed_clients_are_forwarded() {
    let cert = pem(&[HOST, "*.relay.example.com"]);
    let (a, b) = tls_nodes(&cert).await;
    let trusting = connector(&[&cert.der], &[]);
    for (sni, request) in [
        (HOST, &b"GET /dom/terminated HTTP/1.1\r\n\r\n"[..]),
        (
            DEVICE_HOST,
            &b"GET /sni HTTP/1.1\r\nHost: dom.relay.example.com\r\n\r\n"[..],
        ),
    ] {
        let mut device = tls_connect(b.addrs[1], HOST, &trusting).await.unwrap();
        device
            .write_all(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n")
            .await
            .unwrap();
        b.waiting_devices(1).await;
        let mut client = tls_connect(a.addrs[1], sni, &trusting).await.unwrap();
        client.write_all(request).await.unwrap();
        let got = read_exact_tls(&mut device, UPGRADE.len() + request.len()).await;
        assert_eq!(&got[..UPGRADE.len()], UPGRADE);
        assert_eq!(
            String::from_utf8_lossy(&got[UPGRADE.len()..]),
            String::from_utf8_lossy(request),
            "{sni}"
        );
        device
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nok")
            .await
            .unwrap();
        assert_eq!(
            read_exact_tls(&mut client, 21).await,
            b"HTTP/1.1 200 OK\r\n\r\nok"
        );
        drop((client, device));
        b.waiting_devices(0).await;
    }
    a.stop().await;
    b.stop().await;
}

/// Checklist 87: an SNI pass-through client at node-a is forwarded still encrypted; the
/// pass-through device at node-b gets the raw ClientHello and terminates TLS itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_through_client_is_forwarded_encrypted() {
    let cert = pem(&[HOST, "*.relay.example.com"]);
    let device_cert = pem(&[DEVICE_HOST]);
    let (a, b) = tls_nodes(&cert).await;
    let mut device = b
        .send(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nX-Relay-Security: transport/pass-through\r\n\r\n")
        .await;
    b.waiting_devices(1).await;
    let client = spawn_secret_client(a.addrs[1], DEVICE_HOST, &device_cert);
    assert_eq!(read_n(&mut device, UPGRADE.len()).await, UPGRADE);
    serve_secret_as_device(device, &device_cert, DEVICE_HOST).await;
    assert_eq!(client.await.unwrap(), b"secret answer");
    // A plain device at a non-owner over the plain listener still gets the http redirect.
    let mut plain = a.send(&handshake("dom")).await;
    let mut got = Vec::new();
    plain.read_to_end(&mut got).await.unwrap();
    assert!(got.starts_with(b"HTTP/1.1 307 \r\nLocation: http://127.0.0.3:"));
    a.stop().await;
    b.stop().await;
}
