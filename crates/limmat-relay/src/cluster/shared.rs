//! What membership learns and the endpoints show: the members view, the seeds' last lookups,
//! the gossip rejections and probe results. Its own file so that the gossip watcher, the seed
//! resolver and the forwarding client all write here without importing each other.

use super::live::MemberView;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// What the members endpoint and the admin API show, updated every gossip round.
#[derive(Default)]
pub struct Shared {
    pub view: Mutex<Vec<MemberView>>,
    pub seeds: Mutex<Vec<SeedStatus>>,
    /// Gossip datagrams dropped for a bad tag.
    pub gossip_rejected: Arc<AtomicU64>,
    /// Results of probing members whose internal listener failed a forward: node id → reachable.
    pub probes: Mutex<HashMap<Arc<str>, bool>>,
}

/// One seed as last resolved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeedStatus {
    pub seed: String,
    pub addrs: Vec<SocketAddr>,
    pub error: Option<String>,
    pub lookups: u64,
    pub failures: u64,
}
