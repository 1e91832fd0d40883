//! A graceful stop ends every open event stream at once: the server ends Server-Sent Events
//! responses when the shutdown token fires, so `Gateway::wait` does not wait on a stream that
//! would run for ever, and each client sees its stream end cleanly.

use limmat_gateway::config::GatewayConfig;
use limmat_gateway::server::{Gateway, Options};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Opens `path` as an event stream and returns the connection once the response head came.
async fn open_stream(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "the stream closed early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    stream
}

/// Reads until the server closes the connection or ends the chunked body.
async fn read_to_end(mut stream: TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if all.ends_with(b"0\r\n\r\n") {
                    return all;
                }
            }
        }
    }
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::default();
    config.api.listen = Some("127.0.0.1:0".into());
    config.gateway.state_dir = dir.path().join("state");
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(
        Options {
            config,
            prometheus: None,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = gateway.local_addr();
    let events = open_stream(addr, "/beacon/events").await;
    let scan = open_stream(addr, "/gap/nodes?event=1").await;
    shutdown.cancel();
    // Far below the old 5 s grace period: the streams end with the token, not after it.
    tokio::time::timeout(Duration::from_secs(3), gateway.wait())
        .await
        .expect("the gateway stops without waiting for its open streams");
    for stream in [events, scan] {
        tokio::time::timeout(Duration::from_secs(3), read_to_end(stream))
            .await
            .expect("the stream ends");
    }
}
