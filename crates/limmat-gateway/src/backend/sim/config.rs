//! The `[sim]` section of `gateway.toml` (`gateway-api.md` §6.2): the seed, the time scale,
//! whether passive scanning is simulated, and the `[[sim.beacon]]` and `[[sim.peripheral]]`
//! entries that replace or extend the default world.
//!
//! These are the file's shapes only, kept close to TOML: identity fields are optional strings
//! and numbers, because which ones apply depends on `format`. `World::build` (in the private
//! `world` module, which also holds [`SimConfig::validate`] and `SimConfig`'s `Deserialize`, so
//! that these shapes import nothing of it) turns them into devices and is the one place that
//! checks them; deserialising a `[sim]` table runs it too, so a bad file stops start-up with a
//! message naming the key (unknown keys are refused by serde, which names them).

use crate::address::Address;
use crate::uuid::Uuid;
use serde::{Deserialize, Deserializer};

/// `[sim]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seeds every pseudo-random stream (one per device), so a run is reproducible.
    pub seed: u64,
    /// Simulated seconds per real second: `10.0` runs the world ten times faster (demo).
    pub time_scale: f64,
    /// Whether `scan(Passive)` is served; `false` tests the gateway's active fallback.
    pub passive_scan: bool,
    /// Keep the six devices of §6.2. With `false` the world is only the entries below; with
    /// `true` an entry whose address is a default device's replaces that device.
    pub default_world: bool,
    /// `[[sim.beacon]]`.
    #[serde(rename = "beacon")]
    pub beacons: Vec<BeaconConfig>,
    /// `[[sim.peripheral]]`.
    #[serde(rename = "peripheral")]
    pub peripherals: Vec<PeripheralConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            time_scale: 1.0,
            passive_scan: true,
            default_world: true,
            beacons: Vec::new(),
            peripherals: Vec::new(),
        }
    }
}

/// `[[sim.beacon]]`: one beacon, or `count` clones of it. Identity fields that are left out
/// take the values of the spec's vectors (V1, V4, V6, V9); fields of another format are
/// refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconConfig {
    /// `ibeacon`, `altbeacon`, `eddystone-uid`, `eddystone-url` or `eddystone-eid`.
    pub format: String,
    /// A random static address (top two bits set); clone `i` gets `address + i`.
    #[serde(deserialize_with = "address")]
    pub address: Option<Address>,
    /// Advertising interval, 20 to 10240 ms.
    pub interval_ms: u64,
    /// The TX power in the frame, dBm (1 m for iBeacon and AltBeacon, 0 m for Eddystone);
    /// defaults to the vector's (−59 for iBeacon, −65 for AltBeacon, −18 for Eddystone).
    pub tx_power: Option<i8>,
    /// `rssi = {start, min, max, step}`: the received signal's random walk (§6.2).
    pub rssi: RssiConfig,
    /// Presence cycle: `present_s` on air, then `absent_s` silent, starting present. Without
    /// `absent_s` (or with 0) the beacon is always present.
    pub present_s: Option<f64>,
    /// Seconds silent in each presence cycle, after `present_s` on air; needs `present_s`.
    pub absent_s: Option<f64>,
    /// Clones with consecutive minors (iBeacon), id3 (AltBeacon), instances (UID), EIDs, or
    /// URLs with the clone index appended, and consecutive addresses.
    pub count: u32,
    /// iBeacon: the proximity UUID (§4.2); default V1's `4c696d6d-…-303031`.
    pub uuid: Option<Uuid>,
    /// iBeacon: major, 0–65535 (default 1).
    pub major: Option<u16>,
    /// iBeacon: minor, 0–65535 (default 7).
    pub minor: Option<u16>,
    /// AltBeacon: the company id of the manufacturer data (§4.3; default `0x0118`, 280).
    pub company_id: Option<u16>,
    /// AltBeacon: the whole beacon id, 20 bytes hex; or give it as `id1`–`id3`, not both.
    pub beacon_id: Option<String>,
    /// AltBeacon: the beacon id's first 16 bytes, as a UUID (default V4's).
    pub id1: Option<Uuid>,
    /// AltBeacon: the beacon id's bytes 16–17, a u16 (default 42).
    pub id2: Option<u16>,
    /// AltBeacon: the beacon id's last two bytes, a u16 (default 3).
    pub id3: Option<u16>,
    /// AltBeacon: the byte reserved for the manufacturer (default `0x5a`, 90).
    pub mfg_reserved: Option<u8>,
    /// Eddystone-UID: the namespace, 10 bytes hex (§4.4; default V6's).
    pub namespace: Option<String>,
    /// Eddystone-UID: the instance, 6 bytes hex (default `000000000001`).
    pub instance: Option<String>,
    /// Eddystone-UID: a TLM frame in place of every `tlm_every`-th frame (default 5, 0 for
    /// none).
    pub tlm_every: Option<u32>,
    /// Eddystone-URL: the URL, as it expands (§4.4; default `https://www.example.com/`).
    pub url: Option<String>,
    /// Eddystone-EID: the ephemeral id, 8 bytes hex (default V17's `0a1b2c3d4e5f6071`).
    pub eid: Option<String>,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            format: String::new(),
            address: None,
            interval_ms: 1000,
            tx_power: None,
            rssi: RssiConfig::default(),
            present_s: None,
            absent_s: None,
            count: 1,
            uuid: None,
            major: None,
            minor: None,
            company_id: None,
            beacon_id: None,
            id1: None,
            id2: None,
            id3: None,
            mfg_reserved: None,
            namespace: None,
            instance: None,
            tlm_every: None,
            url: None,
            eid: None,
        }
    }
}

/// `[[sim.peripheral]]`: failure injection for a default peripheral (same address), or a new
/// connectable device with the "Limmat HRM" GATT database.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeripheralConfig {
    /// The device's address (required): a default peripheral's to change it, or a new random
    /// static one.
    #[serde(deserialize_with = "address")]
    pub address: Option<Address>,
    /// The advertised name (at most 20 bytes); new peripherals default to "Limmat HRM".
    pub name: Option<String>,
    /// Time from the adapter's turn to the link (default 50 simulated ms).
    pub connect_delay_ms: Option<u64>,
    /// Never accepts a connection: attempts time out ("Limmat Ghost").
    pub unreachable: Option<bool>,
    /// The link drops this long (simulated seconds) after each connection: a link loss.
    pub drop_link_after_s: Option<f64>,
    /// Advertising interval, 20 to 10240 ms (default 1000).
    pub interval_ms: Option<u64>,
    /// `rssi = {start, min, max, step}`; unset, the default device's walk, or for a new
    /// device [`RssiConfig::default`].
    pub rssi: Option<RssiConfig>,
}

/// The RSSI random walk: each report is the previous value plus a uniform integer step in
/// `[-step, step]`, clamped to `[min, max]`, starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RssiConfig {
    /// The first report's RSSI, dBm, within `[min, max]` (default −65).
    pub start: i16,
    /// The lowest RSSI, dBm, −127 to 20 (default −95).
    pub min: i16,
    /// The highest RSSI, dBm, −127 to 20 (default −40).
    pub max: i16,
    /// The largest step between two reports, 0 to 127 dB (default 3).
    pub step: i16,
}

impl Default for RssiConfig {
    fn default() -> Self {
        RssiConfig {
            start: -65,
            min: -95,
            max: -40,
            step: 3,
        }
    }
}

/// Addresses in either form of §2.1.
fn address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Address>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}
