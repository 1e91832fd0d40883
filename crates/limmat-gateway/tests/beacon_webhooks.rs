//! The webhook scheduler against a scripted transport (checklist 36–43): backoff, Retry-After,
//! 410, the retry budget and replay, hanging receivers, ordering, and a stop between a 2xx
//! and its commit.

mod beacon_support;

use beacon_support::*;
use limmat_gateway::events::Filter;
use limmat_gateway::store::records::BatchSpec;
use limmat_gateway::webhook::{FailureKind, Outcome};
use std::time::Duration;

fn add(engine: &Engine, batch: Option<BatchSpec>) -> String {
    engine
        .beacons
        .store()
        .create_subscription(subscription(batch, Filter::default()))
        .unwrap()
        .sub
        .id
}

fn body(a: &Attempt) -> serde_json::Value {
    serde_json::from_str(&a.body).unwrap()
}

#[tokio::test]
async fn three_failures_then_success_is_four_attempts_spaced_by_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, mut attempts) = Scripted::new();
    let engine = Engine::start(&quiet_config(dir.path()), transport.clone());
    let sub = add(&engine, None);
    transport.script(&sub, [failed(500), failed(500), failed(500)]);
    engine.feed(v1(-63));
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_attempt(&mut attempts).await);
    }
    assert!(
        seen.iter()
            .all(|a| a.msg_id == seen[0].msg_id && a.body == seen[0].body)
    );
    // base 50 ms, factor 2, jitter ≥ 0.75: gaps of at least 37, 75, 150 ms.
    for (i, min_ms) in [37u64, 75, 150].into_iter().enumerate() {
        let gap = seen[i + 1].at - seen[i].at;
        assert!(gap >= Duration::from_millis(min_ms), "gap {i}: {gap:?}");
    }
    // Delivered: the counters say so once the commit is in.
    let d = wait_for(&engine, &sub, |v| v.pending == 0).await;
    assert_eq!(
        (d.sub.delivery.delivered, d.sub.delivery.failed_attempts),
        (1, 3)
    );
    assert_eq!(d.sub.status(), "active");
    engine.stop().await;
}

#[tokio::test]
async fn retry_after_delays_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, mut attempts) = Scripted::new();
    let engine = Engine::start(&quiet_config(dir.path()), transport.clone());
    let sub = add(&engine, None);
    transport.script(
        &sub,
        [Outcome::Failed {
            kind: FailureKind::Status,
            status: Some(503),
            retry_after: Some(Duration::from_secs(2)),
        }],
    );
    engine.feed(v1(-63));
    let first = next_attempt(&mut attempts).await;
    let second = next_attempt(&mut attempts).await;
    assert!(second.at - first.at >= Duration::from_secs(2));
    assert_eq!(first.msg_id, second.msg_id);
    engine.stop().await;
}

#[tokio::test]
async fn gone_disables_and_moves_the_queue_to_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, mut attempts) = Scripted::new();
    let mut engine = Engine::start(&quiet_config(dir.path()), transport.clone());
    let sub = add(&engine, None);
    transport.script(&sub, [Outcome::Gone]);
    // Both reports land in one group commit, so the queue holds two messages.
    engine.feed(v1(-63));
    engine.feed(v4(-63));
    engine.next_event().await;
    engine.next_event().await;
    let _ = next_attempt(&mut attempts).await;
    assert_disabled_with_two_dead(&engine, &sub, "gone", "gone").await;
    // New events are not queued for it.
    engine.feed(v9(-63));
    wait_for(&engine, &sub, |v| v.pending == 0).await;
    engine.stop().await;
}

#[tokio::test]
async fn the_retry_budget_makes_a_dead_letter_that_replays_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = quiet_config(dir.path());
    c.webhooks.max_attempts = 3;
    let (transport, mut attempts) = Scripted::new();
    let engine = Engine::start(&c, transport.clone());
    let sub = add(&engine, None);
    transport.script(&sub, [failed(500), failed(500), failed(500)]);
    engine.feed(v1(-63));
    let first = next_attempt(&mut attempts).await;
    next_attempt(&mut attempts).await;
    next_attempt(&mut attempts).await;
    wait_for(&engine, &sub, |v| v.dead_letters == 1).await;
    let dead = engine
        .beacons
        .store()
        .dead_letters(&sub, None, 100)
        .unwrap();
    assert_eq!(dead[0].meta.reason, "retry-budget");
    assert_eq!(dead[0].meta.id, first.msg_id);
    assert_eq!(dead[0].meta.attempts, 3);
    let now = engine.beacons.now_ms();
    engine
        .beacons
        .store()
        .replay(&sub, Some(&first.msg_id), now)
        .unwrap();
    engine.beacons.wake_scheduler();
    let replayed = next_attempt(&mut attempts).await;
    assert_eq!(
        (replayed.msg_id.as_str(), replayed.body.as_str()),
        (first.msg_id.as_str(), first.body.as_str())
    );
    wait_for(&engine, &sub, |v| v.pending == 0 && v.dead_letters == 0).await;
    engine.stop().await;
}

#[tokio::test]
async fn a_hanging_receiver_does_not_block_other_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, mut attempts) = Scripted::new();
    let mut engine = Engine::start(&quiet_config(dir.path()), transport.clone());
    let stuck = add(&engine, None);
    let fine = add(&engine, None);
    transport.hang(&stuck);
    for r in [v1(-63), v4(-63), v6(-63), v9(-63)] {
        engine.feed(r);
        engine.next_event().await;
    }
    let mut fine_sequences = Vec::new();
    let mut stuck_attempts = 0;
    while fine_sequences.len() < 4 {
        let a = next_attempt(&mut attempts).await;
        if a.subscription == fine {
            fine_sequences.push(body(&a)["sequence"].as_u64().unwrap());
        } else {
            stuck_attempts += 1;
        }
    }
    // Strictly in order, and the stuck one has exactly one request out.
    assert_eq!(fine_sequences, [1, 2, 3, 4]);
    assert!(stuck_attempts <= 1);
    let v = engine.beacons.store().subscription(&stuck).unwrap();
    assert_eq!(v.pending, 4);
    assert!(v.in_flight.is_some());
    engine.stop().await;
}

#[tokio::test]
async fn batches_of_100_are_contiguous_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, mut attempts) = Scripted::new();
    let engine = Engine::start(&quiet_config(dir.path()), transport.clone());
    let _sub = add(
        &engine,
        Some(BatchSpec {
            max_events: 100,
            max_delay_ms: 100,
        }),
    );
    // 150 entered/left events: a beacon every report, with a fresh minor each time.
    for minor in 0..150u16 {
        let mut r = (*v1(-63)).clone();
        let payload = r.manufacturer_data.get_mut(&0x004c).unwrap();
        payload[19..21].copy_from_slice(&minor.to_be_bytes());
        engine.feed(std::sync::Arc::new(r));
    }
    let mut expected = 1;
    let mut sizes = Vec::new();
    while expected <= 150 {
        let a = next_attempt(&mut attempts).await;
        let b = body(&a);
        assert_eq!(b["type"], "beacon.batch");
        let events = b["data"]["events"].as_array().unwrap();
        sizes.push(events.len());
        for e in events {
            assert_eq!(e["sequence"], expected);
            expected += 1;
        }
    }
    assert!(sizes.iter().all(|s| *s <= 100));
    assert_eq!(sizes.iter().sum::<usize>(), 150);
    engine.stop().await;
}

#[tokio::test]
async fn a_stop_between_a_2xx_and_its_commit_resends_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let c = quiet_config(dir.path());
    let (transport, mut attempts) = Scripted::new();
    let mut engine = Engine::start(&c, transport.clone());
    let sub = add(&engine, None);
    // The receiver takes the request (the "2xx" is on its way) but the result never reaches
    // the commit: the process stops first.
    transport.hang(&sub);
    engine.feed(v1(-63));
    let accepted = engine.next_event().await;
    let sent = next_attempt(&mut attempts).await;
    let store = engine.beacons.store().clone();
    engine.stop().await;
    drop(store);

    let (transport, mut attempts) = Scripted::new();
    let engine = Engine::start(&c, transport);
    let again = next_attempt(&mut attempts).await;
    assert_eq!(again.msg_id, sent.msg_id);
    assert_eq!(again.body, sent.body);
    assert_eq!(body(&again)["id"], accepted["id"]);
    wait_for(&engine, &sub, |v| v.pending == 0).await;
    engine.stop().await;
}

#[tokio::test]
async fn no_success_for_disable_after_disables_and_buries_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = quiet_config(dir.path());
    c.webhooks.disable_after = Duration::from_millis(300);
    let (transport, mut attempts) = Scripted::new();
    let mut engine = Engine::start(&c, transport.clone());
    let sub = add(&engine, None);
    transport.script(&sub, (0..100).map(|_| failed(503)));
    engine.feed(v1(-63));
    engine.feed(v4(-63));
    engine.next_event().await;
    engine.next_event().await;
    next_attempt(&mut attempts).await;
    assert_disabled_with_two_dead(&engine, &sub, "failing", "disabled").await;
    // Re-enabling resumes with new events only; dead letters stay.
    let now = engine.beacons.now_ms();
    engine
        .beacons
        .store()
        .update_subscription(&sub, now, |s| s.disabled_reason = None)
        .unwrap();
    transport.scripts.lock().unwrap().clear();
    engine.feed(v9(-63));
    let e = engine.next_event().await;
    let a = loop {
        let a = next_attempt(&mut attempts).await;
        if body(&a)["sequence"] == e["sequence"] {
            break a;
        }
    };
    assert_eq!(body(&a)["type"], "beacon.entered");
    let v = wait_for(&engine, &sub, |v| v.pending == 0).await;
    assert_eq!((v.sub.status(), v.dead_letters), ("active", 2));
    engine.stop().await;
}

#[tokio::test]
async fn pings_have_no_sequence_and_rotated_secrets_sign_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (transport, mut attempts) = Scripted::new();
    let engine = Engine::start(&quiet_config(dir.path()), transport.clone());
    let app = app(&engine);
    let sub = add(&engine, None);
    let (status, _, rotated) = call(
        &app,
        "POST",
        &format!("/beacon/subscriptions/{sub}/rotate-secret"),
        None,
        axum::body::Body::empty(),
    )
    .await;
    assert_eq!(status, 200);
    let secret = rotated["secret"].as_str().unwrap();
    let head_secrets = engine
        .beacons
        .store()
        .subscription(&sub)
        .unwrap()
        .sub
        .secrets;
    assert_eq!(head_secrets.len(), 2);
    assert_eq!(head_secrets[0].value, secret);
    assert!(head_secrets[1].until_ms.is_some());
    let (status, _, _) = call(
        &app,
        "POST",
        &format!("/beacon/subscriptions/{sub}/ping"),
        None,
        axum::body::Body::empty(),
    )
    .await;
    assert_eq!(status, 202);
    let a = next_attempt(&mut attempts).await;
    let ping = body(&a);
    assert_eq!(ping["type"], "webhook.ping");
    assert_eq!(ping["data"], serde_json::json!({}));
    assert!(ping.get("sequence").is_none());
    let head = engine.beacons.store().head(&sub).unwrap();
    assert!(head.is_none() || head.unwrap().secrets.len() == 2);
    engine.stop().await;
}

/// Wait until `sub` is disabled for `why`, with an empty queue and two dead letters for
/// `dead_reason`.
async fn assert_disabled_with_two_dead(engine: &Engine, sub: &str, why: &str, dead_reason: &str) {
    let v = wait_for(engine, sub, |v| !v.sub.enabled()).await;
    assert_eq!(v.sub.disabled_reason.as_deref(), Some(why));
    assert_eq!(v.pending, 0);
    let dead = engine.beacons.store().dead_letters(sub, None, 100).unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.meta.reason == dead_reason));
}

/// Wait (≤ 5 s) until a subscription's view satisfies `done`.
async fn wait_for(
    engine: &Engine,
    sub: &str,
    done: impl Fn(&limmat_gateway::store::subscriptions::SubscriptionView) -> bool,
) -> limmat_gateway::store::subscriptions::SubscriptionView {
    let mut changes = engine.beacons.store().changes();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(v) = engine.beacons.store().subscription(sub)
                && done(&v)
            {
                return v;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("condition within 5 s")
}
