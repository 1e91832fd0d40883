//! Shared helpers of the beacon and store tests: spec-vector reports, a scripted webhook
//! transport that records every attempt, and an engine started on a temporary state dir.

#![allow(dead_code)]

use async_trait::async_trait;
use limmat_gateway::backend::Report;
use limmat_gateway::config::GatewayConfig;
use limmat_gateway::pipeline::{Beacons, LiveEvent};
use limmat_gateway::store::{Options, Store};
use limmat_gateway::webhook::{FailureKind, Message, Outcome, Transport};
use limmat_gateway::{Address, AddressType, Uuid};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub const V1_KEY: &str = "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7";
pub const V4_KEY: &str = "altbeacon:4c696d6d6174426561636f6e2d303031002a0003";
pub const V6_KEY: &str = "eddystone-uid:4c696d6d6f6e2d303031:000000000001";
pub const V9_KEY: &str = "eddystone-url:https://www.example.com/";

pub fn hex(s: &str) -> Vec<u8> {
    limmat_gateway::hex::decode(s).unwrap()
}

fn report(address: u8, rssi: i16) -> Report {
    Report {
        address: Address([0xc0, 0xff, 0xee, 0, 0, address]),
        address_type: AddressType::Random,
        rssi: Some(rssi),
        tx_power: None,
        name: None,
        flags: Some(6),
        service_uuids: Vec::new(),
        manufacturer_data: BTreeMap::new(),
        service_data: BTreeMap::new(),
        raw: None,
        connectable: Some(false),
        received: SystemTime::now(),
        at: tokio::time::Instant::now().into_std(),
    }
}

/// V1 (iBeacon) from c0ffee000001.
pub fn v1(rssi: i16) -> Arc<Report> {
    let mut r = report(1, rssi);
    r.manufacturer_data.insert(
        0x004c,
        hex("02154c696d6d6174426561636f6e2d30303100010007c5"),
    );
    Arc::new(r)
}

/// V5 (raw AltBeacon, V4's values) from c0ffee000002: decoded from raw AD.
pub fn v4(rssi: i16) -> Arc<Report> {
    let mut r = report(2, rssi);
    r.raw = Some(hex(
        "0201061bff1801beac4c696d6d6174426561636f6e2d303031002a0003bf5a",
    ));
    Arc::new(r)
}

/// V6 (Eddystone-UID) from c0ffee000003.
pub fn v6(rssi: i16) -> Arc<Report> {
    let mut r = report(3, rssi);
    r.service_data.insert(
        Uuid::EDDYSTONE,
        hex("00ee4c696d6d6f6e2d3030310000000000010000"),
    );
    Arc::new(r)
}

/// V12 (plain TLM) from c0ffee000003, V6's address.
pub fn v12(rssi: i16) -> Arc<Report> {
    let mut r = report(3, rssi);
    r.service_data
        .insert(Uuid::EDDYSTONE, hex("20000b861780000004b000008ca0"));
    Arc::new(r)
}

/// V9 (Eddystone-URL) from c0ffee000004.
pub fn v9(rssi: i16) -> Arc<Report> {
    let mut r = report(4, rssi);
    r.service_data
        .insert(Uuid::EDDYSTONE, hex("10ee016578616d706c6500"));
    Arc::new(r)
}

/// Test-sized settings: fast presence and backoff.
pub fn config(dir: &Path) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    c.gateway.name = "limmat-test".into();
    c.gateway.state_dir = dir.to_path_buf();
    c.presence.update_interval = Duration::from_millis(300);
    c.presence.leave_after = Duration::from_millis(600);
    c.presence.telemetry_interval = Duration::from_millis(500);
    c.webhooks.retry_base = Duration::from_millis(50);
    c.webhooks.retry_factor = 2.0;
    c.webhooks.retry_max_delay = Duration::from_millis(500);
    c.webhooks.allow_networks = vec!["127.0.0.1/32".into()];
    c
}

/// A subscription record to put straight into a store (no HTTP), for `127.0.0.1:9`.
pub fn subscription(
    batch: Option<limmat_gateway::store::records::BatchSpec>,
    filter: limmat_gateway::events::Filter,
) -> limmat_gateway::store::records::Subscription {
    use limmat_gateway::store::records::{Delivery, Secret, Subscription};
    Subscription {
        id: limmat_gateway::events::new_id("sub"),
        url: "http://127.0.0.1:9/hook".into(),
        filter,
        batch,
        secrets: vec![Secret {
            value: "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
            until_ms: None,
        }],
        description: None,
        created_ms: 0,
        disabled_reason: None,
        delivery: Delivery::default(),
    }
}

/// [`config`] without presence events after the first sightings (no updates, no leaves within
/// a test), so only what a test feeds reaches the queues.
pub fn quiet_config(dir: &Path) -> GatewayConfig {
    let mut c = config(dir);
    c.presence.update_interval = Duration::from_secs(30);
    c.presence.leave_after = Duration::from_secs(30);
    c
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub subscription: String,
    pub msg_id: String,
    pub body: String,
    pub at: tokio::time::Instant,
}

/// A transport that answers from a script per subscription (then `default`), records every
/// attempt, and can hang for chosen subscriptions.
pub struct Scripted {
    pub scripts: Mutex<HashMap<String, VecDeque<Outcome>>>,
    pub default: Outcome,
    pub hang: Mutex<HashSet<String>>,
    pub log: mpsc::UnboundedSender<Attempt>,
}

impl Scripted {
    pub fn new() -> (Arc<Scripted>, mpsc::UnboundedReceiver<Attempt>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = Scripted {
            scripts: Mutex::new(HashMap::new()),
            default: Outcome::Delivered { status: 200 },
            hang: Mutex::new(HashSet::new()),
            log: tx,
        };
        (Arc::new(t), rx)
    }

    pub fn script(&self, subscription: &str, outcomes: impl IntoIterator<Item = Outcome>) {
        self.scripts
            .lock()
            .unwrap()
            .entry(subscription.to_string())
            .or_default()
            .extend(outcomes);
    }

    pub fn hang(&self, subscription: &str) {
        self.hang.lock().unwrap().insert(subscription.to_string());
    }
}

pub fn failed(status: u16) -> Outcome {
    Outcome::Failed {
        kind: FailureKind::Status,
        status: Some(status),
        retry_after: None,
    }
}

#[async_trait]
impl Transport for Scripted {
    async fn attempt(&self, m: Message<'_>) -> Outcome {
        let _ = self.log.send(Attempt {
            subscription: m.subscription_id.to_string(),
            msg_id: m.msg_id.to_string(),
            body: String::from_utf8_lossy(m.body).into_owned(),
            at: tokio::time::Instant::now(),
        });
        if self.hang.lock().unwrap().contains(m.subscription_id) {
            return std::future::pending().await;
        }
        let next = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(m.subscription_id)
            .and_then(|q| q.pop_front());
        next.unwrap_or_else(|| self.default.clone())
    }
}

/// A running engine fed from a channel of reports.
pub struct Engine {
    pub beacons: Beacons,
    pub reports: mpsc::UnboundedSender<Arc<Report>>,
    pub live: broadcast::Receiver<Arc<LiveEvent>>,
    pub shutdown: CancellationToken,
}

impl Engine {
    pub fn start(config: &GatewayConfig, transport: Arc<dyn Transport>) -> Engine {
        let store = Store::open(&config.gateway.state_dir, Options::from_config(config)).unwrap();
        Engine::start_with(config, store, transport)
    }

    pub fn start_with(
        config: &GatewayConfig,
        store: Store,
        transport: Arc<dyn Transport>,
    ) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let reports =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let shutdown = CancellationToken::new();
        let beacons = limmat_gateway::server::start_beacons(
            config,
            store,
            reports,
            transport,
            "http://127.0.0.1:8000".into(),
            shutdown.clone(),
        )
        .unwrap();
        let live = beacons.live();
        Engine {
            beacons,
            reports: tx,
            live,
            shutdown,
        }
    }

    pub fn feed(&self, report: Arc<Report>) {
        self.reports.send(report).unwrap();
    }

    /// The next accepted event (within 5 s) as JSON.
    pub async fn next_event(&mut self) -> serde_json::Value {
        let e = tokio::time::timeout(Duration::from_secs(5), self.live.recv())
            .await
            .expect("an event within 5 s")
            .expect("live stream open");
        serde_json::from_str(&e.json).unwrap()
    }

    /// Stop both tasks and wait for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.beacons.stopped().await;
    }
}

/// The next recorded attempt, within 5 s.
pub async fn next_attempt(rx: &mut mpsc::UnboundedReceiver<Attempt>) -> Attempt {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an attempt within 5 s")
        .expect("transport alive")
}

/// The shared API router over the engine's Beacon API routes.
pub fn app(engine: &Engine) -> axum::Router {
    limmat_gateway::api::router(
        limmat_gateway::api::ApiSettings::default(),
        vec![limmat_gateway::api::beacon::routes(engine.beacons.clone())],
    )
}

pub const JSON: Option<&str> = Some("application/json");

/// One request through the router (Host `gw.test`): status, headers and the JSON body.
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<axum::body::Body>,
) -> (
    axum::http::StatusCode,
    axum::http::HeaderMap,
    serde_json::Value,
) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header(axum::http::header::HOST, "gw.test");
    if let Some(ct) = content_type {
        req = req.header(axum::http::header::CONTENT_TYPE, ct);
    }
    let response = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("JSON: {bytes:?}"))
    };
    (status, headers, json)
}
