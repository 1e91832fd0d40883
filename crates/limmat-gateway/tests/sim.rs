//! The simulated backend through the `Backend` trait (`gateway-api.md` §6.2), under paused
//! tokio time: the default world and its raw AD (§4.5), determinism (checklist 46), presence
//! cycles, TLM, cloning, configuration errors, connections and the "Limmat HRM" GATT database
//! (checklist 5, 9–20 at backend level).

use futures::StreamExt;
use futures::stream::BoxStream;
use limmat_gateway::backend::sim::{SimBackend, SimConfig};
use limmat_gateway::backend::{
    Backend, BleError, ConnectionEvent, NotifyKind, Report, ScanMode, WriteMode,
};
use limmat_gateway::beacon::{self, Decoded, Frame, Telemetry, ad};
use limmat_gateway::{Address, Uuid};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

const IBEACON: &str = "c0ffee000001";
const ALTBEACON: &str = "c0ffee000002";
const UID: &str = "c0ffee000003";
const URL: &str = "c0ffee000004";
const HRM: &str = "c0ffee000010";
const GHOST: &str = "c0ffee000011";
const SECOND: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

fn addr(text: &str) -> Address {
    text.parse().unwrap()
}

fn hex(text: &str) -> Vec<u8> {
    limmat_gateway::hex::decode(text).unwrap()
}

fn config(toml: &str) -> SimConfig {
    toml::from_str(toml).unwrap()
}

fn sim(toml: &str) -> SimBackend {
    SimBackend::with_epoch(&config(toml), SystemTime::UNIX_EPOCH).unwrap()
}

/// Every report of `scan` received within `span` of now.
async fn collect(scan: &mut BoxStream<'static, Report>, span: Duration) -> Vec<Report> {
    let end = Instant::now() + span;
    let mut reports = Vec::new();
    while let Ok(Some(report)) = tokio::time::timeout_at(end, scan.next()).await {
        reports.push(report);
    }
    reports
}

async fn connected_hrm(toml: &str) -> SimBackend {
    let sim = sim(toml);
    sim.connect(addr(HRM), TIMEOUT).await.unwrap();
    sim
}

#[tokio::test(start_paused = true)]
async fn the_default_world_broadcasts_the_spec_vectors() {
    let sim = sim("");
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    let reports = collect(&mut scan, SECOND * 2).await;
    let mut latest: BTreeMap<String, Report> = BTreeMap::new();
    let mut first_rssi: BTreeMap<String, Option<i16>> = BTreeMap::new();
    for r in reports {
        first_rssi.entry(r.address.handle()).or_insert(r.rssi);
        latest.insert(r.address.handle(), r);
    }
    let heard: Vec<&str> = latest.keys().map(String::as_str).collect();
    assert_eq!(heard, [IBEACON, ALTBEACON, UID, URL, HRM, GHOST]);
    // V3, V5 and V8 are the raw forms of V1, V4 and V6.
    let raw = |node: &str| latest[node].raw.clone().unwrap();
    assert_eq!(
        raw(IBEACON),
        hex("0201061aff4c0002154c696d6d6174426561636f6e2d30303100010007c5")
    );
    assert_eq!(
        latest[IBEACON].manufacturer_data[&0x004c],
        hex("02154c696d6d6174426561636f6e2d30303100010007c5")
    );
    assert_eq!(
        raw(ALTBEACON),
        hex("0201061bff1801beac4c696d6d6174426561636f6e2d303031002a0003bf5a")
    );
    // The UID beacon's first frame is the beacon, not TLM.
    assert_eq!(
        raw(UID),
        hex("0201060303aafe1716aafe00ee4c696d6d6f6e2d3030310000000000010000")
    );
    assert_eq!(
        latest[URL].service_data[&Uuid::EDDYSTONE],
        hex("10ee016578616d706c6500")
    );
    assert_eq!(latest[URL].service_uuids, [Uuid::EDDYSTONE]);
    for node in [IBEACON, ALTBEACON, UID, URL] {
        let r = &latest[node];
        assert_eq!(r.connectable, Some(false));
        assert_eq!(r.flags, Some(0x06));
        assert_eq!(first_rssi[node], Some(-65), "the walk starts at -65");
        assert_eq!(r.address_type, limmat_gateway::AddressType::Random);
        // The decoded fields are those of the raw bytes.
        let pairs = ad::pairs(r.raw.as_deref().unwrap());
        assert_eq!(pairs.len(), 1);
        assert!(beacon::decode(&pairs[0].0, pairs[0].1).beacon().is_some());
    }
    let hrm = &latest[HRM];
    assert_eq!(hrm.name.as_deref(), Some("Limmat HRM"));
    assert_eq!(
        hrm.service_uuids,
        [Uuid::from_u16(0x180d), Uuid::from_u16(0x180f)]
    );
    assert_eq!(hrm.connectable, Some(true));
    assert_eq!(latest[GHOST].name.as_deref(), Some("Limmat Ghost"));
    assert!(latest[GHOST].service_uuids.is_empty());
    // node() gives the latest report; never-heard addresses are unknown.
    let node = sim.node(addr(HRM)).await.unwrap();
    assert_eq!(node.name.as_deref(), Some("Limmat HRM"));
    assert!(!node.connected);
    assert_eq!(
        sim.node(addr("c0ffee0000ff")).await.unwrap_err(),
        BleError::NotFound
    );
    let info = sim.info().await;
    assert_eq!((info.backend, info.name.as_str()), ("sim", "sim0"));
    assert!(info.powered && info.capabilities.passive_scan);
}

#[tokio::test(start_paused = true)]
async fn rssi_walks_in_steps_of_three_within_bounds() {
    let sim = sim("");
    let mut scan = sim.scan(ScanMode::Passive).await.unwrap();
    let reports = collect(&mut scan, SECOND * 120).await;
    let mut last: BTreeMap<Address, i16> = BTreeMap::new();
    for r in &reports {
        let rssi = r.rssi.unwrap();
        assert!((-95..=-40).contains(&rssi));
        let previous = last.insert(r.address, rssi).unwrap_or(-65);
        assert!((rssi - previous).abs() <= 3, "{previous} → {rssi}");
    }
    assert!(reports.iter().any(|r| r.rssi != Some(-65)));
}

#[tokio::test(start_paused = true)]
async fn passive_scanning_can_be_switched_off() {
    let sim = sim("passive_scan = false");
    assert_eq!(
        sim.scan(ScanMode::Passive).await.err(),
        Some(BleError::Unsupported("passive scanning"))
    );
    assert!(!sim.info().await.capabilities.passive_scan);
    assert!(sim.scan(ScanMode::Active).await.is_ok());
}

/// Checklist 46: the same seed gives the same reports, RSSI included, on every run; another
/// seed gives other RSSI values.
#[tokio::test(start_paused = true)]
async fn a_fixed_seed_reproduces_every_report() {
    let base = Instant::now().into_std();
    let run = async |seed: u64| -> Vec<(Duration, Report)> {
        let start = Instant::now().into_std();
        let sim = sim(&format!("seed = {seed}"));
        let mut scan = sim.scan(ScanMode::Active).await.unwrap();
        collect(&mut scan, SECOND * 30)
            .await
            .into_iter()
            // `at` is an Instant; compare it relative to the start.
            .map(|r| (r.at - start, Report { at: base, ..r }))
            .collect()
    };
    let first = run(7).await;
    let second = run(7).await;
    assert!(first.len() > 150, "{}", first.len());
    assert_eq!(first.len(), second.len());
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        assert_eq!(a, b, "report {i}");
    }
    let other = run(8).await;
    let rssi = |run: &[(Duration, Report)]| run.iter().map(|(_, r)| r.rssi).collect::<Vec<_>>();
    assert_ne!(rssi(&first), rssi(&other));
}

#[tokio::test(start_paused = true)]
async fn presence_cycles_start_present() {
    let sim = sim("");
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    let start = Instant::now().into_std();
    let reports = collect(&mut scan, SECOND * 170).await;
    let seconds = |node: &str| -> BTreeSet<u64> {
        reports
            .iter()
            .filter(|r| r.address == addr(node))
            .map(|r| (r.at - start).as_secs())
            .collect()
    };
    // AltBeacon: 60 s present, 20 s absent.
    let alt = seconds(ALTBEACON);
    for s in 0..170 {
        assert_eq!(alt.contains(&s), s % 80 < 60, "altbeacon at {s} s");
    }
    // URL: 45 s present, 15 s absent.
    let url = seconds(URL);
    for s in 0..170 {
        assert_eq!(url.contains(&s), s % 60 < 45, "url at {s} s");
    }
    // Always present.
    assert_eq!(seconds(IBEACON).len(), 170);
}

#[tokio::test(start_paused = true)]
async fn every_fifth_uid_frame_is_telemetry_with_real_counters() {
    let sim = sim("");
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    let start = Instant::now().into_std();
    let frames: Vec<(Duration, Decoded)> = collect(&mut scan, SECOND * 600)
        .await
        .into_iter()
        .filter(|r| r.address == addr(UID))
        .map(|r| {
            let raw = r.raw.unwrap();
            let pairs = ad::pairs(&raw);
            assert_eq!(pairs.len(), 1);
            (r.at - start, beacon::decode(&pairs[0].0, pairs[0].1))
        })
        .collect();
    assert_eq!(frames.len(), 600);
    for (i, (at, decoded)) in frames.iter().enumerate() {
        let n = i as u32 + 1;
        if !n.is_multiple_of(5) {
            let key = decoded.beacon().unwrap().key();
            assert_eq!(key, "eddystone-uid:4c696d6d6f6e2d303031:000000000001");
            continue;
        }
        let Some(Telemetry::Plain(tlm)) = decoded.telemetry() else {
            panic!("frame {n} is not TLM: {decoded:?}");
        };
        assert_eq!(tlm.adv_count, n);
        assert_eq!(tlm.uptime_ds as u128, at.as_millis() / 100);
        assert_eq!(
            tlm.battery_mv,
            Some(3000 - (at.as_secs() / 60) as u16),
            "1 mV per minute"
        );
        let t = tlm.temperature_c.unwrap();
        assert!((21.0..=23.0).contains(&t), "{t}");
    }
    let last = frames.last().unwrap();
    assert!(matches!(last.1, Decoded::Frame(Frame::Telemetry(_))));
}

#[tokio::test(start_paused = true)]
async fn count_clones_beacons_with_consecutive_identities_and_addresses() {
    let sim = sim(r#"
        default_world = false
        [[beacon]]
        format = "ibeacon"
        address = "C0:00:00:00:00:FE"
        major = 9
        minor = 100
        count = 5000
        interval_ms = 1000
        "#);
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    let reports = collect(&mut scan, SECOND).await;
    assert_eq!(reports.len(), 5000);
    let mut keys = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for r in &reports {
        addresses.insert(r.address);
        let (company, payload) = r.manufacturer_data.iter().next().unwrap();
        let decoded = beacon::decode_manufacturer_data(*company, payload);
        let Some(beacon::Beacon::IBeacon(b)) = decoded.beacon() else {
            panic!("{decoded:?}");
        };
        assert_eq!(b.major, 9);
        // Clone i has minor 100 + i at address base + i.
        let [.., hi, lo] = r.address.0;
        let i = u16::from_be_bytes([hi, lo]) - 0xfe;
        assert_eq!(b.minor, 100 + i);
        keys.insert(b.minor);
    }
    assert_eq!(keys.len(), 5000);
    assert_eq!(addresses.first(), Some(&addr("c000000000fe")));
    assert_eq!(addresses.last(), Some(&addr("c00000001485")));
}

#[test]
fn configuration_errors_name_the_key() {
    let err = |text: &str| toml::from_str::<SimConfig>(text).unwrap_err().to_string();
    let e = err("sed = 1");
    assert!(e.contains("sed"), "{e}");
    let e = err("[[beacon]]\nformat = \"ibeacon\"\naddress = \"c0ffee000100\"\nmajr = 1\n");
    assert!(e.contains("majr"), "{e}");
    let e = err("[[beacon]]\nformat = \"ibeacon\"\naddress = \"c0ffee000100\"\nurl = \"x\"\n");
    assert!(e.contains("sim.beacon[0].url"), "{e}");
    let e = err("[[beacon]]\nformat = \"ibecon\"\naddress = \"c0ffee000100\"\n");
    assert!(e.contains("sim.beacon[0].format"), "{e}");
    let e = err("[[beacon]]\nformat = \"ibeacon\"\naddress = \"00ffee000100\"\n");
    assert!(e.contains("sim.beacon[0].address"), "{e}");
    let e = err(
        "[[beacon]]\nformat = \"ibeacon\"\naddress = \"c0ffee000100\"\nminor = 65535\ncount = 2\n",
    );
    assert!(e.contains("sim.beacon[0].count"), "{e}");
    let e = err("[[peripheral]]\naddress = \"c0ffee000020\"\nconect_delay_ms = 5\n");
    assert!(e.contains("conect_delay_ms"), "{e}");
    let e = err("time_scale = 0");
    assert!(e.contains("sim.time_scale"), "{e}");
    let e = err(
        "[[beacon]]\nformat = \"ibeacon\"\naddress = \"c0ffee000100\"\n[[beacon]]\nformat = \"altbeacon\"\naddress = \"c0ffee000100\"\n",
    );
    assert!(e.contains("sim.beacon[1].address"), "{e}");
    // Through the whole gateway.toml, too.
    let e = limmat_gateway::config::GatewayConfig::from_toml("[sim]\nsede = 3\n").unwrap_err();
    assert!(e.contains("sede"), "{e}");
    assert!(SimConfig::default().validate().is_ok());
}

#[tokio::test(start_paused = true)]
async fn connecting_is_idempotent_and_the_ghost_times_out() {
    let sim = sim("");
    let mut events = sim.connection_events();
    sim.connect(addr(HRM), TIMEOUT).await.unwrap();
    sim.connect(addr(HRM), TIMEOUT).await.unwrap();
    assert!(sim.node(addr(HRM)).await.unwrap().connected);
    let up = events.next().await.unwrap();
    assert_eq!(
        up,
        ConnectionEvent {
            address: addr(HRM),
            connected: true,
            reason: "requested".into()
        }
    );
    let start = Instant::now();
    let ghost = sim.connect(addr(GHOST), Duration::from_millis(200)).await;
    assert_eq!(ghost, Err(BleError::Timeout));
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(events.next().await.unwrap().reason, "timeout");
    // Beacons are tried and time out too; unknown nodes are not found.
    assert_eq!(
        sim.connect(addr(IBEACON), Duration::from_millis(100)).await,
        Err(BleError::Timeout)
    );
    assert_eq!(
        sim.connect(addr("c0ffee0000ff"), TIMEOUT).await,
        Err(BleError::NotFound)
    );
    sim.disconnect(addr(HRM)).await.unwrap();
    sim.disconnect(addr(HRM)).await.unwrap();
    sim.disconnect(addr(IBEACON)).await.unwrap();
    assert_eq!(events.next().await.unwrap().reason, "timeout");
    let down = events.next().await.unwrap();
    assert_eq!((down.connected, down.reason.as_str()), (false, "requested"));
    assert_eq!(
        sim.read(addr(HRM), 0x0022).await,
        Err(BleError::NotConnected)
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_queue_and_queueing_counts_toward_the_timeout() {
    let sim = std::sync::Arc::new(sim(""));
    let ghost = tokio::spawn({
        let sim = sim.clone();
        async move { sim.connect(addr(GHOST), SECOND).await }
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    // Queued behind the ghost for its whole second: 500 ms is not enough.
    assert_eq!(
        sim.connect(addr(HRM), Duration::from_millis(500)).await,
        Err(BleError::Timeout)
    );
    assert_eq!(ghost.await.unwrap(), Err(BleError::Timeout));
    assert_eq!(start.elapsed(), SECOND);
    // Now the adapter is free: the default 50 ms connect delay.
    let start = Instant::now();
    sim.connect(addr(HRM), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn hrm_services_characteristics_and_descriptors() {
    let sim = connected_hrm("").await;
    let hrm = addr(HRM);
    let services = sim.services(hrm).await.unwrap();
    let listed: Vec<(u16, String)> = services
        .iter()
        .map(|s| (s.handle, s.uuid.to_string()))
        .collect();
    assert_eq!(
        listed,
        [
            (0x10, "0000180a-0000-1000-8000-00805f9b34fb".to_string()),
            (0x20, "0000180f-0000-1000-8000-00805f9b34fb".to_string()),
            (0x30, "0000180d-0000-1000-8000-00805f9b34fb".to_string()),
            (0x40, "6c696d6d-6174-4000-8000-00000000f000".to_string()),
        ]
    );
    assert!(services.iter().all(|s| s.primary));
    let all = sim.characteristics(hrm, None).await.unwrap();
    assert_eq!(all.len(), 10);
    let battery = sim.characteristics(hrm, Some(0x20)).await.unwrap();
    assert_eq!(battery.len(), 1);
    assert_eq!((battery[0].handle, battery[0].properties), (0x22, 0x12));
    let vendor = sim.characteristics(hrm, Some(0x40)).await.unwrap();
    let props: Vec<(u16, u8)> = vendor.iter().map(|c| (c.handle, c.properties)).collect();
    assert_eq!(props, [(0x42, 0x0e), (0x45, 0x02), (0x47, 0x22)]);
    assert_eq!(
        sim.characteristics(hrm, Some(0x21)).await,
        Err(BleError::NotFound)
    );
    let descriptors = sim.descriptors(hrm, None).await.unwrap();
    let handles: Vec<u16> = descriptors.iter().map(|d| d.handle).collect();
    assert_eq!(handles, [0x23, 0x33, 0x43, 0x48]);
    assert_eq!(
        sim.read(hrm, 0x43).await.unwrap(),
        b"Vendor config".to_vec()
    );
    assert_eq!(sim.read(hrm, 0x23).await.unwrap(), hex("0000"));
}

#[tokio::test(start_paused = true)]
async fn hrm_reads_and_writes_as_the_table_says() {
    let sim = connected_hrm("").await;
    let hrm = addr(HRM);
    // 13
    assert_eq!(sim.read(hrm, 0x22).await.unwrap(), hex("64"));
    assert_eq!(sim.read(hrm, 0x12).await.unwrap(), hex("4c696d6d6174"));
    assert_eq!(sim.read(hrm, 0x14).await.unwrap(), b"LM-SIM-1".to_vec());
    assert_eq!(sim.read(hrm, 0x16).await.unwrap(), b"1.0.0".to_vec());
    assert_eq!(sim.read(hrm, 0x35).await.unwrap(), hex("01"));
    // 14
    assert_eq!(sim.read(hrm, 0x42).await.unwrap(), hex("00"));
    sim.write(hrm, 0x42, &hex("0102"), WriteMode::Request)
        .await
        .unwrap();
    assert_eq!(sim.read(hrm, 0x42).await.unwrap(), hex("0102"));
    sim.write(hrm, 0x42, &hex("0304"), WriteMode::Command)
        .await
        .unwrap();
    assert_eq!(sim.read(hrm, 0x42).await.unwrap(), hex("0304"));
    sim.write(hrm, 0x42, &hex("05"), WriteMode::Reliable)
        .await
        .unwrap();
    assert_eq!(sim.read(hrm, 0x42).await.unwrap(), hex("05"));
    // 15
    assert_eq!(
        sim.write(hrm, 0x22, &hex("01"), WriteMode::Request).await,
        Err(BleError::NotPermitted)
    );
    assert_eq!(
        sim.write(hrm, 0x37, &hex("01"), WriteMode::Command).await,
        Err(BleError::NotPermitted)
    );
    assert_eq!(sim.read(hrm, 0x32).await, Err(BleError::NotPermitted));
    assert_eq!(sim.read(hrm, 0x37).await, Err(BleError::NotPermitted));
    // 16
    assert_eq!(
        sim.write(hrm, 0x42, &[0; 21], WriteMode::Request).await,
        Err(BleError::Att(0x0d))
    );
    sim.write(hrm, 0x42, &[7; 20], WriteMode::Request)
        .await
        .unwrap();
    assert_eq!(sim.read(hrm, 0x42).await.unwrap(), vec![7; 20]);
    // 17
    assert_eq!(sim.read(hrm, 0x45).await, Err(BleError::Att(0x0f)));
    assert_eq!(
        sim.write(hrm, 0x37, &hex("02"), WriteMode::Request).await,
        Err(BleError::Att(0x80))
    );
    sim.write(hrm, 0x37, &hex("01"), WriteMode::Request)
        .await
        .unwrap();
    // Unknown handles.
    assert_eq!(sim.read(hrm, 0x99).await, Err(BleError::NotFound));
    assert_eq!(sim.read(hrm, 0x10).await, Err(BleError::NotFound));
    // The counter counts seconds.
    tokio::time::sleep(SECOND * 3).await;
    let counter = sim.read(hrm, 0x47).await.unwrap();
    assert_eq!(counter, 3u32.to_be_bytes().to_vec());
}

#[tokio::test(start_paused = true)]
async fn subscriptions_share_a_characteristic_and_unsubscribe_on_drop() {
    let sim = connected_hrm("").await;
    let hrm = addr(HRM);
    assert_eq!(
        sim.subscribe(hrm, 0x32, NotifyKind::Indicate).await.err(),
        Some(BleError::NotPermitted)
    );
    assert_eq!(
        sim.subscribe(hrm, 0x47, NotifyKind::Notify).await.err(),
        Some(BleError::NotPermitted)
    );
    assert_eq!(
        sim.subscribe(hrm, 0x35, NotifyKind::Notify).await.err(),
        Some(BleError::NotPermitted)
    );
    let mut a = sim.subscribe(hrm, 0x32, NotifyKind::Notify).await.unwrap();
    let mut b = sim.subscribe(hrm, 0x32, NotifyKind::Notify).await.unwrap();
    assert_eq!(sim.read(hrm, 0x33).await.unwrap(), hex("0100"));
    // 1 Hz, flags 00 and a bpm starting at 72, the same value on both streams.
    let first = a.next().await.unwrap();
    let start = Instant::now();
    assert_eq!(first.value, hex("0048"));
    assert_eq!(b.next().await.unwrap().value, hex("0048"));
    for _ in 0..30 {
        let n = a.next().await.unwrap();
        assert_eq!(b.next().await.unwrap(), n);
        assert_eq!(n.value[0], 0);
        assert!((60..=90).contains(&n.value[1]));
    }
    assert_eq!(start.elapsed(), SECOND * 30);
    drop(a);
    assert_eq!(sim.read(hrm, 0x33).await.unwrap(), hex("0100"));
    drop(b);
    assert_eq!(sim.read(hrm, 0x33).await.unwrap(), hex("0000"));
    // Vendor Counter indicates increasing values every second.
    let mut counter = sim
        .subscribe(hrm, 0x47, NotifyKind::Indicate)
        .await
        .unwrap();
    assert_eq!(sim.read(hrm, 0x48).await.unwrap(), hex("0200"));
    let mut previous = 0;
    for _ in 0..5 {
        let v = counter.next().await.unwrap().value;
        let v = u32::from_be_bytes(v.try_into().unwrap());
        assert!(v > previous);
        previous = v;
    }
    // Battery notifies on change: once a minute.
    let mut battery = sim.subscribe(hrm, 0x22, NotifyKind::Notify).await.unwrap();
    assert_eq!(battery.next().await.unwrap().value, hex("63"));
    assert_eq!(battery.next().await.unwrap().value, hex("62"));
    assert_eq!(sim.read(hrm, 0x22).await.unwrap(), hex("62"));
}

#[tokio::test(start_paused = true)]
async fn link_loss_ends_every_subscription_of_the_node() {
    let sim =
        connected_hrm("[[peripheral]]\naddress = \"C0:FF:EE:00:00:10\"\ndrop_link_after_s = 5\n")
            .await;
    let hrm = addr(HRM);
    let mut events = sim.connection_events();
    let start = Instant::now();
    let mut counter = sim
        .subscribe(hrm, 0x47, NotifyKind::Indicate)
        .await
        .unwrap();
    let mut heart = sim.subscribe(hrm, 0x32, NotifyKind::Notify).await.unwrap();
    let mut values = 0;
    while counter.next().await.is_some() {
        values += 1;
    }
    assert!(values >= 4, "{values}");
    assert!(heart.next().await.is_some());
    while heart.next().await.is_some() {}
    assert!(start.elapsed() <= SECOND * 5);
    let down = events.next().await.unwrap();
    assert_eq!((down.connected, down.reason.as_str()), (false, "link-loss"));
    assert_eq!(sim.read(hrm, 0x22).await, Err(BleError::NotConnected));
    assert!(!sim.node(hrm).await.unwrap().connected);
    // Reconnecting works, and arms the loss again.
    sim.connect(hrm, TIMEOUT).await.unwrap();
    assert!(events.next().await.unwrap().connected);
    let down = events.next().await.unwrap();
    assert_eq!(down.reason, "link-loss");
}

#[tokio::test(start_paused = true)]
async fn configured_peripherals_inject_failures() {
    let sim = sim(r#"
        [[peripheral]]
        address = "C0:FF:EE:00:00:10"
        connect_delay_ms = 300
        [[peripheral]]
        address = "C0:FF:EE:00:00:20"
        name = "Limmat HRM 2"
        unreachable = true
        "#);
    let start = Instant::now();
    sim.connect(addr(HRM), TIMEOUT).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(
        sim.connect(addr("c0ffee000020"), SECOND).await,
        Err(BleError::Timeout)
    );
    tokio::time::sleep(SECOND).await;
    let node = sim.node(addr("c0ffee000020")).await.unwrap();
    assert_eq!(node.name.as_deref(), Some("Limmat HRM 2"));
}

#[tokio::test(start_paused = true)]
async fn time_scale_speeds_the_world_up() {
    let sim = sim("time_scale = 10.0");
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    let reports = collect(&mut scan, SECOND).await;
    let ibeacon = reports
        .iter()
        .filter(|r| r.address == addr(IBEACON))
        .count();
    assert_eq!(ibeacon, 10);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_backend_ends_its_streams() {
    let sim = connected_hrm("").await;
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    let mut sub = sim
        .subscribe(addr(HRM), 0x32, NotifyKind::Notify)
        .await
        .unwrap();
    drop(sim);
    while scan.next().await.is_some() {}
    assert_eq!(sub.next().await, None);
}

/// Per-device PRNG streams: adding devices and clients leaves every other device's values as
/// they were.
#[tokio::test(start_paused = true)]
async fn more_devices_and_clients_do_not_shift_other_devices_values() {
    let ibeacon_rssi = async |toml: &str, extra_scans: usize| -> Vec<Option<i16>> {
        let sim = sim(toml);
        let _others: Vec<_> =
            futures::future::join_all((0..extra_scans).map(|_| sim.scan(ScanMode::Active))).await;
        let mut scan = sim.scan(ScanMode::Active).await.unwrap();
        collect(&mut scan, SECOND * 20)
            .await
            .into_iter()
            .filter(|r| r.address == addr(IBEACON))
            .map(|r| r.rssi)
            .collect()
    };
    let alone = ibeacon_rssi("", 0).await;
    assert_eq!(alone.len(), 20);
    let crowded = ibeacon_rssi(
        "[[beacon]]\nformat = \"ibeacon\"\naddress = \"c0ffee001000\"\ncount = 100\n",
        3,
    )
    .await;
    assert_eq!(alone, crowded);
}

#[tokio::test(start_paused = true)]
async fn the_gateway_file_carries_the_sim_section() {
    let config = limmat_gateway::config::GatewayConfig::from_toml(
        "[sim]\nseed = 3\ntime_scale = 2.0\n\
         [[sim.beacon]]\nformat = \"eddystone-url\"\naddress = \"c0ffee000200\"\n\
         url = \"https://limmat.example/\"\ninterval_ms = 500\n\
         rssi = { start = -50, min = -60, max = -45, step = 1 }\n\
         [[sim.peripheral]]\naddress = \"c0ffee000010\"\ndrop_link_after_s = 1\n",
    )
    .unwrap();
    assert_eq!(config.sim.seed, 3);
    assert_eq!(config.sim.beacons.len(), 1);
    let sim = SimBackend::new(&config.sim).unwrap();
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    // Twice as fast and every 500 ms: four frames per real second.
    let reports: Vec<Report> = collect(&mut scan, SECOND)
        .await
        .into_iter()
        .filter(|r| r.address == addr("c0ffee000200"))
        .collect();
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert!((-60..=-45).contains(&r.rssi.unwrap()));
        let url = beacon::decode_service_data(&Uuid::EDDYSTONE, &r.service_data[&Uuid::EDDYSTONE]);
        assert_eq!(
            url.beacon().unwrap().key(),
            "eddystone-url:https://limmat.example/"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn gatt_operations_need_a_link_to_a_known_node() {
    let sim = sim("");
    for node in [HRM, IBEACON] {
        let node = addr(node);
        assert_eq!(sim.services(node).await, Err(BleError::NotConnected));
        assert_eq!(
            sim.characteristics(node, None).await,
            Err(BleError::NotConnected)
        );
        assert_eq!(
            sim.descriptors(node, None).await,
            Err(BleError::NotConnected)
        );
        assert_eq!(
            sim.write(node, 0x42, &[1], WriteMode::Request).await,
            Err(BleError::NotConnected)
        );
        assert_eq!(
            sim.subscribe(node, 0x22, NotifyKind::Notify).await.err(),
            Some(BleError::NotConnected)
        );
    }
    let unknown = addr("c0ffee0000ff");
    assert_eq!(sim.services(unknown).await, Err(BleError::NotFound));
    assert_eq!(sim.disconnect(unknown).await, Err(BleError::NotFound));
    sim.connect(addr(HRM), TIMEOUT).await.unwrap();
    let hrm = addr(HRM);
    assert_eq!(
        sim.subscribe(hrm, 0x99, NotifyKind::Notify).await.err(),
        Some(BleError::NotFound)
    );
    assert_eq!(sim.descriptors(hrm, Some(0x35)).await.unwrap(), Vec::new());
    assert_eq!(
        sim.descriptors(hrm, Some(0x99)).await,
        Err(BleError::NotFound)
    );
    // CCCD writes: the values of the spec, within the characteristic's properties.
    sim.write(hrm, 0x23, &hex("0100"), WriteMode::Request)
        .await
        .unwrap();
    assert_eq!(sim.read(hrm, 0x23).await.unwrap(), hex("0100"));
    assert_eq!(
        sim.write(hrm, 0x23, &hex("0200"), WriteMode::Request).await,
        Err(BleError::Att(0xfd))
    );
    assert_eq!(
        sim.write(hrm, 0x23, &hex("01"), WriteMode::Request).await,
        Err(BleError::Att(0x0d))
    );
    assert_eq!(
        sim.write(hrm, 0x43, b"x", WriteMode::Request).await,
        Err(BleError::Att(0x03))
    );
    assert_eq!(
        sim.write(hrm, 0x42, &[0; 513], WriteMode::Request).await,
        Err(BleError::Att(0x0d))
    );
    // The CCCD resets with the link.
    sim.disconnect(hrm).await.unwrap();
    sim.connect(hrm, TIMEOUT).await.unwrap();
    assert_eq!(sim.read(hrm, 0x23).await.unwrap(), hex("0000"));
}

/// The driver on the real clock (time not paused), a hundred times faster: reports keep
/// coming, in the order of their receive times.
#[tokio::test]
async fn runs_on_the_real_clock_too() {
    let sim = SimBackend::new(&config("time_scale = 100.0")).unwrap();
    let mut scan = sim.scan(ScanMode::Active).await.unwrap();
    let mut last = None;
    let mut ibeacon = 0;
    while ibeacon < 10 {
        let r = tokio::time::timeout(TIMEOUT, scan.next())
            .await
            .unwrap()
            .unwrap();
        if r.address == addr(IBEACON) {
            ibeacon += 1;
        }
        assert!(last.is_none_or(|previous| r.at >= previous));
        assert!(r.received >= SystemTime::now() - TIMEOUT);
        last = Some(r.at);
    }
}
