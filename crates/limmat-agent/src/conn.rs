//! [`RelayedConn`]: a connection the relay has paired with a client, as the device's service
//! sees it.
//!
//! The relay writes the client's first bytes right behind its `101`, often in the same segment,
//! so the agent has usually read some of them already while looking for the end of the `101`
//! head. A `RelayedConn` yields those bytes first and then reads the socket, so the service
//! sees exactly the client's byte stream (checklist 50). The relay connection may be plain or
//! TLS ([`RelayStream`]); the service cannot tell.
//!
//! A mux stream is answered (its `200`, spec 5.3) when the service first reads, writes or
//! shuts it down, not when the stream arrives: a service that opens its local connection
//! first (the tunnel's server mode) has the `200` leave with the frames that follow it, in one
//! write to the relay instead of a write of its own. The relay waits `head_timeout` (10 s by
//! default) for the answer and then offers the client to a device again, so a service that
//! holds a stream untouched for longer loses it.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use limmat_mux::H2Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::mux::StreamMeta;
use crate::transport::RelayStream;

/// Whatever must live exactly as long as the connection: the pool's socket permit and the
/// status count of relayed connections.
pub(crate) type Lease = Box<dyn Any + Send + Sync>;

/// A relayed connection: the client's bytes read so far, then the relay socket; or one
/// limmat-mux/1 stream (spec 5.3), which carries exactly the same bytes.
pub struct RelayedConn {
    leftover: Vec<u8>,
    pos: usize,
    stream: Inner,
    _lease: Option<Lease>,
}

enum Inner {
    Relay(RelayStream),
    Mux(Box<MuxInner>),
}

struct MuxInner {
    stream: MuxStream,
    meta: StreamMeta,
    relay: Option<SocketAddr>,
    local: Option<SocketAddr>,
    tls: bool,
}

impl Drop for MuxInner {
    /// A stream the service drops untouched is answered and then reset, so that its client is
    /// closed at once, as a PTTH client is when the service drops its connection; left
    /// unanswered, the relay would take the reset for a refusal and offer the client to a
    /// device again (5.3).
    fn drop(&mut self) {
        // Answers if that is still due; the stream is then dropped, which resets it.
        let _ = self.stream.open();
    }
}

/// A mux stream, answered or not yet.
enum MuxStream {
    /// Accepted by the agent; the `200` goes out with the service's first read, write or
    /// shutdown ([`MuxStream::open`]).
    Unanswered(SendResponse<Bytes>, RecvStream),
    Open(H2Stream),
    /// The `200` could not be sent: the relay reset the stream or the connection is gone.
    Gone,
}

impl MuxStream {
    /// The byte stream, answering the relay's CONNECT with `200` first if that is still due.
    fn open(&mut self) -> io::Result<&mut H2Stream> {
        if let MuxStream::Unanswered(..) = self {
            *self = match std::mem::replace(self, MuxStream::Gone) {
                MuxStream::Unanswered(mut respond, recv) => {
                    match respond.send_response(http::Response::new(()), false) {
                        Ok(send) => MuxStream::Open(H2Stream::new(send, recv)),
                        Err(_) => MuxStream::Gone,
                    }
                }
                other => other,
            };
        }
        match self {
            MuxStream::Open(stream) => Ok(stream),
            _ => Err(io::ErrorKind::ConnectionReset.into()),
        }
    }
}

macro_rules! inner {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Inner::Relay($s) => $e,
            Inner::Mux(m) => match m.stream.open() {
                Ok($s) => $e,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    };
}

impl RelayedConn {
    /// Wraps a stream (a [`RelayStream`] or a `TcpStream`) after a `101`; `leftover` are the
    /// bytes already read after its head.
    pub fn new(stream: impl Into<RelayStream>, leftover: Vec<u8>) -> Self {
        Self {
            leftover,
            pos: 0,
            stream: Inner::Relay(stream.into()),
            _lease: None,
        }
    }

    /// A limmat-mux/1 stream, not answered yet; `relay`, `local` and `tls` describe the mux
    /// connection.
    pub(crate) fn mux(
        respond: SendResponse<Bytes>,
        recv: RecvStream,
        meta: StreamMeta,
        relay: Option<SocketAddr>,
        local: Option<SocketAddr>,
        tls: bool,
    ) -> Self {
        Self {
            leftover: Vec::new(),
            pos: 0,
            stream: Inner::Mux(Box::new(MuxInner {
                stream: MuxStream::Unanswered(respond, recv),
                meta,
                relay,
                local,
                tls,
            })),
            _lease: None,
        }
    }

    /// What the relay told about the client, when this is a mux stream (5.3); a PTTH device
    /// learns nothing about its client.
    pub fn mux_meta(&self) -> Option<&StreamMeta> {
        match &self.stream {
            Inner::Relay(_) => None,
            Inner::Mux(m) => Some(&m.meta),
        }
    }

    pub(crate) fn with_lease(mut self, lease: Lease) -> Self {
        self._lease = Some(lease);
        self
    }

    /// The relay's address (not the client's: the relay does not tell it to a PTTH device).
    pub fn relay_addr(&self) -> io::Result<SocketAddr> {
        match &self.stream {
            Inner::Relay(s) => s.peer_addr(),
            Inner::Mux(m) => m.relay.ok_or_else(|| io::ErrorKind::NotConnected.into()),
        }
    }

    /// The local address of the connection to the relay.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.stream {
            Inner::Relay(s) => s.local_addr(),
            Inner::Mux(m) => m.local.ok_or_else(|| io::ErrorKind::NotConnected.into()),
        }
    }

    /// Whether the connection to the relay is TLS.
    pub fn is_tls(&self) -> bool {
        match &self.stream {
            Inner::Relay(s) => s.is_tls(),
            Inner::Mux(m) => m.tls,
        }
    }

    /// The client's bytes that were read with the `101` and have not been read from `self` yet.
    pub fn leftover(&self) -> &[u8] {
        &self.leftover[self.pos..]
    }

    /// The plain TCP socket to the relay, the client's bytes not read yet, and what must live
    /// as long as the connection; or `self` for a TLS connection or a mux stream, whose bytes
    /// only a copy can move.
    pub(crate) fn into_plain_tcp(self) -> Result<PlainTcp, Self> {
        match self.stream {
            Inner::Relay(RelayStream::Plain(tcp)) => Ok(PlainTcp {
                tcp,
                leftover: self.leftover[self.pos..].to_vec(),
                _lease: self._lease,
            }),
            stream => Err(Self { stream, ..self }),
        }
    }
}

/// A relayed connection over plain TCP, taken apart to be spliced ([`RelayedConn::into_plain_tcp`]).
pub(crate) struct PlainTcp {
    pub(crate) tcp: tokio::net::TcpStream,
    /// The client's bytes read with the `101`, to go out first.
    pub(crate) leftover: Vec<u8>,
    _lease: Option<Lease>,
}

impl std::fmt::Debug for RelayedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayedConn")
            .field("relay", &self.relay_addr().ok())
            .field("tls", &self.is_tls())
            .field("mux", &self.mux_meta())
            .field("leftover", &self.leftover().len())
            .finish()
    }
}

impl AsyncRead for RelayedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.leftover[this.pos..];
        if rest.is_empty() {
            return inner!(&mut this.stream, s => Pin::new(s).poll_read(cx, buf));
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        if this.pos == this.leftover.len() {
            // Free the buffer: a pipe may live for days.
            this.leftover = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RelayedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        inner!(&mut self.get_mut().stream, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        inner!(&mut self.get_mut().stream, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Inner::Relay(s) => s.is_write_vectored(),
            Inner::Mux(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(&mut self.get_mut().stream, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(&mut self.get_mut().stream, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A mux stream between an `h2` client (the relay's side) and a [`RelayedConn`] (the
    /// device's), over memory: the client's response future and the connection.
    async fn mux_pair() -> (h2::client::ResponseFuture, RelayedConn) {
        let (relay, device) = tokio::io::duplex(1 << 16);
        let (send, conn) = limmat_mux::settings::client()
            .handshake::<_, Bytes>(relay)
            .await
            .unwrap();
        tokio::spawn(conn);
        let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut conn = limmat_mux::settings::server(8)
                .handshake::<_, Bytes>(device)
                .await
                .unwrap();
            let (request, respond) = conn.accept().await.unwrap().unwrap();
            let _ = accepted_tx.send((request, respond));
            while conn.accept().await.is_some() {}
        });
        let mut send = send.ready().await.unwrap();
        let connect = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri("relay.example:80")
            .body(())
            .unwrap();
        let (response, _body) = send.send_request(connect, false).unwrap();
        let (request, respond) = accepted.await.unwrap();
        let meta = StreamMeta::from_headers(request.headers());
        let conn = RelayedConn::mux(respond, request.into_body(), meta, None, None, false);
        (response, conn)
    }

    /// The `200` waits for the service's first write (5.3): a stream the service has not
    /// touched is not answered, however long it waits. Time is paused, so the wait ends only
    /// once nothing else can run.
    #[tokio::test(start_paused = true)]
    async fn a_mux_stream_is_answered_with_its_first_write() {
        let (mut response, mut conn) = mux_pair().await;
        let early = tokio::time::timeout(Duration::from_secs(60), &mut response).await;
        assert!(early.is_err(), "answered before any I/O: {early:?}");
        conn.write_all(b"hello").await.unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        assert_eq!(&body.data().await.unwrap().unwrap()[..], b"hello");
    }

    /// A stream the service drops untouched is answered and reset, never left unanswered
    /// (which the relay would take for a refusal, 5.3).
    #[tokio::test(start_paused = true)]
    async fn a_mux_stream_dropped_untouched_is_answered_then_reset() {
        let (response, conn) = mux_pair().await;
        drop(conn);
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let read = response.into_body().data().await;
        assert!(matches!(read, Some(Err(_))), "{read:?}");
    }

    #[tokio::test]
    async fn leftover_comes_first_then_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (mut peer, _) = accepted.unwrap();
        let mut conn = RelayedConn::new(client.unwrap(), b"early ".to_vec());
        assert_eq!(conn.leftover(), b"early ");
        peer.write_all(b"late").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut small = [0u8; 3];
        conn.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"ear");
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"ly late");
        conn.write_all(b"back").await.unwrap();
        drop(conn);
        let mut back = Vec::new();
        peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"back");
    }
}
