//! Membership changes and draining (spec 7.6): when the live set changes, the device
//! connections of domains this node no longer owns are told to go, paced evenly over
//! `rebalance_spread` (at most what `client_wait` allows, see [`spread`]) so that a join does
//! not send every moved device to its new owner in the same instant. A waiting PTTH device gets a `204` (its re-POST then gets the `307` of 7.4)
//! and a mux connection gets GOAWAY; pipes and open streams are never touched.
//!
//! Draining (SIGTERM) publishes `draining` by gossip; once every peer has seen it (or after
//! eight gossip rounds) the node owns nothing in its own view either, so the same pacing hands
//! every device over, and [`drain`] returns once none is left here or `drain_timeout` is over. It runs beside the accept loops, on the server's floor.

use crate::context::RelayContext;
use crate::metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Follows the live set until shutdown and rebalances on every change.
pub(crate) async fn run(ctx: Arc<RelayContext>) {
    let mut live = ctx.cluster.live();
    live.borrow_and_update();
    // One pacing at a time: a newer change replaces what is left of an older one, since it
    // recomputes every domain anyway.
    let mut pacing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            changed = live.changed() => if changed.is_err() { break },
            () = ctx.shutdown.cancelled() => break,
        }
        live.borrow_and_update();
        if let Some(old) = pacing.take() {
            old.abort();
        }
        let moved: Vec<Arc<str>> = ctx
            .registry
            .with_devices()
            .into_iter()
            .filter(|d| ctx.cluster.elsewhere(d).is_some())
            .collect();
        if moved.is_empty() {
            continue;
        }
        tracing::info!(
            domains = moved.len(),
            spread = ?spread(&ctx),
            "cluster: rebalancing the domains that moved"
        );
        // A drain's handover ends `rebalance_spread` after the drain started, however long
        // its peers took to hear of it: clients already wait for these devices at the new
        // owners, within their `client_wait`.
        let start = match ctx.drain_deadline.get() {
            Some(deadline) => deadline
                .checked_sub(ctx.config.cluster.drain_timeout)
                .unwrap_or_else(Instant::now),
            None => Instant::now(),
        };
        pacing = Some(tokio::spawn(pace(ctx.clone(), moved, start)));
    }
    if let Some(old) = pacing {
        old.abort();
    }
}

/// Moves `domains` away one after the other, evenly over `rebalance_spread` from `start`
/// (steps already past go at once).
async fn pace(ctx: Arc<RelayContext>, domains: Vec<Arc<str>>, start: Instant) {
    let spread = spread(&ctx);
    let step = spread / u32::try_from(domains.len()).unwrap_or(u32::MAX).max(1);
    for (i, domain) in domains.iter().enumerate() {
        let at = start + step * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = ctx.shutdown.cancelled() => return,
        }
        // Still elsewhere? A later change may have given it back.
        if ctx.cluster.elsewhere(domain).is_some() {
            let devices = ctx.registry.move_away(domain);
            metrics::cluster_rebalanced(devices as u64);
            tracing::debug!(%domain, devices, "cluster: domain moved, its devices go to the owner");
        }
    }
}

/// The pacing's length: `rebalance_spread`, but short enough that the handover keeps the
/// promise of 7.6 that clients at a new owner are served within their `client_wait`. A new
/// owner counts itself `join_delay` before its peers count it and start to hand its domains
/// over, and a moved device takes a moment to connect to it, so the last device must leave
/// here within `client_wait - join_delay - RECONNECT`. With the defaults: 3 s, not 5 s.
fn spread(ctx: &RelayContext) -> Duration {
    let c = &ctx.config;
    let budget = c
        .client_wait
        .saturating_sub(c.cluster.join_delay.saturating_add(RECONNECT));
    c.cluster.rebalance_spread.min(budget)
}

/// What a moved device needs to reach its new owner: the `204` or GOAWAY, a redirect, a new
/// connection and its handshake (TLS included), on a busy machine.
const RECONNECT: Duration = Duration::from_secs(1);

/// Publishes draining and waits until every device has been handed over, at most
/// `cluster.drain_timeout`; the pipes left afterwards get what remains of it. Standalone:
/// returns at once (the shutdown closes waiting devices).
pub(crate) async fn drain(ctx: &RelayContext) {
    if !ctx.cluster.is_clustered() {
        return;
    }
    // A second call waits with the first one's deadline.
    let deadline = *ctx
        .drain_deadline
        .get_or_init(|| Instant::now() + ctx.config.cluster.drain_timeout);
    tracing::info!(timeout = ?ctx.config.cluster.drain_timeout, "cluster: draining, handing devices over");
    let heard = (ctx.config.cluster.gossip_interval * PEER_WAIT_ROUNDS)
        .min(deadline.saturating_duration_since(Instant::now()));
    ctx.cluster.drain(heard).await;
    // The registry has no watch of its own; a short poll of a cheap count is enough here.
    loop {
        let left = ctx.registry.with_devices().len();
        if left == 0 {
            tracing::info!("cluster: every device handed over");
            break;
        }
        if Instant::now() >= deadline {
            tracing::info!(domains = left, "cluster: drain timeout with devices left");
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = ctx.shutdown.cancelled() => return,
        }
    }
    // Peers drop a draining node from their live sets within a gossip round or two; until
    // then they may still forward clients here, which must find this node serving (it
    // forwards them on) rather than its listeners closed.
    let settle = (ctx.config.cluster.gossip_interval * PEER_ROUNDS)
        .min(deadline.saturating_duration_since(Instant::now()));
    tokio::select! {
        () = tokio::time::sleep(settle) => {}
        () = ctx.shutdown.cancelled() => {}
    }
}

/// Gossip rounds a draining node waits at most for its peers to see it draining before it
/// hands over anyway (2 s with the defaults, the failure detection budget of 7.2).
const PEER_WAIT_ROUNDS: u32 = 8;

/// Gossip rounds a draining node keeps serving after its handover, so that every peer has
/// seen `draining` before the node stops accepting.
const PEER_ROUNDS: u32 = 4;
