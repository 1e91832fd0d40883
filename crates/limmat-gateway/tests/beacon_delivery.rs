//! End to end with real components: reports through the pipeline, subscriptions created over
//! the API, the real HTTP transport, and the real signature-verifying receiver on 127.0.0.1
//! (checklist 34–41 as the scheduler sees them).

mod beacon_support;

use beacon_support::*;
use limmat_gateway::webhook::client::HttpTransport;
use limmat_gateway::webhook::receiver::{Receiver, Reply};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const WAIT: Duration = Duration::from_secs(10);

fn key() -> Vec<u8> {
    limmat_gateway::store::delivery::secret_key(SECRET).unwrap()
}

fn start(config: &limmat_gateway::config::GatewayConfig) -> Engine {
    let transport = HttpTransport::new(&config.webhooks).unwrap();
    Engine::start(config, Arc::new(transport))
}

/// Create a subscription over the API; its id.
async fn subscribe(app: &axum::Router, url: &str, extra: &str) -> String {
    let body = format!(r#"{{"url":"{url}","secret":"{SECRET}"{extra}}}"#);
    let (status, _, sub) = call(app, "POST", "/beacon/subscriptions", JSON, body).await;
    assert_eq!(status, 201, "{sub}");
    sub["id"].as_str().unwrap().to_string()
}

async fn subscription(app: &axum::Router, id: &str) -> serde_json::Value {
    call(
        app,
        "GET",
        &format!("/beacon/subscriptions/{id}"),
        None,
        axum::body::Body::empty(),
    )
    .await
    .2
}

#[tokio::test]
async fn failures_retry_with_the_same_id_and_body_until_a_verified_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap();
    receiver.script([Reply::status(500), Reply::status(500), Reply::status(500)]);
    let engine = start(&quiet_config(dir.path()));
    let app = app(&engine);
    let id = subscribe(&app, &receiver.url("/hook"), "").await;
    engine.feed(v1(-63));
    let delivered = receiver.wait_for(1, WAIT).await.unwrap();
    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts.iter().all(|a| a.rejected.is_none()),
        "signatures verify"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.id == attempts[0].id && a.body == attempts[0].body)
    );
    for (i, min_ms) in [37u64, 75, 150].into_iter().enumerate() {
        let gap = attempts[i + 1].at - attempts[i].at;
        assert!(gap >= Duration::from_millis(min_ms), "gap {i}: {gap:?}");
    }
    assert_eq!(delivered[0].headers["limmat-subscription"], id.as_str());
    let body: serde_json::Value = serde_json::from_slice(&delivered[0].body).unwrap();
    assert_eq!(body["type"], "beacon.entered");
    assert_eq!(
        body["data"]["beacon"]["self"]["href"],
        format!(
            "http://127.0.0.1:8000/beacon/beacons/{}",
            "ibeacon%3A4c696d6d-6174-4265-6163-6f6e2d303031%3A1%3A7"
        )
    );
    // The counters follow once the 2xx is committed.
    let sub = wait_sub(&engine, &app, &id, |s| s["delivery"]["delivered"] == 1).await;
    assert_eq!(sub["delivery"]["failedAttempts"], 3);
    assert_eq!(sub["delivery"]["lastStatus"], 200);
    assert_eq!(sub["status"], "active");
    engine.stop().await;
}

#[tokio::test]
async fn a_redirect_fails_without_being_followed_and_retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap();
    let elsewhere = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap();
    receiver.script([
        Reply::status(302).header("Location", &elsewhere.url("/moved")),
        Reply::status(503).header("Retry-After", "2"),
    ]);
    let engine = start(&quiet_config(dir.path()));
    let app = app(&engine);
    subscribe(&app, &receiver.url("/hook"), "").await;
    engine.feed(v1(-63));
    receiver.wait_for(1, WAIT).await.unwrap();
    let attempts = receiver.attempts();
    assert_eq!(
        attempts.iter().map(|a| a.answered).collect::<Vec<_>>(),
        [Some(302), Some(503), Some(200)]
    );
    assert!(attempts[2].at - attempts[1].at >= Duration::from_secs(2));
    assert_eq!(elsewhere.connections(), 0, "the Location is never fetched");
    engine.stop().await;
}

#[tokio::test]
async fn gone_disables_and_the_retry_budget_dead_letter_replays_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = quiet_config(dir.path());
    c.webhooks.max_attempts = 2;
    let gone = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap();
    gone.script([Reply::status(410)]);
    let failing = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap();
    failing.script([Reply::status(500), Reply::status(500)]);
    let engine = start(&c);
    let app = app(&engine);
    let gone_id = subscribe(&app, &gone.url("/hook"), "").await;
    let failing_id = subscribe(&app, &failing.url("/hook"), "").await;
    engine.feed(v1(-63));

    let sub = wait_sub(&engine, &app, &gone_id, |s| s["status"] == "disabled").await;
    assert_eq!(sub["disabledReason"], "gone");
    let (_, _, dl) = call(
        &app,
        "GET",
        &format!("/beacon/subscriptions/{gone_id}/dead-letters"),
        None,
        axum::body::Body::empty(),
    )
    .await;
    assert_eq!(dl["deadLetters"][0]["reason"], "gone");
    assert_eq!(dl["deadLetters"][0]["body"]["type"], "beacon.entered");

    wait_sub(&engine, &app, &failing_id, |s| {
        s["delivery"]["deadLetters"] == 1
    })
    .await;
    let (_, _, dl) = call(
        &app,
        "GET",
        &format!("/beacon/subscriptions/{failing_id}/dead-letters"),
        None,
        axum::body::Body::empty(),
    )
    .await;
    let letter = &dl["deadLetters"][0];
    assert_eq!(letter["reason"], "retry-budget");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["lastStatus"], 500);
    assert_eq!(letter["events"], 1);
    let msg_id = letter["id"].as_str().unwrap();
    assert_eq!(failing.attempts()[0].id.as_deref(), Some(msg_id));
    let (status, _, _) = call(
        &app,
        "POST",
        &format!("/beacon/subscriptions/{failing_id}/dead-letters/{msg_id}/replay"),
        None,
        axum::body::Body::empty(),
    )
    .await;
    assert_eq!(status, 202);
    let delivered = failing.wait_for(1, WAIT).await.unwrap();
    assert_eq!(delivered[0].id, msg_id);
    assert_eq!(delivered[0].body, failing.attempts()[0].body);
    engine.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_while_others_deliver_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = quiet_config(dir.path());
    c.webhooks.timeout = Duration::from_secs(1);
    let hanging = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap();
    hanging.script([Reply::hang()]);
    let fine = Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap();
    let mut engine = start(&c);
    let app = app(&engine);
    let hanging_id = subscribe(&app, &hanging.url("/hook"), "").await;
    subscribe(&app, &fine.url("/hook"), "").await;
    for r in [v1(-63), v4(-63), v6(-63), v9(-63)] {
        engine.feed(r);
        engine.next_event().await;
    }
    let delivered = fine.wait_for(4, WAIT).await.unwrap();
    let sequences: Vec<u64> = delivered
        .iter()
        .map(|d| {
            serde_json::from_slice::<serde_json::Value>(&d.body).unwrap()["sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    let sub = wait_sub(&engine, &app, &hanging_id, |s| {
        s["delivery"]["lastError"] == "timeout"
    })
    .await;
    assert_eq!(sub["status"], "retrying");
    // Then it delivers everything, in order.
    let delivered = hanging.wait_for(4, WAIT).await.unwrap();
    let ids: Vec<&str> = delivered.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids[0], hanging.attempts()[0].id.as_deref().unwrap());
    engine.stop().await;
}

/// Wait (≤ 10 s) until the subscription's JSON satisfies `done`.
async fn wait_sub(
    engine: &Engine,
    app: &axum::Router,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut changes = engine.beacons.store().changes();
    tokio::time::timeout(WAIT, async {
        loop {
            let sub = subscription(app, id).await;
            if done(&sub) {
                return sub;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("condition within 10 s")
}
