//! The admin listener's connections: what one client may take of it.
//!
//! `axum::serve` has no timeouts and no cap, so a few thousand idle connections to `/healthz`
//! could hold the process's file descriptors and make the public listeners fail their accepts.
//! Here every connection is served by hyper's HTTP/1.1 server with a head timeout (which also
//! ends a keep-alive connection that sends no next request), under a small cap of its own,
//! [`MAX_CONNECTIONS`]: a new connection past the cap closes the *oldest* one (after its
//! request in flight, if any). Probes, scrapes and the dashboard make short connections, so the
//! oldest is the one a slow or idle client holds: the flood is what gives way, the probe is
//! served, and the listener never holds more than the cap plus one descriptor.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Admin connections open at once; probes, a dashboard and a scraper need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// A request head (and, on a kept-alive connection, the next one) must arrive within this.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's whole life; the dashboard and scrapers reconnect.
const MAX_LIFETIME: Duration = Duration::from_secs(60);
/// How long open connections get to finish after `stop` or eviction.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The open connections, oldest first: an id and the token that closes it.
type Open = Arc<Mutex<VecDeque<(u64, CancellationToken)>>>;

/// Serves `app` on `listener` until `stop` is cancelled. `limmat tunnel --status` serves its
/// page with it too (as `limmat_relay::serve_admin`), so both admin ports resist the same abuse.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let open: Open = Arc::default();
    let tasks = TaskTracker::new();
    let mut at_cap = false;
    for id in 0u64.. {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = stop.cancelled() => break,
                }
            }
        };
        let close = stop.child_token();
        let evicted = {
            let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
            let evicted = (open.len() >= MAX_CONNECTIONS)
                .then(|| open.pop_front())
                .flatten();
            open.push_back((id, close.clone()));
            evicted
        };
        match evicted {
            Some((_, oldest)) => {
                oldest.cancel();
                if !std::mem::replace(&mut at_cap, true) {
                    tracing::warn!(%peer, cap = MAX_CONNECTIONS, "admin listener at its connection cap: closing the oldest connections");
                }
            }
            None => at_cap = false,
        }
        let app = app.clone();
        let open = open.clone();
        tasks.spawn(async move {
            connection(stream, app, close).await;
            open.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(other, _)| *other != id);
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(STOP_GRACE, tasks.wait()).await;
}

/// Serves one connection until it ends, its life is over, or `close` (stop or eviction).
async fn connection(stream: TcpStream, app: Router, close: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = close.cancelled() => {}
        () = tokio::time::sleep(MAX_LIFETIME) => {}
    }
    // Finish the request in flight, then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(STOP_GRACE, conn).await;
}
