//! The gateway's listener under slow and flooding clients (`[api.limits]`): raw sockets that
//! send nothing, half a head or half a body, a keep-alive connection left idle, a handler that
//! takes too long, the connection cap (one log line, not one per connection) and a
//! 2,000-connection slowloris during which real requests keep succeeding. The whole gateway
//! runs in-process on the simulator, as `limmat gateway` runs it.

use limmat_gateway::config::GatewayConfig;
use limmat_gateway::listener::Limits;
use limmat_gateway::server::{Gateway, Options};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should happen "at once" on a shared CI machine.
const SLACK: Duration = Duration::from_secs(3);

/// Every log line of the process, for the tests that look for one.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("limmat_gateway=info")
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    _state: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(limits: Limits) -> Running {
    logs();
    let state = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::default();
    config.api.listen = Some("127.0.0.1:0".into());
    config.api.limits = limits;
    config.gateway.state_dir = state.path().to_path_buf();
    config.validate().unwrap();
    let stop = CancellationToken::new();
    let options = Options {
        config,
        prometheus: None,
    };
    let gateway = Gateway::start(options, stop.clone()).await.unwrap();
    let addr = gateway.local_addr();
    tokio::spawn(gateway.wait());
    Running {
        addr,
        stop,
        _state: state,
    }
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    f(&mut limits);
    limits
}

/// Read until the server closes (EOF or reset): what it sent, and when it closed.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + within, stream.read(&mut buf)).await {
            Err(_) => panic!("the gateway kept the connection open for {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A real request on its own connection: the status, or 0 if it failed.
async fn real_request(addr: SocketAddr, within: Duration) -> u16 {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.ok()?;
        status(&reply)
    };
    tokio::time::timeout(within, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

fn status(reply: &[u8]) -> Option<u16> {
    std::str::from_utf8(reply.get(9..12)?).ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_head_and_idle_keep_alive_connections_are_closed() {
    let gw = start(limits(|l| {
        l.idle_timeout = Duration::from_millis(500);
        l.head_timeout = Duration::from_millis(1500);
    }))
    .await;

    // Nothing at all: the idle timeout.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let (got, after) = until_closed(&mut silent, SLACK).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(after >= Duration::from_millis(400), "{after:?}");

    // Half a head, a header line every 300 ms (never silent for the idle timeout): the head
    // timeout.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    let drip = async {
        slow.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n").await?;
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(300)).await;
            slow.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_millis(1500) + SLACK, drip).await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the drip was not cut: {ended:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));

    // A finished keep-alive request, then silence: the idle timeout again.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = until_closed(&mut idle, SLACK).await;
    assert_eq!(status(&got), Some(200), "{}", String::from_utf8_lossy(&got));

    // The listener itself is fine.
    assert_eq!(real_request(gw.addr, SLACK).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_slow_bodies_get_408() {
    let gw = start(limits(|l| {
        l.body_timeout = Duration::from_millis(1000);
        l.body_min_rate = 200;
    }))
    .await;
    let head = "POST /beacon/subscriptions HTTP/1.1\r\nHost: gw\r\n\
                Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";

    // Half a body, then nothing: the body timeout.
    let mut half = TcpStream::connect(gw.addr).await.unwrap();
    half.write_all(head.as_bytes()).await.unwrap();
    half.write_all(br#"{"url": "#).await.unwrap();
    let (got, after) = until_closed(&mut half, SLACK).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(status(&got), Some(408), "{text}");
    assert!(text.contains("body-timeout"), "{text}");
    assert!(after >= Duration::from_millis(900), "{after:?}");

    // A byte every 100 ms: never silent for a second, but 10 bytes/s against 200 required.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = slow.into_split();
    let drip = tokio::spawn(async move {
        for _ in 0..1000 {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut reply = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(1) + SLACK, async {
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = read.read(&mut buf).await {
            reply.extend_from_slice(&buf[..n]);
        }
    });
    read_all.await.expect("the slow body was cut");
    drip.abort();
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(status(&reply), Some(408), "{text}");
    assert!(text.contains("slower than 200 bytes per second"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_does_not_answer_in_time_gets_503_but_streams_live_on() {
    let gw = start(limits(|l| {
        l.request_timeout = Duration::from_millis(500);
        l.idle_timeout = Duration::from_millis(500);
    }))
    .await;
    // A 10-second scan window outlasts the request timeout.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /gap/nodes?duration=10000 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = until_closed(&mut s, SLACK).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(status(&got), Some(503), "{text}");
    assert!(text.contains("request-timeout"), "{text}");

    // An SSE stream is a response already: it outlives both timeouts and keeps delivering.
    let mut sse = TcpStream::connect(gw.addr).await.unwrap();
    sse.write_all(b"GET /gap/nodes?event=1 HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut seen = 0;
    let mut buf = [0u8; 8192];
    while started.elapsed() < Duration::from_millis(1500) {
        let n = tokio::time::timeout(SLACK, sse.read(&mut buf))
            .await
            .expect("the stream stalled")
            .unwrap();
        assert!(n > 0, "the stream was closed after {:?}", started.elapsed());
        seen += String::from_utf8_lossy(&buf[..n])
            .matches("event: advertisement")
            .count();
    }
    assert!(seen > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_logs_once_and_lets_real_requests_through() {
    let gw = start(limits(|l| {
        l.max_connections = 20;
        l.idle_timeout = Duration::from_millis(1000);
    }))
    .await;
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    // 20 are served, 40 wait in the backlog; the real request waits behind them until the
    // idle timeout frees their slots, and succeeds.
    assert_eq!(
        real_request(gw.addr, Duration::from_secs(4) + SLACK).await,
        200
    );
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("reached its connection limit"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("max_connections=20"), "{}", lines[0]);
}

/// Raise this process's open-file limit to what 2,000 attack and 2,000 served sockets need.
fn raise_file_limit(need: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < need {
        assert!(
            hard >= need,
            "the hard open-file limit {hard} is below {need}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, need, hard).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_requests_succeed_during_a_2000_connection_slowloris() {
    const ATTACKERS: usize = 2000;
    raise_file_limit(5000);
    let gw = start(limits(|l| {
        l.idle_timeout = Duration::from_millis(1000);
        l.head_timeout = Duration::from_millis(3000);
    }))
    .await;
    // Each attacker sends half a head and a header line every 500 ms until the gateway cuts
    // it off; it reports how long it was held.
    let mut attack = tokio::task::JoinSet::new();
    for i in 0..ATTACKERS {
        let addr = gw.addr;
        attack.spawn(async move {
            let mut s = TcpStream::connect(addr).await.ok()?;
            let started = Instant::now();
            s.write_all(format!("GET /?{i} HTTP/1.1\r\nHost: gw\r\n").as_bytes())
                .await
                .ok()?;
            for n in 0..40 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if s.write_all(format!("X-{n}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return Some(started.elapsed());
                }
            }
            None
        });
    }
    // Meanwhile, real requests, one every 50 ms for 4 s.
    let mut ok = 0;
    let mut total = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        total += 1;
        if real_request(gw.addr, Duration::from_secs(2)).await == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ok, total, "only {ok} of {total} real requests succeeded");
    let mut cut = 0;
    while let Some(held) = attack.join_next().await {
        let held = held
            .unwrap()
            .expect("every attacker was cut off by the head timeout");
        assert!(held < Duration::from_secs(3) + SLACK * 2, "{held:?}");
        cut += 1;
    }
    assert_eq!(cut, ATTACKERS);
}
