//! The socket under a mux connection: counts what is read (liveness, 5.6), lets the relay
//! insert its drain GOAWAY between two of `h2`'s frames, and lets the device notice a GOAWAY
//! from the relay (5.7).
//!
//! `h2` lets only a server send GOAWAY while streams continue; the relay is the client. So the
//! relay's side tracks frame boundaries in what `h2` writes ([`FrameScanner`]) and, once asked,
//! writes the fixed 17-byte `GOAWAY(NO_ERROR, 0)` at the next boundary. Last-stream-id 0 says
//! that no device-initiated stream was accepted, which is true: the device opens none.

use limmat_wire::mux::{FRAME_GOAWAY, FrameScanner, GOAWAY_NO_ERROR};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// What a mux connection's socket reports to the tasks around it.
#[derive(Debug, Default)]
pub struct Signals {
    read: AtomicU64,
    drain: AtomicBool,
    goaway_seen: AtomicBool,
    notify: Notify,
    /// The keepalive sleeps until its next PING is due and wants to hear of the next read.
    dozing: AtomicBool,
    wake: Notify,
}

impl Signals {
    /// Fresh signals for one connection, shared by its socket and its keepalive.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Bytes received so far: unchanged over an interval means the peer was silent.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Asks the relay's side to write GOAWAY at the next frame boundary. `h2` must write
    /// something for that to happen; a PING does.
    pub fn request_goaway(&self) {
        self.drain.store(true, Ordering::Relaxed);
    }

    /// Sleeps until `deadline`, or until bytes arrive (then returns early).
    pub(crate) async fn doze_until(&self, deadline: tokio::time::Instant) {
        self.dozing.store(true, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = self.wake.notified() => {}
        }
        self.dozing.store(false, Ordering::Relaxed);
    }

    /// Whether the device's side has read a GOAWAY from the relay.
    pub fn goaway_seen(&self) -> bool {
        self.goaway_seen.load(Ordering::Relaxed)
    }

    /// Resolves once the device's side has read a GOAWAY.
    pub async fn goaway(&self) {
        loop {
            let notified = self.notify.notified();
            if self.goaway_seen() {
                return;
            }
            notified.await;
        }
    }
}

/// A mux connection's socket, as `h2` sees it.
pub struct MuxIo<T> {
    inner: T,
    signals: Arc<Signals>,
    /// Relay side: frame boundaries in what `h2` writes, and how much of GOAWAY went out.
    writes: Option<(FrameScanner, usize)>,
    /// Device side: frames in what the relay sends.
    reads: Option<FrameScanner>,
}

impl<T> MuxIo<T> {
    /// The relay's socket (it writes the client preface and may insert GOAWAY).
    pub fn client(inner: T, signals: Arc<Signals>) -> Self {
        Self {
            inner,
            signals,
            writes: Some((FrameScanner::client(), 0)),
            reads: None,
        }
    }

    /// The device's socket (it reads the relay's preface and frames, watching for GOAWAY).
    pub fn server(inner: T, signals: Arc<Signals>) -> Self {
        Self {
            inner,
            signals,
            writes: None,
            reads: Some(FrameScanner::client()),
        }
    }
}

impl<T: AsyncWrite + Unpin> MuxIo<T> {
    /// Writes the pending GOAWAY if one is asked for and the stream is between frames.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((scanner, sent)) = &mut self.writes else {
            return Poll::Ready(Ok(()));
        };
        let started = *sent > 0;
        if *sent == GOAWAY_NO_ERROR.len()
            || !(started || self.signals.drain.load(Ordering::Relaxed) && scanner.at_boundary())
        {
            return Poll::Ready(Ok(()));
        }
        while *sent < GOAWAY_NO_ERROR.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &GOAWAY_NO_ERROR[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MuxIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            let signals = &this.signals;
            signals.read.fetch_add(new.len() as u64, Ordering::Relaxed);
            if signals.dozing.load(Ordering::Relaxed)
                && signals.dozing.swap(false, Ordering::Relaxed)
            {
                signals.wake.notify_one();
            }
            if let Some(scanner) = &mut this.reads {
                let mut goaway = false;
                scanner.feed(new, |t| goaway |= t == FRAME_GOAWAY);
                if goaway {
                    this.signals.goaway_seen.store(true, Ordering::Relaxed);
                    this.signals.notify.notify_waiters();
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MuxIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if let Some((scanner, _)) = &mut this.writes {
            scanner.feed(&buf[..n], |_| {});
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if let Some((scanner, _)) = &mut this.writes {
            let mut left = n;
            for b in bufs {
                let take = left.min(b.len());
                scanner.feed(&b[..take], |_| {});
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
