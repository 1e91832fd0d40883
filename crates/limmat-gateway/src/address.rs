//! Device addresses (`gateway-api.md` §2.1, §3.2). A beacon's identity never depends on its
//! address, but telemetry is attached by address, and every beacon object shows the address it
//! was last heard from: `C0:FF:EE:00:00:10` in JSON, `c0ffee000010` as a node handle. Input
//! accepts either form, in any case.

use std::fmt;
use std::str::FromStr;

/// A 48-bit device address, most significant byte first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 6]);

/// Public or random (`bdaddrType`, `addressType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressType {
    /// An IEEE-assigned public address.
    Public,
    /// A random address (static or private).
    Random,
}

/// Why an address string was refused (a `400` with `field: node` upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a device address (12 hex digits, or six pairs separated by colons)")]
pub struct AddressError;

impl Address {
    /// The node handle: 12 lowercase hex digits.
    pub fn handle(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Address, AddressError> {
        let digits: String = match text.len() {
            12 => text.to_owned(),
            17 => {
                let colons = text.char_indices().all(|(i, c)| (i % 3 == 2) == (c == ':'));
                if !colons {
                    return Err(AddressError);
                }
                text.split(':').collect()
            }
            _ => return Err(AddressError),
        };
        let bytes = crate::hex::decode(&digits).map_err(|_| AddressError)?;
        <[u8; 6]>::try_from(bytes)
            .map(Address)
            .map_err(|_| AddressError)
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_forms() {
        let address = Address([0xc0, 0xff, 0xee, 0x00, 0x00, 0x10]);
        assert_eq!(address.to_string(), "C0:FF:EE:00:00:10");
        assert_eq!(address.handle(), "c0ffee000010");
        assert_eq!("c0ffee000010".parse(), Ok(address));
        assert_eq!("C0FFEE000010".parse(), Ok(address));
        assert_eq!("c0:ff:ee:00:00:10".parse(), Ok(address));
        assert_eq!(
            serde_json::to_string(&address).unwrap(),
            "\"C0:FF:EE:00:00:10\""
        );
        assert_eq!(
            serde_json::to_string(&AddressType::Random).unwrap(),
            "\"random\""
        );
    }

    #[test]
    fn refuses_malformed_nodes() {
        for bad in [
            "",
            "zz",
            "c0ffee00001",
            "c0ffee0000100",
            "c0:ff:ee:00:00:1g",
            "c0-ff-ee-00-00-10",
            "c0:ff:ee:00:0010:",
            "c0ffee:00:00:10:",
            "+0ffee000010",
            "c0:ff:ee:00:00:é",
        ] {
            assert_eq!(bad.parse::<Address>(), Err(AddressError), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn forms_parse_back(bytes in any::<[u8; 6]>()) {
            let address = Address(bytes);
            prop_assert_eq!(address.to_string().parse(), Ok(address));
            prop_assert_eq!(address.handle().parse(), Ok(address));
        }

        #[test]
        fn parsing_never_panics(text in ".{0,20}") {
            let _ = text.parse::<Address>();
        }
    }
}
