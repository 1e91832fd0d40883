//! Acceptance (§5.3): one transaction holds the event-log entries, the presence changes that
//! produced them, and each event's place in the queue of every enabled subscription it
//! matches. Events are committed with immediate durability (fsync); a presence-only change
//! (sightings without events) needs no fsync and rides on the next durable commit.
//!
//! Queueing applies §3.5 and §5.6 on the way: batch subscriptions collect events until a batch
//! is full, `beacon.updated` events above the coalescing threshold replace the previous
//! unattempted one for the same key, and a queue over `max_backlog` events sheds its oldest
//! undelivered messages to the dead letters (`backlog-overflow`).

use super::queue::Queues;
use super::records::{MessageMeta, PresenceRecord, encode_timed};
use super::{EVENTS, PRESENCE, Store, StoreError, SubState, next_counter};
use crate::events::{Draft, EventMeta};
use redb::ReadableTable;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one group commit carries.
#[derive(Debug, Default)]
pub struct AcceptBatch {
    /// The events, in order; sequences are assigned in this order.
    pub drafts: Vec<Draft>,
    /// Presence changes: key → its new state, or `None` when it left.
    pub presence: Vec<(String, Option<PresenceRecord>)>,
    /// Wall-clock time of the commit, epoch ms.
    pub now_ms: u64,
}

/// An accepted event, ready to publish.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub sequence: u64,
    pub json: Arc<str>,
    pub meta: EventMeta,
}

impl Store {
    /// Commit a batch; `Ok` means its events are accepted (durable and queued).
    pub fn accept(&self, batch: AcceptBatch) -> Result<Vec<Accepted>, StoreError> {
        if batch.drafts.is_empty() && batch.presence.is_empty() {
            return Ok(Vec::new());
        }
        let durability = if batch.drafts.is_empty() {
            redb::Durability::Eventual
        } else {
            redb::Durability::Immediate
        };
        let options = self.options().clone();
        let mut cache = self.cache();
        let mut touched: BTreeMap<String, SubState> = BTreeMap::new();
        let mut accepted = Vec::with_capacity(batch.drafts.len());
        let now = batch.now_ms;
        let txn = self.begin(durability)?;
        {
            let mut presence = txn.open_table(PRESENCE)?;
            for (key, record) in &batch.presence {
                match record {
                    Some(record) => {
                        let json = serde_json::to_vec(record).unwrap_or_default();
                        presence.insert(key.as_str(), json.as_slice())?;
                    }
                    None => {
                        presence.remove(key.as_str())?;
                    }
                }
            }
            let mut events = txn.open_table(EVENTS)?;
            let mut queues = Queues::open(&txn)?;
            for draft in batch.drafts {
                let sequence = next_counter(&mut queues.meta, "next_sequence")?;
                let json = draft.envelope(&options.gateway, Some(sequence));
                events.insert(sequence, encode_timed(now, json.as_bytes()).as_slice())?;
                let matching: Vec<String> = cache
                    .subs
                    .iter()
                    .filter(|(_, st)| st.sub.enabled() && st.sub.filter.matches(&draft.meta))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in matching {
                    let st = match touched.entry(id) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let Some(original) = cache.subs.get(e.key()) else {
                                continue;
                            };
                            e.insert(original.clone())
                        }
                    };
                    if let (Some(spec), Some(opened)) = (st.sub.batch, st.batch_opened_ms)
                        && opened.saturating_add(spec.max_delay_ms) <= now
                    {
                        // The open batch is due: close it here, before this event, rather than
                        // in a transaction (and an fsync) of the scheduler's own.
                        queues.form_batch(st, now, &options.gateway)?;
                    }
                    enqueue(&mut queues, st, sequence, &json, &draft.meta, now, &options)?;
                }
                accepted.push(Accepted {
                    sequence,
                    json: Arc::from(json),
                    meta: draft.meta,
                });
            }
            for st in touched.values() {
                queues.save_sub(st)?;
            }
            if !accepted.is_empty() {
                trim_log(&mut events, now.saturating_sub(options.log_retention_ms))?;
            }
        }
        self.commit(txn)?;
        cache.subs.extend(touched);
        Ok(accepted)
    }
}

/// Queue one accepted event for one subscription.
fn enqueue(
    queues: &mut Queues<'_>,
    st: &mut SubState,
    sequence: u64,
    json: &str,
    event: &EventMeta,
    now: u64,
    options: &super::Options,
) -> Result<(), StoreError> {
    if let Some(spec) = st.sub.batch {
        queues.batching.insert(
            (st.sub.id.as_str(), sequence),
            encode_timed(now, json.as_bytes()).as_slice(),
        )?;
        st.batching += 1;
        st.pending += 1;
        st.batch_opened_ms.get_or_insert(now);
        if st.batching >= u64::from(spec.max_events.max(1)) {
            queues.form_batch(st, now, &options.gateway)?;
        }
    } else {
        let key = event
            .keys
            .first()
            .filter(|_| event.type_ != "beacon.telemetry");
        if event.type_ == "beacon.updated"
            && st.pending + 1 > options.coalesce_threshold
            && let Some(key) = key
        {
            coalesce(queues, st, key)?;
        }
        let mut meta = MessageMeta::fresh(crate::events::new_id("msg"), now, vec![sequence]);
        meta.event_type = key.map(|_| event.type_.to_string());
        meta.key = key.cloned();
        queues.push_message(st, meta, json.as_bytes())?;
    }
    shed_backlog(queues, st, now, options)
}

/// Drop the previous unattempted `beacon.updated` for `key`, if nothing about the key came
/// after it (latest wins, §5.6).
fn coalesce(queues: &mut Queues<'_>, st: &mut SubState, key: &str) -> Result<(), StoreError> {
    let Some(&position) = st.coalesce.get(key) else {
        return Ok(());
    };
    if st.in_flight.as_ref().is_some_and(|(p, _)| *p == position) {
        return Ok(());
    }
    let unattempted = queues
        .messages
        .get((st.sub.id.as_str(), position))?
        .and_then(|v| super::records::decode_with_body::<MessageMeta>(v.value()))
        .is_some_and(|(m, _)| m.attempts == 0);
    if unattempted && queues.remove_message(st, position)?.is_some() {
        st.sub.delivery.coalesced += 1;
        crate::metrics::coalesced(1);
    }
    Ok(())
}

/// Keep the queue within `max_backlog` events: the oldest undelivered messages become dead
/// letters (`backlog-overflow`).
fn shed_backlog(
    queues: &mut Queues<'_>,
    st: &mut SubState,
    now: u64,
    options: &super::Options,
) -> Result<(), StoreError> {
    let mut from = 0;
    while st.pending > options.max_backlog {
        let Some((position, _, _)) = queues.message_from(&st.sub.id.clone(), from)? else {
            break;
        };
        from = position + 1;
        if st.in_flight.as_ref().is_some_and(|(p, _)| *p == position) {
            continue;
        }
        queues.bury_message(st, position, "backlog-overflow", now, options)?;
    }
    Ok(())
}

/// Drop log entries accepted before `cutoff_ms` (queues hold their own bodies, so the log only
/// serves SSE resumption). Bounded per commit so one commit never grows unboundedly.
fn trim_log(
    events: &mut redb::Table<'_, u64, &'static [u8]>,
    cutoff_ms: u64,
) -> Result<(), StoreError> {
    let mut old = Vec::new();
    for entry in events.iter()?.take(1024) {
        let (k, v) = entry?;
        match super::records::decode_timed(v.value()) {
            Some((ms, _)) if ms < cutoff_ms => old.push(k.value()),
            _ => break,
        }
    }
    for sequence in old {
        events.remove(sequence)?;
    }
    Ok(())
}
