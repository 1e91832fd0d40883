//! Seeds (spec 7.2): every `seed_interval` each seed is resolved again and gossiped with, so a
//! Kubernetes headless Service name that lists every pod is one valid seed, new pods are found
//! within one interval, and a partition heals by itself. chitchat would re-resolve names only
//! once a minute, so the names are resolved here. A name that does not resolve is logged
//! (once, until it resolves again) and retried at the next interval.

use super::shared::{SeedStatus, Shared};
use chitchat::ChitchatHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn run(
    seeds: Vec<String>,
    interval: Duration,
    own: SocketAddr,
    handle: Arc<ChitchatHandle>,
    shared: Arc<Shared>,
) {
    let mut status: Vec<SeedStatus> = seeds
        .iter()
        .map(|s| SeedStatus {
            seed: s.clone(),
            ..SeedStatus::default()
        })
        .collect();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for s in &mut status {
            s.lookups += 1;
            let lookup = tokio::time::timeout(
                interval.min(Duration::from_secs(5)),
                tokio::net::lookup_host(s.seed.clone()),
            )
            .await;
            match lookup {
                Ok(Ok(addrs)) => {
                    if s.error.take().is_some() {
                        tracing::info!(seed = %s.seed, "cluster: seed resolves again");
                    }
                    s.addrs = addrs.collect();
                }
                Ok(Err(e)) => failed(s, e.to_string(), interval),
                Err(_) => failed(s, "lookup timed out".into(), interval),
            }
            for addr in s.addrs.iter().filter(|a| **a != own) {
                let _ = handle.gossip(*addr);
            }
        }
        if let Ok(mut shared) = shared.seeds.lock() {
            shared.clone_from(&status);
        }
    }
}

fn failed(s: &mut SeedStatus, error: String, interval: Duration) {
    s.failures += 1;
    if s.error.is_none() {
        tracing::warn!(seed = %s.seed, %error, retry_in = ?interval, "cluster: seed does not resolve; retrying");
    } else {
        tracing::debug!(seed = %s.seed, %error, "cluster: seed still does not resolve");
    }
    s.error = Some(error);
}
