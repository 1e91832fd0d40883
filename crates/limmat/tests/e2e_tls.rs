//! TLS end to end with the real binaries and curl: a relay with a TLS listener, a device that
//! connects to it over TLS and verifies it with `--ca-file`, an HTTPS client routed by SNI, and
//! a pass-through device whose TLS the relay cannot read (curl trusts only the device).

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A self-signed certificate for `names`: (cert.pem, key.pem) in `dir`.
fn certificate(dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf, rcgen::CertifiedKey) {
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path, cert)
}

/// Starts a relay with a plain and a TLS listener; returns it with both addresses.
fn tls_relay(cert: &Path, key: &Path) -> (Limmat, SocketAddr, SocketAddr) {
    let mut relay = Limmat::spawn(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "tls:127.0.0.1:0",
        "--hostname",
        "relay.localhost",
        "--hostname",
        "localhost",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--client-wait",
        "2s",
    ]);
    let mut plain = None;
    let mut tls = None;
    for _ in 0..2 {
        let line = relay.wait_for("listening");
        let addr: SocketAddr = field(&line, "addr").parse().unwrap();
        if field(&line, "tls") == "true" {
            tls = Some(addr);
        } else {
            plain = Some(addr);
        }
    }
    (relay, plain.unwrap(), tls.unwrap())
}

#[test]
fn https_client_reaches_a_tls_device_by_sni() {
    let dir = temp_dir("e2e-sni");
    let (cert, key, _) = certificate(
        &dir.0,
        "relay",
        &["relay.localhost", "*.relay.localhost", "localhost"],
    );
    let (mut relay, _plain, tls) = tls_relay(&cert, &key);
    let origin = http_origin();
    let _tunnel = Limmat::spawn(&[
        "tunnel",
        "server",
        &origin.to_string(),
        &format!("tls:localhost:{}", tls.port()),
        "dom",
        "--ca-file",
        cert.to_str().unwrap(),
    ]);
    let registered = relay.wait_for("device connected");
    assert!(registered.contains("tls=true"), "{registered}");
    let host = format!("dom.relay.localhost:{}", tls.port());
    let body = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        "--resolve",
        &format!("{host}:127.0.0.1"),
        &format!("https://{host}/status"),
    ]);
    assert_eq!(body, "GET /status HTTP/1.1");
}

/// A TLS web server with its own certificate, as a pass-through device runs it.
fn device_tls_server(cert: &rcgen::CertifiedKey) -> SocketAddr {
    let chain = vec![cert.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut reader = BufReader::new(&mut tls);
                let Some(request_line) = read_request(&mut reader) else {
                    return;
                };
                let body = format!("end to end: {request_line}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    addr
}

#[test]
fn pass_through_device_terminates_tls_itself() {
    let dir = temp_dir("e2e-pt");
    let (cert, key, _) = certificate(
        &dir.0,
        "relay",
        &["relay.localhost", "*.relay.localhost", "localhost"],
    );
    let (device_cert, _, device) = certificate(&dir.0, "device", &["pt.relay.localhost"]);
    let (mut relay, plain, tls) = tls_relay(&cert, &key);
    let device_server = device_tls_server(&device);
    let _tunnel = Limmat::spawn(&[
        "tunnel",
        "server",
        &device_server.to_string(),
        &plain.to_string(),
        "pt",
        "--relay-security",
        "pass-through",
    ]);
    let registered = relay.wait_for("device connected");
    assert!(registered.contains("pass_through=true"), "{registered}");
    // curl trusts only the device's certificate: a relay that terminated would fail here.
    let host = format!("pt.relay.localhost:{}", tls.port());
    let body = curl(&[
        "--cacert",
        device_cert.to_str().unwrap(),
        "--resolve",
        &format!("{host}:127.0.0.1"),
        &format!("https://{host}/secret"),
    ]);
    assert_eq!(body, "end to end: GET /secret HTTP/1.1");
}
