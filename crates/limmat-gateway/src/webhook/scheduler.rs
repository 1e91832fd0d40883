//! The webhook scheduler (§5.3–§5.6): decides which queued message goes out next and commits
//! what came of it. Per subscription the queue is strict: at most one message in flight, the
//! next only after the previous succeeded or became a dead letter. Subscriptions deliver in
//! parallel, up to `webhooks.max_in_flight` attempts in all; each attempt is its own task, so
//! a hanging receiver holds one slot until its timeout and never blocks the loop, the pipeline
//! or other subscriptions.
//!
//! Everything it decides is in the store before it acts on it: messages exist before their
//! first attempt (acceptance or batch formation committed them), and a message leaves its
//! queue only in the transaction that records its 2xx. A crash in between re-sends it after a
//! restart with the same `webhook-id` and body. The loop itself keeps only what is safe to
//! lose: which attempts are running.

use super::policy::{self, Policy};
use super::{FailureKind, Message, Outcome, Transport};
use crate::clock::WallClock;
use crate::config::WebhooksSection;
use crate::store::delivery::Head;
use crate::store::{Store, blocking};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The scheduler's settings.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub max_in_flight: usize,
    /// What happens after an attempt.
    pub policy: Policy,
    /// A safety net above the transport's own timeouts: an attempt that takes longer counts
    /// as a `timeout` failure.
    pub attempt_limit: Duration,
    /// How often dead letters past their retention are purged.
    pub housekeeping: Duration,
}

impl SchedulerSettings {
    pub fn from_config(w: &WebhooksSection) -> SchedulerSettings {
        SchedulerSettings {
            max_in_flight: w.max_in_flight.max(1),
            policy: Policy::from_config(w),
            attempt_limit: w.connect_timeout + w.timeout + Duration::from_secs(5),
            housekeeping: Duration::from_secs(60),
        }
    }
}

/// Run the scheduler until `shutdown`. `wake` is notified whenever new messages are queued or
/// subscriptions change. Attempts still running at shutdown are abandoned: their messages stay
/// queued and go out again after a restart.
pub async fn run(
    store: Store,
    transport: Arc<dyn Transport>,
    settings: SchedulerSettings,
    wake: Arc<Notify>,
    clock: WallClock,
    shutdown: CancellationToken,
) {
    let mut attempts: JoinSet<(String, u64, Outcome)> = JoinSet::new();
    // Subscriptions whose last result could not be committed: left alone for a moment so a
    // failing disk does not turn into a hot loop of re-sends.
    let mut cooling: HashMap<String, Instant> = HashMap::new();
    let mut housekeeping = tokio::time::interval(settings.housekeeping);
    loop {
        let now = clock.now_ms();
        if store.batches_due(now)
            && let Err(e) = blocking(&store, move |s| s.close_due_batches(now)).await
        {
            tracing::error!(error = %e, "could not close due batches");
        }
        crate::metrics::outbox_depth(usize::try_from(store.outbox_depth()).unwrap_or(usize::MAX));
        let (due, next) = store.due(now);
        let now_instant = Instant::now();
        cooling.retain(|_, until| *until > now_instant);
        for id in due {
            if attempts.len() >= settings.max_in_flight {
                break;
            }
            if cooling.contains_key(&id) {
                continue;
            }
            let sid = id.clone();
            let head = match blocking(&store, move |s| s.head(&sid)).await {
                Ok(Some(head)) => head,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "could not read a queue head");
                    continue;
                }
            };
            store.set_in_flight(&id, Some((head.position, head.meta.id.clone())));
            let transport = transport.clone();
            let limit = settings.attempt_limit;
            attempts.spawn(async move {
                let outcome = attempt(&*transport, &head, limit).await;
                (head.subscription_id, head.position, outcome)
            });
        }
        let wake_at = next
            .map(|ms| clock.instant(ms))
            .into_iter()
            .chain(cooling.values().copied())
            .min();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = sleep_until(wake_at) => {}
            Some(joined) = attempts.join_next(), if !attempts.is_empty() => {
                let Ok((id, position, outcome)) = joined else { continue };
                let policy = settings.policy;
                let now = clock.now_ms();
                let sid = id.clone();
                let jitter = rand::random();
                let result = blocking(&store, move |s| {
                    s.record_attempt(&sid, position, now, jitter, |state| {
                        policy::after_attempt(state, &outcome, now, &policy)
                    })
                })
                .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, subscription = %id, "could not record a delivery attempt; it will be retried");
                    store.set_in_flight(&id, None);
                    cooling.insert(id, Instant::now() + Duration::from_secs(1));
                }
            }
            _ = housekeeping.tick() => {
                let now = clock.now_ms();
                if let Err(e) = blocking(&store, move |s| s.expire_dead_letters(now)).await {
                    tracing::error!(error = %e, "could not purge expired dead letters");
                }
            }
        }
    }
    attempts.abort_all();
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One attempt, bounded by `limit`.
async fn attempt(transport: &dyn Transport, head: &Head, limit: Duration) -> Outcome {
    let message = Message {
        subscription_id: &head.subscription_id,
        msg_id: &head.meta.id,
        url: &head.url,
        body: &head.body,
        secrets: &head.secrets,
    };
    let outcome = tokio::time::timeout(limit, transport.attempt(message))
        .await
        .unwrap_or(Outcome::Failed {
            kind: FailureKind::Timeout,
            status: None,
            retry_after: None,
        });
    crate::metrics::delivery(match &outcome {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Gone => "gone",
        Outcome::Failed { .. } => "failed",
    });
    outcome
}
