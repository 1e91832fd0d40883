//! The GATT resources (`gateway-api.md` §2.3, §2.6): discovery views, reads and writes with the
//! property checks made before anything goes on air, notifications as SSE through the shared
//! [`NotifyHub`](crate::ble::NotifyHub), the cached value, descriptors with the CCCD
//! translation, and `501`s for the optional read-by-UUID, read-multiple and reliable write.

mod objects;
mod values;

use super::Base;
use super::gap::node::Tree;
use super::gap::node_object;
use super::problem::Problem;
use super::query::Params;
use super::target::{Attr, NoQuery, Node, Query};
use crate::address::Address;
use crate::api::openapi_schemas as doc;
use crate::backend::{Characteristic, Descriptor, Handle};
use crate::ble::Ble;
use crate::uuid::Uuid;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use objects::{characteristic_json, descriptor_json, service_json};
use serde_json::{Value, json};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this part, over the BLE layer.
pub fn routes(ble: Arc<Ble>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_nodes))
        .routes(routes!(get_node))
        .routes(routes!(list_services))
        .routes(routes!(get_service))
        .routes(routes!(service_characteristics))
        .routes(routes!(list_characteristics))
        .routes(routes!(get_characteristic, put_characteristic))
        .routes(routes!(values::read_value, values::write_value_body))
        .routes(routes!(values::write_value))
        .routes(routes!(values::by_uuid_or_multiple, values::reliable_write))
        .routes(routes!(characteristic_descriptors))
        .routes(routes!(get_descriptor))
        .routes(routes!(values::read_descriptor))
        .routes(routes!(values::write_descriptor))
        .with_state(ble)
}

/// An optional `uuid` parameter.
fn uuid_param(params: &mut Params) -> Result<Option<Uuid>, Problem> {
    params
        .scalar("uuid")?
        .map(|u| {
            u.parse()
                .map_err(|_| Problem::bad_request("uuid", format!("`{u}` is not a UUID")))
        })
        .transpose()
}

/// The node, which must be known (`404`) and connected (`412 not-connected`).
async fn connected(ble: &Ble, address: Address) -> Result<Address, Problem> {
    let state = ble.backend().node(address).await?;
    if !state.connected {
        return Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "not-connected",
            format!("node {} is not connected", address.handle()),
        ));
    }
    Ok(address)
}

async fn find_characteristic(
    ble: &Ble,
    address: Address,
    handle: Handle,
) -> Result<Characteristic, Problem> {
    ble.backend()
        .characteristics(address, None)
        .await?
        .into_iter()
        .find(|c| c.handle == handle)
        .ok_or_else(|| Problem::not_found(format!("no characteristic {handle:04x}")))
}

async fn find_descriptor(
    ble: &Ble,
    address: Address,
    handle: Handle,
) -> Result<Descriptor, Problem> {
    ble.backend()
        .descriptors(address, None)
        .await?
        .into_iter()
        .find(|d| d.handle == handle)
        .ok_or_else(|| Problem::not_found(format!("no descriptor {handle:04x}")))
}

/// The connected nodes, with links to their GATT database.
#[utoipa::path(operation_id = "list_connected_nodes", get, path = "/gatt/nodes", tag = "gatt",
    responses((status = 200, description = "The connected nodes `{self, nodes}`", body = doc::NodeList)))]
async fn list_nodes(
    State(ble): State<Arc<Ble>>,
    base: Base,
    _: NoQuery,
) -> Result<Response, Problem> {
    let mut nodes = Vec::new();
    for address in ble.connected() {
        match node_object(&ble, &base, address, Tree::Gatt, true).await {
            Ok(node) if node["connected"] == true => nodes.push(node),
            Ok(_) => {}
            Err(p) if p.status == 404 => {}
            Err(p) => return Err(p),
        }
    }
    Ok(super::json(json!({
        "self": objects::link(&base, "/gatt/nodes"),
        "nodes": nodes,
    })))
}

/// One connected node, with links to its services and characteristics.
#[utoipa::path(operation_id = "get_connected_node", get, path = "/gatt/nodes/{node}", tag = "gatt",
    params(doc::NodeParam),
    responses(
        (status = 200, description = "The node, with links to its services and characteristics", body = doc::Node),
        (status = 412, description = "`not-connected`", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
async fn get_node(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Node(address): Node,
    _: NoQuery,
) -> Result<Response, Problem> {
    connected(&ble, address).await?;
    Ok(super::json(
        node_object(&ble, &base, address, Tree::Gatt, true).await?,
    ))
}

/// The services of a connected node.
#[utoipa::path(get, path = "/gatt/nodes/{node}/services", tag = "gatt",
    params(
        doc::NodeParam,
        ("primary" = inline(Option<doc::Flag>), Query, description = "Primary services only"),
        ("uuid" = Option<String>, Query, description = "Primary services with this UUID (16, 32 or 128 bits)"),
    ),
    responses((status = 200, description = "`{self, services}`", body = doc::ServiceList)))]
async fn list_services(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Node(address): Node,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let primary = params.flag("primary")?.unwrap_or(false);
    let uuid = uuid_param(&mut params)?;
    params.finish()?;
    connected(&ble, address).await?;
    let services: Vec<Value> = ble
        .backend()
        .services(address)
        .await?
        .iter()
        .filter(|s| !(primary || uuid.is_some()) || s.primary)
        .filter(|s| uuid.is_none_or(|u| s.uuid == u))
        .map(|s| service_json(&base, address, s))
        .collect();
    Ok(super::json(json!({
        "self": objects::link(&base, &format!("/gatt/nodes/{}/services", address.handle())),
        "services": services,
    })))
}

/// One service.
#[utoipa::path(get, path = "/gatt/nodes/{node}/services/{service}", tag = "gatt",
    params(
        doc::ServicePath,
    ),
    responses((status = 200, description = "The service", body = doc::Service)))]
async fn get_service(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    _: NoQuery,
) -> Result<Response, Problem> {
    connected(&ble, address).await?;
    let service = ble
        .backend()
        .services(address)
        .await?
        .into_iter()
        .find(|s| s.handle == handle)
        .ok_or_else(|| Problem::not_found(format!("no service {handle:04x}")))?;
    Ok(super::json(service_json(&base, address, &service)))
}

/// The characteristics of one service.
#[utoipa::path(get, path = "/gatt/nodes/{node}/services/{service}/characteristics", tag = "gatt",
    params(
        doc::ServicePath,
        ("uuid" = Option<String>, Query, description = "Only this characteristic UUID"),
    ),
    responses((status = 200, description = "`{self, characteristics}`", body = doc::CharacteristicList)))]
async fn service_characteristics(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let uuid = uuid_param(&mut params)?;
    params.finish()?;
    connected(&ble, address).await?;
    if !ble
        .backend()
        .services(address)
        .await?
        .iter()
        .any(|s| s.handle == handle)
    {
        return Err(Problem::not_found(format!("no service {handle:04x}")));
    }
    let list = ble.backend().characteristics(address, Some(handle)).await?;
    let path = format!(
        "/gatt/nodes/{}/services/{handle:04x}/characteristics",
        address.handle()
    );
    characteristics_list(&ble, &base, address, list, uuid, &path).await
}

/// Every characteristic of a connected node.
#[utoipa::path(get, path = "/gatt/nodes/{node}/characteristics", tag = "gatt",
    params(
        doc::NodeParam,
        ("uuid" = Option<String>, Query, description = "Only this characteristic UUID"),
    ),
    responses((status = 200, description = "`{self, characteristics}`", body = doc::CharacteristicList)))]
async fn list_characteristics(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Node(address): Node,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let uuid = uuid_param(&mut params)?;
    params.finish()?;
    connected(&ble, address).await?;
    let list = ble.backend().characteristics(address, None).await?;
    let path = format!("/gatt/nodes/{}/characteristics", address.handle());
    characteristics_list(&ble, &base, address, list, uuid, &path).await
}

async fn characteristics_list(
    ble: &Ble,
    base: &Base,
    address: Address,
    list: Vec<Characteristic>,
    uuid: Option<Uuid>,
    path: &str,
) -> Result<Response, Problem> {
    let mut out = Vec::new();
    for c in list.iter().filter(|c| uuid.is_none_or(|u| c.uuid == u)) {
        let notifying = ble.notify().notifying(address, c.handle).await;
        out.push(characteristic_json(base, address, c, notifying));
    }
    Ok(super::json(json!({
        "self": objects::link(base, path),
        "characteristics": out,
    })))
}

/// One characteristic declaration.
#[utoipa::path(get, path = "/gatt/nodes/{node}/characteristics/{characteristic}", tag = "gatt",
    params(
        doc::CharacteristicPath,
    ),
    responses((status = 200, description = "The characteristic declaration", body = doc::Characteristic)))]
async fn get_characteristic(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    _: NoQuery,
) -> Result<Response, Problem> {
    connected(&ble, address).await?;
    let c = find_characteristic(&ble, address, handle).await?;
    let notifying = ble.notify().notifying(address, handle).await;
    Ok(super::json(characteristic_json(
        &base, address, &c, notifying,
    )))
}

/// Turn notification or indication on or off.
#[utoipa::path(put, path = "/gatt/nodes/{node}/characteristics/{characteristic}", tag = "gatt",
    params(
        doc::CharacteristicPath,
        ("notify" = inline(Option<doc::Flag>), Query, description = "Turn notification on (`1`) or off (`0`)"),
        ("indicate" = inline(Option<doc::Flag>), Query, description = "Turn indication on (`1`) or off (`0`)"),
    ),
    responses(
        (status = 200, description = "The characteristic, with `notifying`", body = doc::Characteristic),
        (status = 405, description = "`not-permitted`: the properties lack notify or indicate", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
async fn put_characteristic(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let notify = params.flag("notify")?;
    let indicate = params.flag("indicate")?;
    params.finish()?;
    let (kind, on) = match (notify, indicate) {
        (Some(on), None) => (crate::backend::NotifyKind::Notify, on),
        (None, Some(on)) => (crate::backend::NotifyKind::Indicate, on),
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "indicate",
                "give either `notify` or `indicate`",
            ));
        }
        (None, None) => {
            return Err(Problem::bad_request(
                "notify",
                "give `notify=1|0` or `indicate=1|0`",
            ));
        }
    };
    connected(&ble, address).await?;
    let c = find_characteristic(&ble, address, handle).await?;
    values::set_notifying(&ble, address, &c, kind, on).await?;
    let notifying = ble.notify().notifying(address, handle).await;
    Ok(super::json(characteristic_json(
        &base, address, &c, notifying,
    )))
}

/// The descriptors of one characteristic.
#[utoipa::path(get, path = "/gatt/nodes/{node}/characteristics/{characteristic}/descriptors", tag = "gatt",
    params(
        doc::CharacteristicPath,
    ),
    responses((status = 200, description = "`{self, descriptors}`", body = doc::DescriptorList)))]
async fn characteristic_descriptors(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    _: NoQuery,
) -> Result<Response, Problem> {
    connected(&ble, address).await?;
    find_characteristic(&ble, address, handle).await?;
    let descriptors: Vec<Value> = ble
        .backend()
        .descriptors(address, Some(handle))
        .await?
        .iter()
        .map(|d| descriptor_json(&base, address, d))
        .collect();
    Ok(super::json(json!({
        "self": objects::link(&base, &format!(
            "/gatt/nodes/{}/characteristics/{handle:04x}/descriptors", address.handle())),
        "descriptors": descriptors,
    })))
}

/// One descriptor.
#[utoipa::path(get, path = "/gatt/nodes/{node}/descriptors/{descriptor}", tag = "gatt",
    params(
        doc::DescriptorPath,
    ),
    responses((status = 200, description = "The descriptor", body = doc::Descriptor)))]
async fn get_descriptor(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    _: NoQuery,
) -> Result<Response, Problem> {
    connected(&ble, address).await?;
    let d = find_descriptor(&ble, address, handle).await?;
    Ok(super::json(descriptor_json(&base, address, &d)))
}
