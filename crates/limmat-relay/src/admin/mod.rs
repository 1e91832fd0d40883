//! The admin listener (`--admin 127.0.0.1:9090`): health and readiness probes, Prometheus
//! metrics, a JSON API over the online domains and their connections, and the live dashboard.
//!
//! It is a separate listener because no path on a public listener is reserved (spec 2.1.5).
//! Everything but the probes needs `Authorization: Bearer <token>` when a token is configured,
//! which is required whenever the admin listener is not on a loopback address. The dashboard
//! page itself is static and asks for the token when the API answers 401.
//!
//! In a cluster, `/api/cluster` shows this node, its live set and every member it knows of with
//! its state, and each domain carries its `owner` (7.3) in this node's view.
//!
//! Domains that use the forward proxy carry a `proxy` object (connections, active, denied,
//! errors, bytes) in `/api/domains[/{domain}]`, and are listed even without a device online.

pub(crate) mod listener;

use crate::context::RelayContext;
use crate::metrics;
use crate::proxy_stats::ProxySnapshot;
use crate::snapshot::DomainSnapshot;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Serves the admin API until `stop` is cancelled.
pub(crate) async fn serve(ctx: Arc<RelayContext>, listener: TcpListener, stop: CancellationToken) {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/domains", get(domains))
        .route("/api/domains/{domain}", get(domain).delete(disconnect))
        .route("/api/connections", get(connections))
        .route("/api/cluster", get(cluster))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    let app = Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(ctx);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening");
    }
    listener::serve(listener, app, stop).await;
}

async fn require_token(
    State(ctx): State<Arc<RelayContext>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &ctx.admin_token else {
        return next.run(request).await;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(presented.ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "admin token required\n",
        )
            .into_response()
    }
}

/// Not ready while draining (a cluster node from the start of its handover), so load
/// balancers stop sending clients (7.6).
async fn readyz(State(ctx): State<Arc<RelayContext>>) -> Response {
    if ctx.shutdown.is_cancelled() || ctx.drain_deadline.get().is_some() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(ctx): State<Arc<RelayContext>>) -> Response {
    let domains = ctx.registry.snapshot();
    metrics::cluster_state(ctx.cluster.live().borrow().members().len());
    let body = metrics::render(&ctx.stats, &domains);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn domains(State(ctx): State<Arc<RelayContext>>) -> axum::Json<Vec<serde_json::Value>> {
    let mut online = ctx.registry.snapshot();
    let mut proxied = match &ctx.proxy {
        Some(proxy) => proxy.stats.snapshot(),
        None => Vec::new(),
    };
    // A domain that only uses the forward proxy is listed too, with its proxy counters.
    let missing: Vec<DomainSnapshot> = proxied
        .iter()
        .filter(|(name, _)| online.binary_search_by(|d| d.domain.cmp(name)).is_err())
        .map(|(name, _)| offline(name))
        .collect();
    online.extend(missing);
    online.sort_by(|a, b| a.domain.cmp(&b.domain));
    let list = online
        .into_iter()
        .map(|d| {
            let counters = proxied
                .iter()
                .position(|(name, _)| *name == d.domain)
                .map(|i| proxied.swap_remove(i).1);
            let owner = owner_of(&ctx, &d.domain);
            with_owner(with_proxy(d, counters), owner)
        })
        .collect();
    axum::Json(list)
}

async fn domain(State(ctx): State<Arc<RelayContext>>, Path(domain): Path<String>) -> Response {
    let key = domain.to_ascii_lowercase();
    let counters = ctx.proxy.as_ref().and_then(|p| p.stats.snapshot_of(&key));
    let owner = owner_of(&ctx, &key);
    match (ctx.registry.snapshot_of(&key), counters) {
        (Some(d), counters) => {
            axum::Json(with_owner(with_proxy(d, counters), owner)).into_response()
        }
        (None, Some(counters)) => {
            axum::Json(with_owner(with_proxy(offline(&key), Some(counters)), owner)).into_response()
        }
        (None, None) => {
            let body = serde_json::json!({ "error": format!("domain {domain:?} is not online"), "owner": owner });
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

/// This node, its live set and the members it knows of (7.2).
async fn cluster(State(ctx): State<Arc<RelayContext>>) -> axum::Json<serde_json::Value> {
    axum::Json(ctx.cluster.members_json())
}

/// The node that owns `domain` in this node's view (7.3).
fn owner_of(ctx: &RelayContext, domain: &str) -> Option<String> {
    let live = ctx.cluster.live().borrow().clone();
    live.owner(domain).map(|m| m.node_id.to_string())
}

/// A domain's JSON with its `owner`.
fn with_owner(mut value: serde_json::Value, owner: Option<String>) -> serde_json::Value {
    if let Some(map) = value.as_object_mut() {
        map.insert("owner".into(), serde_json::json!(owner));
    }
    value
}

/// A domain's JSON with its forward-proxy counters (6.5) under `proxy`, when it has any.
fn with_proxy(d: DomainSnapshot, counters: Option<ProxySnapshot>) -> serde_json::Value {
    let mut value = serde_json::to_value(d).unwrap_or_default();
    if let (Some(map), Some(counters)) = (value.as_object_mut(), counters) {
        map.insert(
            "proxy".into(),
            serde_json::to_value(counters).unwrap_or_default(),
        );
    }
    value
}

/// A domain with no device connection, for one that only uses the forward proxy.
fn offline(domain: &str) -> DomainSnapshot {
    DomainSnapshot {
        domain: domain.to_owned(),
        waiting: 0,
        waiting_clients: 0,
        pipes: 0,
        mux_streams: 0,
        bytes_in: 0,
        bytes_out: 0,
        online_since: 0,
        devices: Vec::new(),
        pipe_list: Vec::new(),
    }
}

async fn disconnect(State(ctx): State<Arc<RelayContext>>, Path(domain): Path<String>) -> Response {
    if ctx.registry.disconnect(&domain.to_ascii_lowercase()) {
        tracing::info!(domain, "domain disconnected through the admin API");
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(&domain)
    }
}

fn not_found(domain: &str) -> Response {
    let body = serde_json::json!({ "error": format!("domain {domain:?} is not online") });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

#[derive(serde::Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

const MAX_LIMIT: usize = 1000;

/// Every device connection and pipe, oldest first, a page at a time.
async fn connections(State(ctx): State<Arc<RelayContext>>, Query(page): Query<Page>) -> Response {
    if page.limit == 0 || page.limit > MAX_LIMIT {
        let body = serde_json::json!({ "error": format!("limit must be from 1 to {MAX_LIMIT}") });
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let mut all: Vec<serde_json::Value> = Vec::new();
    for d in ctx.registry.snapshot() {
        for dev in &d.devices {
            all.push(serde_json::json!({
                "kind": "device", "domain": d.domain, "id": dev.id, "since": dev.since,
                "device": dev.addr, "transport": dev.transport, "pass_through": dev.pass_through,
            }));
        }
        for p in &d.pipe_list {
            all.push(serde_json::json!({
                "kind": "pipe", "domain": d.domain, "id": p.id, "since": p.since,
                "client": p.client, "device": p.device, "leg": p.leg,
                "bytes_in": p.bytes_in, "bytes_out": p.bytes_out,
            }));
        }
    }
    all.sort_by_key(|c| (c["since"].as_u64(), c["id"].as_u64()));
    let total = all.len();
    let items: Vec<_> = all.into_iter().skip(page.offset).take(page.limit).collect();
    axum::Json(serde_json::json!({
        "total": total, "offset": page.offset, "limit": page.limit, "connections": items,
    }))
    .into_response()
}
