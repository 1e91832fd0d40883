//! The admin listener's connections: what one client may take of it.
//!
//! `axum::serve` has no timeouts and no cap, so a few thousand idle connections to `/healthz`
//! could hold the process's file descriptors and make the public listeners fail their accepts.
//! Here every connection is served by hyper's HTTP/1.1 server with a head timeout (which also
//! ends a keep-alive connection that sends no next request), under a small cap of its own:
//! past [`MAX_CONNECTIONS`] a new connection is answered `503` with `Retry-After` and closed at
//! once, so the admin listener never holds more than the cap plus one descriptor.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Admin connections open at once; probes, a dashboard and a scraper need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// A request head (and, on a kept-alive connection, the next one) must arrive within this.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's whole life; the dashboard and scrapers reconnect.
const MAX_LIFETIME: Duration = Duration::from_secs(60);
/// How long open connections get to finish after `stop`.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The answer past the cap: complete, so that a prober sees why.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\nadmin listener busy\r\n";

/// Serves `app` on `listener` until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks = TaskTracker::new();
    let mut at_cap = false;
    loop {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !std::mem::replace(&mut at_cap, true) {
                tracing::warn!(%peer, cap = MAX_CONNECTIONS, "admin listener at its connection cap: answering 503");
            }
            tasks.spawn(busy(stream));
            continue;
        };
        at_cap = false;
        let app = app.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            connection(stream, app, stop).await;
            drop(slot);
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(STOP_GRACE, tasks.wait()).await;
}

/// `503` and close; bounded in time like everything else here.
async fn busy(mut stream: TcpStream) {
    let _ = tokio::time::timeout(HEAD_TIMEOUT, async {
        let _ = stream.write_all(BUSY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn connection(stream: TcpStream, app: Router, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stop.cancelled() => {}
        () = tokio::time::sleep(MAX_LIFETIME) => {}
    }
    // Finish the request in flight, then close.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(STOP_GRACE, conn).await;
}
