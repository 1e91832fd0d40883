//! Liveness of a mux connection (spec 5.6) and adaptive receive windows (5.5).
//!
//! When nothing has been received for `interval`, a PING goes out; no ACK within `timeout`
//! means the peer is dead, and the caller closes the connection. The ACK's round trip also
//! measures the bandwidth-delay product: the bytes received during one round trip. When that
//! approaches the current window, the window doubles (up to [`MAX_WINDOW`]), so a fast, long
//! path is not capped at *window / RTT*. Busy connections are probed for this at most every
//! `BDP_EVERY`; the probes count as PINGs.
//!
//! [`Keepalive::next`] is cancel-safe: a PING in flight is remembered, so the caller can
//! `select!` on it next to the connection and other events and apply a [`Event::Grow`] to its
//! `h2` connection between polls.

use crate::io::Signals;
use crate::settings::{MAX_WINDOW, STREAM_WINDOW};
use h2::{Ping, PingPong};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, sleep_until};

/// Probe the bandwidth-delay product at most this often on a busy connection.
const BDP_EVERY: Duration = Duration::from_millis(200);

/// What [`Keepalive::next`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// No PING ACK within the timeout: close the connection.
    Dead,
    /// The connection is gone (a PING could not be sent).
    Closed,
    /// Set the receive windows (connection target and stream initial) to this size.
    Grow(u32),
}

/// PING scheduling for one connection.
pub(crate) struct Keepalive {
    ping: PingPong,
    signals: Arc<Signals>,
    interval: Duration,
    timeout: Duration,
    /// Sends a PING at once (the relay uses it to get its GOAWAY written).
    pub(crate) kick: Arc<Notify>,
    window: u32,
    seen: u64,
    last_rx: Instant,
    last_probe: Instant,
    /// A PING in flight: when it was sent and the bytes read by then.
    pending: Option<(Instant, u64)>,
}

impl Keepalive {
    pub(crate) fn new(
        ping: PingPong,
        signals: Arc<Signals>,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            ping,
            seen: signals.bytes_read(),
            signals,
            // A zero setting would spin: at least 10 ms.
            interval: interval.max(Duration::from_millis(10)),
            timeout: timeout.max(Duration::from_millis(10)),
            kick: Arc::new(Notify::new()),
            window: STREAM_WINDOW,
            last_rx: now,
            last_probe: now,
            pending: None,
        }
    }

    /// Whether data moved at the last look and the window may still grow.
    fn pending_growth(&self) -> bool {
        self.window < MAX_WINDOW && self.last_rx > self.last_probe
    }

    /// Waits for the next thing the caller must act on.
    pub(crate) async fn next(&mut self) -> Event {
        loop {
            if let Some((sent_at, before)) = self.pending {
                let pong = std::future::poll_fn(|cx| self.ping.poll_pong(cx));
                tokio::select! {
                    pong = pong => {
                        self.pending = None;
                        if pong.is_err() {
                            return Event::Closed;
                        }
                        self.last_probe = Instant::now();
                        let read = self.signals.bytes_read();
                        let bdp = read.saturating_sub(before);
                        // The ACK itself is not traffic: only bytes after it count as movement.
                        self.seen = read;
                        if bdp.saturating_mul(3) >= u64::from(self.window) * 2
                            && self.window < MAX_WINDOW
                            && sent_at.elapsed() > Duration::ZERO
                        {
                            self.window = self.window.saturating_mul(2).min(MAX_WINDOW);
                            return Event::Grow(self.window);
                        }
                        continue;
                    }
                    () = sleep_until(sent_at + self.timeout) => return Event::Dead,
                }
            }
            // While data flows (and the window may still grow), look every BDP_EVERY; an idle
            // connection sleeps until its PING is due and is woken by the next byte, so that
            // thousands of idle devices cost no timer wake-ups.
            let busy = self.signals.bytes_read() != self.seen || self.pending_growth();
            let kicked = if busy {
                tokio::select! {
                    () = sleep(self.interval.min(BDP_EVERY)) => false,
                    () = self.kick.notified() => true,
                }
            } else {
                let due = self.last_rx.max(self.last_probe) + self.interval;
                tokio::select! {
                    () = self.signals.doze_until(due) => false,
                    () = self.kick.notified() => true,
                }
            };
            let now = Instant::now();
            let read = self.signals.bytes_read();
            let moved = read != self.seen;
            if moved {
                (self.seen, self.last_rx) = (read, now);
            }
            let quiet = now.duration_since(self.last_rx.max(self.last_probe)) >= self.interval;
            let probe = moved
                && self.window < MAX_WINDOW
                && now.duration_since(self.last_probe) >= BDP_EVERY;
            if kicked || quiet || probe {
                if self.ping.send_ping(Ping::opaque()).is_err() {
                    return Event::Closed;
                }
                self.pending = Some((now, read));
            }
        }
    }
}
