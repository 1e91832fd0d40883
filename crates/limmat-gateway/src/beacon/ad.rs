//! Raw advertising data (`gateway-api.md` §4.1): AD structures `[length][type][data…]`, where
//! `length` counts the type byte and the data. A length of `0` ends the significant part; a
//! structure that runs past the end is malformed and is dropped with everything after it.
//! The beacon parsers take `(company id, payload)` and `(service UUID, payload)` pairs, because
//! BlueZ gives nothing else; [`pairs`] is the thin adapter that makes the same pairs from raw
//! bytes (the simulator's reports), and [`advertisement`] builds the raw form of §4.5, flags
//! first, that the simulator broadcasts.

use super::Source;
use crate::uuid::Uuid;

/// AD type: Flags.
pub const FLAGS: u8 = 0x01;
/// AD type: Complete List of 16-bit Service UUIDs.
pub const COMPLETE_UUID16: u8 = 0x03;
/// AD type: Service Data with a 16-bit UUID.
pub const SERVICE_DATA_UUID16: u8 = 0x16;
/// AD type: Service Data with a 32-bit UUID.
pub const SERVICE_DATA_UUID32: u8 = 0x20;
/// AD type: Service Data with a 128-bit UUID.
pub const SERVICE_DATA_UUID128: u8 = 0x21;
/// AD type: Manufacturer Specific Data.
pub const MANUFACTURER_DATA: u8 = 0xff;
/// The flags the simulator's beacons carry: LE General Discoverable, BR/EDR not supported.
pub const BEACON_FLAGS: u8 = 0x06;

/// One AD structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdStructure<'a> {
    /// The AD type (`ADType`), such as [`FLAGS`] or [`MANUFACTURER_DATA`].
    pub ad_type: u8,
    /// The data after the type byte (`ADValue`): `length − 1` bytes.
    pub data: &'a [u8],
}

/// The well-formed AD structures of `raw`, up to a zero length or the first that runs past the
/// end.
pub fn structures(raw: &[u8]) -> Vec<AdStructure<'_>> {
    let mut found = Vec::new();
    let mut rest = raw;
    while let Some((&len, after)) = rest.split_first() {
        let Some(len) = usize::from(len).checked_sub(1) else {
            break;
        };
        let Some((&ad_type, after)) = after.split_first() else {
            break;
        };
        let Some((data, after)) = after.split_at_checked(len) else {
            break;
        };
        found.push(AdStructure { ad_type, data });
        rest = after;
    }
    found
}

/// The manufacturer-data and service-data pairs of `raw`, in order, with the company id or
/// UUID (little-endian on air) taken off the payload. A structure too short for its id is
/// skipped.
pub fn pairs(raw: &[u8]) -> Vec<(Source, &[u8])> {
    structures(raw)
        .into_iter()
        .filter_map(|ad| pair(&ad))
        .collect()
}

fn pair<'a>(ad: &AdStructure<'a>) -> Option<(Source, &'a [u8])> {
    let data = ad.data;
    match ad.ad_type {
        MANUFACTURER_DATA => {
            let (id, payload) = data.split_first_chunk::<2>()?;
            Some((Source::Manufacturer(u16::from_le_bytes(*id)), payload))
        }
        SERVICE_DATA_UUID16 => {
            let (id, payload) = data.split_first_chunk::<2>()?;
            Some((
                Source::Service(Uuid::from_u16(u16::from_le_bytes(*id))),
                payload,
            ))
        }
        SERVICE_DATA_UUID32 => {
            let (id, payload) = data.split_first_chunk::<4>()?;
            Some((
                Source::Service(Uuid::from_u32(u32::from_le_bytes(*id))),
                payload,
            ))
        }
        SERVICE_DATA_UUID128 => {
            let (id, payload) = data.split_first_chunk::<16>()?;
            let mut be = *id;
            be.reverse();
            Some((Source::Service(Uuid(be)), payload))
        }
        _ => None,
    }
}

/// The raw advertisement of §4.5 for one pair: flags `06`, for a 16-bit service UUID the
/// complete UUID list (`03 03 AA FE` for Eddystone), then the data structure. `None` if a
/// structure would exceed 255 bytes. (Legacy advertising carries 31 bytes; the caller checks
/// that limit where it applies.)
pub fn advertisement(source: &Source, payload: &[u8]) -> Option<Vec<u8>> {
    let mut raw = vec![2, FLAGS, BEACON_FLAGS];
    match source {
        Source::Manufacturer(company_id) => {
            push(
                &mut raw,
                MANUFACTURER_DATA,
                &[&company_id.to_le_bytes(), payload],
            )?;
        }
        Source::Service(uuid) => match uuid.as_u16() {
            Some(short) => {
                let le = short.to_le_bytes();
                push(&mut raw, COMPLETE_UUID16, &[&le])?;
                push(&mut raw, SERVICE_DATA_UUID16, &[&le, payload])?;
            }
            None => {
                let mut le = uuid.0;
                le.reverse();
                push(&mut raw, SERVICE_DATA_UUID128, &[&le, payload])?;
            }
        },
    }
    Some(raw)
}

fn push(raw: &mut Vec<u8>, ad_type: u8, parts: &[&[u8]]) -> Option<()> {
    let data = parts.concat();
    let len = u8::try_from(data.len().checked_add(1)?).ok()?;
    raw.extend([len, ad_type]);
    raw.extend(data);
    Some(())
}
