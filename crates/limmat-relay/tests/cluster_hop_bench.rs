//! The measurement behind `bench/cluster-hop.sh` (run by hand in release: `#[ignore]`d, prints a
//! table, asserts nothing about speed): what the forwarding hop of spec 7.5 adds. Two clustered
//! relays in this process, node-a on 127.0.0.2 (the owner) and node-b on 127.0.0.3; devices wait
//! at node-a; the same load runs once against node-a directly and once through node-b.
//!
//! - keep-alive: one pipe per connection, then ROUNDS request/response round trips of 64 and
//!   256 bytes on it; p50/p99 of a round trip on one connection, and round trips per second
//!   over CONNS connections in parallel;
//! - new connection: connect, request, first byte of the answer, with a device waiting each
//!   time (the pairing and, through node-b, the forward's connect are in it).

use limmat_relay::cluster::ClusterConfig;
use limmat_relay::{Listen, Relay, RelayConfig, RelayHandle};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const REQUEST: usize = 64;
const RESPONSE: usize = 256;
/// The relay's `101` to a PTTH device.
const UPGRADE_LEN: usize = 57;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn node(
    ip: &str,
    id: &str,
    seed: Option<SocketAddr>,
) -> (SocketAddr, SocketAddr, RelayHandle) {
    let gossip = UdpSocket::bind(format!("{ip}:0"))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("limmat-hop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "hop-bench-secret-0123456789abcdef\n").unwrap();
    let mut cluster = ClusterConfig::default();
    cluster.node_id = Some(id.into());
    cluster.public_host = Some(ip.into());
    cluster.internal_listen = Some(format!("{ip}:0").parse().unwrap());
    cluster.gossip_listen = Some(gossip);
    cluster.seeds = vec![seed.unwrap_or(gossip).to_string()];
    cluster.cluster_secret_file = Some(secret);
    let config = RelayConfig {
        listen: vec![Listen::plain(format!("{ip}:0").parse().unwrap())],
        max_per_domain: 0,
        access_log: false,
        cluster,
        ..RelayConfig::default()
    };
    let relay = Relay::bind(config).await;
    // The secret is read at bind: leave nothing behind.
    let _ = std::fs::remove_dir_all(&dir);
    let relay = relay.unwrap();
    let addr = relay.local_addrs()[0];
    let handle = relay.handle();
    tokio::spawn(relay.run());
    (addr, gossip, handle)
}

/// A PTTH device's handshake at `owner`.
async fn device(owner: SocketAddr, domain: &str) -> TcpStream {
    let mut s = TcpStream::connect(owner).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("POST /{domain} HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// The device answers its first request and every fixed-size one after it, until EOF.
fn spawn_echo(mut s: TcpStream, head_len: usize) {
    tokio::spawn(async move {
        let mut first = vec![0; UPGRADE_LEN + head_len];
        if s.read_exact(&mut first).await.is_err() {
            return;
        }
        let answer = [b'r'; RESPONSE];
        if s.write_all(&answer).await.is_err() {
            return;
        }
        let mut request = [0u8; REQUEST];
        while s.read_exact(&mut request).await.is_ok() {
            if s.write_all(&answer).await.is_err() {
                return;
            }
        }
    });
}

fn head(domain: &str) -> Vec<u8> {
    format!("GET /{domain}/ HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

/// Opens one pipe to `domain` through `entry` (a device waits at `owner`).
async fn pipe(
    entry: SocketAddr,
    owner: SocketAddr,
    domain: &str,
    waiting: &RelayHandle,
) -> TcpStream {
    let head = head(domain);
    let mut rx = waiting.stats().waiting_devices();
    let before = *rx.borrow();
    let d = device(owner, domain).await;
    rx.wait_for(|&n| n > before).await.unwrap();
    spawn_echo(d, head.len());
    let mut c = TcpStream::connect(entry).await.unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(&head).await.unwrap();
    let mut answer = [0u8; RESPONSE];
    c.read_exact(&mut answer).await.unwrap();
    c
}

async fn round_trips(c: &mut TcpStream, n: usize, times: &mut Vec<Duration>) {
    let request = [b'q'; REQUEST];
    let mut answer = [0u8; RESPONSE];
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&request).await.unwrap();
        c.read_exact(&mut answer).await.unwrap();
        times.push(t.elapsed());
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Result {
    p50: Duration,
    p99: Duration,
    rps: f64,
    conn_p50: Duration,
    conn_p99: Duration,
}

async fn measure(entry: SocketAddr, owner: SocketAddr, handle: &RelayHandle, tag: &str) -> Result {
    let rounds = env("ROUNDS", 20_000);
    let conns = env("CONNS", 8);
    let news = env("NEW_CONNS", 1000);
    // Latency on one connection.
    let mut c = pipe(entry, owner, &format!("{tag}lat"), handle).await;
    let mut warm = Vec::new();
    round_trips(&mut c, rounds / 10, &mut warm).await;
    let mut times = Vec::with_capacity(rounds);
    round_trips(&mut c, rounds, &mut times).await;
    drop(c);
    times.sort();
    // Throughput over several connections.
    let mut pipes = Vec::new();
    for i in 0..conns {
        pipes.push(pipe(entry, owner, &format!("{tag}rps{i}"), handle).await);
    }
    let per = rounds / conns.max(1);
    let started = Instant::now();
    let tasks: Vec<_> = pipes
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut t = Vec::with_capacity(per);
                round_trips(&mut c, per, &mut t).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rps = (per * conns) as f64 / started.elapsed().as_secs_f64();
    // New connections: connect, request, first answer.
    let domain = format!("{tag}new");
    let h = head(&domain);
    let mut conn_times = Vec::with_capacity(news);
    for _ in 0..news {
        let mut rx = handle.stats().waiting_devices();
        let before = *rx.borrow();
        let d = device(owner, &domain).await;
        rx.wait_for(|&n| n > before).await.unwrap();
        spawn_echo(d, h.len());
        let t = Instant::now();
        let mut c = TcpStream::connect(entry).await.unwrap();
        c.set_nodelay(true).unwrap();
        c.write_all(&h).await.unwrap();
        let mut answer = [0u8; RESPONSE];
        c.read_exact(&mut answer).await.unwrap();
        conn_times.push(t.elapsed());
    }
    conn_times.sort();
    Result {
        p50: pct(&times, 0.5),
        p99: pct(&times, 0.99),
        rps,
        conn_p50: pct(&conn_times, 0.5),
        conn_p99: pct(&conn_times, 0.99),
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/cluster-hop.sh"]
async fn bench_forwarding_hop() {
    let (a, a_gossip, ha) = node("127.0.0.2", "node-a", None).await;
    let (b, _, hb) = node("127.0.0.3", "node-b", Some(a_gossip)).await;
    for h in [&ha, &hb] {
        let mut rx = h.live_members();
        rx.wait_for(|s| s.members().len() == 2).await.unwrap();
    }
    // Every domain used here is node-a's.
    let tag = (0..10_000)
        .map(|i| format!("h{i}x"))
        .find(|t| {
            ["lat", "new"]
                .iter()
                .map(|s| format!("{t}{s}"))
                .chain((0..env("CONNS", 8)).map(|i| format!("{t}rps{i}")))
                .all(|d| ha.owner_of(&d).as_deref() == Some("node-a"))
        })
        .expect("a tag whose domains node-a owns");
    let direct = measure(a, a, &ha, &tag).await;
    let hop = measure(b, a, &ha, &tag).await;
    let added = |h: Duration, d: Duration| {
        let diff = h.as_secs_f64() - d.as_secs_f64();
        format!("{:+.0} µs", diff * 1e6)
    };
    println!("| measurement | owner directly | through node-b | added / ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| keep-alive round trip p50 | {} | {} | {} | ≤ +300 µs |",
        us(direct.p50),
        us(hop.p50),
        added(hop.p50, direct.p50)
    );
    println!(
        "| keep-alive round trip p99 | {} | {} | {} | ≤ +1000 µs |",
        us(direct.p99),
        us(hop.p99),
        added(hop.p99, direct.p99)
    );
    println!(
        "| keep-alive req/s ({} conns) | {:.0} | {:.0} | {:.0} % | ≥ 80 % |",
        env("CONNS", 8),
        direct.rps,
        hop.rps,
        hop.rps / direct.rps * 100.0
    );
    println!(
        "| new connection to first byte p50 | {} | {} | {} | – |",
        us(direct.conn_p50),
        us(hop.conn_p50),
        added(hop.conn_p50, direct.conn_p50)
    );
    println!(
        "| new connection to first byte p99 | {} | {} | {} | – |",
        us(direct.conn_p99),
        us(hop.conn_p99),
        added(hop.conn_p99, direct.conn_p99)
    );
    ha.shutdown();
    hb.shutdown();
}
