//! Apple iBeacon (`gateway-api.md` §4.2): company `0x004C`, a 23-byte payload starting
//! `02 15`. Other Apple payloads (other type bytes, such as `0x12` or `0x10`) are not beacons;
//! `02 15` with another length is malformed.

use super::{Beacon, Decoded, Format, Frame, Reader, bad_length, frame};
use crate::uuid::Uuid;

/// Apple's company id.
pub const APPLE: u16 = 0x004c;
/// Type `0x02` and remaining length `0x15`.
const PREFIX: [u8; 2] = [0x02, 0x15];
const LEN: usize = 23;

/// An iBeacon as broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IBeacon {
    /// The proximity UUID.
    pub uuid: Uuid,
    /// The major number, 0–65535 (big-endian on air).
    pub major: u16,
    /// The minor number, 0–65535 (big-endian on air).
    pub minor: u16,
    /// The measured power: dBm at 1 m.
    pub tx_power: i8,
}

/// Decodes manufacturer data; anything but Apple's `02 15` is `NotABeacon`.
pub fn decode(company_id: u16, payload: &[u8]) -> Decoded {
    if company_id != APPLE || !payload.starts_with(&PREFIX) {
        return Decoded::NotABeacon;
    }
    if payload.len() != LEN {
        return bad_length(Format::IBeacon, payload.len(), "23");
    }
    let mut r = Reader(payload.get(PREFIX.len()..).unwrap_or_default());
    frame(Format::IBeacon, LEN, "23", || {
        Some(Frame::Beacon(Beacon::IBeacon(IBeacon {
            uuid: Uuid(r.array()?),
            major: r.u16()?,
            minor: r.u16()?,
            tx_power: r.i8()?,
        })))
    })
}

impl IBeacon {
    /// The 23-byte payload, without the company id.
    pub fn encode(&self) -> Vec<u8> {
        [
            &PREFIX[..],
            &self.uuid.0,
            &self.major.to_be_bytes(),
            &self.minor.to_be_bytes(),
            &self.tx_power.to_be_bytes(),
        ]
        .concat()
    }
}
