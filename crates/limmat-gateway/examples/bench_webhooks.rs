//! The measuring half of `bench/gateway.sh`: a verifying webhook receiver (the crate's own
//! [`Receiver`], which checks every `webhook-signature` in constant time) subscribed to a
//! running gateway, and the arithmetic of one measured window.
//!
//! It creates one subscription on the gateway (`POST /beacon/subscriptions`, with its own
//! secret and optionally `batch`), waits `--warmup` seconds, then measures for `--duration`
//! seconds:
//!
//! * events accepted per second: `limmat_gateway_events_accepted_total` on `/metrics`, read at
//!   both ends of the window;
//! * events delivered per second: events inside the verified messages that arrived in the
//!   window (a `beacon.batch` counts its `data.events`), de-duplicated by `webhook-id`;
//! * the delay of each of those events: its arrival (wall clock, when its body had been read)
//!   minus its `timestamp` (the sighting that caused it, RFC 3339 with milliseconds), as
//!   p50, p99 and max.
//!
//! It prints one line of space-separated fields (see `FIELDS`) for the script's table, and
//! with `--header` the field names instead. Everything talks to 127.0.0.1 only.
//!
//!     bench_webhooks --gateway http://127.0.0.1:18700 --label batched \
//!         --warmup 5 --duration 20 --batch 500,10

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use limmat_gateway::webhook::receiver::Receiver;
use limmat_gateway::webhook::sign;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

const FIELDS: &str = "mode accepted/s delivered/s requests/s p50_ms p99_ms max_ms \
                      backlog_end delivered_events bad_order adverts/s reports_dropped";

struct Args {
    gateway: String,
    label: String,
    warmup: f64,
    duration: f64,
    batch: Option<(u32, u64)>,
}

fn parse_args() -> Result<Option<Args>, Error> {
    let mut args = Args {
        gateway: String::new(),
        label: "run".into(),
        warmup: 5.0,
        duration: 20.0,
        batch: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--header" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--gateway" => args.gateway = value.trim_end_matches('/').to_string(),
            "--label" => args.label = value,
            "--warmup" => args.warmup = value.parse()?,
            "--duration" => args.duration = value.parse()?,
            "--batch" => {
                let (n, ms) = value
                    .split_once(',')
                    .ok_or("--batch MAX_EVENTS,MAX_DELAY_MS")?;
                args.batch = Some((n.parse()?, ms.parse()?));
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.gateway.is_empty() {
        return Err("--gateway http://127.0.0.1:PORT is required".into());
    }
    Ok(Some(args))
}

/// One event, or a batch wrapper with its events.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    type_: String,
    timestamp: String,
    sequence: Option<u64>,
    #[serde(default)]
    data: Data,
}

#[derive(Deserialize, Default)]
struct Data {
    #[serde(default)]
    events: Vec<Inner>,
}

#[derive(Deserialize)]
struct Inner {
    timestamp: String,
    sequence: u64,
}

/// What the window saw.
#[derive(Default)]
struct Window {
    from: Option<SystemTime>,
    until: Option<SystemTime>,
    messages: u64,
    events: u64,
    delays_ms: Vec<f64>,
    /// Events whose `sequence` was not above the previous one's (any time, not just the window).
    bad_order: u64,
    last_sequence: u64,
    /// Bodies that did not parse.
    unreadable: u64,
}

fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn rfc3339_ms(text: &str) -> Option<f64> {
    humantime::parse_rfc3339(text).ok().map(epoch_ms)
}

impl Window {
    fn take(&mut self, body: &[u8], arrived: SystemTime) {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
            self.unreadable += 1;
            return;
        };
        let events: Vec<(&str, u64)> = if envelope.type_ == "beacon.batch" {
            envelope
                .data
                .events
                .iter()
                .map(|e| (e.timestamp.as_str(), e.sequence))
                .collect()
        } else {
            vec![(envelope.timestamp.as_str(), envelope.sequence.unwrap_or(0))]
        };
        for &(_, sequence) in &events {
            if sequence <= self.last_sequence {
                self.bad_order += 1;
            }
            self.last_sequence = self.last_sequence.max(sequence);
        }
        let inside =
            self.from.is_some_and(|f| arrived >= f) && self.until.is_none_or(|u| arrived < u);
        if !inside {
            return;
        }
        self.messages += 1;
        let at = epoch_ms(arrived);
        for (timestamp, _) in events {
            self.events += 1;
            match rfc3339_ms(timestamp) {
                Some(ms) => self.delays_ms.push(at - ms),
                None => self.unreadable += 1,
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<String>,
) -> Result<(u16, Bytes), Error> {
    let mut req = Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// `name` (summed over its labels) on the gateway's `/metrics`, or a filtered label set.
fn metric(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| label.is_none_or(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(client: &HttpClient, gateway: &str) -> Result<String, Error> {
    let (status, body) = call(client, Method::GET, &format!("{gateway}/metrics"), None).await?;
    if status != 200 {
        return Err(format!("GET /metrics: {status}").into());
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let Some(args) = parse_args()? else {
        println!("{FIELDS}");
        return Ok(());
    };
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let key = sign::generate_secret()?;
    let secret = sign::format_secret(&key);
    let receiver = Receiver::start("127.0.0.1:0".parse()?, vec![key]).await?;
    receiver.record(false);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, SystemTime)>();
    receiver.observe(move |delivery, arrived| {
        let _ = tx.send((delivery.body.clone(), arrived));
    });
    let window = Arc::new(Mutex::new(Window::default()));
    let w = window.clone();
    let parser = tokio::spawn(async move {
        while let Some((body, arrived)) = rx.recv().await {
            w.lock().unwrap().take(&body, arrived);
        }
    });

    let mut subscription = serde_json::json!({
        "url": receiver.url("/hook"),
        "secret": secret,
        "description": format!("bench/gateway.sh {}", args.label),
    });
    if let Some((max_events, max_delay_ms)) = args.batch {
        subscription["batch"] =
            serde_json::json!({"maxEvents": max_events, "maxDelayMs": max_delay_ms});
    }
    let (status, body) = call(
        &client,
        Method::POST,
        &format!("{}/beacon/subscriptions", args.gateway),
        Some(subscription.to_string()),
    )
    .await?;
    if status != 201 {
        return Err(format!(
            "POST /beacon/subscriptions: {status} {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let id = created["id"]
        .as_str()
        .ok_or("no id in the answer")?
        .to_string();

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let before = scrape(&client, &args.gateway).await?;
    window.lock().unwrap().from = Some(SystemTime::now());
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    window.lock().unwrap().until = Some(SystemTime::now());
    let after = scrape(&client, &args.gateway).await?;
    let elapsed = started.elapsed().as_secs_f64();

    let (_, body) = call(
        &client,
        Method::GET,
        &format!("{}/beacon/subscriptions/{id}", args.gateway),
        None,
    )
    .await?;
    let sub: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let pending = sub["delivery"]["pending"].as_u64().unwrap_or(0);
    let delivered_total = sub["delivery"]["delivered"].as_u64().unwrap_or(0);

    receiver.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), parser).await??;
    let mut w = std::mem::take(&mut *window.lock().unwrap());
    w.delays_ms.sort_by(f64::total_cmp);

    let rate = |name: &str, label: Option<&str>| {
        (metric(&after, name, label) - metric(&before, name, label)) / elapsed
    };
    if w.unreadable > 0 {
        eprintln!("[bench] {} unreadable bodies or timestamps", w.unreadable);
    }
    println!(
        "{} {:.0} {:.0} {:.1} {:.1} {:.1} {:.1} {} {} {} {:.0} {:.0}",
        args.label,
        rate("limmat_gateway_events_accepted_total", None),
        w.events as f64 / elapsed,
        w.messages as f64 / elapsed,
        percentile(&w.delays_ms, 0.50),
        percentile(&w.delays_ms, 0.99),
        w.delays_ms.last().copied().unwrap_or(f64::NAN),
        pending,
        delivered_total,
        w.bad_order,
        rate("limmat_gateway_advertisements_total", None),
        metric(&after, "limmat_gateway_reports_dropped_total", None) + 0.0,
    );
    Ok(())
}
