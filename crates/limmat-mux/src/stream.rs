//! One limmat-mux/1 stream as an `AsyncRead + AsyncWrite` byte stream (spec 5.3–5.4), so that
//! the relay's pipe and the agent's tunnel modes treat it like a PTTH connection.
//!
//! Reading yields the peer's DATA and returns capacity to the window as the bytes are taken,
//! so a slow reader holds back the sender instead of buffering without bound (5.5). END_STREAM
//! reads as EOF; shutting down the writer sends END_STREAM. A reset from the peer is an error
//! on both halves (the caller then closes its other leg), and dropping an unfinished stream
//! makes `h2` send RST_STREAM(CANCEL).

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one write hands to `h2` at once.
const MAX_WRITE: usize = 64 << 10;

/// A CONNECT stream, either end.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// DATA received and not read yet.
    pending: Bytes,
    ended: bool,
}

impl H2Stream {
    /// The byte stream of one CONNECT stream: `send` carries what is written, `recv` what is read.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            ended: false,
        }
    }
}

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into());
    }
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // Only fails when the stream is already gone; the next read reports that.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len().min(MAX_WRITE));
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    this.send.send_data(data, false).map_err(to_io)?;
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            this.send.send_data(Bytes::new(), true).map_err(to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
