//! Membership (spec 7.2): runs chitchat (Scuttlebutt gossip with a phi-accrual failure
//! detector) and turns what it reports into the live set, published on a
//! `tokio::sync::watch` that the rest of the relay reads without locks across awaits.
//!
//! Gossip and failure detection are chitchat's; this file only chooses its settings, tracks
//! since when each incarnation has been live (for `join_delay`) and when it was last heard
//! (for the members view), and applies the rules of [`super::live`]. A standalone node runs
//! none of this and opens no UDP socket.

use super::config::{Checked, ClusterConfig};
use super::document::{Member, key};
use super::live::{self, LiveSet, Observed, State};
use super::seeds;
pub use super::shared::Shared;
use super::transport::HmacTransport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, Heartbeat, spawn_chitchat,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// chitchat's cluster id; the HMAC tag already keeps other clusters out.
const CLUSTER_ID: &str = "limmat";

/// Phi threshold. phi = time since the last heartbeat / mean interval between heartbeats, and
/// heartbeats advance at least once per `gossip_interval`, so a silent node is declared dead
/// after at most about 5 × 250 ms plus one gossip round with the defaults: within the 2 s of
/// 7.2, while a pause of a few rounds (a busy machine) is still tolerated.
const PHI_THRESHOLD: f64 = 5.0;

/// A running membership: the live-set watch, and the gossip tasks while clustered.
pub struct Membership {
    live: watch::Receiver<Arc<LiveSet>>,
    shared: Arc<Shared>,
    gossip: Option<Gossip>,
    /// Set by [`Membership::hand_over`]: from then on this node stops counting itself.
    handed_over: Arc<AtomicBool>,
}

struct Gossip {
    handle: Arc<ChitchatHandle>,
    refresh: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.handle.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Membership {
    /// A standalone node: itself only, no socket.
    pub fn standalone(local: Member) -> Self {
        let (_tx, live) = watch::channel(Arc::new(LiveSet::standalone(local)));
        Self {
            live,
            shared: Arc::default(),
            gossip: None,
            handed_over: Arc::default(),
        }
    }

    /// Joins the cluster: binds the gossip socket and starts gossiping with the seeds.
    pub async fn start(
        local: Member,
        checked: &Checked,
        config: &ClusterConfig,
    ) -> anyhow::Result<Self> {
        let generation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let id = ChitchatId::new(checked.node_id.as_str(), generation, checked.gossip_listen);
        let literal_seeds = config
            .seeds
            .iter()
            .filter(|s| s.parse::<SocketAddr>().is_ok())
            .cloned()
            .collect();
        let chitchat_config = ChitchatConfig {
            chitchat_id: id.clone(),
            cluster_id: CLUSTER_ID.into(),
            gossip_interval: config.gossip_interval,
            listen_addr: checked.gossip_listen,
            seed_nodes: literal_seeds,
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI_THRESHOLD,
                sampling_window_size: 100,
                max_interval: config.gossip_interval * 20,
                initial_interval: config.gossip_interval,
                dead_node_grace_period: Duration::from_secs(600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let shared = Arc::new(Shared::default());
        let transport = HmacTransport::new(&checked.secret, shared.gossip_rejected.clone());
        let handle =
            Arc::new(spawn_chitchat(chitchat_config, local.to_key_values(), &transport).await?);
        let (tx, live) = watch::channel(Arc::new(LiveSet::standalone(local.clone())));
        let refresh = Arc::new(Notify::new());
        let handed_over = Arc::new(AtomicBool::new(false));
        let watcher = Watcher {
            handed_over: handed_over.clone(),
            handle: handle.clone(),
            self_id: id,
            local,
            join_delay: config.join_delay,
            seen: HashMap::new(),
            tx,
            shared: shared.clone(),
            self_state: State::Live,
        };
        let tasks = vec![
            tokio::spawn(watcher.run(config.gossip_interval, refresh.clone())),
            tokio::spawn(seeds::run(
                config.seeds.clone(),
                config.seed_interval,
                checked.gossip_listen,
                handle.clone(),
                shared.clone(),
            )),
        ];
        tracing::info!(node_id = %checked.node_id, gossip = %checked.gossip_listen, generation, "cluster: gossip started");
        Ok(Self {
            live,
            shared,
            gossip: Some(Gossip {
                handle,
                refresh,
                tasks,
                addr: checked.gossip_listen,
            }),
            handed_over,
        })
    }

    /// The live set, updated whenever it changes.
    pub fn live(&self) -> watch::Receiver<Arc<LiveSet>> {
        self.live.clone()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The gossip socket's address, `None` when standalone.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.gossip.as_ref().map(|g| g.addr)
    }

    /// Publishes `draining = true` (7.6): its peers stop counting this node within a gossip
    /// round or two. This node still counts itself, and so keeps serving the domains whose
    /// devices it holds, until [`hand_over`](Self::hand_over): were it to stop at once, a peer
    /// that has not heard yet would forward a client back here for a device that already left.
    pub async fn drain(&self) {
        if let Some(g) = &self.gossip {
            g.handle
                .with_chitchat(|c| c.self_node_state().set(key::DRAINING, "true"))
                .await;
            g.refresh.notify_one();
            tracing::info!("cluster: draining published");
        }
    }

    /// Stops counting this node itself (after [`drain`](Self::drain), once the peers have
    /// heard): from now on it owns nothing in its own view either.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
        if let Some(g) = &self.gossip {
            g.refresh.notify_one();
        }
    }

    /// Leaves the cluster: stops gossip (peers then see this node die).
    pub fn leave(&self) {
        if let Some(g) = &self.gossip {
            let _ = g.handle.initiate_shutdown();
        }
    }
}

/// Follows chitchat and publishes the live set.
struct Watcher {
    handle: Arc<ChitchatHandle>,
    self_id: ChitchatId,
    local: Member,
    join_delay: Duration,
    /// Per incarnation: live since, last heard, last heartbeat.
    seen: HashMap<ChitchatId, (Option<Instant>, Option<Instant>, Heartbeat)>,
    tx: watch::Sender<Arc<LiveSet>>,
    shared: Arc<Shared>,
    self_state: State,
    handed_over: Arc<AtomicBool>,
}

impl Watcher {
    async fn run(mut self, every: Duration, refresh: Arc<Notify>) {
        let mut changes = self.handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
                () = refresh.notified() => {}
            }
            self.refresh().await;
        }
    }

    async fn refresh(&mut self) {
        let now = Instant::now();
        let mut observed = Vec::new();
        let local_draining;
        {
            let chitchat = self.handle.chitchat();
            let c = chitchat.lock().await;
            let live: std::collections::HashSet<&ChitchatId> = c.live_nodes().collect();
            local_draining = c
                .node_state(&self.self_id)
                .and_then(|s| s.get(key::DRAINING))
                == Some("true");
            for (id, state) in c.node_states() {
                let entry =
                    self.seen
                        .entry(id.clone())
                        .or_insert((None, None, Heartbeat::default()));
                let is_live = live.contains(id);
                entry.0 = if is_live {
                    Some(entry.0.unwrap_or(now))
                } else {
                    None
                };
                if state.heartbeat() != entry.2 {
                    entry.2 = state.heartbeat();
                    entry.1 = Some(now);
                }
                let is_self = *id == self.self_id;
                let mut doc = Member::from_key_values(&id.node_id, |k| state.get(k));
                // This node stops counting itself when it hands over, not when it publishes.
                if is_self && let Ok(doc) = &mut doc {
                    doc.draining = self.handed_over.load(Ordering::Relaxed);
                }
                observed.push(Observed {
                    node_id: id.node_id.clone(),
                    generation: id.generation_id,
                    gossip: id.gossip_advertise_addr,
                    doc,
                    live_since: entry.0,
                    last_heard: entry.1,
                    is_self,
                });
            }
            let known: std::collections::HashSet<&ChitchatId> = c.node_states().keys().collect();
            self.seen.retain(|id, _| known.contains(id));
        }
        let mut local = self.local.clone();
        local.draining = local_draining;
        let (set, view) = live::evaluate(&local, &observed, now, self.join_delay);
        if let Some(me) = view.iter().find(|v| v.is_self)
            && me.state != self.self_state
        {
            if me.state == State::Conflict {
                tracing::error!(
                    node_id = %local.node_id,
                    "cluster: another live node already uses this node_id; staying out of the live set until it is gone"
                );
            } else if self.self_state == State::Conflict {
                tracing::info!(node_id = %local.node_id, "cluster: node_id collision over; joining the live set");
            }
            self.self_state = me.state;
        }
        if let Ok(mut v) = self.shared.view.lock() {
            *v = view;
        }
        self.tx.send_if_modified(|current| {
            if **current == set {
                return false;
            }
            let ids: Vec<&str> = set.members().iter().map(|m| &*m.node_id).collect();
            tracing::info!(members = ?ids, "cluster: live set changed");
            metrics::gauge!("limmat_cluster_members").set(ids.len() as f64);
            *current = Arc::new(set);
            true
        });
    }
}
