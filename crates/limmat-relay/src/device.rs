//! A device connection that has sent a handshake (spec 2.4, 4.4): admitted to its domain, it
//! waits in the domain's FIFO until a client is paired with it, its hold time ends (`204`,
//! then the next head is read on the same connection), or it goes away.
//!
//! Every device handshake, PTTH, DPTTH or limmat-mux/1, is admitted by [`admit`].
//!
//! While waiting, the relay keeps a read pending on it (M4): EOF removes it at once, and stray
//! bytes are discarded (H13). A plain device holds no buffer while waiting; an idle device costs
//! a task, a socket and one queue entry.

use crate::context::RelayContext;
use crate::legs::{ClientLeg, Conn, DeviceClass, DeviceLeg};
use crate::metrics;
use crate::pairing::{self, Requeued};
use crate::registry::{Admission, DeviceInfo, DeviceReady, Offer};
use crate::stats::Kind as Gauge;
use crate::stream::Leg;
use limmat_wire::route::is_registrable;
use limmat_wire::{Authorization, Protocol, response};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

/// A device connection about to wait in its domain's FIFO.
pub(crate) struct Waiting {
    pub(crate) conn: Conn,
    pub(crate) protocol: Protocol,
    pub(crate) class: DeviceClass,
    pub(crate) admission: Admission,
    /// When its `204` is due; `None`: `hold_time` from when it starts waiting.
    pub(crate) hold_until: Option<Instant>,
}

impl From<Requeued> for Waiting {
    fn from(Requeued { leg, admission }: Requeued) -> Self {
        Self {
            conn: leg.conn,
            protocol: Protocol::Ptth,
            class: leg.class,
            admission,
            hold_until: Some(leg.hold_until),
        }
    }
}

/// What a connection does next.
pub(crate) enum Next {
    /// Read the first record of a TLS listener's connection (2.6.2-2.6.3).
    Tls(Conn),
    /// Answer this and close, without reading (a per-source limit, 4.3).
    Refused(Conn, Vec<u8>),
    /// Read the next head on it; after a `204`, its admission carries over to a re-POST for
    /// the same domain (2.4.5).
    Head(Conn, Option<Admission>),
    /// Wait in the FIFO.
    Wait(Waiting),
    /// Answer `204` and read its next head (2.4.2).
    Renew(Conn, Admission),
    /// Closed, or taken over by a pairing.
    Done,
}

impl From<Option<Requeued>> for Next {
    fn from(requeued: Option<Requeued>) -> Self {
        requeued.map_or(Next::Done, |r| Next::Wait(r.into()))
    }
}

/// The checks of 4.4, in order: the domain, the source's failed-authentication bucket, the
/// key, the domain's handshake rate, the cap. A re-POST after a `204` (`renewal`) is checked
/// for its key too, but is free of the rate and the cap. The error is the response to send.
pub(crate) fn admit(
    ctx: &RelayContext,
    peer: SocketAddr,
    domain: &str,
    authorization: Authorization<'_>,
    renewal: Option<Admission>,
) -> Result<Admission, Vec<u8>> {
    if !is_registrable(domain) {
        tracing::info!(%peer, domain = %domain.escape_debug(), "device refused: domain not registrable");
        return Err(response::UNAUTHORIZED.to_vec());
    }
    if let Some(keys) = ctx.keys() {
        if let Err(refusal) = ctx.limits.auth_allowed(peer.ip()) {
            tracing::info!(%peer, domain, "device refused: too many failed authentications");
            return Err(response::too_many_requests(refusal.secs()));
        }
        match keys.check(domain, authorization) {
            Ok(key) => tracing::debug!(%peer, domain, %key, "device authenticated"),
            Err(failure) => {
                ctx.limits.auth_failed(peer.ip());
                tracing::info!(%peer, domain, reason = %failure, "device refused: authentication");
                return Err(response::UNAUTHORIZED.to_vec());
            }
        }
    }
    if let Some(admission) = renewal {
        return Ok(admission);
    }
    let key: Arc<str> = domain.into();
    if let Err(refusal) = ctx.limits.handshake(&key) {
        tracing::info!(%peer, domain, "device refused: handshake_rate_per_domain");
        return Err(response::too_many_requests(refusal.secs()));
    }
    ctx.registry
        .admit(domain, ctx.config.max_per_domain)
        .ok_or_else(|| {
            tracing::info!(%peer, domain, "device refused: max_per_domain reached");
            response::too_many_requests(ctx.config.cap_retry_after.as_secs())
        })
}

/// An admitted PTTH or DPTTH device: listed for the admin API, then renewed at once (the
/// first head with `first_post_renew`) or waiting.
pub(crate) fn arrived(ctx: &RelayContext, waiting: Waiting, first_head: bool) -> Next {
    let Waiting {
        conn,
        protocol,
        class,
        admission,
        ..
    } = waiting;
    let info = DeviceInfo {
        peer: conn.peer,
        class,
        since: SystemTime::now(),
    };
    ctx.registry.describe(&admission, info);
    if first_head {
        tracing::info!(domain = %admission.domain(), peer = %conn.peer, ?protocol, tls = class.tls, pass_through = class.pass_through, "device connected");
    }
    if first_head && ctx.config.first_post_renew {
        return Next::Renew(conn, admission);
    }
    Next::Wait(Waiting {
        conn,
        protocol,
        class,
        admission,
        hold_until: None,
    })
}

/// What ended a device's wait.
enum Woke {
    /// A client was handed over.
    Paired,
    /// `hold_time` is over: `204`.
    Hold,
    /// The device closed or failed.
    Gone(std::io::Error),
    /// An operator disconnected the domain.
    Killed,
    /// The domain moved to another cluster node: `204`, then a `307` to it (7.6).
    Moved,
    /// The relay is stopping.
    Shutdown,
}

/// Holds a device until it is paired (the pairing takes the connection over), renewed with a
/// `204` at its hold deadline, or gone. `step` is the [`Next::Wait`]; it is borrowed, not
/// taken, so that the waiting connection is stored once in its task (see `conn::serve`).
pub(crate) async fn wait(ctx: &RelayContext, step: &mut Next) -> Next {
    let Next::Wait(waiting) = step else {
        return Next::Done;
    };
    let gauge = ctx.stats.hold(Gauge::WaitingDevice);
    let hold_until = *waiting
        .hold_until
        .get_or_insert_with(|| Instant::now() + ctx.config.hold_time);
    let hold = sleep_until(hold_until);
    tokio::pin!(hold);
    let (woke, handed) = loop {
        let Next::Wait(waiting) = &mut *step else {
            return Next::Done;
        };
        let (slot, mut rx) = oneshot::channel::<Box<ClientLeg>>();
        // DPTTH devices wait and renew like PTTH ones but are never paired (2.4.4).
        if waiting.protocol == Protocol::Ptth
            && let DeviceReady::Client(client) =
                ctx.registry
                    .device_ready(&waiting.admission, waiting.class, slot)
        {
            let Next::Wait(waiting) = std::mem::replace(step, Next::Done) else {
                return Next::Done;
            };
            let Waiting {
                conn,
                class,
                admission,
                ..
            } = waiting;
            let leg = DeviceLeg {
                conn,
                class,
                hold_until,
            };
            match client.send(Offer::Ptth(leg)) {
                // The client's task pairs and pipes; this device no longer counts (2.4.5).
                Ok(()) => return Next::Done,
                // That client left just now: offer this device again.
                Err(Offer::Ptth(back)) => {
                    *step = Next::Wait(Waiting {
                        conn: back.conn,
                        protocol: Protocol::Ptth,
                        class,
                        admission,
                        hold_until: Some(hold_until),
                    });
                    continue;
                }
                // Only this device's own leg can come back.
                Err(Offer::Mux(_)) => return Next::Done,
            }
        }
        let (woke, handed) = tokio::select! {
            client = &mut rx => match client {
                Ok(client) => (Woke::Paired, Some(client)),
                // The client that popped this slot stopped before sending: queue again.
                Err(_) => continue,
            },
            () = &mut hold => (Woke::Hold, None),
            reason = waiting.conn.stream.until_closed() => (Woke::Gone(reason), None),
            () = waiting.admission.killed().cancelled() => (Woke::Killed, None),
            () = waiting.admission.moved().cancelled() => (Woke::Moved, None),
            () = ctx.shutdown.cancelled() => (Woke::Shutdown, None),
        };
        // Leave the FIFO (before a 204, so that no client is paired meanwhile, 2.4.6); a
        // client handed over in this same instant is still served.
        rx.close();
        break (woke, handed.or_else(|| rx.try_recv().ok()));
    };
    drop(gauge);
    let Next::Wait(Waiting {
        conn,
        class,
        admission,
        ..
    }) = std::mem::replace(step, Next::Done)
    else {
        return Next::Done;
    };
    let device = DeviceLeg {
        conn,
        class,
        hold_until,
    };
    woken(ctx, woke, handed, device, admission).next().await
}

/// What follows a synchronous decision: the next step at once, or after a boxed future (a
/// rare path, kept out of the idle connection's task). Each kind of future is boxed as it is:
/// wrapped in an `async` block to map its output, it would be stored twice (an awaited
/// future is moved out of the block's captures), and an idle mux device keeps its box.
pub(crate) enum Then<'a> {
    /// Go on with this step.
    Now(Next),
    /// After this, the connection is closed or handed over.
    Done(Pin<Box<dyn Future<Output = ()> + Send + 'a>>),
    /// After this pairing, the device goes on with what it returns.
    Requeued(Pin<Box<dyn Future<Output = Option<Requeued>> + Send + 'a>>),
    /// Go on with what this returns.
    Later(Pin<Box<dyn Future<Output = Next> + Send + 'a>>),
}

impl Then<'_> {
    /// The next step: at once, or once the boxed future is done.
    pub(crate) async fn next(self) -> Next {
        match self {
            Then::Now(next) => next,
            Then::Done(done) => {
                done.await;
                Next::Done
            }
            Then::Requeued(paired) => paired.await.into(),
            Then::Later(then) => then.await,
        }
    }
}

/// Acts on the end of a wait: serve a client handed over, renew, or let the device go. Not an
/// `async fn`: its rare paths are boxed futures, so that a waiting device's task does not
/// carry their state nor a second copy of the device.
fn woken<'a>(
    ctx: &'a RelayContext,
    woke: Woke,
    handed: Option<Box<ClientLeg>>,
    device: DeviceLeg,
    admission: Admission,
) -> Then<'a> {
    match (woke, handed) {
        // Without a cluster, waiting devices are closed with no response (7.6); they
        // reconnect with backoff to another node or to the restarted one.
        (Woke::Shutdown, Some(client)) => Then::Done(pairing::refuse(ctx, *client)),
        (Woke::Shutdown, None) => Then::Now(Next::Done),
        // This device serves the client: the pairing's task takes both legs.
        (Woke::Paired | Woke::Hold | Woke::Moved, Some(client)) => {
            drop(admission);
            Then::Requeued(Box::pin(pairing::dispatch(ctx, *client, Some(device))))
        }
        (Woke::Hold, None) => Then::Now(Next::Renew(device.conn, admission)),
        (Woke::Moved, None) => {
            tracing::info!(domain = %admission.domain(), peer = %device.conn.peer, "device renewed: its domain moved to another node");
            Then::Now(Next::Renew(device.conn, admission))
        }
        (woke, handed) => {
            let (domain, peer) = (admission.domain(), device.conn.peer);
            match woke {
                Woke::Gone(reason) => {
                    tracing::info!(%domain, %peer, %reason, "device left while waiting");
                }
                Woke::Killed => {
                    tracing::info!(%domain, %peer, "device disconnected by the admin API");
                }
                _ => {}
            }
            // The device is gone or disconnected: a client handed to it looks again.
            drop((admission, device));
            match handed {
                Some(client) => Then::Requeued(Box::pin(pairing::dispatch(ctx, *client, None))),
                None => Then::Now(Next::Done),
            }
        }
    }
}

/// Writes the `204`; the connection stays counted until its next head (2.4.2).
pub(crate) async fn renew(ctx: &RelayContext, mut conn: Conn, admission: Admission) -> Next {
    let written = timeout(
        ctx.config.head_timeout,
        conn.stream.write_all(response::RENEW),
    )
    .await;
    if let Ok(Ok(())) = written {
        metrics::response(response::RENEW);
        tracing::debug!(domain = %admission.domain(), peer = %conn.peer, "renewed");
        Next::Head(conn, Some(admission))
    } else {
        tracing::info!(domain = %admission.domain(), peer = %conn.peer, "device gone at renewal");
        Next::Done
    }
}
