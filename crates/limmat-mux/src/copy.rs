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
//! way once both directions are done, or the first error. With legs that know where their
//! bytes end ([`Ends`], [`copy_bidirectional_ends`]), a direction whose reader is known to have
//! ended writes its last bytes so that the shutdown leaves with them.

use crate::ends::{Ends, Unaware};
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
        R: AsyncRead + Ends + ?Sized,
        W: AsyncWrite + Ends + ?Sized,
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
                    // The reader may know that these are its last bytes.
                    Poll::Ready(Ok(n)) => self.read_done = n == 0 || reader.read_ended(),
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
                let rest = &self.buf[self.pos..];
                // Bytes left after the reader ended are the last: the shutdown follows them.
                let n = if self.read_done {
                    ready!(writer.as_mut().poll_write_last(cx, rest))?
                } else {
                    ready!(writer.as_mut().poll_write(cx, rest))?
                };
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
    R: AsyncRead + Ends + ?Sized,
    W: AsyncWrite + Ends + ?Sized,
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
    copy_bidirectional_ends(&mut Unaware(a), &mut Unaware(b), max_buffer).await
}

/// [`copy_bidirectional`] between legs that may know where their bytes end ([`Ends`]): a
/// direction whose reader has ended writes its last bytes with
/// [`Ends::poll_write_last`], then shuts its writer down.
pub async fn copy_bidirectional_ends<A, B>(
    a: &mut A,
    b: &mut B,
    max_buffer: usize,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Ends + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Ends + Unpin + ?Sized,
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
        let mut short = Unaware(&[1; 100][..]);
        let _ = b.poll_copy(
            &mut cx,
            Pin::new(&mut short),
            Pin::new(&mut Unaware(&mut sink)),
        );
        assert_eq!(b.size, INITIAL);
        assert!(b.buf.capacity() < 2 * INITIAL);
        // Full reads double it, up to the maximum.
        let mut b = Buffer::new(64 << 10);
        let bulk = vec![7u8; 1 << 20];
        let mut reads = Unaware(ReadSizes(&bulk, Vec::new()));
        let _ = b.poll_copy(
            &mut cx,
            Pin::new(&mut reads),
            Pin::new(&mut Unaware(&mut sink)),
        );
        assert_eq!(b.size, 64 << 10);
        assert_eq!(sink.len(), 100 + (1 << 20));
        // Each read offered at most the current size: 8, 16, 32, then 64 KiB each time.
        let offered = reads.0.1;
        assert_eq!(offered[..4], [8 << 10, 16 << 10, 32 << 10, 64 << 10]);
        assert!(offered[4..].iter().all(|&n| n == 64 << 10), "{offered:?}");
        assert_eq!(Buffer::new(1000).size, 1000);
    }

    /// A reader that knows its end: its last bytes are written with `poll_write_last` and it is
    /// not read again; the writer is shut down next.
    #[tokio::test]
    async fn a_known_end_goes_out_with_the_last_bytes() {
        let mut reader = KnownEnd(b"answer".to_vec(), 0);
        let mut writer = Recorder::default();
        let moved = copy_bidirectional_ends(&mut reader, &mut writer, 1 << 10).await;
        assert_eq!(moved.unwrap(), (6, 0));
        assert_eq!(reader.1, 1, "read again after its end was known");
        assert_eq!(writer.0, ["last answer", "shutdown"]);
        // Unaware legs write as before, and read on to EOF.
        let mut reader = Unaware(KnownEnd(b"answer".to_vec(), 0));
        let mut writer = Recorder::default();
        let moved = copy_bidirectional_ends(&mut reader, &mut writer, 1 << 10).await;
        assert_eq!(moved.unwrap(), (6, 0));
        assert_eq!(reader.0.1, 2);
        assert_eq!(writer.0, ["write answer", "shutdown"]);
    }

    /// On a real socket the last bytes, held by `MSG_MORE`, leave with the shutdown: the peer
    /// reads them and EOF at once.
    #[tokio::test]
    async fn a_tcp_leg_sends_its_last_bytes_and_fin_together() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (mut sender, mut peer) = (sender.unwrap(), accepted.unwrap().0);
        let mut reader = KnownEnd(b"last bytes".to_vec(), 0);
        let copy = copy_bidirectional_ends(&mut reader, &mut sender, 1 << 10);
        let mut got = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            peer.read_to_end(&mut got).await
        });
        // `peer` never writes, so the pipe's other direction waits; the answer and EOF must
        // arrive all the same.
        tokio::select! {
            r = read => assert_eq!(r.expect("held back by MSG_MORE").unwrap(), 10),
            _ = copy => panic!("the copy ended before the peer did"),
        }
        assert_eq!(got, b"last bytes");
    }

    /// Yields its bytes in one read and then knows it has ended; records its reads.
    struct KnownEnd(Vec<u8>, usize);

    impl AsyncRead for KnownEnd {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.1 += 1;
            let bytes = std::mem::take(&mut self.0);
            buf.put_slice(&bytes);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for KnownEnd {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Ends for KnownEnd {
        fn read_ended(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A writer that records what it was asked to do; reads end at once.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let line = format!("write {}", String::from_utf8_lossy(buf));
            self.0.push(line);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.0.push("shutdown".into());
            Poll::Ready(Ok(()))
        }
    }

    impl Ends for Recorder {
        fn poll_write_last(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let line = format!("last {}", String::from_utf8_lossy(buf));
            self.0.push(line);
            Poll::Ready(Ok(buf.len()))
        }
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
