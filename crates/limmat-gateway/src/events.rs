//! Beacon events as the wire sees them (`gateway-api.md` §3.2, §3.4, §3.5): the beacon object,
//! the event envelope and the batch wrapper, each serialised once to compact JSON. The same
//! bytes go to the event log, the SSE stream and webhook bodies, so a body is identical on every
//! attempt, after a restart and on replay (§5.1). Member order follows the spec's tables
//! (typed structs, not maps, so it is stable).
//!
//! Also the filters of §3.1/§3.7 ([`Filter`]), shared by subscriptions and `GET /beacon/events`.

use crate::address::{Address, AddressType};
use crate::beacon::{Beacon, Format, Telemetry};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The event types of §3.4 that subscriptions and streams select.
pub const TYPES: [&str; 4] = [
    "beacon.entered",
    "beacon.updated",
    "beacon.left",
    "beacon.telemetry",
];

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 UTC with milliseconds (§0), from epoch milliseconds.
pub fn timestamp(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `evt_`, `msg_`, `bat_` or `sub_` + a new ULID.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for keys in paths.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The href of a beacon under `base` (no trailing slash).
pub fn beacon_href(base: &str, key: &str) -> String {
    format!("{base}/beacon/beacons/{}", percent_encode(key))
}

/// A present beacon's state (§3.2 less `self` and `telemetry`): what `GET /beacon/beacons`
/// serves, what events carry and what the presence table persists.
#[derive(Debug, Clone, PartialEq)]
pub struct BeaconState {
    pub beacon: Beacon,
    pub address: Address,
    pub address_type: AddressType,
    pub rssi: Option<i16>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub sightings: u64,
}

/// `{"href": …}`.
#[derive(Debug, Clone, Serialize)]
pub struct Href {
    pub href: String,
}

/// The beacon object of §3.2, ready to serialise.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BeaconObject<'a> {
    #[serde(rename = "self", skip_serializing_if = "Option::is_none")]
    pub self_: Option<Href>,
    #[serde(flatten)]
    pub beacon: &'a Beacon,
    pub address: String,
    pub address_type: AddressType,
    pub rssi: Option<i16>,
    pub first_seen: String,
    pub last_seen: String,
    pub sightings: u64,
    pub telemetry: Option<&'a Telemetry>,
}

impl BeaconState {
    pub fn key(&self) -> String {
        self.beacon.key()
    }

    /// The object, with `self` under `base` when given.
    pub fn object<'a>(
        &'a self,
        base: Option<&str>,
        telemetry: Option<&'a Telemetry>,
    ) -> BeaconObject<'a> {
        BeaconObject {
            self_: base.map(|b| Href {
                href: beacon_href(b, &self.key()),
            }),
            beacon: &self.beacon,
            address: self.address.to_string(),
            address_type: self.address_type,
            rssi: self.rssi,
            first_seen: timestamp(self.first_seen_ms),
            last_seen: timestamp(self.last_seen_ms),
            sightings: self.sightings,
            telemetry,
        }
    }
}

/// What filters look at: an event's type, format, keys and RSSI.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    pub type_: &'static str,
    /// `eddystone-tlm` for telemetry; `None` for `webhook.ping`.
    pub format: Option<Format>,
    /// The beacon's key; for telemetry, the keys present at its address.
    pub keys: Vec<String>,
    pub rssi: Option<i16>,
}

impl EventMeta {
    /// The filter view of a logged event's JSON (for replays from the log).
    pub fn of_json(json: &str) -> Option<EventMeta> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        let type_ = TYPES.into_iter().find(|t| v["type"] == *t)?;
        let data = &v["data"];
        if type_ == "beacon.telemetry" {
            let keys = data["keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            return Some(EventMeta {
                type_,
                format: Some(Format::EddystoneTlm),
                keys,
                rssi: data["rssi"].as_i64().and_then(|r| i16::try_from(r).ok()),
            });
        }
        let beacon = &data["beacon"];
        Some(EventMeta {
            type_,
            format: beacon["format"].as_str().and_then(Format::from_name),
            keys: beacon["key"]
                .as_str()
                .map(String::from)
                .into_iter()
                .collect(),
            rssi: beacon["rssi"].as_i64().and_then(|r| i16::try_from(r).ok()),
        })
    }
}

/// An event before it is accepted: everything but its `sequence`, which the commit assigns.
#[derive(Debug, Clone)]
pub struct Draft {
    pub id: String,
    pub meta: EventMeta,
    pub timestamp_ms: u64,
    /// The compact JSON of `data`.
    pub data: Box<RawValue>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    type_: &'a str,
    timestamp: String,
    gateway: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    data: &'a RawValue,
}

impl Draft {
    /// The envelope of §3.4 as compact JSON; `webhook.ping` carries no sequence (§5.2 vector).
    pub fn envelope(&self, gateway: &str, sequence: Option<u64>) -> String {
        let envelope = Envelope {
            id: &self.id,
            type_: self.meta.type_,
            timestamp: timestamp(self.timestamp_ms),
            gateway,
            sequence,
            data: &self.data,
        };
        // Serialising strings, numbers and already-valid raw JSON cannot fail.
        serde_json::to_string(&envelope).unwrap_or_default()
    }

    fn new(meta: EventMeta, timestamp_ms: u64, data: &impl Serialize) -> Draft {
        Draft {
            id: new_id("evt"),
            meta,
            timestamp_ms,
            // Our data types always serialise; `null` would be the (unreachable) fallback.
            data: serde_json::value::to_raw_value(data).unwrap_or_default(),
        }
    }

    /// `webhook.ping` with `data: {}`.
    pub fn ping(now_ms: u64) -> Draft {
        let meta = EventMeta {
            type_: "webhook.ping",
            format: None,
            keys: Vec::new(),
            rssi: None,
        };
        Draft::new(meta, now_ms, &serde_json::Map::new())
    }

    /// `beacon.entered` with the `raw` pairs of the frame that caused it.
    pub fn entered(
        state: &BeaconState,
        telemetry: Option<&Telemetry>,
        raw: &Raw,
        links_base: &str,
    ) -> Draft {
        #[derive(Serialize)]
        struct Data<'a> {
            beacon: BeaconObject<'a>,
            raw: &'a Raw,
        }
        let data = Data {
            beacon: state.object(Some(links_base), telemetry),
            raw,
        };
        Draft::new(
            Self::beacon_meta("beacon.entered", state),
            state.last_seen_ms,
            &data,
        )
    }

    /// `beacon.updated` with the RSSI statistics since the previous entered/updated.
    pub fn updated(
        state: &BeaconState,
        telemetry: Option<&Telemetry>,
        window: &crate::presence::RssiWindow,
        links_base: &str,
    ) -> Draft {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Data<'a> {
            beacon: BeaconObject<'a>,
            rssi_min: Option<i16>,
            rssi_max: Option<i16>,
            rssi_mean: Option<f64>,
            sightings: u64,
        }
        let data = Data {
            beacon: state.object(Some(links_base), telemetry),
            rssi_min: window.rssi_min,
            rssi_max: window.rssi_max,
            rssi_mean: window.rssi_mean,
            sightings: window.sightings,
        };
        Draft::new(
            Self::beacon_meta("beacon.updated", state),
            state.last_seen_ms,
            &data,
        )
    }

    /// `beacon.left` at `at_ms`, with `durationS = lastSeen − firstSeen`.
    pub fn left(
        state: &BeaconState,
        telemetry: Option<&Telemetry>,
        at_ms: u64,
        links_base: &str,
    ) -> Draft {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Data<'a> {
            beacon: BeaconObject<'a>,
            #[serde(rename = "durationS")]
            duration_s: f64,
            reason: &'static str,
        }
        let duration_ms = state.last_seen_ms.saturating_sub(state.first_seen_ms);
        let data = Data {
            beacon: state.object(Some(links_base), telemetry),
            duration_s: duration_ms as f64 / 1000.0,
            reason: "timeout",
        };
        Draft::new(Self::beacon_meta("beacon.left", state), at_ms, &data)
    }

    /// `beacon.telemetry` for a TLM frame from `address`.
    pub fn telemetry(
        address: Address,
        address_type: AddressType,
        rssi: Option<i16>,
        keys: Vec<String>,
        telemetry: &Telemetry,
        at_ms: u64,
    ) -> Draft {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Data<'a> {
            address: String,
            address_type: AddressType,
            rssi: Option<i16>,
            keys: &'a [String],
            telemetry: &'a Telemetry,
        }
        let data = Data {
            address: address.to_string(),
            address_type,
            rssi,
            keys: &keys,
            telemetry,
        };
        let meta = EventMeta {
            type_: "beacon.telemetry",
            format: Some(Format::EddystoneTlm),
            keys: keys.clone(),
            rssi,
        };
        Draft::new(meta, at_ms, &data)
    }

    fn beacon_meta(type_: &'static str, state: &BeaconState) -> EventMeta {
        EventMeta {
            type_,
            format: Some(state.beacon.format()),
            keys: vec![state.key()],
            rssi: state.rssi,
        }
    }
}

/// `raw` of `beacon.entered`: the frame's manufacturer data (4-hex company id → payload hex) and
/// service data (128-bit UUID → payload hex).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Raw {
    pub manufacturer_data: std::collections::BTreeMap<String, String>,
    pub service_data: std::collections::BTreeMap<String, String>,
}

impl Raw {
    /// The pairs of a report: its maps, or, if it has none, those in its raw AD.
    pub fn of_report(report: &crate::backend::Report) -> Raw {
        let mut raw = Raw::default();
        if report.manufacturer_data.is_empty() && report.service_data.is_empty() {
            if let Some(bytes) = &report.raw {
                for (source, payload) in crate::beacon::ad::pairs(bytes) {
                    raw.add(&source, payload);
                }
            }
        } else {
            for (company, payload) in &report.manufacturer_data {
                raw.add(&crate::beacon::Source::Manufacturer(*company), payload);
            }
            for (uuid, payload) in &report.service_data {
                raw.add(&crate::beacon::Source::Service(*uuid), payload);
            }
        }
        raw
    }

    fn add(&mut self, source: &crate::beacon::Source, payload: &[u8]) {
        let hex = crate::hex::encode(payload);
        match source {
            crate::beacon::Source::Manufacturer(c) => {
                self.manufacturer_data.insert(format!("{c:04x}"), hex);
            }
            crate::beacon::Source::Service(u) => {
                self.service_data.insert(u.to_string(), hex);
            }
        }
    }
}

/// The batch wrapper of §3.5 around already-serialised events, in order.
pub fn batch_body(gateway: &str, now_ms: u64, events: &[&RawValue]) -> String {
    #[derive(Serialize)]
    struct Events<'a> {
        events: &'a [&'a RawValue],
    }
    #[derive(Serialize)]
    struct Batch<'a> {
        id: String,
        #[serde(rename = "type")]
        type_: &'static str,
        timestamp: String,
        gateway: &'a str,
        data: Events<'a>,
    }
    let batch = Batch {
        id: new_id("bat"),
        type_: "beacon.batch",
        timestamp: timestamp(now_ms),
        gateway,
        data: Events { events },
    };
    serde_json::to_string(&batch).unwrap_or_default()
}

/// Subscription and stream filters (§3.1, §3.7). Empty lists select everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Event types; empty for all four beacon types.
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub formats: Vec<String>,
    /// Exact keys or prefixes ending in `*`.
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub min_rssi: Option<i16>,
}

impl Filter {
    /// Whether an event passes. `minRssi` applies to entered and updated only; telemetry
    /// passes a key filter when any of its keys does.
    pub fn matches(&self, meta: &EventMeta) -> bool {
        if meta.type_ == "webhook.ping" {
            return false;
        }
        if !self.types.is_empty() && !self.types.iter().any(|t| t == meta.type_) {
            return false;
        }
        if !self.formats.is_empty() {
            let Some(format) = meta.format else {
                return false;
            };
            if !self.formats.iter().any(|f| f == format.as_str()) {
                return false;
            }
        }
        if !self.keys.is_empty()
            && !meta
                .keys
                .iter()
                .any(|k| self.keys.iter().any(|pattern| key_matches(pattern, k)))
        {
            return false;
        }
        if let Some(min) = self.min_rssi
            && matches!(meta.type_, "beacon.entered" | "beacon.updated")
            && meta.rssi.is_none_or(|r| r < min)
        {
            return false;
        }
        true
    }
}

/// An exact key, or a prefix ending in `*`.
pub fn key_matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::{Frame, decode_manufacturer_data};

    fn v1() -> BeaconState {
        let payload = crate::hex::decode("02154c696d6d6174426561636f6e2d30303100010007c5").unwrap();
        let crate::Decoded::Frame(Frame::Beacon(beacon)) =
            decode_manufacturer_data(0x004c, &payload)
        else {
            panic!()
        };
        BeaconState {
            beacon,
            address: "C0:FF:EE:00:00:01".parse().unwrap(),
            address_type: AddressType::Random,
            rssi: Some(-63),
            first_seen_ms: 1_735_732_800_250,
            last_seen_ms: 1_735_732_800_250,
            sightings: 1,
        }
    }

    #[test]
    fn entered_matches_the_spec_example() {
        let state = v1();
        let mut raw = Raw::default();
        raw.manufacturer_data.insert(
            "004c".into(),
            "02154c696d6d6174426561636f6e2d30303100010007c5".into(),
        );
        let mut draft = Draft::entered(&state, None, &raw, "http://127.0.0.1:8000");
        draft.id = "evt_01JGGZ8Q4V8X2M7N3P5R6T9W0Y".into();
        let json = draft.envelope("limmat-demo", Some(42));
        let expected = r#"{"id":"evt_01JGGZ8Q4V8X2M7N3P5R6T9W0Y","type":"beacon.entered","timestamp":"2025-01-01T12:00:00.250Z","gateway":"limmat-demo","sequence":42,"data":{"beacon":{"self":{"href":"http://127.0.0.1:8000/beacon/beacons/ibeacon%3A4c696d6d-6174-4265-6163-6f6e2d303031%3A1%3A7"},"key":"ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7","format":"ibeacon","uuid":"4c696d6d-6174-4265-6163-6f6e2d303031","major":1,"minor":7,"txPower":-59,"txPower1m":-59,"address":"C0:FF:EE:00:00:01","addressType":"random","rssi":-63,"firstSeen":"2025-01-01T12:00:00.250Z","lastSeen":"2025-01-01T12:00:00.250Z","sightings":1,"telemetry":null},"raw":{"manufacturerData":{"004c":"02154c696d6d6174426561636f6e2d30303100010007c5"},"serviceData":{}}}}"#;
        assert_eq!(json, expected);
    }

    #[test]
    fn ping_has_no_sequence_and_matches_the_signature_vector_body() {
        let mut draft = Draft::ping(1_735_732_800_000);
        draft.id = "evt_01JGGZ8Q4V8X2M7N3P5R6T9W0Y".into();
        assert_eq!(
            draft.envelope("limmat-demo", None),
            r#"{"id":"evt_01JGGZ8Q4V8X2M7N3P5R6T9W0Y","type":"webhook.ping","timestamp":"2025-01-01T12:00:00.000Z","gateway":"limmat-demo","data":{}}"#
        );
    }

    #[test]
    fn left_carries_duration_and_reason() {
        let mut state = v1();
        state.last_seen_ms += 12_500;
        let draft = Draft::left(&state, None, state.last_seen_ms + 30_000, "http://x");
        let v: serde_json::Value = serde_json::from_str(&draft.envelope("g", Some(1))).unwrap();
        assert_eq!(v["data"]["durationS"], 12.5);
        assert_eq!(v["data"]["reason"], "timeout");
        assert_eq!(v["timestamp"], "2025-01-01T12:00:42.750Z");
    }

    #[test]
    fn filters() {
        let meta = EventMeta {
            type_: "beacon.updated",
            format: Some(Format::IBeacon),
            keys: vec!["ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7".into()],
            rssi: Some(-80),
        };
        assert!(Filter::default().matches(&meta));
        let by_prefix = Filter {
            keys: vec!["ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:*".into()],
            ..Filter::default()
        };
        assert!(by_prefix.matches(&meta));
        let strong = Filter {
            min_rssi: Some(-70),
            ..Filter::default()
        };
        assert!(!strong.matches(&meta));
        let left = EventMeta {
            type_: "beacon.left",
            ..meta.clone()
        };
        assert!(strong.matches(&left));
        let tlm_only = Filter {
            formats: vec!["eddystone-tlm".into()],
            ..Filter::default()
        };
        assert!(!tlm_only.matches(&meta));
        assert!(
            !Filter {
                types: vec!["beacon.left".into()],
                ..Filter::default()
            }
            .matches(&meta)
        );
        assert_eq!(percent_encode("a:b/c"), "a%3Ab%2Fc");
    }
}
