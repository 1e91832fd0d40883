//! Subscriptions (§3.7): create (bounded by `webhooks.max_subscriptions`), read with their
//! delivery status, change, and delete with their queue and dead letters. Every change is one
//! durable transaction; a failed one leaves memory untouched.

use super::queue::Queues;
use super::records::Subscription;
use super::{BATCHING, DEAD, MESSAGES, SUBSCRIPTIONS, Store, StoreError, SubState};
use redb::ReadableTable;

/// A subscription with its live queue figures.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    pub sub: Subscription,
    /// Events queued.
    pub pending: u64,
    /// The message being attempted.
    pub in_flight: Option<String>,
    /// Dead letters held.
    pub dead_letters: u64,
}

impl SubState {
    fn view(&self) -> SubscriptionView {
        SubscriptionView {
            sub: self.sub.clone(),
            pending: self.pending,
            in_flight: self.in_flight.as_ref().map(|(_, id)| id.clone()),
            dead_letters: self.dead,
        }
    }
}

impl Store {
    /// Persist a new subscription. `Limit` when `max_subscriptions` exist already.
    pub fn create_subscription(&self, sub: Subscription) -> Result<SubscriptionView, StoreError> {
        let max = self.options().max_subscriptions;
        let mut cache = self.cache();
        if cache.subs.len() >= max {
            return Err(StoreError::Limit(max));
        }
        let st = SubState::new(sub);
        let txn = self.begin(redb::Durability::Immediate)?;
        Queues::open(&txn)?.save_sub(&st)?;
        self.commit(txn)?;
        let view = st.view();
        cache.subs.insert(st.sub.id.clone(), st);
        Ok(view)
    }

    pub fn subscription(&self, id: &str) -> Option<SubscriptionView> {
        self.cache().subs.get(id).map(SubState::view)
    }

    /// All subscriptions, by id (ULIDs sort by creation).
    pub fn subscriptions(&self) -> Vec<SubscriptionView> {
        self.cache().subs.values().map(SubState::view).collect()
    }

    /// Change a subscription. Re-enabling clears the failure state and resumes with new events
    /// only; disabling (`manual`) moves the queue to the dead letters (`disabled`).
    pub fn update_subscription(
        &self,
        id: &str,
        now_ms: u64,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<SubscriptionView, StoreError> {
        let options = self.options().clone();
        self.with_sub(id, redb::Durability::Immediate, |queues, st| {
            let was_enabled = st.sub.enabled();
            change(&mut st.sub);
            let enabled = st.sub.enabled();
            if !was_enabled && enabled {
                let d = &mut st.sub.delivery;
                d.consecutive_failures = 0;
                d.failing_since_ms = None;
                d.next_attempt_ms = None;
            } else if was_enabled && !enabled {
                queues.drain(st, "disabled", now_ms, &options)?;
            }
            Ok(st.view())
        })
    }

    /// Delete a subscription, its queue and its dead letters.
    pub fn delete_subscription(&self, id: &str) -> Result<(), StoreError> {
        let mut cache = self.cache();
        if !cache.subs.contains_key(id) {
            return Err(StoreError::NoSubscription);
        }
        let txn = self.begin(redb::Durability::Immediate)?;
        {
            txn.open_table(SUBSCRIPTIONS)?.remove(id)?;
            for table in [MESSAGES, BATCHING, DEAD] {
                let mut t = txn.open_table(table)?;
                let keys: Vec<u64> = t
                    .range((id, 0)..=(id, u64::MAX))?
                    .filter_map(|e| e.ok().map(|(k, _)| k.value().1))
                    .collect();
                for k in keys {
                    t.remove((id, k))?;
                }
            }
        }
        self.commit(txn)?;
        cache.subs.remove(id);
        Ok(())
    }
}
