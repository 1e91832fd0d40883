//! What every task of one relay node reads: its settings, its rendezvous, its counters, its
//! stop signals and the services it was started with.
//!
//! It is data only, built once by the server and passed down by reference, so
//! that a module's signature shows what it uses and no module below the server has to know
//! about listeners or the accept loop.

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::RelayConfig;
use crate::egress::Policy;
use crate::limits::Limits;
use crate::proxy_stats::ProxyStats;
use crate::registry::Registry;
use crate::stats::Stats;
use crate::tls::CertStore;
use limmat_wire::Hostnames;
use std::sync::{Arc, PoisonError, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// State shared by every task of one relay node.
pub(crate) struct RelayContext {
    pub(crate) config: RelayConfig,
    pub(crate) hostnames: Hostnames,
    pub(crate) registry: Arc<Registry>,
    pub(crate) stats: Stats,
    /// Stop accepting and release waiting connections.
    pub(crate) shutdown: CancellationToken,
    /// Close the pipes still open after the drain timeout.
    pub(crate) hard_stop: CancellationToken,
    /// Every connection task, so that shutdown can wait for all of them.
    pub(crate) tasks: TaskTracker,
    /// Terminates TLS legs; present when a certificate is configured.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) certs: Option<Arc<CertStore>>,
    /// Checks device keys; `None` in open mode.
    pub(crate) auth: Option<RwLock<Arc<Authenticator>>>,
    pub(crate) limits: Arc<Limits>,
    /// One permit per connection under `max_connections`, shared by every listener.
    pub(crate) conn_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// The admin API's bearer token, if one is configured.
    pub(crate) admin_token: Option<String>,
    /// The forward proxy (section 6), when `forward_proxy` is on.
    pub(crate) proxy: Option<ProxyState>,
    /// This node's part in a cluster (section 7); a standalone one owns every domain.
    pub(crate) cluster: Cluster,
    /// Set when a clustered node starts draining (7.6): the handover and the pipes that remain
    /// afterwards share one `drain_timeout` from then on.
    pub(crate) drain_deadline: std::sync::OnceLock<tokio::time::Instant>,
}

/// The forward proxy's state on a relay that runs it.
pub(crate) struct ProxyState {
    pub(crate) policy: Policy,
    pub(crate) stats: Arc<ProxyStats>,
}

impl RelayContext {
    /// The device keys in force now (`None` in open mode); a reload swaps them whole.
    pub(crate) fn keys(&self) -> Option<Arc<Authenticator>> {
        let keys = self.auth.as_ref()?;
        Some(keys.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}
