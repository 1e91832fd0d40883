//! Domain keys (spec 1, H6): the bytes a domain may have, their folding, and which keys a
//! device may register. Ground floor: the request scanner folds the path's domain run, the
//! reply reader the `Location`'s, and the router ([`crate::route`]) routes by the key.

/// The reserved domain, never registrable (checklist 13, 28).
pub const RELAY_DOMAIN: &str = "relay_domain";

/// The longest domain key a device may register.
pub const MAX_DOMAIN_LEN: usize = 255;

/// The byte set of H6, before folding.
pub fn is_domain_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\''
        | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

/// The longest run of domain bytes at the start of `bytes`, with `A-Z` folded to `a-z` (H6).
pub(crate) fn fold_domain_run(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take_while(|&&b| is_domain_byte(b))
        .map(|&b| char::from(b.to_ascii_lowercase()))
        .collect()
}

/// A domain key is registrable if it has 1 to 255 bytes and is not `relay_domain`.
pub fn is_registrable(domain: &str) -> bool {
    !domain.is_empty() && domain.len() <= MAX_DOMAIN_LEN && domain != RELAY_DOMAIN
}

/// Why a domain given by a user is unusable (2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// The empty domain.
    Empty,
    /// Longer than the limit; the length.
    TooLong(usize),
    /// The reserved name (`relay_domain`).
    Reserved,
    /// A byte outside the domain set (H6).
    Byte(char),
}

impl core::fmt::Display for DomainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DomainError::Empty => write!(f, "the domain is empty"),
            DomainError::TooLong(n) => {
                write!(f, "the domain has {n} bytes, more than {MAX_DOMAIN_LEN}")
            }
            DomainError::Reserved => write!(f, "`{RELAY_DOMAIN}` is reserved"),
            DomainError::Byte(c) => write!(
                f,
                "the domain contains {c:?}; allowed are a-z A-Z 0-9 and - . _ ~ % ! $ & ' ( ) * + , ; ="
            ),
        }
    }
}

impl std::error::Error for DomainError {}

/// Validates a domain given on a command line or in a configuration and returns its key.
pub fn parse_domain(domain: &str) -> Result<String, DomainError> {
    if let Some(c) = domain
        .chars()
        .find(|&c| !c.is_ascii() || !is_domain_byte(c as u8))
    {
        return Err(DomainError::Byte(c));
    }
    let key = domain.to_ascii_lowercase();
    if key.is_empty() {
        Err(DomainError::Empty)
    } else if key.len() > MAX_DOMAIN_LEN {
        Err(DomainError::TooLong(key.len()))
    } else if key == RELAY_DOMAIN {
        Err(DomainError::Reserved)
    } else {
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_domains() {
        assert_eq!(parse_domain("GsIoT-X"), Ok("gsiot-x".into()));
        assert_eq!(parse_domain(""), Err(DomainError::Empty));
        assert_eq!(parse_domain("Relay_Domain"), Err(DomainError::Reserved));
        assert_eq!(parse_domain("a/b"), Err(DomainError::Byte('/')));
        assert_eq!(parse_domain("ä"), Err(DomainError::Byte('ä')));
        assert_eq!(
            parse_domain(&"a".repeat(256)),
            Err(DomainError::TooLong(256))
        );
    }
}
