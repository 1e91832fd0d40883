//! Discovery (`gateway-api.md` §6.3): one active LE discovery session with `DuplicateData`, its
//! device-added and property-changed events turned into [`Report`]s. Every change of RSSI,
//! ManufacturerData or ServiceData counts as a sighting; other changes (name, UUIDs, TX power,
//! flags) only update what the next sighting carries. Each device is watched by its own task,
//! which reads the device once and then follows its property changes, so a report costs no
//! D-Bus round trip. BlueZ merges the discovery filters of all its clients, so nothing here
//! relies on the filter for correctness: the stream holds every LE device BlueZ reports.
//!
//! A device BlueZ already knew when the scan started is not a sighting until one of its
//! sighting properties changes; a device BlueZ drops (about 30 s after it was last seen, for
//! temporary devices) leaves the node table, so `node` answers `NotFound`.

use super::convert;
use super::error::{Op, map};
use crate::address::{Address, AddressType};
use crate::backend::{BleError, Report};
use bluer::{
    Adapter, AdapterEvent, Device, DeviceEvent, DeviceProperty, DiscoveryFilter, DiscoveryTransport,
};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The latest report of every node heard since the backend started.
pub type Nodes = Arc<Mutex<HashMap<Address, Report>>>;

/// Reports buffered between the device watchers and the consumer.
const BUFFER: usize = 1024;

/// Starts discovery and returns its reports. Dropping the stream stops discovery.
pub async fn scan(adapter: &Adapter, nodes: Nodes) -> Result<BoxStream<'static, Report>, BleError> {
    let filter = DiscoveryFilter {
        transport: DiscoveryTransport::Le,
        duplicate_data: true,
        ..Default::default()
    };
    // Refused only while a discovery session of this process runs, whose filter is this one.
    let _ = adapter.set_discovery_filter(filter).await;
    let known: HashSet<bluer::Address> = adapter
        .device_addresses()
        .await
        .map_err(|e| map(&e, Op::Other))?
        .into_iter()
        .collect();
    let events = adapter
        .discover_devices()
        .await
        .map_err(|e| map(&e, Op::Other))?;
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(adapter.clone(), events, known, tx, nodes));
    let reports = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|report| (report, rx))
    });
    Ok(reports.boxed())
}

/// Aborts the task it holds when dropped.
struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the discovery session until it ends (the adapter stops discovering) or the consumer
/// goes away; the watchers die with it.
async fn run(
    adapter: Adapter,
    events: impl Stream<Item = AdapterEvent> + Send,
    known: HashSet<bluer::Address>,
    tx: mpsc::Sender<Report>,
    nodes: Nodes,
) {
    let mut watchers: HashMap<bluer::Address, Watcher> = HashMap::new();
    let mut events = std::pin::pin!(events);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(AdapterEvent::DeviceAdded(addr)) => {
                    if watchers.contains_key(&addr) {
                        continue;
                    }
                    let Ok(device) = adapter.device(addr) else { continue };
                    let fresh = !known.contains(&addr);
                    let task = tokio::spawn(watch(device, fresh, tx.clone(), nodes.clone()));
                    watchers.insert(addr, Watcher(task));
                }
                Some(AdapterEvent::DeviceRemoved(addr)) => {
                    watchers.remove(&addr);
                    lock(&nodes).remove(&convert::address(addr));
                }
                Some(AdapterEvent::PropertyChanged(_)) => {}
                None => break,
            },
            () = tx.closed() => break,
        }
    }
}

/// Locks the node table; a poisoned lock is taken over (the table holds only reports).
pub fn lock(nodes: &Nodes) -> std::sync::MutexGuard<'_, HashMap<Address, Report>> {
    nodes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One device: its first report (if it is a fresh sighting), then one per sighting change.
async fn watch(device: Device, fresh: bool, tx: mpsc::Sender<Report>, nodes: Nodes) {
    // Subscribe before reading, so no change falls between the two.
    let Ok(events) = device.events().await else {
        return;
    };
    let Some(mut report) = read(&device).await else {
        return;
    };
    if fresh && !emit(&report, &tx, &nodes).await {
        return;
    }
    let mut events = std::pin::pin!(events);
    while let Some(DeviceEvent::PropertyChanged(property)) = events.next().await {
        if apply(&mut report, property) {
            report.received = SystemTime::now();
            report.at = tokio::time::Instant::now().into_std();
            if !emit(&report, &tx, &nodes).await {
                return;
            }
        }
    }
}

/// Records and sends a sighting; false once the consumer is gone.
async fn emit(report: &Report, tx: &mpsc::Sender<Report>, nodes: &Nodes) -> bool {
    lock(nodes).insert(report.address, report.clone());
    tx.send(report.clone()).await.is_ok()
}

/// A device's current advertising state as a report; `None` if it vanished meanwhile.
async fn read(device: &Device) -> Option<Report> {
    let (address_type, name, rssi, tx_power, uuids, manufacturer, service, flags) = futures::join!(
        device.address_type(),
        device.name(),
        device.rssi(),
        device.tx_power(),
        device.uuids(),
        device.manufacturer_data(),
        device.service_data(),
        device.advertising_flags(),
    );
    let mut report = blank(
        convert::address(device.address()),
        convert::address_type(address_type.ok()?),
    );
    report.name = name.ok().flatten();
    let properties = [
        rssi.ok().flatten().map(DeviceProperty::Rssi),
        tx_power.ok().flatten().map(DeviceProperty::TxPower),
        uuids.ok().flatten().map(DeviceProperty::Uuids),
        manufacturer
            .ok()
            .flatten()
            .map(DeviceProperty::ManufacturerData),
        service.ok().flatten().map(DeviceProperty::ServiceData),
        flags.ok().flatten().map(DeviceProperty::AdvertisingFlags),
    ];
    for property in properties.into_iter().flatten() {
        apply(&mut report, property);
    }
    Some(report)
}

/// A report of `address` received now, with nothing known yet.
pub fn blank(address: Address, address_type: AddressType) -> Report {
    Report {
        address,
        address_type,
        rssi: None,
        tx_power: None,
        name: None,
        flags: None,
        service_uuids: Vec::new(),
        manufacturer_data: Default::default(),
        service_data: Default::default(),
        raw: None,
        connectable: None,
        received: SystemTime::now(),
        at: tokio::time::Instant::now().into_std(),
    }
}

/// Applies one property change; true if it counts as a sighting.
fn apply(report: &mut Report, property: DeviceProperty) -> bool {
    match property {
        DeviceProperty::Rssi(rssi) => {
            report.rssi = Some(rssi);
            true
        }
        DeviceProperty::ManufacturerData(data) => {
            report.manufacturer_data = data.into_iter().collect();
            true
        }
        DeviceProperty::ServiceData(data) => {
            report.service_data = data
                .into_iter()
                .map(|(uuid, payload)| (convert::uuid(uuid), payload))
                .collect();
            true
        }
        DeviceProperty::TxPower(power) => {
            report.tx_power = i8::try_from(power).ok();
            false
        }
        DeviceProperty::Name(name) => {
            report.name = Some(name);
            false
        }
        DeviceProperty::Uuids(uuids) => {
            let mut uuids: Vec<_> = uuids.into_iter().map(convert::uuid).collect();
            uuids.sort();
            report.service_uuids = uuids;
            false
        }
        DeviceProperty::AdvertisingFlags(flags) => {
            report.flags = flags.first().copied();
            false
        }
        DeviceProperty::AddressType(kind) => {
            report.address_type = convert::address_type(kind);
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uuid::Uuid;

    fn report() -> Report {
        blank(Address([0, 0xaa, 0xbb, 0xcc, 0xdd, 1]), AddressType::Public)
    }

    #[test]
    fn rssi_and_data_changes_are_sightings_the_rest_updates_quietly() {
        let mut r = report();
        assert!(apply(&mut r, DeviceProperty::Rssi(-60)));
        assert!(apply(
            &mut r,
            DeviceProperty::ManufacturerData(HashMap::from([(0x004c, vec![2, 0x15])]))
        ));
        let eddystone = bluer::Uuid::from_u128(0x0000feaa_0000_1000_8000_00805f9b34fb);
        assert!(apply(
            &mut r,
            DeviceProperty::ServiceData(HashMap::from([(eddystone, vec![0x10])]))
        ));
        assert!(!apply(&mut r, DeviceProperty::Name("Limmat HRM".into())));
        assert!(!apply(&mut r, DeviceProperty::TxPower(-300)));
        assert!(!apply(&mut r, DeviceProperty::AdvertisingFlags(vec![0x06])));
        assert!(!apply(
            &mut r,
            DeviceProperty::Uuids(HashSet::from([eddystone]))
        ));
        assert!(!apply(&mut r, DeviceProperty::Connected(true)));
        assert_eq!(r.rssi, Some(-60));
        assert_eq!(r.manufacturer_data.get(&0x004c), Some(&vec![2, 0x15]));
        assert_eq!(r.service_data.get(&Uuid::EDDYSTONE), Some(&vec![0x10]));
        assert_eq!(r.name.as_deref(), Some("Limmat HRM"));
        assert_eq!(r.tx_power, None, "out of the i8 range");
        assert_eq!(r.flags, Some(0x06));
        assert_eq!(r.service_uuids, vec![Uuid::EDDYSTONE]);
    }
}
