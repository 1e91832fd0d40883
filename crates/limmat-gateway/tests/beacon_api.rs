//! The Beacon API routes (§3.1) through the shared router: JSON shapes and status codes
//! (checklist 22, 25, 30, 33), the live stream's filters and resumption, and `503` while the
//! state database refuses writes.

mod beacon_support;

use axum::body::Body;
use axum::http::{Request, header};
use beacon_support::*;
use http_body_util::BodyExt;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn present_beacons_are_listed_by_key_with_links() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, _a) = Scripted::new();
    let mut engine = Engine::start(&config(dir.path()), transport);
    for r in [v1(-63), v4(-65), v6(-70), v9(-72)] {
        engine.feed(r);
    }
    for _ in 0..4 {
        engine.next_event().await;
    }
    let app = app(&engine);
    let (status, _, list) = call(&app, "GET", "/beacon/beacons", None, Body::empty()).await;
    assert_eq!(status, 200);
    assert_eq!(list["self"]["href"], "http://gw.test/beacon/beacons");
    let keys: Vec<&str> = list["beacons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [V4_KEY, V6_KEY, V9_KEY, V1_KEY]);
    let url = &list["beacons"][2];
    assert_eq!(
        url["self"]["href"],
        "http://gw.test/beacon/beacons/eddystone-url%3Ahttps%3A%2F%2Fwww.example.com%2F"
    );
    assert_eq!(url["txPower1m"], -59);
    let (status, _, one) = call(
        &app,
        "GET",
        "/beacon/beacons/eddystone-url%3Ahttps%3A%2F%2Fwww.example.com%2F",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["url"], "https://www.example.com/");
    let (status, _, filtered) = call(
        &app,
        "GET",
        "/beacon/beacons?format=ibeacon,altbeacon&minRssi=-64",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(filtered["beacons"].as_array().unwrap().len(), 1);
    let (status, _, p) = call(
        &app,
        "GET",
        "/beacon/beacons/ibeacon%3Anope",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(p["status"], 404);
    let (status, _, p) = call(&app, "GET", "/beacon/beacons?fromat=x", None, Body::empty()).await;
    assert_eq!(
        (status.as_u16(), p["field"].as_str()),
        (400, Some("fromat"))
    );
    engine.stop().await;
}

#[tokio::test]
async fn subscriptions_show_the_secret_once_and_follow_the_body_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.webhooks.max_subscriptions = 2;
    let (transport, _a) = Scripted::new();
    let engine = Engine::start(&c, transport);
    let app = app(&engine);
    let (status, headers, sub) = call(
        &app,
        "POST",
        "/beacon/subscriptions",
        JSON,
        r#"{"url":"http://127.0.0.1:9/hook","types":["beacon.left"],"filter":{"formats":["altbeacon"],"minRssi":-80},"description":"test"}"#,
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_str().unwrap();
    assert!(id.starts_with("sub_"));
    assert_eq!(
        headers[header::LOCATION],
        format!("http://gw.test/beacon/subscriptions/{id}").as_str()
    );
    assert!(sub["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["disabledReason"], serde_json::Value::Null);
    assert_eq!(sub["delivery"]["pending"], 0);
    assert_eq!(sub["types"], serde_json::json!(["beacon.left"]));
    let (status, _, one) = call(
        &app,
        "GET",
        &format!("/beacon/subscriptions/{id}"),
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(one.get("secret").is_none());
    assert_eq!(
        one["self"]["href"],
        format!("http://gw.test/beacon/subscriptions/{id}")
    );
    let (_, _, list) = call(&app, "GET", "/beacon/subscriptions", None, Body::empty()).await;
    assert!(list["subscriptions"][0].get("secret").is_none());
    assert!(!list.to_string().contains("whsec_"));

    // Body rules (checklist 22).
    let (status, _, p) = call(
        &app,
        "POST",
        "/beacon/subscriptions",
        Some("text/plain"),
        "{}",
    )
    .await;
    assert_eq!((status.as_u16(), p["status"].as_u64()), (415, Some(415)));
    let (status, _, _) = call(&app, "POST", "/beacon/subscriptions", JSON, "{nope").await;
    assert_eq!(status, 400);
    let big = format!(
        r#"{{"url":"http://127.0.0.1:9/","description":"{}"}}"#,
        "x".repeat(70_000)
    );
    let (status, _, _) = call(&app, "POST", "/beacon/subscriptions", JSON, big).await;
    assert_eq!(status, 413);
    let (status, _, p) = call(
        &app,
        "POST",
        "/beacon/subscriptions",
        JSON,
        r#"{"url":"http://127.0.0.1:9/","filtre":{}}"#,
    )
    .await;
    assert_eq!(
        (status.as_u16(), p["field"].as_str()),
        (400, Some("filtre"))
    );
    let (status, _, p) = call(
        &app,
        "POST",
        "/beacon/subscriptions",
        JSON,
        r#"{"url":"http://127.0.0.1:9/","filter":{"minRsi":1}}"#,
    )
    .await;
    assert_eq!(
        (status.as_u16(), p["field"].as_str()),
        (400, Some("minRsi"))
    );
    for url in [
        "http://10.1.2.3/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://169.254.169.254/",
    ] {
        let body = format!(r#"{{"url":"{url}"}}"#);
        let (status, _, p) = call(&app, "POST", "/beacon/subscriptions", JSON, body).await;
        assert_eq!(
            (status.as_u16(), p["code"].as_str()),
            (400, Some("url-not-allowed")),
            "{url}"
        );
    }
    let (status, _, p) = call(
        &app,
        "POST",
        "/beacon/subscriptions",
        JSON,
        r#"{"url":"ftp://127.0.0.1/"}"#,
    )
    .await;
    assert_eq!((status.as_u16(), p["field"].as_str()), (400, Some("url")));

    // The limit, then storage failure.
    let good = r#"{"url":"http://127.0.0.1:9/hook","secret":"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#;
    engine.beacons.store().set_fail_writes(true);
    let (status, _, p) = call(&app, "POST", "/beacon/subscriptions", JSON, good).await;
    assert_eq!((status.as_u16(), p["status"].as_u64()), (503, Some(503)));
    engine.beacons.store().set_fail_writes(false);
    let (status, _, _) = call(&app, "POST", "/beacon/subscriptions", JSON, good).await;
    assert_eq!(status, 201);
    let (status, _, p) = call(&app, "POST", "/beacon/subscriptions", JSON, good).await;
    assert_eq!(
        (status.as_u16(), p["code"].as_str()),
        (409, Some("max-subscriptions"))
    );

    // PATCH disables, replay on a disabled subscription is 412, DELETE is 204 then 404.
    let (status, _, patched) = call(
        &app,
        "PATCH",
        &format!("/beacon/subscriptions/{id}"),
        JSON,
        r#"{"enabled":false}"#,
    )
    .await;
    assert_eq!(
        (status.as_u16(), patched["disabledReason"].as_str()),
        (200, Some("manual"))
    );
    let (status, _, _) = call(
        &app,
        "POST",
        &format!("/beacon/subscriptions/{id}/dead-letters/replay"),
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 412);
    let (status, _, dl) = call(
        &app,
        "GET",
        &format!("/beacon/subscriptions/{id}/dead-letters?limit=10"),
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(dl["deadLetters"], serde_json::json!([]));
    let (status, _, _) = call(
        &app,
        "GET",
        &format!("/beacon/subscriptions/{id}/dead-letters?limit=0"),
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = call(
        &app,
        "DELETE",
        &format!("/beacon/subscriptions/{id}"),
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = call(
        &app,
        "GET",
        &format!("/beacon/subscriptions/{id}"),
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, 404);
    engine.stop().await;
}

/// Read SSE frames until `n` events (not comments) have arrived.
async fn sse_events(body: &mut Body, n: usize) -> Vec<(Option<String>, String, String)> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an SSE frame within 5 s")
            .expect("stream open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_string();
                }
            }
            if !event.is_empty() {
                events.push((id, event, data));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_stream_filters_by_type_and_format_and_resumes_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, _a) = Scripted::new();
    let mut engine = Engine::start(&config(dir.path()), transport);
    let app = app(&engine);
    let request = Request::get("/beacon/events?type=beacon.left&format=altbeacon")
        .header(header::HOST, "gw.test")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    engine.feed(v1(-63));
    engine.feed(v4(-63));
    // Both enter, both leave after 0.6 s of silence.
    let mut types = Vec::new();
    while types
        .iter()
        .filter(|t: &&String| t.as_str() == "beacon.left")
        .count()
        < 2
    {
        types.push(
            engine.next_event().await["type"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let events = sse_events(&mut body, 1).await;
    let (id, event, data) = &events[0];
    let json: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event, "beacon.left");
    assert_eq!(json["data"]["beacon"]["format"], "altbeacon");
    assert_eq!(id.as_deref(), Some(json["sequence"].to_string().as_str()));

    // Resume after sequence 1: the log replays 2.. in order.
    let request = Request::get("/beacon/events")
        .header(header::HOST, "gw.test")
        .header("Last-Event-ID", "1")
        .body(Body::empty())
        .unwrap();
    let mut body = app.clone().oneshot(request).await.unwrap().into_body();
    let replayed = sse_events(&mut body, 3).await;
    let ids: Vec<_> = replayed
        .iter()
        .map(|(id, _, _)| id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["2", "3", "4"]);
    let (status, _, p) = call(
        &app,
        "GET",
        "/beacon/events?type=beacon.lft",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!((status.as_u16(), p["field"].as_str()), (400, Some("type")));
    engine.stop().await;
}

#[tokio::test]
async fn a_resume_older_than_the_log_gets_a_gap_then_what_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.beacons.log_retention = Duration::from_millis(1);
    let (transport, _a) = Scripted::new();
    let mut engine = Engine::start(&c, transport);
    let app = app(&engine);
    engine.feed(v1(-63));
    engine.next_event().await;
    // A later commit trims the first entry, which is past its retention by then.
    tokio::time::sleep(Duration::from_millis(5)).await;
    engine.feed(v4(-63));
    let second = engine.next_event().await;
    assert_eq!(second["sequence"], 2);
    let request = Request::get("/beacon/events?lastEventId=0")
        .header(header::HOST, "gw.test")
        .body(Body::empty())
        .unwrap();
    let mut body = app.clone().oneshot(request).await.unwrap().into_body();
    let events = sse_events(&mut body, 2).await;
    assert_eq!(events[0].1, "gap");
    let gap: serde_json::Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(gap, serde_json::json!({"requested": 0, "oldest": 2}));
    assert_eq!(events[1].0.as_deref(), Some("2"));
    engine.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_beacon_route() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, _a) = Scripted::new();
    let engine = Engine::start(&config(dir.path()), transport);
    let (status, _, doc) = call(&app(&engine), "GET", "/openapi.json", None, Body::empty()).await;
    assert_eq!(status, 200);
    for (path, method) in [
        ("/beacon/beacons", "get"),
        ("/beacon/beacons/{key}", "get"),
        ("/beacon/events", "get"),
        ("/beacon/subscriptions", "post"),
        ("/beacon/subscriptions", "get"),
        ("/beacon/subscriptions/{id}", "get"),
        ("/beacon/subscriptions/{id}", "patch"),
        ("/beacon/subscriptions/{id}", "delete"),
        ("/beacon/subscriptions/{id}/dead-letters", "get"),
        ("/beacon/subscriptions/{id}/dead-letters", "delete"),
        ("/beacon/subscriptions/{id}/dead-letters/replay", "post"),
        (
            "/beacon/subscriptions/{id}/dead-letters/{msg_id}/replay",
            "post",
        ),
        ("/beacon/subscriptions/{id}/dead-letters/{msg_id}", "delete"),
        ("/beacon/subscriptions/{id}/ping", "post"),
        ("/beacon/subscriptions/{id}/rotate-secret", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    engine.stop().await;
}
