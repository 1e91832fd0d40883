//! The node object (`gateway-api.md` §2.7), shared by the GAP views (scan lists, SSE
//! advertisements, one node) and the GATT views (which add links to services and
//! characteristics). `AD` is the raw advertising data when the backend has it, and otherwise
//! rebuilt from the decoded fields in the order §2.7 fixes (`adSource: "reconstructed"`).

use crate::address::Address;
use crate::api::Base;
use crate::backend::Report;
use crate::beacon::ad;
use crate::hex;
use crate::uuid::Uuid;
use serde_json::{Map, Value, json};

/// What one node object shows.
pub struct NodeView<'a> {
    pub address: Address,
    pub report: Option<&'a Report>,
    pub name: Option<String>,
    pub connected: bool,
}

/// Which tree the node object sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    Gap,
    Gatt,
}

/// `{"href": …}`.
pub fn link(base: &Base, path: &str) -> Value {
    json!({ "href": base.href(path) })
}

/// The node object.
pub fn render(base: &Base, view: &NodeView<'_>, tree: Tree) -> Value {
    let handle = view.address.handle();
    let report = view.report;
    let (ad, source) = match report {
        Some(r) => match &r.raw {
            Some(raw) => (raw_ad(raw), Value::from("raw")),
            None => (reconstructed_ad(r), Value::from("reconstructed")),
        },
        None => (Vec::new(), Value::Null),
    };
    let mut node = Map::new();
    let root = match tree {
        Tree::Gap => "gap",
        Tree::Gatt => "gatt",
    };
    node.insert(
        "self".into(),
        link(base, &format!("/{root}/nodes/{handle}")),
    );
    node.insert("handle".into(), handle.clone().into());
    node.insert("bdaddr".into(), view.address.to_string().into());
    node.insert(
        "bdaddrType".into(),
        report.map_or(Value::Null, |r| json!(r.address_type)),
    );
    node.insert("name".into(), json!(view.name));
    node.insert("rssi".into(), json!(report.and_then(|r| r.rssi)));
    node.insert("txPower".into(), json!(report.and_then(|r| r.tx_power)));
    node.insert(
        "connectable".into(),
        json!(report.and_then(|r| r.connectable)),
    );
    node.insert("connected".into(), view.connected.into());
    // Auto-reconnect is an [O] feature this gateway does not offer.
    node.insert("enabled".into(), false.into());
    node.insert(
        "lastSeen".into(),
        json!(report.map(|r| humantime::format_rfc3339_millis(r.received).to_string())),
    );
    node.insert("adSource".into(), source);
    node.insert("AD".into(), Value::Array(ad));
    node.insert(
        "manufacturerData".into(),
        Value::Object(report.map_or_else(Map::new, |r| {
            r.manufacturer_data
                .iter()
                .map(|(id, payload)| (format!("{id:04x}"), hex::encode(payload).into()))
                .collect()
        })),
    );
    node.insert(
        "serviceData".into(),
        Value::Object(report.map_or_else(Map::new, |r| {
            r.service_data
                .iter()
                .map(|(uuid, payload)| (uuid.to_string(), hex::encode(payload).into()))
                .collect()
        })),
    );
    node.insert(
        "serviceUuids".into(),
        json!(report.map_or_else(Vec::new, |r| r.service_uuids.clone())),
    );
    if tree == Tree::Gatt {
        node.insert(
            "services".into(),
            link(base, &format!("/gatt/nodes/{handle}/services")),
        );
        node.insert(
            "characteristics".into(),
            link(base, &format!("/gatt/nodes/{handle}/characteristics")),
        );
    }
    Value::Object(node)
}

fn structure(ad_type: u8, data: &[u8]) -> Value {
    json!({ "ADType": ad_type, "ADValue": hex::encode(data) })
}

fn raw_ad(raw: &[u8]) -> Vec<Value> {
    ad::structures(raw)
        .iter()
        .map(|s| structure(s.ad_type, s.data))
        .collect()
}

/// A UUID as it goes on air: 2, 4 or 16 bytes, little-endian.
fn uuid_on_air(uuid: &Uuid) -> Vec<u8> {
    if let Some(short) = uuid.as_u16() {
        return short.to_le_bytes().to_vec();
    }
    let base = Uuid::from_u32(0);
    if uuid.0[4..] == base.0[4..] {
        let mut le = uuid.0[..4].to_vec();
        le.reverse();
        return le;
    }
    let mut le = uuid.0.to_vec();
    le.reverse();
    le
}

/// §2.7's order: flags; UUID lists `0x03`/`0x05`/`0x07`; name `0x09`; TX power `0x0A`;
/// service data `0x16`/`0x20`/`0x21`; manufacturer data `0xFF` with the company id put back.
fn reconstructed_ad(r: &Report) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(flags) = r.flags {
        out.push(structure(0x01, &[flags]));
    }
    for (ad_type, size) in [(0x03, 2), (0x05, 4), (0x07, 16)] {
        let list: Vec<u8> = r
            .service_uuids
            .iter()
            .map(uuid_on_air)
            .filter(|b| b.len() == size)
            .flatten()
            .collect();
        if !list.is_empty() {
            out.push(structure(ad_type, &list));
        }
    }
    if let Some(name) = &r.name {
        out.push(structure(0x09, name.as_bytes()));
    }
    if let Some(tx) = r.tx_power {
        out.push(structure(0x0a, &tx.to_le_bytes()));
    }
    for (uuid, payload) in &r.service_data {
        let id = uuid_on_air(uuid);
        let ad_type = match id.len() {
            2 => 0x16,
            4 => 0x20,
            _ => 0x21,
        };
        out.push(structure(ad_type, &[id, payload.clone()].concat()));
    }
    for (company, payload) in &r.manufacturer_data {
        out.push(structure(
            0xff,
            &[company.to_le_bytes().to_vec(), payload.clone()].concat(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::AddressType;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant, SystemTime};

    fn report() -> Report {
        Report {
            address: Address([0xc0, 0xff, 0xee, 0, 0, 0x10]),
            address_type: AddressType::Random,
            rssi: Some(-63),
            tx_power: Some(-59),
            name: Some("Hi".into()),
            flags: Some(6),
            service_uuids: vec![
                Uuid::from_u16(0x180f),
                "6c696d6d-6174-4000-8000-00000000f000".parse().unwrap(),
            ],
            manufacturer_data: BTreeMap::from([(0x004c, vec![2, 0x15])]),
            service_data: BTreeMap::from([(Uuid::from_u16(0xfeaa), vec![0x10])]),
            raw: None,
            connectable: Some(true),
            received: SystemTime::UNIX_EPOCH + Duration::from_millis(1_735_732_800_250),
            at: Instant::now(),
        }
    }

    #[test]
    fn reconstructs_ad_in_the_spec_order() {
        let r = report();
        let view = NodeView {
            address: r.address,
            report: Some(&r),
            name: r.name.clone(),
            connected: false,
        };
        let node = render(&Base("http://h/gw".into()), &view, Tree::Gap);
        assert_eq!(node["self"]["href"], "http://h/gw/gap/nodes/c0ffee000010");
        assert_eq!(node["adSource"], "reconstructed");
        assert_eq!(node["lastSeen"], "2025-01-01T12:00:00.250Z");
        assert_eq!(node["manufacturerData"]["004c"], "0215");
        let types: Vec<u64> = node["AD"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["ADType"].as_u64().unwrap())
            .collect();
        assert_eq!(types, [0x01, 0x03, 0x07, 0x09, 0x0a, 0x16, 0xff]);
        assert_eq!(node["AD"][1]["ADValue"], "0f18");
        assert_eq!(node["AD"][4]["ADValue"], "c5");
        assert_eq!(node["AD"][5]["ADValue"], "aafe10");
        assert_eq!(node["AD"][6]["ADValue"], "4c000215");
    }

    #[test]
    fn raw_ad_is_split_into_structures() {
        let mut r = report();
        r.raw = Some(vec![2, 1, 6, 3, 0xff, 0x4c, 0x00]);
        let view = NodeView {
            address: r.address,
            report: Some(&r),
            name: None,
            connected: true,
        };
        let node = render(&Base(String::new()), &view, Tree::Gatt);
        assert_eq!(node["adSource"], "raw");
        assert_eq!(
            node["AD"],
            json!([{"ADType": 1, "ADValue": "06"}, {"ADType": 255, "ADValue": "4c00"}])
        );
        assert_eq!(
            node["services"]["href"],
            "/gatt/nodes/c0ffee000010/services"
        );
    }
}
