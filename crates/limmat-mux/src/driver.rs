//! The one loop that keeps a limmat-mux/1 connection alive, for both ends: it polls the `h2`
//! connection (which moves every frame), answers [`Keepalive`]'s PING schedule (5.6) and
//! applies its window growth (5.5) to the connection, and reports only what the caller must
//! act on: a new stream (on the device's side), the connection's end, or a dead peer.
//!
//! The relay (HTTP/2 client) and the agent (HTTP/2 server) `select!` on [`Driver::next`] next
//! to their own events (shutdown, GOAWAY, an operator's disconnect); it is cancel-safe.

use crate::io::Signals;
use crate::keepalive::{Event, Keepalive};
use h2::PingPong;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// An `h2` connection, client or server, as the driver needs it.
pub trait Connection {
    /// What the connection yields: accepted streams on the server side, nothing on the client.
    type Item;

    /// Moves the connection's frames; `Ready(None)` when it has ended cleanly.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Self::Item, h2::Error>>>;

    /// Sets the connection's target window and the streams' initial window (5.5).
    fn set_windows(&mut self, window: u32);

    /// The connection's PING handle, available once.
    fn ping_pong(&mut self) -> Option<PingPong>;
}

impl<T, B> Connection for h2::client::Connection<T, B>
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: bytes::Buf,
{
    type Item = Infallible;

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Infallible, h2::Error>>> {
        Pin::new(self).poll(cx).map(|ended| ended.err().map(Err))
    }

    fn set_windows(&mut self, window: u32) {
        self.set_target_window_size(window);
        // Only fails for a window over 2^31-1, which `MAX_WINDOW` is not.
        let _ = self.set_initial_window_size(window);
    }

    fn ping_pong(&mut self) -> Option<PingPong> {
        h2::client::Connection::ping_pong(self)
    }
}

impl<T, B> Connection for h2::server::Connection<T, B>
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: bytes::Buf,
{
    type Item = (http::Request<h2::RecvStream>, h2::server::SendResponse<B>);

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Self::Item, h2::Error>>> {
        self.poll_accept(cx)
    }

    fn set_windows(&mut self, window: u32) {
        self.set_target_window_size(window);
        // Only fails for a window over 2^31-1, which `MAX_WINDOW` is not.
        let _ = self.set_initial_window_size(window);
    }

    fn ping_pong(&mut self) -> Option<PingPong> {
        h2::server::Connection::ping_pong(self)
    }
}

/// What [`Driver::next`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Driven<I> {
    /// The connection yielded this (a stream the relay opened, on the device's side).
    Item(I),
    /// The connection ended: cleanly, or with this error.
    Ended(Option<h2::Error>),
    /// No PING ACK within the timeout: the caller closes the connection.
    Dead,
    /// A PING could not be sent: the connection is gone.
    Unpingable,
}

/// A mux connection with its keepalive.
pub struct Driver<C> {
    conn: C,
    keepalive: Keepalive,
}

impl<C: Connection> Driver<C> {
    /// Takes over `conn`, whose socket `signals` watches; PINGs after `interval` without a
    /// received byte, dead after `timeout` without the ACK. `None` if the connection's PING
    /// handle was already taken.
    pub fn new(
        mut conn: C,
        signals: Arc<Signals>,
        interval: Duration,
        timeout: Duration,
    ) -> Option<Self> {
        let ping = conn.ping_pong()?;
        let keepalive = Keepalive::new(ping, signals, interval, timeout);
        Some(Self { conn, keepalive })
    }

    /// Drives the connection until it yields something or ends, or the peer is found dead.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Driven<C::Item> {
        let Self { conn, keepalive } = self;
        loop {
            tokio::select! {
                next = poll_fn(|cx| conn.poll_next(cx)) => return match next {
                    Some(Ok(item)) => Driven::Item(item),
                    Some(Err(e)) => Driven::Ended(Some(e)),
                    None => Driven::Ended(None),
                },
                event = keepalive.next() => match event {
                    Event::Grow(window) => conn.set_windows(window),
                    Event::Dead => return Driven::Dead,
                    Event::Closed => return Driven::Unpingable,
                },
            }
        }
    }

    /// Sends a PING now: the relay uses it to get its GOAWAY written at once (5.7).
    pub fn ping_now(&self) {
        self.keepalive.kick.notify_one();
    }

    /// The connection without its keepalive, for the rest of its life after a GOAWAY.
    pub fn into_inner(self) -> C {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MuxIo, settings};
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    const FAST: Duration = Duration::from_millis(20);

    /// A peer that reads everything and never answers: the PING goes unacknowledged.
    #[tokio::test]
    async fn a_silent_peer_is_found_dead() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let drain = tokio::spawn(async move {
            let mut sink = vec![0; 4096];
            while theirs.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        let signals = Signals::new();
        let io = MuxIo::client(ours, signals.clone());
        let (_send, conn) = settings::client().handshake::<_, Bytes>(io).await.unwrap();
        let mut driver = Driver::new(conn, signals, FAST, FAST).unwrap();
        assert!(matches!(driver.next().await, Driven::Dead));
        drop(driver);
        drain.await.unwrap();
    }

    /// Both ends driven: the server side yields the stream the client opens, and the client's
    /// driver reports the end when the server goes away.
    #[tokio::test]
    async fn streams_arrive_and_the_end_is_reported() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (client_signals, server_signals) = (Signals::new(), Signals::new());
        let server = tokio::spawn(async move {
            let io = MuxIo::server(b, server_signals.clone());
            let conn = settings::server(8).handshake::<_, Bytes>(io).await.unwrap();
            let mut driver = Driver::new(conn, server_signals, FAST, FAST * 50).unwrap();
            match driver.next().await {
                Driven::Item((request, _respond)) => request.method().clone(),
                other => panic!("{other:?}"),
            }
        });
        let io = MuxIo::client(a, client_signals.clone());
        let (send, conn) = settings::client().handshake::<_, Bytes>(io).await.unwrap();
        let mut driver = Driver::new(conn, client_signals, FAST, FAST * 50).unwrap();
        let mut send = send.ready().await.unwrap();
        let request = crate::testing::connect_request();
        let (_response, _body) = send.send_request(request, false).unwrap();
        // The client's driver moves the HEADERS out; the server yields the stream and ends,
        // and then so does the client (which of the two is seen first is the scheduler's
        // choice: the client may see its end before the server task's result is polled).
        let (method, ended) = tokio::join!(server, driver.next());
        assert_eq!(method.unwrap(), http::Method::CONNECT);
        assert!(matches!(ended, Driven::Ended(_)), "{ended:?}");
    }
}
