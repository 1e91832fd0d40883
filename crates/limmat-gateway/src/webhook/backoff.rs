//! Retry timing (`gateway-api.md` §5.5), as pure functions so the scheduler can be tested with
//! its own clock and random source.
//!
//! After the k-th consecutive failure the next attempt waits `min(base × factor^(k−1), max)`
//! times a jitter factor uniform in [0.75, 1.25]. A `Retry-After` on the failure response
//! (delta-seconds or an HTTP date, capped at 8 h) raises that to `max(backoff, Retry-After)`.

use std::time::{Duration, SystemTime};

/// `Retry-After` never delays an attempt by more than 8 hours.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(8 * 3600);

/// The nominal (jitter-free) delay after the k-th consecutive failure (`k` ≥ 1; 0 counts as
/// 1), in seconds: `min(base × factor^(k−1), max)`.
pub fn nominal_s(k: u32, base_s: f64, factor: f64, max_s: f64) -> f64 {
    let exp = i32::try_from(k.saturating_sub(1)).unwrap_or(i32::MAX);
    let raw = base_s * factor.powi(exp);
    // An overflow to infinity (or a NaN from odd settings) ends up at the cap.
    if raw.is_nan() { max_s } else { raw.min(max_s) }
}

/// The delay after the k-th consecutive failure: the nominal delay times `0.75 + 0.5 × u`,
/// where `jitter_unit` (`u`) is uniform in [0, 1) (values outside are clamped).
pub fn delay(k: u32, base_s: f64, factor: f64, max_s: f64, jitter_unit: f64) -> Duration {
    let u = if jitter_unit.is_nan() {
        0.5
    } else {
        jitter_unit.clamp(0.0, 1.0)
    };
    let secs = nominal_s(k, base_s, factor, max_s) * (0.75 + 0.5 * u);
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// A `Retry-After` value, as delta-seconds or an HTTP date (relative to `now`), capped at 8 h.
/// A date in the past means no extra wait (zero); an unparsable value is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // 1*DIGIT; a number too large for u64 is simply "very long".
        value
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(RETRY_AFTER_CAP)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// The wait before the next attempt: `max(backoff, Retry-After)`.
pub fn next_delay(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    retry_after.map_or(backoff, |ra| backoff.max(ra.min(RETRY_AFTER_CAP)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hms(s: u64) -> String {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    #[test]
    fn nominal_schedule_of_5_5() {
        // Jitter factor 1.0 is u = 0.5.
        let mut at = Duration::ZERO;
        let mut times = vec![hms(0)];
        for k in 1..16 {
            at += delay(k, 5.0, 4.0, 8.0 * 3600.0, 0.5);
            times.push(hms(at.as_secs()));
        }
        assert_eq!(
            &times[..9],
            [
                "0:00:00", "0:00:05", "0:00:25", "0:01:45", "0:07:05", "0:28:25", "1:53:45",
                "7:35:05", "15:35:05"
            ]
        );
        assert_eq!(times[15], "71:35:05", "attempt 16");
        assert_eq!(at, Duration::from_secs(71 * 3600 + 35 * 60 + 5));
    }

    #[test]
    fn jitter_bounds_and_odd_inputs() {
        assert_eq!(delay(1, 5.0, 4.0, 60.0, 0.0), Duration::from_secs_f64(3.75));
        let top = delay(1, 5.0, 4.0, 60.0, 0.999_999);
        assert!(top < Duration::from_secs_f64(6.25) && top > Duration::from_secs_f64(6.24));
        assert_eq!(delay(1, 5.0, 4.0, 60.0, 7.0), Duration::from_secs_f64(6.25));
        assert_eq!(delay(1, 5.0, 4.0, 60.0, f64::NAN), Duration::from_secs(5));
        // k = 0 counts as the first failure; huge k stays at the cap.
        assert_eq!(delay(0, 5.0, 4.0, 60.0, 0.5), Duration::from_secs(5));
        assert_eq!(
            delay(u32::MAX, 5.0, 4.0, 60.0, 0.5),
            Duration::from_secs(60)
        );
        // Fractional (test-sized) settings.
        assert_eq!(delay(3, 0.01, 2.0, 1.0, 0.5), Duration::from_secs_f64(0.04));
    }

    #[test]
    fn retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_732_800); // 2025-01-01 12:00
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("99999999", now), Some(RETRY_AFTER_CAP));
        assert_eq!(
            parse_retry_after("999999999999999999999999", now),
            Some(RETRY_AFTER_CAP)
        );
        assert_eq!(
            parse_retry_after("Wed, 01 Jan 2025 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2027 00:00:00 GMT", now),
            Some(RETRY_AFTER_CAP)
        );
        for bad in ["", "-1", "1.5", "soon", "2 s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        let b = Duration::from_secs(5);
        assert_eq!(next_delay(b, None), b);
        assert_eq!(next_delay(b, Some(Duration::from_secs(2))), b);
        assert_eq!(
            next_delay(b, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(next_delay(b, Some(Duration::MAX)), RETRY_AFTER_CAP);
    }
}
