//! One limmat-mux/1 stream as an `AsyncRead + AsyncWrite` byte stream (spec 5.3–5.4), so that
//! the relay's pipe and the agent's tunnel modes treat it like a PTTH connection.
//!
//! Reading yields the peer's DATA and returns capacity to the window as the bytes are taken,
//! so a slow reader holds back the sender instead of buffering without bound (5.5). END_STREAM
//! reads as EOF; shutting down the writer sends END_STREAM. Made [`H2Stream::looking_ahead`],
//! a read that empties what was received looks, without waiting, at what `h2` holds next, so
//! a stream whose END_STREAM came with its last DATA says so ([`Ends::read_ended`]) and the
//! pipe ends the other leg with those bytes. A reset from the peer is an error
//! on both halves (the caller then closes its other leg), and dropping an unfinished stream
//! makes `h2` send RST_STREAM(CANCEL).

use crate::Ends;
use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one write hands to `h2` at once.
const MAX_WRITE: usize = 64 << 10;
/// Writes offered from this size on are bulk and go through the stream's reused buffer.
const REUSE_FROM: usize = 16 << 10;

/// A CONNECT stream, either end.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// DATA received and not read yet.
    pending: Bytes,
    /// Where bulk writes are copied for `h2`: chunks are split off the front of one 64 KiB
    /// block, which is taken back whole once `h2` has written and dropped them all (a new block
    /// only while `h2` still queues some, so at most one block beyond the queued bytes). A fresh
    /// 64 KiB `malloc` per write, freed at the top of the heap, had glibc give the pages back
    /// (`brk`) and fault them in again every few writes (one `brk` per three writes at the
    /// relay; reused: 2.2 → 1.8 CPU s/GiB in bulk). A stream that goes quiet after bulk keeps
    /// its block until its next small write or its end.
    scratch: Option<BytesMut>,
    /// END_STREAM sent.
    ended: bool,
    /// Whether reads look ahead for END_STREAM.
    look_ahead: bool,
    /// What the look ahead found after the last DATA and the next read returns: END_STREAM
    /// (`Some(Ok)`, EOF) or a failure.
    received_end: Option<io::Result<()>>,
}

impl H2Stream {
    /// The byte stream of one CONNECT stream: `send` carries what is written, `recv` what is read.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            scratch: None,
            ended: false,
            look_ahead: false,
            received_end: None,
        }
    }

    /// Has each read that empties what was received look, without waiting, at what `h2` holds
    /// next, so that [`Ends::read_ended`] knows an END_STREAM that came with the last DATA.
    /// For a stream copied with [`crate::copy_bidirectional_ends`]; it costs a poll of the
    /// stream per read (about 170 instructions when nothing follows).
    pub fn looking_ahead(mut self) -> Self {
        self.look_ahead = true;
        self
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
            // What the look ahead found, once; later reads ask `h2`, which says the same
            // again for an end (and for a failure what it would have said without it).
            if let Some(end) = this.received_end.take() {
                return Poll::Ready(end);
            }
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
        // Look ahead: the END_STREAM that often came with these bytes (an empty DATA frame
        // `h2` queues behind them), or more DATA. Not ready is the common case and costs
        // only the waker this task would register on its next read anyway.
        while this.look_ahead && this.pending.is_empty() && this.received_end.is_none() {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => this.pending = data,
                Poll::Ready(None) => this.received_end = Some(Ok(())),
                Poll::Ready(Some(Err(e))) => this.received_end = Some(Err(to_io(e))),
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Ends for H2Stream {
    fn read_ended(&self) -> bool {
        self.pending.is_empty() && matches!(self.received_end, Some(Ok(())))
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
                    let data = if buf.len() >= REUSE_FROM {
                        let scratch = this
                            .scratch
                            .get_or_insert_with(|| BytesMut::with_capacity(MAX_WRITE.max(n)));
                        // Packs into the block's tail, or takes the whole block back once
                        // `h2` has dropped every chunk of it, or starts a new one.
                        scratch.reserve(n);
                        scratch.extend_from_slice(&buf[..n]);
                        scratch.split().freeze()
                    } else {
                        // Request/response traffic: exactly what it needs, and a stream that
                        // went quiet after bulk lets its block go.
                        this.scratch = None;
                        Bytes::copy_from_slice(&buf[..n])
                    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes of every size, below and above [`REUSE_FROM`], cross a stream and come back from an
    /// echo intact and in order: the reused buffer never hands `h2` bytes it still owns.
    #[tokio::test]
    async fn small_and_bulk_writes_arrive_intact_both_ways() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let echo = tokio::spawn(async move {
            let mut conn = settings::server(8).handshake::<_, Bytes>(b).await.unwrap();
            let (request, mut respond) = conn.accept().await.unwrap().unwrap();
            let send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            let stream = H2Stream::new(send, request.into_body());
            let copy = async {
                let (mut r, mut w) = tokio::io::split(stream);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            };
            // Drives the connection until the client's goes away.
            let drive = async { while conn.accept().await.is_some() {} };
            tokio::join!(copy, drive);
        });
        let (send, conn) = settings::client().handshake::<_, Bytes>(a).await.unwrap();
        let driving = tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        let request = crate::testing::connect_request();
        let (response, body) = send.send_request(request, false).unwrap();
        let response = response.await.unwrap();
        let (mut r, mut w) = tokio::io::split(H2Stream::new(body, response.into_body()));
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = async {
            let mut rest = &sent[..];
            for size in [1, 100, 16 << 10, 70_000, 5, 64 << 10, 3].iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                w.write_all(chunk).await.unwrap();
                rest = tail;
            }
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let ((), read) = tokio::join!(writer, r.read_to_end(&mut got));
        read.unwrap();
        assert!(got == sent, "{} bytes back of {}", got.len(), sent.len());
        driving.abort();
        echo.await.unwrap();
    }

    /// A client stream whose server half answers with `send(&mut SendStream)`; returns the
    /// client's byte stream and the task driving both ends.
    async fn answered_with(
        send: impl FnOnce(&mut SendStream<Bytes>) + Send + 'static,
    ) -> (H2Stream, tokio::task::JoinHandle<()>) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut conn = settings::server(8).handshake::<_, Bytes>(b).await.unwrap();
            let (_request, mut respond) = conn.accept().await.unwrap().unwrap();
            let mut stream = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            send(&mut stream);
            while conn.accept().await.is_some() {}
        });
        let (send, conn) = settings::client().handshake::<_, Bytes>(a).await.unwrap();
        let client = tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        let (response, body) = send
            .send_request(crate::testing::connect_request(), false)
            .unwrap();
        let response = response.await.unwrap();
        let both = tokio::spawn(async move {
            let _ = client.await;
            let _ = server.await;
        });
        let stream = H2Stream::new(body, response.into_body()).looking_ahead();
        (stream, both)
    }

    /// END_STREAM that arrived with the last DATA is known once that DATA is read: the pipe can
    /// end the other leg with those bytes. The next read is EOF.
    #[tokio::test]
    async fn an_end_that_came_with_the_data_is_known_when_the_data_is_read() {
        let (mut stream, both) = answered_with(|s| {
            s.send_data(Bytes::from_static(b"abc"), false).unwrap();
            s.send_data(Bytes::new(), true).unwrap();
        })
        .await;
        // Both frames leave in one flush of the server and are taken in one read of the
        // connection, so `h2` holds both when the first read wakes.
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        assert!(stream.read_ended());
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        // And every read after: `h2` reports the end again.
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        drop(stream);
        both.abort();
    }

    /// Without END_STREAM in hand, nothing is claimed: the stream reads on.
    #[tokio::test]
    async fn no_end_is_claimed_before_it_arrives() {
        let (mut stream, both) = answered_with(|s| {
            s.send_data(Bytes::from_static(b"abc"), false).unwrap();
        })
        .await;
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        assert!(!stream.read_ended());
        drop(stream);
        both.abort();
    }
}
