//! The staged reconnect backoff of spec 2.9, taken exactly from YalerTunnel2. Internal to the
//! agent: its pool is the one user (the gateway's webhook retries have their own schedule).
//!
//! A device that cannot reach its relay must not hammer it, yet must come back quickly after a
//! short outage and still retry, rarely, for months. The schedule spaces out the *starts* of
//! consecutive connection openings while nothing succeeds. This module is pure: the caller
//! passes the current [`Instant`] in and may inject the jitter, so the schedule is tested with a
//! fake clock (checklist 47).

use std::time::Duration;
use tokio::time::Instant;

/// Attempts in the 1 s stage (about 3 minutes).
const STAGE_1S_END: u32 = 180;
/// Attempts up to here are spaced 15 s (about 3 hours).
const STAGE_15S_END: u32 = 900;
/// Attempts up to here are spaced 15 min (about 3 days).
const STAGE_15MIN_END: u32 = 1188;
/// Attempts up to here are spaced 6 h (about 3 months). At this count the cycle starts again.
pub const CYCLE_LEN: u32 = 1548;

/// The nominal delay after the opening with `k` attempts before it, in milliseconds; `0` for
/// the opening that ends the cycle.
pub fn delay_ms(k: u32) -> u64 {
    match k {
        0..STAGE_1S_END => 1_000,
        STAGE_1S_END..STAGE_15S_END => 15_000,
        STAGE_15S_END..STAGE_15MIN_END => 15 * 60_000,
        STAGE_15MIN_END..CYCLE_LEN => 6 * 3_600_000,
        _ => 0,
    }
}

/// The inclusive range that `jitter(d)` is drawn from: `[d − ⌊d/3⌋, d + ⌊d/3⌋]` ms.
pub fn jitter_bounds(d_ms: u64) -> (u64, u64) {
    (d_ms - d_ms / 3, d_ms + d_ms / 3)
}

/// Draws `jitter(d)` uniformly with the thread-local RNG.
pub fn random_jitter(low: u64, high: u64) -> u64 {
    rand::random_range(low..=high)
}

/// One attempt counter `k` and the earliest time of the next opening.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    k: u32,
    next: Option<Instant>,
}

impl Backoff {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts since the last success (or since the cycle restarted).
    #[cfg(test)]
    pub fn attempts(&self) -> u32 {
        self.k
    }

    /// The earliest time the next connection may be opened; `None` means now.
    pub fn ready_at(&self) -> Option<Instant> {
        self.next
    }

    /// Records an opening at `now`, drawing the jitter with `pick(low, high)` (inclusive
    /// bounds), and returns the delay until the next opening is allowed.
    pub fn on_open_with(&mut self, now: Instant, pick: impl FnOnce(u64, u64) -> u64) -> Duration {
        let d = delay_ms(self.k);
        if d == 0 {
            // The end of the 6 h stage: one free attempt, then the 1 s stage again.
            self.k = 0;
            self.next = None;
            return Duration::ZERO;
        }
        let (low, high) = jitter_bounds(d);
        // Clamp, so that a wrong injected picker cannot break the schedule's bounds.
        let delay = Duration::from_millis(pick(low, high).clamp(low, high));
        self.k += 1;
        self.next = Some(now + delay);
        delay
    }

    /// [`Self::on_open_with`] with a uniformly random jitter.
    pub fn on_open(&mut self, now: Instant) -> Duration {
        self.on_open_with(now, random_jitter)
    }

    /// A `101` or `204`: the relay is fine, so the next opening may happen at once.
    pub fn reset(&mut self) {
        self.k = 0;
        self.next = None;
    }

    /// A configuration error (the proxy wants other credentials): retrying every second
    /// cannot help, so the schedule moves on to the 15 s stage at least, and the next opening
    /// waits a whole jittered step from `now`.
    pub fn configuration_error(&mut self, now: Instant) {
        self.k = self.k.max(STAGE_1S_END);
        let (low, high) = jitter_bounds(delay_ms(self.k));
        self.next = Some(now + Duration::from_millis(random_jitter(low, high)));
    }

    /// A `429` with `Retry-After`: the relay's time replaces the computed one, and the counter
    /// starts over because the relay did answer.
    pub fn retry_after(&mut self, now: Instant, wait: Duration) {
        self.k = 0;
        self.next = Some(now + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_boundaries_are_exact() {
        let expected = [
            (0, 1_000),
            (179, 1_000),
            (180, 15_000),
            (899, 15_000),
            (900, 900_000),
            (1187, 900_000),
            (1188, 21_600_000),
            (1547, 21_600_000),
            (1548, 0),
        ];
        for (k, d) in expected {
            assert_eq!(delay_ms(k), d, "k = {k}");
        }
    }

    #[test]
    fn jitter_is_a_third_either_way() {
        assert_eq!(jitter_bounds(1_000), (667, 1_333));
        assert_eq!(jitter_bounds(15_000), (10_000, 20_000));
        assert_eq!(jitter_bounds(0), (0, 0));
        for _ in 0..1_000 {
            let j = random_jitter(667, 1_333);
            assert!((667..=1_333).contains(&j));
        }
    }

    /// Checklist 47: a whole cycle with a fake clock, at both ends of the jitter.
    #[test]
    fn a_whole_cycle_then_the_counter_resets() {
        for pick in [|lo, _| lo, |_, hi| hi] as [fn(u64, u64) -> u64; 2] {
            let start = Instant::now();
            let mut now = start;
            let mut backoff = Backoff::new();
            let mut spacings = Vec::new();
            for _ in 0..CYCLE_LEN {
                assert!(backoff.ready_at().is_none_or(|t| t <= now));
                backoff.on_open_with(now, pick);
                let next = backoff.ready_at().unwrap();
                spacings.push(next - now);
                now = next;
            }
            let ms = |d: u64| Duration::from_millis(pick(d - d / 3, d + d / 3));
            let stages = [
                (180, 1_000),
                (720, 15_000),
                (288, 900_000),
                (360, 21_600_000),
            ];
            let mut i = 0;
            for (count, d) in stages {
                for spacing in &spacings[i..i + count] {
                    assert_eq!(*spacing, ms(d), "attempt {i}");
                }
                i += count;
            }
            assert_eq!(backoff.attempts(), CYCLE_LEN);
            // Attempt 1548: no delay, and the 1 s stage starts again.
            assert_eq!(backoff.on_open_with(now, pick), Duration::ZERO);
            assert_eq!(backoff.ready_at(), None);
            assert_eq!(backoff.attempts(), 0);
            backoff.on_open_with(now, pick);
            assert_eq!(backoff.ready_at(), Some(now + ms(1_000)));
        }
    }

    #[test]
    fn success_and_retry_after_reset_the_counter() {
        let now = Instant::now();
        let mut backoff = Backoff::new();
        for _ in 0..200 {
            backoff.on_open(now);
        }
        assert_eq!(backoff.attempts(), 200);
        let (lo, hi) = jitter_bounds(15_000);
        let wait = backoff.ready_at().unwrap() - now;
        assert!(Duration::from_millis(lo) <= wait && wait <= Duration::from_millis(hi));

        backoff.reset();
        assert_eq!((backoff.attempts(), backoff.ready_at()), (0, None));

        for _ in 0..200 {
            backoff.on_open(now);
        }
        backoff.retry_after(now, Duration::from_secs(30));
        assert_eq!(backoff.attempts(), 0);
        assert_eq!(backoff.ready_at(), Some(now + Duration::from_secs(30)));
    }

    #[test]
    fn a_configuration_error_waits_a_long_step() {
        let now = Instant::now();
        let mut backoff = Backoff::new();
        backoff.on_open(now);
        backoff.configuration_error(now);
        assert_eq!(backoff.attempts(), STAGE_1S_END);
        let wait = backoff.ready_at().unwrap() - now;
        assert!(wait >= Duration::from_secs(10) && wait <= Duration::from_secs(20));
    }

    #[test]
    fn a_bad_picker_is_clamped() {
        let now = Instant::now();
        let mut backoff = Backoff::new();
        assert_eq!(
            backoff.on_open_with(now, |_, _| u64::MAX),
            Duration::from_millis(1_333)
        );
    }
}
