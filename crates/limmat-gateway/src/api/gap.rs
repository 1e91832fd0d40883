//! The GAP resources (`gateway-api.md` §2.2, §2.4, §2.5): scan lists and the SSE scan over the
//! one shared scan, single nodes, connecting and disconnecting, connection events, and `501`s
//! for the optional management resources.

pub mod filter;
pub mod node;

use super::problem::Problem;
use super::query::Params;
use super::target::{NoQuery, Node, Query};
use super::{Base, json_body, sse};
use crate::address::Address;
use crate::api::openapi_schemas as doc;
use crate::backend::{BleError, ScanMode};
use crate::ble::{Ble, ConnectError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use node::{NodeView, Tree};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Scan window default and range (§2.2), in ms.
const DURATION: (u64, u64, u64) = (2000, 100, 30000);
/// Connection timeout default and range (§2.5), in ms.
const TIMEOUT: (u64, u64, u64) = (10000, 100, 30000);

/// The routes of this part, over the BLE layer.
pub fn routes(ble: Arc<Ble>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_nodes))
        .routes(routes!(get_node, put_node))
        .routes(routes!(connect_node, disconnect_node))
        .routes(routes!(connection_events))
        .routes(routes!(get_management, put_management))
        .with_state(ble)
}

/// A number parameter within a range, with its default.
pub fn ranged(
    params: &mut Params,
    name: &str,
    (default, min, max): (u64, u64, u64),
) -> Result<u64, Problem> {
    let value = params
        .parsed::<u64>(name, "a number of milliseconds")?
        .unwrap_or(default);
    if !(min..=max).contains(&value) {
        return Err(Problem::bad_request(
            name,
            format!("`{name}` must be within {min}–{max}"),
        ));
    }
    Ok(value)
}

use super::json;

/// The node object of one node, as the backend knows it now.
pub async fn node_object(
    ble: &Ble,
    base: &Base,
    address: Address,
    tree: Tree,
    cached_name: bool,
) -> Result<Value, Problem> {
    let state = ble.backend().node(address).await?;
    let report = state.report.as_ref();
    let advertised = report.and_then(|r| r.name.clone());
    let name = if cached_name {
        advertised.or_else(|| state.name.clone())
    } else {
        advertised
    };
    let view = NodeView {
        address,
        report,
        name,
        connected: state.connected,
    };
    Ok(node::render(base, &view, tree))
}

/// Scan: the nodes seen in a scan window, the connected nodes, or a live advertisement stream.
#[utoipa::path(get, path = "/gap/nodes", tag = "gap",
    params(
        ("active" = inline(Option<doc::Flag>), Query, description = "Active scan (the default)"),
        ("passive" = inline(Option<doc::Flag>), Query, description = "Passive scan"),
        ("duration" = Option<u64>, Query, description = "Window in ms, 100–30000 (default 2000)"),
        ("event" = inline(Option<doc::Flag>), Query, description = "Stream advertisements as SSE"),
        ("enable" = inline(Option<doc::Flag>), Query, description = "`1` lists the connected nodes instead of scanning"),
        ("filter_mac" = Option<String>, Query, description = "SSE: addresses, comma-separated"),
        ("filter_rssi" = Option<i16>, Query, description = "SSE: minimum RSSI in dBm"),
        ("filter_name" = Option<String>, Query, description = "SSE: names; a trailing * matches a prefix"),
        ("filter_uuid" = Option<String>, Query, description = "SSE: service UUIDs"),
        ("filter_company" = Option<String>, Query, description = "SSE: company ids, 4 hex digits"),
        ("filter_duplicates" = inline(Option<doc::Flag>), Query, description = "SSE: only first or changed reports"),
    ),
    responses(
        (status = 200, description = "Node list `{self, scan, nodes}`, or with `event=1` a `text/event-stream` of `advertisement` events",
            content((doc::NodeList = "application/json"), ("text/event-stream"))),
        (status = 400, description = "Bad parameter", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
async fn list_nodes(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let active = params.flag("active")?;
    let passive = params.flag("passive")?;
    let event = params.flag("event")?.unwrap_or(false);
    let enable = params.flag("enable")?;
    let mode = match (active, passive) {
        (Some(true), Some(true)) => {
            return Err(Problem::bad_request(
                "passive",
                "`active=1` and `passive=1` exclude each other",
            ));
        }
        (_, Some(true)) => ScanMode::Passive,
        _ => ScanMode::Active,
    };
    if enable == Some(true) {
        params.finish()?;
        return connected_list(&ble, &base).await;
    }
    if event {
        let filter = filter::Filter::parse(&mut params)?;
        params.finish()?;
        return Ok(scan_stream(ble, base, mode, filter));
    }
    let duration = ranged(&mut params, "duration", DURATION)?;
    params.finish()?;
    let (ran, reports) = ble
        .scan()
        .nodes(mode, Duration::from_millis(duration))
        .await?;
    let nodes: Vec<Value> = reports
        .iter()
        .map(|r| {
            let view = NodeView {
                address: r.address,
                report: Some(r),
                name: r.name.clone(),
                connected: ble.is_connected(r.address),
            };
            node::render(&base, &view, Tree::Gap)
        })
        .collect();
    Ok(json(json!({
        "self": node::link(&base, "/gap/nodes"),
        "scan": {"mode": ran.as_str(), "requested": mode.as_str(), "durationMs": duration},
        "nodes": nodes,
    })))
}

/// `?enable=1`: the connected nodes (auto-reconnect is not offered, so none are only enabled).
async fn connected_list(ble: &Ble, base: &Base) -> Result<Response, Problem> {
    let mut nodes = Vec::new();
    for address in ble.connected() {
        match node_object(ble, base, address, Tree::Gap, true).await {
            Ok(node) => nodes.push(node),
            Err(p) if p.status == 404 => {}
            Err(p) => return Err(p),
        }
    }
    Ok(json(json!({
        "self": node::link(base, "/gap/nodes?enable=1"),
        "nodes": nodes,
    })))
}

/// `?event=1`: one `advertisement` event per report that passes the filters. The stream
/// keeps the scan active while it lives, unless it asked for a passive one.
fn scan_stream(ble: Arc<Ble>, base: Base, mode: ScanMode, filter: filter::Filter) -> Response {
    let demand = (mode == ScanMode::Active).then(|| ble.scan().demand_active());
    let reports = ble.subscribe();
    let events = futures::stream::unfold(
        (reports, filter, demand),
        move |(mut reports, mut filter, demand)| {
            let (ble, base) = (ble.clone(), base.clone());
            async move {
                loop {
                    match reports.recv().await {
                        Ok(report) if filter.pass(&report) => {
                            let view = NodeView {
                                address: report.address,
                                report: Some(&report),
                                name: report.name.clone(),
                                connected: ble.is_connected(report.address),
                            };
                            let node = node::render(&base, &view, Tree::Gap);
                            let event = sse::event("advertisement", None, &node);
                            return Some((event, (reports, filter, demand)));
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    sse::response(events)
}

/// One node as last seen.
#[utoipa::path(get, path = "/gap/nodes/{node}", tag = "gap",
    params(
        doc::NodeParam,
        ("name" = inline(Option<doc::Flag>), Query, description = "Fill `name` from advertising data or the cache"),
    ),
    responses(
        (status = 200, description = "The node", body = doc::Node),
        (status = 400, description = "Malformed node", body = doc::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Unknown node", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
async fn get_node(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Node(address): Node,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let name = params.flag("name")?.unwrap_or(false);
    params.finish()?;
    Ok(json(
        node_object(&ble, &base, address, Tree::Gap, name).await?,
    ))
}

/// Connect (`connect=1`) or disconnect (`enable=0`) a node.
#[utoipa::path(put, path = "/gap/nodes/{node}", tag = "gap",
    params(
        doc::NodeParam,
        ("connect" = inline(Option<doc::Flag>), Query, description = "`1` connects"),
        ("timeout" = Option<u64>, Query, description = "Connection timeout in ms, 100–30000 (default 10000)"),
        ("enable" = inline(Option<doc::Flag>), Query, description = "`0` disconnects; `1` (auto-reconnect) is not implemented"),
        ("interval" = Option<u32>, Query, description = "Connection interval [O]: not implemented"),
        ("latency" = Option<u32>, Query, description = "Connection latency [O]: not implemented"),
    ),
    responses(
        (status = 200, description = "The node, `connected` true or false", body = doc::Node),
        (status = 504, description = "`connect-timeout`", body = doc::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "An optional feature", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
async fn put_node(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Node(address): Node,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let connect_flag = params.flag("connect")?;
    let enable = params.flag("enable")?;
    let timeout = ranged(&mut params, "timeout", TIMEOUT)?;
    let conn_params = params.has("interval") || params.has("latency");
    let _ = (params.scalar("interval")?, params.scalar("latency")?);
    params.finish()?;
    match (connect_flag, enable) {
        (Some(true), Some(false)) => Err(Problem::bad_request(
            "enable",
            "`connect=1` and `enable=0` exclude each other",
        )),
        (Some(true), enable) => {
            if conn_params {
                return Err(Problem::not_implemented("connection parameters"));
            }
            connect(&ble, &base, address, timeout, enable == Some(true)).await
        }
        (Some(false), _) | (None, Some(false)) => disconnect(&ble, &base, address).await,
        (None, Some(true)) => Err(Problem::not_implemented("auto-reconnect (enable=1)")),
        (None, None) => Err(Problem::bad_request(
            "connect",
            "give `connect=1` to connect or `enable=0` to disconnect",
        )),
    }
}

async fn connect(
    ble: &Ble,
    base: &Base,
    address: Address,
    timeout_ms: u64,
    enable: bool,
) -> Result<Response, Problem> {
    if enable {
        return Err(Problem::not_implemented("auto-reconnect (enable=1)"));
    }
    match ble
        .connect(address, Duration::from_millis(timeout_ms))
        .await
    {
        Ok(()) => {}
        Err(ConnectError::Timeout) => {
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "connect-timeout",
                format!("the node did not connect within {timeout_ms} ms"),
            ));
        }
        Err(ConnectError::Ble(e)) => return Err(e.into()),
    }
    let mut node = node_object(ble, base, address, Tree::Gap, true).await?;
    node["connected"] = true.into();
    Ok(json(node))
}

async fn disconnect(ble: &Ble, base: &Base, address: Address) -> Result<Response, Problem> {
    match ble.disconnect(address).await {
        Ok(()) | Err(BleError::NotConnected) => {}
        Err(e) => return Err(e.into()),
    }
    let mut node = node_object(ble, base, address, Tree::Gap, true).await?;
    node["connected"] = false.into();
    Ok(json(node))
}

/// The optional body of `POST …/connection`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectBody {
    /// A JSON number: `15000.0` is the integer 15000, as JSON Schema's `integer` says.
    timeout_ms: Option<serde_json::Number>,
    enable: Option<bool>,
}

/// Connect a node.
#[utoipa::path(post, path = "/gap/nodes/{node}/connection", tag = "gap",
    params(doc::NodeParam),
    request_body(content = doc::ConnectBody, description = "Optional `{\"timeoutMs\": 10000, \"enable\": false}`", content_type = "application/json"),
    responses(
        (status = 200, description = "The node, connected", body = doc::Node),
        (status = 415, description = "Not JSON", body = doc::ProblemDoc, content_type = "application/problem+json"),
        (status = 501, description = "`enable: true` (auto-reconnect [O]) is not implemented", body = doc::ProblemDoc, content_type = "application/problem+json"),
        (status = 504, description = "`connect-timeout`", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
async fn connect_node(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Node(address): Node,
    _: NoQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let body: ConnectBody = json_body::optional(&headers, body, &["timeoutMs", "enable"])
        .await?
        .unwrap_or_default();
    let timeout = match &body.timeout_ms {
        None => Some(TIMEOUT.0),
        Some(n) => n.as_u64().or_else(|| {
            // An integral float within the range converts exactly.
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(f))
                .map(|f| f as u64)
        }),
    };
    let Some(timeout) = timeout.filter(|t| (TIMEOUT.1..=TIMEOUT.2).contains(t)) else {
        return Err(Problem::bad_request(
            "timeoutMs",
            format!("`timeoutMs` must be within {}–{}", TIMEOUT.1, TIMEOUT.2),
        ));
    };
    connect(&ble, &base, address, timeout, body.enable == Some(true)).await
}

/// Disconnect a node.
#[utoipa::path(delete, path = "/gap/nodes/{node}/connection", tag = "gap",
    params(doc::NodeParam),
    responses((status = 200, description = "The node, disconnected", body = doc::Node)))]
async fn disconnect_node(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Node(address): Node,
    _: NoQuery,
) -> Result<Response, Problem> {
    disconnect(&ble, &base, address).await
}

/// A live stream of connection events.
#[utoipa::path(get, path = "/gap/connection-events", tag = "gap",
    responses((status = 200, description = "`text/event-stream` of `connected`, `disconnected` and `connect-timeout` events with `{node, reason}`", content_type = "text/event-stream")))]
async fn connection_events(State(ble): State<Arc<Ble>>, _: NoQuery) -> Result<Response, Problem> {
    let events = futures::stream::unfold(ble.connection_events(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(sse::response(events.map(|e| {
        let name = match (e.connected, e.reason.as_str()) {
            (true, _) => "connected",
            (false, "connect-timeout") => "connect-timeout",
            (false, _) => "disconnected",
        };
        sse::event(
            name,
            None,
            &json!({"node": e.address.handle(), "reason": e.reason}),
        )
    })))
}

/// Adapter management [O]: not implemented.
#[utoipa::path(get, path = "/management/nodes/{node}", tag = "gap",
    params(doc::NodeParam),
    responses((status = 501, description = "Pairing is not implemented", body = doc::ProblemDoc, content_type = "application/problem+json")))]
async fn get_management(Node(_node): Node) -> Result<Response, Problem> {
    Err(Problem::not_implemented("pairing and bonding (management)"))
}

/// Adapter management [O]: not implemented.
#[utoipa::path(put, path = "/management/nodes/{node}", tag = "gap",
    params(
        doc::NodeParam,
        ("bond" = inline(Option<doc::Flag>), Query, description = "Pair (`1`) or remove the bond (`0`)"),
    ),
    responses((status = 501, description = "Pairing is not implemented", body = doc::ProblemDoc, content_type = "application/problem+json")))]
async fn put_management(Node(_node): Node) -> Result<Response, Problem> {
    Err(Problem::not_implemented("pairing and bonding (management)"))
}
