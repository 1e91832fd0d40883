//! The pipe (spec 2.7): bytes copied both ways without looking at them, half-close propagated
//! (a FIN or `close_notify` on one leg becomes `shutdown(SHUT_WR)` or `close_notify` on the
//! other while the other direction keeps flowing, M5), closed when both directions have ended,
//! on any error, or after `idle_timeout` without a byte.
//!
//! The only per-read work is adding the byte count to a counter, which both feeds the idle
//! check and the access log; nothing is done per byte. The device's first read is also looked
//! at for a status line, which the access log shows (see `access`).

use crate::access;
use crate::context::RelayContext;
use crate::legs::ClientLeg;
use crate::metrics;
use crate::snapshot::{PipeCounters, PipeInfo};
use crate::stats::Kind as Gauge;
use crate::stream::{Stream, Tcp};
use limmat_mux::Ends;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_util::sync::CancellationToken;

/// How a pipe ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Both directions ended with a FIN.
    Closed,
    /// A leg failed or was reset.
    Error,
    /// No byte moved for `idle_timeout`.
    Idle,
    /// The relay stopped after its drain timeout, or an operator disconnected the domain.
    Stopped,
}

impl End {
    /// How the metrics label it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Error => "error",
            End::Idle => "idle",
            End::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) end: End,
    /// Client to device.
    pub(crate) up: u64,
    /// Device to client.
    pub(crate) down: u64,
    /// The status line of the device's first answer, if it had one.
    pub(crate) status: Option<u16>,
}

/// Copy buffer per direction of a PTTH pipe (tokio's default).
pub(crate) const COPY_BUFFER: usize = 8 << 10;

/// The device leg of a pipe: a PTTH connection, which may be spliced in the kernel when both
/// legs are plain TCP, or any byte stream (a mux stream), which is copied.
pub(crate) trait DeviceLegIo: AsyncRead + AsyncWrite + Ends + Unpin + Sized {
    /// The plain TCP socket, when there is one.
    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        Err(self)
    }
}

impl DeviceLegIo for Stream {
    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        match self {
            Tcp(tcp) => Ok(tcp),
            other => Err(other),
        }
    }
}

impl DeviceLegIo for limmat_mux::H2Stream {}

/// Where a paired client's bytes go: the device leg, its address, the leg kind as the access
/// log names it, how many client bytes already went with the pairing, and the copy buffer;
/// and the client's method, read from its head before the head went to the device.
pub(crate) struct DeviceEnd<D> {
    pub(crate) method: Option<&'static str>,
    pub(crate) io: D,
    pub(crate) peer: SocketAddr,
    pub(crate) leg: &'static str,
    pub(crate) sent: usize,
    pub(crate) buffer: usize,
}

/// Runs the pipe between a paired client and its device leg (a PTTH connection or a mux
/// stream) to its end: counts the pairing (a pairing returns a handshake token, so the
/// device's replacement is not a loop; and how long the client waited), lists the pipe for the
/// admin API, counts it, and logs it at both ends.
pub(crate) async fn run_paired<D: DeviceLegIo>(
    ctx: &RelayContext,
    client: ClientLeg,
    device: DeviceEnd<D>,
) {
    ctx.limits.paired(&client.domain);
    let arrived = client.deadline.checked_sub(ctx.config.client_wait);
    metrics::paired(arrived.map_or(Duration::ZERO, |t| t.elapsed()));
    let _pipe = ctx.stats.hold(Gauge::Pipe);
    let started = Instant::now();
    let (client_peer, device_peer, leg) = (client.conn.peer, device.peer, device.leg);
    tracing::debug!(domain = %client.domain, client = %client_peer, device = %device_peer, leg, "paired");
    let info = PipeInfo {
        client: client_peer,
        device: device_peer,
        leg,
        since: std::time::SystemTime::now(),
        counters: Default::default(),
    };
    let listed = ctx.registry.pipe_started(&client.domain, info);
    let sent = device.sent as u64;
    listed.counters.up.fetch_add(sent, Ordering::Relaxed);
    let (idle, stops) = (ctx.config.idle_timeout, [&ctx.hard_stop, listed.killed()]);
    let (counters, buffer) = (&listed.counters, device.buffer);
    let outcome = match (client.conn.stream, device.io.into_tcp()) {
        // Both legs plain TCP: zero-copy on Linux.
        #[cfg(target_os = "linux")]
        (Tcp(client), Ok(device)) if let Some(mode) = ctx.config.data_path.splice_mode() => {
            run_spliced(client, device, idle, counters, stops, mode).await
        }
        (client, Ok(device)) => run_with(client, device, buffer, idle, counters, stops).await,
        (client, Err(device)) => run_with(client, device, buffer, idle, counters, stops).await,
    };
    drop(listed);
    let end = outcome.end.label();
    metrics::pipe_ended(end, outcome.up, outcome.down, started.elapsed());
    let line = access::Line {
        method: device.method,
        domain: &client.domain,
        client: client_peer,
        device: Some(device_peer),
        leg,
        status: outcome.status,
        up: outcome.up,
        down: outcome.down,
        duration: arrived.map_or_else(|| started.elapsed(), |t| t.elapsed()),
        end,
    };
    access::log(ctx.config.access_log, &line);
}

/// Forwards between any two legs (a mux stream is one), with up to `buffer` bytes per
/// direction (a buffer grows to it only for bulk flows).
pub(crate) async fn run_with<C, D>(
    mut client: C,
    mut device: D,
    buffer: usize,
    idle_timeout: Duration,
    counters: &PipeCounters,
    stops: [&CancellationToken; 2],
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Ends + Unpin,
    D: AsyncRead + AsyncWrite + Ends + Unpin,
{
    let (up, down) = (&counters.up, &counters.down);
    let mut client = Counted {
        inner: &mut client,
        read: up,
        status: None,
    };
    let mut device = Counted {
        inner: &mut device,
        read: down,
        status: Some(&counters.status),
    };
    let copy = limmat_mux::copy_bidirectional_ends(&mut client, &mut device, buffer);
    supervise(copy, idle_timeout, counters, stops).await
}

/// Forwards between two plain TCP legs with `splice(2)` on Linux (bytes stay in the kernel;
/// with `Auto`, after a first stretch copied), with the same half-close, idle and stop
/// semantics as [`run_with`].
#[cfg(target_os = "linux")]
pub(crate) async fn run_spliced(
    client: tokio::net::TcpStream,
    device: tokio::net::TcpStream,
    idle_timeout: Duration,
    counters: &PipeCounters,
    stops: [&CancellationToken; 2],
    mode: crate::splice::Mode,
) -> Outcome {
    let copy = crate::splice::both_ways(&client, &device, counters, mode);
    supervise(copy, idle_timeout, counters, stops).await
}

/// Runs `copy` (which counts into `counters` as it reads) until it ends, the legs are idle
/// for `idle_timeout`, or a stop token fires.
async fn supervise<T>(
    copy: impl Future<Output = std::io::Result<T>>,
    idle_timeout: Duration,
    counters: &PipeCounters,
    stops: [&CancellationToken; 2],
) -> Outcome {
    let (up, down) = (&counters.up, &counters.down);
    tokio::pin!(copy);
    // Every `select!` here is `biased`: the copy first, as the branch that ends most pipes;
    // an unbiased one draws a random number at every wake-up.
    let total = || up.load(Ordering::Relaxed) + down.load(Ordering::Relaxed);
    // The relay's drain timeout, or an operator disconnecting the domain.
    let stopped = async {
        tokio::select! {
            biased;
            () = stops[0].cancelled() => {}
            () = stops[1].cancelled() => {}
        }
    };
    tokio::pin!(stopped);
    let end = if idle_timeout.is_zero() {
        tokio::select! {
            biased;
            r = &mut copy => if r.is_ok() { End::Closed } else { End::Error },
            () = &mut stopped => End::Stopped,
        }
    } else {
        // Check a few times per timeout, so an idle pipe closes within 1.25 × idle_timeout.
        // The first check is one period in: `interval`'s immediate first tick would register
        // a timer due now, and a timer due before the driver's next wake-up makes tokio wake
        // its own thread through an `eventfd` write (0.7 system calls per mux stream).
        let period = (idle_timeout / 4).max(Duration::from_millis(10));
        let (mut seen, mut last_active) = (0, Instant::now());
        let mut tick = interval_at(last_active + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                r = &mut copy => break if r.is_ok() { End::Closed } else { End::Error },
                () = &mut stopped => break End::Stopped,
                now = tick.tick() => {
                    let moved = total();
                    if moved != seen {
                        (seen, last_active) = (moved, now);
                    } else if now.duration_since(last_active) >= idle_timeout {
                        break End::Idle;
                    }
                }
            }
        }
    };
    Outcome {
        end,
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        status: access::status(&counters.status),
    }
}

/// A leg that counts the bytes read from it, and (the device's) records the status line its
/// first read starts with.
struct Counted<'a, S> {
    inner: &'a mut S,
    read: &'a AtomicU64,
    status: Option<&'a AtomicU16>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            if let Some(status) = self.status.take() {
                access::record_status(&buf.filled()[before..], status);
            }
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncWrite + Ends + Unpin> Ends for Counted<'_, S> {
    fn read_ended(&self) -> bool {
        self.inner.read_ended()
    }

    fn poll_write_last(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_last(cx, buf)
    }
}
