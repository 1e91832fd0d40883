//! The running gateway: the composition of its parts (`gateway-api.md` §1.2). One backend, one
//! scan fanned out (the crate's `ble` module), the durable beacon pipeline (`pipeline`) and the
//! webhook scheduler (`webhook::scheduler`), composed here ([`start_beacons`]), and one router
//! served twice at the same time: on the local listener and on every connection the relay
//! hands the agent, with no extra local hop. `/metrics` is
//! added on the local listener only, so the relay never exposes it.
//!
//! Shutdown: the token ends every event stream and stops the listener (in-flight requests
//! finish), the agent (waiting relay
//! connections close), the scan, the pipeline (its last batch is committed) and the scheduler
//! (an attempt in flight is abandoned and retried after restart, as §5.3 allows); [`Gateway::wait`]
//! returns when every task has ended.

use crate::api::index::IndexInfo;
use crate::api::{self, ApiSettings};
use crate::backend::Backend;
use crate::backend::Report;
use crate::ble::Ble;
use crate::config::{BackendKind, GatewayConfig};
use crate::pipeline::{Beacons, broadcast_reports};
use crate::store::{Options as StoreOptions, Store, StoreError};
use crate::webhook::Transport;
use crate::webhook::client::HttpTransport;
use crate::webhook::scheduler;
use axum::Router;
use limmat_agent::{Agent, AgentConfig, AgentStatus, RelayAddr, RelayProxy};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long requests in progress may finish after shutdown starts (event streams end at once).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How to start a gateway.
pub struct Options {
    /// Every setting, checked (`GatewayConfig::validate`).
    pub config: GatewayConfig,
    /// The recorder to render on `/metrics`; `None` installs the gateway's own.
    pub prometheus: Option<PrometheusHandle>,
}

/// Why a gateway could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // The fields are named by the messages.
pub enum StartError {
    /// `api.listen` is not an address.
    #[error("api.listen = {0}: not an address such as 127.0.0.1:8000")]
    ListenAddr(String),
    /// The local listener cannot be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    /// The backend (`sim` or `bluez`) did not start.
    #[error("the {0} backend cannot start: {1}")]
    Backend(&'static str, String),
    /// The state database cannot be opened (or is locked by another gateway).
    #[error("the state database in {dir}: {error}")]
    Store { dir: String, error: String },
    /// A `[webhooks]` setting the transport refuses.
    #[error("webhooks: {0}")]
    Webhooks(String),
    /// A `[relay]` setting the agent refuses.
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
        let config = options.config;
        let addr = listen_addr(&config)?;
        let prometheus = options.prometheus.or_else(crate::metrics::install);
        let backend = backend(&config).await?;
        let (listener, local_addr) = bind(addr).await?;
        let agent = relay_agent(&config)?;
        let relay_status = agent.as_ref().map(Agent::status);
        let store = open_store(&config)?;
        let transport = webhook_transport(&config)?;
        let ble = Ble::start(backend, shutdown.clone()).await;
        let links_base = links_base(&config, local_addr);
        let beacons = start_beacons(
            &config,
            store,
            broadcast_reports(ble.subscribe()),
            transport,
            links_base,
            shutdown.clone(),
        )
        .map_err(|e| store_error(&config, e))?;
        let router = api_router(&config, ble, beacons.clone(), relay_status.clone());
        let router = end_streams_on(router, shutdown.clone());

        let tasks = TaskTracker::new();
        serve_local(
            &tasks,
            listener,
            with_metrics(router.clone(), prometheus),
            config.api.limits.clone(),
            shutdown.clone(),
        );
        tracing::info!(%local_addr, backend = ?config.backend.kind, "gateway listening");
        if let Some(agent) = agent {
            serve_relayed(&tasks, agent, router, &config, shutdown);
        }
        tasks.spawn(async move { beacons.stopped().await });
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

/// The Beacon API's engine, composed: the pipeline over `reports` and the webhook scheduler
/// over `transport`, woken by the pipeline and the API. Both stop when `shutdown` is
/// cancelled; `Beacons::stopped` waits for both.
pub fn start_beacons<S>(
    config: &GatewayConfig,
    store: Store,
    reports: S,
    transport: Arc<dyn Transport>,
    links_base: String,
    shutdown: CancellationToken,
) -> Result<Beacons, StoreError>
where
    S: futures::Stream<Item = Arc<Report>> + Send + 'static,
{
    let beacons = Beacons::start(config, store.clone(), reports, links_base, shutdown.clone())?;
    let scheduler = tokio::spawn(scheduler::run(
        store,
        transport,
        scheduler::SchedulerSettings::from_config(&config.webhooks),
        beacons.wake(),
        beacons.clock(),
        shutdown,
    ));
    beacons.track(scheduler);
    Ok(beacons)
}

/// `api.listen` as an address (the CLI fills in its default).
fn listen_addr(config: &GatewayConfig) -> Result<SocketAddr, StartError> {
    let listen = config.api.listen.as_deref().unwrap_or("127.0.0.1:8000");
    listen
        .parse()
        .map_err(|_| StartError::ListenAddr(listen.to_owned()))
}

/// The local listener, bound.
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |error| StartError::Listen {
        addr: addr.to_string(),
        error,
    };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let local_addr = listener.local_addr().map_err(failed)?;
    Ok((listener, local_addr))
}

/// The state database, exclusively locked.
fn open_store(config: &GatewayConfig) -> Result<Store, StartError> {
    Store::open(&config.gateway.state_dir, StoreOptions::from_config(config))
        .map_err(|e| store_error(config, e))
}

fn store_error(config: &GatewayConfig, error: StoreError) -> StartError {
    StartError::Store {
        dir: config.gateway.state_dir.display().to_string(),
        error: error.to_string(),
    }
}

/// The webhook transport; the proxy key defaults to the relay's device key (§5.9).
fn webhook_transport(config: &GatewayConfig) -> Result<Arc<dyn Transport>, StartError> {
    let mut webhooks = config.webhooks.clone();
    if webhooks.proxy_key.is_none() {
        webhooks.proxy_key = config.relay.secret_key.clone();
    }
    let transport = HttpTransport::new(&webhooks).map_err(StartError::Webhooks)?;
    Ok(Arc::new(transport))
}

/// The one router of the GAP/GATT and Beacon APIs, for the local listener and the relay.
fn api_router(
    config: &GatewayConfig,
    ble: Arc<Ble>,
    beacons: Beacons,
    relay_status: Option<watch::Receiver<AgentStatus>>,
) -> Router {
    let info = IndexInfo {
        name: config.gateway.name.clone(),
        relay: relay_index(config, relay_status),
    };
    let mut parts = api::ble_parts(ble, info);
    parts.push(api::beacon::routes(beacons));
    let settings = ApiSettings {
        domain: config.relay.domain.clone(),
        token: config.api.token.clone(),
        public_base_url: config.api.public_base_url.clone(),
    };
    api::router(settings, parts)
}

/// The base of `self` links inside events and webhook bodies, which no request's `Host`
/// decides: `api.public_base_url`; else, with a relay, the gateway's path-form URL on it
/// (`http://relay.example.com/gw-zurich-01`, as `/beacon/beacons` read through the relay
/// shows it); else the local listener. An event stream rewrites it to the base of the
/// listener it is read on (`api::beacon::stream`).
fn links_base(config: &GatewayConfig, local_addr: SocketAddr) -> String {
    if let Some(url) = &config.api.public_base_url {
        return url.clone();
    }
    match (&config.relay.address, &config.relay.domain) {
        (Some(relay), Some(domain)) => {
            let host = relay.strip_suffix(":80").unwrap_or(relay);
            format!("http://{host}/{domain}")
        }
        _ => format!("http://{local_addr}"),
    }
}

/// Ends every Server-Sent Events response (scan, connection, notification and beacon
/// streams, local or relayed) when `shutdown` fires, so a graceful stop never waits on a
/// stream that would run for ever.
fn end_streams_on(router: Router, shutdown: CancellationToken) -> Router {
    router.layer(axum::middleware::map_response(move |response: Response| {
        let shutdown = shutdown.clone();
        async move { end_stream_on(response, shutdown) }
    }))
}

fn end_stream_on(response: Response, shutdown: CancellationToken) -> Response {
    let is_stream = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        return response;
    }
    let (parts, body) = response.into_parts();
    let events = body
        .into_data_stream()
        .take_until(shutdown.cancelled_owned());
    Response::from_parts(parts, axum::body::Body::from_stream(events))
}

/// Serves `router` on the local listener until `shutdown`; requests in flight finish (every
/// stream ends at shutdown, see [`end_streams_on`]).
fn serve_local(
    tasks: &TaskTracker,
    listener: TcpListener,
    router: Router,
    limits: crate::listener::Limits,
    shutdown: CancellationToken,
) {
    tasks.spawn(crate::listener::serve(
        listener,
        router,
        limits,
        shutdown,
        SHUTDOWN_GRACE,
    ));
}

/// Serves `router` on every connection the relay hands the agent, until `shutdown`.
fn serve_relayed(
    tasks: &TaskTracker,
    agent: Agent,
    router: Router,
    config: &GatewayConfig,
    shutdown: CancellationToken,
) {
    if config.api.token.is_none() {
        tracing::warn!(
            "the API has no token (api.token) and is reachable through the relay: anyone who knows the domain can use it"
        );
    }
    let limits = Arc::new(config.api.limits.clone());
    let served = shutdown.clone();
    tasks.spawn(async move {
        agent
            .run(
                move |conn| {
                    let (router, limits, stop) = (router.clone(), limits.clone(), served.clone());
                    async move {
                        crate::listener::serve_relayed(conn, router, &limits, stop, SHUTDOWN_GRACE)
                            .await;
                    }
                },
                shutdown,
            )
            .await;
    });
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

use axum::response::{IntoResponse, Response};
use futures::StreamExt;

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
    // `auto` uses mux where the relay offers it.
    agent.transport = relay
        .transport
        .parse()
        .map_err(|e| StartError::Relay(format!("relay.transport: {e}")))?;
    agent.mux_max_streams = relay.mux_streams;
    agent.relay_proxy = match &relay.relay_proxy {
        Some(url) => url
            .parse::<RelayProxy>()
            .map_err(|e| StartError::Relay(format!("relay.relay_proxy = {url}: {e}")))?
            .set_at(
                relay
                    .relay_proxy_from
                    .unwrap_or("gateway.toml relay.relay_proxy"),
            ),
        None => RelayProxy::Environment,
    };
    Agent::new(agent)
        .map(Some)
        .map_err(|e| StartError::Relay(e.to_string()))
}
