//! Copying both ways between two byte streams with buffers that grow only for bulk flows.
//!
//! `tokio::io::copy_bidirectional_with_sizes` allocates both buffers zeroed at their full size
//! before the first byte moves. For a mux stream that size is one 64 KiB DATA frame per
//! direction, and a profile of short requests on new connections (`bench/profile.sh`,
//! `mux-close`) spent about a tenth of the relay's and the tunnel's CPU zeroing and
//! page-faulting those 128 KiB for 13-byte answers. Here each direction starts with
//! [`INITIAL`] bytes and doubles, up to the maximum it is given, only after a read filled the
//! whole buffer: a request/response exchange never grows, a bulk transfer reaches full-size
//! frames after a few reads. Nor is a buffer zeroed first (reads go into its spare capacity
//! through `tokio_util::io::poll_read_buf`): zeroing even the first 8 KiB per direction was
//! 1.3 µs of a mux stream's 93 in the relay's profile.
//!
//! The semantics are tokio's: each direction copies until its reader ends, then flushes and
//! shuts its writer down (half-close is propagated), and the call returns the bytes moved each
//! way once both directions are done, or the first error.

use bytes::{BufMut, BytesMut};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

/// Each direction's first buffer.
pub const INITIAL: usize = 8 << 10;

/// One direction's buffer and progress.
struct Buffer {
    /// The bytes of the last read; its capacity is where the next read goes.
    buf: BytesMut,
    /// What a read may fill now, and the most it may grow to.
    size: usize,
    max: usize,
    /// Bytes of `buf` written out so far.
    pos: usize,
    read_done: bool,
    need_flush: bool,
    amt: u64,
}

impl Buffer {
    fn new(max: usize) -> Buffer {
        let max = max.max(1);
        let size = INITIAL.min(max);
        Buffer {
            buf: BytesMut::with_capacity(size),
            size,
            max,
            pos: 0,
            read_done: false,
            need_flush: false,
            amt: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.buf.len() && !self.read_done {
                // The last read filled the buffer: the flow is bulk, so read more at a time.
                if self.buf.len() >= self.size && self.size < self.max {
                    self.size = (self.size * 2).min(self.max);
                }
                self.pos = 0;
                // Written out whole, so the allocation is reused (`reserve` of a cleared,
                // unshared `BytesMut` allocates only to grow).
                self.buf.clear();
                self.buf.reserve(self.size);
                let mut room = (&mut self.buf).limit(self.size);
                match poll_read_buf(reader.as_mut(), cx, &mut room) {
                    Poll::Ready(Ok(n)) => self.read_done = n == 0,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing to read now: push out what was written before waiting.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.buf.len() {
                let n = ready!(writer.as_mut().poll_write(cx, &self.buf[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                return Poll::Ready(Ok(self.amt));
            }
        }
    }
}

enum Direction {
    Running(Buffer),
    ShuttingDown(u64),
    Done(u64),
}

fn transfer<R, W>(
    cx: &mut Context<'_>,
    state: &mut Direction,
    mut reader: Pin<&mut R>,
    mut writer: Pin<&mut W>,
) -> Poll<io::Result<u64>>
where
    R: AsyncRead + ?Sized,
    W: AsyncWrite + ?Sized,
{
    loop {
        match state {
            Direction::Running(buf) => {
                let count = ready!(buf.poll_copy(cx, reader.as_mut(), writer.as_mut()))?;
                *state = Direction::ShuttingDown(count);
            }
            Direction::ShuttingDown(count) => {
                ready!(writer.as_mut().poll_shutdown(cx))?;
                *state = Direction::Done(*count);
            }
            Direction::Done(count) => return Poll::Ready(Ok(*count)),
        }
    }
}

/// Copies `a` → `b` and `b` → `a` until both readers end, each direction's buffer growing from
/// [`INITIAL`] to at most `max_buffer` bytes; returns the bytes moved `(a → b, b → a)`.
pub async fn copy_bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    max_buffer: usize,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::Running(Buffer::new(max_buffer));
    let mut b_to_a = Direction::Running(Buffer::new(max_buffer));
    poll_fn(|cx| {
        let forward = transfer(cx, &mut a_to_b, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let backward = transfer(cx, &mut b_to_a, Pin::new(&mut *b), Pin::new(&mut *a))?;
        let forward = ready!(forward);
        let backward = ready!(backward);
        Poll::Ready(Ok((forward, backward)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn copies_both_ways_and_propagates_half_close() {
        let (mut client, mut near) = duplex(1 << 20);
        let (mut far, mut server) = duplex(1 << 20);
        let pipe =
            tokio::spawn(async move { copy_bidirectional(&mut near, &mut far, 64 << 10).await });
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        client.write_all(&big).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        assert_eq!(pipe.await.unwrap().unwrap(), (300_000, 6));
    }

    #[test]
    fn a_buffer_grows_only_after_a_full_read() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut sink = Vec::new();
        // A short read (a request, an answer) leaves the buffer as it is.
        let mut b = Buffer::new(64 << 10);
        let mut short: &[u8] = &[1; 100];
        let _ = b.poll_copy(&mut cx, Pin::new(&mut short), Pin::new(&mut sink));
        assert_eq!(b.size, INITIAL);
        assert!(b.buf.capacity() < 2 * INITIAL);
        // Full reads double it, up to the maximum.
        let mut b = Buffer::new(64 << 10);
        let bulk = vec![7u8; 1 << 20];
        let mut reads = ReadSizes(&bulk, Vec::new());
        let _ = b.poll_copy(&mut cx, Pin::new(&mut reads), Pin::new(&mut sink));
        assert_eq!(b.size, 64 << 10);
        assert_eq!(sink.len(), 100 + (1 << 20));
        // Each read offered at most the current size: 8, 16, 32, then 64 KiB each time.
        let offered = reads.1;
        assert_eq!(offered[..4], [8 << 10, 16 << 10, 32 << 10, 64 << 10]);
        assert!(offered[4..].iter().all(|&n| n == 64 << 10), "{offered:?}");
        assert_eq!(Buffer::new(1000).size, 1000);
    }

    /// A reader that records how much room each read was given.
    struct ReadSizes<'a>(&'a [u8], Vec<usize>);

    impl AsyncRead for ReadSizes<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.0.is_empty() {
                let room = buf.remaining();
                self.1.push(room);
            }
            let mut rest = self.0;
            let poll = Pin::new(&mut rest).poll_read(cx, buf);
            self.0 = rest;
            poll
        }
    }
}
