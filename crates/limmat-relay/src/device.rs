//! A device connection that has sent a handshake (spec 2.4): it waits in its domain's FIFO
//! until a client is paired with it, its hold time ends (`204`, then the next head is read on
//! the same connection), or it goes away.
//!
//! While waiting, the relay keeps a read pending on it (M4): EOF removes it at once, and stray
//! bytes are discarded (H13). A plain device holds no buffer while waiting; an idle device costs
//! a task, a socket and one queue entry.

use crate::client::{self, ClientLeg};
use crate::conn::Conn;
use crate::registry::{Admission, DeviceClass, DeviceReady, Offer};
use crate::server::Shared;
use crate::stats::Kind as Gauge;
use limmat_wire::{Protocol, response};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

/// A waiting device, as handed to a client's task.
pub(crate) struct DeviceLeg {
    pub(crate) conn: Conn,
    pub(crate) class: DeviceClass,
    /// When its `204` is due: a device that goes back to waiting keeps its deadline, so it
    /// always hears from the relay before its 75 s read timeout (D2).
    pub(crate) hold_until: Instant,
}

/// How a wait ended, when the connection stays with the caller.
pub(crate) struct Renewed {
    pub(crate) conn: Conn,
    pub(crate) admission: Admission,
}

/// Holds a device until it is paired (`None`: the pairing's task took over the connection, or it
/// was closed) or renewed with a `204` at `hold_until` (default: `hold_time` from now).
pub(crate) async fn wait(
    shared: &Arc<Shared>,
    mut conn: Conn,
    protocol: Protocol,
    class: DeviceClass,
    admission: Admission,
    hold_until: Option<Instant>,
) -> Option<Renewed> {
    let waiting = shared.stats.hold(Gauge::WaitingDevice);
    let hold_until = hold_until.unwrap_or_else(|| Instant::now() + shared.config.hold_time);
    let hold = sleep_until(hold_until);
    tokio::pin!(hold);
    loop {
        let (slot, mut rx) = oneshot::channel::<ClientLeg>();
        // DPTTH devices wait and renew like PTTH ones but are never paired (2.4.4).
        if protocol == Protocol::Ptth
            && let DeviceReady::Client(client) =
                shared.registry.device_ready(&admission, class, slot)
        {
            match client.send(Offer::Ptth(DeviceLeg {
                conn,
                class,
                hold_until,
            })) {
                // The client's task pairs and pipes; this device no longer counts (2.4.5).
                Ok(()) => return None,
                // That client left just now: offer this device again.
                Err(Offer::Ptth(leg)) => {
                    conn = leg.conn;
                    continue;
                }
                // Only this device's own leg can come back.
                Err(Offer::Mux(_)) => return None,
            }
        }
        let (woke, handed) = tokio::select! {
            client = &mut rx => match client {
                Ok(client) => (Woke::Paired, Some(client)),
                // The client that popped this slot stopped before sending: queue again.
                Err(_) => continue,
            },
            () = &mut hold => (Woke::Hold, None),
            reason = conn.stream.until_closed() => (Woke::Gone(reason), None),
            () = admission.killed().cancelled() => (Woke::Killed, None),
            () = shared.shutdown.cancelled() => (Woke::Shutdown, None),
        };
        // Leave the FIFO (before a 204, so that no client is paired meanwhile, 2.4.6); a
        // client handed over in this same instant is still served.
        rx.close();
        let handed = handed.or_else(|| rx.try_recv().ok());
        drop(waiting);
        let leg = |conn| DeviceLeg {
            conn,
            class,
            hold_until,
        };
        match (woke, handed) {
            // Without a cluster, waiting devices are closed with no response (7.6); they
            // reconnect with backoff to another node or to the restarted one.
            (Woke::Shutdown, Some(client)) => Box::pin(client::refuse(shared, client)).await,
            (Woke::Shutdown, None) => {}
            // This device serves the client: the pairing's task takes both legs.
            (Woke::Paired | Woke::Hold, Some(client)) => {
                drop(admission);
                Box::pin(client::dispatch(shared, client, Some(leg(conn)))).await;
            }
            (Woke::Hold, None) => return Box::pin(renew(shared, conn, admission)).await,
            (woke, handed) => {
                match &woke {
                    Woke::Gone(reason) => {
                        tracing::info!(domain = %admission.domain(), peer = %conn.peer, %reason, "device left while waiting");
                    }
                    Woke::Killed => {
                        tracing::info!(domain = %admission.domain(), peer = %conn.peer, "device disconnected by the admin API");
                    }
                    _ => {}
                }
                // The device is gone or disconnected: a client handed to it looks again.
                drop((admission, conn));
                if let Some(client) = handed {
                    Box::pin(client::dispatch(shared, client, None)).await;
                }
            }
        }
        return None;
    }
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
    /// The relay is stopping.
    Shutdown,
}

/// Writes the `204`; the connection stays counted until its next head (2.4.2).
pub(crate) async fn renew(
    shared: &Arc<Shared>,
    mut conn: Conn,
    admission: Admission,
) -> Option<Renewed> {
    match timeout(
        shared.config.head_timeout,
        conn.stream.write_all(response::RENEW),
    )
    .await
    {
        Ok(Ok(())) => {
            crate::metrics::response(response::RENEW);
            tracing::debug!(domain = %admission.domain(), peer = %conn.peer, "renewed");
            Some(Renewed { conn, admission })
        }
        _ => {
            tracing::info!(domain = %admission.domain(), peer = %conn.peer, "device gone at renewal");
            None
        }
    }
}
