//! One accepted connection: on a TLS listener, peek at the ClientHello and either route by SNI
//! or terminate TLS (spec 2.6.2–2.6.3); then read a head, classify it (2.1.3) and hand it to
//! the device or client logic; after a `204`, read the device's next head on the same
//! connection (2.1.4).

use crate::client::{self, ClientLeg};
use crate::device::{self, DeviceLeg, Renewed};
use crate::head::read_head;
use crate::limits::OpenGuard;
use crate::linger::{respond_and_close, respond_and_close_briefly};
use crate::registry::{Admission, ClientKind, DeviceClass, DeviceInfo};
use crate::server::Shared;
use crate::stats::{GaugeGuard, Kind as Gauge};
use crate::stream::{Prefixed, Stream};
use limmat_wire::request::Kind;
use limmat_wire::route::is_registrable;
use limmat_wire::tls::{Peek, peek_client_hello};
use limmat_wire::{Authorization, ClientRoute, Protocol, RequestHead, response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, sleep_until, timeout_at};

/// An accepted socket, counted for as long as it lives.
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) peer: SocketAddr,
    pub(crate) open: Counted,
}

/// What an open connection counts against: the node's gauge, its place under
/// `max_connections`, and its source's limit.
pub(crate) struct Counted {
    _gauge: GaugeGuard,
    pub(crate) slot: Option<OwnedSemaphorePermit>,
    _source: Option<OpenGuard>,
}

impl Conn {
    pub(crate) fn new(shared: &Shared, stream: Stream, peer: SocketAddr) -> Self {
        Self {
            stream,
            peer,
            open: Counted {
                _gauge: shared.stats.hold(Gauge::Open),
                slot: None,
                _source: None,
            },
        }
    }
}

/// Serves a freshly accepted connection (already counted by the accept loop).
pub(crate) async fn handle(shared: Arc<Shared>, mut conn: Conn, tls: bool) {
    let peer = conn.peer;
    match shared.limits.connection(peer.ip()) {
        Ok(guard) => conn.open._source = guard,
        Err(refusal) => {
            tracing::info!(%peer, retry_after = refusal.secs(), "connection refused: per-source limit");
            crate::metrics::rejected("per_source_limit");
            // Answered without reading the head (4.3). A TLS client could not read a
            // plaintext answer, and a handshake is what the limit saves: it is just closed.
            if !tls {
                let response = response::too_many_requests(refusal.secs());
                Box::pin(respond_and_close_briefly(conn.stream, &response)).await;
            }
            return;
        }
    }
    if tls {
        // Boxed, like every rare path here: the task's size is that of its largest state, and
        // an idle device should not pay for a TLS handshake's (see the size test below).
        if let Some(conn) = Box::pin(accept_tls(&shared, conn)).await {
            serve(&shared, conn, None).await;
        }
    } else {
        serve(&shared, conn, None).await;
    }
}

/// Reads the first TLS record and decides (2.6.3): an SNI that names a device's subdomain is
/// routed before any termination; anything else is terminated here, with its head read inside
/// TLS. Returns the terminated connection, or `None` when it was handled or closed.
async fn accept_tls(shared: &Arc<Shared>, mut conn: Conn) -> Option<Conn> {
    let deadline = Instant::now() + shared.config.tls_handshake_timeout;
    let mut hello = Vec::new();
    let sni = loop {
        let need = match peek_client_hello(&hello) {
            Peek::NeedMore(total) => total.saturating_sub(hello.len()),
            Peek::Done { sni, .. } => break sni,
        };
        let read = tokio::select! {
            read = conn.stream.read_into(&mut hello, need) => read,
            () = sleep_until(deadline) => return closed(&conn, "no ClientHello within tls_handshake_timeout"),
            () = shared.shutdown.cancelled() => return None,
        };
        match read {
            Ok(0) | Err(_) => return closed(&conn, "closed during the ClientHello"),
            Ok(_) => {}
        }
    };
    let label = sni
        .as_deref()
        .and_then(|name| shared.hostnames.subdomain_label(name.as_bytes()));
    if let Some(label) = label {
        let route = ClientRoute::from_label(label);
        let domain = match route {
            ClientRoute::Domain { domain, .. } => domain,
            // An SNI label outside the domain set: 504, inside TLS (2.5.4, 2.6.6).
            _ => String::new(),
        };
        tracing::debug!(peer = %conn.peer, sni = sni.as_deref().unwrap_or(""), "SNI-routed client");
        let client = ClientLeg {
            conn,
            head_len: hello.len(),
            buf: hello,
            kind: ClientKind::Sni,
            domain: domain.into(),
            deadline: Instant::now() + shared.config.client_wait,
        };
        if client.domain.is_empty() {
            client::refuse(shared, client).await;
        } else {
            Box::pin(client::dispatch(shared, client, None)).await;
        }
        return None;
    }
    let acceptor = shared.tls.as_ref()?;
    let Conn { stream, peer, open } = conn;
    let Stream::Tcp(tcp) = stream else {
        return None;
    };
    let accepted = timeout_at(deadline, acceptor.accept(Prefixed::new(hello, tcp))).await;
    crate::metrics::tls_handshake(matches!(accepted, Ok(Ok(_))));
    match accepted {
        Ok(Ok(tls)) => Some(Conn {
            stream: Stream::Tls(Box::new(tls)),
            peer,
            open,
        }),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

fn closed(conn: &Conn, why: &str) -> Option<Conn> {
    tracing::debug!(peer = %conn.peer, why, "closed before TLS");
    None
}

/// A device that was handed to a client which left before pairing: it waits again, at the
/// tail, in a task of its own (so the departed client's task ends now).
pub(crate) fn requeue(shared: &Arc<Shared>, leg: DeviceLeg, domain: &str) {
    // It was counted a moment ago, so it is re-admitted without the cap check (2.4.5); the
    // domain may briefly hold one connection more than `max_per_domain`.
    let Some(admission) = shared.registry.admit(domain, 0) else {
        return;
    };
    let info = DeviceInfo {
        peer: leg.conn.peer,
        class: leg.class,
        since: SystemTime::now(),
    };
    shared.registry.describe(&admission, info);
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let waiting = (admission, leg.class, leg.hold_until);
        serve(&shared2, leg.conn, Some(waiting)).await;
    });
}

/// The connection loop. `waiting` starts it as a PTTH device already admitted to a domain.
async fn serve(
    shared: &Arc<Shared>,
    mut conn: Conn,
    waiting: Option<(Admission, DeviceClass, Instant)>,
) {
    let mut carried = None;
    // A device about to wait. There is one call of `device::wait` in this loop: every call
    // site would otherwise add its own copy of the wait's state to every connection's task.
    let mut pending = waiting
        .map(|(admission, class, hold_until)| (Protocol::Ptth, class, admission, Some(hold_until)));
    let mut first_head = pending.is_none();
    loop {
        if let Some((protocol, class, admission, hold_until)) = pending.take() {
            let wait = device::wait(shared, conn, protocol, class, admission, hold_until);
            match wait.await {
                Some(Renewed { conn: c, admission }) => (conn, carried) = (c, Some(admission)),
                None => return,
            }
        }
        let mut buf = Vec::new();
        let deadline = Instant::now() + shared.config.head_timeout;
        let max_head = shared.config.max_head;
        let read = read_head(
            &mut conn.stream,
            &mut buf,
            max_head,
            deadline,
            &shared.shutdown,
        );
        let head_len = match read.await {
            Ok(len) => len,
            Err(e) => {
                crate::metrics::rejected("head");
                // Oversized, slow or half-sent heads are closed with no response (H2, D8).
                tracing::debug!(peer = %conn.peer, reason = %e, "closed before a complete head");
                return;
            }
        };
        let head = RequestHead::parse(&buf[..head_len]);
        let proxy_on = shared.proxy.is_some();
        if limmat_wire::proxy::is_proxy_request(&head, proxy_on, &shared.hostnames) {
            // An authority-form CONNECT, or an absolute-form request to a foreign host (6.1);
            // the proxy module answers 501 when it is off.
            drop(carried.take());
            return Box::pin(crate::proxy::serve(shared, conn, buf, head_len)).await;
        }
        match head.kind() {
            Kind::ForwardConnect => {
                // Unreachable: taken by the forward proxy above.
                return Box::pin(respond_and_close(conn.stream, response::NOT_IMPLEMENTED)).await;
            }
            Kind::Device(Protocol::Mux) => {
                // limmat-mux/1 (section 5): admitted like any device (4.4), then HTTP/2.
                let renewal = carried
                    .take()
                    .filter(|admission| **admission.domain() == *head.domain);
                let admitted = admit(shared, &conn, &head.domain, head.authorization, renewal);
                let class = DeviceClass {
                    tls: conn.stream.is_tls(),
                    pass_through: head.pass_through,
                };
                drop(buf); // The device sends nothing between its POST and the 101 (5.1).
                return match admitted {
                    Ok(admission) => {
                        Box::pin(crate::mux::serve(shared, conn, admission, class)).await
                    }
                    Err(refusal) => Box::pin(respond_and_close(conn.stream, &refusal)).await,
                };
            }
            Kind::Device(protocol) => {
                let domain = head.domain;
                let class = DeviceClass {
                    tls: conn.stream.is_tls(),
                    pass_through: head.pass_through,
                };
                // A re-POST after a 204 for the same domain is already counted (2.4.5).
                let renewal = carried
                    .take()
                    .filter(|admission| **admission.domain() == *domain);
                let admitted = admit(shared, &conn, &domain, head.authorization, renewal);
                drop(buf); // H13: bytes after a device's head are discarded.
                let admission = match admitted {
                    Ok(admission) => admission,
                    Err(refusal) => {
                        return Box::pin(respond_and_close(conn.stream, &refusal)).await;
                    }
                };
                let info = DeviceInfo {
                    peer: conn.peer,
                    class,
                    since: SystemTime::now(),
                };
                shared.registry.describe(&admission, info);
                if first_head {
                    tracing::info!(domain = %domain, peer = %conn.peer, ?protocol, tls = class.tls, pass_through = class.pass_through, "device connected");
                }
                let renew_now = first_head && shared.config.first_post_renew;
                first_head = false;
                if renew_now {
                    match Box::pin(device::renew(shared, conn, admission)).await {
                        Some(Renewed { conn: c, admission }) => {
                            (conn, carried) = (c, Some(admission))
                        }
                        None => return,
                    }
                } else {
                    pending = Some((protocol, class, admission, None));
                }
            }
            Kind::Client => {
                drop(carried.take());
                let route = ClientRoute::of(&head, &shared.hostnames);
                return Box::pin(route_client(shared, conn, buf, head_len, route)).await;
            }
        }
    }
}

/// The checks of 4.4 that apply without keys or a cluster: the domain, then the cap.
/// The checks of 4.4, in order: the domain, the source's failed-authentication bucket, the
/// key, the domain's handshake rate, the cap. A re-POST after a `204` (`renewal`) is checked
/// for its key too, but is free of the rate and the cap. The error is the response to send.
fn admit(
    shared: &Arc<Shared>,
    conn: &Conn,
    domain: &str,
    authorization: Authorization<'_>,
    renewal: Option<Admission>,
) -> Result<Admission, Vec<u8>> {
    let peer = conn.peer;
    if !is_registrable(domain) {
        tracing::info!(%peer, domain = %domain.escape_debug(), "device refused: domain not registrable");
        return Err(response::UNAUTHORIZED.to_vec());
    }
    if let Some(auth) = &shared.auth {
        let auth = auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Err(refusal) = shared.limits.auth_allowed(peer.ip()) {
            tracing::info!(%peer, domain, "device refused: too many failed authentications");
            return Err(response::too_many_requests(refusal.secs()));
        }
        match auth.check(domain, authorization) {
            Ok(key) => tracing::debug!(%peer, domain, %key, "device authenticated"),
            Err(failure) => {
                shared.limits.auth_failed(peer.ip());
                tracing::info!(%peer, domain, reason = %failure, "device refused: authentication");
                return Err(response::UNAUTHORIZED.to_vec());
            }
        }
    }
    if let Some(admission) = renewal {
        return Ok(admission);
    }
    let key: Arc<str> = domain.into();
    if let Err(refusal) = shared.limits.handshake(&key) {
        tracing::info!(%peer, domain, "device refused: handshake_rate_per_domain");
        return Err(response::too_many_requests(refusal.secs()));
    }
    shared
        .registry
        .admit(domain, shared.config.max_per_domain)
        .ok_or_else(|| {
            tracing::info!(%peer, domain, "device refused: max_per_domain reached");
            response::too_many_requests(shared.config.cap_retry_after.as_secs())
        })
}

async fn route_client(
    shared: &Arc<Shared>,
    conn: Conn,
    buf: Vec<u8>,
    head_len: usize,
    route: ClientRoute,
) {
    match route {
        ClientRoute::Empty => match &shared.config.root_uri {
            Some(uri) => respond_and_close(conn.stream, &response::redirect(uri.as_bytes())).await,
            None => respond_and_close(conn.stream, response::GATEWAY_TIMEOUT).await,
        },
        ClientRoute::Unregistrable => {
            respond_and_close(conn.stream, response::GATEWAY_TIMEOUT).await;
        }
        ClientRoute::Domain { domain, form } => {
            tracing::debug!(domain, peer = %conn.peer, ?form, "client");
            let kind = if conn.stream.is_tls() {
                ClientKind::Terminated
            } else {
                ClientKind::Plain
            };
            let client = ClientLeg {
                conn,
                buf,
                head_len,
                kind,
                domain: domain.into(),
                deadline: Instant::now() + shared.config.client_wait,
            };
            Box::pin(client::dispatch(shared, client, None)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Relay, RelayConfig};

    /// Every idle device is one task, as large as its largest state: the rare paths (TLS
    /// accept, head reads, refusals, client routing, renewal) are boxed so that a waiting device
    /// pays only for waiting. It was 4 KiB before they were; this keeps it from creeping back.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let relay = Relay::bind(RelayConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..RelayConfig::default()
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let conn = Conn::new(&relay.shared, Stream::Tcp(tcp), peer);
        let task = handle(relay.shared.clone(), conn, false);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2560, "the connection task grew to {size} bytes");
    }
}
