//! limmat-mux/1 on the relay (spec section 5): one device connection carries every client
//! connection of its domain as an HTTP/2 CONNECT stream, with the relay as HTTP/2 client.
//!
//! Why: a PTTH device spends a relay round trip and a fresh TCP (often TLS) connection per
//! client; a mux device is paired with one HEADERS frame on a warm connection, and an idle
//! mux device costs one connection and no per-client state.
//!
//! - [`serve`] runs one mux connection after an admitted handshake: the 61-byte `101`, the
//!   `h2` client handshake, listing in the registry (a mux connection is an always-available
//!   device up to the device's `SETTINGS_MAX_CONCURRENT_STREAMS`, 5.2, 5.8), PING liveness
//!   and window growth (5.5, 5.6), and GOAWAY on drain (5.7).
//! - [`open`] serves one client over a stream reserved by a [`MuxLease`]: HEADERS with the
//!   stream metadata, the buffered client bytes as early data, then the pipe (5.3, 5.4). A
//!   refused stream hands the client back for re-dispatch with its bytes intact.

use crate::client::{self, ClientLeg};
use crate::conn::Conn;
use crate::registry::{Admission, ClientKind, DeviceClass, DeviceInfo, Registry};
use crate::server::Shared;
use crate::stats::Kind as Gauge;
use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderValue, Method, Request};
use limmat_mux::{Event, H2Stream, Keepalive, MuxIo, Signals, settings};
use limmat_wire::mux::{Listener, Route, field};
use limmat_wire::tls::{Peek, peek_client_hello};
use limmat_wire::{ClientRoute, RequestHead, response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

/// Copy buffer per direction of a mux stream's pipe: one DATA frame of the largest size the
/// ends accept (`settings::MAX_FRAME`), so bulk streams move in few, large frames.
const STREAM_COPY_BUFFER: usize = limmat_mux::settings::MAX_FRAME as usize;

/// A live mux connection as the registry lists it.
pub(crate) struct MuxConn {
    id: u64,
    domain: Arc<str>,
    class: DeviceClass,
    peer: SocketAddr,
    send: SendRequest<Bytes>,
    /// Streams reserved or open.
    active: AtomicUsize,
    /// Set on drain or death: no new streams.
    closing: AtomicBool,
}

impl MuxConn {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn domain(&self) -> &Arc<str> {
        &self.domain
    }

    pub(crate) fn class(&self) -> DeviceClass {
        self.class
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The device's `SETTINGS_MAX_CONCURRENT_STREAMS` (5.2).
    fn capacity(&self) -> usize {
        self.send.current_max_send_streams()
    }

    pub(crate) fn has_room(&self) -> bool {
        !self.closing.load(Ordering::Relaxed) && self.active() < self.capacity()
    }

    /// Takes one stream of the device's capacity, if there is room.
    pub(crate) fn try_reserve(&self) -> bool {
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        let cap = self.capacity();
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a < cap).then_some(a + 1)
            })
            .is_ok()
    }

    pub(crate) fn unreserve(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One reserved stream; dropping it frees the place and offers it to a waiting client.
pub(crate) struct MuxLease {
    conn: Arc<MuxConn>,
    registry: Arc<Registry>,
    offer: bool,
}

impl MuxLease {
    /// Wraps a reservation already taken with [`MuxConn::try_reserve`].
    pub(crate) fn new(conn: Arc<MuxConn>, registry: Arc<Registry>) -> Self {
        Self {
            conn,
            registry,
            offer: true,
        }
    }

    /// Frees the place without offering it (the registry is already offering it).
    pub(crate) fn release_quietly(mut self) {
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

/// Runs an admitted mux connection until it ends (5.1–5.8).
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    mut conn: Conn,
    admission: Admission,
    class: DeviceClass,
) {
    let head_timeout = shared.config.head_timeout;
    let written = timeout(head_timeout, conn.stream.write_all(response::UPGRADE_MUX)).await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::info!(domain = %admission.domain(), peer = %conn.peer, "mux device gone at its 101");
        return;
    }
    crate::metrics::response(response::UPGRADE_MUX);
    let Conn { stream, peer, open } = conn;
    let signals = Signals::new();
    let io = MuxIo::client(stream, signals.clone());
    let (send, mut connection) =
        match timeout(head_timeout, settings::client().handshake::<_, Bytes>(io)).await {
            Ok(Ok(pair)) => pair,
            _ => {
                tracing::info!(domain = %admission.domain(), %peer, "mux handshake failed");
                return;
            }
        };
    let Some(ping) = connection.ping_pong() else {
        return;
    };
    let mut keepalive = Keepalive::new(
        ping,
        signals.clone(),
        shared.config.mux_ping_interval,
        shared.config.mux_ping_timeout,
    );
    let mux = Arc::new(MuxConn {
        id: admission.id(),
        domain: admission.domain().clone(),
        class,
        peer,
        send,
        active: AtomicUsize::new(0),
        closing: AtomicBool::new(false),
    });
    let info = DeviceInfo {
        peer,
        class,
        since: SystemTime::now(),
    };
    shared.registry.describe(&admission, info);
    tracing::info!(domain = %mux.domain, %peer, tls = class.tls, pass_through = class.pass_through, "mux device connected");
    shared.registry.mux_add(&admission, mux.clone());
    let _gauge = shared.stats.hold(Gauge::Mux);
    // Dropped on drain, so that `h2` closes the connection once its last stream ends.
    let mut listed = Some(mux);
    let end = loop {
        tokio::select! {
            ended = &mut connection => break match ended {
                Ok(()) => "closed",
                Err(_) => "failed",
            },
            event = keepalive.next() => match event {
                Event::Grow(window) => {
                    connection.set_target_window_size(window);
                    // Only fails for a window over 2^31-1, which `MAX_WINDOW` is not.
                    let _ = connection.set_initial_window_size(window);
                }
                Event::Dead => break "no PING ACK within mux_ping_timeout",
                Event::Closed => break "closed",
            },
            () = admission.killed().cancelled() => break "disconnected by the admin API",
            () = shared.shutdown.cancelled(), if listed.is_some() => {
                if let Some(mux) = listed.take() {
                    close(shared, &mux);
                }
                // GOAWAY(NO_ERROR, 0) at the next frame boundary; the PING makes one (5.7).
                signals.request_goaway();
                keepalive.kick.notify_one();
                tracing::info!(domain = %admission.domain(), %peer, "mux connection draining (GOAWAY)");
            }
            () = shared.hard_stop.cancelled() => break "drain timeout",
        }
    };
    if let Some(mux) = listed.take() {
        close(shared, &mux);
    }
    tracing::info!(domain = %admission.domain(), %peer, end, "mux device disconnected");
    drop((connection, open, admission));
}

fn close(shared: &Shared, mux: &Arc<MuxConn>) {
    mux.closing.store(true, Ordering::Relaxed);
    shared.registry.mux_remove(mux);
}

/// Serves `client` on the stream `lease` reserved. Returns the client when the device
/// refused the stream (or the connection failed before accepting it), for re-dispatch with
/// every byte it sent (5.3, 2.4.8).
pub(crate) async fn open(
    shared: &Arc<Shared>,
    mut client: ClientLeg,
    lease: MuxLease,
) -> Option<ClientLeg> {
    let mux = lease.conn.clone();
    let (listener, route, sni) = describe(shared, &client, mux.class);
    if client.kind == ClientKind::Sni && !mux.class.pass_through {
        // A TLS device without pass-through: the relay terminates the client first (2.6.5 b).
        client = client::terminate(shared, client).await?;
    }
    let request = match request(shared, &client, listener, route, sni.as_deref()) {
        Some(request) => request,
        None => {
            tracing::info!(domain = %client.domain, peer = %client.conn.peer, "client closed: no usable stream metadata");
            return None;
        }
    };
    let mut send = mux.send.clone();
    let Ok((response, mut body)) = send.send_request(request, false) else {
        // The connection takes no more streams (the device sent GOAWAY, 5.7, or it failed):
        // no client is given to it again.
        close(shared, &mux);
        return Some(client);
    };
    drop(send);
    // Early data: the bytes buffered so far, kept for a re-dispatch (5.3).
    let early = Bytes::from(std::mem::take(&mut client.buf));
    if !early.is_empty() {
        body.reserve_capacity(early.len());
        if body.send_data(early.clone(), false).is_err() {
            client.buf = early.into();
            return Some(client);
        }
    }
    let answered = timeout(shared.config.head_timeout, response).await;
    let recv = match answered {
        Ok(Ok(response)) if response.status().is_success() => response.into_body(),
        other => {
            let why = match other {
                Ok(Ok(response)) => format!("status {}", response.status().as_u16()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within head_timeout".to_owned(),
            };
            tracing::debug!(domain = %client.domain, peer = %client.conn.peer, %why, "mux stream refused, re-dispatching");
            // The device must ignore the early data of a refused stream (5.3).
            client.buf = early.into();
            return Some(client);
        }
    };
    shared.limits.paired(&client.domain);
    let arrived = client.deadline.checked_sub(shared.config.client_wait);
    crate::metrics::paired(arrived.map_or(Duration::ZERO, |t| t.elapsed()));
    let stream = H2Stream::new(body, recv);
    let (kind, sent) = (listener.as_str(), early.len());
    client::pipe_to(
        shared,
        client,
        stream,
        mux.peer,
        kind,
        sent,
        STREAM_COPY_BUFFER,
    )
    .await;
    drop(lease);
    None
}

/// The client leg kind, how its domain was found, and its SNI (5.3).
fn describe(
    shared: &Shared,
    client: &ClientLeg,
    device: DeviceClass,
) -> (Listener, Route, Option<String>) {
    match client.kind {
        ClientKind::Sni => {
            let sni = match peek_client_hello(&client.buf) {
                Peek::Done { sni, .. } => sni,
                Peek::NeedMore(_) => None,
            };
            let listener = if device.pass_through {
                Listener::TlsPassthrough
            } else {
                Listener::TlsTerminated
            };
            (listener, Route::Sni, sni)
        }
        kind => {
            let head = RequestHead::parse(&client.buf[..client.head_len.min(client.buf.len())]);
            let route = match ClientRoute::of(&head, &shared.hostnames) {
                ClientRoute::Domain { form, .. } => Route::from(form),
                _ => Route::Path,
            };
            let listener = if kind == ClientKind::Plain {
                Listener::Plain
            } else {
                Listener::TlsTerminated
            };
            (listener, route, client.conn.stream.sni().map(str::to_owned))
        }
    }
}

/// The CONNECT request that opens a client's stream (5.3).
fn request(
    shared: &Shared,
    client: &ClientLeg,
    listener: Listener,
    route: Route,
    sni: Option<&str>,
) -> Option<Request<()>> {
    let local = client.conn.stream.local_addr().ok()?;
    let authority = match shared.config.hostnames.first() {
        Some(host) => format!("{host}:{}", local.port()),
        None => local.to_string(),
    };
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(authority)
        .body(())
        .ok()?;
    let headers = request.headers_mut();
    headers.insert(field::DOMAIN, HeaderValue::from_str(&client.domain).ok()?);
    let addr = client.conn.peer.to_string();
    headers.insert(field::CLIENT_ADDR, HeaderValue::from_str(&addr).ok()?);
    headers.insert(field::LISTENER, HeaderValue::from_static(listener.as_str()));
    headers.insert(field::ROUTE, HeaderValue::from_static(route.as_str()));
    if let Some(value) = sni.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(field::SNI, value);
    }
    Some(request)
}
