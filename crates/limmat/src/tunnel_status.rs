//! `limmat tunnel --status ADDR`: the agent's state for people and monitors. `GET /status` is
//! JSON (every service: its mode, domain, relay, transport, state online/connecting/failing,
//! connections, last error and counts), `GET /metrics` the same numbers for Prometheus.
//!
//! A [`Board`] lists the running services; each service lists itself while it runs (a
//! [`Listed`] guard), so a reload that stops one takes it off the page. The port is served by
//! the relay's admin listener (`limmat_relay::serve_admin`: head timeout, connection cap), so
//! the device's status port resists the same abuse; it is bound to loopback unless an address
//! says otherwise, as it tells anyone who asks which relay and domain the device uses.

// An agent-only build lists the services but has no server to show them with.
#![cfg_attr(not(feature = "relay"), allow(dead_code))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use limmat_agent::{AgentState, AgentStatus};
use serde::Serialize;
use tokio::sync::watch;

/// What a service is, as the page shows it.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct ServiceInfo {
    /// `server`, `proxy`, `client` or `egress`.
    pub(crate) mode: &'static str,
    /// The domain registered (server, proxy) or reached (client); none for egress.
    pub(crate) domain: Option<String>,
    /// The relay, or the egress proxy.
    pub(crate) relay: Option<String>,
    /// The local address served or listened on.
    pub(crate) local: String,
    /// `auto`, `mux` or `ptth` (server, proxy).
    pub(crate) transport: String,
}

/// One service on the page: what it is and, for server and proxy modes, its agent's state.
struct Entry {
    id: u64,
    info: ServiceInfo,
    status: Option<watch::Receiver<AgentStatus>>,
}

/// The services of this process.
#[derive(Default)]
pub(crate) struct Board {
    next: AtomicU64,
    entries: Mutex<Vec<Entry>>,
}

/// Keeps a service on the board while it lives.
pub(crate) struct Listed {
    board: Arc<Board>,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        lock(&self.board.entries).retain(|e| e.id != self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values, always consistent: a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One service as `GET /status` shows it.
#[derive(Serialize)]
struct ServiceView {
    #[serde(flatten)]
    info: ServiceInfo,
    /// `online`, `connecting`, `failing`, or `listening` for client and egress modes.
    state: &'static str,
    /// Connections to the relay: mux connections plus waiting PTTH connections.
    connections: usize,
    #[serde(flatten)]
    counts: Option<AgentStatus>,
}

/// `GET /status`.
#[derive(Serialize)]
struct Page {
    /// `online` when every agent is online, `failing` when one fails, else `connecting`.
    state: &'static str,
    services: Vec<ServiceView>,
}

fn state_name(state: AgentState) -> &'static str {
    match state {
        AgentState::Online => "online",
        AgentState::Connecting => "connecting",
        AgentState::Failing => "failing",
    }
}

impl Board {
    /// Lists a service until the returned guard is dropped.
    pub(crate) fn list(
        self: &Arc<Self>,
        info: ServiceInfo,
        status: Option<watch::Receiver<AgentStatus>>,
    ) -> Listed {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.entries).push(Entry { id, info, status });
        Listed {
            board: Arc::clone(self),
            id,
        }
    }

    fn page(&self) -> Page {
        let services: Vec<ServiceView> = lock(&self.entries)
            .iter()
            .map(|e| {
                let counts = e.status.as_ref().map(|s| s.borrow().clone());
                ServiceView {
                    info: e.info.clone(),
                    state: counts.as_ref().map_or("listening", |c| state_name(c.state)),
                    connections: counts.as_ref().map_or(0, |c| c.mux + c.waiting),
                    counts,
                }
            })
            .collect();
        let states = || services.iter().map(|s| s.state);
        let state = if states().any(|s| s == "failing") {
            "failing"
        } else if states().all(|s| s == "online" || s == "listening") {
            "online"
        } else {
            "connecting"
        };
        Page { state, services }
    }

    /// The Prometheus text exposition of the page.
    fn metrics(&self) -> String {
        let page = self.page();
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&ServiceView) -> Option<String>| {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
                for s in &page.services {
                    if let Some(v) = value(s) {
                        let domain = s.info.domain.as_deref().unwrap_or("");
                        out.push_str(&format!(
                            "{name}{{mode=\"{}\",domain=\"{domain}\",local=\"{}\"}} {v}\n",
                            s.info.mode, s.info.local
                        ));
                    }
                }
            };
        let counts = |f: fn(&AgentStatus) -> u64| {
            move |s: &ServiceView| s.counts.as_ref().map(|c| f(c).to_string())
        };
        family(
            "limmat_agent_online",
            "gauge",
            "1 when the service is registered at its relay",
            &|s| {
                s.counts
                    .as_ref()
                    .map(|c| u8::from(c.state == AgentState::Online).to_string())
            },
        );
        family(
            "limmat_agent_connections",
            "gauge",
            "connections to the relay: mux plus waiting PTTH",
            &|s| s.counts.as_ref().map(|_| s.connections.to_string()),
        );
        family(
            "limmat_agent_relayed",
            "gauge",
            "client connections being relayed",
            &counts(|c| c.relayed as u64),
        );
        family(
            "limmat_agent_openings_total",
            "counter",
            "connections opened to the relay",
            &counts(|c| c.openings),
        );
        family(
            "limmat_agent_upgrades_total",
            "counter",
            "clients paired (101 or mux stream)",
            &counts(|c| c.upgrades),
        );
        family(
            "limmat_agent_failures_total",
            "counter",
            "attempts that failed",
            &counts(|c| c.failures),
        );
        out
    }
}

/// `--status`: `PORT` (on loopback) or `host:port`.
pub(crate) fn parse_status_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    crate::settings::socket_addr(value)
}

/// Binds `addr` and serves the board until `stop`; the bound address is logged
/// (`status listening addr=…`).
#[cfg(feature = "relay")]
pub(crate) async fn serve(
    addr: SocketAddr,
    board: Arc<Board>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--status: cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    if !bound.ip().is_loopback() {
        tracing::warn!(addr = %bound, "the status port is reachable from other hosts: it names the relays and domains");
    }
    tracing::info!(addr = %bound, "status listening");
    let (json, text) = (Arc::clone(&board), board);
    let app = axum::Router::new()
        .route(
            "/status",
            get(move || async move { axum::Json(json.page()) }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    text.metrics(),
                )
            }),
        );
    Ok(tokio::spawn(limmat_relay::serve_admin(listener, app, stop)))
}

/// Without the relay feature there is no HTTP server to serve the page with.
#[cfg(not(feature = "relay"))]
pub(crate) async fn serve(
    _addr: SocketAddr,
    _board: Arc<Board>,
    _stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    anyhow::bail!("--status is not in this build (an agent-only build, without the relay feature)")
}
