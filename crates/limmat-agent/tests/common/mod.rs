//! Test helpers: a scripted fake relay on 127.0.0.1:0 and a running agent that tests stop
//! cleanly. Tests wait on events (accepts, heads, status changes), never on sleeps.

#![allow(dead_code)] // Each test file uses a different part.

use std::future::Future;

use limmat_agent::{Agent, AgentConfig, AgentStatus, CancellationToken, RelayAddr, RelayedConn};
use limmat_wire::HeadScanner;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A listener that plays the relay: the test accepts device connections and answers exact
/// bytes.
pub struct FakeRelay {
    listener: TcpListener,
    pub port: u16,
}

impl FakeRelay {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        Self { listener, port }
    }

    pub fn addr(&self) -> RelayAddr {
        RelayAddr::plain("127.0.0.1", self.port)
    }

    /// An agent configuration for this relay and `domain`.
    pub fn config(&self, domain: &str) -> AgentConfig {
        AgentConfig::new(self.addr(), domain)
    }

    /// The exact canonical handshake an agent sends here (2.3).
    pub fn handshake(&self, domain: &str, key: Option<&str>) -> Vec<u8> {
        let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        format!(
            "POST /{domain} HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\
             Host: 127.0.0.1:{}\r\n{auth}\r\n",
            self.port
        )
        .into_bytes()
    }

    pub async fn accept(&self) -> Peer {
        let (stream, _) = self.listener.accept().await.unwrap();
        Peer::new(stream)
    }

    /// Accepts a connection and reads its first head.
    pub async fn accept_head(&self) -> (Peer, Vec<u8>) {
        let mut peer = self.accept().await;
        let head = peer.read_head().await;
        (peer, head)
    }
}

/// One accepted connection (TCP, or TLS in the TLS tests), with the bytes read past the last
/// head.
pub struct Peer<S = TcpStream> {
    pub stream: S,
    pub buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads one complete head; panics on EOF.
    pub async fn read_head(&mut self) -> Vec<u8> {
        let mut scanner = HeadScanner::new();
        loop {
            if let Some(len) = scanner.scan(&self.buf) {
                return self.buf.drain(..len).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF before a complete head: {:?}", self.buf);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads exactly `n` bytes (after any buffered ones).
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let got = self.stream.read(&mut chunk).await.unwrap();
            assert!(got > 0, "EOF after {:?}", self.buf);
            self.buf.extend_from_slice(&chunk[..got]);
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until the peer closes and returns everything it sent (reset counts as closed).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        let _ = self.stream.read_to_end(&mut rest).await;
        rest
    }
}

/// An agent running in a task, with its status and the connections it handed over.
pub struct Running {
    pub shutdown: CancellationToken,
    pub status: watch::Receiver<AgentStatus>,
    handle: JoinHandle<()>,
}

impl Running {
    /// Runs `agent` with `handler`.
    pub fn start<H, F>(agent: Agent, handler: H) -> Self
    where
        H: Fn(RelayedConn) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let status = agent.status();
        let handle = tokio::spawn(agent.run(handler, shutdown.clone()));
        Self {
            shutdown,
            status,
            handle,
        }
    }

    /// Runs an agent for `config` whose handler passes every relayed connection to the test.
    pub fn collecting(config: AgentConfig) -> (Self, mpsc::UnboundedReceiver<RelayedConn>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let agent = Agent::new(config).unwrap();
        let running = Self::start(agent, move |conn| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(conn);
            }
        });
        (running, rx)
    }

    /// Waits until the status satisfies `f`, and returns it.
    pub async fn until(&mut self, f: impl FnMut(&AgentStatus) -> bool) -> AgentStatus {
        self.status.wait_for(f).await.unwrap().clone()
    }

    /// Cancels the agent and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

/// A local TCP echo service, stopped (with its connections) when dropped.
pub struct Echo {
    pub addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl Echo {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) aborts the connections.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                connections.spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The 57-byte `101` of the relay (2.3).
pub const UPGRADE: &[u8] = b"HTTP/1.1 101 \r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\r\n";
pub const RENEW: &[u8] = b"HTTP/1.1 204 \r\n\r\n";
