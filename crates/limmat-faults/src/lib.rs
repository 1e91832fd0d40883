//! A fault-injecting TCP proxy for tests and benchmarks: the bad network between a device and
//! its relay, on loopback.
//!
//! This kernel has no `tc netem`, and the maintained fault proxies (Toxiproxy) cannot be
//! installed here, so the faults are made in user space, per TCP flow and per direction:
//!
//! - **latency** and **jitter**: every chunk read from one side is written to the other no
//!   earlier than `latency ± jitter` later, in order (a later chunk never overtakes);
//! - **bandwidth**: the chunks leave one after another at `bandwidth` bytes per second, as on a
//!   serial link, and a bounded queue pushes back on the sender like a full link buffer;
//! - **loss**: TCP repairs a lost segment by retransmitting it, so what the endpoints see of
//!   loss is delay: a chunk is "lost" with probability `loss` and arrives `retransmit` later,
//!   holding up everything behind it (head-of-line blocking);
//! - **reset after N bytes**: once a flow has carried `reset_after` bytes, both of its sockets
//!   are closed with an RST (a mobile link that drops mid-stream);
//! - **NAT idle expiry**: a flow that carried nothing in either direction for `nat_idle` is
//!   forgotten by the "NAT": from then on its bytes vanish in both directions and nothing, not
//!   even a FIN, reaches the other side — as behind a carrier-grade NAT whose mapping expired;
//! - **blackhole** ([`FaultProxy::set_blackhole`]): every flow stops delivering (bytes wait, as
//!   TCP retransmissions would) until the blackhole is lifted;
//! - **link down** ([`FaultProxy::set_refuse`], [`FaultProxy::reset_all`]): new connections
//!   are reset at once, open ones reset.
//!
//! [`Profile::three_g`] is the 3G link of the hardening issue: 300 ms RTT, 1 % loss,
//! 200 kbit/s, NAT mappings dropped after 60 s idle.

use rand::Rng;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the link behaves; see the crate's docs for each fault. Applies per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// One-way delay added to every chunk.
    pub latency: Duration,
    /// Up to this much more or less than `latency`, uniformly.
    pub jitter: Duration,
    /// Bytes per second per direction and flow; `None`: as fast as loopback.
    pub bandwidth: Option<u64>,
    /// The probability that a chunk is lost and retransmitted (0.0–1.0).
    pub loss: f64,
    /// The extra delay of a lost chunk (a retransmission timeout).
    pub retransmit: Duration,
    /// Reset a flow (RST both ways) once it has carried this many bytes.
    pub reset_after: Option<u64>,
    /// Forget a flow that carried nothing for this long: its bytes vanish from then on.
    pub nat_idle: Option<Duration>,
}

impl Profile {
    /// A perfect link: the proxy only forwards.
    pub fn clean() -> Profile {
        Profile {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            bandwidth: None,
            loss: 0.0,
            retransmit: Duration::ZERO,
            reset_after: None,
            nat_idle: None,
        }
    }

    /// A 3G link: 300 ms round trip (150 ms each way, ± 20 ms), 1 % loss repaired after a
    /// 600 ms retransmission timeout, 200 kbit/s each way, NAT mappings dropped after 60 s idle.
    pub fn three_g() -> Profile {
        Profile {
            latency: Duration::from_millis(150),
            jitter: Duration::from_millis(20),
            bandwidth: Some(200_000 / 8),
            loss: 0.01,
            retransmit: Duration::from_millis(600),
            reset_after: None,
            nat_idle: Some(Duration::from_secs(60)),
        }
    }
}

/// What the proxy has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted and forwarded.
    pub accepted: u64,
    /// Connections reset at accept because the link was down.
    pub refused: u64,
    /// Flows reset (by `reset_after`, [`FaultProxy::reset_all`] or an endpoint's own reset).
    pub resets: u64,
    /// Flows forgotten after `nat_idle`.
    pub expired: u64,
    /// Bytes delivered towards the upstream.
    pub bytes_up: u64,
    /// Bytes delivered towards the clients.
    pub bytes_down: u64,
    /// Flows open now.
    pub open: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    resets: AtomicU64,
    expired: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    open: AtomicU64,
}

/// The proxy-wide switches every flow watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Switches {
    blackhole: bool,
    /// Bumped by `reset_all`: every flow older than the bump resets.
    reset_generation: u64,
    /// The proxy was dropped: every flow resets.
    shutdown: bool,
}

/// What a [`FaultProxy`] handle and its flows share.
struct FaultProxyShared {
    upstream: SocketAddr,
    profile: Mutex<Profile>,
    refuse: AtomicBool,
    switches: watch::Sender<Switches>,
    counters: Counters,
}

impl FaultProxyShared {
    fn profile(&self) -> Profile {
        *self.profile.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy: connections to [`FaultProxy::addr`] are forwarded to the upstream through
/// the faults of its [`Profile`]. Dropping it resets every flow and stops listening.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<FaultProxyShared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on `listen` (`127.0.0.1:0` for a free port) and forwards to `upstream`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        profile: Profile,
    ) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(FaultProxyShared {
            upstream,
            profile: Mutex::new(profile),
            refuse: AtomicBool::new(false),
            switches: watch::channel(Switches::default()).0,
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults; chunks read from now on get the new ones.
    pub fn set_profile(&self, profile: Profile) {
        *self
            .shared
            .profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = profile;
    }

    /// Starts or ends a blackhole: while on, no flow delivers anything, in either direction.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.switches.send_modify(|s| s.blackhole = on);
    }

    /// Link down (`true`): new connections are reset at once. Open flows are not touched; see
    /// [`FaultProxy::reset_all`].
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::Relaxed);
    }

    /// Resets every open flow (RST to both endpoints).
    pub fn reset_all(&self) {
        self.shared
            .switches
            .send_modify(|s| s.reset_generation += 1);
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.switches.send_modify(|s| s.shutdown = true);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<FaultProxyShared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if shared.refuse.load(Ordering::Relaxed) {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            reset(&client);
            continue;
        }
        tokio::spawn(flow(client, shared.clone()));
    }
}

/// Closes `stream` with an RST when its last handle is dropped.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// What one direction of a flow carries: bytes, or the sender's FIN, each due at an instant.
enum Item {
    Data(Vec<u8>),
    Fin,
}

/// Per-flow state both directions share.
struct Flow {
    shared: Arc<FaultProxyShared>,
    born: Instant,
    /// Milliseconds since `born` of the last byte read in either direction.
    last_activity: AtomicU64,
    /// Bytes delivered in both directions.
    carried: AtomicU64,
    /// Forgotten by the NAT.
    expired: AtomicBool,
    /// Reset by `reset_after` or by an endpoint: the flow's own reset switch.
    reset: watch::Sender<bool>,
}

impl Flow {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    fn trigger_reset(&self) {
        self.reset.send_if_modified(|r| !std::mem::replace(r, true));
    }

    /// Whether the flow ends with a reset: its own, `reset_all` or the proxy's drop.
    fn was_reset(&self, generation: u64) -> bool {
        let s = *self.shared.switches.borrow();
        *self.reset.borrow() || s.shutdown || s.reset_generation != generation
    }
}

async fn flow(client: TcpStream, shared: Arc<FaultProxyShared>) {
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    shared.counters.open.fetch_add(1, Ordering::Relaxed);
    let generation = shared.switches.borrow().reset_generation;
    let flow = Arc::new(Flow {
        shared: shared.clone(),
        born: Instant::now(),
        last_activity: AtomicU64::new(0),
        carried: AtomicU64::new(0),
        expired: AtomicBool::new(false),
        reset: watch::channel(false).0,
    });
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let up = direction(flow.clone(), client_read, upstream_write, generation, true);
    let down = direction(flow.clone(), upstream_read, client_write, generation, false);
    let nat = nat_watch(flow.clone());
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = nat => {}
    }
    if flow.was_reset(generation) {
        shared.counters.resets.fetch_add(1, Ordering::Relaxed);
    }
    shared.counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// Marks the flow expired once it has been idle for the profile's `nat_idle`; never returns
/// otherwise (the flow's end drops it).
async fn nat_watch(flow: Arc<Flow>) {
    loop {
        let Some(idle) = flow.shared.profile().nat_idle else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let last = flow.born + Duration::from_millis(flow.last_activity.load(Ordering::Relaxed));
        if last.elapsed() >= idle {
            if !flow.expired.swap(true, Ordering::Relaxed) {
                flow.shared.counters.expired.fetch_add(1, Ordering::Relaxed);
            }
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(last + idle).await;
    }
}

/// One direction: a reader that stamps each chunk with its due instant, and a writer that
/// delivers them in order. Returns when both are done.
async fn direction(
    flow: Arc<Flow>,
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    generation: u64,
    upstream: bool,
) {
    // A bounded queue: a full one stops the reader, and TCP pushes back on the sender.
    let (tx, rx) = mpsc::channel::<(Instant, Item)>(64);
    tokio::join!(
        read_side(flow.clone(), from, tx, generation),
        write_side(flow, to, rx, generation, upstream)
    );
}

async fn read_side(
    flow: Arc<Flow>,
    mut from: OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Item)>,
    generation: u64,
) {
    let mut switches = flow.shared.switches.subscribe();
    let mut reset = flow.reset.subscribe();
    let mut link_free = Instant::now();
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let profile = flow.shared.profile();
        // With a bandwidth, small chunks, so that a chunk's serialisation stays short.
        let cap = if profile.bandwidth.is_some() {
            1460
        } else {
            buf.len()
        };
        let read = tokio::select! {
            r = from.read(&mut buf[..cap]) => r,
            () = ended(&mut switches, &mut reset, generation) => return,
        };
        let n = match read {
            Ok(0) => {
                let _ = tx.send((last_due, Item::Fin)).await;
                return;
            }
            Ok(n) => n,
            Err(_) => {
                flow.trigger_reset();
                return;
            }
        };
        flow.touch();
        let now = Instant::now();
        let mut due = now;
        if let Some(rate) = profile.bandwidth.filter(|r| *r > 0) {
            let start = link_free.max(now);
            link_free = start + Duration::from_secs_f64(n as f64 / rate as f64);
            due = link_free;
        }
        due += delay(&profile);
        // In order: TCP delivers nothing past a gap.
        due = due.max(last_due);
        last_due = due;
        if tx.send((due, Item::Data(buf[..n].to_vec()))).await.is_err() {
            return;
        }
    }
}

/// Latency ± jitter, plus a retransmission timeout for a lost chunk.
fn delay(profile: &Profile) -> Duration {
    let mut rng = rand::rng();
    let mut d = profile.latency;
    if !profile.jitter.is_zero() {
        let j = profile.jitter.as_secs_f64();
        let offset = rng.random_range(-j..=j);
        d = Duration::from_secs_f64((d.as_secs_f64() + offset).max(0.0));
    }
    if profile.loss > 0.0 && rng.random_bool(profile.loss.clamp(0.0, 1.0)) {
        d += profile.retransmit;
    }
    d
}

/// Resolves when the flow must end with a reset: `reset_all`, the proxy's drop, or the flow's
/// own reset switch.
async fn ended(
    switches: &mut watch::Receiver<Switches>,
    reset: &mut watch::Receiver<bool>,
    generation: u64,
) {
    tokio::select! {
        _ = switches.wait_for(|s| s.shutdown || s.reset_generation != generation) => {}
        _ = reset.wait_for(|r| *r) => {}
    }
}

async fn write_side(
    flow: Arc<Flow>,
    mut to: OwnedWriteHalf,
    mut rx: mpsc::Receiver<(Instant, Item)>,
    generation: u64,
    upstream: bool,
) {
    let mut switches = flow.shared.switches.subscribe();
    let mut reset = flow.reset.subscribe();
    let counters = &flow.shared.counters;
    let bytes = if upstream {
        &counters.bytes_up
    } else {
        &counters.bytes_down
    };
    let delivered = async {
        while let Some((due, item)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // A blackhole holds everything until it lifts (a watch only while one is on).
            if flow.shared.switches.borrow().blackhole {
                let mut held = flow.shared.switches.subscribe();
                let _ = held.wait_for(|s| !s.blackhole).await;
            }
            if flow.expired.load(Ordering::Relaxed) {
                // Forgotten by the NAT: bytes and FIN vanish.
                continue;
            }
            match item {
                Item::Data(data) => {
                    if to.write_all(&data).await.is_err() {
                        flow.trigger_reset();
                        return;
                    }
                    let n = data.len() as u64;
                    bytes.fetch_add(n, Ordering::Relaxed);
                    let carried = flow.carried.fetch_add(n, Ordering::Relaxed) + n;
                    let limit = flow.shared.profile().reset_after;
                    if limit.is_some_and(|limit| carried >= limit) {
                        flow.trigger_reset();
                        return;
                    }
                }
                Item::Fin => {
                    let _ = to.shutdown().await;
                }
            }
        }
    };
    tokio::select! {
        () = delivered => {}
        () = ended(&mut switches, &mut reset, generation) => {}
    }
    if flow.was_reset(generation) {
        // An RST to this side's peer once the flow's halves are gone: zero linger, and no
        // shutdown (a dropped write half would send a FIN first).
        let _ = to.as_ref().set_zero_linger();
        to.forget();
    }
}
