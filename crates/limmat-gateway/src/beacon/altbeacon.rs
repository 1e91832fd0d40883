//! AltBeacon v1.0 (`gateway-api.md` §4.3): any company id, a 24-byte payload starting `BE AC`,
//! on any PDU type. `BE AC` with another length is malformed. The reference RSSI is reported
//! whatever its value (the AltBeacon spec's range is 0 to −127), and the reserved byte is
//! reported as `mfgReserved` but is not part of the identity.

use super::{Beacon, Decoded, Format, Frame, Reader, bad_length, frame};
use crate::uuid::Uuid;

/// The beacon code.
const CODE: [u8; 2] = [0xbe, 0xac];
const LEN: usize = 24;

/// An AltBeacon as broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AltBeacon {
    /// The company id the manufacturer data came under.
    pub company_id: u16,
    /// The 20-byte beacon id, big-endian; the identity.
    pub beacon_id: [u8; 20],
    /// The reference RSSI: dBm at 1 m.
    pub tx_power: i8,
    /// The byte reserved for the manufacturer.
    pub mfg_reserved: u8,
}

/// Decodes manufacturer data; anything not starting `BE AC` is `NotABeacon`.
pub fn decode(company_id: u16, payload: &[u8]) -> Decoded {
    if !payload.starts_with(&CODE) {
        return Decoded::NotABeacon;
    }
    if payload.len() != LEN {
        return bad_length(Format::AltBeacon, payload.len(), "24");
    }
    let mut r = Reader(payload.get(CODE.len()..).unwrap_or_default());
    frame(Format::AltBeacon, LEN, "24", || {
        Some(Frame::Beacon(Beacon::AltBeacon(AltBeacon {
            company_id,
            beacon_id: r.array()?,
            tx_power: r.i8()?,
            mfg_reserved: r.u8()?,
        })))
    })
}

impl AltBeacon {
    /// By convention, id1: the first 16 bytes of the beacon id, as a UUID.
    pub fn id1(&self) -> Uuid {
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, ..] = self.beacon_id;
        Uuid([a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p])
    }

    /// By convention, id2: bytes 16–17 of the beacon id.
    pub fn id2(&self) -> u16 {
        let [.., hi, lo, _, _] = self.beacon_id;
        u16::from_be_bytes([hi, lo])
    }

    /// By convention, id3: bytes 18–19 of the beacon id.
    pub fn id3(&self) -> u16 {
        let [.., hi, lo] = self.beacon_id;
        u16::from_be_bytes([hi, lo])
    }

    /// The 24-byte payload, without the company id.
    pub fn encode(&self) -> Vec<u8> {
        [
            &CODE[..],
            &self.beacon_id,
            &self.tx_power.to_be_bytes(),
            &[self.mfg_reserved],
        ]
        .concat()
    }
}
