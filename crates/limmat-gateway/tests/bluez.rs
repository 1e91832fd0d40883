//! The BlueZ backend against BlueZoo (`gateway-api.md` §6.4, checklist item 47), through the
//! [`Backend`] trait and the real bluer code path: a private D-Bus daemon, BlueZoo with one mock
//! adapter per device, beacons V1/V4/V6 and a "Limmat HRM"-shaped peripheral registered with
//! bluer on the other adapters. Everything runs in one test function, because the bus address
//! travels in a process-wide environment variable (`DBUS_SYSTEM_BUS_ADDRESS`).
//!
//! BlueZoo reports a device again only when its advertised data changes, in rounds every scan
//! interval (1 s here), with RSSI 0 and a public address; it never drops a device by itself.
#![cfg(feature = "bluez")]

#[path = "bluez/bus.rs"]
mod bus;
#[path = "bluez/fixture.rs"]
mod fixture;

use fixture::{V1, V4, V6, bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use limmat_gateway::address::{Address, AddressType};
use limmat_gateway::backend::bluez::{BluezBackend, reconstruct_ad};
use limmat_gateway::backend::{
    Backend, BleError, ConnectionEvent, NotifyKind, Report, ScanMode, WriteMode, props,
};
use limmat_gateway::beacon::{self, Beacon, Source};
use limmat_gateway::uuid::Uuid;
use std::time::Duration;

const GATEWAY: &str = "00:11:22:33:44:55";
const IBEACON: &str = "00:AA:BB:CC:DD:01";
const ALTBEACON: &str = "00:AA:BB:CC:DD:02";
const EDDYSTONE: &str = "00:AA:BB:CC:DD:03";
const HRM: &str = "00:AA:BB:CC:DD:10";
/// A second peripheral like the first, whose link the test drops from outside the backend.
const HRM2: &str = "00:AA:BB:CC:DD:11";

/// Far beyond what the scenario needs (about ten scan rounds); it only turns a hang into a
/// failure.
const LIMIT: Duration = Duration::from_secs(60);

fn addr(text: &str) -> Address {
    text.parse().expect("test address")
}

#[test]
fn bluez_backend_against_bluezoo() {
    let mut children = bus::Children::default();
    let (address, runtime) = bus::private_system_bus(&mut children);

    // A bus without BlueZ: the backend is `Unavailable` and says why.
    match runtime.block_on(BluezBackend::new("hci0")) {
        Err(BleError::Unavailable(why)) => assert!(why.contains("is not running"), "{why}"),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }

    let bluezoo = bus::start_bluezoo(
        &mut children,
        &address,
        &[GATEWAY, IBEACON, ALTBEACON, EDDYSTONE, HRM, HRM2],
    );
    bus::run_within(&runtime, LIMIT, scenario(&bluezoo));
    drop(runtime);
    drop(children);
}

/// The next report from `address`, skipping the others.
async fn next_from(scan: &mut BoxStream<'static, Report>, address: Address) -> Report {
    loop {
        let report = scan.next().await.expect("the scan ended");
        if report.address == address {
            return report;
        }
    }
}

/// The beacon in a report's manufacturer or service data.
fn decoded(report: &Report) -> Vec<Beacon> {
    let manufacturer = report
        .manufacturer_data
        .iter()
        .map(|(company, payload)| beacon::decode(&Source::Manufacturer(*company), payload));
    let service = report
        .service_data
        .iter()
        .map(|(uuid, payload)| beacon::decode(&Source::Service(*uuid), payload));
    manufacturer
        .chain(service)
        .filter_map(|d| d.beacon().cloned())
        .collect()
}

async fn next_link_event(events: &mut BoxStream<'static, ConnectionEvent>) -> ConnectionEvent {
    events.next().await.expect("the link events ended")
}

async fn scenario(bluezoo: &bus::Bluezoo) {
    let fixtures = bluer::Session::new().await.expect("fixture session");
    let adapter = |name: &str| fixtures.adapter(name).expect("fixture adapter");

    // Set-up errors are `Unavailable`, and say why.
    match BluezBackend::new("hci9").await {
        Err(BleError::Unavailable(why)) => assert!(why.contains("hci9"), "{why}"),
        other => panic!("hci9 should be unavailable, got {:?}", other.map(|_| ())),
    }
    let backend = BluezBackend::new("hci0")
        .await
        .expect("the backend on hci0");
    let info = backend.info().await;
    assert_eq!(
        (info.backend, info.address, info.name.as_str()),
        ("bluez", addr(GATEWAY), "hci0")
    );
    assert!(info.powered);
    assert!(!info.capabilities.passive_scan);
    assert_eq!(
        backend.scan(ScanMode::Passive).await.err(),
        Some(BleError::Unsupported("passive scanning"))
    );

    // Discovery: the three beacons decode, the peripheral shows its name and services.
    let mut scan = backend.scan(ScanMode::Active).await.expect("scan");
    let ibeacon = fixture::manufacturer_beacon(&adapter("hci1"), 0x004c, bytes(V1)).await;
    let altbeacon = fixture::manufacturer_beacon(&adapter("hci2"), 0x0118, bytes(V4)).await;
    let _eddystone = fixture::eddystone_beacon(&adapter("hci3"), bytes(V6)).await;
    let hrm = fixture::hrm(&adapter("hci4")).await;
    let hrm2 = fixture::hrm(&adapter("hci5")).await;

    let want = [
        (
            addr(IBEACON),
            "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7",
        ),
        (
            addr(ALTBEACON),
            "altbeacon:4c696d6d6174426561636f6e2d303031002a0003",
        ),
        (
            addr(EDDYSTONE),
            "eddystone-uid:4c696d6d6f6e2d303031:000000000001",
        ),
    ];
    let mut missing: Vec<_> = want.to_vec();
    let mut hrm_report = None;
    let mut hrm2_seen = false;
    while !missing.is_empty() || hrm_report.is_none() || !hrm2_seen {
        let report = scan.next().await.expect("the scan ended");
        assert_eq!(report.address_type, AddressType::Public);
        assert_eq!(report.raw, None, "BlueZ gives no raw AD");
        if report.address == addr(HRM) && report.name.as_deref() == Some("Limmat HRM") {
            hrm_report = Some(report);
            continue;
        }
        hrm2_seen |= report.address == addr(HRM2);
        let keys: Vec<String> = decoded(&report).iter().map(Beacon::key).collect();
        missing.retain(|(address, key)| {
            !(report.address == *address && keys.contains(&key.to_string()))
        });
        if report.address == addr(IBEACON) {
            // The reconstructed AD splits back into the same pair (§2.7).
            let raw = reconstruct_ad(&report);
            let pairs = beacon::ad::pairs(&raw);
            assert_eq!(
                pairs,
                vec![(Source::Manufacturer(0x004c), bytes(V1).as_slice())]
            );
        }
    }
    let hrm_report = hrm_report.expect("the HRM was reported");
    let battery_service = Uuid::from_u16(0x180f);
    let vendor_service: Uuid = "6c696d6d-6174-4000-8000-00000000f000"
        .parse()
        .expect("uuid");
    assert!(hrm_report.service_uuids.contains(&battery_service));
    assert!(hrm_report.service_uuids.contains(&vendor_service));

    // The node table, and GATT before connecting.
    let node = backend.node(addr(IBEACON)).await.expect("node");
    assert!(!node.connected);
    assert_eq!(
        node.report
            .map(|r| r.manufacturer_data.get(&0x004c).cloned()),
        Some(Some(bytes(V1)))
    );
    assert_eq!(
        backend.node(addr("00:00:00:00:00:99")).await.err(),
        Some(BleError::NotFound)
    );
    assert_eq!(
        backend.services(addr(HRM)).await.err(),
        Some(BleError::NotConnected)
    );

    // A connection attempt that cannot finish in time is a timeout, and says so on the link
    // events: BlueZoo, frozen, answers nothing until the attempt has given up. An unknown node
    // is unknown.
    let mut link_events = backend.connection_events();
    bluezoo.freeze(true);
    let attempt = backend
        .connect(addr(EDDYSTONE), Duration::from_millis(200))
        .await;
    bluezoo.freeze(false);
    assert_eq!(attempt, Err(BleError::Timeout));
    let event = next_link_event(&mut link_events).await;
    assert_eq!(
        (event.address, event.connected, event.reason.as_str()),
        (addr(EDDYSTONE), false, "connect-timeout")
    );
    assert_eq!(
        backend
            .connect(addr("00:00:00:00:00:99"), Duration::from_secs(10))
            .await,
        Err(BleError::NotFound)
    );

    // Two connections at once queue on the adapter and both succeed; connecting a connected
    // node is a success too.
    let ten = Duration::from_secs(10);
    let (first, second) = tokio::join!(
        backend.connect(addr(HRM), ten),
        backend.connect(addr(HRM2), ten)
    );
    assert_eq!((first, second), (Ok(()), Ok(())));
    let mut up = [
        next_link_event(&mut link_events).await,
        next_link_event(&mut link_events).await,
    ];
    up.sort_by_key(|e| e.address);
    assert_eq!(
        up.iter()
            .map(|e| (e.address, e.connected))
            .collect::<Vec<_>>(),
        vec![(addr(HRM), true), (addr(HRM2), true)]
    );
    backend
        .connect(addr(HRM), Duration::from_secs(10))
        .await
        .expect("connecting a connected node");
    assert!(backend.node(addr(HRM)).await.expect("node").connected);

    let services = backend.services(addr(HRM)).await.expect("services");
    let uuids: Vec<String> = services.iter().map(|s| s.uuid.to_string()).collect();
    assert_eq!(services.len(), 2, "0x1801 is hidden: {uuids:?}");
    assert!(uuids.contains(&"0000180f-0000-1000-8000-00805f9b34fb".to_string()));
    assert!(uuids.contains(&"6c696d6d-6174-4000-8000-00000000f000".to_string()));
    assert!(services.iter().all(|s| s.primary));
    let battery = services
        .iter()
        .find(|s| s.uuid == battery_service)
        .expect("battery service");

    let all = backend
        .characteristics(addr(HRM), None)
        .await
        .expect("characteristics");
    let find = |uuid: u128| {
        let uuid = Uuid(uuid.to_be_bytes());
        all.iter()
            .find(|c| c.uuid == uuid)
            .cloned()
            .unwrap_or_else(|| panic!("characteristic {uuid} in {all:?}"))
    };
    assert_eq!(
        all.len(),
        3,
        "the GATT service's characteristic is hidden: {all:?}"
    );
    let level = find(0x00002a19_0000_1000_8000_00805f9b34fb);
    let config = find(0x6c696d6d_6174_4000_8000_00000000f001);
    let secret = find(0x6c696d6d_6174_4000_8000_00000000f002);
    assert_eq!(level.properties, props::READ | props::NOTIFY);
    assert_eq!(
        config.properties,
        props::READ | props::WRITE | props::WRITE_WITHOUT_RESPONSE
    );
    assert_eq!(secret.properties, props::READ);
    assert_eq!(level.service, battery.handle);
    assert_eq!(
        backend
            .characteristics(addr(HRM), Some(battery.handle))
            .await
            .expect("battery characteristics"),
        vec![level.clone()]
    );
    assert_eq!(
        backend.characteristics(addr(HRM), Some(0xfff0)).await.err(),
        Some(BleError::NotFound)
    );

    // The vendor characteristic's description, as a descriptor.
    let descriptors = backend
        .descriptors(addr(HRM), Some(config.handle))
        .await
        .expect("descriptors");
    assert_eq!(descriptors.len(), 1, "{descriptors:?}");
    assert_eq!(
        descriptors[0].uuid.to_string(),
        "00002901-0000-1000-8000-00805f9b34fb"
    );
    assert_eq!(descriptors[0].characteristic, config.handle);
    assert_eq!(
        backend.read(addr(HRM), descriptors[0].handle).await,
        Ok(b"Vendor config".to_vec())
    );
    assert_eq!(
        backend.descriptors(addr(HRM), Some(level.handle)).await,
        Ok(vec![])
    );

    // Reads, writes and their refusals.
    assert_eq!(backend.read(addr(HRM), level.handle).await, Ok(vec![0x64]));
    assert_eq!(
        backend
            .write(addr(HRM), level.handle, &[1], WriteMode::Request)
            .await,
        Err(BleError::NotPermitted)
    );
    for (value, mode) in [
        (vec![0x01, 0x02], WriteMode::Request),
        (vec![0x03], WriteMode::Command),
    ] {
        backend
            .write(addr(HRM), config.handle, &value, mode)
            .await
            .expect("vendor write");
        assert_eq!(
            backend.read(addr(HRM), config.handle).await,
            Ok(value.clone())
        );
        assert_eq!(*hrm.config.lock().expect("config"), value);
    }
    assert_eq!(
        backend
            .write(addr(HRM), config.handle, &[0; 21], WriteMode::Request)
            .await,
        Err(BleError::Att(0x0d))
    );
    assert_eq!(
        backend.read(addr(HRM), secret.handle).await,
        Err(BleError::Att(0x08))
    );
    assert_eq!(
        backend.read(addr(HRM), 0xfff0).await,
        Err(BleError::NotFound)
    );

    // Notifications follow the fixture's value.
    assert_eq!(
        backend
            .subscribe(addr(HRM), level.handle, NotifyKind::Indicate)
            .await
            .err(),
        Some(BleError::NotPermitted)
    );
    let mut notifications = backend
        .subscribe(addr(HRM), level.handle, NotifyKind::Notify)
        .await
        .expect("subscribe");
    for value in [99u8, 98] {
        hrm.battery.send(value).expect("battery level");
        let notification = notifications.next().await.expect("a notification");
        assert_eq!(notification.value, vec![value]);
    }

    // A requested disconnection ends the stream too, and says so.
    backend.disconnect(addr(HRM)).await.expect("disconnect");
    assert!(
        notifications.next().await.is_none(),
        "the stream ends with the link"
    );
    let event = next_link_event(&mut link_events).await;
    assert_eq!(
        (event.address, event.connected, event.reason.as_str()),
        (addr(HRM), false, "requested")
    );
    assert!(!backend.node(addr(HRM)).await.expect("node").connected);
    assert_eq!(
        backend.read(addr(HRM), level.handle).await,
        Err(BleError::NotConnected)
    );
    backend
        .disconnect(addr(HRM))
        .await
        .expect("disconnecting a node that is not connected");

    // Link loss: another BlueZ client drops the second peripheral's link (BlueZoo cannot drop
    // it from the peripheral's side); its notification stream ends.
    assert!(backend.node(addr(HRM2)).await.expect("node").connected);
    let level2 = backend
        .characteristics(addr(HRM2), None)
        .await
        .expect("HRM2 characteristics")
        .into_iter()
        .find(|c| c.uuid == level.uuid)
        .expect("HRM2 battery level");
    let mut notifications = backend
        .subscribe(addr(HRM2), level2.handle, NotifyKind::Notify)
        .await
        .expect("subscribe HRM2");
    hrm2.battery.send(50).expect("battery level");
    assert_eq!(notifications.next().await.map(|n| n.value), Some(vec![50]));
    adapter("hci0")
        .device(bluer::Address(addr(HRM2).0))
        .expect("HRM2 as hci0 sees it")
        .disconnect()
        .await
        .expect("dropping the link from outside the backend");
    assert!(
        notifications.next().await.is_none(),
        "the stream ends on link loss"
    );
    let event = next_link_event(&mut link_events).await;
    assert_eq!(
        (event.address, event.connected, event.reason.as_str()),
        (addr(HRM2), false, "link-loss")
    );

    // A beacon that changes is reported each round (BlueZoo reports changes only: the iBeacon's
    // measured power is not part of its identity); once withdrawn, it is not reported, while the
    // AltBeacon, changing its reserved byte, is reported round after round.
    fixture::withdraw(&adapter("hci1"), ibeacon).await;
    let mut v1 = bytes(V1);
    v1[22] = 0xc4;
    let ibeacon = fixture::manufacturer_beacon(&adapter("hci1"), 0x004c, v1.clone()).await;
    let report = next_from(&mut scan, addr(IBEACON)).await;
    assert_eq!(report.manufacturer_data.get(&0x004c), Some(&v1));
    fixture::withdraw(&adapter("hci1"), ibeacon).await;
    let mut altbeacon = altbeacon;
    let mut v4 = bytes(V4);
    for reserved in [0x5b, 0x5c] {
        fixture::withdraw(&adapter("hci2"), altbeacon).await;
        v4[23] = reserved;
        altbeacon = fixture::manufacturer_beacon(&adapter("hci2"), 0x0118, v4.clone()).await;
        let report = loop {
            let report = scan.next().await.expect("the scan ended");
            assert_ne!(
                report.address,
                addr(IBEACON),
                "a withdrawn beacon was reported"
            );
            if report.address == addr(ALTBEACON) {
                break report;
            }
        };
        assert_eq!(report.manufacturer_data.get(&0x0118), Some(&v4));
    }
    drop(altbeacon);

    // BlueZ drops a temporary device after ~30 s; BlueZoo never does, so the test removes it.
    adapter("hci0")
        .remove_device(bluer::Address(addr(IBEACON).0))
        .await
        .expect("removing the iBeacon device");
    assert_eq!(
        backend.node(addr(IBEACON)).await.err(),
        Some(BleError::NotFound)
    );
}
