//! The BLE backend trait (`gateway-api.md` §6.1): the one object-safe async interface through
//! which the HTTP API and the beacon pipeline reach Bluetooth. `--backend sim|bluez` picks the
//! implementation behind an `Arc<dyn Backend>` at run time, so nothing above this module knows
//! which one it talks to.
//!
//! Handles (§2.1) are `u16` here and 4 lowercase hex digits on the wire; the simulator uses ATT
//! handles, BlueZ its object ids. Errors are [`BleError`], which maps one to one onto the HTTP
//! statuses of §2.8 (see `crate::api::problem`); no backend error is ever a panic.

pub mod sim;

#[cfg(feature = "bluez")]
pub mod bluez;

use crate::address::{Address, AddressType};
use crate::uuid::Uuid;
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// An attribute handle: service, characteristic or descriptor, unique within a node.
pub type Handle = u16;

/// Scan modes (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanMode {
    /// The scanner sends scan requests, so scan responses (names, more AD) arrive too
    /// (`active=1`, the default).
    Active,
    /// The scanner only listens (`passive=1`); not every backend can (`passiveScan`).
    Passive,
}

impl ScanMode {
    /// The word of `scan.mode` (§2.7): `active` or `passive`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanMode::Active => "active",
            ScanMode::Passive => "passive",
        }
    }
}

/// What a backend can do beyond the \[R\] operations (§6.1); served in `GET /` and used to
/// answer `501` for \[O\] features it lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// `passiveScan`: `GET /gap/nodes?passive=1` scans passively (§2.2); without it, actively.
    pub passive_scan: bool,
    /// `connParams`: connection interval and latency can be set (§2.2).
    pub conn_params: bool,
    /// `pairing`: `pair` and `unpair` work (§2.2 `/management/nodes`).
    pub pairing: bool,
    /// `readByUuid`: read the first characteristic with a UUID in a handle range (§2.3).
    pub read_by_uuid: bool,
    /// `readMultiple`: read several handles in one request (§2.3).
    pub read_multiple: bool,
    /// `reliableWrite`: queued, verified writes (`reliable=1`, §2.3).
    pub reliable_write: bool,
}

/// `info`: the adapter behind the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// `sim` or `bluez`.
    pub backend: &'static str,
    /// The adapter's own device address.
    pub address: Address,
    /// The adapter's name (`hci0`, …).
    pub name: String,
    /// Whether the adapter is powered on; a backend that is off answers `503` (§2.8).
    pub powered: bool,
    /// The \[O\] operations this backend supports.
    pub capabilities: Capabilities,
}

/// One advertisement report (§6.1): what a scan yields, one per received advertising PDU (or,
/// on BlueZ, per property change that counts as a sighting).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The advertiser's device address (`bdaddr`).
    pub address: Address,
    /// Public or random (`bdaddrType`).
    pub address_type: AddressType,
    /// Received signal strength in dBm, if the backend reports it.
    pub rssi: Option<i16>,
    /// dBm, as advertised (AD type 0x0A).
    pub tx_power: Option<i8>,
    /// The local name (AD type 0x09, or the shortened 0x08), if advertised.
    pub name: Option<String>,
    /// AD type 0x01.
    pub flags: Option<u8>,
    /// The advertised service UUIDs (AD types 0x02–0x07), widened to 128 bits.
    pub service_uuids: Vec<Uuid>,
    /// Company id → payload, the company id stripped.
    pub manufacturer_data: BTreeMap<u16, Vec<u8>>,
    /// Service UUID (widened to 128 bits) → payload, the UUID stripped (§4.1).
    pub service_data: BTreeMap<Uuid, Vec<u8>>,
    /// The raw AD bytes, when the backend has them (the simulator does, BlueZ does not).
    pub raw: Option<Vec<u8>>,
    /// Whether the PDU was connectable, if the backend knows.
    pub connectable: Option<bool>,
    /// Wall-clock receive time, for `lastSeen` and event timestamps.
    pub received: SystemTime,
    /// Monotonic receive time (from the tokio clock, so paused-time tests drive it), for
    /// presence timers.
    pub at: Instant,
}

/// `node`: what the backend knows of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// The latest report, if the device was heard since the backend started.
    pub report: Option<Report>,
    /// The name from advertising data or the backend's cache.
    pub name: Option<String>,
    /// Whether a link to the device is up.
    pub connected: bool,
}

/// `connection_events`: a link came up or went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEvent {
    /// The device whose link changed.
    pub address: Address,
    /// `true` when the link came up, `false` when it went down.
    pub connected: bool,
    /// Why, in a few words (`requested`, `link-loss`, `timeout`, …).
    pub reason: String,
}

/// A GATT service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service's handle (§2.1).
    pub handle: Handle,
    /// The service's UUID.
    pub uuid: Uuid,
    /// A primary service (`true`) or an included, secondary one.
    pub primary: bool,
}

/// GATT characteristic property bits (§2.7).
pub mod props {
    /// The value may be broadcast in advertisements.
    pub const BROADCAST: u8 = 0x01;
    /// The value may be read.
    pub const READ: u8 = 0x02;
    /// The value may be written with a write command, unacknowledged (`noresponse=1`).
    pub const WRITE_WITHOUT_RESPONSE: u8 = 0x04;
    /// The value may be written with a write request, acknowledged.
    pub const WRITE: u8 = 0x08;
    /// The value may be notified.
    pub const NOTIFY: u8 = 0x10;
    /// The value may be indicated (notified and confirmed).
    pub const INDICATE: u8 = 0x20;
    /// The value may be written with an authenticated signed write.
    pub const SIGNED_WRITE: u8 = 0x40;
    /// The characteristic has an Extended Properties descriptor.
    pub const EXTENDED: u8 = 0x80;

    /// The names of the bits, in bit order, as `flags` shows them.
    pub const NAMES: [(u8, &str); 8] = [
        (BROADCAST, "broadcast"),
        (READ, "read"),
        (WRITE_WITHOUT_RESPONSE, "write-without-response"),
        (WRITE, "write"),
        (NOTIFY, "notify"),
        (INDICATE, "indicate"),
        (SIGNED_WRITE, "authenticated-signed-writes"),
        (EXTENDED, "extended-properties"),
    ];
}

/// A GATT characteristic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Characteristic {
    /// The characteristic's handle (§2.1).
    pub handle: Handle,
    /// The characteristic's UUID.
    pub uuid: Uuid,
    /// The handle of the service it belongs to.
    pub service: Handle,
    /// The property bitmask ([`props`]).
    pub properties: u8,
}

/// A GATT descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The descriptor's handle (§2.1).
    pub handle: Handle,
    /// The descriptor's UUID (`2902` for the CCCD).
    pub uuid: Uuid,
    /// The handle of the characteristic it belongs to.
    pub characteristic: Handle,
}

/// How a write goes on air (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Write request (property 0x08), acknowledged by the device.
    Request,
    /// Write command (property 0x04), `noresponse=1`.
    Command,
    /// Reliable (queued, verified) write.
    Reliable,
}

/// Notification or indication (§2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyKind {
    /// Unacknowledged notifications (`notify=1`, property 0x10).
    Notify,
    /// Indications, confirmed by the client (`indicate=1`, property 0x20).
    Indicate,
}

impl NotifyKind {
    /// The word of the query parameter and of `notifying` (§2.7): `notify` or `indicate`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Notify => "notify",
            NotifyKind::Indicate => "indicate",
        }
    }
}

/// One notified or indicated value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The characteristic's value as notified.
    pub value: Vec<u8>,
    /// Wall-clock receive time, the `timestamp` of the stream event (§2.6).
    pub received: SystemTime,
}

/// Backend errors (§6.1), each with its HTTP status in §2.8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BleError {
    /// Unknown node or attribute → 404.
    #[error("not found")]
    NotFound,
    /// The node is not connected → 412.
    #[error("not connected")]
    NotConnected,
    /// The characteristic's properties forbid the operation → 405.
    #[error("not permitted")]
    NotPermitted,
    /// The device answered with an ATT error code → by code (§2.8).
    #[error("ATT error 0x{0:02x}")]
    Att(u8),
    /// Connect, ATT request or link timed out → 504.
    #[error("timed out")]
    Timeout,
    /// The link dropped during the operation → 504.
    #[error("link lost")]
    LinkLost,
    /// An optional feature the backend lacks, named → 501.
    #[error("not implemented: {0}")]
    Unsupported(&'static str),
    /// Adapter missing or off, backend down → 503.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
}

/// The backend interface. Streams end when their source ends: a scan when the backend stops, a
/// subscription when the link drops (the API then sends `event: disconnected`).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The adapter and its capabilities.
    async fn info(&self) -> Info;

    /// Start the (single) scan; the gateway fans the stream out. A backend without passive
    /// scanning answers `Unsupported("passive scanning")` and the gateway falls back to active.
    async fn scan(&self, mode: ScanMode) -> Result<BoxStream<'static, Report>, BleError>;

    /// What the backend knows of one node; `NotFound` if never seen or expired.
    async fn node(&self, address: Address) -> Result<NodeState, BleError>;

    /// Connect and resolve services, within `timeout` (queueing included). Connecting a
    /// connected node is a success.
    async fn connect(&self, address: Address, timeout: Duration) -> Result<(), BleError>;

    /// Disconnect; idempotent.
    async fn disconnect(&self, address: Address) -> Result<(), BleError>;

    /// Links coming up and going down, from now on.
    fn connection_events(&self) -> BoxStream<'static, ConnectionEvent>;

    /// The node's services (GAP `0x1800` and GATT `0x1801` hidden, as BlueZ does).
    async fn services(&self, address: Address) -> Result<Vec<Service>, BleError>;

    /// The characteristics of one service, or of the whole node with `None`.
    async fn characteristics(
        &self,
        address: Address,
        service: Option<Handle>,
    ) -> Result<Vec<Characteristic>, BleError>;

    /// The descriptors of one characteristic, or of the whole node with `None`.
    async fn descriptors(
        &self,
        address: Address,
        characteristic: Option<Handle>,
    ) -> Result<Vec<Descriptor>, BleError>;

    /// Read a characteristic or descriptor value (the whole value, up to 512 bytes).
    async fn read(&self, address: Address, handle: Handle) -> Result<Vec<u8>, BleError>;

    /// Write a characteristic or descriptor value.
    async fn write(
        &self,
        address: Address,
        handle: Handle,
        value: &[u8],
        mode: WriteMode,
    ) -> Result<(), BleError>;

    /// Turn notification or indication on; the values arrive on the stream, dropping it turns
    /// them off again. The stream ends when the link drops.
    async fn subscribe(
        &self,
        address: Address,
        characteristic: Handle,
        kind: NotifyKind,
    ) -> Result<BoxStream<'static, Notification>, BleError>;

    /// Pairing \[O\].
    async fn pair(&self, _address: Address) -> Result<(), BleError> {
        Err(BleError::Unsupported("pairing"))
    }

    /// Bond removal \[O\].
    async fn unpair(&self, _address: Address) -> Result<(), BleError> {
        Err(BleError::Unsupported("pairing"))
    }
}
