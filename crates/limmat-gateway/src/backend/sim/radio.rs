//! The simulated air (`gateway-api.md` §6.2): one task drives every device from a timer heap
//! keyed by simulated time, rather than a task per beacon, so thousands of cloned beacons cost
//! a heap entry and a few hundred bytes each.
//!
//! Each advertiser has its own PRNG (see [`super::clock`]): a random phase within its
//! interval (so clones do not all fire on the same tick), the RSSI random walk (previous value
//! plus a uniform step, clamped, starting at `rssi.start`), and the TLM temperature drift.
//! Presence cycles start present; an absent device is simply not scheduled until its next
//! present phase. An Eddystone-UID beacon sends a TLM frame in place of every `tlm_every`-th
//! frame, with real counters: ADV_CNT counts the frames sent, SEC_CNT the simulated uptime,
//! the battery falls 1 mV per simulated minute from 3000 mV (stopping at 2000 mV), and the
//! temperature drifts around 22 °C (±1/16 °C per TLM frame, within 21–23 °C).
//!
//! Every report goes to the latest-report table (for `node()`) and to each open scan stream.
//! A scan stream that falls behind by more than its buffer loses reports, as a host that does
//! not keep up with its controller does; the others are unaffected.

use super::clock::{self, SimClock};
use super::peripheral::Peripheral;
use super::report;
use super::world::{BeaconSpec, Cycle, PeripheralSpec};
use crate::address::Address;
use crate::backend::Report;
use crate::beacon::{Frame, PlainTlm, Telemetry, ad};
use rand::Rng;
use rand::rngs::SmallRng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Reports a scan stream may lag behind before it loses some.
pub(super) const SCAN_BUFFER: usize = 16 * 1024;
/// GATT behaviour runs once per simulated second.
const TICK_MS: u64 = 1000;

/// What the driver shares with the backend's methods.
#[derive(Default)]
pub(super) struct Air {
    /// The latest report of every device heard.
    pub latest: HashMap<Address, Report>,
    /// The open scan streams.
    pub scanners: Vec<mpsc::Sender<Report>>,
    /// Reports lost by scan streams that lagged (for diagnostics).
    pub lost: u64,
}

impl Air {
    fn deliver(&mut self, report: Report) {
        let mut lost = 0;
        self.scanners
            .retain(|tx| match tx.try_send(report.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    lost += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        if lost > 0 && self.lost == 0 {
            tracing::warn!("sim: a scan stream is not keeping up; reports are being dropped");
        }
        self.lost += lost;
        self.latest.insert(report.address, report);
    }
}

/// One advertising device.
pub(super) struct Advertiser {
    /// The report of its steady frame (the beacon, or a peripheral's advertisement).
    template: Report,
    interval_ms: u64,
    cycle: Option<Cycle>,
    /// Offset within the interval, fixed at start.
    phase_ms: u64,
    walk: crate::backend::sim::RssiConfig,
    rssi: i16,
    rng: SmallRng,
    /// Frames sent so far (ADV_CNT).
    frames: u32,
    tlm_every: u32,
    /// TEMP in 8.8 fixed point.
    temperature: i16,
}

impl Advertiser {
    pub fn beacon(spec: &BeaconSpec, seed: u64) -> Advertiser {
        let (source, payload) = spec.beacon.encode();
        // Every format's frame fits one AD structure; the fallback is never taken.
        let raw = ad::advertisement(&source, &payload).unwrap_or_default();
        let template = report::from_raw(spec.address, raw, false);
        Advertiser::new(
            template,
            spec.interval_ms,
            spec.cycle,
            spec.rssi,
            spec.tlm_every,
            seed,
        )
    }

    pub fn peripheral(spec: &PeripheralSpec, seed: u64) -> Advertiser {
        let template = report::from_raw(spec.address, peripheral_ad(spec), true);
        Advertiser::new(template, spec.interval_ms, None, spec.rssi, 0, seed)
    }

    fn new(
        template: Report,
        interval_ms: u64,
        cycle: Option<Cycle>,
        walk: crate::backend::sim::RssiConfig,
        tlm_every: u32,
        seed: u64,
    ) -> Advertiser {
        let mut rng = clock::rng(seed, template.address, clock::Stream::Radio);
        let phase_ms = rng.random_range(0..interval_ms.max(1));
        Advertiser {
            template,
            interval_ms,
            cycle,
            phase_ms,
            walk,
            rssi: walk.start,
            rng,
            frames: 0,
            tlm_every,
            temperature: 22 * 256,
        }
    }

    fn first_due(&self) -> u64 {
        self.phase_ms
    }

    /// Whether the device is on air at `t`.
    fn present(&self, t: u64) -> bool {
        self.cycle.is_none_or(|c| c.present_at(t))
    }

    /// When it sends next after sending (or skipping) at `t`.
    fn next_due(&self, t: u64) -> u64 {
        let next = t + self.interval_ms;
        match self.cycle {
            Some(c) if !c.present_at(next) => c.next_start(next) + self.phase_ms,
            _ => next,
        }
    }

    /// The frame sent at simulated time `t` (received at `at`).
    fn send(&mut self, t: u64, clock: &SimClock) -> Report {
        self.frames = self.frames.wrapping_add(1);
        if self.frames > 1 {
            let step = self.walk.step;
            let delta = self.rng.random_range(-step..=step);
            self.rssi = (self.rssi + delta).clamp(self.walk.min, self.walk.max);
        }
        let mut report = if self.tlm_every > 0 && self.frames.is_multiple_of(self.tlm_every) {
            self.tlm(t)
        } else {
            self.template.clone()
        };
        let at = clock.instant_at(t);
        report.rssi = Some(self.rssi);
        report.at = at.into_std();
        report.received = clock.wall(at);
        report
    }

    /// An Eddystone-TLM frame with the counters as of `t`.
    fn tlm(&mut self, t: u64) -> Report {
        let step = self.rng.random_range(-16i16..=16);
        self.temperature = (self.temperature + step).clamp(21 * 256, 23 * 256);
        let telemetry = Telemetry::Plain(PlainTlm {
            battery_mv: Some(3000u16.saturating_sub((t / 60_000).min(1000) as u16)),
            temperature_c: Some(f64::from(self.temperature) / 256.0),
            adv_count: self.frames,
            uptime_ds: (t / 100).min(u64::from(u32::MAX)) as u32,
        });
        let (source, payload) = Frame::Telemetry(telemetry).encode();
        let raw = ad::advertisement(&source, &payload).unwrap_or_default();
        report::from_raw(self.template.address, raw, false)
    }
}

/// A peripheral's advertisement: flags, its service UUIDs (Heart Rate, Battery) unless it never
/// accepts connections, and its complete name.
fn peripheral_ad(spec: &PeripheralSpec) -> Vec<u8> {
    let mut raw = vec![2, ad::FLAGS, ad::BEACON_FLAGS];
    if !spec.unreachable {
        raw.extend([5, ad::COMPLETE_UUID16, 0x0d, 0x18, 0x0f, 0x18]);
    }
    let name = spec.name.as_bytes();
    // Names are at most 20 bytes (checked with the configuration).
    raw.push(name.len() as u8 + 1);
    raw.push(report::COMPLETE_NAME);
    raw.extend_from_slice(name);
    raw
}

/// What the heap schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    /// Advertiser `i` sends.
    Advertise(usize),
    /// Peripheral `i`'s GATT second.
    Tick(usize),
}

/// The driver: runs until `cancel`.
pub(super) async fn drive(
    clock: SimClock,
    air: Arc<Mutex<Air>>,
    mut advertisers: Vec<Advertiser>,
    peripherals: Vec<Arc<Peripheral>>,
    cancel: CancellationToken,
) {
    let mut heap = BinaryHeap::with_capacity(advertisers.len() + peripherals.len());
    for (i, a) in advertisers.iter().enumerate() {
        heap.push(Reverse((a.first_due(), Job::Advertise(i))));
    }
    for i in 0..peripherals.len() {
        heap.push(Reverse((TICK_MS, Job::Tick(i))));
    }
    let mut batch = Vec::new();
    while let Some(&Reverse((due, _))) = heap.peek() {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(clock.instant_at(due)) => {}
        }
        // Everything due by now, in time order (several at once when the task ran late).
        let horizon = due.max(clock.now_ms());
        while let Some(&Reverse((t, job))) = heap.peek() {
            if t > horizon {
                break;
            }
            heap.pop();
            let next = match job {
                Job::Advertise(i) => {
                    let Some(a) = advertisers.get_mut(i) else {
                        continue;
                    };
                    if a.present(t) {
                        batch.push(a.send(t, &clock));
                    }
                    a.next_due(t)
                }
                Job::Tick(i) => {
                    if let Some(p) = peripherals.get(i) {
                        p.tick(t);
                    }
                    t + TICK_MS
                }
            };
            heap.push(Reverse((next, job)));
        }
        if !batch.is_empty() {
            let mut air = air.lock().unwrap_or_else(|e| e.into_inner());
            for report in batch.drain(..) {
                air.deliver(report);
            }
        }
        // Let the consumers run between batches, even when every batch is late.
        tokio::task::yield_now().await;
    }
}
