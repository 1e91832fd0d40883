//! Measurements behind `bench/cluster.sh` (run by hand: these tests are `#[ignore]`d and print
//! a table; they assert nothing about speed). Real chitchat nodes on 127.0.0.2–127.0.0.6 with
//! the default settings (gossip every 250 ms, join_delay 1 s).

use limmat_relay::cluster::{Cluster, ClusterConfig, ForwardSink, Inbound, Member, owner};
use limmat_wire::cluster::Forward;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

struct Nothing;
impl ForwardSink for Nothing {
    fn forwarded(&self, _: Forward, _: Inbound, _: Vec<u8>) {}
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start(ip: &str, id: &str, seed: SocketAddr, gossip: Option<SocketAddr>) -> Cluster {
    let dir = std::env::temp_dir().join(format!("limmat-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "bench-secret-0123456789abcdef\n").unwrap();
    let mut c = ClusterConfig::default();
    c.node_id = Some(id.into());
    c.internal_listen = Some(format!("{ip}:0").parse().unwrap());
    c.gossip_listen = gossip;
    c.seeds = vec![seed.to_string()];
    c.cluster_secret_file = Some(secret);
    let local = Member {
        node_id: id.into(),
        public_host: ip.into(),
        public_http_port: Some(80),
        public_https_port: None,
        internal: "0.0.0.0:0".parse().unwrap(),
        draining: false,
    };
    Cluster::start(&c, local, Arc::new(Nothing)).await.unwrap()
}

async fn until(c: &Cluster, n: usize) {
    let mut rx = c.live();
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|s| s.members().len() == n),
    )
    .await
    .expect("live set size")
    .expect("membership runs");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// SIGKILL-equivalent (the node's sockets vanish) → gone from every survivor's live set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/cluster.sh"]
async fn bench_failure_detection() {
    let rounds = env("ROUNDS", 10);
    let seed = UdpSocket::bind("127.0.0.2:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let a = start("127.0.0.2", "node-a", seed, Some(seed)).await;
    let b = start("127.0.0.3", "node-b", seed, None).await;
    let mut detections = Vec::new();
    for _ in 0..rounds {
        let c = start("127.0.0.4", "node-c", seed, None).await;
        for n in [&a, &b, &c] {
            until(n, 3).await;
        }
        // Let the failure detector learn the heartbeat interval, as in a running cluster.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let killed = Instant::now();
        drop(c);
        until(&a, 2).await;
        until(&b, 2).await;
        detections.push(killed.elapsed());
    }
    detections.sort();
    println!(
        "| failure detection (SIGKILL → gone from every live set), {rounds} rounds | min {:.2} s | median {:.2} s | max {:.2} s | goal ≤ 2 s |",
        detections[0].as_secs_f64(),
        percentile(&detections, 0.5).as_secs_f64(),
        detections[rounds - 1].as_secs_f64()
    );
}

/// Domains that move when a 4th node joins, and when a node dies.
#[tokio::test]
#[ignore = "benchmark: run by bench/cluster.sh"]
async fn bench_domains_moved() {
    let domains = env("DOMAINS", 100_000);
    let three = ["node-a", "node-b", "node-c"];
    let four = ["node-a", "node-b", "node-c", "node-d"];
    let (mut joined, mut died, mut died_foreign) = (0, 0, 0);
    for i in 0..domains {
        let d = format!("dev-{i:06}");
        let before = three[owner::owner(three, &d).unwrap()];
        if before != four[owner::owner(four, &d).unwrap()] {
            joined += 1;
        }
        let after_death = ["node-a", "node-b"][owner::owner(["node-a", "node-b"], &d).unwrap()];
        if before != after_death {
            died += 1;
            if before != "node-c" {
                died_foreign += 1;
            }
        }
    }
    let pct = |n: usize| 100.0 * n as f64 / domains as f64;
    println!(
        "| domains moved when a 4th node joins ({domains} domains) | {:.2} % | goal ≤ 27 % |",
        pct(joined)
    );
    println!(
        "| domains moved when node-c dies | {:.2} % (all node-c's; others moved: {died_foreign}) | goal: only its own |",
        pct(died)
    );
}
