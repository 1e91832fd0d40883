//! Beacon frames as pure functions (`gateway-api.md` §4): a `(company id, payload)` or
//! `(service UUID, payload)` pair in, a typed [`Decoded`] out, and typed frames back to the
//! exact pair. Pairs are the input because BlueZ hands over only those maps, never raw AD
//! (§4.1); [`ad`] splits raw AD into the same pairs. Every function here is total: no input
//! makes it panic, so the pipeline can feed it whatever the air carries, and it is fuzzed.
//!
//! A pair is one of three things (§4.1): a [`Frame`] (a beacon, or Eddystone telemetry);
//! [`Decoded::NotABeacon`] when it matches no format's discriminator (neither an error nor
//! counted); or [`Decoded::Malformed`] when it matches a discriminator but breaks that format's
//! rules (counted in a metric, and no beacon).
//!
//! - [`ibeacon`], [`altbeacon`]: manufacturer-data formats (§4.2, §4.3).
//! - [`eddystone`]: the `0xFEAA` service-data frames UID, URL, TLM and EID (§4.4), with the URL
//!   codec in [`url`].
//! - [`ad`]: raw AD structures to pairs, and pairs to the raw advertisements of §4.5.
//! - [`Beacon::key`]: the identity key of §3.2; the `Serialize` impls give the JSON members of
//!   §3.2 and §3.4.

pub mod ad;
pub mod altbeacon;
pub mod eddystone;
pub mod ibeacon;
pub mod url;

use crate::uuid::Uuid;
use serde::ser::{SerializeMap, Serializer};
use std::fmt;

pub use altbeacon::AltBeacon;
pub use eddystone::{EddystoneEid, EddystoneUid, EddystoneUrl, EncryptedTlm, PlainTlm, Telemetry};
pub use ibeacon::IBeacon;

/// Where a payload came from: manufacturer data under a company id, or service data under a
/// service UUID. The id or UUID is not part of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Manufacturer Specific Data (AD type `0xFF`) with this company id.
    Manufacturer(u16),
    /// Service Data for this service UUID.
    Service(Uuid),
}

/// The formats of §3.2, plus `eddystone-tlm`, which names telemetry in filters (§3.7) and in
/// [`Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Format {
    /// `ibeacon`: Apple iBeacon (§4.2).
    #[serde(rename = "ibeacon")]
    IBeacon,
    /// `altbeacon`: AltBeacon v1.0 (§4.3).
    #[serde(rename = "altbeacon")]
    AltBeacon,
    /// `eddystone-uid`: Eddystone-UID (§4.4).
    #[serde(rename = "eddystone-uid")]
    EddystoneUid,
    /// `eddystone-url`: Eddystone-URL (§4.4).
    #[serde(rename = "eddystone-url")]
    EddystoneUrl,
    /// `eddystone-tlm`: Eddystone telemetry (§4.4), no identity of its own.
    #[serde(rename = "eddystone-tlm")]
    EddystoneTlm,
    /// `eddystone-eid`: Eddystone-EID (§4.4).
    #[serde(rename = "eddystone-eid")]
    EddystoneEid,
}

impl Format {
    /// Every format, in the order of §3.2 (telemetry after URL, as in §4.4).
    pub const ALL: [Format; 6] = [
        Format::IBeacon,
        Format::AltBeacon,
        Format::EddystoneUid,
        Format::EddystoneUrl,
        Format::EddystoneTlm,
        Format::EddystoneEid,
    ];

    /// The name used in JSON, in keys and in query parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::IBeacon => "ibeacon",
            Format::AltBeacon => "altbeacon",
            Format::EddystoneUid => "eddystone-uid",
            Format::EddystoneUrl => "eddystone-url",
            Format::EddystoneTlm => "eddystone-tlm",
            Format::EddystoneEid => "eddystone-eid",
        }
    }

    /// The format with this name, exactly as [`Format::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pair that matched a format's discriminator but broke its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {format}: {reason}")]
pub struct Malformed {
    /// The format whose discriminator the pair matched (the metric's `format` label).
    pub format: Format,
    /// The rule it broke.
    pub reason: Reason,
}

/// Which rule a malformed frame broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The payload length is not one the format allows.
    #[error("{actual} bytes, expected {expected}")]
    Length {
        /// The payload's length in bytes.
        actual: usize,
        /// The lengths the format allows, in words (`"23"`, `"18 or 20"`, `"3 to 20"`).
        expected: &'static str,
    },
    /// An Eddystone-URL scheme prefix other than `00`–`03`.
    #[error("URL scheme prefix {0:#04x}")]
    UrlScheme(u8),
    /// A reserved Eddystone-URL byte (`0E`–`20`, `7F`–`FF`) at this offset of the encoded URL.
    #[error("reserved URL byte {byte:#04x} at offset {offset}")]
    UrlReserved {
        /// The reserved byte.
        byte: u8,
        /// Its offset in the encoded URL (after the scheme prefix), from 0.
        offset: usize,
    },
    /// An Eddystone-TLM version other than 0 (plain) or 1 (encrypted).
    #[error("TLM version {0}")]
    TlmVersion(u8),
}

/// A decoded frame: a beacon with an identity, or telemetry without one.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A beacon, tracked by its key (§3.2, §3.3).
    Beacon(Beacon),
    /// Eddystone-TLM, attached to the address it came from (§3.4 `beacon.telemetry`).
    Telemetry(Telemetry),
}

/// What a pair is (§4.1).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A frame of one of the formats of §4.2–§4.4.
    Frame(Frame),
    /// The pair matches no format's discriminator: not an error, and not counted.
    NotABeacon,
    /// The pair matches a discriminator but breaks that format's rules: counted in a metric,
    /// and no beacon.
    Malformed(Malformed),
}

impl Decoded {
    /// The beacon, if this is one.
    pub fn beacon(&self) -> Option<&Beacon> {
        match self {
            Decoded::Frame(Frame::Beacon(beacon)) => Some(beacon),
            _ => None,
        }
    }

    /// The telemetry, if this is an Eddystone-TLM frame.
    pub fn telemetry(&self) -> Option<&Telemetry> {
        match self {
            Decoded::Frame(Frame::Telemetry(telemetry)) => Some(telemetry),
            _ => None,
        }
    }
}

/// Decodes one pair into whichever format it belongs to.
pub fn decode(source: &Source, payload: &[u8]) -> Decoded {
    match source {
        Source::Manufacturer(company_id) => decode_manufacturer_data(*company_id, payload),
        Source::Service(uuid) => decode_service_data(uuid, payload),
    }
}

/// Manufacturer data: iBeacon (§4.2) or AltBeacon (§4.3).
pub fn decode_manufacturer_data(company_id: u16, payload: &[u8]) -> Decoded {
    match ibeacon::decode(company_id, payload) {
        Decoded::NotABeacon => altbeacon::decode(company_id, payload),
        decoded => decoded,
    }
}

/// Service data: the Eddystone frames (§4.4). Any other service is `NotABeacon`.
pub fn decode_service_data(uuid: &Uuid, payload: &[u8]) -> Decoded {
    if *uuid == Uuid::EDDYSTONE {
        eddystone::decode(payload)
    } else {
        Decoded::NotABeacon
    }
}

/// A beacon with an identity (§3.2), as broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Beacon {
    /// Apple iBeacon (§4.2).
    IBeacon(IBeacon),
    /// AltBeacon (§4.3).
    AltBeacon(AltBeacon),
    /// Eddystone-UID (§4.4).
    EddystoneUid(EddystoneUid),
    /// Eddystone-URL (§4.4).
    EddystoneUrl(EddystoneUrl),
    /// Eddystone-EID (§4.4).
    EddystoneEid(EddystoneEid),
}

impl Beacon {
    /// The beacon's format: the `format` member and the first part of its key (§3.2).
    pub fn format(&self) -> Format {
        match self {
            Beacon::IBeacon(_) => Format::IBeacon,
            Beacon::AltBeacon(_) => Format::AltBeacon,
            Beacon::EddystoneUid(_) => Format::EddystoneUid,
            Beacon::EddystoneUrl(_) => Format::EddystoneUrl,
            Beacon::EddystoneEid(_) => Format::EddystoneEid,
        }
    }

    /// The identity key of §3.2. It depends only on what is broadcast, never on the address.
    pub fn key(&self) -> String {
        let format = self.format();
        match self {
            Beacon::IBeacon(b) => format!("{format}:{}:{}:{}", b.uuid, b.major, b.minor),
            Beacon::AltBeacon(b) => format!("{format}:{}", crate::hex::encode(&b.beacon_id)),
            Beacon::EddystoneUid(b) => format!(
                "{format}:{}:{}",
                crate::hex::encode(&b.namespace),
                crate::hex::encode(&b.instance)
            ),
            Beacon::EddystoneUrl(b) => format!("{format}:{}", b.url()),
            Beacon::EddystoneEid(b) => format!("{format}:{}", crate::hex::encode(&b.eid)),
        }
    }

    /// The TX power as broadcast: at 1 m for iBeacon and AltBeacon, at 0 m for Eddystone.
    pub fn tx_power(&self) -> i8 {
        match self {
            Beacon::IBeacon(b) => b.tx_power,
            Beacon::AltBeacon(b) => b.tx_power,
            Beacon::EddystoneUid(b) => b.tx_power,
            Beacon::EddystoneUrl(b) => b.tx_power,
            Beacon::EddystoneEid(b) => b.tx_power,
        }
    }

    /// The TX power normalised to 1 m (`txPower1m`): Eddystone's 0 m value minus 41 dB (§4.4).
    pub fn tx_power_1m(&self) -> i16 {
        let broadcast = i16::from(self.tx_power());
        match self.format() {
            Format::IBeacon | Format::AltBeacon => broadcast,
            _ => broadcast - 41,
        }
    }

    /// The pair that broadcasts this beacon, in canonical form (the UID with its RFU bytes).
    pub fn encode(&self) -> (Source, Vec<u8>) {
        match self {
            Beacon::IBeacon(b) => (Source::Manufacturer(ibeacon::APPLE), b.encode()),
            Beacon::AltBeacon(b) => (Source::Manufacturer(b.company_id), b.encode()),
            Beacon::EddystoneUid(b) => (Source::Service(Uuid::EDDYSTONE), b.encode()),
            Beacon::EddystoneUrl(b) => (Source::Service(Uuid::EDDYSTONE), b.encode()),
            Beacon::EddystoneEid(b) => (Source::Service(Uuid::EDDYSTONE), b.encode()),
        }
    }
}

impl Frame {
    /// The pair that broadcasts this frame; decoding it gives this frame back.
    pub fn encode(&self) -> (Source, Vec<u8>) {
        match self {
            Frame::Beacon(beacon) => beacon.encode(),
            Frame::Telemetry(telemetry) => (Source::Service(Uuid::EDDYSTONE), telemetry.encode()),
        }
    }
}

/// The members a beacon contributes to the beacon object of §3.2: `key`, `format`, the format
/// members, `txPower` and `txPower1m`. The gateway flattens this into the object that adds
/// `self`, `address`, `rssi`, `firstSeen` and the rest.
impl serde::Serialize for Beacon {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use crate::hex::encode as hex;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("key", &self.key())?;
        map.serialize_entry("format", &self.format())?;
        match self {
            Beacon::IBeacon(b) => {
                map.serialize_entry("uuid", &b.uuid)?;
                map.serialize_entry("major", &b.major)?;
                map.serialize_entry("minor", &b.minor)?;
            }
            Beacon::AltBeacon(b) => {
                map.serialize_entry("beaconId", &hex(&b.beacon_id))?;
                map.serialize_entry("id1", &b.id1())?;
                map.serialize_entry("id2", &b.id2())?;
                map.serialize_entry("id3", &b.id3())?;
                map.serialize_entry("companyId", &b.company_id)?;
                map.serialize_entry("mfgReserved", &b.mfg_reserved)?;
            }
            Beacon::EddystoneUid(b) => {
                map.serialize_entry("namespace", &hex(&b.namespace))?;
                map.serialize_entry("instance", &hex(&b.instance))?;
            }
            Beacon::EddystoneUrl(b) => map.serialize_entry("url", b.url())?,
            Beacon::EddystoneEid(b) => map.serialize_entry("eid", &hex(&b.eid))?,
        }
        map.serialize_entry("txPower", &self.tx_power())?;
        map.serialize_entry("txPower1m", &self.tx_power_1m())?;
        map.end()
    }
}

/// A cursor over a payload whose reads return `None` past the end, so parsers index nothing.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn i8(&mut self) -> Option<i8> {
        self.array().map(i8::from_be_bytes)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// `Malformed(format, Length)`, for a payload of the wrong size.
fn bad_length(format: Format, actual: usize, expected: &'static str) -> Decoded {
    Decoded::Malformed(Malformed {
        format,
        reason: Reason::Length { actual, expected },
    })
}

/// Runs a field reader on a payload whose length was checked; a short read (which the check
/// rules out) still gives `Malformed`, never a panic.
fn frame(
    format: Format,
    len: usize,
    expected: &'static str,
    read: impl FnOnce() -> Option<Frame>,
) -> Decoded {
    read().map_or_else(|| bad_length(format, len, expected), Decoded::Frame)
}

#[cfg(test)]
mod tests;
