//! The beacon pipeline fed by the real simulator through the BLE layer's one scan (checklist
//! 25): the default world's V1, V4, V6 and V9 beacons enter, are listed under the keys of
//! §4.5, and the UID beacon's interleaved TLM names it (checklist 28).

mod beacon_support;

use beacon_support::*;
use limmat_gateway::backend::sim::{SimBackend, SimConfig};
use limmat_gateway::ble::Ble;
use limmat_gateway::pipeline::broadcast_reports;
use limmat_gateway::store::{Options, Store};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_simulator_s_beacons_enter_and_are_listed_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.presence.leave_after = Duration::from_secs(30);
    let shutdown = CancellationToken::new();
    let backend = Arc::new(SimBackend::new(&SimConfig::default()).unwrap());
    let ble = Ble::start(backend, shutdown.clone()).await;
    let store = Store::open(dir.path(), Options::from_config(&c)).unwrap();
    let (transport, _attempts) = Scripted::new();
    let beacons = limmat_gateway::server::start_beacons(
        &c,
        store,
        broadcast_reports(ble.subscribe()),
        transport,
        "http://127.0.0.1:8000".into(),
        shutdown.clone(),
    )
    .unwrap();
    let mut live = beacons.live();
    let wanted: BTreeSet<&str> = [V1_KEY, V4_KEY, V6_KEY, V9_KEY].into();
    let mut entered = BTreeSet::new();
    let mut telemetry_keys = None;
    tokio::time::timeout(Duration::from_secs(20), async {
        while !wanted.is_subset(&entered.iter().map(String::as_str).collect())
            || telemetry_keys.is_none()
        {
            let event = live.recv().await.unwrap();
            let json: serde_json::Value = serde_json::from_str(&event.json).unwrap();
            match event.meta.type_ {
                "beacon.entered" => {
                    entered.insert(json["data"]["beacon"]["key"].as_str().unwrap().to_string());
                }
                "beacon.telemetry" if json["data"]["keys"] == serde_json::json!([V6_KEY]) => {
                    telemetry_keys = Some(json["data"]["keys"].clone());
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the simulator's beacons within 20 s");
    let listed: BTreeSet<String> = beacons
        .present()
        .into_iter()
        .map(|(b, _)| b.key())
        .collect();
    for key in wanted {
        assert!(listed.contains(key), "{key} listed");
    }
    shutdown.cancel();
    beacons.stopped().await;
}
