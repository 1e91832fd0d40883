//! The scheduler's side of the store (§5.3–§5.6): which subscriptions are due, the head of a
//! queue, the result of an attempt (a message leaves its queue only here, after a 2xx), retry
//! state, the retry budget, disabling, batches closing on time, pings, dead letters and replay.

use super::queue::Queues;
use super::records::{DeadMeta, MessageMeta, decode_with_body, encode_with_body};
use super::{DEAD, MESSAGES, Store, StoreError, SubState};
use base64::Engine;
use redb::ReadableTable;

/// What the delivery policy needs to know about a message and its subscription after an
/// attempt, read inside the transaction that commits it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttemptState {
    /// Attempts of this message before this one.
    pub attempts: u32,
    /// When the message was queued.
    pub created_ms: u64,
    /// Consecutive failures of the subscription before this attempt.
    pub consecutive_failures: u32,
    /// Since when the subscription has been failing, if it is.
    pub failing_since_ms: Option<u64>,
    /// A uniform draw in [0, 1) for the backoff's jitter, made by the caller.
    pub jitter: f64,
}

/// What to do with a message after one attempt, as the delivery policy decided; the store
/// applies it in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A 2xx: the message leaves its queue.
    Delivered { status: u16 },
    /// `410 Gone`: the message and the rest of the queue become dead letters and the
    /// subscription is disabled.
    Gone,
    /// A failure (`lastError` = `error`).
    Failed {
        status: Option<u16>,
        error: &'static str,
        /// When the next attempt is due.
        next_attempt_ms: u64,
        /// The retry budget is spent: the message becomes a dead letter.
        dead_letter: bool,
        /// The subscription has failed too long: disable it and bury its queue.
        disable: bool,
    },
}

/// The head message of a queue, with what an attempt needs.
#[derive(Debug, Clone)]
pub struct Head {
    pub subscription_id: String,
    pub position: u64,
    pub meta: MessageMeta,
    pub body: Vec<u8>,
    pub url: String,
    /// Decoded HMAC keys, the newest first.
    pub secrets: Vec<Vec<u8>>,
}

/// A dead letter with its body.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub meta: DeadMeta,
    pub body: Vec<u8>,
}

/// Decode `whsec_<base64>` into HMAC key bytes.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

impl Store {
    /// Subscriptions with a message due at `now_ms` and none in flight; and the earliest
    /// future time something becomes due (a backoff ending or a batch closing).
    pub fn due(&self, now_ms: u64) -> (Vec<String>, Option<u64>) {
        let cache = self.cache();
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        let mut wake = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        for (id, st) in &cache.subs {
            if !st.sub.enabled() {
                continue;
            }
            if let (Some(spec), Some(opened)) = (st.sub.batch, st.batch_opened_ms) {
                wake(opened.saturating_add(spec.max_delay_ms));
            }
            if st.messages == 0 || st.in_flight.is_some() {
                continue;
            }
            match st.sub.delivery.next_attempt_ms {
                Some(t) if t > now_ms => wake(t),
                _ => due.push(id.clone()),
            }
        }
        (due, next)
    }

    /// Events queued for delivery across all subscriptions (the outbox depth).
    pub fn outbox_depth(&self) -> u64 {
        self.cache().subs.values().map(|st| st.pending).sum()
    }

    /// Whether some batch's `maxDelayMs` has run out (cheap: memory only).
    pub fn batches_due(&self, now_ms: u64) -> bool {
        self.cache()
            .subs
            .values()
            .any(|st| match (st.sub.batch, st.batch_opened_ms) {
                (Some(spec), Some(opened)) => {
                    st.sub.enabled() && opened.saturating_add(spec.max_delay_ms) <= now_ms
                }
                _ => false,
            })
    }

    /// Close the batches whose `maxDelayMs` has run out.
    pub fn close_due_batches(&self, now_ms: u64) -> Result<(), StoreError> {
        let mut cache = self.cache();
        let due: Vec<String> = cache
            .subs
            .iter()
            .filter(|(_, st)| match (st.sub.batch, st.batch_opened_ms) {
                (Some(spec), Some(opened)) => {
                    st.sub.enabled() && opened.saturating_add(spec.max_delay_ms) <= now_ms
                }
                _ => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let gateway = self.options().gateway.clone();
        let mut touched = Vec::new();
        let txn = self.begin(redb::Durability::Immediate)?;
        {
            let mut queues = Queues::open(&txn)?;
            for id in due {
                let Some(mut st) = cache.subs.get(&id).cloned() else {
                    continue;
                };
                queues.form_batch(&mut st, now_ms, &gateway)?;
                touched.push(st);
            }
        }
        self.commit(txn)?;
        for st in touched {
            cache.subs.insert(st.sub.id.clone(), st);
        }
        Ok(())
    }

    /// The head of a subscription's queue, or `None` if it is empty or gone.
    pub fn head(&self, subscription_id: &str) -> Result<Option<Head>, StoreError> {
        let (url, secrets) = {
            let cache = self.cache();
            let Some(st) = cache.subs.get(subscription_id) else {
                return Ok(None);
            };
            (st.sub.url.clone(), st.sub.secrets.clone())
        };
        let rd = |e: String| StoreError::Read(e);
        let txn = self.db().begin_read().map_err(|e| rd(e.to_string()))?;
        let messages = txn.open_table(MESSAGES).map_err(|e| rd(e.to_string()))?;
        let id = subscription_id;
        let mut range = messages
            .range((id, 0)..=(id, u64::MAX))
            .map_err(|e| rd(e.to_string()))?;
        let Some(entry) = range.next() else {
            return Ok(None);
        };
        let (k, v) = entry.map_err(|e| rd(e.to_string()))?;
        let Some((meta, body)) = decode_with_body::<MessageMeta>(v.value()) else {
            return Err(rd("unreadable message record".into()));
        };
        let now = crate::events::millis(std::time::SystemTime::now());
        Ok(Some(Head {
            subscription_id: id.to_string(),
            position: k.value().1,
            meta,
            body,
            url,
            secrets: secrets
                .iter()
                .filter(|s| s.until_ms.is_none_or(|until| until > now))
                .filter_map(|s| secret_key(&s.value))
                .collect(),
        }))
    }

    /// Mark (or clear) the message being attempted; memory only.
    pub fn set_in_flight(&self, subscription_id: &str, in_flight: Option<(u64, String)>) {
        if let Some(st) = self.cache().subs.get_mut(subscription_id) {
            st.in_flight = in_flight;
        }
        self.touched();
    }

    /// Commit the result of one attempt of the message at `position`: `decide` gets the
    /// message's and subscription's state inside the transaction and says what happens
    /// (the delivery policy, `webhook::policy::after_attempt`); `jitter` is passed on to it.
    pub fn record_attempt(
        &self,
        subscription_id: &str,
        position: u64,
        now_ms: u64,
        jitter: f64,
        decide: impl FnOnce(&AttemptState) -> Decision,
    ) -> Result<(), StoreError> {
        let options = self.options().clone();
        let mut cache = self.cache();
        let Some(mut st) = cache.subs.get(subscription_id).cloned() else {
            return Ok(());
        };
        st.in_flight = None;
        let mut txn = self.begin(redb::Durability::Immediate)?;
        {
            let mut queues = Queues::open(&txn)?;
            let current = queues
                .messages
                .get((subscription_id, position))?
                .and_then(|v| decode_with_body::<MessageMeta>(v.value()));
            if let Some((mut meta, body)) = current {
                let decision = decide(&AttemptState {
                    attempts: meta.attempts,
                    created_ms: meta.created_ms,
                    consecutive_failures: st.sub.delivery.consecutive_failures,
                    failing_since_ms: st.sub.delivery.failing_since_ms,
                    jitter,
                });
                apply(
                    &mut queues,
                    &mut st,
                    position,
                    &mut meta,
                    &body,
                    &decision,
                    now_ms,
                    &options,
                )?;
                queues.save_sub(&st)?;
                drop(queues);
                // A 2xx needs no fsync of its own: if the process dies before the next durable
                // commit (the pipeline's next accept, or a failure's), the message is simply
                // still queued and is sent again with the same id and body, which §5.3 allows.
                // Failures keep theirs, because their retry state must survive a crash.
                if matches!(decision, Decision::Delivered { .. }) {
                    txn.set_durability(redb::Durability::Eventual);
                }
            }
        }
        self.commit(txn)?;
        cache.subs.insert(subscription_id.to_string(), st);
        Ok(())
    }

    /// Queue a `webhook.ping` for one subscription (§3.1 [O]).
    pub fn enqueue_ping(&self, subscription_id: &str, now_ms: u64) -> Result<String, StoreError> {
        let draft = crate::events::Draft::ping(now_ms);
        let body = draft.envelope(&self.options().gateway, None);
        self.with_sub(
            subscription_id,
            redb::Durability::Immediate,
            |queues, st| {
                if !st.sub.enabled() {
                    return Err(StoreError::Disabled);
                }
                let mut meta = MessageMeta::fresh(crate::events::new_id("msg"), now_ms, Vec::new());
                meta.event_type = Some("webhook.ping".into());
                queues.push_message(st, meta, body.as_bytes())?;
                Ok(draft.id.clone())
            },
        )
    }

    /// Dead letters of a subscription, oldest first, after the one with id `after`.
    pub fn dead_letters(
        &self,
        subscription_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if !self.cache().subs.contains_key(subscription_id) {
            return Err(StoreError::NoSubscription);
        }
        let rd = |e: String| StoreError::Read(e);
        let txn = self.db().begin_read().map_err(|e| rd(e.to_string()))?;
        let dead = txn.open_table(DEAD).map_err(|e| rd(e.to_string()))?;
        let id = subscription_id;
        let mut out = Vec::new();
        let mut skipping = after.is_some();
        for entry in dead
            .range((id, 0)..=(id, u64::MAX))
            .map_err(|e| rd(e.to_string()))?
        {
            let (_, v) = entry.map_err(|e| rd(e.to_string()))?;
            let Some((meta, body)) = decode_with_body::<DeadMeta>(v.value()) else {
                continue;
            };
            if skipping {
                skipping = Some(meta.id.as_str()) != after;
                continue;
            }
            out.push(DeadLetter { meta, body });
            if out.len() >= limit {
                break;
            }
        }
        if skipping {
            return Err(StoreError::NoDeadLetter);
        }
        Ok(out)
    }

    /// Re-queue all dead letters in order, or the one with id `msg_id`, at the tail with the
    /// same id and body and a fresh attempt count (§5.5). The number re-queued.
    pub fn replay(
        &self,
        subscription_id: &str,
        msg_id: Option<&str>,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        self.with_sub(
            subscription_id,
            redb::Durability::Immediate,
            |queues, st| {
                if !st.sub.enabled() {
                    return Err(StoreError::Disabled);
                }
                let picked = pick_dead(queues, &st.sub.id, msg_id)?;
                for (position, dead, body) in &picked {
                    queues.dead.remove((st.sub.id.as_str(), *position))?;
                    st.dead = st.dead.saturating_sub(1);
                    let meta = MessageMeta::fresh(dead.id.clone(), now_ms, dead.sequences.clone());
                    queues.push_message(st, meta, body)?;
                }
                Ok(picked.len())
            },
        )
    }

    /// Purge all dead letters, or the one with id `msg_id`.
    pub fn purge_dead_letters(
        &self,
        subscription_id: &str,
        msg_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        self.with_sub(
            subscription_id,
            redb::Durability::Immediate,
            |queues, st| {
                let picked = pick_dead(queues, &st.sub.id, msg_id)?;
                for (position, _, _) in &picked {
                    queues.dead.remove((st.sub.id.as_str(), *position))?;
                    st.dead = st.dead.saturating_sub(1);
                }
                Ok(picked.len())
            },
        )
    }

    /// Purge dead letters older than `dead_letter_retention_s` everywhere; the number purged.
    pub fn expire_dead_letters(&self, now_ms: u64) -> Result<u64, StoreError> {
        let cutoff = now_ms.saturating_sub(self.options().dead_letter_retention_ms);
        let mut cache = self.cache();
        let mut purged = 0;
        let mut touched = Vec::new();
        let txn = self.begin(redb::Durability::Immediate)?;
        {
            let mut dead = txn.open_table(DEAD)?;
            for (id, st) in &cache.subs {
                if st.dead == 0 {
                    continue;
                }
                let mut old = Vec::new();
                for entry in dead.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
                    let (k, v) = entry?;
                    match decode_with_body::<DeadMeta>(v.value()) {
                        Some((meta, _)) if meta.dead_ms > cutoff => break,
                        _ => old.push(k.value().1),
                    }
                }
                if old.is_empty() {
                    continue;
                }
                for position in &old {
                    dead.remove((id.as_str(), *position))?;
                }
                let mut st = st.clone();
                st.dead = st.dead.saturating_sub(old.len() as u64);
                purged += old.len() as u64;
                touched.push(st);
            }
        }
        if touched.is_empty() {
            let _ = txn.abort();
            return Ok(0);
        }
        self.commit(txn)?;
        for st in touched {
            cache.subs.insert(st.sub.id.clone(), st);
        }
        crate::metrics::dead_letters_purged(purged);
        Ok(purged)
    }

    /// Run `f` on one subscription inside a write transaction; the subscription record is
    /// saved and memory updated after the commit.
    pub(crate) fn with_sub<T>(
        &self,
        subscription_id: &str,
        durability: redb::Durability,
        f: impl FnOnce(&mut Queues<'_>, &mut SubState) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut cache = self.cache();
        let Some(mut st) = cache.subs.get(subscription_id).cloned() else {
            return Err(StoreError::NoSubscription);
        };
        let txn = self.begin(durability)?;
        let result = {
            let mut queues = Queues::open(&txn)?;
            let result = f(&mut queues, &mut st)?;
            queues.save_sub(&st)?;
            result
        };
        self.commit(txn)?;
        cache.subs.insert(subscription_id.to_string(), st);
        Ok(result)
    }
}

/// The dead letters to act on: all, or the one with `msg_id` (`NoDeadLetter` if absent).
fn pick_dead(
    queues: &Queues<'_>,
    id: &str,
    msg_id: Option<&str>,
) -> Result<Vec<(u64, DeadMeta, Vec<u8>)>, StoreError> {
    let mut picked = Vec::new();
    for entry in queues.dead.range((id, 0)..=(id, u64::MAX))? {
        let (k, v) = entry?;
        let Some((meta, body)) = decode_with_body::<DeadMeta>(v.value()) else {
            continue;
        };
        if msg_id.is_none_or(|m| m == meta.id) {
            picked.push((k.value().1, meta, body));
        }
    }
    if msg_id.is_some() && picked.is_empty() {
        return Err(StoreError::NoDeadLetter);
    }
    Ok(picked)
}

/// Applies the policy's decision to the message at `position`: counters, retry state, dead
/// letters and disabling.
#[allow(clippy::too_many_arguments)]
fn apply(
    queues: &mut Queues<'_>,
    st: &mut SubState,
    position: u64,
    meta: &mut MessageMeta,
    body: &[u8],
    decision: &Decision,
    now: u64,
    options: &super::Options,
) -> Result<(), StoreError> {
    let d = &mut st.sub.delivery;
    d.last_attempt_ms = Some(now);
    meta.attempts = meta.attempts.saturating_add(1);
    match decision {
        Decision::Delivered { status } => {
            crate::metrics::delivery_latency(std::time::Duration::from_millis(
                now.saturating_sub(meta.created_ms),
            ));
            d.delivered += meta.sequences.len().max(1) as u64;
            d.consecutive_failures = 0;
            d.last_success_ms = Some(now);
            d.next_attempt_ms = None;
            d.last_status = Some(*status);
            d.last_error = None;
            d.failing_since_ms = None;
            queues.remove_message(st, position)?;
        }
        Decision::Gone => {
            d.failed_attempts += 1;
            d.last_status = Some(410);
            d.last_error = Some("status".into());
            meta.last_status = Some(410);
            meta.last_error = Some("status".into());
            st.sub.disabled_reason = Some("gone".into());
            tracing::warn!(subscription = %st.sub.id, "receiver answered 410 Gone: subscription disabled");
            queues.remove_message(st, position)?;
            queues.bury(
                st,
                DeadMeta::from_message(meta.clone(), "gone", now),
                body,
                options,
            )?;
            queues.drain(st, "gone", now, options)?;
        }
        Decision::Failed {
            status,
            error,
            next_attempt_ms,
            dead_letter,
            disable,
        } => {
            d.failed_attempts += 1;
            d.consecutive_failures = d.consecutive_failures.saturating_add(1);
            d.failing_since_ms.get_or_insert(now);
            d.next_attempt_ms = Some(*next_attempt_ms);
            d.last_status = *status;
            d.last_error = Some((*error).into());
            meta.last_status = *status;
            meta.last_error = Some((*error).into());
            meta.next_attempt_ms = *next_attempt_ms;
            if *dead_letter {
                queues.remove_message(st, position)?;
                let dead = DeadMeta::from_message(meta.clone(), "retry-budget", now);
                queues.bury(st, dead, body, options)?;
            } else {
                let value = encode_with_body(&*meta, body);
                queues
                    .messages
                    .insert((st.sub.id.as_str(), position), value.as_slice())?;
            }
            if *disable {
                st.sub.disabled_reason = Some("failing".into());
                tracing::warn!(subscription = %st.sub.id, "no successful delivery for webhooks.disable_after: subscription disabled");
                queues.drain(st, "disabled", now, options)?;
            }
        }
    }
    Ok(())
}
