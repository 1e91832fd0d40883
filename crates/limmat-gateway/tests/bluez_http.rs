//! The whole gateway on the BlueZ backend, over HTTP (`gateway-api.md` §6.4 step 5, checklist
//! item 47): a private D-Bus daemon, BlueZoo with one mock adapter per device, the beacons V1,
//! V4 and V6 and a "Limmat HRM"-shaped peripheral registered with bluer (`tests/bluez/`), and
//! the real [`Gateway`] on `hci0`, asked through its local listener with a real HTTP client
//! (`tests/api_support/`). `tests/bluez.rs` covers the backend trait in depth; this test checks
//! the composition: beacons decoded in `/beacon/beacons`, the reconstructed node in
//! `/gap/nodes`, connect, GATT listing, a read, a write that round-trips, notifications over
//! SSE, disconnect and shutdown. Before BlueZoo starts, the gateway refuses to start and says
//! why.
//!
//! A test binary of its own with a single test function: libdbus reads
//! `DBUS_SYSTEM_BUS_ADDRESS` once per process, at its first system-bus connection. Every wait
//! is on an event (bus signals, SSE events, HTTP answers) and bounded by [`LIMIT`]; every child
//! process is killed by its pid when the test ends, also when it fails.
#![cfg(feature = "bluez")]

#[path = "api_support/mod.rs"]
mod api_support;
#[allow(dead_code)]
#[path = "bluez/bus.rs"]
mod bus;
#[allow(dead_code)]
#[path = "bluez/fixture.rs"]
mod fixture;

use api_support::{Client, Events};
use fixture::{V1, V4, V6, bytes};
use limmat_gateway::config::{BackendKind, GatewayConfig};
use limmat_gateway::server::{Gateway, Options, StartError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const GATEWAY: &str = "00:11:22:33:44:55";
const IBEACON: &str = "00:AA:BB:CC:DD:01";
const ALTBEACON: &str = "00:AA:BB:CC:DD:02";
const EDDYSTONE: &str = "00:AA:BB:CC:DD:03";
const HRM: &str = "00:AA:BB:CC:DD:10";
/// The HRM's node handle (§2.1).
const NODE: &str = "00aabbccdd10";

const IBEACON_KEY: &str = "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7";
const ALTBEACON_KEY: &str = "altbeacon:4c696d6d6174426561636f6e2d303031002a0003";
const EDDYSTONE_KEY: &str = "eddystone-uid:4c696d6d6f6e2d303031:000000000001";

/// Far beyond what the scenario needs (a few scan rounds); it only turns a hang into a failure.
const LIMIT: Duration = Duration::from_secs(90);
/// How long shutdown may take.
const SHUTDOWN: Duration = Duration::from_secs(15);

/// The gateway's configuration: BlueZ on `hci0`, state in `dir`, an ephemeral local port, and
/// beacons that never leave during the test (BlueZoo reports a steady beacon only once, §6.4).
fn config(dir: &Path) -> GatewayConfig {
    let mut config = GatewayConfig::default();
    config.gateway.name = "bluez-http-test".into();
    config.gateway.state_dir = dir.to_path_buf();
    config.api.listen = Some("127.0.0.1:0".into());
    config.backend.kind = BackendKind::Bluez;
    config.backend.adapter = "hci0".into();
    config.presence.leave_after = Duration::from_secs(3600);
    config
}

fn options(dir: &Path) -> Options {
    Options {
        config: config(dir),
        prometheus: None,
    }
}

#[test]
fn gateway_over_http_against_bluezoo() {
    let mut children = bus::Children::default();
    let (address, runtime) = bus::private_system_bus(&mut children);
    let state = tempfile::tempdir().expect("state dir");

    // A bus without BlueZ: the gateway does not start, and the error names the backend and the
    // reason.
    let started = Gateway::start(options(state.path()), CancellationToken::new());
    let refused = bus::run_within(&runtime, LIMIT, started);
    match refused {
        Err(error @ StartError::Backend("bluez", _)) => {
            let message = error.to_string();
            assert!(
                message.starts_with("the bluez backend cannot start: "),
                "{message}"
            );
            assert!(message.contains("is not running"), "{message}");
        }
        Err(other) => panic!("expected a bluez backend error, got {other}"),
        Ok(_) => panic!("the gateway started without BlueZ"),
    }

    let _bluezoo = bus::start_bluezoo(
        &mut children,
        &address,
        &[GATEWAY, IBEACON, ALTBEACON, EDDYSTONE, HRM],
    );
    bus::run_within(&runtime, LIMIT, scenario(state.path()));
    drop(runtime);
    drop(children);
}

/// Cancels the gateway's token when dropped, so a failing assertion still stops it.
struct Stop(CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The next event named `name`, skipping others; panics if the stream ends.
async fn next_named(events: &mut Events, name: &str) -> Value {
    loop {
        let event = events
            .next()
            .await
            .unwrap_or_else(|| panic!("the stream ended before an `{name}` event"));
        if event.event == name {
            return event.json();
        }
    }
}

/// A lowercase hex handle of 4 digits (§2.1).
fn handle_of(object: &Value) -> String {
    let handle = object["handle"].as_str().expect("a handle").to_owned();
    assert!(
        handle.len() == 4
            && handle
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "not a 4-hex handle: {handle}"
    );
    handle
}

/// The single characteristic of the HRM with `uuid`; its handle.
async fn characteristic(client: &Client, uuid: &str, properties: u64) -> String {
    let list = client
        .get(&format!("/gatt/nodes/{NODE}/characteristics?uuid={uuid}"))
        .await
        .ok();
    let found = list["characteristics"].as_array().expect("characteristics");
    assert_eq!(found.len(), 1, "{list}");
    assert_eq!(found[0]["properties"], properties, "{list}");
    handle_of(&found[0])
}

async fn scenario(state: &Path) {
    let fixtures = bluer::Session::new().await.expect("fixture session");
    let adapter = |name: &str| fixtures.adapter(name).expect("fixture adapter");

    let shutdown = CancellationToken::new();
    let stop = Stop(shutdown.clone());
    let gateway = Gateway::start(options(state), shutdown.clone())
        .await
        .expect("the gateway on BlueZoo's hci0");
    let started = Instant::now();
    let client = Client {
        addr: gateway.local_addr(),
    };

    // Listen before anything advertises: every beacon that enters (replayed from the start of
    // the log), and the peripheral's advertisements.
    let mut entered = client
        .events("/beacon/events?type=beacon.entered&lastEventId=0")
        .await;
    let mut hrm_adverts = client
        .events(&format!("/gap/nodes?event=1&filter_mac={NODE}"))
        .await;

    let _ibeacon = fixture::manufacturer_beacon(&adapter("hci1"), 0x004c, bytes(V1)).await;
    let _altbeacon = fixture::manufacturer_beacon(&adapter("hci2"), 0x0118, bytes(V4)).await;
    let _eddystone = fixture::eddystone_beacon(&adapter("hci3"), bytes(V6)).await;
    let hrm = fixture::hrm(&adapter("hci4")).await;

    // The three beacons enter, decoded under their §4.5 keys.
    let mut keys = Vec::new();
    while keys.len() < 3 {
        let event = next_named(&mut entered, "beacon.entered").await;
        let key = event["data"]["beacon"]["key"]
            .as_str()
            .expect("a beacon key")
            .to_owned();
        assert!(!keys.contains(&key), "{key} entered twice");
        keys.push(key);
    }
    keys.sort();
    assert_eq!(keys, [ALTBEACON_KEY, EDDYSTONE_KEY, IBEACON_KEY]);
    drop(entered);

    let list = client.get("/beacon/beacons").await.ok();
    let beacons: BTreeMap<&str, &Value> = list["beacons"]
        .as_array()
        .expect("beacons")
        .iter()
        .map(|b| (b["key"].as_str().expect("key"), b))
        .collect();
    assert_eq!(
        beacons.keys().copied().collect::<Vec<_>>(),
        [ALTBEACON_KEY, EDDYSTONE_KEY, IBEACON_KEY],
        "{list}"
    );
    let ibeacon = beacons[IBEACON_KEY];
    assert_eq!(ibeacon["format"], "ibeacon");
    assert_eq!(ibeacon["uuid"], "4c696d6d-6174-4265-6163-6f6e2d303031");
    assert_eq!(
        (&ibeacon["major"], &ibeacon["minor"]),
        (&1.into(), &7.into())
    );
    assert_eq!(ibeacon["txPower"], -59);
    assert_eq!(ibeacon["address"], IBEACON);
    assert_eq!(ibeacon["addressType"], "public", "BlueZoo's only type");
    let altbeacon = beacons[ALTBEACON_KEY];
    assert_eq!(altbeacon["format"], "altbeacon");
    assert_eq!(altbeacon["companyId"], 280);
    assert_eq!(
        (&altbeacon["id2"], &altbeacon["id3"]),
        (&42.into(), &3.into())
    );
    assert_eq!(altbeacon["txPower"], -65);
    assert_eq!(altbeacon["mfgReserved"], 90);
    assert_eq!(altbeacon["address"], ALTBEACON);
    let eddystone = beacons[EDDYSTONE_KEY];
    assert_eq!(eddystone["format"], "eddystone-uid");
    assert_eq!(eddystone["namespace"], "4c696d6d6f6e2d303031");
    assert_eq!(eddystone["instance"], "000000000001");
    assert_eq!(
        (&eddystone["txPower"], &eddystone["txPower1m"]),
        (&(-18).into(), &(-59).into())
    );
    assert_eq!(eddystone["address"], EDDYSTONE);

    // The peripheral advertises its name and services; an active scan list covering the time
    // since start-up shows it with its advertising data rebuilt from BlueZ's fields (§2.7).
    loop {
        let advert = next_named(&mut hrm_adverts, "advertisement").await;
        assert_eq!(advert["handle"], NODE);
        if advert["name"] == "Limmat HRM" {
            break;
        }
    }
    drop(hrm_adverts);
    let window = u64::try_from(started.elapsed().as_millis())
        .expect("milliseconds")
        .clamp(100, 30_000);
    let scan = client
        .get(&format!("/gap/nodes?active=1&duration={window}"))
        .await
        .ok();
    assert_eq!(scan["scan"]["mode"], "active", "{scan}");
    let nodes = scan["nodes"].as_array().expect("nodes");
    let node = |handle: &str| {
        nodes
            .iter()
            .find(|n| n["handle"] == handle)
            .unwrap_or_else(|| panic!("{handle} in {scan}"))
    };
    let peripheral = node(NODE);
    assert_eq!(peripheral["bdaddr"], HRM);
    assert_eq!(peripheral["bdaddrType"], "public");
    assert_eq!(peripheral["adSource"], "reconstructed");
    assert_eq!(peripheral["connected"], false);
    let services = peripheral["serviceUuids"].as_array().expect("serviceUuids");
    for uuid in [
        "0000180f-0000-1000-8000-00805f9b34fb",
        "6c696d6d-6174-4000-8000-00000000f000",
    ] {
        assert!(services.iter().any(|s| s == uuid), "{uuid} in {peripheral}");
    }
    assert!(
        peripheral["AD"]
            .as_array()
            .expect("AD")
            .iter()
            .any(|ad| ad["ADType"] == 9 && ad["ADValue"] == "4c696d6d61742048524d"),
        "the name in the rebuilt AD: {peripheral}"
    );
    let ibeacon_node = node("00aabbccdd01");
    assert_eq!(ibeacon_node["adSource"], "reconstructed");
    assert_eq!(ibeacon_node["manufacturerData"]["004c"], V1);

    // Connect, and list what the peripheral serves (BlueZ hides GATT's own service).
    let connected = client
        .put(&format!("/gap/nodes/{NODE}?connect=1"))
        .await
        .ok();
    assert_eq!(connected["connected"], true, "{connected}");
    assert_eq!(connected["handle"], NODE);
    let again = client
        .put(&format!("/gap/nodes/{NODE}?connect=1"))
        .await
        .ok();
    assert_eq!(
        again["connected"], true,
        "connecting a connected node: {again}"
    );
    let links = client.get("/gatt/nodes").await.ok();
    let linked: Vec<&Value> = links["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| &n["handle"])
        .collect();
    assert_eq!(linked, [NODE], "{links}");
    let list = client
        .get(&format!("/gatt/nodes/{NODE}/services"))
        .await
        .ok();
    let mut uuids: Vec<&str> = list["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            handle_of(s);
            s["uuid"].as_str().expect("uuid")
        })
        .collect();
    uuids.sort();
    assert_eq!(
        uuids,
        [
            "0000180f-0000-1000-8000-00805f9b34fb",
            "6c696d6d-6174-4000-8000-00000000f000"
        ],
        "{list}"
    );

    // Battery Level reads 100.
    let level = characteristic(&client, "2a19", 0x12).await;
    let level_path = format!("/gatt/nodes/{NODE}/characteristics/{level}/value");
    let read = client.get(&level_path).await.ok();
    assert_eq!(
        (&read["handle"], &read["value"]),
        (&level.as_str().into(), &"64".into())
    );

    // A vendor write round-trips, through the fixture.
    let config = characteristic(&client, "6c696d6d-6174-4000-8000-00000000f001", 0x0e).await;
    let config_path = format!("/gatt/nodes/{NODE}/characteristics/{config}/value");
    let written = client.put(&format!("{config_path}/0102")).await.ok();
    assert_eq!(written["value"], "0102", "{written}");
    assert_eq!(*hrm.config.lock().expect("config"), vec![1, 2]);
    assert_eq!(client.get(&config_path).await.ok()["value"], "0102");

    // Notifications over SSE follow the fixture's value. The stream answers once the
    // subscription is on, so the changes that follow are notified.
    let mut notifications = client
        .events(&format!("{level_path}?notify=1&event=1"))
        .await;
    for (value, hex) in [(99u8, "63"), (98, "62")] {
        hrm.battery.send(value).expect("battery level");
        let event = notifications.next().await.expect("a notification");
        assert_eq!(event.event, "notification", "{event:?}");
        assert!(event.id.is_some(), "{event:?}");
        let data = event.json();
        assert_eq!(
            (&data["handle"], &data["value"]),
            (&level.as_str().into(), &hex.into())
        );
    }
    let cached = client.get(&format!("{level_path}?notify=1")).await.ok();
    assert_eq!(cached["value"], "62", "{cached}");

    // Disconnect: the stream says so and ends; GATT needs the link again.
    let disconnected = client
        .put(&format!("/gap/nodes/{NODE}?enable=0"))
        .await
        .ok();
    assert_eq!(disconnected["connected"], false, "{disconnected}");
    let event = notifications.next().await.expect("a `disconnected` event");
    assert_eq!(event.event, "disconnected", "{event:?}");
    let data = event.json();
    assert_eq!(
        (&data["node"], &data["handle"]),
        (&NODE.into(), &level.as_str().into())
    );
    assert!(notifications.next().await.is_none(), "the stream ends");
    client
        .get(&format!("/gatt/nodes/{NODE}/services"))
        .await
        .problem(412);
    let node = client.get(&format!("/gap/nodes/{NODE}")).await.ok();
    assert_eq!(node["connected"], false, "{node}");
    drop(notifications);

    // Shutdown: the token stops every task.
    drop(stop);
    tokio::time::timeout(SHUTDOWN, gateway.wait())
        .await
        .expect("the gateway did not shut down in time");
}
