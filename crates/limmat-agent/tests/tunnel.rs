//! The `limmat tunnel` modes and `serve_http` against scripted fake relays (checklist 39, 40,
//! 50, and the library use of 2.9).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use common::{Echo, FakeRelay, Running, UPGRADE};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use limmat_agent::tunnel::{self, ClientConfig, TunnelClient};
use limmat_agent::{Agent, CancellationToken, LocalAddr, serve_http};
use limmat_wire::tunnel::{PROXY_BAD_GATEWAY, PROXY_METHOD_NOT_ALLOWED, PROXY_OK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Runs a mode's future in a task that the returned token stops.
struct Task {
    shutdown: CancellationToken,
    handle: JoinHandle<()>,
}

impl Task {
    fn spawn<F>(run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(shutdown.clone()));
        Self { shutdown, handle }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

fn proxy_mode(relay: &FakeRelay, local: SocketAddr) -> Task {
    let agent = Agent::new(relay.config("dom")).unwrap();
    Task::spawn(|shutdown| tunnel::run_proxy(agent, LocalAddr::from(local), shutdown))
}

/// Checklist 39: exactly the 19-byte `200`, then a splice that starts with the bytes that
/// followed the `CONNECT` head.
#[tokio::test(start_paused = true)]
async fn proxy_mode_answers_200_and_splices() {
    let echo = Echo::start().await;
    let relay = FakeRelay::bind().await;
    let mode = proxy_mode(&relay, echo.addr);
    let (mut peer, _) = relay.accept_head().await;
    peer.send(
        &[
            UPGRADE,
            b"CONNECT /dom HTTP/1.1\r\nHost: relay:80\r\n\r\nSSH-2.0-x\r\n",
        ]
        .concat(),
    )
    .await;
    assert_eq!(peer.read_exact(19).await, PROXY_OK);
    assert_eq!(peer.read_exact(11).await, b"SSH-2.0-x\r\n");
    peer.send(b"more").await;
    assert_eq!(peer.read_exact(4).await, b"more");
    // Half-close reaches the local service, whose FIN comes back.
    peer.stream.shutdown().await.unwrap();
    assert_eq!(peer.read_to_end().await, b"");
    mode.stop().await;
}

/// Checklist 39: a request that is not `CONNECT` gets `405` and a close.
#[tokio::test(start_paused = true)]
async fn proxy_mode_refuses_other_methods() {
    let echo = Echo::start().await;
    let relay = FakeRelay::bind().await;
    let mode = proxy_mode(&relay, echo.addr);
    let (mut peer, _) = relay.accept_head().await;
    peer.send(&[UPGRADE, b"GET /dom HTTP/1.1\r\nHost: relay\r\n\r\n"].concat())
        .await;
    assert_eq!(peer.read_to_end().await, PROXY_METHOD_NOT_ALLOWED);
    mode.stop().await;
}

/// A closed local port gets `502` and a close.
#[tokio::test(start_paused = true)]
async fn proxy_mode_answers_502_when_the_local_port_is_closed() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = FakeRelay::bind().await;
    let mode = proxy_mode(&relay, closed);
    let (mut peer, _) = relay.accept_head().await;
    peer.send(UPGRADE).await;
    peer.send(b"CONNECT /dom HTTP/1.1\r\n\r\n").await;
    assert_eq!(peer.read_to_end().await, PROXY_BAD_GATEWAY);
    mode.stop().await;
}

/// A head over 16 KiB, or none at all, is closed without an answer.
#[tokio::test(start_paused = true)]
async fn proxy_mode_closes_on_oversized_or_missing_heads() {
    let echo = Echo::start().await;
    let relay = FakeRelay::bind().await;
    let mode = proxy_mode(&relay, echo.addr);
    let (mut peer, _) = relay.accept_head().await;
    peer.send(UPGRADE).await;
    let _ = peer.stream.write_all(&[b'C'; 17 * 1024]).await;
    assert_eq!(peer.read_to_end().await, b"");
    // The replacement: the client never sends a head; YalerTunnel2's 75 s idle limit applies.
    let (mut peer, _) = relay.accept_head().await;
    peer.send(UPGRADE).await;
    assert_eq!(peer.read_to_end().await, b"");
    mode.stop().await;
}

/// Server mode: each relayed connection is spliced to the local service, early bytes first.
#[tokio::test(start_paused = true)]
async fn server_mode_forwards_to_the_local_service() {
    let echo = Echo::start().await;
    let relay = FakeRelay::bind().await;
    let agent = Agent::new(relay.config("dom")).unwrap();
    let local = LocalAddr::from(echo.addr);
    let mode = Task::spawn(|shutdown| tunnel::run_server(agent, local, shutdown));
    for _ in 0..2 {
        let (mut peer, _) = relay.accept_head().await;
        peer.send(&[UPGRADE, b"early"].concat()).await;
        peer.send(b" late").await;
        assert_eq!(peer.read_exact(10).await, b"early late");
        peer.stream.shutdown().await.unwrap();
        assert_eq!(peer.read_to_end().await, b"");
    }
    mode.stop().await;
}

/// Issue 12 item 10: a local service that refuses the connection gets the client a `502`
/// with a body (Content-Type, Content-Length, Connection: close), not an empty reply.
#[tokio::test]
async fn server_mode_answers_502_when_the_local_service_refuses() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let local = LocalAddr::from(closed.local_addr().unwrap());
    drop(closed);
    let relay = FakeRelay::bind().await;
    let agent = Agent::new(relay.config("dom")).unwrap();
    let mode = Task::spawn(|shutdown| tunnel::run_server(agent, local, shutdown));
    let (mut peer, _) = relay.accept_head().await;
    peer.send(&[UPGRADE, b"GET / HTTP/1.1\r\n\r\n"].concat())
        .await;
    let answer = String::from_utf8(peer.read_to_end().await).unwrap();
    assert_eq!(answer.as_bytes(), tunnel::SERVER_BAD_GATEWAY);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    mode.stop().await;
}

fn client_mode(client: TunnelClient) -> Task {
    Task::spawn(|shutdown| client.run(shutdown))
}

async fn bind_client(relay: &FakeRelay) -> (TunnelClient, SocketAddr) {
    let local = LocalAddr::new("127.0.0.1", 0);
    let client = TunnelClient::bind(&local, ClientConfig::new(relay.addr(), "Dom"))
        .await
        .unwrap();
    let addr = client.local_addr().unwrap();
    (client, addr)
}

/// Checklist 40: exactly `CONNECT /<domain>`, then after the `200` a splice that starts with
/// the bytes after the `200` head; the user's bytes sent before the `200` are kept.
#[tokio::test(start_paused = true)]
async fn client_mode_sends_connect_and_splices() {
    let relay = FakeRelay::bind().await;
    let (client, addr) = bind_client(&relay).await;
    let mode = client_mode(client);
    let mut user = TcpStream::connect(addr).await.unwrap();
    user.write_all(b"ping").await.unwrap();
    let (mut peer, head) = relay.accept_head().await;
    assert_eq!(
        String::from_utf8_lossy(&head),
        format!(
            "CONNECT /dom HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            relay.port
        )
    );
    peer.send(b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-device\r\n")
        .await;
    let mut early = [0u8; 16];
    user.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"SSH-2.0-device\r\n");
    assert_eq!(peer.read_exact(4).await, b"ping");
    user.shutdown().await.unwrap();
    assert_eq!(peer.read_to_end().await, b"");
    peer.stream.write_all(b"bye").await.unwrap();
    peer.stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    user.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye");
    mode.stop().await;
}

/// Any status but `200` closes the local socket.
#[tokio::test(start_paused = true)]
async fn client_mode_closes_on_other_statuses() {
    let relay = FakeRelay::bind().await;
    let (client, addr) = bind_client(&relay).await;
    let mode = client_mode(client);
    for answer in [
        &b"HTTP/1.1 504 \r\n\r\n"[..],
        b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\n\r\n",
        b"garbage\n\n",
        b"HTTP/1.1 200 OK",
    ] {
        let mut user = TcpStream::connect(addr).await.unwrap();
        let (mut peer, _) = relay.accept_head().await;
        peer.send(answer).await;
        peer.stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        let _ = user.read_to_end(&mut got).await;
        assert_eq!(got, b"", "{}", String::from_utf8_lossy(answer));
    }
    mode.stop().await;
}

/// Interim `1xx` responses are skipped and `307`/`308` followed, with the new domain.
#[tokio::test(start_paused = true)]
async fn client_mode_skips_1xx_and_follows_redirects() {
    let relay = FakeRelay::bind().await;
    let other = FakeRelay::bind().await;
    let (client, addr) = bind_client(&relay).await;
    let mode = client_mode(client);
    let mut user = TcpStream::connect(addr).await.unwrap();
    let (mut peer, _) = relay.accept_head().await;
    peer.send(
        format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 308 \r\nlocation: http://127.0.0.1:{}/Other\r\n\r\n",
            other.port
        )
        .as_bytes(),
    )
    .await;
    let (mut peer, head) = other.accept_head().await;
    assert_eq!(
        String::from_utf8_lossy(&head),
        format!(
            "CONNECT /other HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            other.port
        )
    );
    peer.send(b"HTTP/1.1 200 OK\r\n\r\n").await;
    user.write_all(b"x").await.unwrap();
    assert_eq!(peer.read_exact(1).await, b"x");
    mode.stop().await;
}

#[tokio::test]
async fn client_mode_refuses_bad_configurations() {
    let relay = FakeRelay::bind().await;
    let local = LocalAddr::new("127.0.0.1", 0);
    for domain in ["relay_domain", "", "a b"] {
        let config = ClientConfig::new(relay.addr(), domain);
        let err = TunnelClient::bind(&local, config).await.unwrap_err();
        assert!(err.to_string().contains("domain"), "{err}");
    }
}

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello {}",
        request.uri().path()
    )))))
}

fn http_agent(relay: &FakeRelay) -> Running {
    let agent = Agent::new(relay.config("dom")).unwrap();
    Running::start(agent, |conn| async move {
        let _ = serve_http(conn, hyper::service::service_fn(hello)).await;
    })
}

/// Library use: a hyper service serves HTTP/1.1 through the relay with no local port.
#[tokio::test(start_paused = true)]
async fn serve_http_answers_http1() {
    let relay = FakeRelay::bind().await;
    let agent = http_agent(&relay);
    let (mut peer, _) = relay.accept_head().await;
    peer.send(
        &[
            UPGRADE,
            b"GET /dom/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ]
        .concat(),
    )
    .await;
    let response = String::from_utf8(peer.read_to_end().await).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nhello /dom/x"), "{response}");
    agent.stop().await;
}

/// Library use: HTTP/2 with prior knowledge is recognised by its preface.
#[tokio::test(start_paused = true)]
async fn serve_http_speaks_h2_with_prior_knowledge() {
    let relay = FakeRelay::bind().await;
    let agent = http_agent(&relay);
    let (mut peer, _) = relay.accept_head().await;
    let empty_settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    peer.send(
        &[
            UPGRADE,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            &empty_settings,
        ]
        .concat(),
    )
    .await;
    let frame = peer.read_exact(9).await;
    assert_eq!(
        frame[3], 4,
        "the server's first frame is SETTINGS: {frame:?}"
    );
    agent.stop().await;
}

/// Client mode opens at most `max_sockets` tunnels; further local connections wait until one
/// ends.
#[tokio::test(start_paused = true)]
async fn client_mode_caps_open_tunnels() {
    let relay = FakeRelay::bind().await;
    let local = LocalAddr::new("127.0.0.1", 0);
    let mut config = ClientConfig::new(relay.addr(), "Dom");
    config.max_sockets = 1;
    let client = TunnelClient::bind(&local, config).await.unwrap();
    let addr = client.local_addr().unwrap();
    let mode = client_mode(client);
    let first = TcpStream::connect(addr).await.unwrap();
    let (mut peer, _) = relay.accept_head().await;
    peer.send(b"HTTP/1.1 200 OK\r\n\r\n").await;
    // The second user is queued: no relay connection is opened for it yet.
    let _second = TcpStream::connect(addr).await.unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(60), relay.accept()).await;
    assert!(
        waited.is_err(),
        "a second tunnel was opened beyond max_sockets"
    );
    // When the first tunnel ends, the second gets its relay connection.
    drop(first);
    assert_eq!(peer.read_to_end().await, b"");
    drop(peer);
    let (_peer2, head) = relay.accept_head().await;
    assert!(head.starts_with(b"CONNECT /dom HTTP/1.1\r\n"));
    mode.stop().await;
}
