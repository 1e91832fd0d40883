//! Zero-copy pipes for plain TCP pairs on Linux (spec 2.7): bytes move socket → kernel pipe →
//! socket with `splice(2)` and never enter user space, one pipe pair per direction, driven by
//! tokio's readiness. PTTH pairs whose legs are both plain TCP use this; TLS legs and mux
//! streams must see the bytes and keep the ordinary copy (`pipe::run_with`).
//!
//! Semantics are those of the copying pipe: a FIN on one leg becomes `shutdown(SHUT_WR)` on
//! the other once everything read before it has been written, the other direction keeps
//! flowing, the pipe ends when both directions have, and any error ends both. The byte
//! counters are updated after every `splice` that reads, so the idle timeout and the access
//! log see the same numbers.

use crate::snapshot::PipeCounters;
use nix::fcntl::{OFlag, SpliceFFlags, splice};
use nix::unistd::pipe2;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one `splice` asks for: the default pipe capacity.
const CHUNK: usize = 64 << 10;

/// Moves bytes both ways between `a` (the client) and `b` (the device) until both directions
/// have ended; `counters` count the bytes read from each (`up` from `a`, `down` from `b`) and
/// take the status line that `b`'s first bytes start with, peeked before they are moved.
pub(crate) async fn both_ways(
    a: &TcpStream,
    b: &TcpStream,
    counters: &PipeCounters,
) -> io::Result<()> {
    tokio::try_join!(
        one_way(a, b, &counters.up, None),
        one_way(b, a, &counters.down, Some(&counters.status))
    )?;
    Ok(())
}

/// One direction: `from` → pipe → `to`, then a half-close of `to` at EOF. With `status`, the
/// first bytes are peeked for a status line first (this direction is the only reader of `from`,
/// so what is peeked is what is moved next).
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    read: &AtomicU64,
    status: Option<&AtomicU16>,
) -> io::Result<()> {
    let (pipe_out, pipe_in): (OwnedFd, OwnedFd) =
        pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    if let Some(status) = status {
        let mut first = [0; 12];
        let n = from.peek(&mut first).await?;
        crate::access::record_status(&first[..n], status);
    }
    loop {
        // The pipe is empty here, so EAGAIN can only mean that the socket has nothing.
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, &pipe_in, None, CHUNK, flags).map_err(io::Error::from)
            })
            .await?;
        if n == 0 {
            // The peer's FIN, after every byte before it went out (2.7.2).
            return socket2::SockRef::from(to).shutdown(Shutdown::Write);
        }
        read.fetch_add(n as u64, Ordering::Relaxed);
        let mut in_pipe = n;
        while in_pipe > 0 {
            let sent = to
                .async_io(Interest::WRITABLE, || {
                    splice(&pipe_out, None, to, None, in_pipe, flags).map_err(io::Error::from)
                })
                .await?;
            if sent == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            in_pipe -= sent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_and_half_closes() {
        // client ⇄ [a  relay  b] ⇄ device
        let (mut client, a) = pair().await;
        let (b, mut device) = pair().await;
        let counters = PipeCounters::default();
        let relay = async {
            both_ways(&a, &b, &counters).await.unwrap();
        };
        let ends = async {
            let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
            let writer = async {
                client.write_all(&big).await.unwrap();
                client.shutdown().await.unwrap();
                // The other direction still flows after the half-close.
                let mut back = Vec::new();
                client.read_to_end(&mut back).await.unwrap();
                back
            };
            let reader = async {
                let mut got = Vec::new();
                device.read_to_end(&mut got).await.unwrap();
                device.write_all(b"done").await.unwrap();
                device.shutdown().await.unwrap();
                got
            };
            let (back, got) = tokio::join!(writer, reader);
            assert_eq!(got, big);
            assert_eq!(back, b"done");
        };
        tokio::join!(relay, ends);
        assert_eq!(counters.up.load(Ordering::Relaxed), 3_000_000);
        assert_eq!(counters.down.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_reset_ends_both_directions() {
        let (client, a) = pair().await;
        let (b, _device) = pair().await;
        let counters = PipeCounters::default();
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client);
        let r = both_ways(&a, &b, &counters).await;
        assert!(r.is_err(), "{r:?}");
    }
}
