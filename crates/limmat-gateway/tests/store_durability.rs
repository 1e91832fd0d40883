//! The state database's guarantees (§5.3): exclusive lock, 0600 file, accepted events and
//! their queue places survive an unclean stop, a message leaves its queue only after a 2xx
//! (and is re-sent with the same id and body if the process stops between the 2xx and the
//! commit), and storage failures refuse writes without losing what was accepted.

mod beacon_support;

use beacon_support::*;
use limmat_gateway::events::{BeaconState, Draft, EventMeta, Filter, Raw};
use limmat_gateway::store::accept::AcceptBatch;
use limmat_gateway::store::records::BatchSpec;
use limmat_gateway::store::{Decision, Options, Store, StoreError};
use limmat_gateway::{AddressType, Beacon, Decoded, Frame};
use std::path::Path;
use std::time::Duration;

fn options(dir: &Path) -> Options {
    Options::from_config(&config(dir))
}

/// A store on `config`'s state dir with one unfiltered subscription.
fn open_with_sub(config: &limmat_gateway::config::GatewayConfig) -> (Store, String) {
    let store = Store::open(&config.gateway.state_dir, Options::from_config(config)).unwrap();
    let sub = store
        .create_subscription(subscription(None, Filter::default()))
        .unwrap()
        .sub
        .id;
    (store, sub)
}

fn ibeacon(minor: u16) -> BeaconState {
    let mut payload = hex("02154c696d6d6174426561636f6e2d30303100010007c5");
    payload[19..21].copy_from_slice(&minor.to_be_bytes());
    let Decoded::Frame(Frame::Beacon(beacon)) =
        limmat_gateway::beacon::decode_manufacturer_data(0x004c, &payload)
    else {
        panic!()
    };
    state(beacon)
}

fn state(beacon: Beacon) -> BeaconState {
    BeaconState {
        beacon,
        address: "C0:FF:EE:00:00:01".parse().unwrap(),
        address_type: AddressType::Random,
        rssi: Some(-63),
        first_seen_ms: 1_000,
        last_seen_ms: 1_000,
        sightings: 1,
    }
}

fn entered(s: &BeaconState) -> Draft {
    Draft::entered(s, None, &Raw::default(), "http://x")
}

fn updated(s: &BeaconState) -> Draft {
    Draft::updated(s, None, &Default::default(), "http://x")
}

fn left(s: &BeaconState) -> Draft {
    Draft::left(s, None, 2_000, "http://x")
}

fn accept(store: &Store, drafts: Vec<Draft>, now_ms: u64) -> Vec<u64> {
    store
        .accept(AcceptBatch {
            drafts,
            presence: Vec::new(),
            now_ms,
        })
        .unwrap()
        .into_iter()
        .map(|a| a.sequence)
        .collect()
}

#[test]
fn a_second_open_of_the_same_dir_refuses_and_the_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(dir.path())).unwrap();
    let err = Store::open(dir.path(), options(dir.path())).unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(
        err.to_string().contains("in use by another gateway"),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(limmat_gateway::store::FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(store);
    Store::open(dir.path(), options(dir.path())).unwrap();
}

#[test]
fn accepted_events_and_their_messages_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sub) = open_with_sub(&config(dir.path()));
    let b = ibeacon(7);
    let sequences = accept(&store, vec![entered(&b), updated(&b)], 1_000);
    assert_eq!(sequences, [1, 2]);
    let head = store.head(&sub).unwrap().unwrap();
    // Unclean stop: no shutdown step exists; every accepted commit was already durable.
    drop(store);
    let store = Store::open(dir.path(), options(dir.path())).unwrap();
    let view = store.subscription(&sub).unwrap();
    assert_eq!(view.pending, 2);
    let again = store.head(&sub).unwrap().unwrap();
    assert_eq!(again.meta.id, head.meta.id);
    assert_eq!(again.body, head.body);
    assert_eq!(store.log_len().unwrap(), 2);
    // Sequences go on after the reopen.
    assert_eq!(accept(&store, vec![left(&b)], 1_500), [3]);
}

#[test]
fn a_message_leaves_only_after_a_2xx_and_failures_keep_retry_state() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sub) = open_with_sub(&config(dir.path()));
    accept(&store, vec![entered(&ibeacon(7))], 1_000);
    let head = store.head(&sub).unwrap().unwrap();
    store
        .record_attempt(&sub, head.position, 2_000, 0.5, |_| Decision::Failed {
            status: Some(500),
            error: "status",
            next_attempt_ms: 2_100,
            dead_letter: false,
            disable: false,
        })
        .unwrap();
    drop(store);
    let store = Store::open(dir.path(), options(dir.path())).unwrap();
    let again = store.head(&sub).unwrap().unwrap();
    assert_eq!(
        (again.meta.id.as_str(), again.meta.attempts),
        (head.meta.id.as_str(), 1)
    );
    assert_eq!(again.meta.last_error.as_deref(), Some("status"));
    let view = store.subscription(&sub).unwrap();
    assert_eq!(view.sub.status(), "retrying");
    assert_eq!(view.sub.delivery.next_attempt_ms, Some(2_100));
    // Between a 2xx and its commit nothing changes: the message is still the head.
    store
        .record_attempt(&sub, again.position, 3_000, 0.5, |_| Decision::Delivered {
            status: 204,
        })
        .unwrap();
    assert!(store.head(&sub).unwrap().is_none());
    let d = store.subscription(&sub).unwrap().sub.delivery;
    assert_eq!(
        (d.delivered, d.failed_attempts, d.consecutive_failures),
        (1, 1, 0)
    );
}

#[test]
fn storage_failure_accepts_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sub) = open_with_sub(&config(dir.path()));
    accept(&store, vec![entered(&ibeacon(7))], 1_000);
    store.set_fail_writes(true);
    let err = store
        .accept(AcceptBatch {
            drafts: vec![entered(&ibeacon(8))],
            presence: Vec::new(),
            now_ms: 1_100,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Injected));
    assert!(!store.writable());
    assert!(
        store
            .create_subscription(subscription(None, Filter::default()))
            .is_err()
    );
    // Memory did not run ahead of the disk.
    assert_eq!(store.subscription(&sub).unwrap().pending, 1);
    assert_eq!(store.subscriptions().len(), 1);
    store.set_fail_writes(false);
    assert_eq!(accept(&store, vec![entered(&ibeacon(9))], 1_200), [2]);
    assert!(store.writable());
    drop(store);
    let store = Store::open(dir.path(), options(dir.path())).unwrap();
    assert_eq!(store.subscription(&sub).unwrap().pending, 2);
}

#[test]
fn batches_are_contiguous_in_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(dir.path())).unwrap();
    let spec = BatchSpec {
        max_events: 100,
        max_delay_ms: 500,
    };
    let sub = store
        .create_subscription(subscription(Some(spec), Filter::default()))
        .unwrap()
        .sub
        .id;
    let b = ibeacon(7);
    let drafts: Vec<Draft> = (0..250).map(|_| updated(&b)).collect();
    accept(&store, drafts, 1_000);
    let view = store.subscription(&sub).unwrap();
    assert_eq!(view.pending, 250);
    // Two full batches formed at acceptance; 50 events wait for the delay.
    let (due, next) = store.due(1_000);
    assert_eq!(due, vec![sub.clone()]);
    assert_eq!(next, Some(1_500));
    store.close_due_batches(1_499).unwrap();
    store.close_due_batches(1_500).unwrap();
    let mut expected = 1u64;
    for size in [100, 100, 50] {
        let head = store.head(&sub).unwrap().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&head.body).unwrap();
        assert_eq!(body["type"], "beacon.batch");
        assert!(body["id"].as_str().unwrap().starts_with("bat_"));
        let events = body["data"]["events"].as_array().unwrap();
        assert_eq!(events.len(), size);
        for e in events {
            assert_eq!(e["sequence"], expected);
            expected += 1;
        }
        store
            .record_attempt(&sub, head.position, 2_000, 0.5, |_| Decision::Delivered {
                status: 200,
            })
            .unwrap();
    }
    assert_eq!(store.subscription(&sub).unwrap().pending, 0);
}

#[test]
fn coalescing_drops_only_superseded_updates() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.webhooks.coalesce_threshold = 3;
    let (store, sub) = open_with_sub(&c);
    let (a, b) = (ibeacon(1), ibeacon(2));
    let drafts = vec![
        entered(&a),
        entered(&b),
        updated(&a), // 3
        updated(&a), // 4: over the threshold, supersedes 3
        updated(&b), // 5
        left(&a),    // 6
        updated(&a), // 7: a left in between, so 4 stays
        updated(&b), // 8: supersedes 5
    ];
    accept(&store, drafts, 1_000);
    let view = store.subscription(&sub).unwrap();
    assert_eq!(view.sub.delivery.coalesced, 2);
    let mut delivered = Vec::new();
    while let Some(head) = store.head(&sub).unwrap() {
        let body: serde_json::Value = serde_json::from_slice(&head.body).unwrap();
        delivered.push(body["sequence"].as_u64().unwrap());
        store
            .record_attempt(&sub, head.position, 2_000, 0.5, |_| Decision::Delivered {
                status: 200,
            })
            .unwrap();
    }
    assert_eq!(delivered, [1, 2, 4, 6, 7, 8]);
}

#[test]
fn backlog_overflow_becomes_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.webhooks.max_backlog = 3;
    let (store, sub) = open_with_sub(&c);
    let b = ibeacon(1);
    accept(&store, (0..5).map(|_| entered(&b)).collect(), 1_000);
    assert_eq!(store.subscription(&sub).unwrap().pending, 3);
    let dead = store.dead_letters(&sub, None, 100).unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d.meta.reason == "backlog-overflow"));
    assert_eq!(dead[0].meta.sequences, [1]);
}

#[test]
fn filters_route_events_and_disabled_subscriptions_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(dir.path())).unwrap();
    let only_left = Filter {
        types: vec!["beacon.left".into()],
        ..Filter::default()
    };
    let left_sub = store
        .create_subscription(subscription(None, only_left))
        .unwrap()
        .sub
        .id;
    let mut disabled = subscription(None, Filter::default());
    disabled.disabled_reason = Some("manual".into());
    let disabled = store.create_subscription(disabled).unwrap().sub.id;
    let b = ibeacon(1);
    accept(&store, vec![entered(&b), updated(&b), left(&b)], 1_000);
    assert_eq!(store.subscription(&left_sub).unwrap().pending, 1);
    assert_eq!(store.subscription(&disabled).unwrap().pending, 0);
    let meta = EventMeta::of_json(
        &String::from_utf8(store.head(&left_sub).unwrap().unwrap().body).unwrap(),
    )
    .unwrap();
    assert_eq!(meta.type_, "beacon.left");
}

#[test]
fn dead_letters_are_bounded_by_count_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.webhooks.max_backlog = 1;
    c.webhooks.dead_letter_max = 2;
    c.webhooks.dead_letter_retention = Duration::from_secs(1);
    let (store, sub) = open_with_sub(&c);
    let b = ibeacon(1);
    // Five events, a backlog of one: four overflow, and only the newest two are kept.
    accept(&store, (0..5).map(|_| entered(&b)).collect(), 1_000);
    let dead = store.dead_letters(&sub, None, 100).unwrap();
    let sequences: Vec<u64> = dead.iter().flat_map(|d| d.meta.sequences.clone()).collect();
    assert_eq!(sequences, [3, 4]);
    // Paging with `after`.
    let after = store
        .dead_letters(&sub, Some(&dead[0].meta.id), 100)
        .unwrap();
    assert_eq!(after.len(), 1);
    assert!(matches!(
        store.dead_letters(&sub, Some("msg_nope"), 100),
        Err(StoreError::NoDeadLetter)
    ));
    // Retention: nothing is old at 1.5 s, everything at 2 s.
    assert_eq!(store.expire_dead_letters(1_500).unwrap(), 0);
    assert_eq!(store.expire_dead_letters(2_000).unwrap(), 2);
    assert!(store.dead_letters(&sub, None, 100).unwrap().is_empty());
    assert_eq!(store.subscription(&sub).unwrap().dead_letters, 0);
}

#[test]
fn delete_drops_the_queue_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sub) = open_with_sub(&config(dir.path()));
    accept(&store, vec![entered(&ibeacon(1))], 1_000);
    store.delete_subscription(&sub).unwrap();
    assert!(store.subscription(&sub).is_none());
    assert!(store.head(&sub).unwrap().is_none());
    drop(store);
    let store = Store::open(dir.path(), options(dir.path())).unwrap();
    assert!(store.subscriptions().is_empty());
    assert!(matches!(
        store.delete_subscription(&sub),
        Err(StoreError::NoSubscription)
    ));
}

/// Events seen on the live stream before the runtime is torn down mid-flight (no shutdown,
/// no final flush) are all delivered after a restart on the same directory.
#[test]
fn events_published_before_an_abrupt_stop_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen: Vec<String> = runtime.block_on(async {
        let (transport, _attempts) = Scripted::new();
        let mut engine = Engine::start(&c, transport.clone());
        let sub = engine
            .beacons
            .store()
            .create_subscription(subscription(None, Filter::default()))
            .unwrap()
            .sub
            .id;
        // The receiver never answers, so everything stays queued.
        transport.hang(&sub);
        for r in [v1(-63), v4(-63), v6(-63)] {
            engine.feed(r);
        }
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                engine.next_event().await["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        // Keep feeding so a group commit may be open when the runtime goes away.
        engine.feed(v9(-63));
        ids
    });
    // Abrupt stop: every task is dropped where it stands.
    drop(runtime);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (transport, mut attempts) = Scripted::new();
        let engine = Engine::start(&c, transport);
        let mut delivered = Vec::new();
        while delivered.len() < seen.len() {
            let a = next_attempt(&mut attempts).await;
            let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            let id = body["id"].as_str().unwrap().to_string();
            if !delivered.contains(&id) {
                delivered.push(id);
            }
        }
        for id in &seen {
            assert!(delivered.contains(id), "{id} delivered after the restart");
        }
        engine.stop().await;
    });
}
