//! One simulated connectable device: its link (up or down, with a generation number), the
//! subscriptions open on it, and its GATT database (`gateway-api.md` §6.2).
//!
//! Subscriptions are channels held by the link, so a link loss drops them all and every
//! subscription stream of the node ends (the API then sends `event: disconnected`). Dropping a
//! stream removes only its own entry. A CCCD reads as the OR of the open subscriptions on its
//! characteristic (`0100` notify, `0200` indicate, `0000` none) and of what was written to it
//! directly; like a bonded-less real device, it resets when the link drops.

use super::clock::SimClock;
use super::gatt::{self, Gatt};
use super::world::PeripheralSpec;
use crate::backend::{
    BleError, Characteristic, ConnectionEvent, Descriptor, Handle, Notification, NotifyKind,
    Service, WriteMode,
};
use futures::Stream;
use rand::rngs::SmallRng;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// How many values a slow subscriber may lag before values are dropped (as a real link drops
/// notifications a host does not take).
const SUBSCRIPTION_BUFFER: usize = 64;

pub(super) struct Peripheral {
    pub spec: PeripheralSpec,
    clock: SimClock,
    events: broadcast::Sender<ConnectionEvent>,
    state: Mutex<State>,
}

struct State {
    link: Option<Link>,
    /// Link generations so far; a stale timer or stream guard compares against it.
    generation: u64,
    gatt: Gatt,
}

struct Link {
    generation: u64,
    subscriptions: Vec<Subscription>,
    next_id: u64,
    /// CCCD values written directly, by characteristic.
    written: HashMap<Handle, u16>,
    /// The injected link loss (`drop_link_after_s`), cancelled when the link goes down first.
    dropper: Option<AbortHandle>,
}

struct Subscription {
    id: u64,
    characteristic: Handle,
    kind: NotifyKind,
    tx: mpsc::Sender<Notification>,
}

impl Peripheral {
    pub fn new(
        spec: PeripheralSpec,
        clock: SimClock,
        rng: SmallRng,
        events: broadcast::Sender<ConnectionEvent>,
    ) -> Peripheral {
        Peripheral {
            spec,
            clock,
            events,
            state: Mutex::new(State {
                link: None,
                generation: 0,
                gatt: Gatt::new(rng),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than stopping the simulator would, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn connected(&self) -> bool {
        self.state().link.is_some()
    }

    /// Brings the link up (idempotent) and arms the injected link loss.
    pub fn link_up(self: &Arc<Self>, cancel: &CancellationToken) {
        let generation = {
            let mut state = self.state();
            if state.link.is_some() {
                return;
            }
            state.generation += 1;
            let generation = state.generation;
            let dropper = self.spec.drop_link_after_ms.map(|after| {
                let me = Arc::downgrade(self);
                let cancel = cancel.clone();
                let delay = self.clock.real(after);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {
                            if let Some(p) = me.upgrade() {
                                p.link_down_if(generation, "link-loss");
                            }
                        }
                    }
                })
                .abort_handle()
            });
            state.link = Some(Link {
                generation,
                subscriptions: Vec::new(),
                next_id: 0,
                written: HashMap::new(),
                dropper,
            });
            generation
        };
        tracing::debug!(address = %self.spec.address, generation, "sim: link up");
        self.event(true, "requested");
    }

    /// Takes the link down (idempotent); every subscription stream ends. Whether it was up.
    pub fn link_down(&self, reason: &str) -> bool {
        let link = self.state().link.take();
        self.finish(link, reason)
    }

    /// Takes the link down if it is still the generation a timer was armed for.
    fn link_down_if(&self, generation: u64, reason: &str) {
        let link = {
            let mut state = self.state();
            match &state.link {
                Some(link) if link.generation == generation => state.link.take(),
                _ => None,
            }
        };
        self.finish(link, reason);
    }

    fn finish(&self, link: Option<Link>, reason: &str) -> bool {
        let Some(link) = link else {
            return false;
        };
        if let Some(dropper) = &link.dropper {
            dropper.abort();
        }
        // Dropping the link drops every subscription's sender: the streams end.
        drop(link);
        tracing::debug!(address = %self.spec.address, reason, "sim: link down");
        self.event(false, reason);
        true
    }

    fn event(&self, connected: bool, reason: &str) {
        // No receiver is fine: nobody listens to connection events.
        let _ = self.events.send(ConnectionEvent {
            address: self.spec.address,
            connected,
            reason: reason.into(),
        });
    }

    /// Runs `f` on the link and the GATT state, or `NotConnected`.
    fn with_link<T>(
        &self,
        f: impl FnOnce(&mut Link, &mut Gatt) -> Result<T, BleError>,
    ) -> Result<T, BleError> {
        let mut state = self.state();
        let State { link, gatt, .. } = &mut *state;
        match link {
            Some(link) => f(link, gatt),
            None => Err(BleError::NotConnected),
        }
    }

    pub fn services(&self) -> Result<Vec<Service>, BleError> {
        self.with_link(|_, _| Ok(gatt::SERVICES.to_vec()))
    }

    pub fn characteristics(
        &self,
        service: Option<Handle>,
    ) -> Result<Vec<Characteristic>, BleError> {
        self.with_link(|_, _| {
            if let Some(s) = service
                && !gatt::SERVICES.iter().any(|x| x.handle == s)
            {
                return Err(BleError::NotFound);
            }
            Ok(gatt::CHARACTERISTICS
                .iter()
                .filter(|c| service.is_none_or(|s| c.service == s))
                .cloned()
                .collect())
        })
    }

    pub fn descriptors(&self, characteristic: Option<Handle>) -> Result<Vec<Descriptor>, BleError> {
        self.with_link(|_, _| {
            if let Some(c) = characteristic
                && gatt::characteristic_at(c).is_none()
            {
                return Err(BleError::NotFound);
            }
            Ok(gatt::DESCRIPTORS
                .iter()
                .filter(|d| characteristic.is_none_or(|c| d.characteristic == c))
                .cloned()
                .collect())
        })
    }

    pub fn read(&self, handle: Handle) -> Result<Vec<u8>, BleError> {
        let t = self.clock.now_ms();
        self.with_link(|link, gatt| match gatt::cccd_at(handle) {
            Some(c) => Ok(link.cccd(c.handle).to_le_bytes().to_vec()),
            None => gatt.read(handle, t),
        })
    }

    pub fn write(&self, handle: Handle, value: &[u8], mode: WriteMode) -> Result<(), BleError> {
        self.with_link(|link, gatt| match gatt::cccd_at(handle) {
            Some(c) => link.write_cccd(c, value),
            None => gatt.write(handle, value, mode),
        })
    }

    /// Opens a subscription stream on a characteristic.
    pub fn subscribe(
        self: &Arc<Self>,
        characteristic: Handle,
        kind: NotifyKind,
    ) -> Result<SubscriptionStream, BleError> {
        self.with_link(|link, _| {
            let c = gatt::characteristic_at(characteristic).ok_or(BleError::NotFound)?;
            if c.properties & gatt::notify_property(kind) == 0 {
                return Err(BleError::NotPermitted);
            }
            let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
            let id = link.next_id;
            link.next_id += 1;
            link.subscriptions.push(Subscription {
                id,
                characteristic,
                kind,
                tx,
            });
            Ok(SubscriptionStream {
                rx,
                peripheral: Arc::downgrade(self),
                generation: link.generation,
                id,
            })
        })
    }

    /// One simulated second passed: advance the GATT state and deliver what changed to the
    /// open subscriptions.
    pub fn tick(&self, t: u64) {
        let received = self.clock.wall(self.clock.instant_at(t));
        let mut state = self.state();
        let State { link, gatt, .. } = &mut *state;
        let values = gatt.tick(t);
        let Some(link) = link else {
            return;
        };
        for (handle, value) in values {
            for s in link
                .subscriptions
                .iter()
                .filter(|s| s.characteristic == handle)
            {
                // A full buffer loses the value; a closed one is removed by its guard.
                let _ = s.tx.try_send(Notification {
                    value: value.clone(),
                    received,
                });
            }
        }
    }

    fn unsubscribe(&self, generation: u64, id: u64) {
        let mut state = self.state();
        if let Some(link) = &mut state.link
            && link.generation == generation
        {
            link.subscriptions.retain(|s| s.id != id);
        }
    }
}

impl Link {
    /// The CCCD value of a characteristic: bit 0 notify, bit 1 indicate.
    fn cccd(&self, characteristic: Handle) -> u16 {
        let written = self.written.get(&characteristic).copied().unwrap_or(0);
        self.subscriptions
            .iter()
            .filter(|s| s.characteristic == characteristic)
            .fold(written, |bits, s| {
                bits | match s.kind {
                    NotifyKind::Notify => 0x0001,
                    NotifyKind::Indicate => 0x0002,
                }
            })
    }

    /// A direct CCCD write: two bytes, only the bits the characteristic's properties allow.
    fn write_cccd(&mut self, c: &Characteristic, value: &[u8]) -> Result<(), BleError> {
        let [lo, hi] = value else {
            // Invalid Attribute Value Length.
            return Err(BleError::Att(0x0d));
        };
        let bits = u16::from_le_bytes([*lo, *hi]);
        let mut allowed = 0;
        if c.properties & crate::backend::props::NOTIFY != 0 {
            allowed |= 0x0001;
        }
        if c.properties & crate::backend::props::INDICATE != 0 {
            allowed |= 0x0002;
        }
        if bits & !allowed != 0 {
            // CCCD Improperly Configured (Core Supplement, common profile error).
            return Err(BleError::Att(0xfd));
        }
        self.written.insert(c.handle, bits);
        Ok(())
    }
}

/// The values of one subscription. Ends when the link drops; dropping it unsubscribes.
pub(super) struct SubscriptionStream {
    rx: mpsc::Receiver<Notification>,
    peripheral: Weak<Peripheral>,
    generation: u64,
    id: u64,
}

impl Stream for SubscriptionStream {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        if let Some(p) = self.peripheral.upgrade() {
            p.unsubscribe(self.generation, self.id);
        }
    }
}
