//! Values (`gateway-api.md` §2.3, §2.6): reads, writes (path and body form), notification and
//! indication streams, the cached value, descriptor values with the CCCD translation, and the
//! optional node-wide value resources (`501`). Input is checked in full (hex, length,
//! parameters, properties) before anything goes on air.

use super::objects::{Attribute, value_json, value_path};
use super::{connected, find_characteristic, find_descriptor};
use crate::address::Address;
use crate::api::openapi_schemas as doc;
use crate::api::problem::Problem;
use crate::api::query::Params;
use crate::api::target::{Attr, AttrValue, Node, Query, parse_value};
use crate::api::{Base, json_body, sse};
use crate::backend::{BleError, Characteristic, Handle, NotifyKind, WriteMode, props};
use crate::ble::{Ble, NotifyEvent};
use crate::hex;
use crate::uuid::Uuid;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Client Characteristic Configuration.
const CCCD: Uuid = Uuid::from_u16(0x2902);

/// The characteristic's properties must include `bit` (§2.6: `405 not-permitted`).
fn require(c: &Characteristic, bit: u8) -> Result<(), Problem> {
    if c.properties & bit == 0 {
        return Err(BleError::NotPermitted.into());
    }
    Ok(())
}

fn kind_bit(kind: NotifyKind) -> u8 {
    match kind {
        NotifyKind::Notify => props::NOTIFY,
        NotifyKind::Indicate => props::INDICATE,
    }
}

/// `PUT …?notify=1|0` and CCCD writes: pin the shared subscription on, or unpin it.
pub async fn set_notifying(
    ble: &Ble,
    address: Address,
    c: &Characteristic,
    kind: NotifyKind,
    on: bool,
) -> Result<(), Problem> {
    if on {
        require(c, kind_bit(kind))?;
    }
    ble.notify().pin((address, c.handle, kind), on).await?;
    Ok(())
}

use crate::api::json;

/// Read a characteristic value, the last notified value, or a live notification stream.
#[utoipa::path(get, path = "/gatt/nodes/{node}/characteristics/{characteristic}/value", tag = "gatt",
    params(
        doc::CharacteristicPath,
        ("long" = inline(Option<doc::Flag>), Query, description = "Accepted; reads always return the whole value"),
        ("notify" = inline(Option<doc::Flag>), Query, description = "The latest notified value (or, with `event=1`, the stream)"),
        ("indicate" = inline(Option<doc::Flag>), Query, description = "The latest indicated value (or, with `event=1`, the stream)"),
        ("event" = inline(Option<doc::Flag>), Query, description = "With `notify=1` or `indicate=1`: SSE stream"),
    ),
    responses(
        (status = 200, description = "The value `{self, handle, value}`, the cached value `{self, handle, value, timestamp}`, or with `event=1` a `text/event-stream` of notifications or indications",
            content((doc::AttributeValue = "application/json"), ("text/event-stream"))),
        (status = 405, description = "`not-permitted`", body = doc::ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "`not-connected`, or the cached value while notification is off", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn read_value(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let _long = params.flag("long")?;
    let notify = params.flag("notify")?.unwrap_or(false);
    let indicate = params.flag("indicate")?.unwrap_or(false);
    let event = params.flag("event")?.unwrap_or(false);
    params.finish()?;
    let kind = match (notify, indicate) {
        (true, true) => {
            return Err(Problem::bad_request(
                "indicate",
                "give either `notify=1` or `indicate=1`",
            ));
        }
        (true, false) => Some(NotifyKind::Notify),
        (false, true) => Some(NotifyKind::Indicate),
        (false, false) => None,
    };
    if event && kind.is_none() {
        return Err(Problem::bad_request(
            "event",
            "`event=1` needs `notify=1` or `indicate=1`",
        ));
    }
    connected(&ble, address).await?;
    let c = find_characteristic(&ble, address, handle).await?;
    match kind {
        Some(kind) if event => {
            require(&c, kind_bit(kind))?;
            stream(&ble, address, handle, kind).await
        }
        Some(kind) => cached(&ble, &base, address, handle, kind).await,
        None => {
            require(&c, props::READ)?;
            let value = ble.backend().read(address, handle).await?;
            Ok(json(value_json(
                &base,
                address,
                Attribute::Characteristic,
                handle,
                &value,
            )))
        }
    }
}

/// The SSE stream of one characteristic's notifications or indications; it ends with `event:
/// disconnected` when the link drops.
async fn stream(
    ble: &Ble,
    address: Address,
    handle: Handle,
    kind: NotifyKind,
) -> Result<Response, Problem> {
    let opened = ble.notify().open((address, handle, kind)).await?;
    let name = match kind {
        NotifyKind::Notify => "notification",
        NotifyKind::Indicate => "indication",
    };
    let node = address.handle();
    let events = futures::stream::unfold(Some(opened), move |state| {
        let node = node.clone();
        async move {
            let mut opened = state?;
            loop {
                match opened.events.recv().await {
                    Ok(NotifyEvent::Value {
                        id,
                        value,
                        received,
                    }) => {
                        let data = json!({
                            "handle": format!("{handle:04x}"),
                            "value": hex::encode(&value),
                            "timestamp": humantime::format_rfc3339_millis(received).to_string(),
                        });
                        return Some((sse::event(name, Some(id), &data), Some(opened)));
                    }
                    Ok(NotifyEvent::Disconnected { reason }) => {
                        let data = json!({"node": node, "handle": format!("{handle:04x}"), "reason": &*reason});
                        return Some((sse::event("disconnected", None, &data), None));
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(sse::response(events))
}

/// The latest notified or indicated value; `412` while the subscription is off.
async fn cached(
    ble: &Ble,
    base: &Base,
    address: Address,
    handle: Handle,
    kind: NotifyKind,
) -> Result<Response, Problem> {
    let Some(cached) = ble.notify().cached((address, handle, kind)).await else {
        return Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "not-notifying",
            format!(
                "{} is off for {handle:04x}; turn it on with PUT …?{}=1",
                kind.as_str(),
                kind.as_str()
            ),
        ));
    };
    let path = value_path(address, Attribute::Characteristic, handle);
    let query = format!("?{}=1", kind.as_str());
    Ok(json(json!({
        "self": {"href": base.href(&format!("{path}{query}"))},
        "handle": format!("{handle:04x}"),
        "value": cached.value.as_ref().map(|(v, _)| hex::encode(v)),
        "timestamp": cached.value.as_ref().map(|(_, t)| humantime::format_rfc3339_millis(*t).to_string()),
    })))
}

/// `noresponse=1` and `long=1` of a characteristic write, as a write mode.
fn write_mode(params: &mut Params) -> Result<WriteMode, Problem> {
    let noresponse = params.flag("noresponse")?.unwrap_or(false);
    let long = params.flag("long")?.unwrap_or(false);
    if noresponse && long {
        return Err(Problem::bad_request(
            "long",
            "`noresponse=1` and `long=1` exclude each other",
        ));
    }
    Ok(if noresponse {
        WriteMode::Command
    } else {
        WriteMode::Request
    })
}

async fn write_characteristic(
    ble: &Ble,
    base: &Base,
    address: Address,
    handle: Handle,
    value: Vec<u8>,
    mode: WriteMode,
) -> Result<Response, Problem> {
    connected(ble, address).await?;
    let c = find_characteristic(ble, address, handle).await?;
    require(
        &c,
        match mode {
            WriteMode::Command => props::WRITE_WITHOUT_RESPONSE,
            _ => props::WRITE,
        },
    )?;
    ble.backend().write(address, handle, &value, mode).await?;
    Ok(json(value_json(
        base,
        address,
        Attribute::Characteristic,
        handle,
        &value,
    )))
}

/// Write a characteristic value given in the path.
#[utoipa::path(put, path = "/gatt/nodes/{node}/characteristics/{characteristic}/value/{value}", tag = "gatt",
    params(
        doc::CharacteristicPath,
        doc::ValueParam,
        ("noresponse" = inline(Option<doc::Flag>), Query, description = "Write command (no response)"),
        ("long" = inline(Option<doc::Flag>), Query, description = "Long write"),
    ),
    responses(
        (status = 200, description = "The value written `{self, handle, value}`", body = doc::AttributeValue),
        (status = 400, description = "Bad hex, bad length, or an ATT error with `attError`", body = doc::ProblemDoc, content_type = "application/problem+json"),
        (status = 405, description = "`not-permitted`", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn write_value(
    State(ble): State<Arc<Ble>>,
    base: Base,
    AttrValue(address, handle, value): AttrValue,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let mode = write_mode(&mut params)?;
    params.finish()?;
    write_characteristic(&ble, &base, address, handle, value, mode).await
}

/// The body of a body-form write.
#[derive(Debug, serde::Deserialize)]
struct ValueBody {
    value: String,
}

/// Write a characteristic value given in a JSON body.
#[utoipa::path(put, path = "/gatt/nodes/{node}/characteristics/{characteristic}/value", tag = "gatt",
    params(
        doc::CharacteristicPath,
        ("noresponse" = inline(Option<doc::Flag>), Query, description = "Write command (no response)"),
        ("long" = inline(Option<doc::Flag>), Query, description = "Long write"),
    ),
    request_body(content = doc::ValueBody, description = "`{\"value\": \"<hex>\"}`, 0–512 bytes", content_type = "application/json"),
    responses(
        (status = 200, description = "The value written", body = doc::AttributeValue),
        (status = 415, description = "Not JSON", body = doc::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn write_value_body(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    Query(mut params): Query,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let mode = write_mode(&mut params)?;
    params.finish()?;
    let body: ValueBody = json_body::optional(&headers, body, &["value"])
        .await?
        .ok_or_else(|| Problem::bad_request("value", "the body `{\"value\": hex}` is missing"))?;
    let value = parse_value(&body.value, 0)?;
    write_characteristic(&ble, &base, address, handle, value, mode).await
}

/// Read by UUID or read multiple [O]: not implemented.
#[utoipa::path(get, path = "/gatt/nodes/{node}/characteristics/value", tag = "gatt",
    params(doc::NodeParam),
    responses((status = 501, description = "Read by UUID and read multiple [O] are not implemented", body = doc::ProblemDoc, content_type = "application/problem+json")))]
pub async fn by_uuid_or_multiple(
    Node(_node): Node,
    Query(params): Query,
) -> Result<Response, Problem> {
    if params.has("multiple") {
        return Err(Problem::not_implemented("read multiple"));
    }
    Err(Problem::not_implemented("read by characteristic UUID"))
}

/// Reliable write [O]: not implemented.
#[utoipa::path(put, path = "/gatt/nodes/{node}/characteristics/value", tag = "gatt",
    params(doc::NodeParam),
    responses((status = 501, description = "Reliable write [O] is not implemented", body = doc::ProblemDoc, content_type = "application/problem+json")))]
pub async fn reliable_write(
    Node(_node): Node,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    json_body::optional::<serde_json::Value>(&headers, body, &["writes"]).await?;
    Err(Problem::not_implemented("reliable write"))
}

/// Read a descriptor value.
#[utoipa::path(get, path = "/gatt/nodes/{node}/descriptors/{descriptor}/value", tag = "gatt",
    params(
        doc::DescriptorPath,
        ("long" = inline(Option<doc::Flag>), Query, description = "Accepted; reads always return the whole value"),
    ),
    responses((status = 200, description = "The value; a CCCD reports the current state", body = doc::AttributeValue)))]
pub async fn read_descriptor(
    State(ble): State<Arc<Ble>>,
    base: Base,
    Attr(address, handle): Attr,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let _long = params.flag("long")?;
    params.finish()?;
    connected(&ble, address).await?;
    let d = find_descriptor(&ble, address, handle).await?;
    let value = if d.uuid == CCCD {
        match ble.notify().notifying(address, d.characteristic).await {
            Some(NotifyKind::Notify) => vec![0x01, 0x00],
            Some(NotifyKind::Indicate) => vec![0x02, 0x00],
            None => vec![0x00, 0x00],
        }
    } else {
        ble.backend().read(address, handle).await?
    };
    Ok(json(value_json(
        &base,
        address,
        Attribute::Descriptor,
        handle,
        &value,
    )))
}

/// Write a descriptor value.
#[utoipa::path(put, path = "/gatt/nodes/{node}/descriptors/{descriptor}/value/{value}", tag = "gatt",
    params(
        doc::DescriptorPath,
        ("value" = String, Path, description = "1–512 bytes as hex; for a CCCD `0100`, `0200` or `0000`"),
        ("long" = inline(Option<doc::Flag>), Query, description = "Long write"),
    ),
    responses((status = 200, description = "The value written", body = doc::AttributeValue)))]
pub async fn write_descriptor(
    State(ble): State<Arc<Ble>>,
    base: Base,
    AttrValue(address, handle, value): AttrValue,
    Query(mut params): Query,
) -> Result<Response, Problem> {
    let _long = params.flag("long")?;
    params.finish()?;
    connected(&ble, address).await?;
    let d = find_descriptor(&ble, address, handle).await?;
    if d.uuid == CCCD {
        let c = find_characteristic(&ble, address, d.characteristic).await?;
        match value.as_slice() {
            [0x01, 0x00] => set_notifying(&ble, address, &c, NotifyKind::Notify, true).await?,
            [0x02, 0x00] => set_notifying(&ble, address, &c, NotifyKind::Indicate, true).await?,
            [0x00, 0x00] => {
                set_notifying(&ble, address, &c, NotifyKind::Notify, false).await?;
                set_notifying(&ble, address, &c, NotifyKind::Indicate, false).await?;
            }
            _ => {
                return Err(Problem::bad_request(
                    "value",
                    "a CCCD takes 0100 (notify), 0200 (indicate) or 0000 (off)",
                ));
            }
        }
    } else {
        ble.backend()
            .write(address, handle, &value, WriteMode::Request)
            .await?;
    }
    Ok(json(value_json(
        &base,
        address,
        Attribute::Descriptor,
        handle,
        &value,
    )))
}
