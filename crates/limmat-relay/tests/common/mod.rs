//! A relay on 127.0.0.1:0 inside the test's runtime, raw-socket helpers, and waits on the
//! relay's gauges so that tests synchronise on events instead of sleeping.

#![allow(dead_code)]

pub mod cluster;
pub mod tls;

use limmat_relay::{Relay, RelayConfig, RelayHandle};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Every wait in these tests fails after this long instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestRelay {
    /// The first listener.
    pub addr: SocketAddr,
    /// Every listener, in the order configured.
    pub addrs: Vec<SocketAddr>,
    /// The admin listener, if configured.
    pub admin: Option<SocketAddr>,
    pub handle: RelayHandle,
    task: JoinHandle<()>,
}

pub async fn start(configure: impl FnOnce(&mut RelayConfig)) -> TestRelay {
    let mut config = RelayConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..RelayConfig::default()
    };
    configure(&mut config);
    let relay = Relay::bind(config).await.expect("relay binds");
    let addrs = relay.local_addrs();
    let admin = relay.admin_addr();
    let addr = addrs[0];
    let handle = relay.handle();
    let task = tokio::spawn(relay.run());
    TestRelay {
        addr,
        addrs,
        admin,
        handle,
        task,
    }
}

impl TestRelay {
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// A PTTH device for `domain` that the relay has put in its FIFO.
    pub async fn device(&self, domain: &str) -> TcpStream {
        let before = *self.handle.stats().waiting_devices().borrow();
        let s = self.send(&handshake(domain)).await;
        self.waiting_devices(before + 1).await;
        s
    }

    /// Connects and writes `bytes`.
    pub async fn send(&self, bytes: &[u8]) -> TcpStream {
        let mut s = self.connect().await;
        s.write_all(bytes).await.expect("write");
        s
    }

    pub async fn waiting_devices(&self, n: usize) {
        until(self.handle.stats().waiting_devices(), n, "waiting devices").await;
    }

    pub async fn waiting_clients(&self, n: usize) {
        until(self.handle.stats().waiting_clients(), n, "waiting clients").await;
    }

    pub async fn open_connections(&self, n: usize) {
        until(
            self.handle.stats().open_connections(),
            n,
            "open connections",
        )
        .await;
    }

    pub async fn pipes(&self, n: usize) {
        until(self.handle.stats().pipes(), n, "pipes").await;
    }

    /// Stops the relay gracefully and checks that it holds no connection afterwards.
    pub async fn stop(self) {
        self.handle.shutdown();
        timeout(PATIENCE, self.task)
            .await
            .expect("relay stops in time")
            .expect("relay task");
        assert_eq!(*self.handle.stats().open_connections().borrow(), 0);
    }
}

/// Waits until a gauge equals `n`.
pub async fn until(mut rx: watch::Receiver<usize>, n: usize, what: &str) {
    let reached = matches!(timeout(PATIENCE, rx.wait_for(|&v| v == n)).await, Ok(Ok(_)));
    assert!(reached, "{what}: wanted {n}, have {}", *rx.borrow());
}

pub fn handshake(domain: &str) -> Vec<u8> {
    format!("POST /{domain} HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\nHost: relay:80\r\n\r\n")
        .into_bytes()
}

pub const UPGRADE: &[u8] = b"HTTP/1.1 101 \r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\r\n";
pub const RENEW: &[u8] = b"HTTP/1.1 204 \r\n\r\n";
pub const UNAUTHORIZED: &[u8] = b"HTTP/1.1 401 \r\nWWW-Authenticate: Bearer\r\n\r\n";
pub const GATEWAY_TIMEOUT: &[u8] = b"HTTP/1.1 504 \r\n\r\n";

/// Reads exactly `n` bytes.
pub async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    timeout(PATIENCE, s.read_exact(&mut buf))
        .await
        .expect("bytes arrive in time")
        .expect("read");
    buf
}

/// Reads until EOF (or a reset, which also ends the stream).
pub async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("EOF in time")
        {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The relay closes the connection with exactly `expected` and nothing after it.
pub async fn expect_response_then_close(s: &mut TcpStream, expected: &[u8]) {
    let got = read_to_end(s).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}
