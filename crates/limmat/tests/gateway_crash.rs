//! Crash safety of the real `limmat gateway` (gateway-api.md §5.3, checklist 44 and 29).
//!
//! A busy simulated world (eight iBeacons entering and leaving every 2.5 s, updates every
//! 0.5 s) feeds an unfiltered subscription whose receiver runs in this test. The gateway is
//! SIGKILLed several times on the same state directory: right after an event appeared on the
//! stream (commits run all the time), while a delivery hangs in the receiver, and from the
//! receiver's own handler right after it has written a `200` head and half its body (between
//! the 2xx and the commit that dequeues the message). At the end every event seen on
//! `/beacon/events` before any kill has reached the receiver, and every event that arrived more
//! than once came each time under the same `webhook-id`. Also: a second gateway on the same
//! state directory refuses to start, and after a restart a beacon still present gets no second
//! `beacon.entered` while one that has gone leaves with its `lastSeen` from before.

mod common;
mod gateway_common;

use gateway_common::*;
use limmat_gateway::webhook::sign;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How the receiver answers.
#[derive(Clone)]
enum Mode {
    Ok,
    /// Keep the request open without an answer until the mode changes or the peer goes.
    Hang,
    /// Write a `200` head (and half its body), then SIGKILL the gateway, then answer normally.
    KillAfter200(Killer),
}

/// One verified request and whether it was answered 2xx.
#[derive(Debug, Clone)]
struct Attempt {
    webhook_id: String,
    /// The event ids in the body (one, or a batch's).
    events: Vec<String>,
    /// Their sequence numbers.
    sequences: Vec<u64>,
    acknowledged: bool,
}

#[derive(Default)]
struct Seen {
    attempts: Vec<Attempt>,
    unverified: usize,
}

/// A small HTTP/1.1 webhook receiver on std threads, so a handler can kill the gateway the
/// moment its `200` is written.
struct CrashReceiver {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    /// One message per hanging request and per kill done by a handler.
    signals: mpsc::Receiver<&'static str>,
}

impl CrashReceiver {
    fn start(key: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, signals) = mpsc::channel();
        let (m, s) = (mode.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (m, s, tx, key) = (m.clone(), s.clone(), tx.clone(), key.clone());
                std::thread::spawn(move || serve(stream, &key, &m, &s, &tx));
            }
        });
        Self {
            addr,
            mode,
            seen,
            signals,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    fn attempts(&self) -> Vec<Attempt> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(seen.unverified, 0, "a request failed verification");
        seen.attempts.clone()
    }

    /// Event ids acknowledged at least once.
    fn delivered(&self) -> BTreeSet<String> {
        self.attempts()
            .into_iter()
            .filter(|a| a.acknowledged)
            .flat_map(|a| a.events)
            .collect()
    }

    /// Waits for a signal, skipping others (a hanging delivery is retried after its timeout).
    fn wait_signal(&self, what: &str) {
        while self
            .signals
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("the receiver never saw {what}"))
            != what
        {}
    }
}

fn mode_of(mode: &Mutex<Mode>) -> Mode {
    mode.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Serves one keep-alive connection.
fn serve(
    stream: TcpStream,
    key: &[u8],
    mode: &Mutex<Mode>,
    seen: &Mutex<Seen>,
    signals: &mpsc::Sender<&'static str>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut headers = BTreeMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .expect("deliveries carry Content-Length");
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let header = |n: &str| headers.get(n).cloned().unwrap_or_default();
        let (id, ts, sig) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if sign::verify(&[key], &id, &ts, &body, &sig, now).is_err() {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unverified += 1;
            let _ = writer.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n");
            continue;
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let events = if json["type"] == "beacon.batch" {
            json["data"]["events"].as_array().unwrap().clone()
        } else {
            vec![json]
        };
        let mut attempt = Attempt {
            webhook_id: id,
            events: events
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect(),
            sequences: events
                .iter()
                .map(|e| e["sequence"].as_u64().unwrap())
                .collect(),
            acknowledged: false,
        };
        match mode_of(mode) {
            Mode::Hang => {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .attempts
                    .push(attempt);
                let _ = signals.send("hang");
                // Hold the request until the gateway is gone (its end closes) or the mode
                // changes; then drop the connection unanswered.
                let _ = reader
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_millis(50)));
                let mut byte = [0u8; 1];
                while matches!(mode_of(mode), Mode::Hang) {
                    match reader.get_mut().peek(&mut byte) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
            Mode::Ok => {
                attempt.acknowledged = true;
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .attempts
                    .push(attempt);
                if writer
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
            }
            Mode::KillAfter200(killer) => {
                attempt.acknowledged = true;
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .attempts
                    .push(attempt);
                // The status line and head of a 200, and one byte of a two-byte body: the
                // gateway has its 2xx but is still reading the body (§5.4) when it dies, so
                // the commit that dequeues the message cannot have happened.
                let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\no");
                let _ = writer.flush();
                killer.kill();
                *mode.lock().unwrap_or_else(PoisonError::into_inner) = Mode::Ok;
                let _ = signals.send("killed");
                return;
            }
        }
    }
}

/// Eight iBeacons entering and leaving every 2.5 s, updates every 0.5 s, fast retries.
const BUSY: &str = r#"
[gateway]
name = "crash-test"

[presence]
update_interval = "500ms"
leave_after = "600ms"

[webhooks]
allow_networks = ["127.0.0.1/32"]
retry_base = "100ms"
retry_factor = 1
retry_max_delay = "300ms"
max_attempts = 10000
timeout = "2s"
connect_timeout = "1s"

[sim]
default_world = false

[[sim.beacon]]
format = "ibeacon"
address = "C0:FF:EE:00:01:00"
interval_ms = 100
present_s = 1.5
absent_s = 1
count = 8
"#;

fn spawn(config: &str, state: &str) -> Proc {
    Proc::spawn(&[
        "gateway",
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state,
    ])
}

fn start(config: &str, state: &str) -> (Proc, SocketAddr) {
    let mut gw = spawn(config, state);
    let addr = gw.gateway_addr();
    (gw, addr)
}

/// An event seen on the stream: (sequence, id, type, key).
fn parse(event: &SseEvent) -> Option<(u64, String, String, String)> {
    let kind = event.event.clone()?;
    if !kind.starts_with("beacon.") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&event.data).ok()?;
    Some((
        json["sequence"].as_u64()?,
        json["id"].as_str()?.to_owned(),
        kind,
        json["data"]["beacon"]["key"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// Reads the stream until `n` more events came; returns them.
fn take(sse: &Sse, n: usize, into: &mut Vec<(u64, String)>) {
    let mut got = 0;
    while got < n {
        let event = sse.next(PATIENCE).expect("events flow");
        if let Some((seq, id, ..)) = parse(&event) {
            into.push((seq, id));
            got += 1;
        }
    }
}

/// After the gateway died: everything the stream still carried, until curl ends.
fn rest(sse: Sse, into: &mut Vec<(u64, String)>) {
    while let Some(event) = sse.next(PATIENCE) {
        if let Some((seq, id, ..)) = parse(&event) {
            into.push((seq, id));
        }
    }
}

fn crash_and_recover(batch: &str) {
    let dir = TempDir::new("gw-crash");
    let config = dir.file("gateway.toml", BUSY);
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let key = sign::generate_secret().unwrap();
    let receiver = CrashReceiver::start(key.clone());
    let mut seen: Vec<(u64, String)> = Vec::new();

    let (mut gw, addr) = start(&config, state);
    let base = format!("http://{addr}");
    subscribe(&base, &receiver.url(), &sign::format_secret(&key), batch);
    let sse = Sse::open(&format!("{base}/beacon/events"));

    // 1. While events flow: right after one appeared on the stream, commits are in progress.
    take(&sse, 25, &mut seen);
    gw.kill();
    rest(sse, &mut seen);

    // 2. While a delivery hangs in the receiver.
    let (g, addr) = start(&config, state);
    gw = g;
    let sse = Sse::open(&format!("http://{addr}/beacon/events"));
    take(&sse, 5, &mut seen);
    receiver.set(Mode::Hang);
    receiver.wait_signal("hang");
    take(&sse, 5, &mut seen);
    gw.kill();
    receiver.set(Mode::Ok);
    rest(sse, &mut seen);

    // 3. Between a 2xx and its commit: the receiver's handler kills the gateway right after
    // writing 200, so the message is still queued at restart and is sent again.
    let (g, addr) = start(&config, state);
    gw = g;
    let sse = Sse::open(&format!("http://{addr}/beacon/events"));
    take(&sse, 5, &mut seen);
    let before = receiver.attempts().len();
    receiver.set(Mode::KillAfter200(gw.killer()));
    receiver.wait_signal("killed");
    let killed = receiver.attempts()[before..]
        .last()
        .expect("the attempt that killed")
        .clone();
    let killed_message = killed.webhook_id.clone();
    let killed_last = killed.sequences.iter().copied().max().unwrap_or(0);
    rest(sse, &mut seen);

    // 4. A last gateway: it must deliver everything. A second one on the same state directory
    // refuses to start, naming the problem.
    let (mut gw, _) = start(&config, state);
    let (code, log) = spawn(&config, state).wait_exit();
    assert!(code.is_some_and(|c| c != 0), "{log}");
    assert!(log.contains("in use by another gateway"), "{log}");

    // Only events accepted after the subscription was are owed to it: those from the first
    // sequence it received (a queue holds events in sequence order).
    let first = eventually("a first delivery", PATIENCE, || {
        receiver
            .attempts()
            .iter()
            .flat_map(|a| a.sequences.iter().copied())
            .min()
    });
    let owed: BTreeSet<String> = seen
        .iter()
        .filter(|(seq, _)| *seq >= first)
        .map(|(_, id)| id.clone())
        .collect();
    assert!(owed.len() >= 35, "only {} events seen", owed.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = receiver.delivered();
        let missing = owed.iter().filter(|id| !delivered.contains(*id)).count();
        // The queue has also moved past the message acknowledged just before the kill.
        let moved_on = receiver
            .attempts()
            .iter()
            .any(|a| a.acknowledged && a.sequences.iter().all(|s| *s > killed_last));
        if missing == 0 && moved_on {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} events seen on the stream never reached the receiver; gateway log:\n{}",
            owed.len(),
            gw.drain().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Duplicates share a webhook-id; the message acknowledged just before the kill was sent
    // again under its id.
    let attempts = receiver.attempts();
    let mut messages: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in &attempts {
        for e in &a.events {
            messages.entry(e).or_default().insert(&a.webhook_id);
        }
    }
    for (event, ids) in &messages {
        assert_eq!(ids.len(), 1, "{event} came in several messages: {ids:?}");
    }
    let resent = attempts
        .iter()
        .filter(|a| a.webhook_id == killed_message && a.acknowledged)
        .count();
    assert!(
        resent >= 2,
        "{killed_message} was not sent again after the kill"
    );
    let distinct: BTreeSet<&str> = attempts.iter().map(|a| a.webhook_id.as_str()).collect();
    eprintln!(
        "{} events owed, {} attempts for {} messages, the killed message acknowledged {resent} times",
        owed.len(),
        attempts.len(),
        distinct.len()
    );
}

#[test]
fn every_event_seen_survives_sigkill() {
    crash_and_recover("");
}

#[test]
fn every_batched_event_seen_survives_sigkill() {
    crash_and_recover(r#", "batch": {"maxEvents": 5, "maxDelayMs": 200}"#);
}

#[test]
fn after_a_restart_a_present_beacon_continues_and_a_gone_one_leaves() {
    let dir = TempDir::new("gw-restart");
    const PRESENCE: &str = "[presence]\nupdate_interval = \"500ms\"\nleave_after = \"4s\"\n";
    // The default world plus a second iBeacon; after the restart it is gone from the world.
    let before = dir.file(
        "before.toml",
        &format!(
            "{PRESENCE}\n[[sim.beacon]]\nformat = \"ibeacon\"\naddress = \"C0:FF:EE:00:02:00\"\nmajor = 2\nminor = 1\ninterval_ms = 100\n"
        ),
    );
    let after = dir.file("after.toml", PRESENCE);
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    const STAYS: &str = "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7";
    const GOES: &str = "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:2:1";
    let stream = |addr: SocketAddr, after: u64| {
        Sse::open(&format!(
            "http://{addr}/beacon/events?format=ibeacon&lastEventId={after}"
        ))
    };
    // (sequence, type, key, data.beacon.lastSeen)
    let next = |sse: &Sse| loop {
        let event = sse.next(PATIENCE).expect("ibeacon events");
        if let Some((seq, _, kind, key)) = parse(&event) {
            let json: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            let last_seen = json["data"]["beacon"]["lastSeen"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            break (seq, kind, key, last_seen);
        }
    };

    // Both enter (replayed from the log) and are updated: both are present.
    let (gw, addr) = start(&before, state);
    let sse = stream(addr, 0);
    let mut last = 0;
    let mut goes_last_seen = String::new();
    let mut updated = BTreeSet::new();
    let mut entered = BTreeSet::new();
    while updated.len() < 2 {
        let (seq, kind, key, last_seen) = next(&sse);
        last = seq;
        if key == GOES {
            goes_last_seen = last_seen;
        }
        match kind.as_str() {
            "beacon.entered" => assert!(entered.insert(key.clone()), "{key} entered twice"),
            "beacon.updated" => {
                assert!(entered.contains(&key), "{key} updated before it entered");
                updated.insert(key);
            }
            _ => {}
        }
    }
    assert!(
        entered.contains(STAYS) && entered.contains(GOES),
        "{entered:?}"
    );
    gw.kill();
    let killed_ms = unix_ms(std::time::SystemTime::now());
    drop(sse);

    // Restarted within leave_after_s with the second beacon gone: the stream, resumed after
    // the last event seen, shows the first one continue without a new entry and the second
    // one leave with its lastSeen from before the restart.
    let (_gw, addr) = start(&after, state);
    let sse = stream(addr, last);
    let mut stays = Vec::new();
    let left = loop {
        let (seq, kind, key, last_seen) = next(&sse);
        assert!(seq > last);
        if key == STAYS {
            stays.push(kind);
        } else if key == GOES {
            if kind == "beacon.left" {
                break last_seen;
            }
            // Events committed before the kill that the first stream had not read.
            goes_last_seen = last_seen;
        }
    };
    assert!(
        !stays.is_empty() && stays.iter().all(|k| k == "beacon.updated"),
        "the present beacon after the restart: {stays:?}"
    );
    // RFC 3339 UTC with milliseconds orders as text.
    assert!(left >= goes_last_seen, "{left} < {goes_last_seen}");
    assert_eq!(rfc3339_ms("2025-01-01T12:00:00.250Z"), 1_735_732_800_250);
    assert!(
        rfc3339_ms(&left) <= killed_ms && rfc3339_ms(&left) + 30_000 > killed_ms,
        "lastSeen {left} is after the kill"
    );
    let more_stays = next(&sse);
    assert_eq!(more_stays.1, "beacon.updated", "{more_stays:?}");
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `2025-01-01T12:00:00.250Z` as Unix milliseconds (days from the civil date, H. Hinnant).
fn rfc3339_ms(text: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| -> i64 {
        text.get(range)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("not RFC 3339: {text}"))
    };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    (secs * 1000 + n(20..23)) as u64
}
