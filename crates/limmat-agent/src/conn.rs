//! [`RelayedConn`]: a connection the relay has paired with a client, as the device's service
//! sees it.
//!
//! The relay writes the client's first bytes right behind its `101`, often in the same segment,
//! so the agent has usually read some of them already while looking for the end of the `101`
//! head. A `RelayedConn` yields those bytes first and then reads the socket, so the service
//! sees exactly the client's byte stream (checklist 50). The relay connection may be plain or
//! TLS ([`RelayStream`]); the service cannot tell.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::RelayStream;

/// Whatever must live exactly as long as the connection: the pool's socket permit and the
/// status count of relayed connections.
pub(crate) type Lease = Box<dyn Any + Send + Sync>;

/// A relayed connection: the client's bytes read so far, then the relay socket.
pub struct RelayedConn {
    leftover: Vec<u8>,
    pos: usize,
    stream: RelayStream,
    _lease: Option<Lease>,
}

impl RelayedConn {
    /// Wraps a stream (a [`RelayStream`] or a `TcpStream`) after a `101`; `leftover` are the
    /// bytes already read after its head.
    pub fn new(stream: impl Into<RelayStream>, leftover: Vec<u8>) -> Self {
        Self {
            leftover,
            pos: 0,
            stream: stream.into(),
            _lease: None,
        }
    }

    pub(crate) fn with_lease(mut self, lease: Lease) -> Self {
        self._lease = Some(lease);
        self
    }

    /// The relay's address (not the client's: the relay does not tell it to a PTTH device).
    pub fn relay_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address of the connection to the relay.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Whether the connection to the relay is TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The client's bytes that were read with the `101` and have not been read from `self` yet.
    pub fn leftover(&self) -> &[u8] {
        &self.leftover[self.pos..]
    }
}

impl std::fmt::Debug for RelayedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayedConn")
            .field("relay", &self.stream.peer_addr().ok())
            .field("tls", &self.stream.is_tls())
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
            return Pin::new(&mut this.stream).poll_read(cx, buf);
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
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
