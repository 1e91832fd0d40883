//! Cluster membership, the internal listener and forwarding over real sockets on
//! 127.0.0.2–127.0.0.6 (spec section 7, checklist 85–92). Tests wait on the live-set watch or
//! on the members view, never on a fixed sleep, and every node stops when its test ends.

use limmat_relay::cluster::{
    Cluster, ClusterConfig, ForwardError, ForwardSink, Inbound, Member, State,
};
use limmat_wire::cluster::{Forward, ForwardLeg};
use limmat_wire::mux::Route;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(15);
const SECRET: &str = "correct-horse-battery-staple-0123";

fn secret_file(name: &str, secret: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("limmat-cluster-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Tests run in parallel and reuse node names: each file gets a name of its own, so one
    // test never reads a file that another is rewriting.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{name}-{n}"));
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

fn config(ip: &str, id: &str, seeds: &[SocketAddr], secret: &str) -> ClusterConfig {
    let mut c = ClusterConfig::default();
    c.node_id = Some(id.into());
    c.internal_listen = Some(format!("{ip}:0").parse().unwrap());
    c.seeds = seeds.iter().map(ToString::to_string).collect();
    c.cluster_secret_file = Some(secret_file(&format!("{id}-{ip}"), secret));
    c
}

fn local(ip: &str) -> Member {
    Member {
        node_id: "set-by-start".into(),
        public_host: ip.into(),
        public_http_port: Some(8080),
        public_https_port: Some(8443),
        internal: "0.0.0.0:0".parse().unwrap(),
        draining: false,
    }
}

type Received = (Forward, TcpStream, Vec<u8>);

/// Hands every forwarded client to the test.
struct Sink(mpsc::UnboundedSender<Received>);

impl ForwardSink for Sink {
    fn forwarded(&self, forward: Forward, stream: Inbound, early: Vec<u8>) {
        // These nodes have no internal TLS: every forwarded stream is plain TCP.
        if let Some(stream) = stream.into_tcp() {
            let _ = self.0.send((forward, stream, early));
        }
    }
}

async fn node(
    ip: &str,
    id: &str,
    seeds: &[SocketAddr],
) -> (Cluster, mpsc::UnboundedReceiver<Received>) {
    node_with(config(ip, id, seeds, SECRET)).await
}

async fn node_with(config: ClusterConfig) -> (Cluster, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ip = config.internal_listen.unwrap().ip().to_string();
    let cluster = Cluster::start(&config, local(&ip), Arc::new(Sink(tx)))
        .await
        .expect("node starts");
    (cluster, rx)
}

/// A node started with no seeds of its own is given its own address, like a headless Service.
async fn first_node(ip: &str, id: &str) -> (Cluster, mpsc::UnboundedReceiver<Received>) {
    first_node_with(ip, id, SECRET).await
}

async fn first_node_with(
    ip: &str,
    id: &str,
    secret: &str,
) -> (Cluster, mpsc::UnboundedReceiver<Received>) {
    let port = UdpSocket::bind(format!("{ip}:0"))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = config(ip, id, &[port], secret);
    c.gossip_listen = Some(port);
    node_with(c).await
}

fn ids(c: &Cluster) -> Vec<String> {
    c.live()
        .borrow()
        .members()
        .iter()
        .map(|m| m.node_id.to_string())
        .collect()
}

async fn until_live(c: &Cluster, want: &[&str]) {
    let mut rx = c.live();
    let ok = timeout(
        PATIENCE,
        rx.wait_for(|s| {
            s.members()
                .iter()
                .map(|m| &*m.node_id)
                .eq(want.iter().copied())
        }),
    )
    .await;
    assert!(ok.is_ok(), "live set {:?}, want {want:?}", ids(c));
}

/// Polls a condition on state the test cannot be notified of (counters, the members view).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checklist 90 and 85: three nodes form a cluster and agree on every owner; a killed node
/// (its socket gone, as after SIGKILL) leaves every live set within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_and_a_killed_node_leaves() {
    let (a, _) = first_node("127.0.0.2", "node-a").await;
    let seed = [a.gossip_addr().unwrap()];
    let (b, _) = node("127.0.0.3", "node-b", &seed).await;
    let (c, _) = node("127.0.0.4", "node-c", &seed).await;
    for n in [&a, &b, &c] {
        until_live(n, &["node-a", "node-b", "node-c"]).await;
    }
    // The spec's vectors, through the live set.
    for n in [&a, &b, &c] {
        let live = n.live().borrow().clone();
        assert_eq!(&*live.owner("dom").unwrap().node_id, "node-c");
        assert_eq!(&*live.owner("gsiot-ffmq-ttd5").unwrap().node_id, "node-a");
        assert_eq!(live.get("node-b").unwrap().public_host, "127.0.0.3");
    }
    let killed = Instant::now();
    drop(c);
    until_live(&a, &["node-a", "node-b"]).await;
    until_live(&b, &["node-a", "node-b"]).await;
    let gone = killed.elapsed();
    eprintln!("failure detection: {gone:?}");
    assert!(gone < Duration::from_millis(2500), "{gone:?}");
    assert_eq!(&*b.live().borrow().owner("dom").unwrap().node_id, "node-b");
    // The members view says what happened.
    let view = a.members_json();
    let c_row = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == "node-c")
        .unwrap();
    assert_eq!(c_row["state"], "dead");
}

/// Checklist 90: forged datagrams and a node with another secret are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_without_a_valid_tag_is_dropped_and_counted() {
    let (a, _) = first_node("127.0.0.2", "node-a").await;
    let gossip = a.gossip_addr().unwrap();
    let forger = UdpSocket::bind("127.0.0.5:0").await.unwrap();
    forger
        .send_to(b"not chitchat at all", gossip)
        .await
        .unwrap();
    forger.send_to(&[0u8; 40], gossip).await.unwrap();
    forger.send_to(b"", gossip).await.unwrap();
    eventually("3 rejected datagrams", || a.gossip_rejected() >= 3).await;
    // A node with another secret is never let in, and does not let anyone in either.
    let (intruder, _) = node_with(config(
        "127.0.0.6",
        "intruder",
        &[gossip],
        "another-secret-0123456789",
    ))
    .await;
    eventually("the intruder's gossip rejected", || {
        a.gossip_rejected() >= 4
    })
    .await;
    assert_eq!(ids(&a), ["node-a"]);
    assert_eq!(ids(&intruder), ["intruder"]);
    assert!(a.members_json()["gossip_rejected"].as_u64().unwrap() >= 4);
}

/// A node_id collision: the newcomer logs an error and stays out of every live set, its own
/// included, until the first node is gone; then it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_collision_keeps_the_newcomer_out() {
    let (first, _) = first_node("127.0.0.2", "node-x").await;
    let seed = [first.gossip_addr().unwrap()];
    let (other, _) = node("127.0.0.3", "node-y", &seed).await;
    until_live(&first, &["node-x", "node-y"]).await;
    let (newcomer, _) = node("127.0.0.4", "node-x", &seed).await;
    let self_state = |c: &Cluster| {
        let v = c.members_json();
        let rows = v["members"].as_array().cloned().unwrap_or_default();
        rows.into_iter()
            .find(|m| m["self"] == true)
            .map_or(serde_json::Value::Null, |m| m["state"].clone())
    };
    eventually("the newcomer sees the collision", || {
        self_state(&newcomer) == "conflict"
    })
    .await;
    let first_internal = first.internal_addr().unwrap();
    for n in [&first, &other, &newcomer] {
        until_live(n, &["node-x", "node-y"]).await;
        assert_eq!(
            n.live().borrow().get("node-x").unwrap().internal,
            first_internal
        );
    }
    assert!(!newcomer.live().borrow().counts_self());
    assert!(first.live().borrow().counts_self());
    assert_eq!(self_state(&first), "live");
    assert_eq!(
        State::Conflict,
        serde_json::from_value::<String>(self_state(&newcomer))
            .map(|_| State::Conflict)
            .unwrap()
    );
    // Health says the newcomer does not serve.
    let health = get(newcomer.internal_addr().unwrap(), "health", Some(SECRET)).await;
    assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
    drop(first);
    eventually("the newcomer takes over the id", || {
        newcomer.live().borrow().counts_self()
            && other
                .live()
                .borrow()
                .get("node-x")
                .is_some_and(|m| Some(m.internal) == newcomer.internal_addr())
    })
    .await;
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A seed name that does not resolve is logged once and retried every `seed_interval`.
#[tokio::test]
async fn an_unresolvable_seed_is_logged_and_retried() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut c = config("127.0.0.2", "node-a", &[], SECRET);
    c.seeds = vec!["no-such-relay.invalid:7946".into()];
    c.seed_interval = Duration::from_millis(100);
    let (a, _) = node_with(c).await;
    let failures = |a: &Cluster| {
        a.members_json()["seeds"][0]["failures"]
            .as_u64()
            .unwrap_or(0)
    };
    eventually("three lookups", || failures(&a) >= 3).await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warnings = text.matches("seed does not resolve").count();
    assert_eq!(warnings, 1, "{text}");
    assert!(text.contains("no-such-relay.invalid:7946"));
    assert_eq!(ids(&a), ["node-a"]);
}

/// Checklist 90: a node found through a DNS seed name (`localhost`) becomes a member within
/// `seed_interval` + `join_delay`, and not before `join_delay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_seed_finds_the_cluster() {
    let (a, _) = first_node("127.0.0.1", "node-a").await;
    let port = a.gossip_addr().unwrap().port();
    let mut c = config("127.0.0.3", "node-b", &[], SECRET);
    c.seeds = vec![format!("localhost:{port}")];
    let started = Instant::now();
    let (b, _) = node_with(c).await;
    until_live(&a, &["node-a", "node-b"]).await;
    until_live(&b, &["node-a", "node-b"]).await;
    let joined = started.elapsed();
    let c = ClusterConfig::default();
    assert!(joined >= c.join_delay, "{joined:?}");
    assert!(joined < c.seed_interval + c.join_delay, "{joined:?}");
    let seeds = b.members_json()["seeds"].clone();
    assert!(
        seeds[0]["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str() == Some(&format!("127.0.0.1:{port}"))),
        "{seeds}"
    );
}

/// Standalone (no seeds): no socket at all, and the node owns everything.
#[tokio::test]
async fn standalone_opens_nothing() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let c = Cluster::start(
        &ClusterConfig::default(),
        local("127.0.0.1"),
        Arc::new(Sink(tx)),
    )
    .await
    .unwrap();
    assert!(!c.is_clustered());
    assert_eq!((c.gossip_addr(), c.internal_addr()), (None, None));
    assert!(c.live().borrow().owns("anything"));
}

async fn request(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn get(addr: SocketAddr, path: &str, secret: Option<&str>) -> String {
    let auth = secret
        .map(|s| format!("Authorization: Bearer {s}\r\n"))
        .unwrap_or_default();
    request(
        addr,
        format!("GET /limmat/cluster/1/{path} HTTP/1.1\r\n{auth}\r\n").as_bytes(),
    )
    .await
}

fn body(response: &str) -> serde_json::Value {
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

fn sample(domain: &str) -> Forward {
    Forward {
        domain: domain.into(),
        owner: "node-b".into(),
        hops: 1,
        leg: ForwardLeg::Plain,
        route: Route::Path,
        client_addr: "127.0.0.9:5555".parse().unwrap(),
        public_port: 8080,
        sni: None,
    }
}

/// Checklist 91: the internal endpoints answer 401 without the secret, and JSON with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_need_the_secret() {
    let (a, _) = first_node("127.0.0.2", "node-a").await;
    let internal = a.internal_addr().unwrap();
    for path in ["node", "health", "members"] {
        for secret in [None, Some("wrong-secret-wrong-secret")] {
            let r = get(internal, path, secret).await;
            assert!(
                r.starts_with("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"),
                "{r}"
            );
        }
    }
    let forward = sample("dom").encode(b"wrong-secret-wrong-secret").unwrap();
    assert!(
        request(internal, &forward)
            .await
            .starts_with("HTTP/1.1 401 ")
    );
    let twice = format!(
        "GET /limmat/cluster/1/node HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nAuthorization: Bearer {SECRET}\r\n\r\n"
    );
    assert!(
        request(internal, twice.as_bytes())
            .await
            .starts_with("HTTP/1.1 401 ")
    );

    let node = get(internal, "node", Some(SECRET)).await;
    assert!(node.starts_with("HTTP/1.1 200 OK\r\n"), "{node}");
    let node = body(&node);
    assert_eq!(node["node_id"], "node-a");
    assert_eq!(node["public_host"], "127.0.0.2");
    assert_eq!(
        (
            node["public_http_port"].as_u64(),
            node["public_https_port"].as_u64()
        ),
        (Some(8080), Some(8443))
    );
    assert_eq!(node["draining"], false);
    assert!(
        get(internal, "health", Some(SECRET))
            .await
            .starts_with("HTTP/1.1 200 ")
    );
    let members = body(&get(internal, "members", Some(SECRET)).await);
    assert_eq!(members["live"], serde_json::json!(["node-a"]));
    assert_eq!(members["members"][0]["state"], "live");
    // Bad requests name the problem; unknown paths are 404.
    let bad = sample("dom").encode(SECRET.as_bytes()).unwrap();
    let bad = String::from_utf8(bad)
        .unwrap()
        .replace("Limmat-Hops: 1", "Limmat-Hops: x");
    let r = request(internal, bad.as_bytes()).await;
    assert!(
        r.starts_with("HTTP/1.1 400 ") && r.ends_with("bad request: Limmat-Hops\n"),
        "{r}"
    );
    assert!(
        get(internal, "nope", Some(SECRET))
            .await
            .starts_with("HTTP/1.1 404 ")
    );

    // Draining (7.6): published, health 503, the node owns nothing.
    a.drain(std::time::Duration::from_secs(2)).await;
    eventually("draining", || !a.live().borrow().counts_self()).await;
    assert!(
        get(internal, "health", Some(SECRET))
            .await
            .starts_with("HTTP/1.1 503 ")
    );
    assert_eq!(
        body(&get(internal, "node", Some(SECRET)).await)["draining"],
        true
    );
}

/// Checklist 87 (the internal hop): the client's bytes reach the owner verbatim, with every
/// field of the forwarding head, and the owner's bytes come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_client_reaches_the_owner_verbatim() {
    let (a, _) = first_node("127.0.0.2", "node-a").await;
    let seed = [a.gossip_addr().unwrap()];
    let (b, mut at_b) = node("127.0.0.3", "node-b", &seed).await;
    until_live(&a, &["node-a", "node-b"]).await;
    let owner = a.live().borrow().get("node-b").unwrap().clone();
    let mut forward = sample("dom");
    forward.leg = ForwardLeg::TlsSni;
    forward.route = Route::Sni;
    forward.sni = Some("dom.relay.example.com".into());
    let first_bytes = b"\x16\x03\x01\x02\x00 a ClientHello, say";
    let opened = a.forward(&owner, &forward, first_bytes);
    let serve = async {
        let (got, mut stream, early) = timeout(PATIENCE, at_b.recv()).await.unwrap().unwrap();
        assert_eq!(got, forward);
        assert_eq!(early, first_bytes);
        stream.write_all(b"device bytes").await.unwrap();
        let mut more = [0u8; 4];
        stream.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"more");
        stream.shutdown().await.unwrap();
    };
    let client = async {
        let (mut s, mut leftover) = opened.await.expect("forward opens");
        s.write_all(b"more").await.unwrap();
        s.read_to_end(&mut leftover).await.unwrap();
        assert_eq!(leftover, b"device bytes");
    };
    tokio::join!(serve, client);
    drop(b);
}

/// Faults on the internal hop (7.5): a member whose internal listener is down, one that never
/// answers, and one that answers garbage each fail within 2 s, and the member is probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_failures_answer_within_two_seconds_and_probe() {
    let (a, _) = first_node("127.0.0.2", "node-a").await;
    let closed = TcpListener::bind("127.0.0.5:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let garbage = TcpListener::bind("127.0.0.6:0").await.unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = garbage.accept().await {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
    });
    let member = |id: &str, internal| Member {
        node_id: id.into(),
        internal,
        ..local("127.0.0.5")
    };
    let f = sample("dom");
    let start = Instant::now();
    let e = a
        .forward(&member("down", closed), &f, b"")
        .await
        .unwrap_err();
    assert!(matches!(e, ForwardError::Io(_)), "{e}");
    let e = a
        .forward(&member("silent", silent.local_addr().unwrap()), &f, b"")
        .await
        .unwrap_err();
    assert!(matches!(e, ForwardError::Timeout), "{e}");
    assert!(start.elapsed() < Duration::from_millis(2500));
    let e = a
        .forward(&member("garbage", garbage_addr), &f, b"")
        .await
        .unwrap_err();
    assert!(matches!(e, ForwardError::Garbage), "{e}");
    // A peer with another secret refuses with 401.
    let (other, _) = first_node_with("127.0.0.4", "node-o", "another-secret-0123456789").await;
    let e = a
        .forward(&member("node-o", other.internal_addr().unwrap()), &f, b"")
        .await
        .unwrap_err();
    assert!(matches!(e, ForwardError::Refused(401)), "{e}");
    eventually("probes recorded", || {
        let v = a.members_json();
        let down: Vec<&str> = v["unreachable"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        ["down", "silent", "garbage", "node-o"]
            .iter()
            .all(|id| down.contains(id))
    })
    .await;
    drop(silent);
}
