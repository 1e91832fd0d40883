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
//! - [`open`] is the mux variant of a pairing: it serves one client over a stream reserved by
//!   a [`MuxLease`]: HEADERS with the stream metadata, the buffered client bytes as early
//!   data, then the pipe (5.3, 5.4). A refused stream hands the client back for re-dispatch
//!   with its bytes intact.

use crate::context::RelayContext;
use crate::legs::{ClientKind, ClientLeg, Conn, Counted, DeviceClass, MuxConn};
use crate::metrics;
use crate::pipe::{self, DeviceEnd};
use crate::registry::{Admission, DeviceInfo, MuxLease};
use crate::stats::Kind as Gauge;
use crate::stream::Leg;
use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use limmat_mux::{Driven, Driver, H2Stream, MuxIo, Signals, settings};
use limmat_wire::mux::{Listener, Route, field, write_addr, write_decimal};
use limmat_wire::response;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

/// Copy buffer per direction of a mux stream's pipe: one DATA frame of the largest size the
/// ends accept (`settings::MAX_FRAME`), so bulk streams move in few, large frames.
const STREAM_COPY_BUFFER: usize = limmat_mux::settings::MAX_FRAME as usize;

/// The relay's end of a mux connection's `h2` client.
type H2Connection = Connection<MuxIo<crate::stream::Stream>, Bytes>;

/// Runs an admitted mux connection until it ends (5.1–5.8).
pub(crate) async fn serve(
    ctx: Arc<RelayContext>,
    conn: Conn,
    admission: Admission,
    class: DeviceClass,
) {
    let ctx = &*ctx;
    let peer = conn.peer;
    let Some(mut up) = upgrade(ctx, conn, &admission).await else {
        return;
    };
    let mux = Arc::new(MuxConn::new(
        admission.id(),
        admission.domain().clone(),
        class,
        peer,
        up.send,
    ));
    let info = DeviceInfo {
        peer,
        class,
        since: SystemTime::now(),
    };
    ctx.registry.describe(&admission, info);
    tracing::info!(domain = %mux.domain(), %peer, tls = class.tls, pass_through = class.pass_through, "mux device connected");
    ctx.registry.mux_add(&admission, mux.clone());
    let _gauge = ctx.stats.hold(Gauge::Mux);
    // The driver is used where it is: moved to a local, it would be stored twice in this
    // future, which every idle mux device keeps (1.5 KiB each).
    let end = run(ctx, &mut up.driver, &up.signals, mux, &admission).await;
    tracing::info!(domain = %admission.domain(), %peer, end, "mux device disconnected");
    drop((up.driver, up.open, admission));
}

/// A mux connection after its handshake.
struct Upgraded {
    send: SendRequest<Bytes>,
    /// The connection with its PINGs and window growth (5.5, 5.6).
    driver: Driver<H2Connection>,
    signals: Arc<Signals>,
    /// The connection's counts (2.4.5, 4.3), held until it closes.
    open: Counted,
}

/// Writes the `101` and runs the `h2` client handshake (5.1, 5.2).
async fn upgrade(ctx: &RelayContext, mut conn: Conn, admission: &Admission) -> Option<Upgraded> {
    let head_timeout = ctx.config.head_timeout;
    let written = timeout(head_timeout, conn.stream.write_all(response::UPGRADE_MUX)).await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::info!(domain = %admission.domain(), peer = %conn.peer, "mux device gone at its 101");
        return None;
    }
    metrics::response(response::UPGRADE_MUX);
    let Conn { stream, peer, open } = conn;
    let signals = Signals::new();
    let io = MuxIo::client(stream, signals.clone());
    let (send, connection) =
        match timeout(head_timeout, settings::client().handshake::<_, Bytes>(io)).await {
            Ok(Ok(pair)) => pair,
            _ => {
                tracing::info!(domain = %admission.domain(), %peer, "mux handshake failed");
                return None;
            }
        };
    let (interval, ping_timeout) = (ctx.config.mux_ping_interval, ctx.config.mux_ping_timeout);
    let driver = Driver::new(connection, signals.clone(), interval, ping_timeout)?;
    Some(Upgraded {
        send,
        driver,
        signals,
        open,
    })
}

/// Drives the connection, its PINGs and windows until it ends; on shutdown, unlists it and
/// sends GOAWAY so that it ends with its last stream (5.7). Returns why it ended.
async fn run(
    ctx: &RelayContext,
    driver: &mut Driver<H2Connection>,
    signals: &Signals,
    mux: Arc<MuxConn>,
    admission: &Admission,
) -> &'static str {
    let peer = mux.peer();
    // Dropped on drain, so that `h2` closes the connection once its last stream ends.
    let mut listed = Some(mux);
    // Shutdown, or the domain moved to another cluster node (7.6): GOAWAY either way.
    let going = async {
        tokio::select! {
            () = ctx.shutdown.cancelled() => "shutdown",
            () = admission.moved().cancelled() => "moved to another node",
        }
    };
    tokio::pin!(going);
    let end = loop {
        tokio::select! {
            driven = driver.next() => break match driven {
                Driven::Ended(None) | Driven::Unpingable => "closed",
                Driven::Ended(Some(_)) => "failed",
                Driven::Dead => "no PING ACK within mux_ping_timeout",
                // A client connection yields nothing but its end.
                Driven::Item(never) => match never {},
                _ => "closed",
            },
            () = admission.killed().cancelled() => break "disconnected by the admin API",
            why = &mut going, if listed.is_some() => {
                if let Some(mux) = listed.take() {
                    close(ctx, &mux);
                }
                // GOAWAY(NO_ERROR, 0) at the next frame boundary; the PING makes one (5.7).
                signals.request_goaway();
                driver.ping_now();
                tracing::info!(domain = %admission.domain(), %peer, why, "mux connection draining (GOAWAY)");
            }
            () = ctx.hard_stop.cancelled() => break "drain timeout",
        }
    };
    if let Some(mux) = listed.take() {
        close(ctx, &mux);
    }
    end
}

/// Takes a mux connection out of service: no new streams, no longer listed.
fn close(ctx: &RelayContext, mux: &Arc<MuxConn>) {
    mux.set_closing();
    ctx.registry.mux_remove(mux);
}

/// Serves `client` on the stream `lease` reserved. Returns the client when the device
/// refused the stream (or the connection failed before accepting it), for re-dispatch with
/// every byte it sent (5.3, 2.4.8).
pub(crate) async fn open(
    ctx: &RelayContext,
    mut client: ClientLeg,
    lease: MuxLease,
) -> Option<ClientLeg> {
    let mux = lease.conn().clone();
    let listener = listener(client.kind, mux.class());
    let route = client.route;
    let sni = client.sni().map(str::to_owned);
    if client.kind == ClientKind::Sni && !mux.class().pass_through {
        // A TLS device without pass-through: the relay terminates the client first (2.6.5 b).
        let within = ctx.config.tls_handshake_timeout;
        // Boxed: a TLS handshake's state would otherwise be part of every stream's future.
        client = Box::pin(client.terminate(ctx.tls.as_ref(), within)).await?;
    }
    let Some(request) = request(ctx, &client, listener, route, sni.as_deref()) else {
        tracing::info!(domain = %client.domain, peer = %client.conn.peer, "client closed: no usable stream metadata");
        return None;
    };
    let mut send = mux.sender();
    let Ok((response, mut body)) = send.send_request(request, false) else {
        // The connection takes no more streams (the device sent GOAWAY, 5.7, or it failed):
        // no client is given to it again.
        close(ctx, &mux);
        return Some(client);
    };
    drop(send);
    let method = client.method();
    // Early data: the bytes buffered so far, kept for a re-dispatch (5.3).
    let early = Bytes::from(std::mem::take(&mut client.buf));
    if !early.is_empty() {
        body.reserve_capacity(early.len());
        if body.send_data(early.clone(), false).is_err() {
            client.buf = early.into();
            return Some(client);
        }
    }
    let answered = timeout(ctx.config.head_timeout, response).await;
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
    let device = DeviceEnd {
        method,
        // Its answer's END_STREAM, when it comes with the last DATA, ends the client's leg
        // with those bytes (one segment with the FIN).
        io: H2Stream::new(body, recv).looking_ahead(),
        peer: mux.peer(),
        leg: listener.as_str(),
        sent: early.len(),
        buffer: STREAM_COPY_BUFFER,
    };
    pipe::run_paired(ctx, client, device).await;
    drop(lease);
    None
}

/// The client leg kind as a mux stream reports it (5.3).
fn listener(kind: ClientKind, device: DeviceClass) -> Listener {
    match kind {
        ClientKind::Plain => Listener::Plain,
        ClientKind::Sni if device.pass_through => Listener::TlsPassthrough,
        ClientKind::Sni | ClientKind::Terminated => Listener::TlsTerminated,
    }
}

/// The stream metadata's field names, built once: a name given as text is parsed, and a
/// custom one copied to the heap, at every insert.
const DOMAIN: HeaderName = HeaderName::from_static(field::DOMAIN);
const CLIENT_ADDR: HeaderName = HeaderName::from_static(field::CLIENT_ADDR);
const LISTENER: HeaderName = HeaderName::from_static(field::LISTENER);
const ROUTE: HeaderName = HeaderName::from_static(field::ROUTE);
const SNI: HeaderName = HeaderName::from_static(field::SNI);

/// The CONNECT request that opens a client's stream (5.3).
fn request(
    ctx: &RelayContext,
    client: &ClientLeg,
    listener: Listener,
    route: Route,
    sni: Option<&str>,
) -> Option<Request<()>> {
    // The port the client used, also when a peer forwarded it here (7.5).
    let mut authority = Vec::with_capacity(64);
    match ctx.config.hostnames.first() {
        Some(host) => {
            authority.extend_from_slice(host.as_bytes());
            authority.push(b':');
            write_decimal(client.public_port(), &mut authority);
        }
        None => write_addr(client.conn.stream.local_addr().ok()?, &mut authority),
    }
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(Uri::from_maybe_shared(Bytes::from(authority)).ok()?)
        .body(())
        .ok()?;
    let headers = request.headers_mut();
    headers.reserve(5);
    headers.insert(DOMAIN, HeaderValue::from_str(&client.domain).ok()?);
    // Never indexed (RFC 7541 6.2.3): every stream's value differs, so entering it in the
    // HPACK tables only evicts the constant fields and makes `h2` compare each new address
    // with every older one still listed (1 µs per stream in the relay's profile).
    let mut peer = Vec::with_capacity(48);
    write_addr(client.conn.peer, &mut peer);
    let mut addr = HeaderValue::from_maybe_shared(Bytes::from(peer)).ok()?;
    addr.set_sensitive(true);
    headers.insert(CLIENT_ADDR, addr);
    headers.insert(LISTENER, HeaderValue::from_static(listener.as_str()));
    headers.insert(ROUTE, HeaderValue::from_static(route.as_str()));
    if let Some(value) = sni.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(SNI, value);
    }
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// The client's address, new with every stream, goes as a never-indexed literal so that
    /// it stays out of both HPACK tables; the constant fields stay indexable.
    #[tokio::test]
    async fn the_client_address_is_never_indexed() {
        let relay = testing::relay().await;
        let ctx = relay.ctx.clone();
        let (conn, visitor, reached) = testing::accepted(&relay).await;
        let client = ClientLeg {
            conn,
            buf: Vec::new(),
            head_len: 0,
            kind: ClientKind::Plain,
            domain: "dom".into(),
            route: Route::Path,
            hello_sni: None,
            deadline: tokio::time::Instant::now(),
            hops: 0,
            public_port: None,
        };
        let request = request(&ctx, &client, Listener::Plain, Route::Path, None).unwrap();
        // Without hostnames, the authority is the address the client reached.
        let authority = request.uri().authority().unwrap().as_str();
        assert_eq!(authority, reached.to_string());
        let headers = request.headers();
        let addr = &headers[field::CLIENT_ADDR];
        assert_eq!(
            addr.to_str().unwrap(),
            visitor.local_addr().unwrap().to_string()
        );
        assert!(addr.is_sensitive());
        assert_eq!(headers[field::DOMAIN], "dom");
        assert!(!headers[field::DOMAIN].is_sensitive());
        assert_eq!(headers[field::LISTENER], Listener::Plain.as_str());
        assert_eq!(headers[field::ROUTE], Route::Path.as_str());
    }

    /// An idle mux device's state is this future, its own task, next to `h2`'s own buffers:
    /// the `h2` connection (1.4 KiB) is stored once, in place. It was 4.3 KiB when the driver
    /// was moved to a local; this keeps it from creeping back.
    #[tokio::test]
    async fn an_idle_mux_connection_stays_small() {
        let relay = testing::relay().await;
        let ctx = relay.ctx.clone();
        let (conn, _device, _) = testing::accepted(&relay).await;
        let admission = ctx.registry.admit("dom", 0).unwrap();
        let class = DeviceClass {
            tls: false,
            pass_through: false,
        };
        let size = std::mem::size_of_val(&serve(ctx.clone(), conn, admission, class));
        assert!(
            size <= 3072,
            "an idle mux connection's future grew to {size} bytes"
        );
    }
}
