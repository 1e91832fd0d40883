//! Simulated time and randomness, the two inputs that make the simulator deterministic
//! (`gateway-api.md` §6.2).
//!
//! Time comes only from the tokio clock, so tests run under paused time and advance it. Device
//! behaviour runs on *simulated* milliseconds since the backend started: real elapsed time
//! times `sim.time_scale`. Receive times are real: `Report.at` is the tokio instant the report
//! was scheduled for (equal to `Instant::now()` under paused time, and not skewed by a busy
//! scheduler otherwise), and `Report.received` is a fixed wall-clock epoch plus the tokio time
//! elapsed since start, so two runs with the same epoch give byte-identical reports.
//!
//! Randomness comes from one small PRNG per device and purpose, seeded from `sim.seed`, the
//! device address and a stream tag. Adding a device, a client or a subscription never shifts
//! another device's values.

use crate::address::Address;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Later than any simulated event of interest (about 30 years, as tokio's own "far future").
const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365 * 30);

/// The simulator's clock: where simulated time 0 is, in tokio and wall-clock time.
#[derive(Debug, Clone, Copy)]
pub(super) struct SimClock {
    pub start: Instant,
    pub epoch: SystemTime,
    /// Simulated seconds per real second.
    pub scale: f64,
}

impl SimClock {
    /// Simulated milliseconds now.
    pub fn now_ms(&self) -> u64 {
        (self.start.elapsed().as_secs_f64() * 1000.0 * self.scale) as u64
    }

    /// The tokio instant at which simulated time `ms` arrives (saturating far in the future).
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.start
            .checked_add(self.real(ms))
            .unwrap_or_else(|| self.start + FAR_FUTURE)
    }

    /// A simulated span as real time (saturating, never a panic).
    pub fn real(&self, ms: u64) -> Duration {
        Duration::try_from_secs_f64(ms as f64 / 1000.0 / self.scale).unwrap_or(FAR_FUTURE)
    }

    /// The wall-clock time of a tokio instant.
    pub fn wall(&self, at: Instant) -> SystemTime {
        self.epoch + at.saturating_duration_since(self.start)
    }
}

/// What a random stream is for; part of its seed.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(super) enum Stream {
    /// Advertising phase, RSSI walk, TLM temperature.
    Radio = 1,
    /// A peripheral's GATT behaviour (heart rate).
    Gatt = 2,
}

/// The PRNG for one device and purpose.
pub(super) fn rng(seed: u64, address: Address, stream: Stream) -> SmallRng {
    let [a, b, c, d, e, f] = address.0;
    let address = u64::from_be_bytes([0, 0, a, b, c, d, e, f]);
    let mixed = splitmix(splitmix(splitmix(seed) ^ address) ^ stream as u64);
    SmallRng::seed_from_u64(mixed)
}

/// SplitMix64's finaliser: spreads nearby inputs (consecutive clone addresses) far apart.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
