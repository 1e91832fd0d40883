//! `internal_tls` (spec 7.1): the internal listener and the forwarding hop speak TLS with the
//! relay's own certificate, and a node verifies its peer against `internal_ca`. node-a on
//! 127.0.0.2 and node-b on 127.0.0.3 share one rcgen certificate for the relay's hostname; a
//! client at node-a reaches a device at node-b through the encrypted hop, and with a CA that
//! did not sign the peer's certificate the forward is refused (the client gets node-a's `504`).

mod common;

use common::cluster::{Node, domain_of, node, until_live};
use common::tls::pem;
use common::{handshake, read_n};
use limmat_relay::RelayConfig;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "relay.test";

/// Two nodes serving `cert` on their internal listeners, each trusting the CA file `ca`.
async fn tls_nodes(cert: &common::tls::Pem, ca: PathBuf) -> (Node, Node) {
    let tweak = |c: &mut RelayConfig| {
        c.certs = vec![cert.paths.clone()];
        c.hostnames = vec![HOST.into()];
        c.cluster.internal_tls = true;
        c.cluster.internal_ca = Some(ca.clone());
    };
    let a = node("127.0.0.2", "node-a", &[], tweak).await;
    let b = node("127.0.0.3", "node-b", &[a.gossip], tweak).await;
    until_live(&[&a, &b], &["node-a", "node-b"]).await;
    (a, b)
}

/// A plain connection to an internal listener with TLS gets no plain-text answer.
async fn plain_request_is_not_answered(node: &Node) {
    let mut s = tokio::net::TcpStream::connect(node.internal).await.unwrap();
    s.write_all(b"GET /limmat/cluster/1/health HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(common::PATIENCE, s.read_to_end(&mut got)).await;
    assert!(!got.starts_with(b"HTTP/1.1"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_over_tls_reaches_the_owner() {
    let cert = pem(&[HOST, "*.relay.test"]);
    // A self-signed certificate is its own CA.
    let (a, b) = tls_nodes(&cert, cert.paths.cert.clone()).await;
    let d = domain_of(&a, "node-b", "tls");
    let mut device = b.send(&handshake(&d)).await;
    b.waiting_devices(1).await;
    let request = format!("GET /{d}/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut client = a.send(request.as_bytes()).await;
    let got = read_n(&mut device, common::UPGRADE.len() + request.len()).await;
    assert_eq!(&got[common::UPGRADE.len()..], request.as_bytes());
    device
        .write_all(b"HTTP/1.1 200 OK\r\n\r\nover tls")
        .await
        .unwrap();
    drop(device);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"HTTP/1.1 200 OK\r\n\r\nover tls");
    drop(client);
    plain_request_is_not_answered(&b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_not_signed_by_the_ca_is_refused() {
    let cert = pem(&[HOST, "*.relay.test"]);
    let other = pem(&[HOST]);
    // The nodes trust another CA: gossip works (it is HMAC-signed), every forward fails.
    let (a, b) = tls_nodes(&cert, other.paths.cert.clone()).await;
    let d = domain_of(&a, "node-b", "tls");
    let mut device = b.send(&handshake(&d)).await;
    b.waiting_devices(1).await;
    let request = format!("GET /{d}/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut client = a.send(request.as_bytes()).await;
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 504 "), "{answer:?}");
    drop(client);
    // The device never saw the client.
    let mut byte = [0u8; 1];
    let pending = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        device.read(&mut byte),
    )
    .await;
    assert!(pending.is_err(), "the device got bytes");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_tls_without_a_ca_or_a_certificate_is_refused_at_start() {
    let cert = pem(&[HOST]);
    let mut config = RelayConfig {
        listen: vec![limmat_relay::Listen::plain("127.0.0.2:0".parse().unwrap())],
        ..RelayConfig::default()
    };
    config.cluster.node_id = Some("node-a".into());
    config.cluster.internal_listen = Some("127.0.0.2:0".parse().unwrap());
    config.cluster.seeds = vec!["127.0.0.2:1".into()];
    config.cluster.internal_tls = true;
    let dir = std::env::temp_dir().join(format!("limmat-itls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
    config.cluster.cluster_secret_file = Some(secret);
    let err = limmat_relay::Relay::bind(config.clone())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("internal_ca"), "{err}");
    config.cluster.internal_ca = Some(cert.paths.cert.clone());
    let err = limmat_relay::Relay::bind(config.clone())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("certificate"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
