//! The two sides of a pairing as the relay holds them (spec 2.4.7, 2.6.5, 5.8): an accepted
//! connection, a routed client, a waiting PTTH device, a live mux connection, and the classes
//! that decide which client may use which device.
//!
//! These are plain values handed from task to task through the registry's oneshot slots; the
//! modules above move them, none of them reaches back here.

use crate::limits::OpenGuard;
use crate::metrics;
use crate::stats::{GaugeGuard, Kind as Gauge, Stats};
use crate::stream::{Leg, Prefixed, Stream, Tcp, Tls};
use bytes::Bytes;
use h2::client::SendRequest;
use limmat_wire::mux::Route;
use limmat_wire::request::accepts_html;
use limmat_wire::response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;

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
    pub(crate) source: Option<OpenGuard>,
}

impl Conn {
    pub(crate) fn new(stats: &Stats, stream: Stream, peer: SocketAddr) -> Self {
        Self {
            stream,
            peer,
            open: Counted {
                _gauge: stats.hold(Gauge::Open),
                slot: None,
                source: None,
            },
        }
    }
}

/// A client routed to a domain, as handed to a device's task.
pub(crate) struct ClientLeg {
    pub(crate) conn: Conn,
    /// Everything read from the client so far: the head first, or the raw ClientHello of an
    /// SNI-routed client.
    pub(crate) buf: Vec<u8>,
    pub(crate) head_len: usize,
    pub(crate) kind: ClientKind,
    pub(crate) domain: Arc<str>,
    /// How the domain was found (path, Host or SNI), as a mux stream reports it (5.3).
    pub(crate) route: Route,
    /// The SNI of an SNI-routed client's ClientHello.
    pub(crate) hello_sni: Option<String>,
    /// The end of its `client_wait`.
    pub(crate) deadline: Instant,
    /// Cluster hops it has taken (`Limmat-Hops`, 7.5); 0 for a client of this node.
    pub(crate) hops: u32,
    /// The port of the listener it reached the cluster on (`Limmat-Public-Port`, 7.5) when
    /// another node forwarded it; `None` for this node's own client, whose port is read from
    /// its socket only when needed ([`ClientLeg::public_port`]): most clients never need it,
    /// and a `getsockname` per client was one system call in twelve of a mux stream.
    pub(crate) public_port: Option<u16>,
}

/// The request methods the access log names; anything else is logged without one.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// The method a request head starts with, if it is one of [`METHODS`].
pub(crate) fn method_of(head: &[u8]) -> Option<&'static str> {
    let method = head.split(|&b| b == b' ').next()?;
    METHODS.into_iter().find(|m| m.as_bytes() == method)
}

impl ClientLeg {
    /// The method of the client's request, for the access log: `None` for raw TLS, for an
    /// unusual method, or once the head has gone to a device.
    pub(crate) fn method(&self) -> Option<&'static str> {
        method_of(self.buf.get(..self.head_len)?)
    }

    /// The `504` for this client when no device came: an HTML page for a browser (its
    /// `Accept` names `text/html`), the exact 17 bytes for everyone else (2.5.6, issue 12).
    /// An SNI-routed client's head is still encrypted, so it always gets the exact bytes.
    pub(crate) fn refusal(&self) -> std::borrow::Cow<'static, [u8]> {
        let head = self.buf.get(..self.head_len).unwrap_or_default();
        if self.kind != ClientKind::Sni && accepts_html(head) {
            std::borrow::Cow::Owned(response::offline_page(&self.domain))
        } else {
            std::borrow::Cow::Borrowed(response::GATEWAY_TIMEOUT)
        }
    }

    /// The port of the listener it reached the cluster on (7.5); 0 if the socket cannot say.
    pub(crate) fn public_port(&self) -> u16 {
        let own = || self.conn.stream.local_addr().map_or(0, |a| a.port());
        self.public_port.unwrap_or_else(own)
    }

    /// The SNI the client reached the relay with: from its ClientHello when SNI-routed, from
    /// the terminated TLS session otherwise.
    pub(crate) fn sni(&self) -> Option<&str> {
        self.hello_sni.as_deref().or_else(|| self.conn.stream.sni())
    }

    /// Completes an SNI-routed client's TLS handshake with the relay's (wildcard) certificate
    /// within `within` (2.6.5 b, 2.6.6). The client is then a terminated TLS leg whose
    /// decrypted bytes have not been read yet. `None` when it failed (logged here) or when the
    /// relay has no certificate.
    pub(crate) async fn terminate(
        self,
        acceptor: Option<&TlsAcceptor>,
        within: Duration,
    ) -> Option<ClientLeg> {
        let ClientLeg {
            conn,
            buf,
            domain,
            route,
            hello_sni,
            deadline,
            hops,
            public_port,
            ..
        } = self;
        let (Some(acceptor), Tcp(tcp)) = (acceptor, conn.stream) else {
            return None;
        };
        let handshake = acceptor.accept(Prefixed::new(buf, tcp));
        match timeout(within, handshake).await {
            Ok(Ok(tls)) => Some(ClientLeg {
                conn: Conn {
                    stream: Tls(Box::new(tls)),
                    peer: conn.peer,
                    open: conn.open,
                },
                buf: Vec::new(),
                head_len: 0,
                kind: ClientKind::Terminated,
                domain,
                route,
                hello_sni,
                deadline,
                hops,
                public_port,
            }),
            Ok(Err(e)) => {
                metrics::tls_handshake(false);
                tracing::info!(domain = %domain, peer = %conn.peer, error = %e, "client TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::info!(domain = %domain, peer = %conn.peer, "client TLS handshake timed out");
                None
            }
        }
    }
}

/// A waiting PTTH device, as handed to a client's task.
pub(crate) struct DeviceLeg {
    pub(crate) conn: Conn,
    pub(crate) class: DeviceClass,
    /// When its `204` is due: a device that goes back to waiting keeps its deadline, so it
    /// always hears from the relay before its 75 s read timeout (D2).
    pub(crate) hold_until: Instant,
}

/// What a waiting device connection offers (spec 2.6.5): its transport and whether it
/// terminates TLS itself (`X-Relay-Security: transport/pass-through`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceClass {
    pub(crate) tls: bool,
    pub(crate) pass_through: bool,
}

impl DeviceClass {
    pub(crate) const ALL: [DeviceClass; 4] = [
        DeviceClass {
            tls: false,
            pass_through: false,
        },
        DeviceClass {
            tls: true,
            pass_through: false,
        },
        DeviceClass {
            tls: false,
            pass_through: true,
        },
        DeviceClass {
            tls: true,
            pass_through: true,
        },
    ];

    pub(crate) fn index(self) -> usize {
        usize::from(self.tls) | usize::from(self.pass_through) << 1
    }
}

/// How a client reached the relay: the client leg kinds of 2.6.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    /// A plain listener.
    Plain,
    /// A TLS listener, not SNI-routed: the relay terminated TLS.
    Terminated,
    /// SNI-routed: the relay chose the device before deciding on TLS.
    Sni,
}

impl ClientKind {
    pub(crate) const ALL: [ClientKind; 3] =
        [ClientKind::Plain, ClientKind::Terminated, ClientKind::Sni];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The pairing table of 2.6.5: HTTPS clients never reach a plaintext device leg.
    pub(crate) fn may_use(self, device: DeviceClass) -> bool {
        match self {
            ClientKind::Plain => true,
            ClientKind::Terminated => device.tls && !device.pass_through,
            ClientKind::Sni => device.pass_through || device.tls,
        }
    }
}

impl ClientKind {
    /// The leg kind as the access log and the admin API name it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ClientKind::Plain => "plain",
            ClientKind::Terminated => "tls-terminated",
            ClientKind::Sni => "tls-passthrough",
        }
    }
}

/// A live limmat-mux/1 connection (section 5): an always-available device leg up to the
/// device's `SETTINGS_MAX_CONCURRENT_STREAMS` (5.2, 5.8), as the registry lists it.
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
    pub(crate) fn new(
        id: u64,
        domain: Arc<str>,
        class: DeviceClass,
        peer: SocketAddr,
        send: SendRequest<Bytes>,
    ) -> Self {
        Self {
            id,
            domain,
            class,
            peer,
            send,
            active: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn domain(&self) -> &Arc<str> {
        &self.domain
    }

    pub(crate) fn class(&self) -> DeviceClass {
        self.class
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The handle that opens streams on this connection.
    pub(crate) fn sender(&self) -> SendRequest<Bytes> {
        self.send.clone()
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

    /// No new streams from now on (drain, GOAWAY, death).
    pub(crate) fn set_closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}
