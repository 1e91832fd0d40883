//! Presence (`gateway-api.md` §3.3) as a pure state machine: sightings of decoded frames go in,
//! the events of §3.4 come out. It does no I/O and reads no clock; every call carries its
//! monotonic `Instant`, so leave timers ignore wall-clock changes (as §3.3 requires) and tests
//! drive it with a fake clock. The pipeline around it commits each event with the presence
//! change that produced it (§5.3), turns `Instant`s into RFC 3339 timestamps, and adds the
//! event envelope (`id`, `sequence`, `gateway`) and the `raw` pairs of `beacon.entered`.
//!
//! | Transition | Condition | Event |
//! |---|---|---|
//! | absent → present | a sighting, with `rssi ≥ enter_rssi` if that is set | [`Event::Entered`] |
//! | present → present | sightings; at most one event per key per `update_interval` | [`Event::Updated`] |
//! | present → absent | nothing heard for `leave_after` | [`Event::Left`] |
//! | (any) | a TLM frame; at most one event per address per `telemetry_interval` | [`Event::Telemetry`] |
//!
//! A key whose leave timer has run out is absent even before [`Presence::expire`] runs: a
//! sighting of it first gives its `Left`, then a new `Entered`.

use crate::address::{Address, AddressType};
use crate::beacon::{Beacon, Frame, Telemetry};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The `[presence]` settings (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `enter_rssi`: the weakest RSSI at which an absent beacon enters; `None` for any.
    pub enter_rssi: Option<i16>,
    /// `update_interval_s` (default 10 s).
    pub update_interval: Duration,
    /// `leave_after_s` (default 30 s).
    pub leave_after: Duration,
    /// `telemetry_interval_s` (default 60 s).
    pub telemetry_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            enter_rssi: None,
            update_interval: Duration::from_secs(10),
            leave_after: Duration::from_secs(30),
            telemetry_interval: Duration::from_secs(60),
        }
    }
}

/// Where and when a frame was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// The address the frame came from (§3.2: not part of a beacon's identity).
    pub address: Address,
    /// Public or random.
    pub address_type: AddressType,
    /// dBm, if the backend reported it.
    pub rssi: Option<i16>,
    /// When it was received, on the monotonic clock that drives the timers of §3.3.
    pub at: Instant,
}

/// A present beacon: the beacon object of §3.2, less `self`, `telemetry` (see
/// [`Presence::telemetry`]) and the wall-clock form of its times.
#[derive(Debug, Clone, PartialEq)]
pub struct Present {
    /// The latest decoded values (non-identity fields such as TX power may change).
    pub beacon: Beacon,
    /// `address`: where it was last heard from.
    pub address: Address,
    /// `addressType` of that address.
    pub address_type: AddressType,
    /// The latest RSSI.
    pub rssi: Option<i16>,
    /// `firstSeen`: the sighting that made it enter.
    pub first_seen: Instant,
    /// `lastSeen`: the latest sighting; the leave timer runs from here (§3.3).
    pub last_seen: Instant,
    /// Sightings since it entered, that one included.
    pub sightings: u64,
}

/// RSSI statistics over the sightings since the previous `entered` or `updated` event.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RssiWindow {
    /// Sightings in the window, with or without an RSSI.
    pub sightings: u64,
    /// `rssiMin`: the weakest RSSI in the window, dBm; `None` if none was reported.
    pub rssi_min: Option<i16>,
    /// `rssiMax`: the strongest RSSI in the window, dBm; `None` if none was reported.
    pub rssi_max: Option<i16>,
    /// The mean of the RSSIs reported in the window.
    pub rssi_mean: Option<f64>,
}

/// An event of §3.4, without its envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `beacon.entered`, at the sighting that caused it.
    Entered {
        /// The beacon's identity key (§3.2).
        key: String,
        /// The beacon as it entered: one sighting, `first_seen == last_seen`.
        beacon: Present,
    },
    /// `beacon.updated`, at the sighting that caused it.
    Updated {
        /// The beacon's identity key (§3.2).
        key: String,
        /// The beacon with this sighting counted.
        beacon: Present,
        /// `rssiMin`, `rssiMax`, `rssiMean` and `sightings` since the previous event.
        window: RssiWindow,
    },
    /// `beacon.left` with `reason: "timeout"`, at `at`: when the leave timer ran out
    /// (`last_seen + leave_after`). `duration` is `last_seen − first_seen` (`durationS`).
    Left {
        /// The beacon's identity key (§3.2).
        key: String,
        /// The beacon's last known values.
        beacon: Present,
        /// When the leave timer ran out: the event's `timestamp`.
        at: Instant,
        /// `durationS`: how long it was present.
        duration: Duration,
    },
    /// `beacon.telemetry`, at the TLM sighting. `keys` are the beacons present at its address,
    /// sorted; possibly none.
    Telemetry {
        /// The TLM frame's sighting: `address`, `addressType`, `rssi` and the time.
        sighting: Sighting,
        /// The keys of the beacons present at that address, sorted (§3.4 `keys`).
        keys: Vec<String>,
        /// The decoded TLM (§3.4 `telemetry`).
        telemetry: Telemetry,
    },
}

impl Event {
    /// The key this event is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::Entered { key, .. } | Event::Updated { key, .. } | Event::Left { key, .. } => {
                Some(key)
            }
            Event::Telemetry { .. } => None,
        }
    }

    /// The event type of §3.4.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Entered { .. } => "beacon.entered",
            Event::Updated { .. } => "beacon.updated",
            Event::Left { .. } => "beacon.left",
            Event::Telemetry { .. } => "beacon.telemetry",
        }
    }
}

/// Per key: the beacon and the state of its update rate limit.
#[derive(Debug, Clone)]
struct Tracked {
    present: Present,
    last_event: Instant,
    window: Window,
}

/// Running RSSI statistics.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    sightings: u64,
    with_rssi: u64,
    sum: i64,
    min: Option<i16>,
    max: Option<i16>,
}

impl Window {
    fn add(&mut self, rssi: Option<i16>) {
        self.sightings = self.sightings.saturating_add(1);
        if let Some(rssi) = rssi {
            self.with_rssi = self.with_rssi.saturating_add(1);
            self.sum = self.sum.saturating_add(i64::from(rssi));
            self.min = Some(self.min.map_or(rssi, |m| m.min(rssi)));
            self.max = Some(self.max.map_or(rssi, |m| m.max(rssi)));
        }
    }

    fn report(&self) -> RssiWindow {
        RssiWindow {
            sightings: self.sightings,
            rssi_min: self.min,
            rssi_max: self.max,
            // Exact for any realistic count; precision only fades past 2^53 sightings.
            rssi_mean: (self.with_rssi > 0).then(|| self.sum as f64 / self.with_rssi as f64),
        }
    }
}

/// The latest TLM of an address, and when its last event went out.
#[derive(Debug, Clone, Copy)]
struct AddressTelemetry {
    telemetry: Telemetry,
    received: Instant,
    last_event: Option<Instant>,
}

/// The presence table.
#[derive(Debug, Clone, Default)]
pub struct Presence {
    config: Config,
    beacons: BTreeMap<String, Tracked>,
    /// `(last_seen, key)` of every tracked beacon: the leave deadlines in order, so the next
    /// one is found without a scan of the whole table (the pipeline asks after every report).
    by_last_seen: BTreeSet<(Instant, String)>,
    telemetry: HashMap<Address, AddressTelemetry>,
}

impl Presence {
    /// An empty table with these settings; the pipeline refills it from the store at start
    /// (§3.3).
    pub fn new(config: Config) -> Presence {
        Presence {
            config,
            beacons: BTreeMap::new(),
            by_last_seen: BTreeSet::new(),
            telemetry: HashMap::new(),
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A decoded frame was heard.
    pub fn observe(&mut self, frame: Frame, sighting: Sighting) -> Vec<Event> {
        match frame {
            Frame::Beacon(beacon) => self.observe_beacon(beacon, sighting),
            Frame::Telemetry(telemetry) => self
                .observe_telemetry(telemetry, sighting)
                .into_iter()
                .collect(),
        }
    }

    /// A beacon frame was heard: `Entered`, `Updated`, nothing, or (if its timer had run out)
    /// `Left` and then possibly `Entered`.
    pub fn observe_beacon(&mut self, beacon: Beacon, sighting: Sighting) -> Vec<Event> {
        let key = beacon.key();
        let mut events = Vec::new();
        if let Some(tracked) = self.beacons.get(&key)
            && self.expired(tracked, sighting.at)
            && let Some(left) = self.leave(&key)
        {
            events.push(left);
        }
        let update_interval = self.config.update_interval;
        match self.beacons.get_mut(&key) {
            Some(tracked) => {
                let present = &mut tracked.present;
                present.beacon = beacon;
                present.address = sighting.address;
                present.address_type = sighting.address_type;
                present.rssi = sighting.rssi;
                if sighting.at > present.last_seen {
                    self.by_last_seen.remove(&(present.last_seen, key.clone()));
                    self.by_last_seen.insert((sighting.at, key.clone()));
                    present.last_seen = sighting.at;
                }
                present.sightings = present.sightings.saturating_add(1);
                tracked.window.add(sighting.rssi);
                if sighting.at.saturating_duration_since(tracked.last_event) >= update_interval {
                    let window = std::mem::take(&mut tracked.window).report();
                    tracked.last_event = sighting.at;
                    events.push(Event::Updated {
                        key,
                        beacon: tracked.present.clone(),
                        window,
                    });
                }
            }
            None => {
                let strong_enough = match self.config.enter_rssi {
                    None => true,
                    Some(min) => sighting.rssi.is_some_and(|rssi| rssi >= min),
                };
                if strong_enough {
                    let present = Present {
                        beacon,
                        address: sighting.address,
                        address_type: sighting.address_type,
                        rssi: sighting.rssi,
                        first_seen: sighting.at,
                        last_seen: sighting.at,
                        sightings: 1,
                    };
                    self.by_last_seen.insert((sighting.at, key.clone()));
                    self.beacons.insert(
                        key.clone(),
                        Tracked {
                            present: present.clone(),
                            last_event: sighting.at,
                            window: Window::default(),
                        },
                    );
                    events.push(Event::Entered {
                        key,
                        beacon: present,
                    });
                }
            }
        }
        events
    }

    /// A TLM frame was heard: it becomes the address's latest telemetry, and an event unless
    /// one went out for this address less than `telemetry_interval` ago.
    pub fn observe_telemetry(&mut self, telemetry: Telemetry, sighting: Sighting) -> Option<Event> {
        let interval = self.config.telemetry_interval;
        let keys = self.keys_at(&sighting.address, sighting.at);
        let entry = self
            .telemetry
            .entry(sighting.address)
            .or_insert(AddressTelemetry {
                telemetry,
                received: sighting.at,
                last_event: None,
            });
        entry.telemetry = telemetry;
        entry.received = entry.received.max(sighting.at);
        let due = entry
            .last_event
            .is_none_or(|last| sighting.at.saturating_duration_since(last) >= interval);
        if !due {
            return None;
        }
        entry.last_event = Some(sighting.at);
        Some(Event::Telemetry {
            sighting,
            keys,
            telemetry,
        })
    }

    /// Every beacon whose leave timer has run out by `now` leaves, in the order the timers ran
    /// out (then by key). Telemetry older than both intervals is forgotten.
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        // In deadline order (then key), as the index is sorted.
        let leave_after = self.config.leave_after;
        let gone: Vec<String> = self
            .by_last_seen
            .iter()
            .take_while(|(last_seen, _)| {
                last_seen
                    .checked_add(leave_after)
                    .is_some_and(|deadline| now >= deadline)
            })
            .map(|(_, key)| key.clone())
            .collect();
        let events = gone.iter().filter_map(|key| self.leave(key)).collect();
        let keep = self.config.leave_after.max(self.config.telemetry_interval);
        self.telemetry
            .retain(|_, t| now.saturating_duration_since(t.received) < keep);
        events
    }

    /// When [`Presence::expire`] next has work: the earliest leave deadline.
    pub fn next_expiry(&self) -> Option<Instant> {
        let (last_seen, _) = self.by_last_seen.first()?;
        last_seen.checked_add(self.config.leave_after)
    }

    /// The present beacons, sorted by key (as `GET /beacon/beacons` lists them).
    pub fn present(&self) -> impl Iterator<Item = (&str, &Present)> {
        self.beacons
            .iter()
            .map(|(key, tracked)| (key.as_str(), &tracked.present))
    }

    /// One present beacon.
    pub fn get(&self, key: &str) -> Option<&Present> {
        self.beacons.get(key).map(|tracked| &tracked.present)
    }

    /// The latest telemetry from an address: the `telemetry` member of its beacons' objects.
    pub fn telemetry(&self, address: &Address) -> Option<&Telemetry> {
        self.telemetry.get(address).map(|t| &t.telemetry)
    }

    /// The keys present at `address` at `now`, sorted.
    fn keys_at(&self, address: &Address, now: Instant) -> Vec<String> {
        self.beacons
            .iter()
            .filter(|(_, t)| t.present.address == *address && !self.expired(t, now))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// `last_seen + leave_after`, or `None` if that is beyond what an `Instant` can hold.
    fn deadline(&self, present: &Present) -> Option<Instant> {
        present.last_seen.checked_add(self.config.leave_after)
    }

    fn expired(&self, tracked: &Tracked, now: Instant) -> bool {
        self.deadline(&tracked.present)
            .is_some_and(|deadline| now >= deadline)
    }

    fn leave(&mut self, key: &str) -> Option<Event> {
        let tracked = self.beacons.remove(key)?;
        let present = tracked.present;
        self.by_last_seen
            .remove(&(present.last_seen, key.to_owned()));
        Some(Event::Left {
            key: key.to_owned(),
            at: self.deadline(&present).unwrap_or(present.last_seen),
            duration: present
                .last_seen
                .saturating_duration_since(present.first_seen),
            beacon: present,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::{EddystoneUid, IBeacon, PlainTlm};

    /// A fake clock: `t(s)` is `s` seconds after a fixed origin.
    struct TestClock(Instant);

    impl TestClock {
        fn new() -> TestClock {
            TestClock(Instant::now())
        }

        fn t(&self, seconds: f64) -> Instant {
            self.0 + Duration::from_secs_f64(seconds)
        }
    }

    /// A fake clock and a tracker with the default settings.
    fn setup() -> (TestClock, Presence) {
        (TestClock::new(), Presence::new(Config::default()))
    }

    const A1: Address = Address([0xc0, 0xff, 0xee, 0, 0, 1]);
    const A3: Address = Address([0xc0, 0xff, 0xee, 0, 0, 3]);

    fn ibeacon(minor: u16) -> Beacon {
        Beacon::IBeacon(IBeacon {
            uuid: "4c696d6d-6174-4265-6163-6f6e2d303031".parse().unwrap(),
            major: 1,
            minor,
            tx_power: -59,
        })
    }

    fn uid() -> Beacon {
        Beacon::EddystoneUid(EddystoneUid {
            tx_power: -18,
            namespace: *b"Limmon-001",
            instance: [0, 0, 0, 0, 0, 1],
        })
    }

    fn tlm(adv_count: u32) -> Telemetry {
        Telemetry::Plain(PlainTlm {
            battery_mv: Some(3000),
            temperature_c: Some(22.0),
            adv_count,
            uptime_ds: 10,
        })
    }

    fn seen(address: Address, rssi: i16, at: Instant) -> Sighting {
        Sighting {
            address,
            address_type: AddressType::Random,
            rssi: Some(rssi),
            at,
        }
    }

    fn types(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(Event::type_name).collect()
    }

    const KEY1: &str = "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:7";

    #[test]
    fn first_sighting_enters_once() {
        let (clock, mut presence) = setup();
        let events = presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(0.25)));
        let [Event::Entered { key, beacon }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(key, KEY1);
        assert_eq!(beacon.first_seen, clock.t(0.25));
        assert_eq!(beacon.last_seen, clock.t(0.25));
        assert_eq!((beacon.sightings, beacon.rssi), (1, Some(-63)));
        assert_eq!(
            presence.present().map(|(k, _)| k).collect::<Vec<_>>(),
            [KEY1]
        );
        // A second sighting within the update interval gives nothing.
        assert_eq!(
            presence.observe_beacon(ibeacon(7), seen(A1, -60, clock.t(1.0))),
            vec![]
        );
        assert_eq!(presence.get(KEY1).map(|p| p.sightings), Some(2));
    }

    #[test]
    fn updates_are_rate_limited_and_carry_window_statistics() {
        let (clock, mut presence) = setup();
        presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(0.0)));
        let mut updates = Vec::new();
        // One sighting a second for 25 s, RSSI cycling -70, -60, -65.
        for second in 1..=25 {
            let rssi = [-70, -60, -65][second % 3];
            let events =
                presence.observe_beacon(ibeacon(7), seen(A1, rssi, clock.t(second as f64)));
            updates.extend(events);
        }
        assert_eq!(types(&updates), ["beacon.updated", "beacon.updated"]);
        let Event::Updated { beacon, window, .. } = &updates[0] else {
            panic!()
        };
        // Sightings 1..=10 s, since the entering one.
        assert_eq!(beacon.last_seen, clock.t(10.0));
        assert_eq!(beacon.sightings, 11);
        assert_eq!(window.sightings, 10);
        assert_eq!((window.rssi_min, window.rssi_max), (Some(-70), Some(-60)));
        let expected: Vec<i16> = (1..=10).map(|s| [-70, -60, -65][s % 3]).collect();
        let mean = f64::from(expected.iter().sum::<i16>()) / 10.0;
        assert_eq!(window.rssi_mean, Some(mean));
        let Event::Updated { beacon, window, .. } = &updates[1] else {
            panic!()
        };
        assert_eq!(beacon.last_seen, clock.t(20.0));
        assert_eq!(window.sightings, 10);
    }

    #[test]
    fn no_update_without_sightings() {
        let (clock, mut presence) = setup();
        presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(0.0)));
        // Silence for 25 s is no update (and not yet a leave).
        assert_eq!(presence.expire(clock.t(25.0)), vec![]);
        let events = presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(25.0)));
        let [Event::Updated { window, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(window.sightings, 1);
    }

    #[test]
    fn leaves_after_silence_with_duration() {
        let (clock, mut presence) = setup();
        presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(0.0)));
        presence.observe_beacon(ibeacon(7), seen(A1, -90, clock.t(5.0)));
        assert_eq!(presence.next_expiry(), Some(clock.t(35.0)));
        assert_eq!(presence.expire(clock.t(34.9)), vec![]);
        let events = presence.expire(clock.t(40.0));
        let [
            Event::Left {
                key,
                beacon,
                at,
                duration,
            },
        ] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(key, KEY1);
        assert_eq!(*at, clock.t(35.0));
        assert_eq!(*duration, Duration::from_secs(5));
        assert_eq!(beacon.rssi, Some(-90));
        assert_eq!(presence.present().count(), 0);
        assert_eq!(presence.next_expiry(), None);
        // Exactly one leave.
        assert_eq!(presence.expire(clock.t(100.0)), vec![]);
    }

    #[test]
    fn a_sighting_after_the_timer_ran_out_leaves_then_enters() {
        let (clock, mut presence) = setup();
        presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(0.0)));
        let events = presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(30.0)));
        assert_eq!(types(&events), ["beacon.left", "beacon.entered"]);
        let Event::Entered { beacon, .. } = &events[1] else {
            panic!()
        };
        assert_eq!((beacon.first_seen, beacon.sightings), (clock.t(30.0), 1));
    }

    #[test]
    fn leaves_come_in_deadline_order() {
        let (clock, mut presence) = setup();
        presence.observe_beacon(ibeacon(9), seen(A1, -63, clock.t(2.0)));
        presence.observe_beacon(ibeacon(8), seen(A1, -63, clock.t(1.0)));
        presence.observe_beacon(uid(), seen(A3, -63, clock.t(1.0)));
        let keys: Vec<_> = presence
            .expire(clock.t(60.0))
            .iter()
            .filter_map(|e| e.key().map(str::to_owned))
            .collect();
        assert_eq!(
            keys,
            [
                "eddystone-uid:4c696d6d6f6e2d303031:000000000001",
                "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:8",
                "ibeacon:4c696d6d-6174-4265-6163-6f6e2d303031:1:9",
            ]
        );
    }

    #[test]
    fn enter_rssi_gates_entering_but_not_staying() {
        let clock = TestClock::new();
        let config = Config {
            enter_rssi: Some(-70),
            ..Config::default()
        };
        let mut presence = Presence::new(config);
        assert_eq!(
            presence.observe_beacon(ibeacon(7), seen(A1, -71, clock.t(0.0))),
            vec![]
        );
        let unknown = Sighting {
            rssi: None,
            ..seen(A1, 0, clock.t(0.5))
        };
        assert_eq!(presence.observe_beacon(ibeacon(7), unknown), vec![]);
        assert_eq!(presence.present().count(), 0);
        let events = presence.observe_beacon(ibeacon(7), seen(A1, -70, clock.t(1.0)));
        assert_eq!(types(&events), ["beacon.entered"]);
        // While present, a sighting at any RSSI keeps it present.
        presence.observe_beacon(ibeacon(7), seen(A1, -99, clock.t(29.0)));
        assert_eq!(presence.expire(clock.t(40.0)), vec![]);
        assert_eq!(types(&presence.expire(clock.t(59.0))), ["beacon.left"]);
    }

    #[test]
    fn the_key_ignores_the_address() {
        let (clock, mut presence) = setup();
        presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(0.0)));
        // The same beacon after an address rotation stays the same beacon.
        assert_eq!(
            presence.observe_beacon(ibeacon(7), seen(A3, -63, clock.t(1.0))),
            vec![]
        );
        assert_eq!(presence.get(KEY1).map(|p| p.address), Some(A3));
    }

    #[test]
    fn telemetry_names_the_keys_at_its_address_and_is_rate_limited() {
        let (clock, mut presence) = setup();
        // Before any beacon is present at the address: an event with no keys.
        let first = presence.observe_telemetry(tlm(1), seen(A3, -70, clock.t(0.0)));
        let Some(Event::Telemetry {
            keys,
            sighting,
            telemetry,
        }) = first
        else {
            panic!("{first:?}")
        };
        assert!(keys.is_empty());
        assert_eq!((sighting.address, telemetry), (A3, tlm(1)));
        presence.observe_beacon(uid(), seen(A3, -70, clock.t(1.0)));
        presence.observe_beacon(ibeacon(7), seen(A1, -70, clock.t(1.0)));
        // Within the interval: no event, but the latest telemetry is kept.
        assert_eq!(
            presence.observe_telemetry(tlm(2), seen(A3, -70, clock.t(59.0))),
            None
        );
        assert_eq!(presence.telemetry(&A3), Some(&tlm(2)));
        assert_eq!(presence.telemetry(&A1), None);
        // At 60 s an event is due again. The UID beacon, silent since 1 s, has left although
        // `expire` has not run, so it is not named.
        let events = presence.observe(Frame::Telemetry(tlm(3)), seen(A3, -70, clock.t(60.0)));
        let [Event::Telemetry { keys, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        assert!(keys.is_empty());
        // Heard again, it is named in the next event.
        let again = presence.observe_beacon(uid(), seen(A3, -70, clock.t(119.0)));
        assert_eq!(types(&again), ["beacon.left", "beacon.entered"]);
        let events = presence.observe(Frame::Telemetry(tlm(4)), seen(A3, -70, clock.t(120.0)));
        let [Event::Telemetry { keys, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(keys, &["eddystone-uid:4c696d6d6f6e2d303031:000000000001"]);
        // Another address has its own limit.
        assert!(
            presence
                .observe_telemetry(tlm(1), seen(A1, -70, clock.t(60.0)))
                .is_some()
        );
    }

    #[test]
    fn old_telemetry_is_forgotten() {
        let (clock, mut presence) = setup();
        presence.observe_telemetry(tlm(1), seen(A3, -70, clock.t(0.0)));
        presence.expire(clock.t(59.0));
        assert!(presence.telemetry(&A3).is_some());
        presence.expire(clock.t(60.0));
        assert_eq!(presence.telemetry(&A3), None);
    }

    #[test]
    fn out_of_order_instants_do_not_panic_or_rewind() {
        let (clock, mut presence) = setup();
        presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(10.0)));
        assert_eq!(
            presence.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(5.0))),
            vec![]
        );
        assert_eq!(presence.get(KEY1).map(|p| p.last_seen), Some(clock.t(10.0)));
        let mut huge = Presence::new(Config {
            leave_after: Duration::MAX,
            ..Config::default()
        });
        huge.observe_beacon(ibeacon(7), seen(A1, -63, clock.t(0.0)));
        assert_eq!(huge.next_expiry(), None);
        assert_eq!(huge.expire(clock.t(1e6)), vec![]);
    }
}
