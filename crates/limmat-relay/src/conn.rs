//! One accepted connection, from its first byte to where it is handed on: on a TLS listener,
//! peek at the ClientHello and either route by SNI or terminate TLS (spec 2.6.2–2.6.3); then
//! read a head, classify it (2.1.3) and hand it to the device, mux, proxy or pairing logic;
//! after a `204`, read the device's next head on the same connection (2.1.4).
//!
//! [`serve`] is the connection's loop over [`Next`] steps: read a head, wait as a device,
//! renew. Every rare path is boxed, so an idle device's task stays small (see the test below).

use crate::context::RelayContext;
use crate::device::{self, Next, Then, Waiting};
use crate::head::read_head;
use crate::legs::{ClientKind, ClientLeg, Conn, DeviceClass, method_of};
use crate::linger::{respond_and_close, respond_and_close_briefly};
use crate::metrics;
use crate::pairing;
use crate::registry::Admission;
use crate::stream::{Leg, Prefixed, Tcp, Tls};
use crate::{mux, proxy};
use limmat_wire::cluster::{Forward, ForwardLeg};
use limmat_wire::mux::Route;
use limmat_wire::request::Kind;
use limmat_wire::tls::{Peek, peek_client_hello};
use limmat_wire::{ClientRoute, Protocol, RequestHead, response};
use std::sync::Arc;
use tokio::time::{Instant, sleep_until, timeout_at};

/// Serves a freshly accepted connection (already counted by the accept loop). Not an `async
/// fn`: the task is [`serve`]'s future alone, without a copy of the connection kept for a
/// first step (see the size test below).
pub(crate) fn handle(
    ctx: Arc<RelayContext>,
    mut conn: Conn,
    tls: bool,
) -> impl Future<Output = ()> + Send {
    let peer = conn.peer;
    let next = match ctx.limits.connection(peer.ip()) {
        Ok(guard) => {
            conn.open.source = guard;
            match tls {
                true => Next::Tls(conn),
                false => Next::Head(conn, None),
            }
        }
        Err(refusal) => {
            tracing::info!(%peer, retry_after = refusal.secs(), "connection refused: per-source limit");
            metrics::rejected("per_source_limit");
            // Answered without reading the head (4.3). A TLS client could not read a
            // plaintext answer, and a handshake is what the limit saves: it is just closed.
            match tls {
                true => Next::Done,
                false => Next::Refused(conn, response::too_many_requests(refusal.secs())),
            }
        }
    };
    serve(ctx, next)
}

/// The connection loop: one step at a time until the connection is closed or handed over.
///
/// The loop owns the step, and the steps an idle connection spends its life in (reading a
/// head, waiting as a device) borrow it instead of taking it: an `async fn`'s arguments stay in
/// its future for as long as it runs, so a moved step would be stored twice. Every rare path
/// is boxed, as the task's size is that of its largest state, and an idle device should not
/// pay for a TLS handshake's (see the size test below). There is one call of `device::wait`
/// here: every call site would otherwise add its own copy of the wait's state to every task.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would store `next` twice"
)]
fn serve(ctx: Arc<RelayContext>, mut next: Next) -> impl Future<Output = ()> + Send {
    // An `async move` block, not an `async fn`: a function's arguments would be moved into
    // locals of its future, and `next` stored twice.
    async move {
        let ctx = &ctx;
        // The first head of a connection announces a device; a requeued one has been announced.
        let mut first_head = matches!(next, Next::Head(..) | Next::Tls(_));
        loop {
            next = match next {
                Next::Head(..) => {
                    let first = std::mem::replace(&mut first_head, false);
                    read_and_classify(ctx, &mut next, first).await
                }
                Next::Wait(_) => device::wait(ctx, &mut next).await,
                Next::Renew(conn, admission) => Box::pin(device::renew(ctx, conn, admission)).await,
                Next::Tls(conn) => {
                    let next = Box::pin(accept_tls(ctx, conn)).await;
                    // An SNI-routed client may come back as a requeued device: not a first head.
                    first_head &= matches!(next, Next::Head(..));
                    next
                }
                Next::Refused(conn, response) => {
                    Box::pin(respond_and_close_briefly(conn.stream, &response)).await;
                    Next::Done
                }
                Next::Done => return,
            };
        }
    }
}

/// Reads a head and hands the connection on by its kind (2.1.3). `step` is a
/// [`Next::Head`]: the connection, and the admission of a device renewed on it, which carries
/// over to a re-POST for the same domain. Taken from `step` once the head is in.
async fn read_and_classify(ctx: &Arc<RelayContext>, step: &mut Next, first_head: bool) -> Next {
    let Next::Head(conn, _) = step else {
        return Next::Done;
    };
    let mut buf = Vec::new();
    let deadline = Instant::now() + ctx.config.head_timeout;
    let max_head = ctx.config.max_head;
    // Awaited in place: a future held in a local first would be stored twice.
    let read = read_head(
        &mut conn.stream,
        &mut buf,
        max_head,
        deadline,
        &ctx.shutdown,
    )
    .await;
    let head_len = match read {
        Ok(len) => len,
        Err(e) => {
            metrics::rejected("head");
            // Oversized, slow or half-sent heads are closed with no response (H2, D8).
            tracing::debug!(peer = %conn.peer, reason = %e, "closed before a complete head");
            return Next::Done;
        }
    };
    let Next::Head(conn, carried) = std::mem::replace(step, Next::Done) else {
        return Next::Done;
    };
    classify(ctx, conn, carried, buf, head_len, first_head)
        .next()
        .await
}

/// Hands a connection on by the kind of its head (2.1.3). Not an `async fn`: what it awaits is
/// boxed, so the idle connection's task does not carry the head nor a copy of the connection.
fn classify(
    ctx: &Arc<RelayContext>,
    conn: Conn,
    carried: Option<Admission>,
    buf: Vec<u8>,
    head_len: usize,
    first_head: bool,
) -> Then<'_> {
    let head = RequestHead::parse(&buf[..head_len]);
    let proxy_on = ctx.proxy.is_some();
    if limmat_wire::proxy::is_proxy_request(&head, proxy_on, &ctx.hostnames) {
        // An authority-form CONNECT, or an absolute-form request to a foreign host (6.1);
        // the proxy module answers 501 when it is off.
        drop(carried);
        return Then::Done(Box::pin(proxy::serve(ctx, conn, buf, head_len)));
    }
    match head.kind() {
        // Unreachable: taken by the forward proxy above.
        Kind::ForwardConnect => Then::Done(Box::pin(respond_and_close(
            conn.stream,
            response::NOT_IMPLEMENTED,
        ))),
        Kind::Device(protocol) => {
            let class = DeviceClass {
                tls: conn.stream.is_tls(),
                pass_through: head.pass_through,
            };
            // In a cluster, a device of a domain another node owns goes there (7.4).
            if let Some(redirect) = device_redirect(ctx, &head, class.tls) {
                drop(carried);
                return Then::Done(Box::pin(async move {
                    respond_and_close(conn.stream, &redirect).await;
                }));
            }
            // A re-POST after a 204 for the same domain is already counted (2.4.5).
            let renewal = carried.filter(|admission| **admission.domain() == *head.domain);
            let admitted = device::admit(ctx, conn.peer, &head.domain, head.authorization, renewal);
            // H13: bytes after a device's head are discarded; a mux device sends nothing
            // between its POST and the 101 (5.1).
            drop(head);
            drop(buf);
            let admission = match admitted {
                Ok(admission) => admission,
                Err(refusal) => {
                    return Then::Done(Box::pin(async move {
                        respond_and_close(conn.stream, &refusal).await;
                    }));
                }
            };
            if protocol == Protocol::Mux {
                // limmat-mux/1 (section 5): admitted like any device (4.4), then HTTP/2, in a
                // task of its own: an idle mux device then keeps one task of the mux's size,
                // not this one (sized for a PTTH wait) with the mux boxed inside.
                ctx.tasks
                    .spawn(mux::serve(ctx.clone(), conn, admission, class));
                return Then::Now(Next::Done);
            }
            let waiting = Waiting {
                conn,
                protocol,
                class,
                admission,
                hold_until: None,
            };
            Then::Now(device::arrived(ctx, waiting, first_head))
        }
        Kind::Client => {
            drop(carried);
            let route = ClientRoute::of(&head, &ctx.hostnames);
            let kind = match conn.stream.is_tls() {
                true => ClientKind::Terminated,
                false => ClientKind::Plain,
            };
            drop(head);
            Then::Later(Box::pin(route_client(
                ctx, conn, buf, head_len, kind, route, None,
            )))
        }
    }
}

/// The Yaler-shaped `307` of 7.4 for a device handshake whose domain another node owns: to the
/// owner's public host and port, `https` when the handshake came over TLS, with the original
/// path. `None`: this node serves the domain (or the owner has no listener of that kind).
fn device_redirect(ctx: &RelayContext, head: &RequestHead<'_>, tls: bool) -> Option<Vec<u8>> {
    if !limmat_wire::route::is_registrable(&head.domain) {
        return None;
    }
    let owner = ctx.cluster.elsewhere(&head.domain)?;
    let location =
        limmat_wire::cluster::location(&owner.public_host, owner.port(tls)?, tls, head.path);
    tracing::info!(domain = %head.domain, owner = %owner.node_id, "device redirected to the owner");
    metrics::cluster_redirect("device");
    Some(response::redirect(&location))
}

/// A client a peer forwarded here (7.5): served exactly like a client of that kind on this
/// node's own listener, from the bytes that came with the forward.
pub(crate) async fn forwarded(
    ctx: Arc<RelayContext>,
    mut conn: Conn,
    forward: Forward,
    early: Vec<u8>,
) {
    let kind = match forward.leg {
        ForwardLeg::Plain => ClientKind::Plain,
        ForwardLeg::TlsTerminated => ClientKind::Terminated,
        ForwardLeg::TlsSni => ClientKind::Sni,
    };
    let mut buf = early;
    let head_len = if kind == ClientKind::Sni {
        buf.len()
    } else {
        match limmat_wire::HeadScanner::new().scan(&buf) {
            Some(len) => len,
            None => {
                let deadline = Instant::now() + ctx.config.head_timeout;
                let read = read_head(
                    &mut conn.stream,
                    &mut buf,
                    ctx.config.max_head,
                    deadline,
                    &ctx.shutdown,
                );
                match read.await {
                    Ok(len) => len,
                    Err(e) => {
                        tracing::debug!(peer = %conn.peer, reason = %e, "forwarded client closed before a complete head");
                        return;
                    }
                }
            }
        }
    };
    tracing::debug!(domain = %forward.domain, peer = %conn.peer, hops = forward.hops, leg = forward.leg.as_str(), "forwarded client");
    let client = ClientLeg {
        conn,
        buf,
        head_len,
        kind,
        domain: forward.domain.as_str().into(),
        route: forward.route,
        hello_sni: forward.sni,
        deadline: Instant::now() + ctx.config.client_wait,
        hops: forward.hops,
        public_port: Some(forward.public_port),
    };
    let next = pairing::route(&ctx, client).await.into();
    serve(ctx, next).await;
}

/// Every client, routed by its head or by the SNI of its ClientHello (`kind` says which),
/// goes through here: the empty and unregistrable routes are answered (2.5.3, 2.5.4, inside
/// TLS for SNI, 2.6.6); a domain goes to the pairing.
async fn route_client(
    ctx: &RelayContext,
    conn: Conn,
    buf: Vec<u8>,
    head_len: usize,
    kind: ClientKind,
    route: ClientRoute,
    hello_sni: Option<String>,
) -> Next {
    let (domain, route) = match route {
        ClientRoute::Domain { domain, .. } if kind == ClientKind::Sni => (domain, Route::Sni),
        ClientRoute::Domain { domain, form } => {
            tracing::debug!(domain, peer = %conn.peer, ?form, "client");
            (domain, Route::from(form))
        }
        // An SNI label outside the domain set: 504, inside TLS (2.5.4, 2.6.6).
        _ if kind == ClientKind::Sni => (String::new(), Route::Sni),
        ClientRoute::Empty if ctx.config.root_uri.is_some() => {
            let request = (method_of(&buf[..head_len.min(buf.len())]), "", conn.peer);
            crate::access::answered(ctx, request, 307, std::time::Duration::ZERO);
            let uri = ctx.config.root_uri.as_deref().unwrap_or_default();
            respond_and_close(conn.stream, &response::redirect(uri.as_bytes())).await;
            return Next::Done;
        }
        ClientRoute::Empty | ClientRoute::Unregistrable => {
            let request = (method_of(&buf[..head_len.min(buf.len())]), "", conn.peer);
            crate::access::answered(ctx, request, 504, std::time::Duration::ZERO);
            respond_and_close(conn.stream, response::GATEWAY_TIMEOUT).await;
            return Next::Done;
        }
    };
    let client = ClientLeg {
        conn,
        buf,
        head_len,
        kind,
        domain: domain.into(),
        route,
        hello_sni,
        deadline: Instant::now() + ctx.config.client_wait,
        hops: 0,
        public_port: None,
    };
    if client.domain.is_empty() {
        pairing::refuse(ctx, client).await;
        return Next::Done;
    }
    pairing::route(ctx, client).await.into()
}

/// Reads the first TLS record and decides (2.6.3): an SNI that names a device's subdomain is
/// routed before any termination; anything else is terminated here, with its head read inside
/// TLS next.
async fn accept_tls(ctx: &RelayContext, mut conn: Conn) -> Next {
    let deadline = Instant::now() + ctx.config.tls_handshake_timeout;
    let mut hello = Vec::new();
    let sni = loop {
        let need = match peek_client_hello(&hello) {
            Peek::NeedMore(total) => total.saturating_sub(hello.len()),
            Peek::Done { sni, .. } => break sni,
        };
        let read = tokio::select! {
            read = conn.stream.read_into(&mut hello, need) => read,
            () = sleep_until(deadline) => return closed(&conn, "no ClientHello within tls_handshake_timeout"),
            () = ctx.shutdown.cancelled() => return Next::Done,
        };
        match read {
            Ok(0) | Err(_) => return closed(&conn, "closed during the ClientHello"),
            Ok(_) => {}
        }
    };
    let label = sni
        .as_deref()
        .and_then(|name| ctx.hostnames.subdomain_label(name.as_bytes()));
    if let Some(label) = label {
        let route = ClientRoute::from_label(label);
        tracing::debug!(peer = %conn.peer, sni = sni.as_deref().unwrap_or(""), "SNI-routed client");
        let head_len = hello.len();
        let kind = ClientKind::Sni;
        return route_client(ctx, conn, hello, head_len, kind, route, sni).await;
    }
    let Some(acceptor) = ctx.tls.as_ref() else {
        return Next::Done;
    };
    let Conn { stream, peer, open } = conn;
    let Tcp(tcp) = stream else {
        return Next::Done;
    };
    let accepted = timeout_at(deadline, acceptor.accept(Prefixed::new(hello, tcp))).await;
    metrics::tls_handshake(matches!(accepted, Ok(Ok(_))));
    match accepted {
        Ok(Ok(tls)) => {
            let stream = Tls(Box::new(tls));
            Next::Head(Conn { stream, peer, open }, None)
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            Next::Done
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            Next::Done
        }
    }
}

fn closed(conn: &Conn, why: &str) -> Next {
    tracing::debug!(peer = %conn.peer, why, "closed before TLS");
    Next::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    /// Every idle device is one task, as large as its largest state: the rare paths (TLS
    /// accept, refusals, client routing, renewal, what follows a head or a wait) are boxed, and
    /// the steps a device idles in (reading a head, waiting) borrow the connection from the
    /// loop instead of holding copies of it, so that a waiting device pays only for waiting.
    /// It was 4 KiB before the boxing and 2.4 KiB before the borrowing (debug build; the
    /// release build is about the same); this keeps it from creeping back.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let relay = testing::relay().await;
        let (conn, _peer, _) = testing::accepted(&relay).await;
        let task = handle(relay.ctx.clone(), conn, false);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the connection task grew to {size} bytes");
    }

    /// Every client's routing future is built on the stack and moved into its box, so its
    /// size is copied once per client (for a mux stream, the largest `memcpy` in the relay's
    /// profile). The rare paths in it (a queued wait, a refusal with a TLS handshake, a PTTH
    /// pairing and pipe) are boxed; it was 7.3 KiB before (debug build).
    #[tokio::test]
    async fn a_client_routing_future_stays_small() {
        let relay = testing::relay().await;
        let (conn, _peer, _) = testing::accepted(&relay).await;
        let route = ClientRoute::Empty;
        let future = route_client(
            &relay.ctx,
            conn,
            Vec::new(),
            0,
            ClientKind::Plain,
            route,
            None,
        );
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 4096,
            "a client's routing future grew to {size} bytes"
        );
    }
}
