//! The simulated world (`gateway-api.md` §6.2): which devices exist and how each behaves. The
//! default world is the six devices of the spec's table; `[[sim.beacon]]` and
//! `[[sim.peripheral]]` entries replace a default device with the same address, add new ones,
//! or (with `default_world = false`) make up the whole world. Building the world is also the
//! validation of `[sim]`: every check lives here, and each error names its key.
//!
//! The default beacons go through the same expansion as configured ones (an entry with only
//! `format`, `address` and the presence cycle), so the identity defaults — the spec's vectors
//! V1, V4, V6 and V9 — are written down once.

use super::config::{BeaconConfig, PeripheralConfig, RssiConfig, SimConfig};
use crate::address::Address;
use crate::beacon::{AltBeacon, Beacon, EddystoneEid, EddystoneUid, EddystoneUrl, Format, IBeacon};
use crate::config_value::{ConfigError, check};
use crate::uuid::Uuid;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

/// Deserialising checks the whole section (see the module doc).
impl<'de> Deserialize<'de> for SimConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SimConfig, D::Error> {
        let config = SimConfig::deserialize(deserializer)?;
        World::build(&config).map_err(serde::de::Error::custom)?;
        Ok(config)
    }
}

impl SimConfig {
    /// Every range and identity check, the errors naming the key (`sim.beacon[2].minor`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        World::build(self).map(drop)
    }
}

/// `LimmatBeacon-001` as a UUID: V1's proximity UUID and V4's id1.
const LIMMAT_UUID: Uuid = Uuid(*b"LimmatBeacon-001");
/// V6's namespace: [`LIMMAT_UUID`] with bytes 4–9 elided.
const V6_NAMESPACE: [u8; 10] = *b"Limmon-001";
/// The longest clone set one entry may ask for.
const MAX_COUNT: u32 = 1_000_000;

/// All devices, defaults first, then configured ones in file order.
#[derive(Debug, Clone)]
pub(super) struct World {
    pub beacons: Vec<BeaconSpec>,
    pub peripherals: Vec<PeripheralSpec>,
}

/// One advertising beacon.
#[derive(Debug, Clone)]
pub(super) struct BeaconSpec {
    pub address: Address,
    pub beacon: Beacon,
    /// Every `tlm_every`-th frame is Eddystone-TLM (0: never).
    pub tlm_every: u32,
    pub interval_ms: u64,
    pub rssi: RssiConfig,
    pub cycle: Option<Cycle>,
}

/// A presence cycle in simulated milliseconds, starting present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cycle {
    pub present_ms: u64,
    pub absent_ms: u64,
}

impl Cycle {
    /// Whether the device is on air at `t`.
    pub fn present_at(&self, t: u64) -> bool {
        t % (self.present_ms + self.absent_ms) < self.present_ms
    }

    /// The start of the present phase after `t`.
    pub fn next_start(&self, t: u64) -> u64 {
        let period = self.present_ms + self.absent_ms;
        (t / period + 1) * period
    }
}

/// One connectable device with the "Limmat HRM" GATT database.
#[derive(Debug, Clone)]
pub(super) struct PeripheralSpec {
    pub address: Address,
    pub name: String,
    pub interval_ms: u64,
    pub rssi: RssiConfig,
    pub connect_delay_ms: u64,
    /// Never accepts a connection; advertises its name only.
    pub unreachable: bool,
    pub drop_link_after_ms: Option<u64>,
}

fn addr(last: u8) -> Address {
    Address([0xc0, 0xff, 0xee, 0x00, 0x00, last])
}

/// The beacons of the default world.
fn default_beacons() -> Vec<BeaconConfig> {
    let beacon = |format: &str, last, cycle: Option<(f64, f64)>| BeaconConfig {
        format: format.into(),
        address: Some(addr(last)),
        present_s: cycle.map(|c| c.0),
        absent_s: cycle.map(|c| c.1),
        ..BeaconConfig::default()
    };
    vec![
        beacon("ibeacon", 0x01, None),
        beacon("altbeacon", 0x02, Some((60.0, 20.0))),
        beacon("eddystone-uid", 0x03, None),
        beacon("eddystone-url", 0x04, Some((45.0, 15.0))),
    ]
}

/// The peripherals of the default world.
fn default_peripherals() -> Vec<PeripheralSpec> {
    let peripheral = |last, name: &str, unreachable| PeripheralSpec {
        address: addr(last),
        name: name.into(),
        interval_ms: 1000,
        rssi: RssiConfig::default(),
        connect_delay_ms: 50,
        unreachable,
        drop_link_after_ms: None,
    };
    vec![
        peripheral(0x10, "Limmat HRM", false),
        peripheral(0x11, "Limmat Ghost", true),
    ]
}

impl World {
    /// The world `config` describes, or the first thing wrong with it.
    pub fn build(config: &SimConfig) -> Result<World, ConfigError> {
        check(
            (0.001..=1e6).contains(&config.time_scale),
            "sim.time_scale",
            config.time_scale,
            "a factor from 0.001 to 1000000 (1 = real time)",
        )?;
        // Which entry claimed each address, to refuse duplicates by name.
        let mut taken: HashMap<Address, String> = HashMap::new();
        let mut claim = |address: Address, key: &str| match taken.get(&address) {
            Some(first) => Err(ConfigError {
                key: format!("{key}.address"),
                value: address.to_string(),
                expected: format!("an address no other entry uses (taken by {first})"),
            }),
            None => {
                taken.insert(address, key.to_owned());
                Ok(())
            }
        };
        let mut beacons = Vec::new();
        for (i, entry) in config.beacons.iter().enumerate() {
            let key = format!("sim.beacon[{i}]");
            for spec in expand(entry, &key)? {
                claim(spec.address, &key)?;
                beacons.push(spec);
            }
        }
        let defaults = if config.default_world {
            default_peripherals()
        } else {
            Vec::new()
        };
        let mut peripherals = Vec::new();
        for (i, entry) in config.peripherals.iter().enumerate() {
            let key = format!("sim.peripheral[{i}]");
            let address = entry.address.ok_or_else(|| missing(&key, "address"))?;
            let base = defaults.iter().find(|d| d.address == address);
            let spec = peripheral(entry, address, base, &key)?;
            claim(address, &key)?;
            peripherals.push(spec);
        }
        if !config.default_world {
            return Ok(World {
                beacons,
                peripherals,
            });
        }
        let mut world = World {
            beacons: Vec::new(),
            peripherals: Vec::new(),
        };
        for entry in default_beacons() {
            for spec in expand(&entry, "default")? {
                if !taken.contains_key(&spec.address) {
                    world.beacons.push(spec);
                }
            }
        }
        world.peripherals = defaults
            .into_iter()
            .filter(|d| !taken.contains_key(&d.address))
            .collect();
        world.beacons.extend(beacons);
        world.peripherals.extend(peripherals);
        Ok(world)
    }
}

fn missing(key: &str, field: &str) -> ConfigError {
    ConfigError {
        key: format!("{key}.{field}"),
        value: "(missing)".into(),
        expected: "a value".into(),
    }
}

/// Checks a device address: random static (top two bits set), and room for `count` clones.
fn check_address(address: Address, count: u32, key: &str) -> Result<u64, ConfigError> {
    let [a, b, c, d, e, f] = address.0;
    let base = u64::from_be_bytes([0, 0, a, b, c, d, e, f]);
    check(
        a & 0xc0 == 0xc0,
        &format!("{key}.address"),
        address,
        "a random static address (top two bits set, such as C0:…)",
    )?;
    check(
        base + u64::from(count) - 1 <= 0xffff_ffff_ffff,
        &format!("{key}.count"),
        count,
        "few enough clones for consecutive addresses",
    )?;
    Ok(base)
}

fn address_at(base: u64, i: u32) -> Address {
    let [_, _, a, b, c, d, e, f] = (base + u64::from(i)).to_be_bytes();
    Address([a, b, c, d, e, f])
}

fn check_interval(interval_ms: u64, key: &str) -> Result<(), ConfigError> {
    check(
        (20..=10_240).contains(&interval_ms),
        &format!("{key}.interval_ms"),
        interval_ms,
        "20 to 10240 ms (the BLE advertising interval range)",
    )
}

fn check_rssi(rssi: &RssiConfig, key: &str) -> Result<(), ConfigError> {
    check(
        (-127..=20).contains(&rssi.min)
            && (-127..=20).contains(&rssi.max)
            && rssi.min <= rssi.start
            && rssi.start <= rssi.max,
        &format!("{key}.rssi"),
        format!(
            "{{start = {}, min = {}, max = {}}}",
            rssi.start, rssi.min, rssi.max
        ),
        "-127 ≤ min ≤ start ≤ max ≤ 20 dBm",
    )?;
    check(
        (0..=127).contains(&rssi.step),
        &format!("{key}.rssi.step"),
        rssi.step,
        "0 to 127 dB",
    )
}

/// Seconds from the file to simulated milliseconds.
fn millis(seconds: f64, key: &str) -> Result<u64, ConfigError> {
    check(
        seconds.is_finite() && seconds > 0.0 && seconds <= 1e9,
        key,
        seconds,
        "a positive number of seconds",
    )?;
    Ok((seconds * 1000.0).round().max(1.0) as u64)
}

/// A fixed-size hex field.
fn hex_field<const N: usize>(text: &str, key: &str) -> Result<[u8; N], ConfigError> {
    crate::hex::decode(text)
        .ok()
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or_else(|| ConfigError {
            key: key.into(),
            value: format!("{text:?}"),
            expected: format!("{N} bytes in hex ({} digits)", 2 * N),
        })
}

/// Adds `i` to a big-endian counter; `None` on overflow.
fn add_be(bytes: &mut [u8], i: u32) -> Option<()> {
    let mut carry = u64::from(i);
    for byte in bytes.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let sum = u64::from(*byte) + (carry & 0xff);
        *byte = sum as u8;
        carry = (carry >> 8) + (sum >> 8);
    }
    (carry == 0).then_some(())
}

/// One `[[sim.beacon]]` entry, expanded into its `count` clones.
fn expand(entry: &BeaconConfig, key: &str) -> Result<Vec<BeaconSpec>, ConfigError> {
    let format = Format::from_name(&entry.format)
        .filter(|f| *f != Format::EddystoneTlm)
        .ok_or_else(|| ConfigError {
            key: format!("{key}.format"),
            value: format!("{:?}", entry.format),
            expected: "ibeacon, altbeacon, eddystone-uid, eddystone-url or eddystone-eid".into(),
        })?;
    check_foreign_fields(entry, format, key)?;
    let address = entry.address.ok_or_else(|| missing(key, "address"))?;
    check(
        (1..=MAX_COUNT).contains(&entry.count),
        &format!("{key}.count"),
        entry.count,
        "1 to 1000000",
    )?;
    let base = check_address(address, entry.count, key)?;
    check_interval(entry.interval_ms, key)?;
    check_rssi(&entry.rssi, key)?;
    let cycle = match (entry.present_s, entry.absent_s) {
        (_, None) => None,
        (_, Some(0.0)) => None,
        (None, Some(_)) => return Err(missing(key, "present_s")),
        (Some(present), Some(absent)) => Some(Cycle {
            present_ms: millis(present, &format!("{key}.present_s"))?,
            absent_ms: millis(absent, &format!("{key}.absent_s"))?,
        }),
    };
    let identity = Identity::new(entry, format, key)?;
    (0..entry.count)
        .map(|i| {
            Ok(BeaconSpec {
                address: address_at(base, i),
                beacon: identity.clone_at(i, entry.count, key)?,
                tlm_every: match format {
                    Format::EddystoneUid => entry.tlm_every.unwrap_or(5),
                    _ => 0,
                },
                interval_ms: entry.interval_ms,
                rssi: entry.rssi,
                cycle,
            })
        })
        .collect()
}

/// Refuses identity fields that belong to another format, so a typo'd format or a copied
/// entry does not silently broadcast something else.
fn check_foreign_fields(
    entry: &BeaconConfig,
    format: Format,
    key: &str,
) -> Result<(), ConfigError> {
    use Format::*;
    let e = entry;
    let fields: [(&str, bool, Format); 14] = [
        ("uuid", e.uuid.is_some(), IBeacon),
        ("major", e.major.is_some(), IBeacon),
        ("minor", e.minor.is_some(), IBeacon),
        ("company_id", e.company_id.is_some(), AltBeacon),
        ("beacon_id", e.beacon_id.is_some(), AltBeacon),
        ("id1", e.id1.is_some(), AltBeacon),
        ("id2", e.id2.is_some(), AltBeacon),
        ("id3", e.id3.is_some(), AltBeacon),
        ("mfg_reserved", e.mfg_reserved.is_some(), AltBeacon),
        ("namespace", e.namespace.is_some(), EddystoneUid),
        ("instance", e.instance.is_some(), EddystoneUid),
        ("tlm_every", e.tlm_every.is_some(), EddystoneUid),
        ("url", e.url.is_some(), EddystoneUrl),
        ("eid", e.eid.is_some(), EddystoneEid),
    ];
    for (name, set, owner) in fields {
        check(
            !set || owner == format,
            &format!("{key}.{name}"),
            "(set)",
            &format!("no {name} for {format} (it belongs to {owner})"),
        )?;
    }
    let whole_and_parts =
        e.beacon_id.is_some() && (e.id1.is_some() || e.id2.is_some() || e.id3.is_some());
    check(
        !whole_and_parts,
        &format!("{key}.beacon_id"),
        "(set)",
        "either beacon_id or id1/id2/id3, not both",
    )
}

/// The first clone's frame; clones count up from it.
#[derive(Debug, Clone)]
struct Identity(Beacon);

impl Identity {
    fn new(e: &BeaconConfig, format: Format, key: &str) -> Result<Identity, ConfigError> {
        let tx = |default| e.tx_power.unwrap_or(default);
        let beacon = match format {
            Format::IBeacon => Beacon::IBeacon(IBeacon {
                uuid: e.uuid.unwrap_or(LIMMAT_UUID),
                major: e.major.unwrap_or(1),
                minor: e.minor.unwrap_or(7),
                tx_power: tx(-59),
            }),
            Format::AltBeacon => {
                let beacon_id = match &e.beacon_id {
                    Some(text) => hex_field::<20>(text, &format!("{key}.beacon_id"))?,
                    None => {
                        let mut id = [0u8; 20];
                        id[..16].copy_from_slice(&e.id1.unwrap_or(LIMMAT_UUID).0);
                        id[16..18].copy_from_slice(&e.id2.unwrap_or(42).to_be_bytes());
                        id[18..].copy_from_slice(&e.id3.unwrap_or(3).to_be_bytes());
                        id
                    }
                };
                Beacon::AltBeacon(AltBeacon {
                    company_id: e.company_id.unwrap_or(0x0118),
                    beacon_id,
                    tx_power: tx(-65),
                    mfg_reserved: e.mfg_reserved.unwrap_or(0x5a),
                })
            }
            Format::EddystoneUid => Beacon::EddystoneUid(EddystoneUid {
                tx_power: tx(-18),
                namespace: match &e.namespace {
                    Some(text) => hex_field(text, &format!("{key}.namespace"))?,
                    None => V6_NAMESPACE,
                },
                instance: match &e.instance {
                    Some(text) => hex_field(text, &format!("{key}.instance"))?,
                    None => [0, 0, 0, 0, 0, 1],
                },
            }),
            Format::EddystoneUrl => {
                let url = e.url.as_deref().unwrap_or("https://www.example.com/");
                Beacon::EddystoneUrl(url_beacon(tx(-18), url, &format!("{key}.url"))?)
            }
            Format::EddystoneEid | Format::EddystoneTlm => Beacon::EddystoneEid(EddystoneEid {
                tx_power: tx(-18),
                eid: match &e.eid {
                    Some(text) => hex_field(text, &format!("{key}.eid"))?,
                    None => [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71],
                },
            }),
        };
        Ok(Identity(beacon))
    }

    /// Clone `i` of `count`.
    fn clone_at(&self, i: u32, count: u32, key: &str) -> Result<Beacon, ConfigError> {
        let overflow = |field: &str| ConfigError {
            key: format!("{key}.count"),
            value: count.to_string(),
            expected: format!("few enough clones for consecutive {field} values"),
        };
        let mut beacon = self.0.clone();
        match &mut beacon {
            Beacon::IBeacon(b) => {
                b.minor = b
                    .minor
                    .checked_add(u16::try_from(i).map_err(|_| overflow("minor"))?)
                    .ok_or_else(|| overflow("minor"))?;
            }
            Beacon::AltBeacon(b) => {
                add_be(&mut b.beacon_id[18..], i).ok_or_else(|| overflow("id3"))?;
            }
            Beacon::EddystoneUid(b) => {
                add_be(&mut b.instance, i).ok_or_else(|| overflow("instance"))?;
            }
            Beacon::EddystoneEid(b) => {
                add_be(&mut b.eid, i).ok_or_else(|| overflow("eid"))?;
            }
            Beacon::EddystoneUrl(b) if count > 1 => {
                let url = format!("{}{i}", b.url());
                *b = url_beacon(b.tx_power, &url, &format!("{key}.url"))?;
            }
            Beacon::EddystoneUrl(_) => {}
        }
        Ok(beacon)
    }
}

fn url_beacon(tx_power: i8, url: &str, key: &str) -> Result<EddystoneUrl, ConfigError> {
    EddystoneUrl::new(tx_power, url).map_err(|e| ConfigError {
        key: key.into(),
        value: format!("{url:?}"),
        expected: format!("a URL Eddystone can broadcast ({e})"),
    })
}

/// One `[[sim.peripheral]]` entry, on top of the default device with its address if any.
fn peripheral(
    entry: &PeripheralConfig,
    address: Address,
    base: Option<&PeripheralSpec>,
    key: &str,
) -> Result<PeripheralSpec, ConfigError> {
    check_address(address, 1, key)?;
    let mut spec = base.cloned().unwrap_or_else(|| PeripheralSpec {
        address,
        name: "Limmat HRM".into(),
        interval_ms: 1000,
        rssi: RssiConfig::default(),
        connect_delay_ms: 50,
        unreachable: false,
        drop_link_after_ms: None,
    });
    if let Some(name) = &entry.name {
        check(
            (1..=20).contains(&name.len()),
            &format!("{key}.name"),
            format!("{name:?}"),
            "1 to 20 bytes (it has to fit the advertisement)",
        )?;
        spec.name = name.clone();
    }
    if let Some(delay) = entry.connect_delay_ms {
        check(
            delay <= 600_000,
            &format!("{key}.connect_delay_ms"),
            delay,
            "at most 600000 ms",
        )?;
        spec.connect_delay_ms = delay;
    }
    if let Some(unreachable) = entry.unreachable {
        spec.unreachable = unreachable;
    }
    if let Some(after) = entry.drop_link_after_s {
        spec.drop_link_after_ms = Some(millis(after, &format!("{key}.drop_link_after_s"))?);
    }
    if let Some(interval) = entry.interval_ms {
        check_interval(interval, key)?;
        spec.interval_ms = interval;
    }
    if let Some(rssi) = entry.rssi {
        check_rssi(&rssi, key)?;
        spec.rssi = rssi;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(toml: &str) -> Result<World, String> {
        let config: SimConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
        World::build(&config).map_err(|e| e.to_string())
    }

    fn keys(world: &World) -> Vec<String> {
        world.beacons.iter().map(|b| b.beacon.key()).collect()
    }

    #[test]
    fn the_default_world_is_the_spec_table() {
        let w = world("").unwrap();
        let addresses: Vec<String> = w
            .beacons
            .iter()
            .map(|b| b.address.handle())
            .chain(w.peripherals.iter().map(|p| p.address.handle()))
            .collect();
        assert_eq!(
            addresses,
            [
                "c0ffee000001",
                "c0ffee000002",
                "c0ffee000003",
                "c0ffee000004",
                "c0ffee000010",
                "c0ffee000011"
            ]
        );
        assert_eq!(
            keys(&w),
            [
                "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7",
                "altbeacon:4c696d6d6174426561636f6e2d303031002a0003",
                "eddystone-uid:4c696d6d6f6e2d303031:000000000001",
                "eddystone-url:https://www.example.com/",
            ]
        );
        let cycles: Vec<Option<Cycle>> = w.beacons.iter().map(|b| b.cycle).collect();
        let cycle = |p, a| {
            Some(Cycle {
                present_ms: p,
                absent_ms: a,
            })
        };
        assert_eq!(
            cycles,
            [None, cycle(60_000, 20_000), None, cycle(45_000, 15_000)]
        );
        let tlm: Vec<u32> = w.beacons.iter().map(|b| b.tlm_every).collect();
        assert_eq!(tlm, [0, 0, 5, 0]);
        assert!(!w.peripherals[0].unreachable && w.peripherals[1].unreachable);
        assert_eq!(w.peripherals[0].connect_delay_ms, 50);
    }

    #[test]
    fn entries_replace_default_devices_by_address_or_the_whole_world() {
        let w = world(
            "[[beacon]]\nformat = \"eddystone-eid\"\naddress = \"c0ffee000001\"\n\
             [[peripheral]]\naddress = \"c0ffee000011\"\nconnect_delay_ms = 7\n",
        )
        .unwrap();
        assert_eq!(w.beacons.len(), 4);
        assert_eq!(
            w.beacons.last().map(|b| b.beacon.key()).as_deref(),
            Some("eddystone-eid:0a1b2c3d4e5f6071")
        );
        assert!(
            w.beacons
                .iter()
                .all(|b| b.beacon.format() != Format::IBeacon)
        );
        // The ghost keeps its name and stays unreachable; only the delay changed.
        let ghost = w.peripherals.last().unwrap();
        assert_eq!(ghost.name, "Limmat Ghost");
        assert!(ghost.unreachable);
        assert_eq!(ghost.connect_delay_ms, 7);
        let w = world(
            "default_world = false\n[[peripheral]]\naddress = \"c0ffee000099\"\ndrop_link_after_s = 2.5\n",
        )
        .unwrap();
        assert!(w.beacons.is_empty());
        assert_eq!(w.peripherals.len(), 1);
        assert_eq!(w.peripherals[0].name, "Limmat HRM");
        assert_eq!(w.peripherals[0].drop_link_after_ms, Some(2500));
    }

    #[test]
    fn clones_count_up_each_format_identity() {
        let clones = |entry: &str| {
            let w = world(&format!(
                "default_world = false\n[[beacon]]\n{entry}\ncount = 3\n"
            ))
            .unwrap();
            let addresses: Vec<String> = w.beacons.iter().map(|b| b.address.handle()).collect();
            assert_eq!(addresses, ["c0ffee0000ff", "c0ffee000100", "c0ffee000101"]);
            keys(&w)
        };
        let address = "address = \"c0ffee0000ff\"";
        assert_eq!(
            clones(&format!("format = \"altbeacon\"\n{address}\nid3 = 7\n"))[2],
            "altbeacon:4c696d6d6174426561636f6e2d303031002a0009"
        );
        assert_eq!(
            clones(&format!(
                "format = \"eddystone-uid\"\n{address}\ninstance = \"0000000000ff\"\n"
            )),
            [
                "eddystone-uid:4c696d6d6f6e2d303031:0000000000ff",
                "eddystone-uid:4c696d6d6f6e2d303031:000000000100",
                "eddystone-uid:4c696d6d6f6e2d303031:000000000101",
            ]
        );
        assert_eq!(
            clones(&format!(
                "format = \"eddystone-url\"\n{address}\nurl = \"https://l.example/b\"\n"
            )),
            [
                "eddystone-url:https://l.example/b0",
                "eddystone-url:https://l.example/b1",
                "eddystone-url:https://l.example/b2",
            ]
        );
        assert_eq!(
            clones(&format!("format = \"ibeacon\"\n{address}\nminor = 0\n"))[2],
            "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:2"
        );
    }

    #[test]
    fn refuses_what_cannot_be_broadcast() {
        let err = |entry: &str| world(&format!("[[beacon]]\n{entry}\n")).unwrap_err();
        let a = "address = \"c0ffee000100\"";
        for (entry, key) in [
            ("format = \"ibeacon\"".to_string(), "sim.beacon[0].address"),
            (
                format!("format = \"eddystone-tlm\"\n{a}"),
                "sim.beacon[0].format",
            ),
            (
                format!("format = \"ibeacon\"\n{a}\ninterval_ms = 5"),
                "interval_ms",
            ),
            (
                format!("format = \"ibeacon\"\n{a}\ncount = 0"),
                "sim.beacon[0].count",
            ),
            (
                format!("format = \"ibeacon\"\n{a}\nabsent_s = 5"),
                "present_s",
            ),
            (
                format!("format = \"ibeacon\"\n{a}\npresent_s = -1\nabsent_s = 5"),
                "present_s",
            ),
            (
                format!("format = \"ibeacon\"\n{a}\nrssi = {{ start = -20, max = -40 }}"),
                "rssi",
            ),
            (
                format!("format = \"eddystone-uid\"\n{a}\nnamespace = \"abc\""),
                "namespace",
            ),
            (
                format!("format = \"eddystone-uid\"\n{a}\ninstance = \"ffffffffffff\"\ncount = 2"),
                "count",
            ),
            (
                format!("format = \"eddystone-url\"\n{a}\nurl = \"ftp://x\""),
                "url",
            ),
            (
                format!("format = \"altbeacon\"\n{a}\nbeacon_id = \"00\"\nid2 = 1"),
                "beacon_id",
            ),
            (
                "format = \"ibeacon\"\naddress = \"ff:ff:ff:ff:ff:ff\"\ncount = 2".to_string(),
                "count",
            ),
        ] {
            let e = err(&entry);
            assert!(e.contains(key), "{entry:?}: {e}");
        }
        let e = world(
            "[[peripheral]]\naddress = \"c0ffee000010\"\nname = \"a name that is far too long\"\n",
        )
        .unwrap_err();
        assert!(e.contains("sim.peripheral[0].name"), "{e}");
        let e = world("[[peripheral]]\nname = \"x\"\n").unwrap_err();
        assert!(e.contains("sim.peripheral[0].address"), "{e}");
    }

    #[test]
    fn big_endian_counters_carry_and_overflow() {
        let mut b = [0x00, 0xff, 0xff];
        assert_eq!(add_be(&mut b, 1), Some(()));
        assert_eq!(b, [0x01, 0x00, 0x00]);
        let mut b = [0xff, 0xff];
        assert_eq!(add_be(&mut b, 1), None);
        let mut b = [0x00, 0x00, 0x00, 0x00];
        assert_eq!(add_be(&mut b, 1_000_000), Some(()));
        assert_eq!(u32::from_be_bytes(b), 1_000_000);
    }

    #[test]
    fn cycles_start_present() {
        let c = Cycle {
            present_ms: 60_000,
            absent_ms: 20_000,
        };
        assert!(c.present_at(0) && c.present_at(59_999));
        assert!(!c.present_at(60_000) && !c.present_at(79_999));
        assert!(c.present_at(80_000));
        assert_eq!(c.next_start(61_000), 80_000);
    }
}
