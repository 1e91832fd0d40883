//! Listeners, the accept loop and graceful shutdown.
//!
//! On shutdown the relay stops accepting, closes waiting devices (they reconnect with backoff)
//! and answers waiting clients `504`, then gives in-flight pipes `drain_timeout` to finish before
//! it closes them (spec 7.6, "a node without a cluster"). `run` returns only when every
//! connection task has ended, so nothing outlives the relay.

use crate::auth::{AuthMode, Authenticator, KeyError, ModeError, resolve_mode};
use crate::cluster::{Cluster, ForwardSink, Inbound, InternalTls, Member};
use crate::config::{ConfigError, RelayConfig};
use crate::context::{ProxyState, RelayContext};
use crate::egress::Policy;
use crate::fd_reserve::{self, FdReserve};
use crate::legs::Conn;
use crate::limits::Limits;
use crate::registry::Registry;
use crate::stats::Stats;
use crate::stream::Tcp;
use crate::tls::{CertError, CertStore};
use crate::{admin, conn, metrics, socket};
use limmat_wire::Hostnames;
use limmat_wire::cluster::Forward;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The listener's address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A certificate or key could not be loaded.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A device key source could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The authentication mode cannot apply (4.2).
    #[error(transparent)]
    AuthMode(#[from] ModeError),
    /// The cluster settings are refused, or its sockets could not be opened (section 7).
    #[error("{0:#}")]
    Cluster(anyhow::Error),
    /// The admin token file could not be read, or is empty.
    #[error("cannot read the admin token file {path}: {error}")]
    AdminToken {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

/// A bound relay, ready to [`run`](Relay::run).
pub struct Relay {
    pub(crate) ctx: Arc<RelayContext>,
    admin: Option<TcpListener>,
    /// Each listener and whether it is a TLS one.
    listeners: Vec<(TcpListener, bool)>,
    /// Clients that peers forward to this node (7.5), served once the relay runs.
    forwarded: mpsc::UnboundedReceiver<Forwarded>,
}

/// A client a peer forwarded to this node, already answered `200` (7.5).
pub(crate) type Forwarded = (Forward, Inbound, Vec<u8>);

/// Hands forwarded clients from the internal listener to the running relay.
struct ForwardedClients(mpsc::UnboundedSender<Forwarded>);

impl ForwardSink for ForwardedClients {
    fn forwarded(&self, forward: Forward, stream: Inbound, early: Vec<u8>) {
        // A relay that stopped running drops the client: its forwarding node sees a close.
        let _ = self.0.send((forward, stream, early));
    }
}

/// Controls a running relay from outside: its counters and its shutdown.
#[derive(Clone)]
pub struct RelayHandle {
    ctx: Arc<RelayContext>,
}

impl RelayHandle {
    /// The relay's live counters.
    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }

    /// Starts a graceful shutdown; [`Relay::run`] returns once it is complete.
    pub fn shutdown(&self) {
        self.ctx.shutdown.cancel();
    }

    /// Drains this node, then shuts it down (SIGTERM, spec 7.6). Clustered: publishes
    /// `draining` by gossip, so this node owns nothing from now on; its waiting PTTH devices
    /// get `204`s (their re-POST gets a `307` to the new owner) and its mux connections GOAWAY,
    /// new clients are forwarded; returns once no device is left here, or after
    /// `cluster.drain_timeout`, having started the shutdown ([`Relay::run`] then gives the remaining
    /// pipes what is left of `cluster.drain_timeout`). Standalone: the same as
    /// [`shutdown`](Self::shutdown).
    pub async fn drain(&self) {
        crate::rebalance::drain(&self.ctx).await;
        self.shutdown();
    }

    /// The cluster view as the admin API's `GET /api/cluster` shows it: this node, its live
    /// set and every member it knows of with its state (`"standalone": true` without a cluster).
    pub fn cluster_members(&self) -> serde_json::Value {
        self.ctx.cluster.members_json()
    }

    /// The node ids of this node's live set, updated on every change (7.2); standalone: itself.
    pub fn live_members(&self) -> watch::Receiver<Arc<crate::cluster::LiveSet>> {
        self.ctx.cluster.live()
    }

    /// The node that owns `domain` in this node's view now (7.3).
    pub fn owner_of(&self, domain: &str) -> Option<String> {
        let live = self.ctx.cluster.live().borrow().clone();
        live.owner(domain).map(|m| m.node_id.to_string())
    }

    /// Reads every certificate again (SIGHUP). A file that fails keeps the previous
    /// certificate in service. Returns how many were replaced.
    pub fn reload_certificates(&self) -> usize {
        self.ctx.certs.as_ref().map_or(0, |c| c.reload(true))
    }

    /// Reads the keys files and master secrets again (SIGHUP), so keys can be added, rotated
    /// and revoked without a restart. On any error the previous keys stay in force.
    pub fn reload_keys(&self) -> Result<(), KeyError> {
        let Some(current) = &self.ctx.auth else {
            return Ok(());
        };
        let fresh = Authenticator::load(&self.ctx.config.keys)?;
        *current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }
}

/// How often certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(5);

impl Relay {
    /// Validates the configuration and binds every listener.
    pub async fn bind(config: RelayConfig) -> Result<Self, StartError> {
        config.validate()?;
        let certs = match config.certs.is_empty() {
            true => None,
            false => Some(CertStore::load(&config.certs)?),
        };
        let tls = certs.as_ref().map(|c| c.acceptor()).transpose()?;
        let loopback_only = config.listen.iter().all(|l| l.addr.ip().is_loopback());
        let mode = resolve_mode(config.auth, config.keys.any(), loopback_only)?;
        config.check_mode(mode)?;
        let auth = match mode {
            AuthMode::Keys => Some(Authenticator::load(&config.keys)?),
            AuthMode::Open => {
                if config.auth == Some(AuthMode::Open) {
                    tracing::warn!("auth = open: any device may register any domain");
                }
                None
            }
        };
        match fd_reserve::raise_file_limit() {
            Some(files) if files < 4096 => tracing::warn!(
                files,
                "the open file limit is low: every client, device and pipe takes descriptors"
            ),
            Some(files) => tracing::debug!(files, "open file limit"),
            None => {}
        }
        let limits = Limits::new(config.limits.clone());
        let conn_slots = (config.max_connections > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(config.max_connections)));
        let admin_token = match &config.admin_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let admin = match config.admin {
            Some(addr) => Some(listen(addr).map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        if admin.is_some() {
            // The recorder is process-wide; install it before the first event is counted.
            metrics::handle();
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        let reuse_port = config.accept_runtimes > 0;
        for l in &config.listen {
            let addr = l.addr;
            let listener = listen_shared(addr, reuse_port)
                .map_err(|source| StartError::Bind { addr, source })?;
            listeners.push((listener, l.tls));
        }
        // The proxy never connects to this node's own endpoints (6.4.4).
        let proxy = config.forward_proxy.then(|| {
            let own = listeners
                .iter()
                .map(|(l, _)| l)
                .chain(admin.as_ref())
                .filter_map(|l| l.local_addr().ok())
                .collect();
            ProxyState {
                policy: Policy::new(config.egress.clone(), own),
                stats: Arc::default(),
            }
        });
        let local = local_member(&config, &listeners);
        let (forwarded_tx, forwarded) = mpsc::unbounded_channel();
        let sink = Arc::new(ForwardedClients(forwarded_tx));
        let internal_tls = internal_tls(&config, tls.as_ref())?;
        let cluster = Cluster::start_with_tls(&config.cluster, local, sink, internal_tls)
            .await
            .map_err(StartError::Cluster)?;
        let ctx = Arc::new(RelayContext {
            hostnames: Hostnames::new(&config.hostnames),
            config,
            registry: Registry::new(),
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            tls,
            certs,
            auth: auth.map(|a| RwLock::new(Arc::new(a))),
            limits,
            conn_slots,
            admin_token,
            proxy,
            cluster,
            drain_deadline: std::sync::OnceLock::new(),
        });
        Ok(Self {
            ctx,
            admin,
            listeners,
            forwarded,
        })
    }

    /// The bound addresses, in the order of `listen` (with the real port for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The admin listener's address, if one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The cluster's internal listener (7.1), when clustered.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.ctx.cluster.internal_addr()
    }

    /// The cluster's gossip socket (7.2), when clustered.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.ctx.cluster.gossip_addr()
    }

    /// A handle to watch and stop the relay once it runs.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            ctx: self.ctx.clone(),
        }
    }

    /// Accepts and serves connections until [`RelayHandle::shutdown`], then drains.
    pub async fn run(self) {
        let tracker = self.ctx.tasks.clone();
        // The admin API outlives the drain (readiness says "draining" meanwhile).
        let admin_stop = CancellationToken::new();
        let admin = self
            .admin
            .map(|l| tokio::spawn(admin::serve(self.ctx.clone(), l, admin_stop.clone())));
        let runtimes = crate::runtimes::start(&self.ctx, &self.listeners, accept_loop);
        for (listener, tls) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, tls, runtimes = runtimes.len() + 1, "listening");
            }
            tracker.spawn(accept_loop(self.ctx.clone(), listener, tls));
        }
        tracker.spawn(serve_forwarded(self.ctx.clone(), self.forwarded));
        if self.ctx.cluster.is_clustered() {
            tracker.spawn(crate::rebalance::run(self.ctx.clone()));
        }
        if let Some(certs) = self.ctx.certs.clone() {
            let shutdown = self.ctx.shutdown.clone();
            tracker.spawn(async move {
                let mut tick = tokio::time::interval(CERT_POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => { certs.reload(false); }
                        () = shutdown.cancelled() => return,
                    }
                }
            });
        }
        self.ctx.shutdown.cancelled().await;
        tracker.close();
        // A clustered node that drained has spent part of its drain_timeout handing over.
        let deadline = match self.ctx.drain_deadline.get() {
            Some(deadline) => *deadline,
            None => tokio::time::Instant::now() + self.ctx.config.drain_timeout,
        };
        let drain = deadline.saturating_duration_since(tokio::time::Instant::now());
        tracing::info!(
            open = *self.ctx.stats.open_connections().borrow(),
            ?drain,
            "draining"
        );
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::info!("drain timeout: closing the remaining pipes");
            self.ctx.hard_stop.cancel();
            tracker.wait().await;
        }
        // The other runtimes end once their tasks have: nothing they run outlives the relay.
        for done in runtimes {
            let _ = done.await;
        }
        self.ctx.cluster.stop().await;
        admin_stop.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        tracing::info!("stopped");
    }
}

/// Serves the clients peers forward here until shutdown, each as its own connection task.
async fn serve_forwarded(
    ctx: Arc<RelayContext>,
    mut forwarded: mpsc::UnboundedReceiver<Forwarded>,
) {
    loop {
        let next = tokio::select! {
            next = forwarded.recv() => next,
            () = ctx.shutdown.cancelled() => return,
        };
        let Some((forward, stream, early)) = next else {
            return;
        };
        // The internal listener configured the socket.
        let conn = Conn::new(&ctx.stats, stream.0, forward.client_addr);
        ctx.tasks
            .spawn(conn::forwarded(ctx.clone(), conn, forward, early));
    }
}

/// The internal hop's TLS (`internal_tls`, 7.1): the relay's own certificates, peers verified
/// against `internal_ca` and the first hostname, which every node's certificate names.
fn internal_tls(
    config: &RelayConfig,
    acceptor: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Option<InternalTls>, StartError> {
    let c = &config.cluster;
    if !c.internal_tls || !c.is_clustered() {
        return Ok(None);
    }
    let refuse = |why: &str| StartError::Cluster(anyhow::anyhow!("cluster: internal_tls {why}"));
    let ca = c
        .internal_ca
        .as_deref()
        .ok_or_else(|| refuse("needs internal_ca"))?;
    let acceptor = acceptor.ok_or_else(|| refuse("needs the relay's certificate and key"))?;
    let name = config
        .hostnames
        .first()
        .ok_or_else(|| refuse("needs a hostname that the nodes' certificate names"))?;
    InternalTls::new(acceptor.clone(), ca, name)
        .map(Some)
        .map_err(|e| StartError::Cluster(e.into()))
}

/// This node's document (7.1): its public host is `cluster.public_host`, else the first
/// hostname, else the first listener's IP; its ports are those of its first plain and first
/// TLS listener unless configured.
fn local_member(config: &RelayConfig, listeners: &[(TcpListener, bool)]) -> Member {
    let port_of = |tls: bool| {
        listeners
            .iter()
            .filter(|(_, t)| *t == tls)
            .find_map(|(l, _)| l.local_addr().ok())
    };
    let first = listeners.iter().find_map(|(l, _)| l.local_addr().ok());
    let c = &config.cluster;
    let public_host = c
        .public_host
        .clone()
        .or_else(|| config.hostnames.first().cloned())
        .or_else(|| first.map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "localhost".into());
    Member {
        node_id: c.node_id.as_deref().unwrap_or("standalone").into(),
        public_host,
        public_http_port: c.public_http_port.or(port_of(false).map(|a| a.port())),
        public_https_port: c.public_https_port.or(port_of(true).map(|a| a.port())),
        internal: first.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        draining: false,
    }
}

/// Reads the admin token: the file's content without surrounding whitespace, not empty.
fn read_token(path: &std::path::Path) -> Result<String, StartError> {
    let err = |error: String| StartError::AdminToken {
        path: path.to_path_buf(),
        error,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty".into()));
    }
    Ok(token.to_owned())
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    listen_shared(addr, false)
}

/// A listener; with `reuse_port`, one that other sockets bound with `SO_REUSEPORT` to the same
/// address share (the `per-core` layout, [`crate::runtimes`]).
fn listen_shared(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket::set_options(socket2::SockRef::from(&socket))?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.bind(addr)?;
    socket.listen(socket::BACKLOG)
}

/// Accepts on `listener` and serves each connection as a task of the calling runtime, until
/// shutdown.
async fn accept_loop(ctx: Arc<RelayContext>, listener: TcpListener, tls: bool) {
    let mut reserve = FdReserve::new();
    loop {
        // At the node's limit, stop accepting: the kernel's backlog holds new connections
        // until some close, instead of the relay falling over (4.3). The permit is taken
        // before the accept, so several listeners cannot overshoot together.
        let slot = match &ctx.conn_slots {
            Some(slots) => tokio::select! {
                permit = slots.clone().acquire_owned() => permit.ok(),
                () = ctx.shutdown.cancelled() => return,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = ctx.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                reserve.accepted();
                socket::configure_accepted(&stream);
                metrics::accepted(tls);
                let mut conn = Conn::new(&ctx.stats, Tcp(stream), peer);
                conn.open.slot = slot;
                ctx.tasks.spawn(conn::handle(ctx.clone(), conn, tls));
            }
            Err(e) if FdReserve::is_exhaustion(&e) => {
                // Out of descriptors: reset the waiting connection rather than leave its
                // client hanging in the backlog.
                if !reserve.shed(&listener, tls).await {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(10)) => {}
                        () = ctx.shutdown.cancelled() => return,
                    }
                }
            }
            Err(e) => {
                // Out of memory or similar: back off instead of spinning, and let the kernel's
                // backlog hold new connections meanwhile.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = ctx.shutdown.cancelled() => return,
                }
            }
        }
    }
}
