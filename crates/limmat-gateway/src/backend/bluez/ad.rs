//! Advertising data rebuilt from decoded fields (`gateway-api.md` §2.7). BlueZ hands over no raw
//! AD bytes, so a node's `AD` array is reconstructed (`adSource: "reconstructed"`) in the
//! spec's fixed order: flags `0x01`; the complete UUID lists `0x03`/`0x05`/`0x07`; the complete
//! name `0x09`; TX power `0x0A`; service data `0x16`/`0x20`/`0x21` by UUID size; manufacturer
//! data `0xFF` with the company id put back little-endian. Multi-byte UUIDs are little-endian on
//! air. A structure whose data cannot fit one length byte (over 254 bytes) is left out.
//!
//! This file is pure (no `bluer`), so it can serve any backend without raw bytes.

use crate::backend::Report;
use crate::beacon::ad;
use crate::uuid::Uuid;

/// AD type: Complete List of 32-bit Service UUIDs.
const COMPLETE_UUID32: u8 = 0x05;
/// AD type: Complete List of 128-bit Service UUIDs.
const COMPLETE_UUID128: u8 = 0x07;
/// AD type: Complete Local Name.
const COMPLETE_NAME: u8 = 0x09;
/// AD type: TX Power Level.
const TX_POWER: u8 = 0x0a;

/// A UUID in its shortest on-air form, little-endian, with the AD types for a UUID list and for
/// service data of that size.
fn short_form(uuid: &Uuid) -> (Vec<u8>, u8, u8) {
    if let Some(short) = uuid.as_u16() {
        return (
            short.to_le_bytes().to_vec(),
            ad::COMPLETE_UUID16,
            ad::SERVICE_DATA_UUID16,
        );
    }
    let base = Uuid::from_u32(0);
    if uuid.0[4..] == base.0[4..] {
        let mut bytes = uuid.0[..4].to_vec();
        bytes.reverse();
        return (bytes, COMPLETE_UUID32, ad::SERVICE_DATA_UUID32);
    }
    let mut bytes = uuid.0.to_vec();
    bytes.reverse();
    (bytes, COMPLETE_UUID128, ad::SERVICE_DATA_UUID128)
}

/// The AD structures of a report, as `(AD type, data)` in the order of §2.7.
pub fn reconstruct_structures(report: &Report) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(flags) = report.flags {
        out.push((ad::FLAGS, vec![flags]));
    }
    for list_type in [ad::COMPLETE_UUID16, COMPLETE_UUID32, COMPLETE_UUID128] {
        let list: Vec<u8> = report
            .service_uuids
            .iter()
            .map(short_form)
            .filter(|(_, t, _)| *t == list_type)
            .flat_map(|(bytes, _, _)| bytes)
            .collect();
        if !list.is_empty() {
            out.push((list_type, list));
        }
    }
    if let Some(name) = &report.name {
        out.push((COMPLETE_NAME, name.as_bytes().to_vec()));
    }
    if let Some(tx_power) = report.tx_power {
        out.push((TX_POWER, tx_power.to_le_bytes().to_vec()));
    }
    for data_type in [
        ad::SERVICE_DATA_UUID16,
        ad::SERVICE_DATA_UUID32,
        ad::SERVICE_DATA_UUID128,
    ] {
        for (uuid, payload) in &report.service_data {
            let (mut bytes, _, t) = short_form(uuid);
            if t == data_type {
                bytes.extend_from_slice(payload);
                out.push((data_type, bytes));
            }
        }
    }
    for (company, payload) in &report.manufacturer_data {
        let mut bytes = company.to_le_bytes().to_vec();
        bytes.extend_from_slice(payload);
        out.push((ad::MANUFACTURER_DATA, bytes));
    }
    out.retain(|(_, data)| data.len() < 255);
    out
}

/// The same structures as raw bytes, `[length][type][data…]` each.
pub fn reconstruct_ad(report: &Report) -> Vec<u8> {
    let mut raw = Vec::new();
    for (ad_type, data) in reconstruct_structures(report) {
        // `reconstruct_structures` keeps only data below 255 bytes, so this fits.
        raw.push(u8::try_from(data.len() + 1).unwrap_or(u8::MAX));
        raw.push(ad_type);
        raw.extend_from_slice(&data);
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Address, AddressType};
    use crate::hex;

    fn report() -> Report {
        // Any empty report will do; the discovery module makes them.
        super::super::discovery::blank(Address([0xc0, 0xff, 0xee, 0, 0, 1]), AddressType::Public)
    }

    #[test]
    fn v3_and_v8_come_back_byte_for_byte() {
        // V3: flags and the iBeacon's manufacturer data.
        let mut r = report();
        r.flags = Some(0x06);
        let v1 = hex::decode("02154c696d6d6174426561636f6e2d30303100010007c5").unwrap();
        r.manufacturer_data.insert(0x004c, v1);
        assert_eq!(
            hex::encode(&reconstruct_ad(&r)),
            "0201061aff4c0002154c696d6d6174426561636f6e2d30303100010007c5"
        );
        // V8: flags, the FEAA list, then the Eddystone-UID service data.
        let mut r = report();
        r.flags = Some(0x06);
        r.service_uuids.push(Uuid::EDDYSTONE);
        let v6 = hex::decode("00ee4c696d6d6f6e2d3030310000000000010000").unwrap();
        r.service_data.insert(Uuid::EDDYSTONE, v6);
        assert_eq!(
            hex::encode(&reconstruct_ad(&r)),
            "0201060303aafe1716aafe00ee4c696d6d6f6e2d3030310000000000010000"
        );
    }

    #[test]
    fn the_order_is_flags_uuids_name_tx_power_service_then_manufacturer_data() {
        let vendor: Uuid = "6c696d6d-6174-4000-8000-00000000f000".parse().unwrap();
        let mut r = report();
        r.flags = Some(0x06);
        r.name = Some("HR".into());
        r.tx_power = Some(-8);
        r.service_uuids = vec![vendor, Uuid::from_u16(0x180f), Uuid::from_u32(0x1234_5678)];
        r.service_data.insert(vendor, vec![1]);
        r.service_data.insert(Uuid::from_u16(0x180f), vec![2]);
        r.manufacturer_data.insert(0x0118, vec![3]);
        let types: Vec<u8> = reconstruct_structures(&r).iter().map(|(t, _)| *t).collect();
        assert_eq!(
            types,
            [0x01, 0x03, 0x05, 0x07, 0x09, 0x0a, 0x16, 0x21, 0xff]
        );
        let structures = reconstruct_structures(&r);
        assert_eq!(structures[2].1, [0x78, 0x56, 0x34, 0x12]);
        assert_eq!(structures[3].1[0], 0x00);
        assert_eq!(structures[3].1[15], 0x6c);
        assert_eq!(structures[5].1, [0xf8]);
        assert_eq!(structures[8].1, [0x18, 0x01, 3]);
    }

    #[test]
    fn the_raw_form_splits_back_into_the_same_pairs() {
        let mut r = report();
        r.manufacturer_data.insert(0x0118, vec![0xbe, 0xac]);
        r.service_data.insert(Uuid::EDDYSTONE, vec![0x10]);
        let raw = reconstruct_ad(&r);
        assert_eq!(ad::pairs(&raw).len(), 2);
        r.name = Some("x".repeat(300));
        assert_eq!(
            reconstruct_structures(&r).len(),
            2,
            "an oversized name is left out"
        );
    }
}
