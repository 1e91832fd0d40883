//! Parsers for the CLI's durations (`30s`, `10m`, `6h`, `0`) and sizes (`16KiB`, `2048`), with
//! errors that name the expected form.

use std::time::Duration;

/// A duration such as `30s`, `10m`, `6h` or `1m30s`; a bare `0` is zero.
pub fn duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 30s, 10m or 6h ({e})"))
}

/// A size in bytes such as `16KiB`, `2KiB`, `1MiB` or `4096`.
pub fn size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_bytes: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" | "kb" => 1024,
        "mib" | "m" | "mb" => 1024 * 1024,
        _ => return Err(format!("{s:?} is not a size such as 16KiB, 1MiB or 4096")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit_bytes))
        .ok_or_else(|| format!("{s:?} is not a size such as 16KiB, 1MiB or 4096"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert!(duration("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("16KiB"), Ok(16384));
        assert_eq!(size("2KiB"), Ok(2048));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("4096"), Ok(4096));
        assert!(size("lots").is_err());
        assert!(size("KiB").is_err());
        assert!(size("99999999999999999999KiB").is_err());
    }
}
