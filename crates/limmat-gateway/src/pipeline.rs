//! The beacon pipeline (§3.3–§3.6, §5.3): advertisement reports in, accepted events out.
//!
//! One task owns the presence tracker. Each report is split into pairs and decoded
//! ([`crate::beacon`]); each frame runs through [`Presence`], and the events it yields are
//! built ([`crate::events`]) and collected with the presence changes behind them. A group
//! commit ([`Store::accept`]) makes them durable at most 10 ms after the first waits. Only
//! after the commit are they published: to the SSE stream, to the present-beacons view of
//! `GET /beacon/beacons`, to `limmat_gateway_events_accepted_total`, and to the scheduler. A
//! failed commit accepts nothing: the events are counted and logged, and the tracker is rolled
//! back to its state before them, so the same transitions happen again with later sightings.
//!
//! On start the presence table is reloaded. Each persisted beacon re-enters the tracker with a
//! sighting at start-up time (its leave timer runs on the monotonic clock from the restart) and
//! keeps its persisted `firstSeen`, `lastSeen` and `sightings`; one heard again continues
//! without a new `beacon.entered`, one not heard leaves with its pre-restart `lastSeen`.
//!
//! [`Beacons`] is the handle the API and the server use.

use crate::address::Address;
use crate::backend::Report;
use crate::beacon::{Decoded, Frame, Source, Telemetry, decode};
use crate::clock::WallClock;
use crate::config::GatewayConfig;
use crate::events::{BeaconState, Draft, EventMeta, Raw, millis};
use crate::presence::{self, Event, Presence, Present, Sighting};
use crate::store::accept::AcceptBatch;
use crate::store::blocking;
use crate::store::records::PresenceRecord;
use crate::store::{Store, StoreError};
use futures::{Stream, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Group commits happen at most this long after the first event waits (§5.3).
const COMMIT_EVENTS_WITHIN: Duration = Duration::from_millis(10);
/// Presence-only changes (sightings without events) are committed this often.
const COMMIT_PRESENCE_WITHIN: Duration = Duration::from_secs(1);
/// Live events buffered per SSE client before it counts as lagging.
const LIVE_CAPACITY: usize = 4096;

/// An accepted event as published to the live stream.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// The event's position in the log.
    pub sequence: u64,
    /// The event's compact JSON (exactly as logged).
    pub json: Arc<str>,
    /// What filters match on.
    pub meta: EventMeta,
}

/// The committed present-beacons view.
#[derive(Debug, Default)]
struct View {
    beacons: BTreeMap<String, BeaconState>,
    telemetry: HashMap<Address, Telemetry>,
}

/// What the API needs of the subscription settings.
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    /// `gateway.name`.
    pub gateway: String,
    /// `webhooks.allow_networks`, for the registration SSRF check.
    pub allow_networks: Vec<String>,
    /// The link base of webhook bodies.
    pub links_base: String,
}

/// What the [`Beacons`] handles and the pipeline task share.
struct BeaconsShared {
    store: Store,
    live: broadcast::Sender<Arc<LiveEvent>>,
    view: RwLock<View>,
    wake: Arc<Notify>,
    settings: SubscriptionSettings,
    clock: WallClock,
    shutdown: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// The Beacon API's engine: the pipeline running, and the tasks composed with it (the webhook
/// scheduler, which `server` starts); cheap to clone.
#[derive(Clone)]
pub struct Beacons {
    shared: Arc<BeaconsShared>,
}

impl std::fmt::Debug for Beacons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beacons").finish_non_exhaustive()
    }
}

impl Beacons {
    /// Reload the presence table, then start the pipeline over `reports`. `links_base` (no
    /// trailing slash) is the base of `self` links inside events: `api.public_base_url`, or
    /// `http://<listen address>`. The pipeline stops when `shutdown` is cancelled;
    /// [`Beacons::stopped`] waits for it and for every task given to [`Beacons::track`].
    pub fn start<S>(
        config: &GatewayConfig,
        store: Store,
        reports: S,
        links_base: String,
        shutdown: CancellationToken,
    ) -> Result<Beacons, StoreError>
    where
        S: Stream<Item = Arc<Report>> + Send + 'static,
    {
        let presence_config = presence_config(config);
        let clock = WallClock::new();
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let shared = Arc::new(BeaconsShared {
            store: store.clone(),
            live,
            view: RwLock::new(View::default()),
            wake: Arc::new(Notify::new()),
            settings: SubscriptionSettings {
                gateway: config.gateway.name.clone(),
                allow_networks: config.webhooks.allow_networks.clone(),
                links_base: links_base.trim_end_matches('/').to_string(),
            },
            clock,
            shutdown: shutdown.clone(),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let mut pipeline = Pipeline::new(presence_config, shared.clone());
        pipeline.restore(store.presence()?);
        let beacons = Beacons { shared };
        let pipeline = tokio::spawn(pipeline.run(reports.boxed(), shutdown));
        beacons.track(pipeline);
        Ok(beacons)
    }

    /// Lets [`Beacons::stopped`] wait for `task` too.
    pub fn track(&self, task: JoinHandle<()>) {
        self.tasks().push(task);
    }

    /// Notified whenever queues or subscriptions change: what wakes the scheduler.
    pub fn wake(&self) -> Arc<Notify> {
        self.shared.wake.clone()
    }

    /// The clock of events and deliveries.
    pub fn clock(&self) -> WallClock {
        self.shared.clock
    }

    /// The state database.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The settings subscriptions are checked and written with.
    pub fn settings(&self) -> &SubscriptionSettings {
        &self.shared.settings
    }

    /// The scheduler's clock (epoch ms).
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// Accepted events from now on.
    pub fn live(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.shared.live.subscribe()
    }

    /// The present beacons, sorted by key, each with its address's latest telemetry.
    pub fn present(&self) -> Vec<(BeaconState, Option<Telemetry>)> {
        let view = self.view();
        view.beacons
            .values()
            .map(|b| (b.clone(), view.telemetry.get(&b.address).copied()))
            .collect()
    }

    /// One present beacon.
    pub fn beacon(&self, key: &str) -> Option<(BeaconState, Option<Telemetry>)> {
        let view = self.view();
        view.beacons
            .get(key)
            .map(|b| (b.clone(), view.telemetry.get(&b.address).copied()))
    }

    /// Tell the scheduler that queues or subscriptions changed.
    pub fn wake_scheduler(&self) {
        self.shared.wake.notify_one();
    }

    /// Whether shutdown was requested.
    pub fn shutting_down(&self) -> &CancellationToken {
        &self.shared.shutdown
    }

    /// Wait until the pipeline and the scheduler have stopped (after `shutdown`).
    pub async fn stopped(&self) {
        let tasks: Vec<JoinHandle<()>> = self.tasks().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.shared
            .view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A `broadcast` receiver of reports (the API's scan hub) as a stream; lagging skips reports.
pub fn broadcast_reports(
    rx: broadcast::Receiver<Arc<Report>>,
) -> impl Stream<Item = Arc<Report>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(report) => return Some((report, rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("limmat_gateway_reports_dropped_total").increment(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn presence_config(config: &GatewayConfig) -> presence::Config {
    let p = &config.presence;
    presence::Config {
        enter_rssi: p.enter_rssi,
        update_interval: p.update_interval,
        leave_after: p.leave_after,
        telemetry_interval: p.telemetry_interval,
    }
}

/// The wall-clock facts of a present beacon, which the tracker (monotonic only) lacks.
#[derive(Debug, Clone, Copy)]
struct Wall {
    first_seen_ms: u64,
    last_seen_ms: u64,
    /// Sightings before a restart, minus the one the restart replays.
    sightings_offset: u64,
}

/// The pipeline task's state.
struct Pipeline {
    presence: Presence,
    walls: HashMap<String, Wall>,
    shared: Arc<BeaconsShared>,
    /// Maps tracker instants to wall-clock ms (for `beacon.left`).
    anchor: (std::time::Instant, u64),
    /// The group being collected.
    drafts: Vec<Draft>,
    dirty: BTreeSet<String>,
    telemetry: Vec<(Address, Telemetry)>,
    /// The tracker before the group, restored if its commit fails.
    snapshot: Option<(Presence, HashMap<String, Wall>)>,
    commit_at: Option<Instant>,
}

impl Pipeline {
    fn new(config: presence::Config, shared: Arc<BeaconsShared>) -> Pipeline {
        let anchor = (Instant::now().into_std(), shared.clock.now_ms());
        Pipeline {
            presence: Presence::new(config),
            walls: HashMap::new(),
            shared,
            anchor,
            drafts: Vec::new(),
            dirty: BTreeSet::new(),
            telemetry: Vec::new(),
            snapshot: None,
            commit_at: None,
        }
    }

    /// Reload the presence table (before the tasks start).
    fn restore(&mut self, records: Vec<PresenceRecord>) {
        let now = Instant::now().into_std();
        let mut view = self.shared.view.write().unwrap_or_else(|p| p.into_inner());
        for record in records {
            let Some(state) = record.state() else {
                tracing::warn!("dropping a presence record that no longer decodes");
                continue;
            };
            let key = state.key();
            // It was present already, so `enter_rssi` must not keep it out now.
            let rssi = match self.presence.config().enter_rssi {
                Some(min) => Some(state.rssi.map_or(min, |r| r.max(min))),
                None => state.rssi,
            };
            self.presence.observe_beacon(
                state.beacon.clone(),
                Sighting {
                    address: state.address,
                    address_type: state.address_type,
                    rssi,
                    at: now,
                },
            );
            self.walls.insert(
                key.clone(),
                Wall {
                    first_seen_ms: state.first_seen_ms,
                    last_seen_ms: state.last_seen_ms,
                    sightings_offset: state.sightings.saturating_sub(1),
                },
            );
            view.beacons.insert(key, state);
        }
    }

    async fn run(
        mut self,
        mut reports: futures::stream::BoxStream<'static, Arc<Report>>,
        shutdown: CancellationToken,
    ) {
        let mut reports_open = true;
        loop {
            let expiry = self.presence.next_expiry().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = sleep_until(self.commit_at) => self.commit().await,
                _ = sleep_until(expiry) => {
                    let events = self.presence.expire(Instant::now().into_std());
                    self.take(events, None);
                }
                report = reports.next(), if reports_open => match report {
                    Some(report) => self.report(&report),
                    None => reports_open = false,
                },
            }
        }
        self.commit().await;
    }

    /// Decode a report's pairs and run its frames through the tracker.
    fn report(&mut self, report: &Report) {
        crate::metrics::advertisement();
        let mut pairs: Vec<(Source, Vec<u8>)> = Vec::new();
        if report.manufacturer_data.is_empty() && report.service_data.is_empty() {
            if let Some(raw) = &report.raw {
                pairs.extend(
                    crate::beacon::ad::pairs(raw)
                        .into_iter()
                        .map(|(s, p)| (s, p.to_vec())),
                );
            }
        } else {
            pairs.extend(
                report
                    .manufacturer_data
                    .iter()
                    .map(|(c, p)| (Source::Manufacturer(*c), p.clone())),
            );
            pairs.extend(
                report
                    .service_data
                    .iter()
                    .map(|(u, p)| (Source::Service(*u), p.clone())),
            );
        }
        let sighting = Sighting {
            address: report.address,
            address_type: report.address_type,
            rssi: report.rssi,
            at: report.at,
        };
        for (source, payload) in pairs {
            let frame = match decode(&source, &payload) {
                Decoded::Frame(frame) => frame,
                Decoded::NotABeacon => continue,
                Decoded::Malformed(m) => {
                    metrics::counter!("limmat_gateway_beacon_frames_malformed_total", "format" => m.format.as_str())
                        .increment(1);
                    continue;
                }
            };
            self.snapshot_once();
            let received_ms = millis(report.received);
            match &frame {
                Frame::Beacon(beacon) => {
                    let key = beacon.key();
                    let events = self.presence.observe(frame.clone(), sighting);
                    self.take(events, Some((report, received_ms)));
                    if self.presence.get(&key).is_some() {
                        if let Some(wall) = self.walls.get_mut(&key) {
                            wall.last_seen_ms = wall.last_seen_ms.max(received_ms);
                        }
                        self.mark(key, COMMIT_PRESENCE_WITHIN);
                    }
                }
                Frame::Telemetry(telemetry) => {
                    self.telemetry.push((report.address, *telemetry));
                    let events = self.presence.observe(frame.clone(), sighting);
                    self.take(events, Some((report, received_ms)));
                    self.schedule(COMMIT_PRESENCE_WITHIN);
                }
            }
        }
    }

    fn snapshot_once(&mut self) {
        if self.snapshot.is_none() {
            self.snapshot = Some((self.presence.clone(), self.walls.clone()));
        }
    }

    /// Turn tracker events into drafts. `cause` is the report behind them (none for expiry).
    fn take(&mut self, events: Vec<Event>, cause: Option<(&Report, u64)>) {
        if events.is_empty() {
            return;
        }
        self.snapshot_once();
        let base = self.shared.settings.links_base.clone();
        for event in events {
            let draft = match event {
                Event::Entered { key, beacon } => {
                    let ms = cause.map_or_else(|| self.wall_ms(beacon.last_seen), |(_, ms)| ms);
                    let wall = Wall {
                        first_seen_ms: ms,
                        last_seen_ms: ms,
                        sightings_offset: 0,
                    };
                    self.walls.insert(key.clone(), wall);
                    let state = state_of(&beacon, &wall);
                    let raw = cause.map(|(r, _)| Raw::of_report(r)).unwrap_or_default();
                    let telemetry = self.presence.telemetry(&beacon.address).copied();
                    self.dirty.insert(key);
                    Draft::entered(&state, telemetry.as_ref(), &raw, &base)
                }
                Event::Updated {
                    key,
                    beacon,
                    window,
                } => {
                    let ms = cause.map_or_else(|| self.wall_ms(beacon.last_seen), |(_, ms)| ms);
                    let fallback = self.fallback_wall(&beacon);
                    let wall = self.walls.entry(key.clone()).or_insert(fallback);
                    wall.last_seen_ms = wall.last_seen_ms.max(ms);
                    let state = state_of(&beacon, wall);
                    let telemetry = self.presence.telemetry(&beacon.address).copied();
                    self.dirty.insert(key);
                    Draft::updated(&state, telemetry.as_ref(), &window, &base)
                }
                Event::Left {
                    key, beacon, at, ..
                } => {
                    let wall = self
                        .walls
                        .remove(&key)
                        .unwrap_or_else(|| self.fallback_wall(&beacon));
                    let state = state_of(&beacon, &wall);
                    let at_ms = self.wall_ms(at).max(wall.last_seen_ms);
                    let telemetry = self.presence.telemetry(&beacon.address).copied();
                    self.dirty.insert(key);
                    Draft::left(&state, telemetry.as_ref(), at_ms, &base)
                }
                Event::Telemetry {
                    sighting,
                    keys,
                    telemetry,
                } => {
                    let ms = cause.map_or_else(|| self.wall_ms(sighting.at), |(_, ms)| ms);
                    Draft::telemetry(
                        sighting.address,
                        sighting.address_type,
                        sighting.rssi,
                        keys,
                        &telemetry,
                        ms,
                    )
                }
            };
            self.drafts.push(draft);
        }
        self.schedule(COMMIT_EVENTS_WITHIN);
    }

    fn fallback_wall(&self, present: &Present) -> Wall {
        Wall {
            first_seen_ms: self.wall_ms(present.first_seen),
            last_seen_ms: self.wall_ms(present.last_seen),
            sightings_offset: 0,
        }
    }

    /// The wall-clock ms of a tracker instant.
    fn wall_ms(&self, at: std::time::Instant) -> u64 {
        let (anchor, anchor_ms) = self.anchor;
        if at >= anchor {
            let d = u64::try_from(at.duration_since(anchor).as_millis()).unwrap_or(u64::MAX);
            anchor_ms.saturating_add(d)
        } else {
            let d = u64::try_from(anchor.duration_since(at).as_millis()).unwrap_or(u64::MAX);
            anchor_ms.saturating_sub(d)
        }
    }

    fn mark(&mut self, key: String, within: Duration) {
        self.dirty.insert(key);
        self.schedule(within);
    }

    /// Make sure a commit happens within `within`.
    fn schedule(&mut self, within: Duration) {
        let at = Instant::now() + within;
        self.commit_at = Some(self.commit_at.map_or(at, |c| c.min(at)));
    }

    /// Group commit, then publish.
    async fn commit(&mut self) {
        self.commit_at = None;
        let snapshot = self.snapshot.take();
        if self.drafts.is_empty() && self.dirty.is_empty() && self.telemetry.is_empty() {
            return;
        }
        let drafts = std::mem::take(&mut self.drafts);
        let telemetry = std::mem::take(&mut self.telemetry);
        let changes: Vec<(String, Option<BeaconState>)> = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let state = match (self.presence.get(&key), self.walls.get(&key)) {
                    (Some(present), Some(wall)) => Some(state_of(present, wall)),
                    _ => None,
                };
                (key, state)
            })
            .collect();
        let n = drafts.len() as u64;
        let batch = AcceptBatch {
            drafts,
            presence: changes
                .iter()
                .map(|(k, s)| (k.clone(), s.as_ref().map(PresenceRecord::of)))
                .collect(),
            now_ms: self.shared.clock.now_ms(),
        };
        match blocking(&self.shared.store, move |s| s.accept(batch)).await {
            Ok(accepted) => {
                {
                    let mut view = self.shared.view.write().unwrap_or_else(|p| p.into_inner());
                    for (key, state) in changes {
                        match state {
                            Some(state) => view.beacons.insert(key, state),
                            None => view.beacons.remove(&key),
                        };
                    }
                    view.telemetry.extend(telemetry);
                    let present: BTreeSet<Address> =
                        view.beacons.values().map(|b| b.address).collect();
                    if view.telemetry.len() > present.len() + 1024 {
                        view.telemetry.retain(|a, _| present.contains(a));
                    }
                }
                crate::metrics::beacons_present(
                    self.shared.view.read().map_or(0, |v| v.beacons.len()),
                );
                for event in &accepted {
                    crate::metrics::event_accepted(event.meta.type_);
                }
                if !accepted.is_empty() {
                    self.shared.wake.notify_one();
                }
                for event in accepted {
                    let _ = self.shared.live.send(Arc::new(LiveEvent {
                        sequence: event.sequence,
                        json: event.json,
                        meta: event.meta,
                    }));
                }
            }
            Err(e) => {
                crate::metrics::events_rejected(n);
                tracing::error!(error = %e, events = n, "state database commit failed: events not accepted");
                if let Some((presence, walls)) = snapshot {
                    self.presence = presence;
                    self.walls = walls;
                }
            }
        }
    }
}

fn state_of(present: &Present, wall: &Wall) -> BeaconState {
    BeaconState {
        beacon: present.beacon.clone(),
        address: present.address,
        address_type: present.address_type,
        rssi: present.rssi,
        first_seen_ms: wall.first_seen_ms,
        last_seen_ms: wall.last_seen_ms,
        sightings: present.sightings.saturating_add(wall.sightings_offset),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
