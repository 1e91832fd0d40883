//! The values of `gateway.toml` at the ground floor: how a duration is written (`"5s"`) and
//! how a value out of range is reported (the key as the file writes it, the value and what
//! was expected). `config`, the listener's `[api.limits]` and the simulator's `[sim]` checks
//! all read and word their values here, so none of them imports another's module for it
//! (`config` reads the other two's sections).

/// A configuration value out of range: the key, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {expected}")]
pub struct ConfigError {
    /// The key as the file writes it: `webhooks.timeout`, `sim.beacon[2].minor`.
    pub key: String,
    /// The value given, as the file would write it.
    pub value: String,
    /// What the key accepts, in words: `1 to 60 seconds`.
    pub expected: String,
}

/// `Ok` if `ok`, else the error naming `key`, `value` and what was `expected`.
pub(crate) fn check(
    ok: bool,
    key: &str,
    value: impl ToString,
    expected: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            key: key.into(),
            value: value.to_string(),
            expected: expected.into(),
        })
    }
}

/// `"5s"`-style durations in `gateway.toml`; `"0"` is zero.
pub(crate) mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"5s\", \"10m\" or \"72h\"")
        })?;
        if text.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration such as \"5s\", \"10m\" or \"72h\" ({e})"
            ))
        })
    }

    #[allow(dead_code)]
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}
