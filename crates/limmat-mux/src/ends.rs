//! What a leg of [`crate::copy_bidirectional_ends`] may know about where its bytes end, so that
//! the last bytes of a direction and its end leave together.
//!
//! A mux stream often has its END_STREAM in hand when its last DATA is read: the tunnel's
//! answer to a `Connection: close` request and the end of it arrive in one read of the HTTP/2
//! connection. Told so, the copy writes those bytes as the last ones: to a plain TCP socket
//! with `MSG_MORE`, so that the `shutdown(SHUT_WR)` that follows puts the FIN on the same
//! segment (Linux adds a FIN to a queued, unsent segment). A request on a new connection then
//! costs two segments fewer (a separate FIN, and the client's ACK of the data alone): 20.7 →
//! 18.7 TCP segments per mux `Connection: close` request, all processes counted (see
//! `docs/benchmarks.md`).
//!
//! Every method has a default that knows nothing, which is always correct: a leg that cannot
//! tell (TLS, a boxed stream) is copied as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::either::Either;

/// What a byte stream may know beyond `AsyncRead` and `AsyncWrite`: that its reads have ended
/// before a read says so, and how to write a last chunk so that its shutdown goes out with it.
pub trait Ends {
    /// Whether every byte this stream will yield has been read and its end is already known:
    /// the next read returns EOF without waiting. The copy trusts it and reads no more, so a
    /// wrong `true` loses data, where a wrong `false` only costs a segment: a wrapper that
    /// buffers bytes of its own (a prefix, a decoder) answers `true` only when its buffer is
    /// empty too.
    fn read_ended(&self) -> bool {
        false
    }

    /// Writes from `buf` as [`AsyncWrite::poll_write`] does, where these are the last bytes
    /// before a shutdown. The caller MUST shut the writer down right after: on TCP the bytes
    /// wait in the kernel for it (or for the next write, or the close).
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>>
    where
        Self: AsyncWrite,
    {
        self.poll_write(cx, buf)
    }
}

impl Ends for tokio::net::TcpStream {
    /// `MSG_MORE`: the bytes wait in the socket for the FIN that the shutdown adds to them.
    #[cfg(target_os = "linux")]
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use nix::libc::{MSG_MORE, MSG_NOSIGNAL};
        loop {
            std::task::ready!(self.poll_write_ready(cx))?;
            let sent = self.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(&*self).send_with_flags(buf, MSG_MORE | MSG_NOSIGNAL)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }
}

/// Boxed streams (the relay's TLS legs) take the defaults; a boxed stream that knows more
/// (a boxed `H2Stream`) would need this to pass through instead.
impl<T: ?Sized> Ends for Box<T> {}

impl<L, R> Ends for Either<L, R>
where
    L: Ends + AsyncWrite + Unpin,
    R: Ends + AsyncWrite + Unpin,
{
    fn read_ended(&self) -> bool {
        match self {
            Either::Left(l) => l.read_ended(),
            Either::Right(r) => r.read_ended(),
        }
    }

    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Either::Left(l) => Pin::new(l).poll_write_last(cx, buf),
            Either::Right(r) => Pin::new(r).poll_write_last(cx, buf),
        }
    }
}

impl<T: Ends + AsyncWrite + Unpin + ?Sized> Ends for &mut T {
    fn read_ended(&self) -> bool {
        (**self).read_ended()
    }

    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut **self.get_mut()).poll_write_last(cx, buf)
    }
}

/// Any byte stream, knowing nothing of its ends: what [`crate::copy_bidirectional`] copies.
pub(crate) struct Unaware<T>(pub(crate) T);

impl<T: AsyncRead + Unpin> AsyncRead for Unaware<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Unaware<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T> Ends for Unaware<T> {}
