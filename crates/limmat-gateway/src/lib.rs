//! The Limmat BLE gateway (`gateway-api.md`). Its architecture, as the specification lays it
//! out:
//!
//! - **Backends** (§6): one object-safe async trait, picked at run time behind an `Arc`: the
//!   deterministic simulator (the default, for the demo, tests and benchmarks) or BlueZ through
//!   `bluer` (cargo feature `bluez`). A backend scans, connects, discovers, reads, writes and
//!   subscribes; the gateway runs one scan and fans it out.
//! - **HTTP API**: the GAP/GATT REST API of the Bluetooth SIG white papers (§2) and the Limmat
//!   Beacon API (§3), served on a local listener and, through the agent library, on outgoing
//!   relay connections with the same router.
//! - **Beacon pipeline** (§3.2–§3.4, §4): advertisement reports become `(company id, payload)`
//!   and `(service UUID, payload)` pairs, the pairs decode into beacons keyed by what they
//!   broadcast, and a presence tracker turns sightings into `beacon.entered`, `beacon.updated`,
//!   `beacon.left` and `beacon.telemetry` events, committed to a persistent event log.
//! - **Webhooks** (§5): signed Standard Webhooks deliveries, at least once, from a persistent
//!   outbox per subscription, with backoff, dead letters and SSRF protection.
//!
//! The pure, I/O-free layer of the beacon pipeline is a total function of its inputs (time
//! included, which is passed in), tested byte for byte against the spec's vectors:
//!
//! - [`beacon`]: the advertisement formats of §4 (iBeacon, AltBeacon, Eddystone UID, URL, TLM
//!   and EID), their identity keys (§3.2) and their JSON members, plus raw AD splitting.
//! - [`presence`]: the presence state machine of §3.3, emitting the events of §3.4.
//! - [`hex`], [`uuid`], [`address`]: the spec's representations of bytes, UUIDs and device
//!   addresses.

// `api::problem::Problem` (~130 bytes) is the error of every handler helper; it is built on
// error paths only, so boxing it would buy nothing but noise.
#![allow(clippy::result_large_err)]

/// Declares a module that is the crate's own business: `pub(crate)` in every build, and `pub`
/// (hidden from the docs) only with the `test-util` feature, through which the crate's
/// integration tests reach the store, the pipeline and the webhook transport directly.
macro_rules! internal {
    ($(mod $name:ident;)*) => {$(
        #[cfg(feature = "test-util")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "test-util"))]
        pub(crate) mod $name;
    )*};
}

// The public API: the pure beacon layer, the backend trait and its two backends, the
// configuration, the composed gateway, the metrics' names, and the webhook formats a receiver
// needs. `missing_docs` is on (workspace lints) and every public item is documented.
pub mod address;
pub mod backend;
pub mod beacon;
pub mod config;
mod config_value;
pub mod hex;
pub mod metrics;
pub mod presence;
pub mod server;
pub mod uuid;
pub mod webhook;

// The crate's machinery: HTTP handlers, the BLE hubs, the listener, the store, the pipeline.
internal! {
    mod api;
    mod ble;
    mod clock;
    mod events;
    mod listener;
    mod pipeline;
    mod store;
}

pub use address::{Address, AddressType};
pub use beacon::{Beacon, Decoded, Format, Frame, Malformed, Reason, Source, Telemetry};
pub use uuid::Uuid;
