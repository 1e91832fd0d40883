//! The notification hub (`gateway-api.md` §2.6): one backend subscription per (node,
//! characteristic, kind), shared by every SSE stream and the cached value, because a device has
//! one CCCD per characteristic and the API keeps no per-client state.
//!
//! A subscription is on while a stream is open or a client pinned it (`PUT …?notify=1`, or a
//! CCCD write of `0100`/`0200`); it goes off when the last stream closes and nobody pinned it.
//! When the backend's stream ends, the link is gone: every open stream gets
//! [`NotifyEvent::Disconnected`] and the subscription is forgotten.

use crate::address::Address;
use crate::backend::{Backend, BleError, Handle, Notification, NotifyKind};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::SystemTime;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One subscription's identity.
pub type Key = (Address, Handle, NotifyKind);

/// What a stream receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A value; `id` counts per subscription, from 1.
    Value {
        id: u64,
        value: Vec<u8>,
        received: SystemTime,
    },
    /// The link dropped (`link-loss`) or a client disconnected the node (`requested`); the
    /// stream ends.
    Disconnected { reason: Arc<str> },
}

/// The latest value of a subscription (`None` until the first one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cached {
    pub value: Option<(Vec<u8>, SystemTime)>,
}

/// One subscription's feed of values: the events its streams receive and the latest value.
struct ValueFeed {
    events: broadcast::Sender<NotifyEvent>,
    /// The values so far (the last event id) and the latest.
    latest: Mutex<(u64, Cached)>,
}

struct Sub {
    generation: u64,
    shared: Arc<ValueFeed>,
    streams: usize,
    pinned: bool,
    stop: CancellationToken,
}

/// The notification hub.
pub struct NotifyHub {
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
    entries: tokio::sync::Mutex<HashMap<Key, Sub>>,
    generations: AtomicU64,
}

/// An open stream's receiving end; dropping it releases the subscription.
pub struct NotifyStream {
    pub events: broadcast::Receiver<NotifyEvent>,
    hub: Weak<NotifyHub>,
    key: Key,
    generation: u64,
}

impl Drop for NotifyStream {
    fn drop(&mut self) {
        let (Some(hub), Ok(runtime)) = (self.hub.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (key, generation) = (self.key, self.generation);
        runtime.spawn(async move { hub.release(key, generation).await });
    }
}

impl NotifyHub {
    pub fn new(backend: Arc<dyn Backend>, shutdown: CancellationToken) -> Arc<NotifyHub> {
        Arc::new(NotifyHub {
            backend,
            shutdown,
            entries: tokio::sync::Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
        })
    }

    /// Open a stream, turning the subscription on if it is off.
    pub async fn open(self: &Arc<Self>, key: Key) -> Result<NotifyStream, BleError> {
        let mut entries = self.entries.lock().await;
        let entry = self.ensure(&mut entries, key).await?;
        entry.streams += 1;
        Ok(NotifyStream {
            events: entry.shared.events.subscribe(),
            hub: Arc::downgrade(self),
            key,
            generation: entry.generation,
        })
    }

    /// `PUT …?notify=1|0`: pin the subscription on, or unpin it (it goes off if no stream is
    /// open).
    pub async fn pin(self: &Arc<Self>, key: Key, on: bool) -> Result<(), BleError> {
        let mut entries = self.entries.lock().await;
        if on {
            self.ensure(&mut entries, key).await?.pinned = true;
        } else if let Some(entry) = entries.get_mut(&key) {
            entry.pinned = false;
            if entry.streams == 0 {
                stop(&mut entries, &key);
            }
        }
        Ok(())
    }

    /// The kind that is on for a characteristic (notify wins if both are).
    pub async fn notifying(&self, address: Address, handle: Handle) -> Option<NotifyKind> {
        let entries = self.entries.lock().await;
        [NotifyKind::Notify, NotifyKind::Indicate]
            .into_iter()
            .find(|kind| entries.contains_key(&(address, handle, *kind)))
    }

    /// The cached value, or `None` while the subscription is off.
    pub async fn cached(&self, key: Key) -> Option<Cached> {
        let entries = self.entries.lock().await;
        let entry = entries.get(&key)?;
        let latest = entry
            .shared
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(latest.1.clone())
    }

    /// The node's link is gone: end its streams and forget its subscriptions.
    pub async fn node_lost(&self, address: Address, reason: &str) {
        let reason: Arc<str> = reason.into();
        let mut entries = self.entries.lock().await;
        let keys: Vec<Key> = entries.keys().filter(|k| k.0 == address).copied().collect();
        for key in keys {
            if let Some(entry) = entries.get(&key) {
                let _ = entry.shared.events.send(NotifyEvent::Disconnected {
                    reason: reason.clone(),
                });
            }
            stop(&mut entries, &key);
        }
    }

    async fn ensure<'a>(
        self: &Arc<Self>,
        entries: &'a mut HashMap<Key, Sub>,
        key: Key,
    ) -> Result<&'a mut Sub, BleError> {
        use std::collections::hash_map::Entry;
        match entries.entry(key) {
            Entry::Occupied(occupied) => Ok(occupied.into_mut()),
            Entry::Vacant(vacant) => {
                let (address, handle, kind) = key;
                let source = self.backend.subscribe(address, handle, kind).await?;
                let generation = self.generations.fetch_add(1, Ordering::Relaxed);
                let shared = Arc::new(ValueFeed {
                    events: broadcast::channel(256).0,
                    latest: Mutex::new((0, Cached::default())),
                });
                let stop = self.shutdown.child_token();
                tokio::spawn(pump(
                    Arc::downgrade(self),
                    key,
                    generation,
                    source,
                    shared.clone(),
                    stop.clone(),
                ));
                Ok(vacant.insert(Sub {
                    generation,
                    shared,
                    streams: 0,
                    pinned: false,
                    stop,
                }))
            }
        }
    }

    async fn release(&self, key: Key, generation: u64) {
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get_mut(&key) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        entry.streams = entry.streams.saturating_sub(1);
        if entry.streams == 0 && !entry.pinned {
            stop(&mut entries, &key);
        }
    }

    /// The backend's stream ended on its own: the link is gone.
    async fn ended(&self, key: Key, generation: u64) {
        let mut entries = self.entries.lock().await;
        if entries
            .get(&key)
            .is_some_and(|e| e.generation == generation)
        {
            if let Some(entry) = entries.get(&key) {
                let _ = entry.shared.events.send(NotifyEvent::Disconnected {
                    reason: "link-loss".into(),
                });
            }
            stop(&mut entries, &key);
        }
    }
}

fn stop(entries: &mut HashMap<Key, Sub>, key: &Key) {
    if let Some(entry) = entries.remove(key) {
        entry.stop.cancel();
    }
}

/// Move values from the backend's stream to the subscribers and the cache; dropping the
/// backend's stream (on `stop`) turns the subscription off on the device.
async fn pump(
    hub: Weak<NotifyHub>,
    key: Key,
    generation: u64,
    mut source: BoxStream<'static, Notification>,
    shared: Arc<ValueFeed>,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = source.next() => next,
        };
        let Some(notification) = next else { break };
        let id = {
            let mut latest = shared.latest.lock().unwrap_or_else(PoisonError::into_inner);
            latest.0 += 1;
            latest.1.value = Some((notification.value.clone(), notification.received));
            latest.0
        };
        let _ = shared.events.send(NotifyEvent::Value {
            id,
            value: notification.value,
            received: notification.received,
        });
    }
    drop(source);
    if let Some(hub) = hub.upgrade() {
        hub.ended(key, generation).await;
    }
}
