//! The `per-core` layout: besides the runtime that calls [`crate::Relay::run`], the relay
//! starts `accept_runtimes` current-thread tokio runtimes, each on its own thread with its own
//! `SO_REUSEPORT` socket per listener, so the kernel spreads new connections over them and a
//! connection's tasks stay on the thread that accepted it (no work stealing, no wake-ups
//! between workers for one connection's own events).
//!
//! Why this is correct across runtimes: every shared structure (registry, limits, stats, the
//! task tracker) lives in the one `Arc<RelayContext>` and uses runtime-independent
//! synchronisation; a device accepted on one runtime pairs with a client accepted on another,
//! whose task then polls the device's socket, whose readiness the device's runtime reports (a
//! tokio socket stays registered with the runtime that created it, and every runtime here keeps
//! driving its reactor until the relay has stopped). Each runtime's thread lives until the
//! relay's task tracker is closed and empty, so none drops a socket that another still uses.

use crate::context::RelayContext;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Starts `ctx.config.accept_runtimes` runtimes, each accepting with `accept` on its own
/// `SO_REUSEPORT` twin of every listener; returns one receiver per runtime that completes
/// when its thread has ended. A runtime whose sockets or thread cannot be made is logged and
/// left out: the others, and the caller's, still accept.
pub(crate) fn start<F>(
    ctx: &Arc<RelayContext>,
    listeners: &[(TcpListener, bool)],
    accept: fn(Arc<RelayContext>, TcpListener, bool) -> F,
) -> Vec<oneshot::Receiver<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut ended = Vec::new();
    for index in 1..=ctx.config.accept_runtimes {
        let sockets: std::io::Result<Vec<(std::net::TcpListener, bool)>> = listeners
            .iter()
            .map(|(l, tls)| Ok((twin(l.local_addr()?)?, *tls)))
            .collect();
        let sockets = match sockets {
            Ok(sockets) => sockets,
            Err(e) => {
                tracing::warn!(error = %e, index, "cannot open a runtime's accept sockets");
                continue;
            }
        };
        let (done, end) = oneshot::channel();
        let ctx = ctx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("limmat-relay-{index}"))
            .spawn(move || {
                run_one(&ctx, sockets, accept);
                let _ = done.send(());
            });
        match thread {
            Ok(_) => ended.push(end),
            Err(e) => tracing::warn!(error = %e, index, "cannot start a runtime thread"),
        }
    }
    ended
}

/// One runtime's life: its accept loops, then every task of the relay's tracker that it runs.
fn run_one<F>(
    ctx: &Arc<RelayContext>,
    sockets: Vec<(std::net::TcpListener, bool)>,
    accept: fn(Arc<RelayContext>, TcpListener, bool) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a runtime");
            return;
        }
    };
    runtime.block_on(async {
        for (socket, tls) in sockets {
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    ctx.tasks.spawn(accept(ctx.clone(), listener, tls));
                }
                Err(e) => tracing::warn!(error = %e, "cannot register an accept socket"),
            }
        }
        // The tracker is closed once the relay stops; its tasks here are then the last ones.
        ctx.shutdown.cancelled().await;
        ctx.tasks.wait().await;
    });
}

/// A non-blocking listening socket on `addr` with `SO_REUSEPORT`, next to the relay's own.
fn twin(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    crate::socket::set_options(socket2::SockRef::from(&socket))?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(crate::socket::BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
