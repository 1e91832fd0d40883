//! The wall clock of the Beacon API's deliveries and events: epoch milliseconds that advance
//! with the tokio clock, so paused-time tests drive backoff and batch deadlines, and a
//! wall-clock jump does not fire timers early. Ground floor: the pipeline, the scheduler and
//! the API read it; it reads nothing of theirs. (The simulated world keeps its own
//! `SimClock`, which scales time.)

use std::time::Duration;
use tokio::time::Instant;

/// Epoch milliseconds on the tokio clock; cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    base_ms: u64,
    base: Instant,
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

impl WallClock {
    /// Starts at the system's wall-clock time.
    pub fn new() -> WallClock {
        WallClock {
            base_ms: crate::events::millis(std::time::SystemTime::now()),
            base: Instant::now(),
        }
    }

    /// Now, in epoch milliseconds.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }

    /// The tokio instant of a wall-clock time in ms (now, if it is past).
    pub fn instant(&self, ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms.saturating_sub(self.now_ms()))
    }
}
