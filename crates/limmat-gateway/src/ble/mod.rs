//! The BLE layer between the backend and HTTP (`gateway-api.md` §2.4–§2.6). The backend trait
//! is one device-shaped interface; HTTP has many concurrent clients. This layer makes them meet
//! without competing for the radio:
//!
//! - [`ScanHub`]: one scan on the backend, fanned out to list requests, SSE streams and the
//!   beacon pipeline (§2.4);
//! - [`NotifyHub`]: one subscription per (node, characteristic, kind), shared by every SSE
//!   stream and the cached value (§2.6);
//! - connection attempts, serialised per adapter with the queueing time counted toward the
//!   timeout (§2.5), and the set of connected nodes the lists need.

pub mod notify;
pub mod scan;

pub use notify::{NotifyEvent, NotifyHub};
pub use scan::ScanHub;

use crate::address::Address;
use crate::backend::{Backend, BleError, ConnectionEvent, Report};
use futures::StreamExt;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The timeout ran out, queueing included (§2.5: `504 connect-timeout`).
    Timeout,
    /// Anything else the backend said.
    Ble(BleError),
}

/// The BLE layer: the backend and the hubs that share it.
pub struct Ble {
    backend: Arc<dyn Backend>,
    scan: Arc<ScanHub>,
    notify: Arc<NotifyHub>,
    /// Serialises connection attempts on the adapter (§2.5).
    connecting: tokio::sync::Mutex<()>,
    /// The nodes with a link, from our own attempts and the backend's connection events.
    connected: Mutex<BTreeSet<Address>>,
    /// Links coming up and going down, and our own connect timeouts (`connect-timeout`).
    events: broadcast::Sender<ConnectionEvent>,
}

impl Ble {
    /// Start the scan and the connection watcher; both stop when `shutdown` is cancelled.
    pub async fn start(backend: Arc<dyn Backend>, shutdown: CancellationToken) -> Arc<Ble> {
        let info = backend.info().await;
        let scan = ScanHub::start(
            backend.clone(),
            info.capabilities.passive_scan,
            shutdown.clone(),
        );
        let notify = NotifyHub::new(backend.clone(), shutdown.clone());
        let (events, _) = broadcast::channel(64);
        let ble = Arc::new(Ble {
            backend,
            scan,
            notify,
            connecting: tokio::sync::Mutex::new(()),
            connected: Mutex::new(BTreeSet::new()),
            events,
        });
        tokio::spawn(watch_links(Arc::downgrade(&ble), shutdown));
        ble
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }


    pub fn scan(&self) -> &Arc<ScanHub> {
        &self.scan
    }

    pub fn notify(&self) -> &Arc<NotifyHub> {
        &self.notify
    }

    /// Every advertisement report of the one scan (for the beacon pipeline).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Report>> {
        self.scan.subscribe()
    }

    /// Connection events, from now on.
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }

    /// The nodes connected now, sorted.
    pub fn connected(&self) -> Vec<Address> {
        self.links().iter().copied().collect()
    }

    pub fn is_connected(&self, address: Address) -> bool {
        self.links().contains(&address)
    }

    /// Connect within `timeout`, time spent queued behind other attempts included.
    pub async fn connect(&self, address: Address, timeout: Duration) -> Result<(), ConnectError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let attempt = async {
            let _turn = self.connecting.lock().await;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.backend.connect(address, left).await
        };
        let outcome = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(BleError::Timeout)) | Err(_) => Err(ConnectError::Timeout),
            Ok(Err(e)) => Err(ConnectError::Ble(e)),
        };
        match &outcome {
            Ok(()) => self.linked(address, true, "requested"),
            Err(ConnectError::Timeout) => {
                let _ = self.events.send(ConnectionEvent {
                    address,
                    connected: false,
                    reason: "connect-timeout".into(),
                });
            }
            Err(ConnectError::Ble(_)) => {}
        }
        outcome
    }

    /// Disconnect (idempotent); open notification streams of the node end.
    pub async fn disconnect(&self, address: Address) -> Result<(), BleError> {
        self.backend.disconnect(address).await?;
        self.linked(address, false, "requested");
        self.notify.node_lost(address, "requested").await;
        Ok(())
    }

    /// Record a link change; an event goes out only when it is one.
    fn linked(&self, address: Address, up: bool, reason: &str) {
        let changed = {
            let mut links = self.links();
            if up {
                links.insert(address)
            } else {
                links.remove(&address)
            }
        };
        if changed {
            let _ = self.events.send(ConnectionEvent {
                address,
                connected: up,
                reason: reason.into(),
            });
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, BTreeSet<Address>> {
        self.connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Follow the backend's connection events: a link loss ends the node's notification streams.
async fn watch_links(ble: std::sync::Weak<Ble>, shutdown: CancellationToken) {
    let Some(mut events) = ble.upgrade().map(|b| b.backend.connection_events()) else {
        return;
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        let (Some(event), Some(ble)) = (event, ble.upgrade()) else {
            return;
        };
        ble.linked(event.address, event.connected, &event.reason);
        if !event.connected {
            ble.notify.node_lost(event.address, &event.reason).await;
        }
    }
}
