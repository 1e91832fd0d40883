//! Moving bytes between two plain TCP sockets on Linux, shared by the relay's PTTH pipes and
//! the tunnel's local connections (spec 2.7): socket → kernel pipe → socket with `splice(2)`,
//! so the bytes never enter user space, or, for the start of an `auto` pipe, copied through a
//! small buffer; driven by tokio's readiness. TLS legs and mux streams must see the bytes and
//! keep [`crate::copy_bidirectional`].
//!
//! What pays where (docs/benchmarks.md, "Relay and tunnel"): splicing costs two syscalls per
//! chunk like a copy, but saves moving the bytes through user space, which only counts for
//! bulk flows; a kernel pipe per direction costs `pipe2` and two `close`s per pair, which a
//! short request on a new connection feels. So the kernel pipes come from a process-wide
//! [`POOL`] and go back to it empty, and [`Mode::Auto`] copies each direction until it turns
//! out to be bulk ([`SPLICE_AFTER_FULL_READS`] full reads in a row), then splices the rest:
//! measured, copying is cheaper for the small reads of request/response traffic, splicing for
//! bulk.
//!
//! Semantics are those of the copying pipe: a FIN on one leg becomes `shutdown(SHUT_WR)` on
//! the other once everything read before it has been written, the other direction keeps
//! flowing, the pipe ends when both directions have, and any error ends both. The byte
//! counters are updated after every read or `splice` that reads.

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use nix::unistd::pipe2;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one `splice` asks for: the default pipe capacity.
const CHUNK: usize = 64 << 10;

/// `auto`: a direction is copied through a buffer of this size...
const COPY_CHUNK: usize = 8 << 10;

/// ...until this many reads in a row have filled it (the sender is ahead: a bulk flow); from
/// then on it is spliced. Requests and answers of a keep-alive connection rarely fill it even
/// once, however many bytes the connection moves over its life.
pub const SPLICE_AFTER_FULL_READS: u32 = 2;

/// Empty kernel pipes kept for the next pair; more than this are closed.
const POOL_MAX: usize = 256;

/// Empty kernel pipes (read end, write end), shared by every runtime of the relay.
static POOL: Mutex<Vec<(OwnedFd, OwnedFd)>> = Mutex::new(Vec::new());

/// A kernel pipe, from the pool or new; it goes back to the pool when dropped empty.
struct Pipe {
    ends: Option<(OwnedFd, OwnedFd)>,
    /// Bytes in the pipe: a pipe that still holds some is closed, never reused.
    holds: usize,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        let pooled = POOL.lock().ok().and_then(|mut pool| pool.pop());
        let ends = match pooled {
            Some(ends) => ends,
            None => pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)?,
        };
        Ok(Pipe {
            ends: Some(ends),
            holds: 0,
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if let (Some(ends), 0) = (self.ends.take(), self.holds)
            && let Ok(mut pool) = POOL.lock()
            && pool.len() < POOL_MAX
        {
            pool.push(ends);
        }
    }
}

/// How [`both_ways`] moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// `splice(2)` from the first byte.
    Splice,
    /// Copy each direction until it is bulk ([`SPLICE_AFTER_FULL_READS`]), then splice.
    Auto,
}

/// Called with the first bytes a direction moves.
pub type FirstBytes<'a> = dyn Fn(&[u8]) + Sync + 'a;

/// What [`both_ways`] reports as it moves bytes: the bytes read from `a` and from `b`, and
/// (optionally) the first bytes `b` sends, seen before they move (the relay's access log takes
/// a device's status line from them).
pub struct Counters<'a> {
    /// Bytes read from `a` (and written to `b`).
    pub a_read: &'a AtomicU64,
    /// Bytes read from `b`.
    pub b_read: &'a AtomicU64,
    /// Called once with the first bytes `b` sends (at most 12 when spliced from the start).
    pub b_first: Option<&'a FirstBytes<'a>>,
}

/// Moves bytes both ways between `a` and `b` until both directions have ended.
pub async fn both_ways(
    a: &TcpStream,
    b: &TcpStream,
    mode: Mode,
    counters: Counters<'_>,
) -> io::Result<()> {
    tokio::try_join!(
        one_way(a, b, counters.a_read, None, mode),
        one_way(b, a, counters.b_read, counters.b_first, mode)
    )?;
    Ok(())
}

/// One direction: `from` → `to`, copied first with `Auto`, then spliced, and a half-close of
/// `to` at EOF.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    read: &AtomicU64,
    mut first: Option<&FirstBytes<'_>>,
    mode: Mode,
) -> io::Result<()> {
    if mode == Mode::Auto {
        let mut buf = vec![0; COPY_CHUNK];
        let mut full_reads = 0;
        while full_reads < SPLICE_AFTER_FULL_READS {
            let n = once(from, Interest::READABLE, buf.len(), || {
                Ok(nix::unistd::read(from.as_raw_fd(), &mut buf)?)
            })
            .await?;
            if n == 0 {
                return socket2::SockRef::from(to).shutdown(Shutdown::Write);
            }
            if let Some(first) = first.take() {
                first(&buf[..n]);
            }
            read.fetch_add(n as u64, Ordering::Relaxed);
            full_reads = if n == buf.len() { full_reads + 1 } else { 0 };
            let mut at = 0;
            while at < n {
                let sent = once(to, Interest::WRITABLE, n - at, || {
                    Ok(nix::unistd::write(to, &buf[at..n])?)
                })
                .await?;
                if sent == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                at += sent;
            }
        }
    }
    if let Some(first) = first {
        // This direction is the only reader of `from`, so what is peeked is what moves next.
        let mut bytes = [0; 12];
        let n = from.peek(&mut bytes).await?;
        first(&bytes[..n]);
    }
    spliced(from, to, read).await
}

/// One non-blocking `read(2)` or `write(2)` `op` (asking for `asked` bytes) once `s` is ready
/// for `interest`. A short result also clears tokio's readiness, as tokio's own socket reads
/// and writes do: the socket is drained (or its send buffer full), so the next operation waits
/// for the kernel's next event instead of paying a syscall for `EAGAIN`. Not for `splice(2)`:
/// a splice from a socket stops short when the pipe runs out of slots for the socket's
/// fragments, with more bytes waiting, and clearing the readiness then stalls the pipe (a
/// bulk transfer fell to 0.01 Gbit/s).
async fn once(
    s: &TcpStream,
    interest: Interest,
    asked: usize,
    mut op: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        s.ready(interest).await?;
        let mut short = None;
        let result = s.try_io(interest, || match op()? {
            n if n > 0 && n < asked => {
                short = Some(n);
                Err(io::ErrorKind::WouldBlock.into())
            }
            n => Ok(n),
        });
        match (result, short) {
            (_, Some(n)) => return Ok(n),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (result, None) => return result,
        }
    }
}

/// `from` → kernel pipe → `to` until EOF, then a half-close of `to`.
async fn spliced(from: &TcpStream, to: &TcpStream, read: &AtomicU64) -> io::Result<()> {
    let mut pipe = Pipe::take()?;
    let Some((pipe_out, pipe_in)) = pipe.ends.as_ref() else {
        return Err(io::ErrorKind::Other.into());
    };
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so EAGAIN can only mean that the socket has nothing.
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, pipe_in, None, CHUNK, flags).map_err(io::Error::from)
            })
            .await?;
        if n == 0 {
            // The peer's FIN, after every byte before it went out (2.7.2).
            return socket2::SockRef::from(to).shutdown(Shutdown::Write);
        }
        read.fetch_add(n as u64, Ordering::Relaxed);
        pipe.holds = n;
        while pipe.holds > 0 {
            let sent = to
                .async_io(Interest::WRITABLE, || {
                    splice(pipe_out, None, to, None, pipe.holds, flags).map_err(io::Error::from)
                })
                .await?;
            if sent == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            pipe.holds -= sent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The tests that use the process-wide pool run one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn pipes_go_back_to_the_pool_empty() {
        let _serial = SERIAL.lock().await;
        drop(POOL.lock().unwrap().drain(..));
        let pipe = Pipe::take().unwrap();
        drop(pipe);
        assert_eq!(POOL.lock().unwrap().len(), 1);
        let mut full = Pipe::take().unwrap();
        full.holds = 1;
        drop(full);
        assert_eq!(
            POOL.lock().unwrap().len(),
            0,
            "a pipe with bytes in it is closed"
        );
    }

    #[tokio::test]
    async fn auto_switches_to_splice_for_bulk_and_sees_the_first_bytes() {
        let _serial = SERIAL.lock().await;
        for mode in [Mode::Auto, Mode::Splice] {
            let (mut left, a) = pair().await;
            let (b, mut right) = pair().await;
            let (a_read, b_read) = (AtomicU64::new(0), AtomicU64::new(0));
            let seen = std::sync::Mutex::new(Vec::new());
            let b_first = |bytes: &[u8]| seen.lock().unwrap().extend_from_slice(bytes);
            let counters = Counters {
                a_read: &a_read,
                b_read: &b_read,
                b_first: Some(&b_first),
            };
            let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
            let ends = async {
                left.write_all(&big).await.unwrap();
                left.shutdown().await.unwrap();
                let mut got = Vec::new();
                right.read_to_end(&mut got).await.unwrap();
                right.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
                right.shutdown().await.unwrap();
                let mut back = Vec::new();
                left.read_to_end(&mut back).await.unwrap();
                (got, back)
            };
            let (moved, (got, back)) = tokio::join!(both_ways(&a, &b, mode, counters), ends);
            moved.unwrap();
            assert!(got == big, "{mode:?}: bytes differ");
            assert_eq!(back, b"HTTP/1.1 200 OK\r\n");
            assert_eq!(a_read.load(Ordering::Relaxed), 1_000_000);
            assert_eq!(b_read.load(Ordering::Relaxed), 17);
            assert_eq!(&seen.lock().unwrap()[..12], b"HTTP/1.1 200");
        }
    }
}
