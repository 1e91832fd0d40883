//! The per-domain rendezvous of devices and clients (spec 2.4, 2.5.6).
//!
//! Each domain has a FIFO of waiting device connections and a FIFO of waiting clients. An entry
//! is the sending half of a oneshot channel to the task that owns the other connection: the
//! side that arrives second pops the oldest live entry and hands its own connection over, so
//! exactly one task ends up holding both legs. Lookups are O(1) per domain; an entry whose task
//! has gone is skipped when popped and compacted away in bulk, so nothing is ever searched.
//!
//! The lock is a plain mutex per shard, held only for these few pointer moves and never across
//! an `.await`.

use crate::legs::{ClientKind, ClientLeg, DeviceClass, DeviceLeg, MuxConn};
use crate::snapshot::{DeviceSnapshot, DomainSnapshot, PipeCounters, PipeInfo, PipeSnapshot, unix};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A waiting device: send it a client to pair with. Boxed: the channel's shared state holds
/// the value inline and is allocated for every waiting device, most of which are never paired.
pub(crate) type DeviceSlot = oneshot::Sender<Box<ClientLeg>>;
/// A waiting client: send it a device to pair with.
pub(crate) type ClientSlot = oneshot::Sender<Offer>;

/// What a waiting client is handed: a PTTH device connection, or a reserved stream on a mux
/// connection (spec 2.5.6: "a mux connection with a free stream").
pub(crate) enum Offer {
    Ptth(DeviceLeg),
    Mux(MuxLease),
}

const SHARDS: usize = 64;

/// One reserved stream of a mux connection; dropping it frees the place and offers it to a
/// waiting client.
pub(crate) struct MuxLease {
    conn: Arc<MuxConn>,
    registry: Arc<Registry>,
    offer: bool,
}

impl MuxLease {
    /// Wraps a reservation already taken with [`MuxConn::try_reserve`].
    fn new(conn: Arc<MuxConn>, registry: Arc<Registry>) -> Self {
        Self {
            conn,
            registry,
            offer: true,
        }
    }

    /// The connection the stream is reserved on.
    pub(crate) fn conn(&self) -> &Arc<MuxConn> {
        &self.conn
    }

    /// Frees the place without offering it (the registry is already offering it).
    fn release_quietly(mut self) {
        self.offer = false;
    }
}

impl Drop for MuxLease {
    fn drop(&mut self) {
        self.conn.unreserve();
        if self.offer {
            self.registry.mux_offer(&self.conn);
        }
    }
}

/// A queued slot with its place in the domain's arrival order.
struct Entry<T> {
    seq: u64,
    slot: oneshot::Sender<T>,
}

/// One domain's state. Idle devices are most of a relay's domains, each alone in its domain,
/// so what only clients and pipes need lives in [`Traffic`], allocated with the first of them.
#[derive(Default)]
struct Domain {
    /// Waiting devices, one FIFO per [`DeviceClass`].
    devices: [VecDeque<Entry<Box<ClientLeg>>>; 4],
    /// Mux connections: always available up to their stream limits (5.8).
    mux: Vec<Arc<MuxConn>>,
    /// Round-robin start among mux connections with equally few streams.
    mux_turn: usize,
    /// Arrival counter: the oldest eligible entry across FIFOs has the smallest number.
    seq: u64,
    /// What the admin API shows about the device connections, by id.
    device_info: Infos,
    /// When the domain came online (its entry was created).
    since: Option<SystemTime>,
    /// Cancelled to disconnect every connection of the domain (admin `DELETE`).
    kill: CancellationToken,
    /// Cancelled when the domain moved to another cluster node (7.6): its waiting devices are
    /// renewed and its mux connections GOAWAY; its pipes are not touched.
    moved: CancellationToken,
    /// Waiting, renewing and mux connections: what the per-domain cap counts (2.4.5).
    counted: usize,
    /// Waiting clients and pipes; `None` until the domain's first.
    traffic: Option<Box<Traffic>>,
}

/// The part of a domain that clients use: kept once allocated, freed with the domain.
#[derive(Default)]
struct Traffic {
    /// Waiting clients, one FIFO per [`ClientKind`].
    clients: [VecDeque<Entry<Offer>>; 3],
    /// Clients inside their `client_wait`.
    waiting_clients: usize,
    /// What the admin API shows about the pipes, by id.
    pipes: HashMap<u64, PipeInfo>,
    /// Bytes of the pipes that have ended (live pipes add their own counters).
    bytes_up: u64,
    bytes_down: u64,
}

impl Domain {
    fn is_unused(&self) -> bool {
        self.counted == 0
            && self
                .traffic
                .as_ref()
                .is_none_or(|t| t.waiting_clients == 0 && t.pipes.is_empty())
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn traffic(&mut self) -> &mut Traffic {
        self.traffic.get_or_insert_default()
    }

    fn waiting_clients(&self) -> usize {
        self.traffic.as_ref().map_or(0, |t| t.waiting_clients)
    }

    /// The waiting-client FIFOs that a device of `class` may serve (2.6.5).
    fn clients_for(
        &mut self,
        class: DeviceClass,
    ) -> impl Iterator<Item = &mut VecDeque<Entry<Offer>>> {
        self.traffic
            .as_mut()
            .into_iter()
            .flat_map(|t| t.clients.iter_mut().zip(ClientKind::ALL))
            .filter(move |(_, kind)| kind.may_use(class))
            .map(|(queue, _)| queue)
    }
}

/// The device connections of one domain as the admin API lists them. Nearly every domain has
/// one or a few, for which a vector costs a quarter of a hash map's smallest table; a domain
/// with many devices gets the map, so that a departure is never a scan of thousands.
enum Infos {
    Few(Vec<(u64, DeviceInfo)>),
    #[expect(
        clippy::box_collection,
        reason = "boxed, the enum in every domain is a vector's size, not a map's"
    )]
    Many(Box<HashMap<u64, DeviceInfo>>),
}

/// Above this many devices in a domain, [`Infos`] is a map.
const FEW_INFOS: usize = 8;

impl Default for Infos {
    fn default() -> Self {
        Infos::Few(Vec::new())
    }
}

impl Infos {
    fn insert(&mut self, id: u64, info: DeviceInfo) {
        match self {
            Infos::Few(few) if few.len() < FEW_INFOS => {
                few.reserve_exact(1);
                few.push((id, info));
            }
            Infos::Few(few) => {
                let mut map: HashMap<u64, DeviceInfo> = few.drain(..).collect();
                map.insert(id, info);
                *self = Infos::Many(Box::new(map));
            }
            Infos::Many(map) => {
                map.insert(id, info);
            }
        }
    }

    fn remove(&mut self, id: u64) {
        match self {
            Infos::Few(few) => {
                if let Some(i) = few.iter().position(|(k, _)| *k == id) {
                    few.swap_remove(i);
                }
            }
            Infos::Many(map) => {
                map.remove(&id);
            }
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (u64, &DeviceInfo)> + '_> {
        match self {
            Infos::Few(few) => Box::new(few.iter().map(|(id, info)| (*id, info))),
            Infos::Many(map) => Box::new(map.iter().map(|(id, info)| (*id, info))),
        }
    }
}

/// Pops the oldest live entry among the given FIFOs: dead entries at their fronts are dropped,
/// then the fronts are compared by arrival number. O(number of FIFOs), never a scan.
fn pop_oldest<'q, T: 'q>(
    queues: impl Iterator<Item = &'q mut VecDeque<Entry<T>>>,
) -> Option<oneshot::Sender<T>> {
    let mut oldest: Option<&mut VecDeque<Entry<T>>> = None;
    for queue in queues {
        while queue.front().is_some_and(|e| e.slot.is_closed()) {
            queue.pop_front();
        }
        let Some(front) = queue.front() else { continue };
        let older = match oldest.as_ref().and_then(|q| q.front()) {
            Some(current) => front.seq < current.seq,
            None => true,
        };
        if older {
            oldest = Some(queue);
        }
    }
    oldest.and_then(|q| q.pop_front()).map(|e| e.slot)
}

/// Reserves a stream on the eligible mux connection with the fewest active streams, ties
/// broken round-robin (5.8).
fn pick_mux(d: &mut Domain, kind: ClientKind) -> Option<Arc<MuxConn>> {
    let n = d.mux.len();
    if n == 0 {
        return None;
    }
    d.mux_turn = d.mux_turn.wrapping_add(1);
    let start = d.mux_turn % n;
    let mut best: Option<(usize, &Arc<MuxConn>)> = None;
    for i in 0..n {
        let conn = &d.mux[(start + i) % n];
        if !kind.may_use(conn.class()) || !conn.has_room() {
            continue;
        }
        let active = conn.active();
        if best.is_none_or(|(b, _)| active < b) {
            best = Some((active, conn));
        }
    }
    let conn = best?.1.clone();
    conn.try_reserve().then_some(conn)
}

/// Pushes a slot, first dropping dead ones once they outnumber the live ones by far, so the
/// amortised cost stays O(1) however many waiters leave on their own.
fn push_compacting<T>(queue: &mut VecDeque<Entry<T>>, entry: Entry<T>, live: usize) {
    if queue.len() > 2 * live + 16 {
        queue.retain(|e| !e.slot.is_closed());
    }
    queue.push_back(entry);
}

/// Domains are boxed: a map bucket then costs a pointer, not a whole `Domain`, and maps keep
/// spare buckets.
type Shard = Mutex<HashMap<Arc<str>, Box<Domain>>>;

/// All domains of one relay node.
pub(crate) struct Registry {
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// Ids for device connections and pipes, unique per node.
    ids: AtomicU64,
}

/// Outcome of a device becoming eligible.
pub(crate) enum DeviceReady {
    /// The oldest waiting client: send it this device.
    Client(ClientSlot),
    /// No client was waiting; the device's slot is queued.
    Queued,
}

/// Outcome of a client looking for a device.
pub(crate) enum ClientReady {
    /// A stream reserved on a mux connection (tried first, 5.8).
    Mux(MuxLease),
    /// The oldest waiting device: send it this client.
    Device(DeviceSlot),
    /// No device; the client's slot is queued until the guard drops.
    Queued(ClientWait),
    /// No device, and the client may not wait (no time left, or `max_waiting_clients`).
    Refused,
}

impl Registry {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            ids: AtomicU64::new(1),
        })
    }

    fn shard(&self, domain: &str) -> MutexGuard<'_, HashMap<Arc<str>, Box<Domain>>> {
        let index = self.hasher.hash_one(domain) as usize % SHARDS;
        // A panic elsewhere cannot leave these maps half-updated: every critical section
        // is a few infallible moves, so a poisoned lock is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a device connection against the domain's cap (2.4.5, D6); `None` if that would
    /// exceed `cap` (zero: no cap).
    pub(crate) fn admit(self: &Arc<Self>, domain: &str, cap: usize) -> Option<Admission> {
        let mut shard = self.shard(domain);
        let key: Arc<str> = match shard.get_key_value(domain) {
            Some((key, _)) => key.clone(),
            None => domain.into(),
        };
        let entry = shard.entry(key.clone()).or_default();
        if cap > 0 && entry.counted >= cap {
            return None;
        }
        entry.counted += 1;
        entry.since.get_or_insert_with(SystemTime::now);
        Some(Admission {
            registry: self.clone(),
            domain: key,
            id: self.ids.fetch_add(1, Ordering::Relaxed),
            kill: entry.kill.clone(),
            moved: entry.moved.clone(),
        })
    }

    /// Records what the admin API shows about an admitted device connection.
    pub(crate) fn describe(&self, admission: &Admission, info: DeviceInfo) {
        if let Some(d) = self.shard(&admission.domain).get_mut(&admission.domain) {
            d.device_info.insert(admission.id, info);
        }
    }

    /// A pipe of `domain` starts; it is shown and counted until the guard drops.
    pub(crate) fn pipe_started(self: &Arc<Self>, domain: &Arc<str>, info: PipeInfo) -> PipeGuard {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(domain);
        let d = shard.entry(domain.clone()).or_default();
        d.since.get_or_insert_with(SystemTime::now);
        let kill = d.kill.clone();
        let counters = info.counters.clone();
        d.traffic().pipes.insert(id, info);
        PipeGuard {
            registry: self.clone(),
            domain: domain.clone(),
            id,
            counters,
            kill,
        }
    }

    /// Disconnects every connection of `domain` (admin `DELETE`); `false` if it is not online.
    pub(crate) fn disconnect(&self, domain: &str) -> bool {
        let mut shard = self.shard(domain);
        let Some(d) = shard.get_mut(domain) else {
            return false;
        };
        // Connections admitted from now on get a fresh token.
        std::mem::take(&mut d.kill).cancel();
        true
    }

    /// Tells the device connections and waiting clients of `domain` that it moved to another
    /// node (7.6); returns how many device connections there were. Pipes go on.
    pub(crate) fn move_away(&self, domain: &str) -> usize {
        let mut shard = self.shard(domain);
        let Some(d) = shard.get_mut(domain) else {
            return 0;
        };
        // Connections admitted from now on get a fresh token.
        std::mem::take(&mut d.moved).cancel();
        d.counted
    }

    /// The domains with device connections or waiting clients, for rebalancing (7.6).
    pub(crate) fn with_devices(&self) -> Vec<Arc<str>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.extend(
                shard
                    .iter()
                    .filter(|(_, d)| d.counted > 0 || d.waiting_clients() > 0)
                    .map(|(name, _)| name.clone()),
            );
        }
        all
    }

    /// Every online domain, for the admin API.
    pub(crate) fn snapshot(&self) -> Vec<DomainSnapshot> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.extend(shard.iter().map(|(name, d)| DomainSnapshot::of(name, d)));
        }
        all.sort_by(|a, b| a.domain.cmp(&b.domain));
        all
    }

    /// One domain, for the admin API.
    pub(crate) fn snapshot_of(&self, domain: &str) -> Option<DomainSnapshot> {
        let shard = self.shard(domain);
        shard
            .get_key_value(domain)
            .map(|(name, d)| DomainSnapshot::of(name, d))
    }

    /// A PTTH device can take a client: pair it with the oldest waiting client it may serve
    /// (2.6.5), or queue it.
    pub(crate) fn device_ready(
        &self,
        admission: &Admission,
        class: DeviceClass,
        slot: DeviceSlot,
    ) -> DeviceReady {
        let mut shard = self.shard(&admission.domain);
        let Some(domain) = shard.get_mut(&admission.domain) else {
            // Unreachable while the admission lives; queueing nowhere would only lose the device.
            return DeviceReady::Queued;
        };
        if let Some(client) = pop_oldest(domain.clients_for(class)) {
            return DeviceReady::Client(client);
        }
        let live = domain.counted;
        let seq = domain.next_seq();
        push_compacting(
            &mut domain.devices[class.index()],
            Entry { seq, slot },
            live,
        );
        DeviceReady::Queued
    }

    /// A client needs a device of `domain`: the oldest waiting one, or a place in the queue.
    pub(crate) fn client_ready(
        self: &Arc<Self>,
        domain: &Arc<str>,
        kind: ClientKind,
        slot: ClientSlot,
        may_wait: bool,
        max_waiting: usize,
    ) -> ClientReady {
        let mut shard = self.shard(domain);
        if let Some(d) = shard.get_mut(domain.as_ref()) {
            if let Some(conn) = pick_mux(d, kind) {
                drop(shard);
                return ClientReady::Mux(MuxLease::new(conn, self.clone()));
            }
            let eligible = d
                .devices
                .iter_mut()
                .zip(DeviceClass::ALL)
                .filter(|(_, class)| kind.may_use(*class))
                .map(|(queue, _)| queue);
            if let Some(device) = pop_oldest(eligible) {
                return ClientReady::Device(device);
            }
        }
        if !may_wait {
            return ClientReady::Refused;
        }
        let d = shard.entry(domain.clone()).or_default();
        if max_waiting > 0 && d.waiting_clients() >= max_waiting {
            if d.is_unused() {
                shard.remove(domain.as_ref());
            }
            return ClientReady::Refused;
        }
        let seq = d.next_seq();
        let moved = d.moved.clone();
        let traffic = d.traffic();
        traffic.waiting_clients += 1;
        let live = traffic.waiting_clients;
        push_compacting(
            &mut traffic.clients[kind.index()],
            Entry { seq, slot },
            live,
        );
        ClientReady::Queued(ClientWait {
            registry: self.clone(),
            domain: domain.clone(),
            moved,
        })
    }

    /// A mux connection of `admission`'s domain is ready: list it and give it waiting clients.
    pub(crate) fn mux_add(self: &Arc<Self>, admission: &Admission, conn: Arc<MuxConn>) {
        if let Some(d) = self.shard(&admission.domain).get_mut(&admission.domain) {
            d.mux.push(conn.clone());
        }
        self.mux_offer(&conn);
    }

    /// A mux connection takes no new streams (drain, death): unlist it.
    pub(crate) fn mux_remove(&self, conn: &Arc<MuxConn>) {
        if let Some(d) = self.shard(conn.domain()).get_mut(conn.domain().as_ref()) {
            d.mux.retain(|c| !Arc::ptr_eq(c, conn));
        }
    }

    /// Hands streams of `conn` to waiting clients while it has room and clients wait (2.5.6).
    pub(crate) fn mux_offer(self: &Arc<Self>, conn: &Arc<MuxConn>) {
        loop {
            let slot = {
                let mut shard = self.shard(conn.domain());
                let Some(d) = shard.get_mut(conn.domain().as_ref()) else {
                    return;
                };
                if !d.mux.iter().any(|c| Arc::ptr_eq(c, conn)) || !conn.try_reserve() {
                    return;
                }
                match pop_oldest(d.clients_for(conn.class())) {
                    Some(slot) => slot,
                    None => {
                        conn.unreserve();
                        return;
                    }
                }
            };
            let lease = MuxLease::new(conn.clone(), self.clone());
            // That client has just left: try the next one.
            if let Err(Offer::Mux(lease)) = slot.send(Offer::Mux(lease)) {
                lease.release_quietly();
            }
        }
    }

    fn release(&self, domain: &str, update: impl FnOnce(&mut Domain)) {
        let mut shard = self.shard(domain);
        if let Some(d) = shard.get_mut(domain) {
            update(d);
            if d.is_unused() {
                shard.remove(domain);
                // Give back the memory of a burst of distinct domains once it is over.
                if shard.capacity() > 64 && shard.len() < shard.capacity() / 4 {
                    let len = shard.len();
                    shard.shrink_to(len * 2);
                }
            }
        }
    }

    /// Domains with any waiting, renewing or counted connection or waiting client.
    #[cfg(test)]
    pub(crate) fn domains(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// One device connection counted against its domain's cap, until dropped.
pub(crate) struct Admission {
    registry: Arc<Registry>,
    domain: Arc<str>,
    id: u64,
    kill: CancellationToken,
    moved: CancellationToken,
}

impl Admission {
    /// Cancelled when the domain moved to another cluster node (7.6).
    pub(crate) fn moved(&self) -> &CancellationToken {
        &self.moved
    }

    pub(crate) fn domain(&self) -> &Arc<str> {
        &self.domain
    }

    /// The connection's id, as the admin API lists it.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Cancelled when an operator disconnects the domain.
    pub(crate) fn killed(&self) -> &CancellationToken {
        &self.kill
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let id = self.id;
        self.registry.release(&self.domain, |d| {
            d.counted = d.counted.saturating_sub(1);
            d.device_info.remove(id);
        });
    }
}

/// A device connection as the admin API shows it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) class: DeviceClass,
    pub(crate) since: SystemTime,
}

/// Keeps a pipe listed until dropped; its bytes then go to the domain's totals.
pub(crate) struct PipeGuard {
    registry: Arc<Registry>,
    domain: Arc<str>,
    id: u64,
    pub(crate) counters: Arc<PipeCounters>,
    kill: CancellationToken,
}

impl PipeGuard {
    pub(crate) fn killed(&self) -> &CancellationToken {
        &self.kill
    }
}

impl Drop for PipeGuard {
    fn drop(&mut self) {
        let (id, counters) = (self.id, self.counters.clone());
        self.registry.release(&self.domain, |d| {
            let traffic = d.traffic();
            traffic.pipes.remove(&id);
            traffic.bytes_up += counters.up.load(Ordering::Relaxed);
            traffic.bytes_down += counters.down.load(Ordering::Relaxed);
        });
    }
}

impl DomainSnapshot {
    fn of(name: &str, d: &Domain) -> Self {
        let mut devices: Vec<DeviceSnapshot> = d
            .device_info
            .iter()
            .map(|(id, info)| {
                let mux = d.mux.iter().find(|c| c.id() == id);
                DeviceSnapshot {
                    id,
                    addr: info.peer.to_string(),
                    transport: if info.class.tls { "tls" } else { "tcp" },
                    protocol: if mux.is_some() { "mux" } else { "ptth" },
                    streams: mux.map_or(0, |c| c.active()),
                    pass_through: info.class.pass_through,
                    since: unix(info.since),
                }
            })
            .collect();
        devices.sort_by_key(|dev| dev.id);
        let none = Traffic::default();
        let traffic = d.traffic.as_deref().unwrap_or(&none);
        let mut pipe_list: Vec<PipeSnapshot> = traffic
            .pipes
            .iter()
            .map(|(&id, p)| PipeSnapshot {
                id,
                client: p.client.to_string(),
                device: p.device.to_string(),
                leg: p.leg,
                bytes_in: p.counters.up.load(Ordering::Relaxed),
                bytes_out: p.counters.down.load(Ordering::Relaxed),
                since: unix(p.since),
            })
            .collect();
        pipe_list.sort_by_key(|p| p.id);
        let live_in: u64 = pipe_list.iter().map(|p| p.bytes_in).sum();
        let live_out: u64 = pipe_list.iter().map(|p| p.bytes_out).sum();
        Self {
            domain: name.to_owned(),
            waiting: d.counted,
            waiting_clients: traffic.waiting_clients,
            pipes: traffic.pipes.len(),
            mux_streams: d.mux.iter().map(|c| c.active()).sum(),
            bytes_in: traffic.bytes_up + live_in,
            bytes_out: traffic.bytes_down + live_out,
            online_since: d.since.map_or(0, unix),
            devices,
            pipe_list,
        }
    }
}

/// One client inside its `client_wait`, until dropped.
pub(crate) struct ClientWait {
    registry: Arc<Registry>,
    domain: Arc<str>,
    moved: CancellationToken,
}

impl ClientWait {
    /// Cancelled when the domain moved to another cluster node (7.6): the client is forwarded.
    pub(crate) fn moved(&self) -> &CancellationToken {
        &self.moved
    }
}

impl Drop for ClientWait {
    fn drop(&mut self) {
        self.registry.release(&self.domain, |d| {
            let traffic = d.traffic();
            traffic.waiting_clients = traffic.waiting_clients.saturating_sub(1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: DeviceClass = DeviceClass {
        tls: false,
        pass_through: false,
    };

    #[test]
    fn pairing_table() {
        // 2.6.5: plain clients take any device; terminated HTTPS clients only TLS devices that
        // do not terminate themselves; SNI-routed clients pass-through devices or TLS devices.
        let table = [
            (ClientKind::Plain, [true, true, true, true]),
            (ClientKind::Terminated, [false, true, false, false]),
            (ClientKind::Sni, [false, true, true, true]),
        ];
        for (kind, expected) in table {
            let got = DeviceClass::ALL.map(|class| kind.may_use(class));
            assert_eq!(got, expected, "{kind:?}");
        }
    }

    #[test]
    fn oldest_eligible_device_across_classes() {
        let r = Registry::new();
        let domain: Arc<str> = "dom".into();
        // Plain, TLS, plain pass-through: the first three classes, in arrival order.
        let classes = &DeviceClass::ALL[..3];
        let admissions: Vec<_> = classes.iter().map(|_| r.admit("dom", 0).unwrap()).collect();
        let mut receivers = Vec::new();
        for (a, &class) in admissions.iter().zip(classes) {
            let (tx, rx) = oneshot::channel();
            assert!(matches!(r.device_ready(a, class, tx), DeviceReady::Queued));
            receivers.push(rx);
        }
        use oneshot::error::TryRecvError;
        let served = |kind, receivers: &mut Vec<oneshot::Receiver<Box<ClientLeg>>>| {
            let (tx, _rx) = oneshot::channel();
            let ClientReady::Device(slot) = r.client_ready(&domain, kind, tx, false, 0) else {
                return None;
            };
            drop(slot);
            receivers
                .iter_mut()
                .position(|rx| rx.try_recv().err() == Some(TryRecvError::Closed))
        };
        // An SNI client skips the older plain device and takes the TLS one.
        assert_eq!(served(ClientKind::Sni, &mut receivers), Some(1));
        receivers.remove(1);
        // A terminated client finds no eligible device left.
        assert_eq!(served(ClientKind::Terminated, &mut receivers), None);
        // A plain client takes the oldest, the plain device.
        assert_eq!(served(ClientKind::Plain, &mut receivers), Some(0));
    }

    #[test]
    fn cap_counts_admissions_and_frees_on_drop() {
        let r = Registry::new();
        let a = r.admit("dom", 2).unwrap();
        let b = r.admit("dom", 2).unwrap();
        assert!(r.admit("dom", 2).is_none());
        drop(a);
        let c = r.admit("dom", 2).unwrap();
        assert!(r.admit("other", 2).is_some());
        drop((b, c));
        assert_eq!(r.domains(), 0);
        // Zero means no cap.
        let many: Vec<_> = (0..100).map(|_| r.admit("dom", 0).unwrap()).collect();
        drop(many);
        assert_eq!(r.domains(), 0);
    }

    #[test]
    fn devices_are_served_oldest_first_and_dead_ones_skipped() {
        let r = Registry::new();
        let admissions: Vec<_> = (0..3).map(|_| r.admit("dom", 0).unwrap()).collect();
        let mut receivers = Vec::new();
        for a in &admissions {
            let (tx, rx) = oneshot::channel();
            assert!(matches!(r.device_ready(a, PLAIN, tx), DeviceReady::Queued));
            receivers.push(rx);
        }
        // The oldest device left: the next oldest is served.
        drop(receivers.remove(0));
        let domain: Arc<str> = "dom".into();
        let (tx, _rx) = oneshot::channel();
        let ClientReady::Device(slot) = r.client_ready(&domain, ClientKind::Plain, tx, true, 0)
        else {
            panic!("a device was waiting");
        };
        // Dropping the popped slot closes exactly the receiver of the device it belonged to.
        drop(slot);
        use oneshot::error::TryRecvError;
        assert_eq!(receivers[0].try_recv().err(), Some(TryRecvError::Closed));
        assert_eq!(receivers[1].try_recv().err(), Some(TryRecvError::Empty));
    }

    #[test]
    fn clients_wait_in_order_and_are_limited() {
        let r = Registry::new();
        let domain: Arc<str> = "dom".into();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, _rx2) = oneshot::channel();
        let (tx3, _rx3) = oneshot::channel();
        let w1 = r.client_ready(&domain, ClientKind::Plain, tx1, true, 2);
        let w2 = r.client_ready(&domain, ClientKind::Plain, tx2, true, 2);
        assert!(matches!(w1, ClientReady::Queued(_)));
        assert!(matches!(w2, ClientReady::Queued(_)));
        assert!(matches!(
            r.client_ready(&domain, ClientKind::Plain, tx3, true, 2),
            ClientReady::Refused
        ));
        let a = r.admit("dom", 0).unwrap();
        let (tx, _rx) = oneshot::channel();
        let DeviceReady::Client(slot) = r.device_ready(&a, PLAIN, tx) else {
            panic!("a client was waiting");
        };
        drop(slot);
        assert_eq!(
            rx1.try_recv().err(),
            Some(oneshot::error::TryRecvError::Closed)
        );
        drop((w1, w2, a));
        assert_eq!(r.domains(), 0);
        let (tx, _rx) = oneshot::channel();
        assert!(matches!(
            r.client_ready(&domain, ClientKind::Plain, tx, false, 2),
            ClientReady::Refused
        ));
        assert_eq!(r.domains(), 0);
    }

    #[test]
    fn dead_slots_are_compacted() {
        let r = Registry::new();
        let a = r.admit("dom", 0).unwrap();
        for _ in 0..1000 {
            let (tx, rx) = oneshot::channel::<Box<ClientLeg>>();
            r.device_ready(&a, PLAIN, tx);
            drop(rx);
        }
        let shard = r.shard("dom");
        assert!(shard.get("dom").map_or(0, |d| d.devices[0].len()) <= 2 + 16 + 1);
    }
}
