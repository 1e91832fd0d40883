//! Hex strings, the spec's only representation of bytes in JSON, paths and queries
//! (`gateway-api.md` §0): output is two lowercase digits per byte with no separators; input is
//! case-insensitive, and an odd length or a non-hex character is an error (a `400` upstream).

use std::fmt::Write as _;

/// Why a hex string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The string has an odd number of characters.
    #[error("odd number of hex digits ({0})")]
    OddLength(usize),
    /// A character at this byte offset is not a hex digit.
    #[error("not a hex digit at offset {0}")]
    BadDigit(usize),
}

/// Lowercase hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Decodes hex in either case. No `0x`, no separators.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(HexError::OddLength(digits.len()));
    }
    digits
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| match pair {
            [hi, lo] => {
                let hi = nibble(*hi).ok_or(HexError::BadDigit(2 * i))?;
                let lo = nibble(*lo).ok_or(HexError::BadDigit(2 * i + 1))?;
                Ok(hi << 4 | lo)
            }
            _ => Err(HexError::OddLength(digits.len())),
        })
        .collect()
}

fn nibble(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_lowercase_without_separators() {
        assert_eq!(encode(&[0x00, 0x4c, 0xff]), "004cff");
        assert_eq!(encode(&[]), "");
    }

    #[test]
    fn decodes_either_case_and_refuses_bad_input() {
        assert_eq!(decode("004CfF"), Ok(vec![0x00, 0x4c, 0xff]));
        assert_eq!(decode(""), Ok(vec![]));
        assert_eq!(decode("abc"), Err(HexError::OddLength(3)));
        assert_eq!(decode("0g"), Err(HexError::BadDigit(1)));
        assert_eq!(decode("0x00"), Err(HexError::BadDigit(1)));
        assert_eq!(decode("é"), Err(HexError::BadDigit(0)));
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode(&bytes)), Ok(bytes.clone()));
            prop_assert_eq!(decode(&encode(&bytes).to_uppercase()), Ok(bytes));
        }

        #[test]
        fn never_panics(text in ".{0,40}") {
            let _ = decode(&text);
        }
    }
}
