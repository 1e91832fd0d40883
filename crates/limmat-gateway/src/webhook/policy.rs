//! What happens to a message after one attempt (§5.4–§5.6), decided without I/O: backoff with
//! jitter, the `Retry-After` cap, the retry budget (dead letters) and disabling. The store
//! only applies the [`Decision`] inside the transaction that commits the attempt, so the rules
//! live here, next to the scheduler that asks for them, and are tested as plain functions.

use super::Outcome;
use super::backoff;
use crate::store::{AttemptState, Decision};
use std::time::Duration;

/// The rules' settings (`webhooks.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Backoff: `min(base × factor^(k−1), max)` seconds after the k-th consecutive failure.
    pub base_s: f64,
    pub factor: f64,
    pub max_s: f64,
    /// Attempts of one message before it becomes a dead letter.
    pub max_attempts: u32,
    /// A message older than this becomes a dead letter at its next failure.
    pub max_age_ms: u64,
    /// A subscription failing for this long is disabled.
    pub disable_after_ms: u64,
}

impl Policy {
    /// From `[webhooks]`.
    pub fn from_config(w: &crate::config::WebhooksSection) -> Policy {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Policy {
            base_s: w.retry_base.as_secs_f64(),
            factor: w.retry_factor,
            max_s: w.retry_max_delay.as_secs_f64(),
            max_attempts: w.max_attempts,
            max_age_ms: ms(w.max_age),
            disable_after_ms: ms(w.disable_after),
        }
    }

    /// The jittered delay after the k-th consecutive failure, in ms; `jitter` is uniform in
    /// [0, 1) (§5.5: a factor from 0.75 to 1.25).
    pub fn delay_ms(&self, k: u32, jitter: f64) -> u64 {
        let d = backoff::delay(k, self.base_s, self.factor, self.max_s, jitter);
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The decision after one attempt of the message `state` describes, at `now_ms`.
pub fn after_attempt(
    state: &AttemptState,
    outcome: &Outcome,
    now_ms: u64,
    policy: &Policy,
) -> Decision {
    match outcome {
        Outcome::Delivered { status } => Decision::Delivered { status: *status },
        Outcome::Gone => Decision::Gone,
        Outcome::Failed {
            kind,
            status,
            retry_after,
        } => {
            let failures = state.consecutive_failures.saturating_add(1);
            let failing_since = state.failing_since_ms.unwrap_or(now_ms);
            let backoff = Duration::from_millis(policy.delay_ms(failures, state.jitter));
            let delay = backoff::next_delay(backoff, *retry_after);
            let delay = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            let attempts = state.attempts.saturating_add(1);
            let too_old = now_ms.saturating_sub(state.created_ms) > policy.max_age_ms;
            Decision::Failed {
                status: *status,
                error: kind.as_str(),
                next_attempt_ms: now_ms.saturating_add(delay),
                dead_letter: attempts >= policy.max_attempts || too_old,
                disable: now_ms.saturating_sub(failing_since) >= policy.disable_after_ms,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::FailureKind;

    const POLICY: Policy = Policy {
        base_s: 5.0,
        factor: 4.0,
        max_s: 8.0 * 3600.0,
        max_attempts: 3,
        max_age_ms: 60_000,
        disable_after_ms: 100_000,
    };

    fn state(attempts: u32, failures: u32, failing_since_ms: Option<u64>) -> AttemptState {
        AttemptState {
            attempts,
            created_ms: 0,
            consecutive_failures: failures,
            failing_since_ms,
            // Jitter factor 1.0.
            jitter: 0.5,
        }
    }

    fn failed(retry_after: Option<Duration>) -> Outcome {
        Outcome::Failed {
            kind: FailureKind::Status,
            status: Some(503),
            retry_after,
        }
    }

    #[test]
    fn a_failure_backs_off_and_retry_after_is_capped() {
        let d = after_attempt(&state(0, 0, None), &failed(None), 1_000, &POLICY);
        assert_eq!(
            d,
            Decision::Failed {
                status: Some(503),
                error: "status",
                next_attempt_ms: 6_000,
                dead_letter: false,
                disable: false,
            }
        );
        // The second consecutive failure waits base × factor.
        let Decision::Failed {
            next_attempt_ms, ..
        } = after_attempt(&state(1, 1, Some(0)), &failed(None), 1_000, &POLICY)
        else {
            panic!("not a failure")
        };
        assert_eq!(next_attempt_ms, 21_000);
        // Retry-After lengthens the wait, never beyond 8 h.
        let Decision::Failed {
            next_attempt_ms, ..
        } = after_attempt(&state(0, 0, None), &failed(Some(Duration::MAX)), 0, &POLICY)
        else {
            panic!("not a failure")
        };
        assert_eq!(next_attempt_ms, 8 * 3600 * 1000);
    }

    #[test]
    fn the_budget_makes_dead_letters_and_long_failure_disables() {
        let dead = |s: &AttemptState, now| match after_attempt(s, &failed(None), now, &POLICY) {
            Decision::Failed {
                dead_letter,
                disable,
                ..
            } => (dead_letter, disable),
            other => panic!("{other:?}"),
        };
        assert_eq!(dead(&state(1, 1, Some(0)), 1_000), (false, false));
        assert_eq!(dead(&state(2, 2, Some(0)), 1_000), (true, false));
        assert_eq!(dead(&state(0, 0, None), 60_001), (true, false));
        assert_eq!(dead(&state(0, 5, Some(0)), 100_000), (true, true));
        assert_eq!(
            after_attempt(&state(0, 0, None), &Outcome::Gone, 0, &POLICY),
            Decision::Gone
        );
        assert_eq!(
            after_attempt(
                &state(2, 2, Some(0)),
                &Outcome::Delivered { status: 204 },
                0,
                &POLICY
            ),
            Decision::Delivered { status: 204 }
        );
    }
}
