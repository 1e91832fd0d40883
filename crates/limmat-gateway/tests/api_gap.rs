//! The GAP half of the REST API (`gateway-api.md` §1.2, §1.3, §2.2, §2.4, §2.5) against the
//! real simulator, served on a real listener and reached with a real HTTP client, under paused
//! tokio time: checklist items 1, 2, 4–10, 21, 22 (GAP part) and 49.

mod api_support;

use api_support::Gateway;
use limmat_gateway::api::ApiSettings;
use limmat_gateway::backend::sim::{SimBackend, SimConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const V1_PAYLOAD: &str = "02154c696d6d6174426561636f6e2d30303100010007c5";

async fn gateway_with(config: SimConfig, settings: ApiSettings) -> Gateway {
    let sim = SimBackend::new(&config).expect("a valid sim config");
    Gateway::start(Arc::new(sim), settings).await
}

async fn gateway() -> Gateway {
    gateway_with(SimConfig::default(), ApiSettings::default()).await
}

fn handles(list: &Value) -> Vec<String> {
    list["nodes"]
        .as_array()
        .expect("a nodes array")
        .iter()
        .map(|n| n["handle"].as_str().unwrap().to_string())
        .collect()
}

const SIX: [&str; 6] = [
    "c0ffee000001",
    "c0ffee000002",
    "c0ffee000003",
    "c0ffee000004",
    "c0ffee000010",
    "c0ffee000011",
];

#[tokio::test(start_paused = true)]
async fn an_active_scan_lists_the_six_simulated_devices() {
    let gw = gateway().await;
    let started = Instant::now();
    let list = gw.get("/gap/nodes?active=1").await.ok();
    assert!(started.elapsed() <= Duration::from_millis(2500));
    assert_eq!(handles(&list), SIX);
    assert_eq!(list["scan"]["mode"], "active");
    assert_eq!(list["scan"]["requested"], "active");
    assert_eq!(list["scan"]["durationMs"], 2000);
    let host = gw.addr.to_string();
    assert_eq!(list["self"]["href"], format!("http://{host}/gap/nodes"));
    let ibeacon = &list["nodes"][0];
    assert_eq!(
        ibeacon["self"]["href"],
        format!("http://{host}/gap/nodes/c0ffee000001")
    );
    assert_eq!(ibeacon["bdaddr"], "C0:FF:EE:00:00:01");
    assert_eq!(ibeacon["bdaddrType"], "random");
    assert_eq!(ibeacon["adSource"], "raw");
    assert_eq!(ibeacon["manufacturerData"]["004c"], V1_PAYLOAD);
    assert_eq!(ibeacon["serviceData"], serde_json::json!({}));
    assert_eq!(ibeacon["connected"], false);
    assert_eq!(ibeacon["enabled"], false);
    let ad = ibeacon["AD"].as_array().unwrap();
    assert_eq!(ad[0], serde_json::json!({"ADType": 1, "ADValue": "06"}));
    assert_eq!(ad[1]["ADType"], 255);
    assert_eq!(ad[1]["ADValue"], format!("4c00{V1_PAYLOAD}"));
    let last_seen = ibeacon["lastSeen"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(last_seen).is_ok(), "{last_seen}");
    assert!(
        last_seen.ends_with('Z') && last_seen.len() == 24,
        "{last_seen}"
    );
    let hrm = &list["nodes"][4];
    assert_eq!(hrm["name"], "Limmat HRM");
    let uuids = hrm["serviceUuids"].as_array().unwrap();
    assert!(uuids.contains(&"0000180d-0000-1000-8000-00805f9b34fb".into()));
    assert!(uuids.contains(&"0000180f-0000-1000-8000-00805f9b34fb".into()));

    // Without a mode the scan is active; a window waits no longer than duration + 500 ms.
    let started = Instant::now();
    let list = gw.get("/gap/nodes?duration=100").await.ok();
    assert!(started.elapsed() <= Duration::from_millis(600));
    assert_eq!(list["scan"]["requested"], "active");
    assert_eq!(list["scan"]["durationMs"], 100);
}

#[tokio::test(start_paused = true)]
async fn a_passive_request_on_a_backend_without_passive_scanning_is_served_actively() {
    let config = SimConfig {
        passive_scan: false,
        ..SimConfig::default()
    };
    let gw = gateway_with(config, ApiSettings::default()).await;
    let list = gw.get("/gap/nodes?passive=1").await.ok();
    assert_eq!(list["scan"]["mode"], "active");
    assert_eq!(list["scan"]["requested"], "passive");
    assert_eq!(handles(&list), SIX);

    let gw = gateway().await;
    let list = gw.get("/gap/nodes?passive=1&duration=1500").await.ok();
    assert_eq!(list["scan"]["mode"], "passive");
    assert_eq!(list["scan"]["requested"], "passive");
}

#[tokio::test(start_paused = true)]
async fn scan_parameters_are_checked() {
    let gw = gateway().await;
    for (query, field) in [
        ("duration=99", "duration"),
        ("duration=30001", "duration"),
        ("duration=soon", "duration"),
        ("duration=100&duration=200", "duration"),
        ("active=1&passive=1", "passive"),
        ("actve=1", "actve"),
        ("event=1&filter_company=4c", "filter_company"),
        ("event=1&duration=100", "duration"),
    ] {
        let p = gw.get(&format!("/gap/nodes?{query}")).await.problem(400);
        assert_eq!(p["field"], field, "{query}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_sse_scan_streams_only_what_passes_its_filters() {
    let gw = gateway().await;
    let mut events = gw
        .events("/gap/nodes?event=1&filter_rssi=-70&filter_company=004c")
        .await;
    for _ in 0..3 {
        let event = events
            .next_within(Duration::from_secs(3600))
            .await
            .expect("an advertisement");
        assert_eq!(event.event, "advertisement");
        let node = event.json();
        assert_eq!(node["handle"], "c0ffee000001");
        assert!(node["rssi"].as_i64().unwrap() >= -70, "{node}");
        assert_eq!(node["manufacturerData"]["004c"], V1_PAYLOAD);
    }

    let mut events = gw
        .events("/gap/nodes?event=1&passive=1&filter_name=Limmat*&filter_duplicates=1")
        .await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let node = events
            .next_within(Duration::from_secs(60))
            .await
            .unwrap()
            .json();
        seen.push(node["handle"].as_str().unwrap().to_string());
    }
    seen.sort();
    // Each name once: the duplicates filter drops repeats of unchanged data.
    assert_eq!(seen, ["c0ffee000010", "c0ffee000011"]);

    let mut events = gw
        .events("/gap/nodes?event=1&filter_mac=C0:FF:EE:00:00:03&filter_uuid=0xFEAA")
        .await;
    let node = events
        .next_within(Duration::from_secs(60))
        .await
        .unwrap()
        .json();
    assert_eq!(node["handle"], "c0ffee000003");
}

#[tokio::test(start_paused = true)]
async fn nodes_are_found_by_either_form_and_bad_ones_are_refused() {
    let gw = gateway().await;
    gw.get("/gap/nodes?duration=1500").await.ok();
    let node = gw.get("/gap/nodes/c0ffee000001").await.ok();
    assert_eq!(node["bdaddr"], "C0:FF:EE:00:00:01");
    let same = gw.get("/gap/nodes/C0:FF:EE:00:00:01").await.ok();
    assert_eq!(same["handle"], "c0ffee000001");
    let named = gw.get("/gap/nodes/c0ffee000010?name=1").await.ok();
    assert_eq!(named["name"], "Limmat HRM");

    let p = gw.get("/gap/nodes/zz").await.problem(400);
    assert_eq!(p["field"], "node");
    gw.get("/gap/nodes/c0ffee0000ff").await.problem(404);
    let p = gw.put("/gap/nodes/zz?connect=1").await.problem(400);
    assert_eq!(p["field"], "node");
}

#[tokio::test(start_paused = true)]
async fn connect_is_idempotent_and_an_unreachable_node_times_out() {
    let gw = gateway().await;
    gw.get("/gap/nodes?duration=1500").await.ok();
    for _ in 0..2 {
        let node = gw.put("/gap/nodes/c0ffee000010?connect=1").await.ok();
        assert_eq!(node["connected"], true);
        assert_eq!(node["handle"], "c0ffee000010");
    }
    let listed = gw.get("/gap/nodes?enable=1").await.ok();
    assert_eq!(handles(&listed), ["c0ffee000010"]);
    let gatt = gw.get("/gatt/nodes").await.ok();
    assert_eq!(handles(&gatt), ["c0ffee000010"]);
    assert!(
        gatt["nodes"][0]["services"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/gatt/nodes/c0ffee000010/services")
    );

    let started = Instant::now();
    let p = gw
        .put("/gap/nodes/c0ffee000011?connect=1&timeout=200")
        .await
        .problem(504);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(p["code"], "connect-timeout");

    let p = gw
        .put("/gap/nodes/c0ffee000010?connect=1&timeout=50")
        .await
        .problem(400);
    assert_eq!(p["field"], "timeout");
    let p = gw
        .put("/gap/nodes/c0ffee000010?connect=1&interval=6&latency=0")
        .await
        .problem(501);
    assert_eq!(p["code"], "not-implemented");

    for _ in 0..2 {
        let node = gw.put("/gap/nodes/c0ffee000010?enable=0").await.ok();
        assert_eq!(node["connected"], false);
    }
    assert_eq!(
        handles(&gw.get("/gap/nodes?enable=1").await.ok()),
        [] as [&str; 0]
    );
}

#[tokio::test(start_paused = true)]
async fn the_connection_resource_takes_an_optional_json_body() {
    let gw = gateway().await;
    gw.get("/gap/nodes?duration=1500").await.ok();
    let path = "/gap/nodes/c0ffee000010/connection";
    let node = gw.send("POST", path, None).await.ok();
    assert_eq!(node["connected"], true);
    let node = gw.send("DELETE", path, None).await.ok();
    assert_eq!(node["connected"], false);
    let body = br#"{"timeoutMs": 5000, "enable": false}"#;
    let node = gw
        .send("POST", path, Some(("application/json", body)))
        .await
        .ok();
    assert_eq!(node["connected"], true);

    gw.send("POST", path, Some(("text/plain", b"hello")))
        .await
        .problem(415);
    let p = gw
        .send("POST", path, Some(("application/json", b"{nope")))
        .await
        .problem(400);
    assert_eq!(p["field"], "body");
    let p = gw
        .send(
            "POST",
            path,
            Some(("application/json", br#"{"timeout": 5}"#)),
        )
        .await
        .problem(400);
    assert_eq!(p["field"], "timeout");
    let p = gw
        .send(
            "POST",
            path,
            Some(("application/json", br#"{"timeoutMs": 1}"#)),
        )
        .await
        .problem(400);
    assert_eq!(p["field"], "timeoutMs");
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(70 * 1024));
    gw.send("POST", path, Some(("application/json", big.as_bytes())))
        .await
        .problem(413);
    let ghost = "/gap/nodes/c0ffee000011/connection";
    let p = gw
        .send(
            "POST",
            ghost,
            Some(("application/json", br#"{"timeoutMs": 100}"#)),
        )
        .await
        .problem(504);
    assert_eq!(p["code"], "connect-timeout");
}

#[tokio::test(start_paused = true)]
async fn unknown_parameters_and_methods_are_refused_with_problems() {
    let gw = gateway().await;
    gw.get("/gap/nodes?duration=1500").await.ok();
    gw.put("/gap/nodes/c0ffee000010?connect=1").await.ok();
    let p = gw
        .put("/gatt/nodes/c0ffee000010/characteristics/0022?notfy=1")
        .await
        .problem(400);
    assert_eq!(p["field"], "notfy");
    let p = gw.get("/gap/nodes/c0ffee000001?nam=1").await.problem(400);
    assert_eq!(p["field"], "nam");

    let reply = gw.send("POST", "/gap/nodes", None).await;
    let p = reply.problem(405);
    assert_eq!(p["code"], "method-not-allowed");
    let allow = reply.headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET"), "{allow}");
    let reply = gw.send("DELETE", "/gatt/nodes/c0ffee000010", None).await;
    reply.problem(405);
    assert!(reply.headers.contains_key("allow"));

    gw.get("/no/such/thing").await.problem(404);
    let p = gw.get("/management/nodes/c0ffee000010").await.problem(501);
    assert_eq!(p["code"], "not-implemented");
    gw.get("/gatt/nodes/c0ffee000010/characteristics/value?uuid=2a19")
        .await
        .problem(501);
}

#[tokio::test(start_paused = true)]
async fn routes_answer_alike_with_and_without_the_relay_prefix() {
    let settings = ApiSettings {
        domain: Some("gw-zurich-01".into()),
        ..ApiSettings::default()
    };
    let gw = gateway_with(SimConfig::default(), settings).await;
    let host = gw.addr.to_string();
    let plain = gw.get("/gap/nodes?duration=1500").await.ok();
    let prefixed = gw.get("/gw-zurich-01/gap/nodes?duration=1500").await.ok();
    assert_eq!(handles(&plain), SIX);
    assert_eq!(handles(&plain), handles(&prefixed));
    assert_eq!(
        prefixed["nodes"][0]["self"]["href"],
        format!("http://{host}/gw-zurich-01/gap/nodes/c0ffee000001")
    );
    assert_eq!(
        plain["nodes"][0]["self"]["href"],
        format!("http://{host}/gap/nodes/c0ffee000001")
    );
    // The case of the domain does not matter, a segment boundary does.
    gw.get("/GW-Zurich-01/gap/nodes/c0ffee000001").await.ok();
    gw.get("/other/gap/nodes").await.problem(404);
    gw.get("/gw-zurich-01x/gap/nodes").await.problem(404);
    let index = gw.get("/gw-zurich-01").await.ok();
    assert_eq!(
        index["links"]["nodes"]["href"],
        format!("http://{host}/gw-zurich-01/gap/nodes")
    );

    // Static resources are byte-identical apart from the prefix in their links.
    gw.put("/gap/nodes/c0ffee000010?connect=1").await.ok();
    let path = "/gatt/nodes/c0ffee000010/services";
    let plain = gw.get(path).await;
    let prefixed = gw.get(&format!("/gw-zurich-01{path}")).await;
    assert_eq!(plain.status, prefixed.status);
    let stripped = String::from_utf8_lossy(&prefixed.body).replace("/gw-zurich-01", "");
    assert_eq!(String::from_utf8_lossy(&plain.body), stripped);

    // A relay's Host is kept.
    let request = hyper::Request::builder()
        .uri("/gw-zurich-01/gap/nodes/c0ffee000001")
        .header("host", "relay.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let node = gw.request(request).await.ok();
    assert_eq!(
        node["self"]["href"],
        "http://relay.example/gw-zurich-01/gap/nodes/c0ffee000001"
    );

    let settings = ApiSettings {
        domain: Some("gw-zurich-01".into()),
        public_base_url: Some("https://gw.example/api/".into()),
        ..ApiSettings::default()
    };
    let gw = gateway_with(SimConfig::default(), settings).await;
    let node = gw.get("/gw-zurich-01/gap/nodes?duration=1500").await.ok();
    assert_eq!(
        node["nodes"][0]["self"]["href"],
        "https://gw.example/api/gap/nodes/c0ffee000001"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_guards_every_route() {
    let settings = ApiSettings {
        token: Some("s3cret".into()),
        ..ApiSettings::default()
    };
    let gw = gateway_with(SimConfig::default(), settings).await;
    let reply = gw.get("/gap/nodes?duration=100").await;
    reply.problem(401);
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    gw.get("/openapi.json").await.problem(401);
    let wrong = hyper::Request::builder()
        .uri("/")
        .header("host", "x")
        .header("authorization", "Bearer wrong")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    gw.request(wrong).await.problem(401);
    let right = hyper::Request::builder()
        .uri("/gap/nodes?duration=100")
        .header("host", "x")
        .header("authorization", "Bearer s3cret")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    gw.request(right).await.ok();
    // EventSource cannot set headers: the token may come as a parameter.
    gw.get("/gap/nodes?duration=100&access_token=s3cret")
        .await
        .ok();
    gw.get("/?access_token=s3cret").await.ok();
}

#[tokio::test(start_paused = true)]
async fn the_index_describes_the_gateway() {
    let gw = gateway().await;
    let index = gw.get("/").await.ok();
    assert_eq!(index["name"], "test-gateway");
    assert_eq!(index["backend"], "sim");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(index["capabilities"]["passiveScan"], true);
    assert_eq!(index["relay"]["configured"], false);
    assert!(index["adapter"]["address"].is_string());
    let host = gw.addr.to_string();
    assert_eq!(
        index["links"]["openapi"]["href"],
        format!("http://{host}/openapi.json")
    );
}

#[tokio::test(start_paused = true)]
async fn every_route_refuses_bodies_that_are_not_json() {
    let gw = gateway().await;
    gw.send(
        "PUT",
        "/gap/nodes/c0ffee000010?connect=1",
        Some(("text/plain", b"x")),
    )
    .await
    .problem(415);
    let big = vec![b' '; 65 * 1024];
    gw.send(
        "PUT",
        "/gap/nodes/c0ffee000010?connect=1",
        Some(("application/json", &big)),
    )
    .await
    .problem(413);
}

#[tokio::test(start_paused = true)]
async fn the_scan_goes_back_to_passive_after_active_demand_ends() {
    let gw = gateway().await;
    let list = gw.get("/gap/nodes?active=1&duration=500").await.ok();
    assert_eq!(list["scan"]["mode"], "active");
    // While the scan lingers in active mode, passive requests are served actively.
    let list = gw.get("/gap/nodes?passive=1&duration=500").await.ok();
    assert_eq!(list["scan"]["mode"], "active");
    tokio::time::sleep(Duration::from_secs(31)).await;
    let list = gw.get("/gap/nodes?passive=1&duration=1500").await.ok();
    assert_eq!(list["scan"]["mode"], "passive");
    assert_eq!(handles(&list).len(), 6);
}

#[tokio::test(start_paused = true)]
async fn connection_events_stream_links_and_timeouts() {
    let gw = gateway().await;
    gw.get("/gap/nodes?duration=1500").await.ok();
    let mut events = gw.events("/gap/connection-events").await;
    gw.put("/gap/nodes/c0ffee000010?connect=1").await.ok();
    let event = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.event, "connected");
    assert_eq!(event.json()["node"], "c0ffee000010");
    gw.put("/gap/nodes/c0ffee000011?connect=1&timeout=100")
        .await
        .problem(504);
    let event = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.event, "connect-timeout");
    assert_eq!(event.json()["node"], "c0ffee000011");
    gw.put("/gap/nodes/c0ffee000010?enable=0").await.ok();
    let event = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.event, "disconnected");
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_sends_keep_alive_comments_every_15_s() {
    let gw = gateway().await;
    let mut events = gw
        .events("/gap/nodes?event=1&filter_mac=000000000000")
        .await;
    let started = Instant::now();
    let chunk = tokio::time::timeout(Duration::from_secs(16), events.next_chunk())
        .await
        .expect("a keep-alive in time")
        .unwrap();
    assert_eq!(chunk, ": keep-alive\n\n");
    assert!(started.elapsed() >= Duration::from_secs(15));
}
