//! The `[sim]` section of `gateway.toml` (`gateway-api.md` §6.2): the seed, the time scale,
//! whether passive scanning is simulated, and the `[[sim.beacon]]` and `[[sim.peripheral]]`
//! entries that replace or extend the default world.
//!
//! These are the file's shapes only, kept close to TOML: identity fields are optional strings
//! and numbers, because which ones apply depends on `format`. `World::build` (in the private `world` module)
//! turns them into devices and is the one place that checks them; deserialising a `[sim]`
//! table runs it too, so a bad file stops start-up with a message naming the key (unknown keys
//! are refused by serde, which names them).

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

/// Deserialising checks the whole section (see the module doc).
impl<'de> Deserialize<'de> for SimConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SimConfig, D::Error> {
        let config = SimConfig::deserialize(deserializer)?;
        super::world::World::build(&config).map_err(serde::de::Error::custom)?;
        Ok(config)
    }
}

impl SimConfig {
    /// Every range and identity check, the errors naming the key (`sim.beacon[2].minor`).
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        super::world::World::build(self).map(drop)
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
    /// The TX power in the frame (1 m for iBeacon and AltBeacon, 0 m for Eddystone).
    pub tx_power: Option<i8>,
    pub rssi: RssiConfig,
    /// Presence cycle: `present_s` on air, then `absent_s` silent, starting present. Without
    /// `absent_s` (or with 0) the beacon is always present.
    pub present_s: Option<f64>,
    pub absent_s: Option<f64>,
    /// Clones with consecutive minors (iBeacon), id3 (AltBeacon), instances (UID), EIDs, or
    /// URLs with the clone index appended, and consecutive addresses.
    pub count: u32,
    /// iBeacon: proximity UUID, major, minor.
    pub uuid: Option<Uuid>,
    pub major: Option<u16>,
    pub minor: Option<u16>,
    /// AltBeacon: company id, and the beacon id either whole (20 bytes hex) or as id1–id3.
    pub company_id: Option<u16>,
    pub beacon_id: Option<String>,
    pub id1: Option<Uuid>,
    pub id2: Option<u16>,
    pub id3: Option<u16>,
    pub mfg_reserved: Option<u8>,
    /// Eddystone-UID: namespace (10 bytes hex), instance (6 bytes hex), and a TLM frame in
    /// place of every `tlm_every`-th frame (default 5, 0 for none).
    pub namespace: Option<String>,
    pub instance: Option<String>,
    pub tlm_every: Option<u32>,
    /// Eddystone-URL.
    pub url: Option<String>,
    /// Eddystone-EID (8 bytes hex).
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
    pub rssi: Option<RssiConfig>,
}

/// The RSSI random walk: each report is the previous value plus a uniform integer step in
/// `[-step, step]`, clamped to `[min, max]`, starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RssiConfig {
    pub start: i16,
    pub min: i16,
    pub max: i16,
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
