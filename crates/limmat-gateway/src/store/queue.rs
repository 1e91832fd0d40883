//! Queue primitives inside one write transaction: push a message, form a batch, bury a message
//! as a dead letter, drain a queue. They change the tables and a copy of the subscription's
//! in-memory state; the caller writes the copy back only after the commit.

use super::records::{DeadMeta, MessageMeta, decode_timed, decode_with_body, encode_with_body};
use super::{BATCHING, DEAD, MESSAGES, META, Options, SUBSCRIPTIONS, StoreError, SubState};
use super::{next_counter, note_coalescing};
use redb::{ReadableTable, Table, WriteTransaction};
use serde_json::value::RawValue;

type QueueTable<'t> = Table<'t, (&'static str, u64), &'static [u8]>;

/// The queue tables of one write transaction.
pub(crate) struct Queues<'t> {
    pub messages: QueueTable<'t>,
    pub batching: QueueTable<'t>,
    pub dead: QueueTable<'t>,
    pub meta: Table<'t, &'static str, u64>,
    pub subs: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Queues<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Queues<'t>, StoreError> {
        Ok(Queues {
            messages: txn.open_table(MESSAGES)?,
            batching: txn.open_table(BATCHING)?,
            dead: txn.open_table(DEAD)?,
            meta: txn.open_table(META)?,
            subs: txn.open_table(SUBSCRIPTIONS)?,
        })
    }

    /// Persist the subscription record of `st`.
    pub fn save_sub(&mut self, st: &SubState) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&st.sub).unwrap_or_default();
        self.subs.insert(st.sub.id.as_str(), json.as_slice())?;
        Ok(())
    }

    /// Append a message to the queue's tail; its position.
    pub fn push_message(
        &mut self,
        st: &mut SubState,
        meta: MessageMeta,
        body: &[u8],
    ) -> Result<u64, StoreError> {
        let position = next_counter(&mut self.meta, "next_position")?;
        let value = encode_with_body(&meta, body);
        self.messages
            .insert((st.sub.id.as_str(), position), value.as_slice())?;
        st.messages += 1;
        st.pending += meta.sequences.len() as u64;
        note_coalescing(&mut st.coalesce, &meta, position);
        Ok(position)
    }

    /// Take a message off the queue.
    pub fn remove_message(
        &mut self,
        st: &mut SubState,
        position: u64,
    ) -> Result<Option<(MessageMeta, Vec<u8>)>, StoreError> {
        let removed = self
            .messages
            .remove((st.sub.id.as_str(), position))?
            .and_then(|v| decode_with_body::<MessageMeta>(v.value()));
        if let Some((meta, _)) = &removed {
            st.messages = st.messages.saturating_sub(1);
            st.pending = st.pending.saturating_sub(meta.sequences.len() as u64);
            if let Some(key) = &meta.key
                && st.coalesce.get(key) == Some(&position)
            {
                st.coalesce.remove(key);
            }
        }
        Ok(removed)
    }

    /// The first message at or after `from`, with its position.
    pub fn message_from(
        &self,
        id: &str,
        from: u64,
    ) -> Result<Option<(u64, MessageMeta, Vec<u8>)>, StoreError> {
        let mut range = self.messages.range((id, from)..=(id, u64::MAX))?;
        match range.next() {
            Some(entry) => {
                let (k, v) = entry?;
                Ok(decode_with_body::<MessageMeta>(v.value()).map(|(m, b)| (k.value().1, m, b)))
            }
            None => Ok(None),
        }
    }

    /// Store a dead letter, dropping the oldest beyond `dead_letter_max`.
    pub fn bury(
        &mut self,
        st: &mut SubState,
        dead: DeadMeta,
        body: &[u8],
        options: &Options,
    ) -> Result<(), StoreError> {
        let position = next_counter(&mut self.meta, "next_position")?;
        let value = encode_with_body(&dead, body);
        self.dead
            .insert((st.sub.id.as_str(), position), value.as_slice())?;
        st.dead += 1;
        st.sub.delivery.dead_letters += 1;
        crate::metrics::dead_letter(reason_name(&dead.reason));
        while st.dead > options.dead_letter_max {
            let id = st.sub.id.clone();
            let oldest = {
                let mut range = self
                    .dead
                    .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?;
                match range.next() {
                    Some(entry) => Some(entry?.0.value().1),
                    None => None,
                }
            };
            let Some(oldest) = oldest else { break };
            self.dead.remove((id.as_str(), oldest))?;
            st.dead -= 1;
            crate::metrics::dead_letters_purged(1);
        }
        Ok(())
    }

    /// Move a queued message to the dead letters.
    pub fn bury_message(
        &mut self,
        st: &mut SubState,
        position: u64,
        reason: &str,
        now_ms: u64,
        options: &Options,
    ) -> Result<bool, StoreError> {
        match self.remove_message(st, position)? {
            Some((meta, body)) => {
                self.bury(
                    st,
                    DeadMeta::from_message(meta, reason, now_ms),
                    &body,
                    options,
                )?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Form one batch of up to `maxEvents` waiting events into a message (§3.5).
    pub fn form_batch(
        &mut self,
        st: &mut SubState,
        now_ms: u64,
        gateway: &str,
    ) -> Result<(), StoreError> {
        let Some(spec) = st.sub.batch else {
            return Ok(());
        };
        let id = st.sub.id.clone();
        let mut taken: Vec<(u64, String)> = Vec::new();
        for entry in self
            .batching
            .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?
            .take(spec.max_events.max(1) as usize)
        {
            let (k, v) = entry?;
            if let Some((_, json)) = decode_timed(v.value()) {
                taken.push((k.value().1, String::from_utf8_lossy(json).into_owned()));
            } else {
                taken.push((k.value().1, String::new()));
            }
        }
        if taken.is_empty() {
            st.batching = 0;
            st.batch_opened_ms = None;
            return Ok(());
        }
        for (seq, _) in &taken {
            self.batching.remove((id.as_str(), *seq))?;
        }
        let raws: Vec<Box<RawValue>> = taken
            .iter()
            .filter_map(|(_, json)| RawValue::from_string(json.clone()).ok())
            .collect();
        let refs: Vec<&RawValue> = raws.iter().map(|r| r.as_ref()).collect();
        let body = crate::events::batch_body(gateway, now_ms, &refs);
        let n = taken.len() as u64;
        st.batching = st.batching.saturating_sub(n);
        st.pending = st.pending.saturating_sub(n);
        let sequences = taken.iter().map(|(s, _)| *s).collect();
        let meta = MessageMeta::fresh(crate::events::new_id("msg"), now_ms, sequences);
        self.push_message(st, meta, body.as_bytes())?;
        st.batch_opened_ms = if st.batching > 0 {
            let mut range = self
                .batching
                .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?;
            match range.next() {
                Some(entry) => decode_timed(entry?.1.value()).map(|(ms, _)| ms),
                None => None,
            }
        } else {
            None
        };
        Ok(())
    }

    /// Move the whole queue (waiting batch events formed into batches first) to the dead
    /// letters, except `skip` (already handled by the caller).
    pub fn drain(
        &mut self,
        st: &mut SubState,
        reason: &str,
        now_ms: u64,
        options: &Options,
    ) -> Result<(), StoreError> {
        while st.batching > 0 {
            let before = st.batching;
            self.form_batch(st, now_ms, &options.gateway)?;
            if st.batching >= before {
                break;
            }
        }
        let id = st.sub.id.clone();
        let positions: Vec<u64> = self
            .messages
            .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?
            .filter_map(|e| e.ok().map(|(k, _)| k.value().1))
            .collect();
        for position in positions {
            self.bury_message(st, position, reason, now_ms, options)?;
        }
        st.coalesce.clear();
        Ok(())
    }
}

/// The static name of a dead-letter reason, for metric labels.
fn reason_name(reason: &str) -> &'static str {
    ["retry-budget", "gone", "disabled", "backlog-overflow"]
        .into_iter()
        .find(|r| *r == reason)
        .unwrap_or("other")
}
