//! A relay-side connection: plain TCP, or TLS that the relay terminated.
//!
//! Everything after accept (head reads, waiting, pairing, pipes, lingering close) works on this
//! one type, so the protocol logic does not care how a leg arrived (spec 2.6: plain and TLS
//! legs behave alike, with `close_notify` standing in for a FIN). Plain sockets keep a
//! readiness-based path that holds no buffer while idle; TLS needs a read to make progress.

use bytes::BufMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// A TCP socket with bytes already read from it in front: the relay reads a ClientHello to
/// learn the SNI before it decides whether to terminate TLS, then replays it to rustls.
pub(crate) struct Prefixed {
    prefix: Vec<u8>,
    offset: usize,
    inner: TcpStream,
}

impl Prefixed {
    pub(crate) fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Self {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let n = (self.prefix.len() - self.offset).min(buf.remaining());
            let start = self.offset;
            buf.put_slice(&self.prefix[start..start + n]);
            self.offset += n;
            if self.offset == self.prefix.len() {
                self.prefix = Vec::new();
                self.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One leg as the relay holds it: plain TCP, or TLS the relay terminated. `Either` forwards
/// reads and writes (vectored ones too) to whichever it is; [`Tcp`] and [`Tls`] name the two.
pub(crate) type Stream = Either<TcpStream, Box<TlsStream<Prefixed>>>;

pub(crate) use Either::{Left as Tcp, Right as Tls};

/// What the relay asks of a leg beyond reading and writing.
pub(crate) trait Leg {
    /// Whether the relay terminated TLS on it.
    fn is_tls(&self) -> bool;

    /// The relay's address of this leg (which listener accepted it).
    fn local_addr(&self) -> io::Result<std::net::SocketAddr>;

    /// The SNI a terminated TLS leg was reached with.
    fn sni(&self) -> Option<&str>;

    /// Waits for data and appends what is there to `buf`, reading at most `max` bytes.
    /// `Ok(0)` is EOF (a FIN, or a TLS `close_notify`). Cancel-safe.
    async fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;

    /// Reads and discards until the peer closes or fails, then returns why. Used on idle
    /// connections to notice at once that they are gone (M4). Cancel-safe.
    async fn until_closed(&mut self) -> io::Error;

    /// Without waiting: has the peer already closed? Only plain sockets can tell; a TLS leg
    /// answers `Ok` and a later write fails instead. Data found is discarded (H13).
    fn probe_closed(&self) -> io::Result<()>;
}

impl Leg for Stream {
    fn is_tls(&self) -> bool {
        matches!(self, Tls(_))
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Tcp(tcp) => tcp.local_addr(),
            Tls(tls) => tls.get_ref().0.inner.local_addr(),
        }
    }

    fn sni(&self) -> Option<&str> {
        match self {
            Tcp(_) => None,
            Tls(tls) => tls.get_ref().1.server_name(),
        }
    }

    async fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let max = max.max(1);
        if let Tcp(s) = self {
            // Allocate only once the socket is readable: idle sockets hold no buffer.
            s.readable().await?;
        }
        let n = grow(buf, max);
        // Through `AsyncRead`, also for plain TCP: a read that leaves room tells tokio the
        // socket is drained, so the next read waits for epoll instead of costing a `recvfrom`
        // that returns EAGAIN (one system call less per client).
        self.read_buf(&mut (&mut *buf).limit(n)).await
    }

    async fn until_closed(&mut self) -> io::Error {
        match self {
            Tcp(s) => loop {
                // No buffer lives across the await: an idle device costs no memory here.
                if let Err(e) = s.readable().await {
                    return e;
                }
                if let Err(e) = discard_ready(s) {
                    return e;
                }
                tokio::task::consume_budget().await;
            },
            Tls(s) => {
                let mut scratch = vec![0u8; 256];
                loop {
                    match s.read(&mut scratch).await {
                        Ok(0) => return io::ErrorKind::UnexpectedEof.into(),
                        Ok(_) => tokio::task::consume_budget().await,
                        Err(e) => return e,
                    }
                }
            }
        }
    }

    fn probe_closed(&self) -> io::Result<()> {
        match self {
            Tcp(s) => discard_ready(s),
            Tls(_) => Ok(()),
        }
    }
}

/// Makes room for the next read and returns how much to read: buffers grow by doubling from
/// 4 KiB, so a peer that sends a few bytes gets a few KiB, not the whole `max` reserved.
fn grow(buf: &mut Vec<u8>, max: usize) -> usize {
    if buf.capacity() == buf.len() {
        buf.reserve_exact(max.min(buf.len().max(4096)));
    }
    max.min(buf.capacity() - buf.len())
}

/// Reads and drops what a plain socket has buffered, in bounded rounds; EOF is an error.
fn discard_ready(s: &TcpStream) -> io::Result<()> {
    let mut scratch = [0u8; 256];
    for _ in 0..64 {
        match s.try_read(&mut scratch) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
