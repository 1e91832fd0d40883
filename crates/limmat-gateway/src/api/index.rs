//! `GET /` (`gateway-api.md` §1.3): what this gateway is (name, version, backend, adapter,
//! capability flags), whether its relay link is up, and links to the top resources, so a client
//! can start from the root alone.

use super::Base;
use super::gap::node::link;
use super::problem::Problem;
use super::target::NoQuery;
use crate::api::openapi_schemas as doc;
use crate::ble::Ble;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The relay's status as the index shows it (e.g. `{"configured": true, "connected": 3}`),
/// asked for on every request.
pub type RelayStatus = Arc<dyn Fn() -> Value + Send + Sync>;

/// What the index needs beyond the BLE layer; the server fills it.
#[derive(Clone)]
pub struct IndexInfo {
    /// `gateway.name`.
    pub name: String,
    pub relay: RelayStatus,
}

#[cfg(feature = "test-util")]
impl IndexInfo {
    /// A gateway without a relay.
    pub fn local(name: impl Into<String>) -> IndexInfo {
        IndexInfo {
            name: name.into(),
            relay: Arc::new(|| json!({"configured": false})),
        }
    }
}

#[derive(Clone)]
struct Index {
    ble: Arc<Ble>,
    info: IndexInfo,
}

/// The route of this part.
pub fn routes(ble: Arc<Ble>, info: IndexInfo) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(index))
        .with_state(Index { ble, info })
}

/// The index: name, version, backend, adapter, capabilities, relay status and links.
#[utoipa::path(operation_id = "index", get, path = "/", tag = "index",
    responses((status = 200, description = "Name, version, backend, adapter, capabilities, relay status and links", body = doc::Index)))]
async fn index(State(index): State<Index>, base: Base, _: NoQuery) -> Result<Response, Problem> {
    let info = index.ble.backend().info().await;
    Ok(Json(json!({
        "self": link(&base, "/"),
        "name": index.info.name,
        "version": env!("CARGO_PKG_VERSION"),
        "backend": info.backend,
        "adapter": {"name": info.name, "address": info.address, "powered": info.powered},
        "capabilities": info.capabilities,
        "relay": (index.info.relay)(),
        "links": {
            "nodes": link(&base, "/gap/nodes"),
            "connectedNodes": link(&base, "/gatt/nodes"),
            "beacons": link(&base, "/beacon/beacons"),
            "events": link(&base, "/beacon/events"),
            "subscriptions": link(&base, "/beacon/subscriptions"),
            "openapi": link(&base, "/openapi.json"),
        },
    }))
    .into_response())
}
