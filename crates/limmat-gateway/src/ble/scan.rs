//! The scan hub (`gateway-api.md` §2.4): the gateway runs ONE scan on the backend and fans it
//! out to the beacon pipeline, list requests and SSE streams, so clients never start competing
//! scans.
//!
//! The scan is passive when the backend can (it is what the beacon pipeline needs, and it is
//! quiet on air) and becomes active while someone asks for an active scan; it goes back to
//! passive [`LINGER`] after the last such demand, so a client polling `?active=1` does not make
//! it flap. A backend without passive scanning (or one that answers `Unsupported`) is scanned
//! actively throughout.
//!
//! A list request returns the nodes heard in the last `duration`. The hub keeps the latest
//! report per node and, per mode, since when the scan has run without a gap; a request waits
//! only until that covers its window, and never beyond `duration` + [`SLACK`].

use crate::address::Address;
use crate::backend::{Backend, BleError, Report, ScanMode};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the scan stays active after the last active demand.
pub const LINGER: Duration = Duration::from_secs(30);
/// How much longer than its window a list request may take (§2.4: `duration` + 500 ms, minus
/// room to answer).
pub const SLACK: Duration = Duration::from_millis(400);
/// Reports older than this are dropped from the per-node cache (the longest window is 30 s).
const KEEP: Duration = Duration::from_secs(31);
/// Reports buffered per subscriber before a slow one starts losing them.
const FAN_OUT: usize = 1024;

/// Where the scan stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanState {
    /// The mode the backend scans in now; `None` while it does not scan.
    pub mode: Option<ScanMode>,
    /// Since when the scan has run without a gap, in either mode.
    pub any_since: Option<Instant>,
    /// Since when the scan has run actively without a gap.
    pub active_since: Option<Instant>,
    /// Why the scan is not running, if it failed.
    pub error: Option<String>,
}

/// The scan hub.
pub struct ScanHub {
    reports: broadcast::Sender<Arc<Report>>,
    latest: Mutex<HashMap<Address, Arc<Report>>>,
    state: watch::Sender<ScanState>,
    /// How many requests or streams want an active scan now.
    active_demand: watch::Sender<usize>,
}

/// Keeps the scan active while it lives (one per active list request or SSE stream).
pub struct ActiveDemand(Arc<ScanHub>);

impl Drop for ActiveDemand {
    fn drop(&mut self) {
        self.0
            .active_demand
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl ScanHub {
    /// Start scanning; the scan stops when `shutdown` is cancelled.
    pub fn start(
        backend: Arc<dyn Backend>,
        passive_scan: bool,
        shutdown: CancellationToken,
    ) -> Arc<ScanHub> {
        let hub = Arc::new(ScanHub {
            reports: broadcast::channel(FAN_OUT).0,
            latest: Mutex::new(HashMap::new()),
            state: watch::channel(ScanState::default()).0,
            active_demand: watch::channel(0).0,
        });
        tokio::spawn(scanner(hub.clone(), backend, passive_scan, shutdown));
        hub
    }

    /// Every report from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Report>> {
        self.reports.subscribe()
    }

    /// Ask for an active scan for as long as the guard lives.
    pub fn demand_active(self: &Arc<Self>) -> ActiveDemand {
        self.active_demand.send_modify(|n| *n += 1);
        ActiveDemand(self.clone())
    }

    /// The nodes heard in the last `duration` in `mode` (an active scan serves passive
    /// requests too), sorted by address, and the mode the scan ran in. Waits until the scan
    /// has covered the window, at most `duration` + [`SLACK`]; `Unavailable` if the backend
    /// does not scan at all.
    pub async fn nodes(
        self: &Arc<Self>,
        mode: ScanMode,
        duration: Duration,
    ) -> Result<(ScanMode, Vec<Arc<Report>>), BleError> {
        let _demand = (mode == ScanMode::Active).then(|| self.demand_active());
        let deadline = Instant::now() + duration + SLACK;
        let mut state = self.state.subscribe();
        loop {
            let now = Instant::now();
            let current = state.borrow_and_update().clone();
            let since = match mode {
                ScanMode::Active => current.active_since,
                ScanMode::Passive => current.any_since,
            };
            let covered_at = since.map(|s| s + duration);
            if covered_at.is_some_and(|at| at <= now) {
                break;
            }
            if now >= deadline {
                if current.mode.is_none() {
                    let why = current
                        .error
                        .unwrap_or_else(|| "the scan is not running".into());
                    return Err(BleError::Unavailable(why));
                }
                break;
            }
            let wake = covered_at.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = state.changed() => {
                    if changed.is_err() {
                        return Err(BleError::Unavailable("the scan has stopped".into()));
                    }
                }
            }
        }
        let ran = self.state.borrow().mode.unwrap_or(ScanMode::Active);
        let from = Instant::now().checked_sub(duration);
        let mut nodes: Vec<Arc<Report>> = self
            .cache()
            .values()
            .filter(|r| from.is_none_or(|from| Instant::from_std(r.at) >= from))
            .cloned()
            .collect();
        nodes.sort_by_key(|r| r.address);
        Ok((ran, nodes))
    }

    fn publish(&self, report: Report) {
        let report = Arc::new(report);
        self.cache().insert(report.address, report.clone());
        let _ = self.reports.send(report);
    }

    fn forget_old(&self) {
        if let Some(before) = Instant::now().checked_sub(KEEP) {
            self.cache()
                .retain(|_, r| Instant::from_std(r.at) >= before);
        }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<Address, Arc<Report>>> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The one scan: start it in the mode wanted, pump reports, switch modes when demand changes,
/// and restart (with backoff) when the backend's stream fails or ends.
async fn scanner(
    hub: Arc<ScanHub>,
    backend: Arc<dyn Backend>,
    mut passive_scan: bool,
    shutdown: CancellationToken,
) {
    let mut demand = hub.active_demand.subscribe();
    let mut backoff = Duration::from_secs(1);
    let mut tidy = tokio::time::interval(Duration::from_secs(5));
    loop {
        let active = *demand.borrow_and_update() > 0 || !passive_scan;
        let mode = if active {
            ScanMode::Active
        } else {
            ScanMode::Passive
        };
        let started = tokio::select! {
            _ = shutdown.cancelled() => return,
            started = backend.scan(mode) => started,
        };
        let mut stream = match started {
            Ok(stream) => stream,
            Err(BleError::Unsupported(_)) if mode == ScanMode::Passive => {
                tracing::info!("backend cannot scan passively; scanning actively");
                passive_scan = false;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scan failed to start; retrying in {backoff:?}");
                hub.state.send_replace(ScanState {
                    error: Some(e.to_string()),
                    ..ScanState::default()
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        let now = Instant::now();
        hub.state.send_modify(|s| {
            s.any_since = if s.mode.is_some() {
                s.any_since
            } else {
                Some(now)
            };
            s.active_since = (mode == ScanMode::Active).then_some(now);
            s.mode = Some(mode);
            s.error = None;
        });
        // When the scan should drop back to passive (no active demand for LINGER).
        let mut passive_at = None;
        let ended = loop {
            let wake = passive_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                report = stream.next() => match report {
                    Some(report) => hub.publish(report),
                    None => break true,
                },
                _ = tidy.tick() => hub.forget_old(),
                _ = demand.changed() => {
                    let wanted = *demand.borrow_and_update() > 0;
                    if wanted && mode == ScanMode::Passive {
                        break false;
                    }
                    passive_at = match (wanted, passive_scan && mode == ScanMode::Active) {
                        (false, true) => Some(Instant::now() + LINGER),
                        _ => None,
                    };
                }
                _ = tokio::time::sleep_until(wake), if passive_at.is_some() => break false,
            }
        };
        drop(stream);
        if ended {
            tracing::warn!("the backend's scan ended; restarting in {backoff:?}");
            hub.state.send_replace(ScanState {
                error: Some("the backend's scan ended".into()),
                ..ScanState::default()
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }
}
