//! Interim backoff for the scheduler (§5.5), until the delivery engineer's `webhook::backoff`
//! is merged: `min(base × factor^(k−1), max)` after the k-th consecutive failure, times a
//! uniform jitter in [0.75, 1.25]. Kept behind [`delay_ms`] so swapping it is one line.

use rand::Rng;

/// The backoff settings (`webhooks.retry_base_s`, `retry_factor`, `retry_max_delay_s`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base_s: f64,
    pub factor: f64,
    pub max_s: f64,
}

impl Backoff {
    /// The nominal delay after the k-th consecutive failure (k ≥ 1), in seconds.
    pub fn nominal_s(&self, k: u32) -> f64 {
        let exponent = i32::try_from(k.saturating_sub(1)).unwrap_or(i32::MAX);
        (self.base_s * self.factor.powi(exponent)).min(self.max_s)
    }
}

/// The jittered delay after the k-th consecutive failure, in milliseconds.
pub fn delay_ms(backoff: &Backoff, k: u32) -> u64 {
    let jitter: f64 = rand::rng().random_range(0.75..=1.25);
    let ms = backoff.nominal_s(k) * jitter * 1000.0;
    if ms.is_finite() {
        ms.clamp(0.0, u64::MAX as f64) as u64
    } else {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_schedule_matches_the_spec() {
        let b = Backoff {
            base_s: 5.0,
            factor: 4.0,
            max_s: 8.0 * 3600.0,
        };
        let delays: Vec<f64> = (1..=8).map(|k| b.nominal_s(k)).collect();
        assert_eq!(
            delays,
            [5.0, 20.0, 80.0, 320.0, 1280.0, 5120.0, 20480.0, 28800.0]
        );
        // Attempt 16 comes at 71:35:05.
        let total: f64 = (1..=15).map(|k| b.nominal_s(k)).sum();
        assert_eq!(total, (71.0 * 3600.0) + 35.0 * 60.0 + 5.0);
        for _ in 0..100 {
            let d = delay_ms(&b, 1);
            assert!((3750..=6250).contains(&d), "{d}");
        }
    }
}
