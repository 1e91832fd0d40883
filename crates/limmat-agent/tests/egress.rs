//! The device side of the forward proxy against a real relay: `connect_via_proxy` (Bearer and
//! Basic), its typed refusals, and the local egress proxy port of `limmat tunnel egress`.

mod common;

use common::Echo;
use limmat_agent::{
    CancellationToken, EgressProxy, ForwardProxyError, ProxyAuth, connect_via_proxy,
};
use limmat_relay::auth::{DeviceKey, KeySources, sha256_hex};
use limmat_relay::{Action, EgressRule, Relay, RelayConfig};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "agent-egress-test-key";

async fn relay() -> (
    SocketAddr,
    limmat_relay::RelayHandle,
    tokio::task::JoinHandle<()>,
) {
    let config = RelayConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        forward_proxy: true,
        keys: KeySources {
            device_keys: vec![DeviceKey {
                domain: "dev".into(),
                sha256: sha256_hex(KEY),
            }],
            ..KeySources::default()
        },
        egress: limmat_relay::EgressConfig {
            rules: vec![EgressRule::parse(Action::Allow, "127.0.0.1/32").unwrap()],
            ..Default::default()
        },
        ..RelayConfig::default()
    };
    let relay = Relay::bind(config).await.unwrap();
    let addr = relay.local_addrs()[0];
    let handle = relay.handle();
    (addr, handle, tokio::spawn(relay.run()))
}

async fn round_trip(mut s: TcpStream) {
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
}

#[tokio::test]
async fn tunnels_and_refusals() {
    let echo = Echo::start().await;
    let (relay, handle, task) = relay().await;
    let port = echo.addr.port();
    let bearer = ProxyAuth::Bearer(KEY.into());
    round_trip(
        connect_via_proxy(relay, bearer.clone(), "127.0.0.1", port)
            .await
            .unwrap(),
    )
    .await;
    let basic = ProxyAuth::Basic {
        domain: "dev".into(),
        key: KEY.into(),
    };
    round_trip(
        connect_via_proxy(relay, basic, "127.0.0.1", port)
            .await
            .unwrap(),
    )
    .await;
    let wrong = ProxyAuth::Bearer("wrong".into());
    let err = connect_via_proxy(relay, wrong, "127.0.0.1", port)
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardProxyError::Auth), "{err:?}");
    let err = connect_via_proxy(relay, bearer.clone(), "169.254.169.254", 80)
        .await
        .unwrap_err();
    assert!(matches!(err, ForwardProxyError::Denied), "{err:?}");
    let err = connect_via_proxy(relay, bearer, "no-such-host.invalid", 80)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ForwardProxyError::BadGateway(ref t) if t == "dns-failed"),
        "{err:?}"
    );
    handle.shutdown();
    task.await.unwrap();
}

#[tokio::test]
async fn local_egress_port_adds_the_key() {
    let echo = Echo::start().await;
    let (relay, handle, task) = relay().await;
    let local = EgressProxy::bind(
        "127.0.0.1:0",
        relay.to_string(),
        ProxyAuth::Bearer(KEY.into()),
        8,
    )
    .await
    .unwrap();
    let addr = local.local_addr().unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(local.run(stop.clone()));
    // A program that knows nothing of keys sends a plain CONNECT.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!("CONNECT {} HTTP/1.1\r\n\r\n", echo.addr);
    s.write_all(head.as_bytes()).await.unwrap();
    let mut ok = vec![0u8; limmat_wire::proxy::CONNECTED.len()];
    s.read_exact(&mut ok).await.unwrap();
    assert_eq!(ok, limmat_wire::proxy::CONNECTED);
    round_trip(s).await;
    stop.cancel();
    running.await.unwrap();
    handle.shutdown();
    task.await.unwrap();
}
