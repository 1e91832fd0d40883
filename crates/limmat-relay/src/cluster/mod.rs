//! Clustering (spec section 7): several relay nodes serve as one relay.
//!
//! This module sits on the relay's lowest floor: it depends on nothing above it, and the
//! relay's rendezvous reads it. Each file is one concern:
//!
//! - [`config`]: the `[cluster]` settings, defined once with serde.
//! - [`owner`]: rendezvous hashing (7.3), pure, with the normative vectors.
//! - [`document`]: what a node publishes about itself by gossip.
//! - [`live`]: the rules that turn gossip into the live set (join delay, draining, restarts,
//!   `node_id` collisions), pure.
//! - [`transport`]: chitchat over UDP with an HMAC-SHA256 tag on every datagram.
//! - [`membership`]: runs chitchat and publishes the live set on a watch; `seeds`: DNS seeds;
//!   [`shared`]: what both report, read by the endpoints.
//! - [`internal`]: the internal listener; [`forward`]: its client side (7.5); [`tls`]: TLS on
//!   both (`internal_tls`).
//!
//! Gossip and failure detection are chitchat's (Scuttlebutt with a phi-accrual detector);
//! nothing here implements either. A standalone node (no seeds) opens no socket at all.

pub mod config;
pub mod document;
pub mod forward;
pub mod internal;
pub mod live;
pub mod membership;
pub mod owner;
mod seeds;
pub mod shared;
pub mod tls;
pub mod transport;

pub use config::{ClusterConfig, ClusterConfigError};
pub use document::Member;
pub use forward::ForwardError;
pub use internal::{ForwardSink, Inbound};
pub use live::{LiveSet, MemberView, State};
pub use membership::Membership;
pub use shared::SeedStatus;
pub use tls::{InternalTls, InternalTlsError, Outbound};

use limmat_wire::cluster::Forward;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a draining node asks its peers whether they have seen it draining.
const PEER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// A node's part in a cluster: membership, the internal listener and forwarding.
pub struct Cluster {
    membership: Membership,
    secret: Arc<[u8]>,
    internal: Option<(SocketAddr, CancellationToken, JoinHandle<()>)>,
    context: Option<Arc<internal::Context>>,
    tls: Option<InternalTls>,
}

impl Cluster {
    /// A standalone node: owns every domain, opens nothing.
    pub fn standalone(local: Member) -> Self {
        Self {
            membership: Membership::standalone(local),
            secret: Arc::from(&[][..]),
            internal: None,
            context: None,
            tls: None,
        }
    }

    /// Starts the node's cluster part, or a standalone one without seeds. `local` gives the
    /// public host and ports; its `internal` address is taken from the bound listener. A port
    /// of 0 in `internal_listen` or `gossip_listen` picks a free one.
    pub async fn start(
        config: &ClusterConfig,
        local: Member,
        sink: Arc<dyn ForwardSink>,
    ) -> anyhow::Result<Self> {
        Self::start_with_tls(config, local, sink, None).await
    }

    /// [`start`](Self::start) with the internal hop's TLS, which `internal_tls` requires.
    pub async fn start_with_tls(
        config: &ClusterConfig,
        mut local: Member,
        sink: Arc<dyn ForwardSink>,
        tls: Option<InternalTls>,
    ) -> anyhow::Result<Self> {
        if !config.is_clustered() {
            return Ok(Self::standalone(local));
        }
        let mut checked = config.check()?;
        if config.internal_tls && tls.is_none() {
            anyhow::bail!("cluster: internal_tls needs the relay's certificate and key");
        }
        let tls = tls.filter(|_| config.internal_tls);
        let listener = TcpListener::bind(checked.internal_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot bind the internal listener {}: {e}",
                    checked.internal_listen
                )
            })?;
        let internal_addr = listener.local_addr()?;
        if checked.gossip_listen.port() == 0 {
            checked.gossip_listen = UdpSocket::bind(checked.gossip_listen)?.local_addr()?;
        }
        local.node_id = checked.node_id.as_str().into();
        local.internal = internal_addr;
        local.draining = false;
        let membership = Membership::start(local, &checked, config).await?;
        let context = Arc::new(internal::Context::of(&membership, &checked.secret));
        let stop = CancellationToken::new();
        let task = tokio::spawn(internal::serve(
            listener,
            context.clone(),
            sink,
            stop.clone(),
            tls.as_ref().map(|t| t.acceptor.clone()),
        ));
        tracing::info!(internal = %internal_addr, tls = tls.is_some(), "cluster: internal listener started");
        Ok(Self {
            membership,
            secret: checked.secret.into(),
            internal: Some((internal_addr, stop, task)),
            context: Some(context),
            tls,
        })
    }

    /// The live set; `borrow()` it and clone the `Arc`, never hold it across an await.
    pub fn live(&self) -> watch::Receiver<Arc<LiveSet>> {
        self.membership.live()
    }

    pub fn is_clustered(&self) -> bool {
        self.internal.is_some()
    }

    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().map(|i| i.0)
    }

    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.membership.gossip_addr()
    }

    /// Gossip datagrams dropped for a bad tag.
    pub fn gossip_rejected(&self) -> u64 {
        self.membership
            .shared()
            .gossip_rejected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The members view (`GET /limmat/cluster/1/members`, and the admin API).
    pub fn members_json(&self) -> serde_json::Value {
        match &self.context {
            Some(c) => internal::members_json(c),
            None => {
                let live = self.live().borrow().clone();
                serde_json::json!({ "node_id": live.local.node_id, "live": [live.local.node_id], "members": [], "standalone": true })
            }
        }
    }

    /// Forwards a client to `owner` (7.5). On failure the owner is probed.
    pub async fn forward(
        &self,
        owner: &Member,
        forward: &Forward,
        early: &[u8],
    ) -> Result<(Outbound, Vec<u8>), ForwardError> {
        let head = forward.encode(&self.secret).map_err(|e| {
            ForwardError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })?;
        let result = forward::open(owner.internal, self.tls.as_ref(), &head, early).await;
        if let Err(e) = &result {
            tracing::warn!(owner = %owner.node_id, error = %e, domain = %forward.domain, "cluster: forward failed");
            forward::probe_after_failure(
                self.membership.shared().clone(),
                owner.node_id.clone(),
                owner.internal,
                self.tls.clone(),
                self.secret.clone(),
            );
        }
        result
    }

    /// Drains (7.6): publishes `draining`, waits until no peer counts this node any more (each
    /// peer's members view says so, or it cannot be asked), at most `within`, then stops
    /// counting itself, so that its devices and waiting clients move to their new owners.
    ///
    /// The order matters: a node that gave up its domains while a peer still counted it would
    /// forward a client to the new owner, which (not having heard) would forward it back here
    /// at the hop limit, to wait for a device that already left.
    pub async fn drain(&self, within: std::time::Duration) {
        self.membership.drain().await;
        if self.internal.is_some() {
            self.until_peers_heard(within).await;
        }
        self.membership.hand_over();
    }

    async fn until_peers_heard(&self, within: std::time::Duration) {
        let live = self.live().borrow().clone();
        let me = live.local.node_id.clone();
        let mut waiting: Vec<Member> = live
            .members()
            .iter()
            .filter(|m| m.node_id != me)
            .cloned()
            .collect();
        let deadline = tokio::time::Instant::now() + within;
        while !waiting.is_empty() {
            let mut asked = tokio::task::JoinSet::new();
            for member in waiting {
                let secret = self.secret.clone();
                let tls = self.tls.clone();
                asked.spawn(async move {
                    let answer = forward::live_of(member.internal, tls.as_ref(), &secret).await;
                    (member, answer)
                });
            }
            waiting = Vec::new();
            while let Some(done) = asked.join_next().await {
                // A peer that cannot be asked cannot forward here either.
                if let Ok((member, Some(ids))) = done
                    && ids.iter().any(|id| **id == *me)
                {
                    waiting.push(member);
                }
            }
            if waiting.is_empty() {
                tracing::info!("cluster: every peer has seen this node draining");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let ids: Vec<&str> = waiting.iter().map(|m| &*m.node_id).collect();
                tracing::info!(peers = ?ids, "cluster: handing over before every peer has seen the draining");
                break;
            }
            tokio::time::sleep(PEER_POLL).await;
        }
    }

    /// The owner of `domain` when it is another node, in this node's view now; `None` when
    /// this node serves the domain itself (it owns it, it is standalone, or nobody counts).
    pub fn elsewhere(&self, domain: &str) -> Option<Member> {
        self.internal.as_ref()?;
        let live = self.membership.live().borrow().clone();
        if live.owns(domain) {
            return None;
        }
        live.owner(domain)
            .filter(|m| m.node_id != live.local.node_id)
            .cloned()
    }

    /// This node's own document.
    pub fn local(&self) -> Member {
        self.membership.live().borrow().local.clone()
    }

    /// Stops the internal listener and gossip (peers then see this node leave).
    pub async fn stop(&self) {
        if let Some((_, stop, _)) = &self.internal {
            stop.cancel();
        }
        self.membership.leave();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some((_, stop, task)) = &self.internal {
            stop.cancel();
            task.abort();
        }
    }
}
