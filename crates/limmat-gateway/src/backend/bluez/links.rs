//! Connections (`gateway-api.md` §2.5, §6.3): connect with a timeout that includes the time
//! spent queued (attempts are serialised per adapter, one at a time, as BlueZ and most
//! controllers handle them best), GATT discovery as part of connecting, idempotent disconnect,
//! and the link events. Each connected node has a watcher task that notices the link going
//! down, drops the node's attribute table and reports `requested` or `link-loss`.

use super::convert;
use super::error::{Op, map};
use super::gatt::{self, Table};
use super::link::link_down;
use crate::address::Address;
use crate::backend::{BleError, ConnectionEvent};
use bluer::{Adapter, Device};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Link events buffered per `connection_events` subscriber.
const EVENTS: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection state of one adapter.
pub struct Links {
    adapter: Adapter,
    /// Held for the whole of an attempt: attempts queue here.
    queue: tokio::sync::Mutex<()>,
    tables: Mutex<HashMap<Address, Arc<Table>>>,
    watchers: Mutex<HashMap<Address, JoinHandle<()>>>,
    /// Nodes whose disconnection this backend asked for.
    requested: Mutex<HashSet<Address>>,
    events: broadcast::Sender<ConnectionEvent>,
}

impl Drop for Links {
    fn drop(&mut self) {
        for (_, watcher) in lock(&self.watchers).drain() {
            watcher.abort();
        }
    }
}

impl Links {
    /// No links yet, on `adapter`.
    pub fn new(adapter: Adapter) -> Arc<Links> {
        Arc::new(Links {
            adapter,
            queue: tokio::sync::Mutex::new(()),
            tables: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            requested: Mutex::new(HashSet::new()),
            events: broadcast::channel(EVENTS).0,
        })
    }

    fn device(&self, address: Address) -> Result<Device, BleError> {
        self.adapter
            .device(convert::bluer_address(address))
            .map_err(|e| map(&e, Op::Other))
    }

    fn emit(&self, address: Address, connected: bool, reason: &str) {
        // No subscriber is not an error.
        let _ = self.events.send(ConnectionEvent {
            address,
            connected,
            reason: reason.into(),
        });
    }

    /// Connects and reads the attribute table within `timeout`, queueing included.
    pub async fn connect(
        self: &Arc<Self>,
        address: Address,
        timeout: Duration,
    ) -> Result<(), BleError> {
        let device = self.device(address)?;
        let dialled = Arc::new(AtomicBool::new(false));
        let attempt = self.attempt(&device, address, dialled.clone());
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                if dialled.load(Ordering::SeqCst) {
                    // BlueZ cancels a pending Connect on Disconnect.
                    tokio::spawn(async move {
                        let _ = device.disconnect().await;
                    });
                }
                self.emit(address, false, "connect-timeout");
                Err(BleError::Timeout)
            }
        }
    }

    async fn attempt(
        self: &Arc<Self>,
        device: &Device,
        address: Address,
        dialled: Arc<AtomicBool>,
    ) -> Result<(), BleError> {
        let _turn = self.queue.lock().await;
        // Fails with `NotFound` for a device BlueZ does not know (never seen, or dropped).
        let connected = device
            .is_connected()
            .await
            .map_err(|e| map(&e, Op::Connect))?;
        if connected && lock(&self.tables).contains_key(&address) {
            return Ok(());
        }
        // Watch before connecting, so the watcher cannot miss a quick drop.
        let events = device.events().await.map_err(|e| map(&e, Op::Connect))?;
        if !connected {
            dialled.store(true, Ordering::SeqCst);
            match device.connect().await {
                // Another BlueZ client connected it meanwhile: as good as ours.
                Err(e) if e.kind == bluer::ErrorKind::AlreadyConnected => {}
                result => result.map_err(|e| map(&e, Op::Connect))?,
            }
        }
        let table = gatt::discover(device).await.map_err(|e| match e {
            BleError::LinkLost => BleError::Timeout,
            other => other,
        })?;
        lock(&self.tables).insert(address, Arc::new(table));
        let links = Arc::downgrade(self);
        let watcher = tokio::spawn(async move {
            link_down(events).await;
            if let Some(links) = links.upgrade() {
                links.went_down(address);
            }
        });
        if let Some(old) = lock(&self.watchers).insert(address, watcher) {
            old.abort();
        }
        self.emit(address, true, "requested");
        Ok(())
    }

    /// The link went down (or the device went away).
    fn went_down(&self, address: Address) {
        lock(&self.tables).remove(&address);
        lock(&self.watchers).remove(&address);
        let reason = if lock(&self.requested).remove(&address) {
            "requested"
        } else {
            "link-loss"
        };
        self.emit(address, false, reason);
    }

    /// Disconnects; a node that is not connected is a success, an unknown one `NotFound`.
    pub async fn disconnect(&self, address: Address) -> Result<(), BleError> {
        let device = self.device(address)?;
        let connected = device
            .is_connected()
            .await
            .map_err(|e| map(&e, Op::Other))?;
        lock(&self.tables).remove(&address);
        if !connected {
            return Ok(());
        }
        lock(&self.requested).insert(address);
        device.disconnect().await.map_err(|e| map(&e, Op::Other))
    }

    /// The attribute table of a connected node: `NotConnected` otherwise. A node connected by
    /// another BlueZ client gets its table read here.
    pub async fn table(&self, address: Address) -> Result<(Device, Arc<Table>), BleError> {
        let device = self.device(address)?;
        let connected = device
            .is_connected()
            .await
            .map_err(|e| map(&e, Op::Other))?;
        if !connected {
            lock(&self.tables).remove(&address);
            return Err(BleError::NotConnected);
        }
        if let Some(table) = lock(&self.tables).get(&address) {
            return Ok((device, table.clone()));
        }
        let table = Arc::new(gatt::discover(&device).await?);
        lock(&self.tables).insert(address, table.clone());
        Ok((device, table))
    }

    /// Link events from now on; a subscriber that falls behind skips what it missed.
    pub fn events(&self) -> BoxStream<'static, ConnectionEvent> {
        let rx = self.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}
