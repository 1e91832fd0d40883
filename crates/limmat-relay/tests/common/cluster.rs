//! Clustered relay nodes for tests: whole in-process relays on 127.0.0.2–127.0.0.6 that gossip
//! with each other, with fast gossip settings, and waits on their live sets.

use super::PATIENCE;
use limmat_relay::cluster::ClusterConfig;
use limmat_relay::{Listen, Relay, RelayConfig, RelayHandle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const SECRET: &str = "relay-cluster-test-secret-0123456789";

/// One clustered relay node.
pub struct Node {
    pub id: String,
    /// The first listener.
    pub addr: SocketAddr,
    /// Every listener, in the order configured.
    pub addrs: Vec<SocketAddr>,
    pub internal: SocketAddr,
    pub gossip: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub handle: RelayHandle,
    pub task: JoinHandle<()>,
}

fn secret_file() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // One file per node, removed once the relay has read it (at bind).
    let path = std::env::temp_dir().join(format!(
        "limmat-cluster-relay-{}-{n}.secret",
        std::process::id()
    ));
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

/// Starts a relay node on `ip` whose gossip seeds are `seeds` (itself when empty).
pub async fn node(
    ip: &str,
    id: &str,
    seeds: &[SocketAddr],
    tweak: impl FnOnce(&mut RelayConfig),
) -> Node {
    let gossip = UdpSocket::bind(format!("{ip}:0"))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cluster = ClusterConfig::default();
    cluster.node_id = Some(id.into());
    cluster.public_host = Some(ip.into());
    cluster.internal_listen = Some(format!("{ip}:0").parse().unwrap());
    cluster.gossip_listen = Some(gossip);
    cluster.seeds = if seeds.is_empty() {
        vec![gossip.to_string()]
    } else {
        seeds.iter().map(ToString::to_string).collect()
    };
    let secret = secret_file();
    cluster.cluster_secret_file = Some(secret.clone());
    cluster.gossip_interval = Duration::from_millis(100);
    cluster.join_delay = Duration::from_millis(200);
    cluster.rebalance_spread = Duration::from_millis(300);
    cluster.drain_timeout = Duration::from_secs(5);
    let mut config = RelayConfig {
        listen: vec![Listen::plain(format!("{ip}:0").parse().unwrap())],
        hostnames: vec!["relay.test".into()],
        client_wait: Duration::from_secs(3),
        cluster,
        ..RelayConfig::default()
    };
    tweak(&mut config);
    let relay = Relay::bind(config).await;
    let _ = std::fs::remove_file(&secret);
    let relay = relay.expect("relay binds");
    let addrs = relay.local_addrs();
    let addr = addrs[0];
    let internal = relay.internal_addr().expect("clustered");
    let gossip = relay.gossip_addr().expect("clustered");
    let admin = relay.admin_addr();
    let handle = relay.handle();
    let task = tokio::spawn(relay.run());
    Node {
        id: id.into(),
        addr,
        addrs,
        internal,
        gossip,
        admin,
        handle,
        task,
    }
}

impl Node {
    pub async fn send(&self, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }

    pub async fn waiting_devices(&self, n: usize) {
        super::until(self.handle.stats().waiting_devices(), n, "waiting devices").await;
    }

    pub async fn stop(self) {
        self.handle.shutdown();
        timeout(PATIENCE, self.task)
            .await
            .expect("relay stops in time")
            .expect("relay task");
    }
}

/// Waits until every node's live set is exactly `ids`.
pub async fn until_live(nodes: &[&Node], ids: &[&str]) {
    for n in nodes {
        let mut rx = n.handle.live_members();
        let ok = timeout(
            PATIENCE,
            rx.wait_for(|s| {
                s.members()
                    .iter()
                    .map(|m| &*m.node_id)
                    .eq(ids.iter().copied())
            }),
        )
        .await;
        assert!(ok.is_ok(), "{}: live set never became {ids:?}", n.id);
    }
}

/// A domain that `owner` owns in `node`'s view.
pub fn domain_of(node: &Node, owner: &str, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|d| node.handle.owner_of(d).as_deref() == Some(owner))
        .expect("some domain is owned by every node")
}

pub async fn two_nodes(tweak: impl Fn(&mut RelayConfig) + Copy) -> (Node, Node) {
    let a = node("127.0.0.2", "node-a", &[], tweak).await;
    let b = node("127.0.0.3", "node-b", &[a.gossip], tweak).await;
    until_live(&[&a, &b], &["node-a", "node-b"]).await;
    (a, b)
}
