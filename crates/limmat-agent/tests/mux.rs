//! limmat-mux/1 end to end (spec section 5): a real relay, the agent as the HTTP/2 server, and
//! plain TCP clients. Every tunnel mode over mux, stream metadata, cancellation both ways,
//! PING liveness, GOAWAY drain, a 1 GiB stream, 1,000 concurrent streams on one connection,
//! and the fallback to PTTH/1.0.

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::{Echo, FakeRelay, Running};
use limmat_agent::tunnel::{self, ClientConfig, TunnelClient};
use limmat_agent::{
    Agent, AgentConfig, CancellationToken, Listener, LocalAddr, RelayAddr, Route, Transport,
};
use limmat_relay::{Relay, RelayConfig, RelayHandle};
use limmat_wire::request::Protocol;
use limmat_wire::response::UPGRADE_MUX;
use limmat_wire::tunnel::device_handshake;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(20);

/// A relay on 127.0.0.1:0, run in a task.
struct TestRelay {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    handle: RelayHandle,
    task: JoinHandle<()>,
}

impl TestRelay {
    /// The admin API's answer to `GET path` (the relay must have been started with `admin`).
    async fn admin_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.admin.unwrap()).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut body = String::new();
        timeout(WAIT, s.read_to_string(&mut body))
            .await
            .unwrap()
            .unwrap();
        body
    }

    async fn start(config: RelayConfig) -> Self {
        let relay = Relay::bind(RelayConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            client_wait: Duration::from_secs(10),
            ..config
        })
        .await
        .unwrap();
        let addr = relay.local_addrs()[0];
        let admin = relay.admin_addr();
        let handle = relay.handle();
        let task = tokio::spawn(relay.run());
        Self {
            addr,
            admin,
            handle,
            task,
        }
    }

    fn agent_config(&self, domain: &str) -> AgentConfig {
        let mut c = AgentConfig::new(RelayAddr::plain("127.0.0.1", self.addr.port()), domain);
        c.transport = Transport::Mux;
        c
    }

    async fn until_mux(&self, n: usize) {
        let mut mux = self.handle.stats().mux_connections();
        timeout(WAIT, mux.wait_for(|&m| m == n))
            .await
            .expect("mux connections")
            .unwrap();
    }

    async fn stop(self) {
        self.handle.shutdown();
        timeout(WAIT, self.task).await.unwrap().unwrap();
    }
}

/// Runs a tunnel mode in a task until the returned token is cancelled.
fn spawn_mode<F>(run: impl FnOnce(CancellationToken) -> F) -> (CancellationToken, JoinHandle<()>)
where
    F: Future<Output = ()> + Send + 'static,
{
    let shutdown = CancellationToken::new();
    (shutdown.clone(), tokio::spawn(run(shutdown)))
}

/// A client with a request sent, and the stream the device got for it.
async fn open_stream(
    relay: &TestRelay,
    conns: &mut tokio::sync::mpsc::UnboundedReceiver<limmat_agent::RelayedConn>,
) -> (TcpStream, limmat_agent::RelayedConn) {
    let mut client = TcpStream::connect(relay.addr).await.unwrap();
    client
        .write_all(b"GET /dom/ HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let conn = timeout(WAIT, conns.recv()).await.unwrap().unwrap();
    (client, conn)
}

async fn roundtrip(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0; bytes.len()];
    timeout(WAIT, stream.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, bytes);
}

#[tokio::test]
async fn server_mode_over_mux_is_verbatim_and_half_closes() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let echo = Echo::start().await;
    let agent = Agent::new(relay.agent_config("dom")).unwrap();
    let (stop, mode) = spawn_mode(|s| tunnel::run_server(agent, LocalAddr::from(echo.addr), s));
    relay.until_mux(1).await;
    for _ in 0..3 {
        let mut client = TcpStream::connect(relay.addr).await.unwrap();
        roundtrip(&mut client, b"GET /dom/x HTTP/1.1\r\nHost: r\r\n\r\nearly").await;
        roundtrip(&mut client, b"more").await;
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        timeout(WAIT, client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }
    stop.cancel();
    mode.await.unwrap();
    relay.stop().await;
}

#[tokio::test]
async fn the_device_learns_the_client() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let (agent, mut conns) = Running::collecting(relay.agent_config("dom"));
    relay.until_mux(1).await;
    let (client, conn) = open_stream(&relay, &mut conns).await;
    let meta = conn.mux_meta().expect("a mux stream").clone();
    assert_eq!(meta.domain.as_deref(), Some("dom"));
    assert_eq!(meta.client_addr, Some(client.local_addr().unwrap()));
    assert_eq!(meta.listener, Some(Listener::Plain));
    assert_eq!(meta.route, Some(Route::Path));
    assert_eq!(meta.sni, None);
    drop((conn, client));
    agent.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn proxy_and_client_modes_over_mux() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let echo = Echo::start().await;
    let agent = Agent::new(relay.agent_config("ssh")).unwrap();
    let (stop_proxy, proxy) =
        spawn_mode(|s| tunnel::run_proxy(agent, LocalAddr::from(echo.addr), s));
    relay.until_mux(1).await;
    let relay_addr = RelayAddr::plain("127.0.0.1", relay.addr.port());
    let local: LocalAddr = "127.0.0.1:0".parse().unwrap();
    let client = TunnelClient::bind(&local, ClientConfig::new(relay_addr, "ssh"))
        .await
        .unwrap();
    let client_addr = client.local_addr().unwrap();
    let (stop_client, client_task) = spawn_mode(|s| client.run(s));
    let mut user = TcpStream::connect(client_addr).await.unwrap();
    roundtrip(&mut user, b"SSH-2.0-test\r\n").await;
    roundtrip(&mut user, &[7; 100_000]).await;
    drop(user);
    stop_client.cancel();
    client_task.await.unwrap();
    stop_proxy.cancel();
    proxy.await.unwrap();
    relay.stop().await;
}

/// 5.4: a client that closes resets its stream (the device reads an error or EOF), and a
/// device that drops its stream closes the client.
#[tokio::test]
async fn streams_are_cancelled_both_ways() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let (agent, mut conns) = Running::collecting(relay.agent_config("dom"));
    relay.until_mux(1).await;

    let (client, mut conn) = open_stream(&relay, &mut conns).await;
    let mut head = [0; 22];
    conn.read_exact(&mut head).await.unwrap();
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client); // RST
    let mut buf = [0; 16];
    let read = timeout(WAIT, conn.read(&mut buf))
        .await
        .expect("the device sees the reset");
    assert!(
        read.is_err(),
        "RST_STREAM(CANCEL) reads as an error: {read:?}"
    );
    drop(conn);

    let (mut client, conn) = open_stream(&relay, &mut conns).await;
    drop(conn); // RST_STREAM(CANCEL)
    let read = timeout(WAIT, client.read(&mut buf))
        .await
        .expect("the client is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let mut pipes = relay.handle.stats().pipes();
    timeout(WAIT, pipes.wait_for(|&p| p == 0))
        .await
        .unwrap()
        .unwrap();
    agent.stop().await;
    relay.stop().await;
}

/// A socket that can be made to go silent (as a device behind a dead NAT mapping): once
/// frozen, reads and writes never complete and nothing is closed.
struct Freezable {
    inner: TcpStream,
    frozen: Arc<AtomicBool>,
}

impl AsyncRead for Freezable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.frozen.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Freezable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.frozen.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// 5.6: a device that stops answering mid-stream is found dead by PING within
/// `mux_ping_interval + mux_ping_timeout` (plus scheduling), and its client is closed.
#[tokio::test]
async fn a_silent_device_is_found_dead_by_ping() {
    let relay = TestRelay::start(RelayConfig {
        mux_ping_interval: Duration::from_millis(200),
        mux_ping_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    let port = relay.addr.port();
    let hs = device_handshake(Protocol::Mux, "dom", "127.0.0.1", port, None, false);
    tcp.write_all(&hs).await.unwrap();
    let mut upgrade = [0; 61];
    tcp.read_exact(&mut upgrade).await.unwrap();
    assert_eq!(&upgrade[..], UPGRADE_MUX);
    let frozen = Arc::new(AtomicBool::new(false));
    let io = Freezable {
        inner: tcp,
        frozen: frozen.clone(),
    };
    let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let device = tokio::spawn(async move {
        let mut conn = h2::server::handshake(io).await.unwrap();
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            let send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            let _ = tx.send((request, send));
        }
    });
    relay.until_mux(1).await;
    let mut client = TcpStream::connect(relay.addr).await.unwrap();
    client
        .write_all(b"GET /dom/ HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let _stream = timeout(WAIT, accepted.recv()).await.unwrap().unwrap();
    let mut pipes = relay.handle.stats().pipes();
    timeout(WAIT, pipes.wait_for(|&p| p == 1))
        .await
        .unwrap()
        .unwrap();

    frozen.store(true, Ordering::Relaxed);
    let silent_since = Instant::now();
    let mut buf = [0; 16];
    let read = timeout(WAIT, client.read(&mut buf))
        .await
        .expect("the client is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = silent_since.elapsed();
    // Silence is noticed after one interval at most, the ACK awaited for one timeout.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    relay.until_mux(0).await;
    device.abort();
    relay.stop().await;
}

/// 5.7: on shutdown the relay sends GOAWAY; the agent reconnects at once while the open
/// stream keeps working until it ends, and the relay stops as soon as it has.
#[tokio::test]
async fn goaway_drains_with_streams_in_flight() {
    let relay = TestRelay::start(RelayConfig {
        drain_timeout: Duration::from_secs(60),
        ..RelayConfig::default()
    })
    .await;
    let echo = Echo::start().await;
    let agent = Agent::new(relay.agent_config("dom")).unwrap();
    let mut status = agent.status();
    let (stop, mode) = spawn_mode(|s| tunnel::run_server(agent, LocalAddr::from(echo.addr), s));
    relay.until_mux(1).await;
    let mut client = TcpStream::connect(relay.addr).await.unwrap();
    roundtrip(&mut client, b"GET /dom/ HTTP/1.1\r\n\r\n").await;

    let started = Instant::now();
    relay.handle.shutdown();
    // The agent saw GOAWAY and tries a replacement (refused: the relay no longer listens).
    timeout(WAIT, status.wait_for(|s| s.openings >= 2))
        .await
        .expect("a replacement after GOAWAY")
        .unwrap();
    roundtrip(&mut client, b"still flowing").await;
    drop(client);
    timeout(WAIT, relay.task).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    stop.cancel();
    mode.await.unwrap();
}

/// A local service that counts what it reads and answers the count (8 bytes, big-endian).
async fn counting_sink() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        let _ = s.write_all(&total.to_be_bytes()).await;
    });
    (addr, task)
}

/// 5.5: one stream moves 1 GiB without stalling (windows grow; nothing caps it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_moves_a_gibibyte() {
    const TOTAL: u64 = 1 << 30;
    let relay = TestRelay::start(RelayConfig::default()).await;
    let (sink, sink_task) = counting_sink().await;
    let agent = Agent::new(relay.agent_config("dom")).unwrap();
    let (stop, mode) = spawn_mode(|s| tunnel::run_server(agent, LocalAddr::from(sink), s));
    relay.until_mux(1).await;
    let mut client = TcpStream::connect(relay.addr).await.unwrap();
    let chunk = vec![0x5a; 1 << 20];
    let head = b"POST /dom/upload HTTP/1.1\r\n\r\n";
    client.write_all(head).await.unwrap();
    let started = Instant::now();
    for _ in 0..TOTAL / chunk.len() as u64 {
        timeout(WAIT, client.write_all(&chunk))
            .await
            .expect("no stall")
            .unwrap();
    }
    client.shutdown().await.unwrap();
    let mut count = [0; 8];
    timeout(WAIT, client.read_exact(&mut count))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u64::from_be_bytes(count), TOTAL + head.len() as u64);
    eprintln!("1 GiB over one mux stream in {:?}", started.elapsed());
    sink_task.await.unwrap();
    stop.cancel();
    mode.await.unwrap();
    relay.stop().await;
}

/// 1,000 clients at once on one mux connection, each echoed through its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_on_one_connection() {
    const N: usize = 1000;
    let relay = TestRelay::start(RelayConfig::default()).await;
    let echo = Echo::start().await;
    let mut config = relay.agent_config("dom");
    config.mux_max_streams = 1024;
    config.max_sockets = 2048;
    let agent = Agent::new(config).unwrap();
    let mut status = agent.status();
    let (stop, mode) = spawn_mode(|s| tunnel::run_server(agent, LocalAddr::from(echo.addr), s));
    relay.until_mux(1).await;
    let mut clients = tokio::task::JoinSet::new();
    let all_open = Arc::new(tokio::sync::Barrier::new(N + 1));
    let counted = Arc::new(tokio::sync::Barrier::new(N + 1));
    for i in 0..N {
        let (addr, all_open, counted) = (relay.addr, all_open.clone(), counted.clone());
        clients.spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            roundtrip(&mut c, format!("GET /dom/{i} HTTP/1.1\r\n\r\n").as_bytes()).await;
            // Every stream stays open until all have been echoed once and counted.
            all_open.wait().await;
            counted.wait().await;
            roundtrip(&mut c, b"bye").await;
        });
    }
    timeout(Duration::from_secs(60), all_open.wait())
        .await
        .expect("all streams open at once");
    assert_eq!(status.borrow_and_update().mux, 1);
    // The pool's status is published after each hand-over, so it may trail the echoes a little.
    timeout(WAIT, status.wait_for(|s| s.relayed >= N))
        .await
        .expect("every stream counted as relayed")
        .unwrap();
    counted.wait().await;
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    stop.cancel();
    mode.await.unwrap();
    relay.stop().await;
}

/// `auto` against a relay that answers the mux probe with `answer` (nothing: it closes):
/// the next connection carries the PTTH handshake and the hour of PTTH is counted.
async fn falls_back_to_ptth_after(answer: Option<&[u8]>) {
    let relay = FakeRelay::bind().await;
    let mut config = relay.config("dom");
    config.transport = Transport::Auto;
    let (mut agent, _conns) = Running::collecting(config);
    let (mut first, head) = relay.accept_head().await;
    let head = String::from_utf8(head).unwrap();
    assert!(head.contains("Upgrade: limmat-mux/1\r\n"), "{head}");
    if let Some(answer) = answer {
        first.send(answer).await;
    }
    drop(first);
    let (_second, head) = relay.accept_head().await;
    assert_eq!(head, relay.handshake("dom", None));
    let status = agent.until(|s| s.mux_refused == 1).await;
    assert_eq!(status.mux, 0);
    agent.stop().await;
}

/// 5.8: `auto` sends the mux handshake; anything but the mux `101` (here a `501`, as an
/// older Limmat relay answers) makes it use PTTH/1.0.
#[tokio::test]
async fn auto_falls_back_to_ptth() {
    falls_back_to_ptth_after(Some(b"HTTP/1.1 501 \r\n\r\n")).await;
}

/// Issue 12 item 4: a Yaler relay takes the mux probe for a client and pairs it with the
/// device waiting there, which closes: the probe ends without a status line. 5.8: EOF is an
/// answer other than the mux `101` too, so the agent uses PTTH instead of probing forever.
#[tokio::test]
async fn a_yaler_relay_that_pairs_the_probe_means_ptth() {
    falls_back_to_ptth_after(None).await;
}

/// Issue 12 item 3: a `401` to the mux probe is about the key, not the protocol: no hour of
/// PTTH, the next attempt probes mux again.
#[tokio::test]
async fn a_401_to_the_mux_probe_keeps_probing_mux() {
    let relay = FakeRelay::bind().await;
    let mut config = relay.config("dom");
    config.transport = Transport::Auto;
    config.secret_key = Some("wrong-key".into());
    let (mut agent, _conns) = Running::collecting(config);
    let (mut first, head) = relay.accept_head().await;
    assert!(String::from_utf8_lossy(&head).contains("Upgrade: limmat-mux/1\r\n"));
    first.send(b"HTTP/1.1 401 \r\n\r\n").await;
    drop(first);
    let (_second, head) = relay.accept_head().await;
    let head = String::from_utf8(head).unwrap();
    assert!(head.contains("Upgrade: limmat-mux/1\r\n"), "{head}");
    let status = agent.until(|s| s.failures >= 1).await;
    assert_eq!(status.mux_refused, 0);
    agent.stop().await;
}

/// Against the real relay, `auto` gets mux.
#[tokio::test]
async fn auto_uses_mux_with_a_limmat_relay() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let mut config = relay.agent_config("dom");
    config.transport = Transport::Auto;
    let (mut agent, _conns) = Running::collecting(config);
    relay.until_mux(1).await;
    agent.until(|s| s.mux == 1).await;
    agent.stop().await;
    relay.until_mux(0).await;
    relay.stop().await;
}

/// 4.1 over mux: the mux handshake needs the device key like a PTTH one; a wrong key is
/// refused (`401`), and `--transport mux` does not fall back.
#[tokio::test]
async fn device_keys_apply_to_mux() {
    use limmat_relay::auth::{AuthMode, DeviceKey, KeySources, sha256_hex};
    const KEY: &str = "mux-device-key-for-dom";
    let relay = TestRelay::start(RelayConfig {
        auth: Some(AuthMode::Keys),
        keys: KeySources {
            device_keys: vec![DeviceKey {
                domain: "dom".into(),
                sha256: sha256_hex(KEY.as_bytes()),
            }],
            ..KeySources::default()
        },
        ..RelayConfig::default()
    })
    .await;
    let mut wrong = relay.agent_config("dom");
    wrong.secret_key = Some("not-the-key".into());
    let (mut refused, _c) = Running::collecting(wrong);
    let status = refused.until(|s| s.failures >= 1).await;
    assert_eq!((status.mux, status.mux_refused), (0, 0));
    refused.stop().await;

    let mut right = relay.agent_config("dom");
    right.secret_key = Some(KEY.into());
    let (agent, mut conns) = Running::collecting(right);
    relay.until_mux(1).await;
    let (mut client, mut conn) = open_stream(&relay, &mut conns).await;
    conn.write_all(b"HTTP/1.1 204 \r\n\r\n").await.unwrap();
    let mut answer = [0; 17];
    timeout(WAIT, client.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    drop((client, conn));
    agent.stop().await;
    relay.stop().await;
}

/// The admin API shows a mux device connection as `protocol: mux` with its open streams, and
/// the domain's `mux_streams`; `/metrics` has the mux gauges.
#[tokio::test]
async fn the_admin_api_shows_mux_connections_and_streams() {
    let relay = TestRelay::start(RelayConfig {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        ..RelayConfig::default()
    })
    .await;
    let (agent, mut conns) = Running::collecting(relay.agent_config("dom"));
    relay.until_mux(1).await;
    let (client, conn) = open_stream(&relay, &mut conns).await;
    let domains = relay.admin_get("/api/domains").await;
    assert!(domains.contains("\"protocol\":\"mux\""), "{domains}");
    assert!(domains.contains("\"streams\":1"), "{domains}");
    assert!(domains.contains("\"mux_streams\":1"), "{domains}");
    let metrics = relay.admin_get("/metrics").await;
    assert!(metrics.contains("limmat_mux_connections 1"), "{metrics}");
    assert!(metrics.contains("limmat_mux_streams 1"), "{metrics}");
    drop((client, conn));
    agent.stop().await;
    relay.stop().await;
}
