//! The BlueZ backend (`gateway-api.md` §6.3): the [`Backend`] trait on Linux's Bluetooth daemon,
//! through `bluer` over the D-Bus system bus.
//!
//! ## Building and running
//!
//! The backend sits behind the gateway crate's cargo feature `bluez`
//! (`cargo build -p limmat-gateway --features bluez`, or `--features limmat-gateway/bluez` from
//! the workspace); the default build needs no system library. The feature links libdbus, so it
//! needs `libdbus-1-dev` and `pkg-config` at build time (`apt install libdbus-1-dev
//! pkg-config`). At run time it needs BlueZ ≥ 5.60 (or BlueZoo, below) on the system bus;
//! libdbus honours `DBUS_SYSTEM_BUS_ADDRESS`, which is how the tests point it at a private bus
//! (it reads the variable once, at the process's first system-bus connection).
//! [`BluezBackend::new`] answers `Unavailable` with the reason when there is no bus, no BlueZ or
//! no such adapter, and powers the adapter on if it is off.
//!
//! - **Discovery** ([`discovery`]): LE transport, `DuplicateData = true`; every change of RSSI,
//!   ManufacturerData or ServiceData is a sighting. Scanning is always active
//!   (`passiveScan = false`: `scan(Passive)` answers `Unsupported`). Reports carry no raw AD;
//!   [`ad::reconstruct_ad`] rebuilds it in the order of §2.7.
//! - **GATT** ([`gatt`]): handles are bluer's attribute ids (BlueZ's ATT handles), flags become
//!   the property bitmask, `0x1800`/`0x1801` are hidden. Reliable writes are single-handle.
//! - **Connections** ([`links`]): serialised per adapter, the timeout counting the queue;
//!   notification streams end when the link drops ([`link`]).
//! - **Errors** ([`error`]): BlueZ's D-Bus errors become [`BleError`]s, with the ATT code
//!   recovered where BlueZ keeps it.
//! - BlueZ drops temporary devices about 30 s after it last saw them; such a node is `NotFound`
//!   until it is heard again.
//!
//! ## Testing without Bluetooth hardware (BlueZoo)
//!
//! `crates/limmat-gateway/tests/bluez.rs` runs this backend against
//! [BlueZoo](https://pypi.org/project/bluezoo/), a userspace mock of BlueZ's D-Bus API, through
//! the real bluer code path (§6.4). `scripts/test` installs what a fresh Debian machine lacks:
//! `dbus`, `libdbus-1-dev`, `pkg-config` and `python3-pip` with apt, then BlueZoo with pip into
//! a virtual environment under `target/bluezoo-venv` (PEP 668 forbids system-wide pip installs on
//! Debian), and runs `cargo test -p limmat-gateway --features bluez` with that venv on `PATH`.
//! The test starts a private `dbus-daemon --session --nofork --print-address`, sets
//! `DBUS_SYSTEM_BUS_ADDRESS` to it, starts `bluezoo --auto-enable --scan-interval 1` with one
//! mock adapter per device (`hci0` for the gateway, one per beacon, one for the peripheral),
//! waits for `org.bluez` through `NameOwnerChanged` (and, since BlueZoo takes the name before
//! it exports its adapters, for each adapter's `Powered: true`), registers advertisements (V1,
//! V4, V6, and the peripherals') and GATT applications shaped like "Limmat HRM" with bluer on
//! the other adapters, and checks discovery, beacon decoding, connect (and its timeout, with
//! BlueZoo frozen by `SIGSTOP` so that it cannot answer in time),
//! service, characteristic and descriptor listing, reads, writes, error mapping,
//! notifications, requested disconnection, link loss and device removal through the
//! [`Backend`] trait. Every child process is killed by its pid when the test ends, also when
//! it fails. It takes about 5 s. `tests/bluez_http.rs` (§6.4 step 5) runs the whole gateway
//! (`server::Gateway`, backend `bluez` on `hci0`) against the same fixtures and asks it over
//! HTTP: beacons in `/beacon/beacons`, the reconstructed node in `/gap/nodes`, connect, GATT
//! listing, a read, a write, notifications over SSE, disconnect and shutdown.
//! `tests/bluez_no_bus.rs`, a process of its own, checks the answer without any bus, of the
//! backend and of `Gateway::start`.
//!
//! BlueZoo's limits shape the test: one advertisement per adapter, reported only when
//! discoverable, in rounds every scan interval, and again only when its data changes; RSSI is
//! always 0, the address type always public; devices are never dropped by themselves (the test
//! removes one, as BlueZ does after 30 s); a link can only be dropped from the central's side
//! (the test drops it through another D-Bus client, which the backend sees as link loss), and
//! a dropped link cannot be connected again. BlueZoo 1.0.2 also declares
//! `Device1.ManufacturerData` as `a{sv}` instead of BlueZ's `a{qv}` and so cannot export a
//! device with manufacturer data at all; `tests/bluez/bluezoo-fix/sitecustomize.py`, put on
//! BlueZoo's `PYTHONPATH` by the test, corrects the type at start-up.

pub mod ad;
pub mod convert;
pub mod discovery;
pub mod error;
pub mod gatt;
pub mod link;
pub mod links;

pub use ad::{reconstruct_ad, reconstruct_structures};

use crate::address::Address;
use crate::backend::{
    Backend, BleError, Capabilities, Characteristic, ConnectionEvent, Descriptor, Handle, Info,
    NodeState, Notification, NotifyKind, Report, ScanMode, Service, WriteMode,
};
use async_trait::async_trait;
use bluer::{Adapter, Session};
use discovery::Nodes;
use error::{Op, map};
use futures::stream::BoxStream;
use links::Links;
use std::sync::Arc;
use std::time::Duration;

/// What BlueZ offers beyond the [R] operations in version 1 (§6.3).
const CAPABILITIES: Capabilities = Capabilities {
    passive_scan: false,
    conn_params: false,
    pairing: false,
    read_by_uuid: false,
    read_multiple: false,
    reliable_write: true,
};

/// The BlueZ backend on one adapter.
pub struct BluezBackend {
    /// Keeps the D-Bus connection alive.
    _session: Session,
    adapter: Adapter,
    nodes: Nodes,
    links: Arc<Links>,
}

/// Where libdbus looks for the system bus, for error messages.
fn bus_description() -> String {
    match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Ok(address) => format!("DBUS_SYSTEM_BUS_ADDRESS={address}"),
        Err(_) => "the default system bus socket".into(),
    }
}

impl BluezBackend {
    /// Connects to BlueZ on the system bus and opens `adapter_name` (`hci0`, …), powering it on
    /// if needed. `Unavailable`, with the reason, when there is no bus, no BlueZ or no such
    /// adapter.
    pub async fn new(adapter_name: &str) -> Result<BluezBackend, BleError> {
        let session = Session::new().await.map_err(|e| {
            BleError::Unavailable(format!(
                "cannot connect to the D-Bus system bus ({}): {e}",
                bus_description()
            ))
        })?;
        let adapter = session.adapter(adapter_name).map_err(|e| {
            BleError::Unavailable(format!("bad Bluetooth adapter name {adapter_name:?}: {e}"))
        })?;
        match adapter.is_powered().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(adapter = adapter_name, "powering the Bluetooth adapter on");
                adapter
                    .set_powered(true)
                    .await
                    .map_err(|e| map(&e, Op::Other))?;
            }
            Err(e) => {
                return Err(match map(&e, Op::Other) {
                    BleError::NotFound => {
                        let names = session.adapter_names().await.unwrap_or_default();
                        BleError::Unavailable(format!(
                            "BlueZ has no Bluetooth adapter {adapter_name:?} (it has: {})",
                            if names.is_empty() {
                                "none".into()
                            } else {
                                names.join(", ")
                            }
                        ))
                    }
                    other => other,
                });
            }
        }
        Ok(BluezBackend {
            links: Links::new(adapter.clone()),
            _session: session,
            adapter,
            nodes: Nodes::default(),
        })
    }
}

#[async_trait]
impl Backend for BluezBackend {
    async fn info(&self) -> Info {
        let (address, powered) = futures::join!(self.adapter.address(), self.adapter.is_powered());
        Info {
            backend: "bluez",
            address: address.map(convert::address).unwrap_or(Address([0; 6])),
            name: self.adapter.name().to_owned(),
            powered: powered.unwrap_or(false),
            capabilities: CAPABILITIES,
        }
    }

    async fn scan(&self, mode: ScanMode) -> Result<BoxStream<'static, Report>, BleError> {
        if mode == ScanMode::Passive {
            return Err(BleError::Unsupported("passive scanning"));
        }
        discovery::scan(&self.adapter, self.nodes.clone()).await
    }

    async fn node(&self, address: Address) -> Result<NodeState, BleError> {
        let device = self
            .adapter
            .device(convert::bluer_address(address))
            .map_err(|e| map(&e, Op::Other))?;
        // `NotFound` when BlueZ does not know the device (never seen, or dropped).
        let connected = match device.is_connected().await {
            Ok(connected) => connected,
            Err(e) => {
                let error = map(&e, Op::Other);
                if error == BleError::NotFound {
                    discovery::lock(&self.nodes).remove(&address);
                }
                return Err(error);
            }
        };
        let report = discovery::lock(&self.nodes).get(&address).cloned();
        let name = match report.as_ref().and_then(|r| r.name.clone()) {
            Some(name) => Some(name),
            None => device.name().await.ok().flatten(),
        };
        Ok(NodeState {
            report,
            name,
            connected,
        })
    }

    async fn connect(&self, address: Address, timeout: Duration) -> Result<(), BleError> {
        self.links.connect(address, timeout).await
    }

    async fn disconnect(&self, address: Address) -> Result<(), BleError> {
        self.links.disconnect(address).await
    }

    fn connection_events(&self) -> BoxStream<'static, ConnectionEvent> {
        self.links.events()
    }

    async fn services(&self, address: Address) -> Result<Vec<Service>, BleError> {
        Ok(self.links.table(address).await?.1.services.clone())
    }

    async fn characteristics(
        &self,
        address: Address,
        service: Option<Handle>,
    ) -> Result<Vec<Characteristic>, BleError> {
        self.links
            .table(address)
            .await?
            .1
            .characteristics_of(service)
    }

    async fn descriptors(
        &self,
        address: Address,
        characteristic: Option<Handle>,
    ) -> Result<Vec<Descriptor>, BleError> {
        self.links
            .table(address)
            .await?
            .1
            .descriptors_of(characteristic)
    }

    async fn read(&self, address: Address, handle: Handle) -> Result<Vec<u8>, BleError> {
        self.links.table(address).await?.1.read(handle).await
    }

    async fn write(
        &self,
        address: Address,
        handle: Handle,
        value: &[u8],
        mode: WriteMode,
    ) -> Result<(), BleError> {
        let (_, table) = self.links.table(address).await?;
        table.write(handle, value, mode).await
    }

    async fn subscribe(
        &self,
        address: Address,
        characteristic: Handle,
        kind: NotifyKind,
    ) -> Result<BoxStream<'static, Notification>, BleError> {
        let (device, table) = self.links.table(address).await?;
        table.subscribe(&device, characteristic, kind).await
    }
}
