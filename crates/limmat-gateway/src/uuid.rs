//! Bluetooth UUIDs. Service data arrives keyed by a 16-bit UUID (raw AD type `0x16`), a 32-bit
//! one (`0x20`), a 128-bit one (`0x21`) or, from BlueZ, a 128-bit string (`gateway-api.md`
//! §4.1), so the beacon parsers compare one 128-bit form. Short forms are expanded with the
//! Bluetooth Base UUID. Output is always the lowercase hyphenated form (§2.1); input accepts the
//! forms of §2.1 in any case: `180f`, `0x180F`, 8 digits, or the canonical 36 characters. The
//! iBeacon proximity UUID and AltBeacon's id1 are shown in the same form (§3.2).

use std::fmt;
use std::str::FromStr;

/// A 128-bit UUID, most significant byte first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub [u8; 16]);

/// The last 12 bytes of the Bluetooth Base UUID, `00000000-0000-1000-8000-00805f9b34fb`.
const BASE_TAIL: [u8; 12] = [
    0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0x80, 0x5f, 0x9b, 0x34, 0xfb,
];

/// Why a UUID string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a 16-bit, 32-bit or canonical 128-bit UUID")]
pub struct UuidError;

impl Uuid {
    /// Eddystone's service UUID, `0000feaa-0000-1000-8000-00805f9b34fb` (§4.4).
    pub const EDDYSTONE: Uuid = Uuid::from_u16(0xfeaa);

    /// A 16-bit UUID on the Base UUID.
    pub const fn from_u16(short: u16) -> Uuid {
        Uuid::from_u32(short as u32)
    }

    /// A 32-bit UUID on the Base UUID.
    pub const fn from_u32(short: u32) -> Uuid {
        let [a, b, c, d] = short.to_be_bytes();
        let [e, f, g, h, i, j, k, l, m, n, o, p] = BASE_TAIL;
        Uuid([a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p])
    }

    /// The 16-bit form, if this UUID has one.
    pub fn as_u16(&self) -> Option<u16> {
        match self.0 {
            [0, 0, hi, lo, tail @ ..] if tail == BASE_TAIL => Some(u16::from_be_bytes([hi, lo])),
            _ => None,
        }
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Uuid {
    type Err = UuidError;

    fn from_str(text: &str) -> Result<Uuid, UuidError> {
        let short = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        let all_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        match short.len() {
            4 | 8 if all_hex(short) => u32::from_str_radix(short, 16)
                .map(Uuid::from_u32)
                .map_err(|_| UuidError),
            36 if short.len() == text.len() => {
                let mut bytes = [0u8; 16];
                let mut digits = Vec::with_capacity(32);
                for (i, c) in text.bytes().enumerate() {
                    match (i, c) {
                        (8 | 13 | 18 | 23, b'-') => {}
                        (8 | 13 | 18 | 23, _) => return Err(UuidError),
                        (_, c) if c.is_ascii_hexdigit() => digits.push(c),
                        _ => return Err(UuidError),
                    }
                }
                let decoded = std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|s| crate::hex::decode(s).ok())
                    .ok_or(UuidError)?;
                bytes.copy_from_slice(decoded.get(..16).ok_or(UuidError)?);
                Ok(Uuid(bytes))
            }
            _ => Err(UuidError),
        }
    }
}

impl serde::Serialize for Uuid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Uuid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_forms_expand_on_the_base_uuid() {
        assert_eq!(
            Uuid::EDDYSTONE.to_string(),
            "0000feaa-0000-1000-8000-00805f9b34fb"
        );
        assert_eq!(Uuid::EDDYSTONE.as_u16(), Some(0xfeaa));
        assert_eq!("180f".parse(), Ok(Uuid::from_u16(0x180f)));
        assert_eq!("0x180F".parse(), Ok(Uuid::from_u16(0x180f)));
        assert_eq!("0000180F".parse(), Ok(Uuid::from_u16(0x180f)));
        assert_eq!(
            "0000FEAA-0000-1000-8000-00805F9B34FB".parse(),
            Ok(Uuid::EDDYSTONE)
        );
        assert_eq!(Uuid::from_u32(0x1234_5678).as_u16(), None);
    }

    #[test]
    fn refuses_other_forms() {
        for bad in [
            "",
            "18f",
            "0x",
            "+18f",
            "180g",
            "0000feaa00001000800000805f9b34fb",
            "0000feaa-0000-1000-8000_00805f9b34fb",
            "0000feaa-0000-1000-8000-00805f9b34fg",
            "0x00feaa-0000-1000-8000-00805f9b34fb",
            "0000feaa-0000-1000-8000-00805f9b34fbb",
        ] {
            assert_eq!(bad.parse::<Uuid>(), Err(UuidError), "{bad:?}");
        }
    }

    #[test]
    fn serialises_as_the_canonical_string() {
        let json = serde_json::to_string(&Uuid::from_u16(0x180f)).unwrap();
        assert_eq!(json, "\"0000180f-0000-1000-8000-00805f9b34fb\"");
        assert_eq!(
            serde_json::from_str::<Uuid>(&json).unwrap(),
            Uuid::from_u16(0x180f)
        );
    }

    proptest! {
        #[test]
        fn display_parses_back(bytes in any::<[u8; 16]>()) {
            let uuid = Uuid(bytes);
            prop_assert_eq!(uuid.to_string().parse(), Ok(uuid));
            prop_assert_eq!(uuid.to_string().to_uppercase().parse(), Ok(uuid));
        }

        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            let _ = text.parse::<Uuid>();
        }
    }
}
