//! Google Eddystone (`gateway-api.md` §4.4): service data for `0xFEAA`. The first byte is the
//! frame type; its high nibble selects UID (`0x00`), URL (`0x10`), TLM (`0x20`) or EID
//! (`0x30`), and a non-zero low nibble or another high nibble is not a beacon. Multi-byte fields
//! are big-endian, and TX power is calibrated at 0 m. TX power values are reported whatever they
//! are, and the UID's RFU bytes are not checked: the spec gives no rule for either.
//!
//! TLM carries no identity: it is [`Telemetry`], which the gateway attaches to the address it
//! came from (§3.2). Encrypted TLM (version 1) is passed on as its three opaque fields
//! (§3.4); decrypting it needs the beacon's identity key and is out of scope.

use super::{Beacon, Decoded, Format, Frame, Malformed, Reader, Reason, bad_length, frame, url};
use crate::hex::encode as hex;
use serde::ser::{SerializeMap, Serializer};

const UID: u8 = 0x00;
const URL: u8 = 0x10;
const TLM: u8 = 0x20;
const EID: u8 = 0x30;
const TLM_PLAIN: u8 = 0x00;
const TLM_ENCRYPTED: u8 = 0x01;
/// TEMP's "not supported" value.
const NO_TEMPERATURE: i16 = i16::MIN;

/// An Eddystone-UID beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EddystoneUid {
    /// dBm at 0 m.
    pub tx_power: i8,
    /// The 10-byte namespace, opaque (by convention a hashed domain or an elided UUID).
    pub namespace: [u8; 10],
    /// The 6-byte instance within the namespace.
    pub instance: [u8; 6],
}

/// An Eddystone-URL beacon, with its URL expanded. The URL is private so that every value
/// can be broadcast: it comes from a decoded frame or from [`EddystoneUrl::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EddystoneUrl {
    /// dBm at 0 m.
    pub tx_power: i8,
    url: String,
}

/// An Eddystone-EID beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EddystoneEid {
    /// dBm at 0 m.
    pub tx_power: i8,
    /// The current ephemeral id.
    pub eid: [u8; 8],
}

/// Eddystone-TLM, plain or encrypted. Serialises as the `telemetry` member of §3.4.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Telemetry {
    /// Version 0: battery, temperature and counters in the clear.
    Plain(PlainTlm),
    /// Version 1: the ETLM block, passed on opaque.
    Encrypted(EncryptedTlm),
}

/// Plain TLM (version 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlainTlm {
    /// VBATT in mV; `None` for 0 ("not supported").
    pub battery_mv: Option<u16>,
    /// TEMP in °C (8.8 fixed point, so exact in `f64`); `None` for `0x8000`.
    pub temperature_c: Option<f64>,
    /// ADV_CNT: advertising PDUs since power-up or reboot.
    pub adv_count: u32,
    /// SEC_CNT: time since power-up or reboot, in units of 0.1 s.
    pub uptime_ds: u32,
}

/// Encrypted TLM (version 1), opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptedTlm {
    /// The 12 encrypted bytes of the plain TLM's fields (`etlm`).
    pub etlm: [u8; 12],
    /// The 2-byte salt of the encryption (`salt`).
    pub salt: [u8; 2],
    /// The 2-byte message integrity check (`mic`).
    pub mic: [u8; 2],
}

/// Decodes `0xFEAA` service data.
pub fn decode(payload: &[u8]) -> Decoded {
    let Some((&frame_type, rest)) = payload.split_first() else {
        return Decoded::NotABeacon;
    };
    let mut r = Reader(rest);
    match frame_type {
        UID => match payload.len() {
            18 | 20 => frame(Format::EddystoneUid, payload.len(), "18 or 20", || {
                Some(Frame::Beacon(Beacon::EddystoneUid(EddystoneUid {
                    tx_power: r.i8()?,
                    namespace: r.array()?,
                    instance: r.array()?,
                })))
            }),
            n => bad_length(Format::EddystoneUid, n, "18 or 20"),
        },
        URL => match payload.len() {
            3..=20 => {
                let (Some(tx_power), Some(scheme)) = (r.i8(), r.u8()) else {
                    return bad_length(Format::EddystoneUrl, payload.len(), "3 to 20");
                };
                match url::expand(scheme, r.rest()) {
                    Ok(url) => Decoded::Frame(Frame::Beacon(Beacon::EddystoneUrl(EddystoneUrl {
                        tx_power,
                        url,
                    }))),
                    Err(reason) => Decoded::Malformed(Malformed {
                        format: Format::EddystoneUrl,
                        reason,
                    }),
                }
            }
            n => bad_length(Format::EddystoneUrl, n, "3 to 20"),
        },
        TLM => match (r.u8(), payload.len()) {
            (Some(TLM_PLAIN), 14) => frame(Format::EddystoneTlm, 14, "14", || {
                let battery = r.u16()?;
                let temperature = r.array().map(i16::from_be_bytes)?;
                Some(Frame::Telemetry(Telemetry::Plain(PlainTlm {
                    battery_mv: (battery != 0).then_some(battery),
                    temperature_c: (temperature != NO_TEMPERATURE)
                        .then(|| f64::from(temperature) / 256.0),
                    adv_count: r.u32()?,
                    uptime_ds: r.u32()?,
                })))
            }),
            (Some(TLM_PLAIN), n) => bad_length(Format::EddystoneTlm, n, "14"),
            (Some(TLM_ENCRYPTED), 18) => frame(Format::EddystoneTlm, 18, "18", || {
                Some(Frame::Telemetry(Telemetry::Encrypted(EncryptedTlm {
                    etlm: r.array()?,
                    salt: r.array()?,
                    mic: r.array()?,
                })))
            }),
            (Some(TLM_ENCRYPTED), n) => bad_length(Format::EddystoneTlm, n, "18"),
            (Some(version), _) => Decoded::Malformed(Malformed {
                format: Format::EddystoneTlm,
                reason: Reason::TlmVersion(version),
            }),
            (None, n) => bad_length(Format::EddystoneTlm, n, "14 or 18"),
        },
        EID => match payload.len() {
            10 => frame(Format::EddystoneEid, 10, "10", || {
                Some(Frame::Beacon(Beacon::EddystoneEid(EddystoneEid {
                    tx_power: r.i8()?,
                    eid: r.array()?,
                })))
            }),
            n => bad_length(Format::EddystoneEid, n, "10"),
        },
        _ => Decoded::NotABeacon,
    }
}

impl EddystoneUid {
    /// The 20-byte frame, RFU bytes included.
    pub fn encode(&self) -> Vec<u8> {
        [
            &[UID][..],
            &self.tx_power.to_be_bytes(),
            &self.namespace,
            &self.instance,
            &[0, 0],
        ]
        .concat()
    }
}

impl EddystoneUrl {
    /// A URL beacon, if the URL can be broadcast (§4.4).
    pub fn new(tx_power: i8, url: &str) -> Result<EddystoneUrl, url::UrlEncodeError> {
        url::compress(url)?;
        Ok(EddystoneUrl {
            tx_power,
            url: url.to_owned(),
        })
    }

    /// The expanded URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The frame, with the URL compressed as short as it goes. (Every value compresses: the
    /// decoder and [`EddystoneUrl::new`] admit no other; the fallback is never taken.)
    pub fn encode(&self) -> Vec<u8> {
        let (scheme, encoded) = url::compress(&self.url).unwrap_or_default();
        [
            &[URL][..],
            &self.tx_power.to_be_bytes(),
            &[scheme],
            &encoded,
        ]
        .concat()
    }
}

impl EddystoneEid {
    /// The 10-byte frame.
    pub fn encode(&self) -> Vec<u8> {
        [&[EID][..], &self.tx_power.to_be_bytes(), &self.eid].concat()
    }
}

impl PlainTlm {
    /// The uptime in seconds (`uptimeS`).
    pub fn uptime_s(&self) -> f64 {
        f64::from(self.uptime_ds) / 10.0
    }
}

impl Telemetry {
    /// The 14-byte (plain) or 18-byte (encrypted) frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Telemetry::Plain(t) => {
                // Decoded temperatures are multiples of 1/256 within i16, so this is exact;
                // other values round, and out-of-range ones saturate.
                let temperature = t
                    .temperature_c
                    .map_or(NO_TEMPERATURE, |c| (c * 256.0).round() as i16);
                [
                    &[TLM, TLM_PLAIN][..],
                    &t.battery_mv.unwrap_or(0).to_be_bytes(),
                    &temperature.to_be_bytes(),
                    &t.adv_count.to_be_bytes(),
                    &t.uptime_ds.to_be_bytes(),
                ]
                .concat()
            }
            Telemetry::Encrypted(t) => {
                [&[TLM, TLM_ENCRYPTED][..], &t.etlm, &t.salt, &t.mic].concat()
            }
        }
    }
}

impl serde::Serialize for Telemetry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Telemetry::Plain(t) => {
                map.serialize_entry("version", &TLM_PLAIN)?;
                map.serialize_entry("batteryMv", &t.battery_mv)?;
                map.serialize_entry("temperatureC", &t.temperature_c)?;
                map.serialize_entry("advCount", &t.adv_count)?;
                map.serialize_entry("uptimeS", &t.uptime_s())?;
            }
            Telemetry::Encrypted(t) => {
                map.serialize_entry("version", &TLM_ENCRYPTED)?;
                map.serialize_entry("etlm", &hex(&t.etlm))?;
                map.serialize_entry("salt", &hex(&t.salt))?;
                map.serialize_entry("mic", &hex(&t.mic))?;
            }
        }
        map.end()
    }
}
