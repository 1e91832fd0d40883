//! The JSON shapes of `gateway-api.md` §2.7 and §1.3 as OpenAPI schemas, for the handlers'
//! `#[utoipa::path]` annotations. The handlers build their bodies with `serde_json` (the
//! shapes are mostly links and hex strings); these types only describe them, so
//! `/openapi.json` tells clients what they get. The API tests check the bodies themselves.
#![allow(dead_code)]

use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `{"href": "…"}`: an absolute link.
#[derive(Serialize, ToSchema)]
pub struct Link {
    pub href: String,
}

/// An RFC 9457 problem (`application/problem+json`).
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
#[serde(rename_all = "camelCase")]
pub struct ProblemDoc {
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A stable kebab-case id (`not-connected`, `connect-timeout`, …).
    pub code: String,
    /// The parameter, path segment or body member at fault.
    pub field: Option<String>,
    /// The ATT error code the device sent.
    pub att_error: Option<u8>,
}

/// One AD structure.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdStructure {
    #[serde(rename = "ADType")]
    pub ad_type: u8,
    /// Hex.
    #[serde(rename = "ADValue")]
    pub ad_value: String,
}

/// A node (§2.7).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(rename = "self")]
    pub self_: Link,
    /// 12 lowercase hex digits.
    pub handle: String,
    /// `C0:FF:EE:00:00:10`.
    pub bdaddr: String,
    /// `public` or `random`.
    pub bdaddr_type: Option<String>,
    pub name: Option<String>,
    pub rssi: Option<i16>,
    pub tx_power: Option<i8>,
    pub connectable: Option<bool>,
    pub connected: bool,
    pub enabled: bool,
    /// RFC 3339 UTC with milliseconds.
    pub last_seen: Option<String>,
    #[serde(rename = "AD")]
    pub ad: Vec<AdStructure>,
    /// `raw` or `reconstructed`.
    pub ad_source: Option<String>,
    /// 4-hex company id → hex payload without the id.
    pub manufacturer_data: BTreeMap<String, String>,
    /// 128-bit UUID → hex.
    pub service_data: BTreeMap<String, String>,
    pub service_uuids: Vec<String>,
    /// GATT views only.
    pub services: Option<Link>,
    /// GATT views only.
    pub characteristics: Option<Link>,
}

/// `scan` of a scan list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scan {
    /// The mode the scan ran in.
    pub mode: String,
    /// The mode asked for.
    pub requested: String,
    pub duration_ms: u64,
}

/// A node list.
#[derive(Serialize, ToSchema)]
pub struct NodeList {
    #[serde(rename = "self")]
    pub self_: Link,
    /// Scan lists only.
    pub scan: Option<Scan>,
    pub nodes: Vec<Node>,
}

#[derive(Serialize, ToSchema)]
pub struct Service {
    #[serde(rename = "self")]
    pub self_: Link,
    pub handle: String,
    pub uuid: String,
    pub primary: bool,
    pub characteristics: Link,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceList {
    #[serde(rename = "self")]
    pub self_: Link,
    pub services: Vec<Service>,
}

#[derive(Serialize, ToSchema)]
pub struct Characteristic {
    #[serde(rename = "self")]
    pub self_: Link,
    pub handle: String,
    pub uuid: String,
    pub service: Link,
    /// The GATT property bitmask.
    pub properties: u8,
    /// The same, as names.
    pub flags: Vec<String>,
    /// `none`, `notify` or `indicate`.
    pub notifying: String,
    pub value: Link,
    pub descriptors: Link,
}

#[derive(Serialize, ToSchema)]
pub struct CharacteristicList {
    #[serde(rename = "self")]
    pub self_: Link,
    pub characteristics: Vec<Characteristic>,
}

#[derive(Serialize, ToSchema)]
pub struct Descriptor {
    #[serde(rename = "self")]
    pub self_: Link,
    pub handle: String,
    pub uuid: String,
    pub characteristic: Link,
}

#[derive(Serialize, ToSchema)]
pub struct DescriptorList {
    #[serde(rename = "self")]
    pub self_: Link,
    pub descriptors: Vec<Descriptor>,
}

/// A value; the cached notified value adds `timestamp`, and its `value` is `null` until the
/// first notification.
#[derive(Serialize, ToSchema)]
pub struct AttributeValue {
    #[serde(rename = "self")]
    pub self_: Link,
    pub handle: String,
    /// Hex.
    pub value: Option<String>,
    pub timestamp: Option<String>,
}

/// The body of `POST …/connection`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectBody {
    #[schema(minimum = 100, maximum = 30000)]
    pub timeout_ms: Option<u64>,
    pub enable: Option<bool>,
}

/// The body of a body-form write.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueBody {
    /// Hex, 0–512 bytes.
    #[schema(pattern = "^(?:[0-9A-Fa-f]{2}){0,512}$")]
    pub value: String,
}

/// `adapter` of `GET /`.
#[derive(Serialize, ToSchema)]
pub struct Adapter {
    pub name: Option<String>,
    /// `C0:FF:EE:00:00:01`.
    pub address: Option<String>,
    pub powered: Option<bool>,
}

/// `relay` of `GET /`: `configured`, and when it is, where and how the pool stands.
#[derive(Serialize, ToSchema)]
pub struct RelayIndex {
    pub configured: bool,
    /// `HOST:PORT` of the relay.
    pub address: Option<String>,
    pub domain: Option<String>,
    /// Connections waiting at the relay.
    pub waiting: Option<u64>,
    /// Connections serving a client now.
    pub relayed: Option<u64>,
    pub upgrades: Option<u64>,
    pub failures: Option<u64>,
}

/// `GET /`.
#[derive(Serialize, ToSchema)]
pub struct Index {
    #[serde(rename = "self")]
    pub self_: Link,
    pub name: String,
    pub version: String,
    pub backend: String,
    pub adapter: Adapter,
    pub capabilities: BTreeMap<String, bool>,
    pub relay: RelayIndex,
    pub links: BTreeMap<String, Link>,
}

/// `{node}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NodeParam {
    /// 12 hex digits, or the colon form (`C0:FF:EE:00:00:10`).
    pub node: String,
}

/// `{node}/…/{service}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServicePath {
    /// 12 hex digits, or the colon form.
    pub node: String,
    /// Service handle, 4 hex digits.
    pub service: String,
}

/// `{node}/…/{characteristic}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CharacteristicPath {
    /// 12 hex digits, or the colon form.
    pub node: String,
    /// Characteristic handle, 4 hex digits.
    pub characteristic: String,
}

/// `{node}/…/{descriptor}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DescriptorPath {
    /// 12 hex digits, or the colon form.
    pub node: String,
    /// Descriptor handle, 4 hex digits.
    pub descriptor: String,
}

/// `{value}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ValueParam {
    /// 1–512 bytes as hex.
    pub value: String,
}

/// A `0|1` query flag (§0): the integers `0` and `1`, nothing else.
pub struct Flag;

impl utoipa::PartialSchema for Flag {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some([0, 1]))
            .description(Some("`1` for yes, `0` for no"))
            .into()
    }
}

impl ToSchema for Flag {}
