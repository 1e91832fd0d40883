//! The GATT half of the REST API (`gateway-api.md` §2.3, §2.6) against the simulator's
//! "Limmat HRM", over a real listener and client, under paused tokio time: checklist items
//! 11–20, plus descriptors and the CCCD translation.

mod api_support;

use api_support::Gateway;
use limmat_gateway::api::ApiSettings;
use limmat_gateway::backend::sim::{PeripheralConfig, SimBackend, SimConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const HRM: &str = "/gatt/nodes/c0ffee000010";

/// A gateway with "Limmat HRM" connected.
async fn connected_with(config: SimConfig) -> Gateway {
    let sim = SimBackend::new(&config).expect("a valid sim config");
    let gw = Gateway::start(Arc::new(sim), ApiSettings::default()).await;
    gw.get("/gap/nodes?duration=1500").await.ok();
    let node = gw.put("/gap/nodes/c0ffee000010?connect=1").await.ok();
    assert_eq!(node["connected"], true);
    gw
}

async fn connected() -> Gateway {
    connected_with(SimConfig::default()).await
}

fn char_path(handle: &str) -> String {
    format!("{HRM}/characteristics/{handle}")
}

fn uuids(list: &Value, member: &str) -> Vec<String> {
    list[member]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uuid"].as_str().unwrap().to_string())
        .collect()
}

const VENDOR: &str = "6c696d6d-6174-4000-8000-00000000f000";

#[tokio::test(start_paused = true)]
async fn gatt_needs_a_connected_node() {
    let sim = SimBackend::new(&SimConfig::default()).unwrap();
    let gw = Gateway::start(Arc::new(sim), ApiSettings::default()).await;
    gw.get("/gap/nodes?duration=1500").await.ok();
    for path in [
        HRM.to_string(),
        format!("{HRM}/services"),
        char_path("0022"),
        format!("{}/value", char_path("0022")),
    ] {
        let p = gw.get(&path).await.problem(412);
        assert_eq!(p["code"], "not-connected", "{path}");
    }
    let p = gw.get("/gatt/nodes/zz/services").await.problem(400);
    assert_eq!(p["field"], "node");
}

#[tokio::test(start_paused = true)]
async fn discovery_lists_services_characteristics_and_descriptors() {
    let gw = connected().await;
    let node = gw.get(HRM).await.ok();
    assert_eq!(node["connected"], true);
    assert!(node["characteristics"]["href"].is_string());

    let services = gw.get(&format!("{HRM}/services")).await.ok();
    assert_eq!(
        uuids(&services, "services"),
        [
            "0000180a-0000-1000-8000-00805f9b34fb",
            "0000180f-0000-1000-8000-00805f9b34fb",
            "0000180d-0000-1000-8000-00805f9b34fb",
            VENDOR,
        ]
    );
    for query in [
        "uuid=180F",
        "uuid=0x180f",
        "primary=1&uuid=0000180f-0000-1000-8000-00805F9B34FB",
    ] {
        let battery = gw.get(&format!("{HRM}/services?{query}")).await.ok();
        assert_eq!(
            uuids(&battery, "services"),
            ["0000180f-0000-1000-8000-00805f9b34fb"],
            "{query}"
        );
        assert_eq!(battery["services"][0]["handle"], "0020");
    }
    let p = gw
        .get(&format!("{HRM}/services?uuid=18"))
        .await
        .problem(400);
    assert_eq!(p["field"], "uuid");

    let service = gw.get(&format!("{HRM}/services/0020")).await.ok();
    assert_eq!(service["primary"], true);
    let chars = gw
        .get(
            service["characteristics"]["href"]
                .as_str()
                .unwrap()
                .split_once(&gw.addr.to_string())
                .unwrap()
                .1,
        )
        .await
        .ok();
    assert_eq!(chars["characteristics"][0]["handle"], "0022");
    gw.get(&format!("{HRM}/services/0099")).await.problem(404);
    let p = gw.get(&format!("{HRM}/services/zz")).await.problem(400);
    assert_eq!(p["field"], "service");

    let all = gw.get(&format!("{HRM}/characteristics")).await.ok();
    assert_eq!(all["characteristics"].as_array().unwrap().len(), 10);
    let level = gw
        .get(&format!("{HRM}/characteristics?uuid=2A19"))
        .await
        .ok();
    let level = &level["characteristics"][0];
    assert_eq!(level["handle"], "0022");
    assert_eq!(level["properties"], 0x12);
    assert_eq!(level["flags"], serde_json::json!(["read", "notify"]));
    assert_eq!(level["notifying"], "none");
    assert!(
        level["service"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/services/0020")
    );
    let c = gw.get(&char_path("0042")).await.ok();
    assert_eq!(c["uuid"], "6c696d6d-6174-4000-8000-00000000f001");
    assert_eq!(c["properties"], 0x0e);
    gw.get(&char_path("0099")).await.problem(404);
    let p = gw.get(&char_path("42")).await.problem(400);
    assert_eq!(p["field"], "characteristic");

    let descriptors = gw
        .get(&format!("{}/descriptors", char_path("0042")))
        .await
        .ok();
    assert_eq!(descriptors["descriptors"][0]["handle"], "0043");
    assert_eq!(
        descriptors["descriptors"][0]["uuid"],
        "00002901-0000-1000-8000-00805f9b34fb"
    );
    let d = gw.get(&format!("{HRM}/descriptors/0043")).await.ok();
    assert!(
        d["characteristic"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/characteristics/0042")
    );
    let value = gw.get(&format!("{HRM}/descriptors/0043/value")).await.ok();
    assert_eq!(
        value["value"],
        limmat_gateway::hex::encode(b"Vendor config")
    );
}

#[tokio::test(start_paused = true)]
async fn reads_and_writes_with_property_checks_and_att_errors() {
    let gw = connected().await;
    let read = |h: &str| format!("{}/value", char_path(h));
    let level = gw.get(&read("0022")).await.ok();
    assert_eq!(level["value"], "64");
    assert_eq!(level["handle"], "0022");
    assert!(
        level["self"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/characteristics/0022/value")
    );
    assert_eq!(gw.get(&read("0012")).await.ok()["value"], "4c696d6d6174");
    assert_eq!(
        gw.get(&format!("{}?long=1", read("0012"))).await.ok()["value"],
        "4c696d6d6174"
    );

    let written = gw.put(&format!("{}/0102", read("0042"))).await.ok();
    assert_eq!(written["value"], "0102");
    assert_eq!(gw.get(&read("0042")).await.ok()["value"], "0102");
    gw.put(&format!("{}/0A0B?noresponse=1", read("0042")))
        .await
        .ok();
    assert_eq!(gw.get(&read("0042")).await.ok()["value"], "0a0b");
    gw.put(&format!("{}/0c?long=1", read("0042"))).await.ok();
    assert_eq!(gw.get(&read("0042")).await.ok()["value"], "0c");

    // Body form [O], which allows an empty value.
    let body = br#"{"value": "0D0E"}"#;
    let v = gw
        .send("PUT", &read("0042"), Some(("application/json", body)))
        .await
        .ok();
    assert_eq!(v["value"], "0d0e");
    gw.send("PUT", &read("0042"), Some(("text/plain", b"0d0e")))
        .await
        .problem(415);
    let p = gw
        .send(
            "PUT",
            &read("0042"),
            Some(("application/json", br#"{"valu": "00"}"#)),
        )
        .await
        .problem(400);
    assert_eq!(p["field"], "valu");

    let p = gw.put(&format!("{}/01", read("0022"))).await.problem(405);
    assert_eq!(p["code"], "not-permitted");
    let p = gw
        .put(&format!("{}/01?noresponse=1", read("0037")))
        .await
        .problem(405);
    assert_eq!(p["code"], "not-permitted");
    let p = gw.get(&read("0032")).await.problem(405);
    assert_eq!(p["code"], "not-permitted");

    let p = gw
        .put(&format!("{}/{}", read("0042"), "00".repeat(21)))
        .await
        .problem(400);
    assert_eq!(p["attError"], 13);
    // Malformed hex is refused before the properties are even looked at.
    for bad in ["012", "0g", "zz"] {
        let p = gw
            .put(&format!("{}/{bad}", read("0022")))
            .await
            .problem(400);
        assert_eq!(p["field"], "value", "{bad}");
    }
    let p = gw
        .put(&format!("{}/{}", read("0042"), "00".repeat(513)))
        .await
        .problem(400);
    assert_eq!(p["field"], "value");
    assert_eq!(gw.get(&read("0042")).await.ok()["value"], "0d0e");

    let p = gw.get(&read("0045")).await.problem(403);
    assert_eq!(p["attError"], 15);
    let p = gw.put(&format!("{}/02", read("0037"))).await.problem(400);
    assert_eq!(p["attError"], 128);
    gw.put(&format!("{}/01", read("0037"))).await.ok();
    let p = gw
        .put(&format!("{}/01?noresponse=1&long=1", read("0042")))
        .await
        .problem(400);
    assert_eq!(p["field"], "long");
}

#[tokio::test(start_paused = true)]
async fn a_notification_stream_delivers_at_1_hz_and_closing_it_turns_notification_off() {
    let gw = connected().await;
    let mut events = gw
        .events(&format!("{}/value?notify=1&event=1", char_path("0032")))
        .await;
    let c = gw.get(&char_path("0032")).await.ok();
    assert_eq!(c["notifying"], "notify");
    let mut times = Vec::new();
    for expected_id in 1..=3 {
        let event = events
            .next_within(Duration::from_secs(5))
            .await
            .expect("a notification");
        assert_eq!(event.event, "notification");
        assert_eq!(event.id.as_deref(), Some(expected_id.to_string().as_str()));
        let data = event.json();
        assert_eq!(data["handle"], "0032");
        let value = limmat_gateway::hex::decode(data["value"].as_str().unwrap()).unwrap();
        assert_eq!(value.len(), 2);
        assert!((60..=90).contains(&value[1]), "{value:?}");
        let at = humantime::parse_rfc3339(data["timestamp"].as_str().unwrap()).unwrap();
        times.push(at);
    }
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert_eq!(gap, Duration::from_secs(1));
    }
    // A second stream shares the subscription; the cached value follows it.
    let cached = gw
        .get(&format!("{}/value?notify=1", char_path("0032")))
        .await
        .ok();
    assert!(cached["value"].is_string());
    assert!(cached["timestamp"].is_string());

    drop(events);
    let mut notifying = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        notifying = gw.get(&char_path("0032")).await.ok()["notifying"]
            .as_str()
            .unwrap()
            .to_string();
        if notifying == "none" {
            break;
        }
    }
    assert_eq!(notifying, "none");
    gw.get(&format!("{}/value?notify=1", char_path("0032")))
        .await
        .problem(412);
    let p = gw
        .get(&format!("{}/value?indicate=1&event=1", char_path("0032")))
        .await
        .problem(405);
    assert_eq!(p["code"], "not-permitted");
}

#[tokio::test(start_paused = true)]
async fn the_cached_value_needs_notification_on() {
    let gw = connected().await;
    let cached = format!("{}/value?notify=1", char_path("0022"));
    let p = gw.get(&cached).await.problem(412);
    assert_eq!(p["status"], 412);
    let c = gw
        .put(&format!("{}?notify=1", char_path("0022")))
        .await
        .ok();
    assert_eq!(c["notifying"], "notify");
    let first = gw.get(&cached).await.ok();
    assert_eq!(first["handle"], "0022");
    // Battery Level notifies when it changes, once a minute.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let later = gw.get(&cached).await.ok();
    assert_eq!(later["value"], "63");
    assert!(later["timestamp"].is_string());
    let c = gw
        .put(&format!("{}?notify=0", char_path("0022")))
        .await
        .ok();
    assert_eq!(c["notifying"], "none");
    gw.get(&cached).await.problem(412);
    let p = gw
        .put(&format!("{}?notify=1", char_path("0012")))
        .await
        .problem(405);
    assert_eq!(p["code"], "not-permitted");
    let p = gw.put(&char_path("0022")).await.problem(400);
    assert_eq!(p["field"], "notify");
}

#[tokio::test(start_paused = true)]
async fn cccd_writes_are_translated_and_reads_report_the_state() {
    let gw = connected().await;
    let cccd = format!("{HRM}/descriptors/0023/value");
    assert_eq!(gw.get(&cccd).await.ok()["value"], "0000");
    assert_eq!(gw.put(&format!("{cccd}/0100")).await.ok()["value"], "0100");
    assert_eq!(gw.get(&char_path("0022")).await.ok()["notifying"], "notify");
    assert_eq!(gw.get(&cccd).await.ok()["value"], "0100");
    gw.put(&format!("{cccd}/0000")).await.ok();
    assert_eq!(gw.get(&char_path("0022")).await.ok()["notifying"], "none");
    let p = gw.put(&format!("{cccd}/0300")).await.problem(400);
    assert_eq!(p["field"], "value");
    // Battery Level cannot indicate.
    gw.put(&format!("{cccd}/0200")).await.problem(405);
    let counter = format!("{HRM}/descriptors/0048/value");
    gw.put(&format!("{counter}/0200")).await.ok();
    assert_eq!(gw.get(&counter).await.ok()["value"], "0200");
    assert_eq!(
        gw.get(&char_path("0047")).await.ok()["notifying"],
        "indicate"
    );
}

#[tokio::test(start_paused = true)]
async fn indications_increase_and_a_link_loss_ends_open_streams() {
    let config = SimConfig {
        peripherals: vec![PeripheralConfig {
            address: Some("c0ffee000010".parse().unwrap()),
            drop_link_after_s: Some(5.0),
            ..PeripheralConfig::default()
        }],
        ..SimConfig::default()
    };
    let gw = connected_with(config).await;
    let mut counter = gw
        .events(&format!("{}/value?indicate=1&event=1", char_path("0047")))
        .await;
    let mut heart = gw
        .events(&format!("{}/value?notify=1&event=1", char_path("0032")))
        .await;
    let mut last = None;
    for _ in 0..2 {
        let event = counter
            .next_within(Duration::from_secs(3))
            .await
            .expect("an indication");
        assert_eq!(event.event, "indication");
        let bytes = limmat_gateway::hex::decode(event.json()["value"].as_str().unwrap()).unwrap();
        let value = u32::from_be_bytes(bytes.try_into().unwrap());
        assert!(last.is_none_or(|l| value > l), "{value} after {last:?}");
        last = Some(value);
    }
    for events in [&mut counter, &mut heart] {
        let mut end = None;
        while let Some(event) = events.next_within(Duration::from_secs(10)).await {
            end = Some(event.event.clone());
            if event.event == "disconnected" {
                assert_eq!(event.json()["node"], "c0ffee000010");
                assert_eq!(event.json()["reason"], "link-loss");
                break;
            }
        }
        assert_eq!(end.as_deref(), Some("disconnected"));
        assert!(events.next_within(Duration::from_secs(1)).await.is_none());
    }
    let p = gw.get(&char_path("0047")).await.problem(412);
    assert_eq!(p["code"], "not-connected");
}

#[tokio::test(start_paused = true)]
async fn disconnecting_ends_the_node_s_streams() {
    let gw = connected().await;
    let mut events = gw
        .events(&format!("{}/value?notify=1&event=1", char_path("0032")))
        .await;
    let first = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.event, "notification");
    let node = gw.put("/gap/nodes/c0ffee000010?enable=0").await.ok();
    assert_eq!(node["connected"], false);
    loop {
        let event = events
            .next_within(Duration::from_secs(5))
            .await
            .expect("disconnected before the end");
        if event.event == "disconnected" {
            assert_eq!(event.json()["reason"], "requested");
            break;
        }
    }
    assert!(events.next_within(Duration::from_secs(5)).await.is_none());
    gw.get(&char_path("0032")).await.problem(412);
}
