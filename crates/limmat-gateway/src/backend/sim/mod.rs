//! The simulated BLE backend (`gateway-api.md` §6.2), the default for `limmat demo`, tests
//! and benchmarks: a deterministic world of beacons and connectable peripherals behind the
//! same [`Backend`] trait as BlueZ.
//!
//! - [`config`]: the `[sim]` section; `world`: the devices it describes (the six of the
//!   spec by default), and all its checks.
//! - `clock`: simulated time on the tokio clock, and the seeded per-device PRNGs.
//! - `radio`: one task that drives every advertiser from a timer heap and fans reports out
//!   to the scan streams; `report`: reports decoded from the raw AD they carry.
//! - `peripheral`: links, subscriptions and CCCDs; `gatt`: the "Limmat HRM" database.
//!
//! Connection attempts are serialised per adapter, as on a real controller: an attempt waits
//! for the one before it, and that wait counts toward its timeout. A device that never accepts
//! (the "Limmat Ghost", any beacon) holds the adapter until its attempt times out. Connection
//! events carry the reasons `requested` (connect or disconnect), `link-loss`
//! (`drop_link_after_s`), `timeout` (`connected: false` after a failed attempt) and
//! `backend-stopped`.
//!
//! Device behaviour (advertising intervals, presence cycles, connect delays, link loss, GATT
//! timers) runs on simulated time, `sim.time_scale` times real time. Receive times are real:
//! `Report.at` is the tokio instant the frame was due (`Instant::now()` under paused time, and
//! not skewed when the task runs late), `Report.received` the epoch of
//! [`SimBackend::with_epoch`] plus the tokio time since start. Scanning is the same in both
//! modes (everything is in the advertisement, nothing in scan responses); `sim.passive_scan =
//! false` only makes `scan(Passive)` refuse. Nodes never expire: `node()` keeps the latest
//! report of a device that went absent.

pub mod config;

mod clock;
mod gatt;
mod peripheral;
mod radio;
mod report;
mod world;

pub use config::{BeaconConfig, PeripheralConfig, RssiConfig, SimConfig};

use crate::address::Address;
use crate::backend::{
    Backend, BleError, Capabilities, Characteristic, ConnectionEvent, Descriptor, Handle, Info,
    NodeState, Notification, NotifyKind, Report, ScanMode, Service, WriteMode,
};
use crate::config_value::ConfigError;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use peripheral::Peripheral;
use radio::{Advertiser, Air};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use world::World;

/// The simulated adapter's own address.
const ADAPTER: Address = Address([0xc0, 0xff, 0xee, 0xff, 0xff, 0x00]);
/// Connection events a slow listener may lag behind before it skips some.
const EVENT_BUFFER: usize = 256;

/// The simulator. Create it inside a tokio runtime; dropping it stops its task, ends every
/// scan and subscription stream and cancels the link-loss timers.
pub struct SimBackend {
    clock: clock::SimClock,
    air: Arc<Mutex<Air>>,
    peripherals: Vec<Arc<Peripheral>>,
    devices: HashMap<Address, Device>,
    passive_scan: bool,
    /// Held by the attempt in progress: attempts are serialised per adapter.
    adapter: tokio::sync::Mutex<()>,
    events: broadcast::Sender<ConnectionEvent>,
    cancel: CancellationToken,
}

/// What an address is in the world.
#[derive(Debug, Clone, Copy)]
enum Device {
    /// Non-connectable: connection attempts time out.
    Beacon,
    /// Index into `peripherals`.
    Peripheral(usize),
}

impl SimBackend {
    /// The world of `config`, with wall-clock receive times counted from now.
    pub fn new(config: &SimConfig) -> Result<SimBackend, ConfigError> {
        SimBackend::with_epoch(config, SystemTime::now())
    }

    /// The world of `config`, with `Report.received` = `epoch` + the tokio time elapsed since
    /// this call: with a fixed epoch and paused time, runs are byte-identical.
    pub fn with_epoch(config: &SimConfig, epoch: SystemTime) -> Result<SimBackend, ConfigError> {
        let world = World::build(config)?;
        let clock = clock::SimClock {
            start: tokio::time::Instant::now(),
            epoch,
            scale: config.time_scale,
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let mut devices = HashMap::with_capacity(world.beacons.len() + world.peripherals.len());
        let mut advertisers = Vec::with_capacity(devices.capacity());
        for spec in &world.beacons {
            devices.insert(spec.address, Device::Beacon);
            advertisers.push(Advertiser::beacon(spec, config.seed));
        }
        let mut peripherals = Vec::with_capacity(world.peripherals.len());
        for (i, spec) in world.peripherals.into_iter().enumerate() {
            devices.insert(spec.address, Device::Peripheral(i));
            advertisers.push(Advertiser::peripheral(&spec, config.seed));
            let rng = clock::rng(config.seed, spec.address, clock::Stream::Gatt);
            peripherals.push(Arc::new(Peripheral::new(spec, clock, rng, events.clone())));
        }
        let air = Arc::new(Mutex::new(Air::default()));
        let cancel = CancellationToken::new();
        tokio::spawn(radio::drive(
            clock,
            air.clone(),
            advertisers,
            peripherals.clone(),
            cancel.clone(),
        ));
        Ok(SimBackend {
            clock,
            air,
            peripherals,
            devices,
            passive_scan: config.passive_scan,
            adapter: tokio::sync::Mutex::new(()),
            events,
            cancel,
        })
    }

    fn air(&self) -> MutexGuard<'_, Air> {
        self.air.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn device(&self, address: Address) -> Result<Device, BleError> {
        self.devices
            .get(&address)
            .copied()
            .ok_or(BleError::NotFound)
    }

    /// The peripheral at `address`: `NotFound` if there is no such device, `NotConnected` for a
    /// beacon (it never has a link).
    fn peripheral(&self, address: Address) -> Result<&Arc<Peripheral>, BleError> {
        match self.device(address)? {
            Device::Peripheral(i) => self.peripherals.get(i).ok_or(BleError::NotFound),
            Device::Beacon => Err(BleError::NotConnected),
        }
    }

    /// One attempt, from the queue to the link.
    async fn attempt(&self, device: Device) -> Result<(), BleError> {
        let peripheral = match device {
            Device::Peripheral(i) => self.peripherals.get(i),
            Device::Beacon => None,
        };
        if peripheral.is_some_and(|p| p.connected()) {
            return Ok(());
        }
        let _turn = self.adapter.lock().await;
        let Some(p) = peripheral else {
            // A beacon never answers a connection request.
            return std::future::pending().await;
        };
        if p.connected() {
            return Ok(());
        }
        tokio::time::sleep(self.clock.real(p.spec.connect_delay_ms)).await;
        if p.spec.unreachable {
            return std::future::pending().await;
        }
        p.link_up(&self.cancel);
        Ok(())
    }
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.air().scanners.clear();
        for p in &self.peripherals {
            p.link_down("backend-stopped");
        }
    }
}

#[async_trait]
impl Backend for SimBackend {
    async fn info(&self) -> Info {
        Info {
            backend: "sim",
            address: ADAPTER,
            name: "sim0".into(),
            powered: true,
            capabilities: Capabilities {
                passive_scan: self.passive_scan,
                conn_params: false,
                pairing: false,
                read_by_uuid: false,
                read_multiple: false,
                reliable_write: true,
            },
        }
    }

    async fn scan(&self, mode: ScanMode) -> Result<BoxStream<'static, Report>, BleError> {
        if mode == ScanMode::Passive && !self.passive_scan {
            return Err(BleError::Unsupported("passive scanning"));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(radio::SCAN_BUFFER);
        self.air().scanners.push(tx);
        Ok(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
    }

    async fn node(&self, address: Address) -> Result<NodeState, BleError> {
        let device = self.device(address)?;
        let report = self.air().latest.get(&address).cloned();
        let peripheral = match device {
            Device::Peripheral(i) => self.peripherals.get(i),
            Device::Beacon => None,
        };
        let connected = peripheral.is_some_and(|p| p.connected());
        if report.is_none() && !connected {
            return Err(BleError::NotFound);
        }
        let name = report
            .as_ref()
            .and_then(|r| r.name.clone())
            .or_else(|| peripheral.map(|p| p.spec.name.clone()));
        Ok(NodeState {
            report,
            name,
            connected,
        })
    }

    async fn connect(&self, address: Address, timeout: Duration) -> Result<(), BleError> {
        let device = self.device(address)?;
        match tokio::time::timeout(timeout, self.attempt(device)).await {
            Ok(result) => result,
            Err(_) => {
                let _ = self.events.send(ConnectionEvent {
                    address,
                    connected: false,
                    reason: "timeout".into(),
                });
                Err(BleError::Timeout)
            }
        }
    }

    async fn disconnect(&self, address: Address) -> Result<(), BleError> {
        match self.peripheral(address) {
            Ok(p) => {
                p.link_down("requested");
                Ok(())
            }
            Err(BleError::NotConnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn connection_events(&self) -> BoxStream<'static, ConnectionEvent> {
        let rx = self.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "sim: a connection-event listener lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    async fn services(&self, address: Address) -> Result<Vec<Service>, BleError> {
        self.peripheral(address)?.services()
    }

    async fn characteristics(
        &self,
        address: Address,
        service: Option<Handle>,
    ) -> Result<Vec<Characteristic>, BleError> {
        self.peripheral(address)?.characteristics(service)
    }

    async fn descriptors(
        &self,
        address: Address,
        characteristic: Option<Handle>,
    ) -> Result<Vec<Descriptor>, BleError> {
        self.peripheral(address)?.descriptors(characteristic)
    }

    async fn read(&self, address: Address, handle: Handle) -> Result<Vec<u8>, BleError> {
        self.peripheral(address)?.read(handle)
    }

    async fn write(
        &self,
        address: Address,
        handle: Handle,
        value: &[u8],
        mode: WriteMode,
    ) -> Result<(), BleError> {
        self.peripheral(address)?.write(handle, value, mode)
    }

    async fn subscribe(
        &self,
        address: Address,
        characteristic: Handle,
        kind: NotifyKind,
    ) -> Result<BoxStream<'static, Notification>, BleError> {
        Ok(self
            .peripheral(address)?
            .subscribe(characteristic, kind)?
            .boxed())
    }
}
