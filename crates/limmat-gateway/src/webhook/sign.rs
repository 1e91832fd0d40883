//! Standard Webhooks signatures, symmetric scheme (`gateway-api.md` §5.2).
//!
//! The secret is shown as `whsec_` + standard base64 of 24–64 bytes; the HMAC key is the decoded
//! bytes. A delivery is signed over `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256,
//! and `webhook-signature` carries `v1,<base64>` once per key, newest key first, separated by one
//! space (secret rotation). Receivers (the test and demo receiver among them) verify in constant
//! time and refuse timestamps more than five minutes from their own clock.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The prefix of a secret's textual form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Decoded secrets are 24 to 64 bytes.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 24..=64;
/// Generated secrets are 32 bytes.
pub const GENERATED_LEN: usize = 32;
/// How far a `webhook-timestamp` may be from the receiver's clock, in seconds.
pub const TOLERANCE_S: i64 = 5 * 60;

/// Why a `whsec_` secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a secret starts with whsec_")]
    Prefix,
    /// What follows `whsec_` is not standard base64.
    #[error("a secret is whsec_ followed by standard base64")]
    Base64,
    /// The decoded key is shorter than 24 or longer than 64 bytes.
    #[error("a secret decodes to 24 to 64 bytes, not {0}")]
    Length(usize),
}

/// Parses `whsec_<base64>` into the HMAC key bytes.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, SecretError> {
    let b64 = text
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::Prefix)?;
    let key = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
    if !SECRET_LEN.contains(&key.len()) {
        return Err(SecretError::Length(key.len()));
    }
    Ok(key)
}

/// The textual form `whsec_<base64>` of a key.
pub fn format_secret(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// 32 fresh key bytes from the operating system's CSPRNG.
pub fn generate_secret() -> Result<Vec<u8>, getrandom::Error> {
    let mut key = vec![0u8; GENERATED_LEN];
    getrandom::fill(&mut key)?;
    Ok(key)
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// One signature: `v1,` + base64(HMAC-SHA256(key, `<id>.<timestamp>.<body>`)).
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(mac(key, msg_id, timestamp, body)))
}

/// The `webhook-signature` value for several keys, newest first, separated by one space.
pub fn signature_header<K: AsRef<[u8]>>(
    keys: &[K],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.iter()
        .map(|k| sign(k.as_ref(), msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a receiver refused a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-timestamp` is not a decimal integer.
    #[error("webhook-timestamp is not an integer")]
    BadTimestamp,
    /// `webhook-timestamp` is too far from the receiver's clock.
    #[error("webhook-timestamp is more than 5 minutes from the receiver's clock")]
    Stale,
    /// No `v1,` signature matches any of the keys.
    #[error("no v1 signature matches")]
    NoMatch,
}

/// Verifies a delivery: the timestamp within ±5 minutes of `now` (Unix seconds), and at least
/// one `v1,` entry of `signature` matching one of `keys`, compared in constant time.
pub fn verify<K: AsRef<[u8]>>(
    keys: &[K],
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if now.abs_diff(ts) > TOLERANCE_S.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    let presented: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    let mut ok = subtle::Choice::from(0);
    for key in keys {
        let expected = mac(key.as_ref(), msg_id, ts, body);
        for candidate in &presented {
            // `ct_eq` on slices of different lengths is false, without an early exit on content.
            ok |= expected.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMMAT_BODY: &str = r#"{"id":"evt_01JGGZ8Q4V8X2M7N3P5R6T9W0Y","type":"webhook.ping","timestamp":"2025-01-01T12:00:00.000Z","gateway":"limmat-demo","data":{}}"#;

    #[test]
    fn limmat_vector() {
        let key = parse_secret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(key, (0u8..32).collect::<Vec<_>>());
        assert_eq!(LIMMAT_BODY.len(), 134);
        let id = "msg_01JGGZ8Q4V8X2M7N3P5R6T9W0Y";
        let sig = sign(&key, id, 1735732800, LIMMAT_BODY.as_bytes());
        assert_eq!(sig, "v1,rBiRQB7otUoXl+uZbWTgnBvDlA0gM9Dmo9ZnvAl0foo=");
        let keys = [key];
        verify(
            &keys,
            id,
            "1735732800",
            LIMMAT_BODY.as_bytes(),
            &sig,
            1735732800,
        )
        .unwrap();
    }

    #[test]
    fn standard_webhooks_reference_vector() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(key.len(), 24);
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, id, 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        verify(&[key], id, "1614265330", body, &sig, 1614265330 + 299).unwrap();
    }

    #[test]
    fn secret_rules() {
        assert_eq!(parse_secret("AAEC"), Err(SecretError::Prefix));
        assert_eq!(parse_secret("whsec_!!!!"), Err(SecretError::Base64));
        assert_eq!(
            parse_secret(&format_secret(&[7u8; 23])),
            Err(SecretError::Length(23))
        );
        assert_eq!(
            parse_secret(&format_secret(&[7u8; 65])),
            Err(SecretError::Length(65))
        );
        for len in [24, 32, 64] {
            let key = vec![9u8; len];
            assert_eq!(parse_secret(&format_secret(&key)).unwrap(), key);
        }
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(parse_secret(&format_secret(&a)).unwrap(), a);
    }

    #[test]
    fn rotation_and_rejections() {
        let old = vec![1u8; 32];
        let new = vec![2u8; 32];
        let header = signature_header(&[&new, &old], "msg_1", 1000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&new, "msg_1", 1000, b"{}"));
        // A receiver that only knows either key accepts.
        verify(&[&old], "msg_1", "1000", b"{}", &header, 1000).unwrap();
        verify(&[&new], "msg_1", "1000", b"{}", &header, 1000).unwrap();
        // Tampering, wrong key, wrong id, stale or future timestamps, junk headers.
        let other = vec![3u8; 32];
        assert_eq!(
            verify(&[&other], "msg_1", "1000", b"{}", &header, 1000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&[&new], "msg_1", "1000", b"{ }", &header, 1000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&[&new], "msg_2", "1000", b"{}", &header, 1000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&[&new], "msg_1", "1000", b"{}", &header, 1301),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&[&new], "msg_1", "1000", b"{}", &header, 699),
            Err(VerifyError::Stale)
        );
        verify(&[&new], "msg_1", "1000", b"{}", &header, 1300).unwrap();
        assert_eq!(
            verify(&[&new], "msg_1", "1e3", b"{}", &header, 1000),
            Err(VerifyError::BadTimestamp)
        );
        for junk in ["", "v1,", "v2,abc", "v1,!!", "v1,AAAA"] {
            assert_eq!(
                verify(&[&new], "msg_1", "1000", b"{}", junk, 1000),
                Err(VerifyError::NoMatch)
            );
        }
    }
}
