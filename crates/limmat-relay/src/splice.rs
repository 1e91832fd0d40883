//! The relay's side of [`limmat_mux::splice`] (spec 2.7): a PTTH pair whose legs are both
//! plain TCP moves its bytes there, counted into the pipe's [`PipeCounters`] (which feed the
//! idle timeout and the access log), and the device's first bytes give the access log its
//! status line. Why and when it splices is told there.

use crate::snapshot::PipeCounters;
use std::io;
use tokio::net::TcpStream;

pub(crate) use limmat_mux::splice::Mode;

/// Moves bytes both ways between `a` (the client) and `b` (the device) until both directions
/// have ended; `counters` count the bytes read from each (`up` from `a`, `down` from `b`) and
/// take the status line that `b`'s first bytes start with.
pub(crate) async fn both_ways(
    a: &TcpStream,
    b: &TcpStream,
    counters: &PipeCounters,
    mode: Mode,
) -> io::Result<()> {
    let status = |first: &[u8]| crate::access::record_status(first, &counters.status);
    let counters = limmat_mux::splice::Counters {
        a_read: &counters.up,
        b_read: &counters.down,
        b_first: Some(&status),
    };
    limmat_mux::splice::both_ways(a, b, mode, counters).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn splice_moves_bytes_both_ways_and_half_closes() {
        moves_bytes_both_ways_and_half_closes(Mode::Splice).await;
    }

    #[tokio::test]
    async fn auto_moves_bytes_both_ways_and_half_closes() {
        moves_bytes_both_ways_and_half_closes(Mode::Auto).await;
    }

    async fn moves_bytes_both_ways_and_half_closes(mode: Mode) {
        // client ⇄ [a  relay  b] ⇄ device
        let (mut client, a) = pair().await;
        let (b, mut device) = pair().await;
        let counters = PipeCounters::default();
        let relay = async {
            both_ways(&a, &b, &counters, mode).await.unwrap();
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
        let r = both_ways(&a, &b, &counters, Mode::Splice).await;
        assert!(r.is_err(), "{r:?}");
    }
}
