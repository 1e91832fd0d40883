//! Advertisement reports from raw AD bytes (`gateway-api.md` §6.1). The simulator broadcasts
//! raw AD exactly as in §4.5 and derives every decoded field of the report (flags, service
//! UUIDs, name, TX power, manufacturer data with the company id stripped, service data) from
//! those bytes with the same splitter the beacon pipeline uses, so the two views of a report
//! can never disagree.

use crate::address::{Address, AddressType};
use crate::backend::Report;
use crate::beacon::{Source, ad};
use crate::uuid::Uuid;
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio::time::Instant;

/// AD types read here beyond those [`ad`] names.
const INCOMPLETE_UUID16: u8 = 0x02;
const INCOMPLETE_UUID32: u8 = 0x04;
const COMPLETE_UUID32: u8 = 0x05;
const INCOMPLETE_UUID128: u8 = 0x06;
const COMPLETE_UUID128: u8 = 0x07;
const SHORT_NAME: u8 = 0x08;
/// AD type: Complete Local Name.
pub(super) const COMPLETE_NAME: u8 = 0x09;
const TX_POWER: u8 = 0x0a;

/// A report for `raw` from `address` (random static, as every simulated device), with RSSI
/// and receive times still to be filled in.
pub(super) fn from_raw(address: Address, raw: Vec<u8>, connectable: bool) -> Report {
    let mut report = Report {
        address,
        address_type: AddressType::Random,
        rssi: None,
        tx_power: None,
        name: None,
        flags: None,
        service_uuids: Vec::new(),
        manufacturer_data: BTreeMap::new(),
        service_data: BTreeMap::new(),
        raw: None,
        connectable: Some(connectable),
        received: SystemTime::UNIX_EPOCH,
        at: Instant::now().into_std(),
    };
    for s in ad::structures(&raw) {
        match s.ad_type {
            ad::FLAGS => report.flags = s.data.first().copied(),
            INCOMPLETE_UUID16 | ad::COMPLETE_UUID16 => report.service_uuids.extend(
                s.data
                    .chunks_exact(2)
                    .map(|c| Uuid::from_u16(u16::from_le_bytes([c[0], c[1]]))),
            ),
            INCOMPLETE_UUID32 | COMPLETE_UUID32 => report.service_uuids.extend(
                s.data
                    .chunks_exact(4)
                    .map(|c| Uuid::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            ),
            INCOMPLETE_UUID128 | COMPLETE_UUID128 => {
                report
                    .service_uuids
                    .extend(s.data.chunks_exact(16).map(|c| {
                        let mut be = [0u8; 16];
                        be.copy_from_slice(c);
                        be.reverse();
                        Uuid(be)
                    }))
            }
            // A complete name wins over a shortened one.
            SHORT_NAME if report.name.is_none() => {
                report.name = Some(String::from_utf8_lossy(s.data).into_owned())
            }
            COMPLETE_NAME => report.name = Some(String::from_utf8_lossy(s.data).into_owned()),
            TX_POWER => report.tx_power = s.data.first().map(|&b| b as i8),
            _ => {}
        }
    }
    for (source, payload) in ad::pairs(&raw) {
        match source {
            Source::Manufacturer(company) => {
                report.manufacturer_data.insert(company, payload.to_vec());
            }
            Source::Service(uuid) => {
                report.service_data.insert(uuid, payload.to_vec());
            }
        }
    }
    report.raw = Some(raw);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(hex: &str) -> Report {
        from_raw(
            Address([0xc0, 0, 0, 0, 0, 1]),
            crate::hex::decode(hex).unwrap(),
            true,
        )
    }

    #[test]
    fn every_decoded_field_comes_from_the_raw_bytes() {
        // Flags, a shortened then a complete name, TX power, 16/32/128-bit UUID lists,
        // manufacturer data and 128-bit service data.
        let r = report(concat!(
            "020106",
            "03084c69",
            "0509",
            "4c696d6d",
            "020af4",
            "03020f18",
            "050478563412",
            "110700f0000000000080004074616d6d696c",
            "05ff4c000102",
            "132100f0000000000080004074616d6d696cabcd",
        ));
        assert_eq!(r.flags, Some(0x06));
        assert_eq!(r.name.as_deref(), Some("Limm"));
        assert_eq!(r.tx_power, Some(-12));
        let uuids: Vec<String> = r.service_uuids.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            uuids,
            [
                "0000180f-0000-1000-8000-00805f9b34fb",
                "12345678-0000-1000-8000-00805f9b34fb",
                "6c696d6d-6174-4000-8000-00000000f000",
            ]
        );
        assert_eq!(r.manufacturer_data[&0x004c], [0x01, 0x02]);
        let vendor: Uuid = "6c696d6d-6174-4000-8000-00000000f000".parse().unwrap();
        assert_eq!(r.service_data[&vendor], [0xab, 0xcd]);
        assert_eq!(r.connectable, Some(true));
        assert_eq!(r.address_type, AddressType::Random);
    }

    #[test]
    fn truncated_structures_are_dropped_not_fatal() {
        let r = report("0201061aff4c000215");
        assert_eq!(r.flags, Some(0x06));
        assert!(r.manufacturer_data.is_empty());
        assert_eq!(r.raw.as_deref().map(<[u8]>::len), Some(9));
    }
}
