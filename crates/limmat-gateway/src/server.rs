//! The running gateway: the composition of its parts (`gateway-api.md` §1.2). One backend, one
//! scan fanned out ([`crate::ble`]), the durable beacon pipeline and webhook scheduler
//! ([`crate::pipeline`]), and one router served twice at the same time: on the local listener
//! and on every connection the relay hands the agent, with no extra local hop. `/metrics` is
//! added on the local listener only, so the relay never exposes it.
//!
//! Shutdown: the token stops the listener (in-flight requests finish, for at most
//! `SHUTDOWN_GRACE`), the agent (waiting relay
//! connections close), the scan, the pipeline (its last batch is committed) and the scheduler
//! (an attempt in flight is abandoned and retried after restart, as §5.3 allows); [`Gateway::wait`]
//! returns when every task has ended.

use crate::api::index::IndexInfo;
use crate::api::{self, ApiSettings};
use crate::backend::Backend;
use crate::ble::Ble;
use crate::config::{BackendKind, GatewayConfig};
use crate::pipeline::{Beacons, broadcast_reports};
use crate::store::{Options as StoreOptions, Store};
use crate::webhook::client::HttpTransport;
use axum::Router;
use limmat_agent::{Agent, AgentConfig, AgentStatus, RelayAddr};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long requests still open at shutdown may go on (the local listener).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How to start a gateway.
pub struct Options {
    pub config: GatewayConfig,
    /// The recorder to render on `/metrics`; `None` installs the gateway's own.
    pub prometheus: Option<PrometheusHandle>,
}

/// Why a gateway could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("api.listen = {0}: not an address such as 127.0.0.1:8000")]
    ListenAddr(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error("the {0} backend cannot start: {1}")]
    Backend(&'static str, String),
    #[error("the state database in {dir}: {error}")]
    Store { dir: String, error: String },
    #[error("webhooks: {0}")]
    Webhooks(String),
    #[error("relay: {0}")]
    Relay(String),
}

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    relay_status: Option<watch::Receiver<AgentStatus>>,
    tasks: TaskTracker,
}

impl Gateway {
    /// Start every part; returns once the local listener is bound and the state database open.
    pub async fn start(
        options: Options,
        shutdown: CancellationToken,
    ) -> Result<Gateway, StartError> {
        let config = Arc::new(options.config);
        let listen = config
            .api
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8000".into());
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| StartError::ListenAddr(listen.clone()))?;
        let prometheus = options.prometheus.or_else(crate::metrics::install);
        let backend = backend(&config).await?;
        let tasks = TaskTracker::new();

        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| StartError::Listen {
                addr: listen.clone(),
                error,
            })?;
        let local_addr = listener.local_addr().map_err(|error| StartError::Listen {
            addr: listen.clone(),
            error,
        })?;

        let agent = relay_agent(&config)?;
        let relay_status = agent.as_ref().map(|a| a.status());

        let store = Store::open(
            &config.gateway.state_dir,
            StoreOptions::from_config(&config),
        )
        .map_err(|e| StartError::Store {
            dir: config.gateway.state_dir.display().to_string(),
            error: e.to_string(),
        })?;
        let mut webhooks = config.webhooks.clone();
        if webhooks.proxy_key.is_none() {
            webhooks.proxy_key = config.relay.secret_key.clone();
        }
        let transport = HttpTransport::new(&webhooks).map_err(StartError::Webhooks)?;
        let ble = Ble::start(backend, shutdown.clone()).await;
        let links_base = config
            .api
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{local_addr}"));
        let beacons = Beacons::start(
            &config,
            store,
            broadcast_reports(ble.subscribe()),
            Arc::new(transport),
            links_base,
            shutdown.clone(),
        )
        .map_err(|e| StartError::Store {
            dir: config.gateway.state_dir.display().to_string(),
            error: e.to_string(),
        })?;
        let info = IndexInfo {
            name: config.gateway.name.clone(),
            relay: relay_index(&config, relay_status.clone()),
        };
        let mut parts = api::ble_parts(ble, info);
        parts.push(api::beacon::routes(beacons.clone()));

        let settings = ApiSettings {
            domain: config.relay.domain.clone(),
            token: config.api.token.clone(),
            public_base_url: config.api.public_base_url.clone(),
        };
        let router = api::router(settings, parts);
        let local_router = with_metrics(router.clone(), prometheus);

        let limits = config.api.limits.clone();
        let stop = shutdown.clone();
        tasks.spawn(crate::listener::serve(
            listener,
            local_router,
            limits,
            stop,
            SHUTDOWN_GRACE,
        ));
        tracing::info!(%local_addr, backend = ?config.backend.kind, "gateway listening");

        if let Some(agent) = agent {
            if config.api.token.is_none() {
                tracing::warn!(
                    "the API has no token (api.token) and is reachable through the relay: anyone who knows the domain can use it"
                );
            }
            let router = router.clone();
            let stop = shutdown.clone();
            let limits = Arc::new(config.api.limits.clone());
            tasks.spawn(async move {
                let served = stop.clone();
                agent
                    .run(
                        move |conn| {
                            let (router, limits, stop) =
                                (router.clone(), limits.clone(), served.clone());
                            async move {
                                crate::listener::serve_relayed(
                                    conn,
                                    router,
                                    &limits,
                                    stop,
                                    SHUTDOWN_GRACE,
                                )
                                .await
                            }
                        },
                        stop,
                    )
                    .await;
            });
        }
        let stopped = beacons.clone();
        tasks.spawn(async move { stopped.stopped().await });
        tasks.close();
        Ok(Gateway {
            local_addr,
            relay_status,
            tasks,
        })
    }

    /// The bound local listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The relay agent's pool, when the gateway has a relay.
    pub fn relay_status(&self) -> Option<watch::Receiver<AgentStatus>> {
        self.relay_status.clone()
    }

    /// Wait until shutdown has finished.
    pub async fn wait(self) {
        self.tasks.wait().await;
    }
}

fn with_metrics(router: Router, prometheus: Option<PrometheusHandle>) -> Router {
    router.route(
        "/metrics",
        axum::routing::get(move || {
            let prometheus = prometheus.clone();
            async move {
                match prometheus {
                    Some(handle) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        handle.render(),
                    )
                        .into_response(),
                    None => api::problem::Problem::not_implemented(
                        "metrics (another recorder is installed)",
                    )
                    .into_response(),
                }
            }
        }),
    )
}

use axum::response::IntoResponse;

async fn backend(config: &GatewayConfig) -> Result<Arc<dyn Backend>, StartError> {
    match config.backend.kind {
        BackendKind::Sim => {
            let sim = crate::backend::sim::SimBackend::new(&config.sim)
                .map_err(|e| StartError::Backend("sim", e.to_string()))?;
            Ok(Arc::new(sim))
        }
        #[cfg(feature = "bluez")]
        BackendKind::Bluez => {
            let bluez = crate::backend::bluez::BluezBackend::new(&config.backend.adapter)
                .await
                .map_err(|e| StartError::Backend("bluez", e.to_string()))?;
            Ok(Arc::new(bluez))
        }
        #[cfg(not(feature = "bluez"))]
        BackendKind::Bluez => Err(StartError::Backend(
            "bluez",
            "this build has no BlueZ backend; rebuild with `--features bluez`".into(),
        )),
    }
}

/// `relay` in `GET /`: where the gateway registers and how many connections wait there.
fn relay_index(
    config: &GatewayConfig,
    status: Option<watch::Receiver<AgentStatus>>,
) -> crate::api::index::RelayStatus {
    let address = config.relay.address.clone();
    let domain = config.relay.domain.clone();
    Arc::new(move || match &status {
        None => serde_json::json!({"configured": false}),
        Some(status) => {
            let s = status.borrow().clone();
            serde_json::json!({
                "configured": true,
                "address": address,
                "domain": domain,
                "waiting": s.waiting,
                "relayed": s.relayed,
                "upgrades": s.upgrades,
                "failures": s.failures,
            })
        }
    })
}

fn relay_agent(config: &GatewayConfig) -> Result<Option<Agent>, StartError> {
    let relay = &config.relay;
    let (Some(address), Some(domain)) = (&relay.address, &relay.domain) else {
        return Ok(None);
    };
    let addr: RelayAddr = address
        .parse()
        .map_err(|e| StartError::Relay(format!("relay.address = {address}: {e}")))?;
    let mut agent = AgentConfig::new(addr, domain.clone());
    agent.secret_key = relay.secret_key.clone();
    agent.min_listeners = relay.pool;
    agent.max_sockets = relay.max_connections;
    Agent::new(agent)
        .map(Some)
        .map_err(|e| StartError::Relay(e.to_string()))
}
