//! The beacon pipeline end to end on a real redb file: reports from the spec vectors in,
//! accepted events out (checklist 25–29), with restarts on the same state directory.

mod beacon_support;

use beacon_support::*;
use std::time::Duration;

fn keys_of(engine: &Engine) -> Vec<String> {
    engine
        .beacons
        .present()
        .into_iter()
        .map(|(b, _)| b.key())
        .collect()
}

#[tokio::test]
async fn first_sightings_enter_once_and_are_listed_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, _attempts) = Scripted::new();
    let mut engine = Engine::start(&config(dir.path()), transport);
    for report in [v1(-63), v4(-65), v6(-70), v9(-72)] {
        engine.feed(report);
    }
    let mut entered = Vec::new();
    for _ in 0..4 {
        let e = engine.next_event().await;
        assert_eq!(e["type"], "beacon.entered");
        assert_eq!(e["gateway"], "limmat-test");
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        entered.push(e["data"]["beacon"]["key"].as_str().unwrap().to_string());
    }
    entered.sort();
    let mut expected = vec![V1_KEY, V4_KEY, V6_KEY, V9_KEY];
    expected.sort();
    assert_eq!(entered, expected);
    assert_eq!(keys_of(&engine), expected);
    engine.stop().await;
}

#[tokio::test]
async fn updates_are_rate_limited_and_silence_leaves_once() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, _attempts) = Scripted::new();
    let mut engine = Engine::start(&config(dir.path()), transport);
    engine.feed(v1(-63));
    let entered = engine.next_event().await;
    assert_eq!(entered["type"], "beacon.entered");
    assert_eq!(
        entered["data"]["raw"]["manufacturerData"]["004c"],
        "02154c696d6d6174426561636f6e2d30303100010007c5"
    );
    // Sightings every 50 ms for ~1 s: at most one update per 0.3 s.
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    for i in 0..20 {
        ticker.tick().await;
        engine.feed(v1(-60 - (i % 5)));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut updates = Vec::new();
    let left = loop {
        let e = engine.next_event().await;
        match e["type"].as_str().unwrap() {
            "beacon.updated" => updates.push(e),
            "beacon.left" => break e,
            other => panic!("unexpected {other}"),
        }
    };
    assert!(!updates.is_empty());
    assert!(
        updates.len() as f64 <= elapsed / 0.3 + 1.0,
        "{} updates in {elapsed} s",
        updates.len()
    );
    let u = &updates[0]["data"];
    assert!(u["rssiMin"].as_i64().unwrap() <= u["rssiMax"].as_i64().unwrap());
    assert!(u["sightings"].as_u64().unwrap() >= 1);
    // One left, durationS = lastSeen − firstSeen, reason timeout.
    let beacon = &left["data"]["beacon"];
    let first = humantime::parse_rfc3339(beacon["firstSeen"].as_str().unwrap()).unwrap();
    let last = humantime::parse_rfc3339(beacon["lastSeen"].as_str().unwrap()).unwrap();
    let duration = last.duration_since(first).unwrap().as_secs_f64();
    assert!((left["data"]["durationS"].as_f64().unwrap() - duration).abs() < 0.0011);
    assert_eq!(left["data"]["reason"], "timeout");
    assert_eq!(beacon["sightings"], 21);
    assert!(keys_of(&engine).is_empty());
    // Sequences are strictly increasing.
    let mut last_seq = entered["sequence"].as_u64().unwrap();
    for e in updates.iter().chain([&left]) {
        let s = e["sequence"].as_u64().unwrap();
        assert!(s > last_seq);
        last_seq = s;
    }
    engine.stop().await;
}

#[tokio::test]
async fn interleaved_tlm_gives_rate_limited_telemetry_naming_the_uid() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, _attempts) = Scripted::new();
    let mut c = quiet_config(dir.path());
    c.presence.telemetry_interval = Duration::from_millis(500);
    let mut engine = Engine::start(&c, transport);
    engine.feed(v6(-70));
    assert_eq!(engine.next_event().await["type"], "beacon.entered");
    engine.feed(v12(-70));
    let t = engine.next_event().await;
    assert_eq!(t["type"], "beacon.telemetry");
    assert_eq!(t["data"]["keys"], serde_json::json!([V6_KEY]));
    assert_eq!(t["data"]["address"], "C0:FF:EE:00:00:03");
    assert_eq!(t["data"]["telemetry"]["batteryMv"], 2950);
    assert_eq!(t["data"]["telemetry"]["uptimeS"], 3600.0);
    // Within telemetry_interval (0.5 s) a second TLM gives no event, but the beacon object
    // carries the latest telemetry.
    engine.feed(v6(-70));
    engine.feed(v12(-70));
    tokio::time::timeout(Duration::from_millis(200), engine.live.recv())
        .await
        .expect_err("no second telemetry event within the interval");
    let (_, telemetry) = engine.beacons.beacon(V6_KEY).unwrap();
    assert!(telemetry.is_some());
    engine.stop().await;
}

#[tokio::test]
async fn a_restart_within_leave_after_continues_and_the_gone_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.presence.leave_after = Duration::from_secs(2);
    let (transport, _attempts) = Scripted::new();
    let mut engine = Engine::start(&c, transport);
    engine.feed(v1(-63));
    engine.feed(v4(-65));
    let mut before = std::collections::HashMap::new();
    for _ in 0..2 {
        let e = engine.next_event().await;
        before.insert(
            e["data"]["beacon"]["key"].as_str().unwrap().to_string(),
            e["data"]["beacon"].clone(),
        );
    }
    let last_sequence = engine.beacons.store().log_len().unwrap();
    engine.stop().await;

    let (transport, _attempts) = Scripted::new();
    let mut engine = Engine::start(&c, transport);
    // Reloaded: both are present before anything is heard.
    assert_eq!(keys_of(&engine), [V4_KEY, V1_KEY]);
    // Keep V1 alive; V4 stays silent.
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let left = loop {
        tokio::select! {
            _ = ticker.tick() => engine.feed(v1(-63)),
            e = engine.next_event() => {
                assert_ne!(e["type"], "beacon.entered", "no second entered: {e}");
                if e["type"] == "beacon.left" { break e; }
            }
        }
    };
    assert_eq!(left["data"]["beacon"]["key"], V4_KEY);
    assert_eq!(
        left["data"]["beacon"]["lastSeen"],
        before[V4_KEY]["lastSeen"]
    );
    assert_eq!(
        left["data"]["beacon"]["firstSeen"],
        before[V4_KEY]["firstSeen"]
    );
    assert!(left["sequence"].as_u64().unwrap() > last_sequence);
    let (v1_state, _) = engine.beacons.beacon(V1_KEY).unwrap();
    assert!(v1_state.sightings >= 2);
    assert_eq!(
        limmat_gateway::events::timestamp(v1_state.first_seen_ms),
        before[V1_KEY]["firstSeen"].as_str().unwrap()
    );
    engine.stop().await;
}

#[tokio::test]
async fn a_failing_disk_accepts_nothing_and_the_transition_happens_again() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, _attempts) = Scripted::new();
    let mut engine = Engine::start(&config(dir.path()), transport);
    engine.beacons.store().set_fail_writes(true);
    engine.feed(v1(-63));
    tokio::time::timeout(Duration::from_millis(300), engine.live.recv())
        .await
        .expect_err("nothing published without a commit");
    assert!(keys_of(&engine).is_empty());
    engine.beacons.store().set_fail_writes(false);
    engine.feed(v1(-63));
    let e = engine.next_event().await;
    assert_eq!(e["type"], "beacon.entered");
    assert_eq!(e["sequence"], 1);
    engine.stop().await;
}
