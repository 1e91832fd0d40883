//! The admin listener on real sockets: probes, Prometheus metrics that move, the domains and
//! connections API, disconnecting a domain, and the bearer token.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A relay with an admin listener; returns it and the admin address.
async fn admin_relay(token: Option<&str>) -> (TestRelay, SocketAddr) {
    let token_file = token.map(|t| {
        let path = std::env::temp_dir().join(format!(
            "limmat-admin-token-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, format!("{t}\n")).unwrap();
        path
    });
    let remove = token_file.clone();
    let relay = start(move |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.admin_token_file = token_file;
        c.client_wait = Duration::ZERO;
    })
    .await;
    // Read at start; nothing reads it again.
    if let Some(path) = remove {
        let _ = std::fs::remove_file(path);
    }
    let admin = relay.admin.expect("admin listener");
    (relay, admin)
}

/// A plain HTTP/1.1 request; returns the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{auth}\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

async fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn probes_and_readiness_during_drain() {
    let (relay, admin) = admin_relay(None).await;
    assert_eq!(http(admin, "GET", "/healthz", None).await.0, 200);
    assert_eq!(http(admin, "GET", "/readyz", None).await.0, 200);
    // Keep a pipe open so that the drain lasts while readiness is checked.
    let mut device = relay.device("dom").await;
    let client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    read_n(&mut device, UPGRADE.len()).await;
    relay.pipes(1).await;
    relay.handle.shutdown();
    let (status, body) = http(admin, "GET", "/readyz", None).await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert_eq!(http(admin, "GET", "/healthz", None).await.0, 200);
    drop((client, device));
    relay.stop().await;
}

#[tokio::test]
async fn metrics_are_exported_and_move() {
    let (relay, admin) = admin_relay(None).await;
    let (status, before) = http(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(before.contains("limmat_waiting_devices"), "{before}");
    let mut device = relay.device("metered").await;
    let mut client = relay.send(b"GET /metered HTTP/1.1\r\n\r\n").await;
    read_n(&mut device, UPGRADE.len() + 24).await;
    device.write_all(b"pong").await.unwrap();
    read_n(&mut client, 4).await;
    drop((client, device));
    relay.pipes(0).await;
    let mut unknown = relay.send(b"GET /nobody HTTP/1.1\r\n\r\n").await;
    read_to_end(&mut unknown).await;
    let (_, after) = http(admin, "GET", "/metrics", None).await;
    for name in [
        "limmat_connections_accepted_total",
        "limmat_handshakes_total{result=\"101\"}",
        "limmat_handshakes_total{result=\"504\"}",
        "limmat_pipes_total",
        "limmat_bytes_total{direction=\"in\"}",
        "limmat_pipe_duration_seconds_bucket",
        "limmat_pairing_wait_seconds_bucket",
        "limmat_active_pipes",
        "limmat_open_connections",
        "limmat_domain_pipes{domain=\"other\"}",
    ] {
        assert!(after.contains(name), "{name} missing in:\n{after}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn domains_api_shows_devices_and_pipes() {
    let (relay, admin) = admin_relay(None).await;
    let waiting = relay.device("alpha").await;
    let mut busy = relay.device("beta").await;
    let client = relay.send(b"GET /beta/x HTTP/1.1\r\n\r\n").await;
    read_n(&mut busy, UPGRADE.len()).await;
    relay.pipes(1).await;
    let domains = json(admin, "/api/domains").await;
    let names: Vec<&str> = domains
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["domain"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let alpha = json(admin, "/api/domains/ALPHA").await;
    assert_eq!(alpha["waiting"], 1);
    assert_eq!(alpha["devices"][0]["transport"], "tcp");
    assert_eq!(
        alpha["devices"][0]["addr"],
        waiting.local_addr().unwrap().to_string()
    );
    let beta = json(admin, "/api/domains/beta").await;
    assert_eq!(beta["pipes"], 1);
    assert_eq!(beta["bytes_in"], 24, "the client's request so far");
    let (status, body) = http(admin, "GET", "/api/domains/nobody", None).await;
    assert_eq!(status, 404, "{body}");
    // Connections, paged.
    let page = json(admin, "/api/connections?limit=1").await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["connections"].as_array().unwrap().len(), 1);
    let rest = json(admin, "/api/connections?offset=1&limit=10").await;
    assert_eq!(rest["connections"].as_array().unwrap().len(), 1);
    assert_eq!(
        http(admin, "GET", "/api/connections?limit=0", None).await.0,
        400
    );
    assert_eq!(
        http(admin, "GET", "/api/connections?limit=x", None).await.0,
        400
    );
    drop((waiting, busy, client));
    relay.stop().await;
}

#[tokio::test]
async fn delete_disconnects_a_domain() {
    let (relay, admin) = admin_relay(None).await;
    let mut device = relay.device("dom").await;
    let mut piped = relay.device("dom").await;
    let mut client = relay.send(b"GET /dom HTTP/1.1\r\n\r\n").await;
    read_n(&mut device, UPGRADE.len()).await; // the older device is paired
    assert_eq!(http(admin, "DELETE", "/api/domains/dom", None).await.0, 204);
    // The waiting device and both legs of the pipe are closed.
    assert_eq!(read_to_end(&mut piped).await, b"");
    assert_eq!(read_to_end(&mut client).await, b"");
    read_to_end(&mut device).await;
    relay.open_connections(0).await;
    assert_eq!(http(admin, "DELETE", "/api/domains/dom", None).await.0, 404);
    // The domain can come back.
    let again = relay.device("dom").await;
    drop(again);
    relay.stop().await;
}

#[tokio::test]
async fn admin_token_is_required_except_for_probes() {
    let (relay, admin) = admin_relay(Some("admin-s3cret")).await;
    assert_eq!(http(admin, "GET", "/api/domains", None).await.0, 401);
    assert_eq!(
        http(admin, "GET", "/api/domains", Some("wrong")).await.0,
        401
    );
    assert_eq!(http(admin, "GET", "/metrics", None).await.0, 401);
    assert_eq!(
        http(admin, "GET", "/api/domains", Some("admin-s3cret"))
            .await
            .0,
        200
    );
    assert_eq!(http(admin, "GET", "/healthz", None).await.0, 200);
    assert_eq!(http(admin, "GET", "/readyz", None).await.0, 200);
    // The dashboard page is static; it asks for the token when the API answers 401.
    let (status, page) = http(admin, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("Limmat relay"));
    relay.stop().await;
}

#[tokio::test]
async fn a_public_admin_listener_needs_a_token() {
    let err = limmat_relay::Relay::bind(limmat_relay::RelayConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        admin: Some("0.0.0.0:0".parse().unwrap()),
        ..limmat_relay::RelayConfig::default()
    })
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("--admin-token-file"), "{err}");
}
