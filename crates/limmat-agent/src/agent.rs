//! The [`Agent`]: a pool of device connections waiting at the relay (spec 2.9, "Pool"), each
//! handed to the caller's handler once the relay pairs a client with it.
//!
//! **Backoff sharing.** The pool has `min_listeners` *slots*; each slot is one task that keeps
//! one connection in CONNECT or AWAIT and has its **own** attempt counter and next-attempt
//! time. So start-up opens all N connections at once, a `101` on one slot lets it replace its
//! connection at once, and a relay that is down sees at most one opening per second per slot
//! (the first stage of the schedule). What the relay says about the agent as a whole is shared
//! by all slots: a `429 Retry-After` holds back every slot until that time (the relay's limits
//! are per domain or per address, so the other slots would be refused too), and a redirect
//! target is used by every slot until an attempt to it fails.
//!
//! **TLS.** One [`Connector`] serves every slot, so the roots are read once and TLS sessions
//! are resumed across reconnects. A relay address with TLS builds its configuration in
//! [`Agent::new`], so that a bad CA file stops the program at start.
//!
//! **Sockets.** A semaphore with `max_sockets` permits bounds waiting connections plus relayed
//! connections: a slot takes a permit before it opens a connection, and on a `101` the permit
//! travels inside the [`RelayedConn`] and is released when the handler drops it. The streams
//! of a mux connection are no sockets: they are bounded by `mux_max_streams` per connection
//! (the device's `SETTINGS_MAX_CONCURRENT_STREAMS`, 5.2) and their own semaphore of
//! `mux_connections × mux_max_streams` permits, so a busy mux device is not capped at
//! `max_sockets` streams (a gateway's 32) while its PTTH connections are.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use limmat_wire::route::{DomainError, parse_domain};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

use crate::addr::RelayAddr;
use crate::backoff::Backoff;
use crate::conn::RelayedConn;
use crate::handshake::{
    self, AttemptError, Event, HandshakeFields, MAX_REDIRECTS, Outcome, Target,
};
use crate::mux::{FALLBACK_FOR, StreamMeta, Transport};
use crate::outbound::{ProxyPlan, ProxyScheme, ProxyUrlError, RelayProxy, upstream_error};
use crate::report;
pub use crate::status::{AgentState, AgentStatus};
use crate::transport::{Connector, RelayStream, TlsError, TlsOptions};
use bytes::Bytes;
use limmat_mux::{Driven, Driver as MuxDriver, MuxIo, Signals, settings};
use limmat_wire::request::Protocol;

/// The wait for a response head: every device library and YalerTunnel2 use 75 s (2.9).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(75);
/// The wait for a TCP connection to the relay (2.9).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MIN_LISTENERS: usize = 1;
pub const DEFAULT_MAX_SOCKETS: usize = 128;
/// The largest `max_sockets` (and so `min_listeners`): a device with more concurrent
/// connections than this would run out of ports and file descriptors first.
pub const MAX_POOL: usize = 65_535;

/// What an [`Agent`] connects to and how.
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    pub relay: RelayAddr,
    /// The relay domain to register; validated and case-folded by [`Agent::new`].
    pub domain: String,
    /// Sent as `Authorization: Bearer <key>` when set (4.1).
    pub secret_key: Option<String>,
    /// The outbound proxy to the relay (`--relay-proxy`); [`RelayProxy::Direct`] by default.
    pub relay_proxy: RelayProxy,
    /// Connections kept in CONNECT or AWAIT.
    pub min_listeners: usize,
    /// Cap on waiting plus relayed connections.
    pub max_sockets: usize,
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
    /// How TLS servers are verified: the relay over `tls:` or after an `https` redirect.
    pub tls: TlsOptions,
    /// Sends `X-Relay-Security: transport/pass-through` (2.6.5): SNI-routed clients are then
    /// spliced to this device with their TLS intact, and the device terminates it.
    pub pass_through: bool,
    /// PTTH/1.0, limmat-mux/1, or mux with fallback (5.8). [`AgentConfig::new`] keeps PTTH so
    /// that embedders see no change; `limmat tunnel` defaults to `Auto`.
    pub transport: Transport,
    /// Mux connections kept open (`--mux-connections`, 5.8).
    pub mux_connections: usize,
    /// This device's `SETTINGS_MAX_CONCURRENT_STREAMS` on each mux connection (5.2).
    pub mux_max_streams: u32,
    /// PING a mux connection after this long without receiving anything (5.6).
    pub mux_ping_interval: Duration,
    /// A mux connection whose PING ACK takes longer than this is dead (5.6).
    pub mux_ping_timeout: Duration,
    /// How `limmat tunnel` moves the bytes between a plain relayed connection and a plain
    /// local one (`--data-path`); the library's own handlers copy.
    pub data_path: limmat_mux::DataPath,
}

/// The key is shown as its presence only, so a logged configuration never leaks it.
impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("relay", &self.relay)
            .field("domain", &self.domain)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("relay_proxy", &self.relay_proxy)
            .field("min_listeners", &self.min_listeners)
            .field("max_sockets", &self.max_sockets)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field("pass_through", &self.pass_through)
            .field("transport", &self.transport)
            .field("mux_connections", &self.mux_connections)
            .field("mux_max_streams", &self.mux_max_streams)
            .field("mux_ping_interval", &self.mux_ping_interval)
            .field("mux_ping_timeout", &self.mux_ping_timeout)
            .finish()
    }
}

impl AgentConfig {
    /// A configuration with the defaults of 2.9: one listener, 128 sockets, no key.
    pub fn new(relay: RelayAddr, domain: impl Into<String>) -> Self {
        Self {
            relay,
            domain: domain.into(),
            secret_key: None,
            relay_proxy: RelayProxy::Direct,
            min_listeners: DEFAULT_MIN_LISTENERS,
            max_sockets: DEFAULT_MAX_SOCKETS,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls: TlsOptions::default(),
            pass_through: false,
            transport: Transport::Ptth,
            mux_connections: 1,
            mux_max_streams: limmat_mux::settings::DEVICE_MAX_STREAMS,
            mux_ping_interval: limmat_mux::settings::PING_INTERVAL,
            mux_ping_timeout: limmat_mux::settings::PING_TIMEOUT,
            data_path: limmat_mux::DataPath::Auto,
        }
    }
}

/// A configuration the agent cannot run with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    // The causes are in the messages, not chained as `source()`, so that `{:#}` does not
    // print them twice.
    #[error("bad domain `{domain}`: {error}")]
    Domain { domain: String, error: DomainError },
    #[error("min_listeners must be at least 1")]
    NoListeners,
    #[error("mux_connections and mux_max_streams must be at least 1")]
    NoMuxConnections,
    #[error("max_sockets is {0}; at most {MAX_POOL} are supported")]
    TooManySockets(usize),
    #[error("max_sockets ({max_sockets}) must be at least min_listeners ({min_listeners})")]
    TooFewSockets {
        min_listeners: usize,
        max_sockets: usize,
    },
    #[error("the secret key must be non-empty printable ASCII without spaces")]
    BadKey,
    #[error("--relay-proxy: {0}")]
    Proxy(#[from] ProxyUrlError),
    #[error("TLS to the relay {relay}: {error}")]
    Tls { relay: RelayAddr, error: TlsError },
}

/// The connector for `relay`, its TLS configuration already built when the relay is TLS or a
/// CA file is given, so that a bad CA file or a missing system store stops the program at
/// start. (A plain relay may still redirect to `https`; the configuration is then built then.)
pub(crate) fn relay_connector(
    relay: &RelayAddr,
    options: &TlsOptions,
    proxy: &RelayProxy,
) -> Result<Connector, AgentError> {
    let plan = ProxyPlan::from_env(proxy)?;
    match plan.for_relay(&relay.host, relay.tls) {
        Some((url, from)) => {
            info!(proxy = %url, from, %relay, "relay connections go through a proxy")
        }
        None if *proxy != RelayProxy::Direct => {
            info!(%relay, "relay connections go direct (no proxy configured or no_proxy)")
        }
        None => {}
    }
    let needs_tls = plan
        .for_relay(&relay.host, relay.tls)
        .is_some_and(|(u, _)| u.scheme == ProxyScheme::Https);
    let connector = Connector::new(options.clone()).with_proxy(plan);
    if needs_tls {
        connector.prepare().map_err(|error| AgentError::Tls {
            relay: relay.clone(),
            error,
        })?;
    }
    if relay.tls || options.ca_file.is_some() {
        connector.prepare().map_err(|error| AgentError::Tls {
            relay: relay.clone(),
            error,
        })?;
    }
    Ok(connector)
}

/// The device side of the relay protocol: keeps connections waiting at the relay and hands
/// each paired one to a handler.
pub struct Agent {
    config: AgentConfig,
    connector: Connector,
    status: watch::Sender<AgentStatus>,
}

impl Agent {
    /// Validates `config`: the domain (2.9: `relay_domain` and bytes outside H6 are errors),
    /// the pool sizes and the key. The domain is stored case-folded.
    pub fn new(mut config: AgentConfig) -> Result<Self, AgentError> {
        config.domain = parse_domain(&config.domain).map_err(|error| AgentError::Domain {
            domain: config.domain.clone(),
            error,
        })?;
        if config.min_listeners == 0 {
            return Err(AgentError::NoListeners);
        }
        if config.transport != Transport::Ptth
            && (config.mux_connections == 0 || config.mux_max_streams == 0)
        {
            return Err(AgentError::NoMuxConnections);
        }
        if config.max_sockets > MAX_POOL {
            return Err(AgentError::TooManySockets(config.max_sockets));
        }
        if config.max_sockets < config.min_listeners {
            return Err(AgentError::TooFewSockets {
                min_listeners: config.min_listeners,
                max_sockets: config.max_sockets,
            });
        }
        if let Some(key) = &config.secret_key {
            // The key goes into a header line: CR or LF would inject fields.
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(AgentError::BadKey);
            }
        }
        let connector = relay_connector(&config.relay, &config.tls, &config.relay_proxy)?;
        Ok(Self {
            config,
            connector,
            status: watch::Sender::new(AgentStatus::default()),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The connector the agent opens relay connections with; server and proxy modes use it
    /// for a `tls:` local service too.
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Watches the pool's state.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    /// Runs the pool until `shutdown` is cancelled, calling `handler` with every connection the
    /// relay pairs with a client. Each handler future runs in its own task.
    ///
    /// On shutdown the waiting connections are closed and the handler futures still running
    /// are dropped (which closes their connections); `run` returns once all tasks have ended.
    pub async fn run<H, F>(self, handler: H, shutdown: CancellationToken)
    where
        H: Fn(RelayedConn) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let home = Target {
            host: self.config.relay.host.clone(),
            port: self.config.relay.port,
            tls: self.config.relay.tls,
            domain: self.config.domain.clone(),
        };
        let streams = self.config.mux_connections.max(1) * self.config.mux_max_streams as usize;
        let shared = Arc::new(SlotsShared {
            sockets: Arc::new(Semaphore::new(self.config.max_sockets)),
            streams: Arc::new(Semaphore::new(streams.min(Semaphore::MAX_PERMITS))),
            config: self.config,
            connector: self.connector,
            home,
            status: self.status,
            redirect: Mutex::new(None),
            not_before: Mutex::new(None),
            ptth_until: Mutex::new(None),
            handler,
            tracker: TaskTracker::new(),
            shutdown,
        });
        let c = &shared.config;
        let slots = match c.transport {
            Transport::Ptth => c.min_listeners,
            Transport::Mux => c.mux_connections,
            Transport::Auto => c.min_listeners.max(c.mux_connections),
        };
        info!(relay = %shared.home, listeners = slots, transport = %c.transport, "agent starting");
        for slot in 0..slots {
            let shared2 = Arc::clone(&shared);
            let span = info_span!("listener", slot);
            shared.tracker.spawn(
                async move {
                    tokio::select! {
                        () = shared2.shutdown.cancelled() => {}
                        () = shared2.slot(slot) => {}
                    }
                }
                .instrument(span),
            );
        }
        shared.shutdown.cancelled().await;
        shared.tracker.close();
        shared.tracker.wait().await;
        info!("agent stopped");
    }
}

/// What the slots share.
struct SlotsShared<H> {
    config: AgentConfig,
    connector: Connector,
    /// The configured relay and domain.
    home: Target,
    status: watch::Sender<AgentStatus>,
    sockets: Arc<Semaphore>,
    /// Mux streams being served, across all mux connections.
    streams: Arc<Semaphore>,
    /// The last redirect target, used until an attempt to it fails (2.9).
    redirect: Mutex<Option<Target>>,
    /// No slot opens a connection before this time (a `429 Retry-After`).
    not_before: Mutex<Option<Instant>>,
    /// `Auto` uses PTTH until then: the relay did not accept mux (5.8).
    ptth_until: Mutex<Option<Instant>>,
    handler: H,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// Keeps a status count up for as long as it lives.
struct Counted {
    status: watch::Sender<AgentStatus>,
    field: fn(&mut AgentStatus) -> &mut usize,
}

impl Counted {
    fn new(status: &watch::Sender<AgentStatus>, field: fn(&mut AgentStatus) -> &mut usize) -> Self {
        Self::with(status, field, |_| {})
    }

    /// Counts one more in `field` and makes `also`'s change in the same update: each update
    /// wakes the status's receivers (eight `Notify`s, each behind its own lock).
    fn with(
        status: &watch::Sender<AgentStatus>,
        field: fn(&mut AgentStatus) -> &mut usize,
        also: impl FnOnce(&mut AgentStatus),
    ) -> Self {
        status.send_modify(|s| {
            *field(s) += 1;
            also(s);
        });
        Self {
            status: status.clone(),
            field,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.status.send_modify(|s| *(self.field)(s) -= 1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data is plain values that are always consistent, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<H, F> SlotsShared<H>
where
    H: Fn(RelayedConn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// Whether slot `index` opens a mux connection now (5.8): the first `mux_connections`
    /// slots do, unless `Auto` fell back; further slots of `Auto` keep PTTH connections.
    fn uses_mux(&self, index: usize) -> bool {
        match self.config.transport {
            Transport::Ptth => false,
            Transport::Mux => true,
            Transport::Auto => {
                let mut until = lock(&self.ptth_until);
                if until.is_some_and(|t| t <= Instant::now()) {
                    *until = None;
                }
                index < self.config.mux_connections && until.is_none()
            }
        }
    }

    /// One slot: keeps one connection in CONNECT or AWAIT, or one mux connection, for ever
    /// (until cancelled).
    async fn slot(self: &Arc<Self>, index: usize) {
        let mut backoff = Backoff::new();
        // Redirects followed in a row; while following one, the backoff does not apply, as
        // the relay did answer.
        let mut hops = 0u32;
        loop {
            if hops == 0 {
                self.wait_for_turn(&backoff).await;
            }
            let Ok(permit) = Arc::clone(&self.sockets).acquire_owned().await else {
                return; // The semaphore is never closed.
            };
            if hops == 0 {
                backoff.on_open(Instant::now());
            }
            let target = lock(&self.redirect)
                .clone()
                .unwrap_or_else(|| self.home.clone());
            let protocol = if self.uses_mux(index) {
                Protocol::Mux
            } else {
                Protocol::Ptth
            };
            let result = self
                .attempt(&target, protocol, &mut backoff, &mut hops)
                .await;
            // Only a redirect being followed keeps the count; every other end starts over.
            let followed = hops;
            hops = 0;
            match result {
                Ok(Outcome::Mux { stream, leftover }) => {
                    backoff.reset();
                    self.serve_mux(stream, leftover, &target, permit, &backoff)
                        .await;
                }
                Err(AttemptError::NoMux(status)) if self.config.transport == Transport::Auto => {
                    backoff.reset();
                    self.fall_back_to_ptth(&target, status);
                }
                Ok(Outcome::Upgraded { stream, leftover }) => {
                    backoff.reset();
                    info!(relay = %target, early_bytes = leftover.len(), "client paired (101)");
                    report::online(&self.status, &target, "ptth");
                    self.hand_over(RelayedConn::new(stream, leftover), permit);
                }
                Ok(Outcome::Redirect(to)) => {
                    hops = self.follow_redirect(&target, to, followed, &backoff);
                }
                Ok(Outcome::RetryAfter(wait)) => self.relay_busy(&target, &mut backoff, wait),
                Err(err) => {
                    if let AttemptError::Connect(e) = &err
                        && upstream_error(e).is_some_and(|e| e.is_configuration())
                    {
                        // Wrong or missing proxy credentials do not fix themselves: wait long.
                        backoff.configuration_error(Instant::now());
                    }
                    self.failed(&target, &backoff, &err);
                }
            }
        }
    }

    /// Serves a mux connection until it ends, then decides where the next attempt goes.
    async fn serve_mux(
        self: &Arc<Self>,
        stream: RelayStream,
        leftover: Vec<u8>,
        target: &Target,
        permit: OwnedSemaphorePermit,
        backoff: &Backoff,
    ) {
        info!(relay = %target, "mux connection up");
        let end = self.run_mux(stream, leftover, target).await;
        drop(permit);
        match end {
            // Reconnect at once, to the configured address (5.7).
            MuxEnd::Goaway => {
                info!(relay = %target, "mux connection draining (GOAWAY); reconnecting");
                *lock(&self.redirect) = None;
            }
            // Closed without GOAWAY: the relay may have died (a cluster node killed), so the
            // next attempt goes to the configured address, which redirects to the domain's
            // current owner (issue 14 item 5).
            MuxEnd::Closed => {
                info!(relay = %target, "mux connection closed");
                self.back_home(target);
            }
            MuxEnd::Dead => self.failed(target, backoff, &AttemptError::MuxDead),
        }
    }

    /// The relay (or a proxy on the way) refused the mux handshake: PTTH for a while.
    fn fall_back_to_ptth(&self, target: &Target, status: u16) {
        self.status.send_modify(|s| s.mux_refused += 1);
        *lock(&self.ptth_until) = Some(Instant::now() + FALLBACK_FOR);
        match status {
            0 => {
                info!(relay = %target, "the relay (or a proxy on the way) ended the limmat-mux/1 handshake without an answer: PTTH/1.0 for an hour")
            }
            _ => {
                info!(relay = %target, status, "the relay (or a proxy on the way) does not speak limmat-mux/1: PTTH/1.0 for an hour")
            }
        }
    }

    /// Follows a `307` to another node unless it is unsafe or one too many; returns the
    /// redirects followed in a row from now on.
    fn follow_redirect(
        &self,
        target: &Target,
        to: Target,
        followed: u32,
        backoff: &Backoff,
    ) -> u32 {
        if target.tls && !to.tls {
            // A TLS relay never sends a device to plaintext on purpose; following it would
            // send the key and the traffic in clear.
            let refused = AttemptError::InsecureRedirect(to.to_string());
            self.failed(target, backoff, &refused);
            return 0;
        }
        if followed >= MAX_REDIRECTS {
            self.failed(target, backoff, &AttemptError::TooManyRedirects);
            debug!(%to, "not followed");
            return 0;
        }
        let hops = followed + 1;
        info!(from = %target, %to, hop = hops, "redirected");
        *lock(&self.redirect) = Some(to);
        hops
    }

    /// A `429`: this slot and every other wait at least `wait`.
    fn relay_busy(&self, target: &Target, backoff: &mut Backoff, wait: Duration) {
        let now = Instant::now();
        backoff.retry_after(now, wait);
        let mut not_before = lock(&self.not_before);
        *not_before = (*not_before).max(Some(now + wait));
        info!(relay = %target, retry_after = wait.as_secs(), "relay busy (429)");
    }

    /// Waits until both this slot's backoff and the shared `Retry-After` allow an opening.
    async fn wait_for_turn(&self, backoff: &Backoff) {
        loop {
            let shared = *lock(&self.not_before);
            let Some(at) = backoff.ready_at().max(shared) else {
                return;
            };
            if at <= Instant::now() {
                return;
            }
            debug!(
                in_ms = (at - Instant::now()).as_millis(),
                "waiting before the next attempt"
            );
            tokio::time::sleep_until(at).await;
        }
    }

    /// Connects and runs the handshake loop on one connection.
    async fn attempt(
        &self,
        target: &Target,
        protocol: Protocol,
        backoff: &mut Backoff,
        hops: &mut u32,
    ) -> Result<Outcome, AttemptError> {
        debug!(relay = %target, "connecting");
        self.status.send_modify(|s| s.openings += 1);
        let started = Instant::now();
        let stream = self
            .connector
            .connect_relay(
                &target.host,
                target.port,
                target.tls,
                self.config.connect_timeout,
            )
            .await
            .map_err(AttemptError::Connect)?;
        let mut waiting = None;
        let sent = std::sync::atomic::AtomicBool::new(false);
        let fields = HandshakeFields {
            key: self.config.secret_key.as_deref(),
            pass_through: self.config.pass_through,
        };
        let exchange = handshake::exchange(
            stream,
            target,
            protocol,
            fields,
            self.config.response_timeout,
            |event| match event {
                Event::Sent => {
                    sent.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.status.send_modify(|s| s.handshakes += 1);
                    if waiting.is_none() {
                        debug!(relay = %target, "waiting for a client");
                        waiting = Some(Counted::new(&self.status, |s| &mut s.waiting));
                    }
                }
                Event::Renewed => {
                    debug!("renewed (204)");
                    backoff.reset();
                    *hops = 0;
                }
            },
        );
        // A relay answers a mux handshake at once and refuses a PTTH one at once; past a
        // moment of silence the PTTH device is registered, and the mux relay is stuck.
        // Three connection round trips at least, for slow (3G, satellite) paths.
        let round_trips = started.elapsed() * 3;
        let (quiet, mux) = match protocol {
            Protocol::Mux => (report::MUX_SILENT_AFTER.max(round_trips), true),
            _ => (report::PTTH_ONLINE_AFTER.max(round_trips), false),
        };
        let outcome = {
            let mut exchange = std::pin::pin!(exchange);
            match tokio::time::timeout(quiet, exchange.as_mut()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    if sent.load(std::sync::atomic::Ordering::Relaxed) {
                        if mux {
                            report::silent(&self.status, target, quiet);
                        } else {
                            report::online(&self.status, target, "ptth");
                        }
                    }
                    exchange.await
                }
            }
        };
        drop(waiting);
        outcome
    }

    /// Logs a failure and forgets a redirect target that failed.
    fn failed(&self, target: &Target, backoff: &Backoff, err: &AttemptError) {
        let next_in = backoff.ready_at().map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        report::failed(&self.status, target, next_in, err);
        self.back_home(target);
    }

    /// Forgets the redirect target `target` if every slot still uses it: the next attempt of
    /// every slot goes to the configured relay.
    fn back_home(&self, target: &Target) {
        let mut redirect = lock(&self.redirect);
        if redirect.as_ref() == Some(target) {
            info!(relay = %self.home, "back to the configured relay");
            *redirect = None;
        }
    }

    /// Serves a mux connection as the HTTP/2 server until it ends (5.1–5.7). On GOAWAY the
    /// rest of the connection's life moves to a task of its own, so that the slot opens the
    /// replacement at once while the existing streams finish.
    async fn run_mux(
        self: &Arc<Self>,
        stream: RelayStream,
        leftover: Vec<u8>,
        target: &Target,
    ) -> MuxEnd {
        let (relay, local, tls) = (
            stream.peer_addr().ok(),
            stream.local_addr().ok(),
            stream.is_tls(),
        );
        let signals = Signals::new();
        let io = MuxIo::server(RelayedConn::new(stream, leftover), signals.clone());
        let builder = settings::server(self.config.mux_max_streams);
        let handshake = builder.handshake::<_, Bytes>(io);
        let conn = match tokio::time::timeout(self.config.response_timeout, handshake).await {
            Ok(Ok(conn)) => conn,
            _ => return MuxEnd::Dead,
        };
        let (interval, timeout) = (self.config.mux_ping_interval, self.config.mux_ping_timeout);
        let Some(mut driver) = MuxDriver::new(conn, signals.clone(), interval, timeout) else {
            return MuxEnd::Closed;
        };
        let live = Counted::new(&self.status, |s| &mut s.mux);
        report::online(&self.status, target, "mux");
        let addrs = (relay, local, tls);
        loop {
            tokio::select! {
                driven = driver.next() => match driven {
                    Driven::Item((request, respond)) => self.mux_stream(request, respond, addrs),
                    Driven::Ended(Some(e)) => {
                        debug!(error = %e, "mux connection failed");
                        return MuxEnd::Closed;
                    }
                    Driven::Ended(None) if signals.goaway_seen() => return MuxEnd::Goaway,
                    Driven::Dead => return MuxEnd::Dead,
                    _ => return MuxEnd::Closed,
                },
                () = signals.goaway() => break,
            }
        }
        let mut conn = driver.into_inner();
        drop(live);
        let this = self.clone();
        self.tracker.spawn(
            async move {
                while let Some(Ok((request, respond))) = conn.accept().await {
                    this.mux_stream(request, respond, addrs);
                }
            }
            .in_current_span(),
        );
        MuxEnd::Goaway
    }

    /// Accepts one CONNECT stream (5.3) and hands it to the handler, whose first read or write
    /// sends the `200`; or refuses it: `405` for another method, `503` when every stream
    /// permit is taken.
    fn mux_stream(
        self: &Arc<Self>,
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        (relay, local, tls): (
            Option<std::net::SocketAddr>,
            Option<std::net::SocketAddr>,
            bool,
        ),
    ) {
        let refuse = |respond: &mut h2::server::SendResponse<Bytes>, status: u16| {
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
            let _ = respond.send_response(response, true);
        };
        if request.method() != http::Method::CONNECT {
            return refuse(&mut respond, 405);
        }
        let Ok(permit) = Arc::clone(&self.streams).try_acquire_owned() else {
            return refuse(&mut respond, 503);
        };
        let meta = StreamMeta::from_headers(request.headers());
        debug!(client = ?meta.client_addr, "mux stream");
        let conn = RelayedConn::mux(respond, request.into_body(), meta, relay, local, tls);
        self.hand_over(conn, permit);
    }

    /// Runs the handler for a paired connection in its own task. The handler is called there
    /// too: a handler that panics ends that connection's task, never the slot that keeps the
    /// device reachable. Its future is boxed: the task's own future is moved several times on
    /// its way into and out of the runtime, and a handler's (a whole pipe) is kilobytes, whose
    /// copies were the largest user-space cost of a mux stream in the tunnel's profile.
    fn hand_over(self: &Arc<Self>, conn: RelayedConn, permit: OwnedSemaphorePermit) {
        let relayed = Counted::with(&self.status, |s| &mut s.relayed, |s| s.upgrades += 1);
        let lease = (permit, relayed);
        let conn = conn.with_lease(Box::new(lease));
        let shared = self.clone();
        self.tracker.spawn(
            async move {
                let work = Box::pin((shared.handler)(conn));
                tokio::select! {
                    biased;
                    () = shared.shutdown.cancelled() => {}
                    () = work => {}
                }
            }
            .in_current_span(),
        );
    }
}

/// How a mux connection ended.
enum MuxEnd {
    /// The relay sent GOAWAY: reconnect at once (5.7).
    Goaway,
    /// Closed or failed.
    Closed,
    /// No PING ACK in time, or no HTTP/2 after the `101`.
    Dead,
}
