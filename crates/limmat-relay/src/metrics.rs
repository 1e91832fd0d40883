//! Prometheus metrics (`metrics` facade, rendered by `metrics-exporter-prometheus` on the admin
//! listener's `/metrics`). Counters and histograms are recorded where things happen; gauges of
//! current state are read from the relay's own counters at scrape time, so the hot path pays
//! only for what changes.
//!
//! Per-domain series are bounded: the busiest domains get their own label, the rest are summed
//! under `domain="other"`, so a relay with a million domains still exports a few dozen series.

use crate::snapshot::DomainSnapshot;
use crate::stats::Stats;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Domains with a series of their own.
const TOP_DOMAINS: usize = 10;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The bucket boundaries (seconds) of the relay's histograms, for a recorder installed by the
/// program that embeds the relay.
pub const HISTOGRAM_SECONDS: [f64; 13] = [
    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
];

/// Makes the relay render `handle`, a recorder another part of the process installed (the
/// gateway, in `limmat demo`), instead of installing its own. `false` if the relay's recorder
/// was already chosen.
pub fn share_recorder(handle: PrometheusHandle) -> bool {
    HANDLE.set(Some(handle)).is_ok()
}

/// Installs the process-wide recorder once (the first relay with an admin listener does).
/// `None` if another recorder was installed first, e.g. by an embedding program.
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&HISTOGRAM_SECONDS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

pub(crate) fn accepted(tls: bool) {
    let listener = if tls { "tls" } else { "plain" };
    counter!("limmat_connections_accepted_total", "listener" => listener).increment(1);
}

/// A connection closed before it got anywhere, or refused by a limit.
pub(crate) fn rejected(reason: &'static str) {
    counter!("limmat_connections_rejected_total", "reason" => reason).increment(1);
}

/// A response the relay generated, by status (`101`, `204`, `307`, `401`, `429`, `501`, `504`).
pub(crate) fn response(bytes: &[u8]) {
    let result = match bytes.get(9..12) {
        Some(b"101") => "101",
        Some(b"204") => "204",
        Some(b"307") => "307",
        Some(b"401") => "401",
        Some(b"429") => "429",
        Some(b"501") => "501",
        Some(b"504") => "504",
        _ => "other",
    };
    counter!("limmat_handshakes_total", "result" => result).increment(1);
}

/// A client was paired after waiting this long for a device.
pub(crate) fn paired(wait: Duration) {
    histogram!("limmat_pairing_wait_seconds").record(wait.as_secs_f64());
}

/// A pipe ended (`end`: `closed`, `error`, `idle` or `stopped`) after moving
/// `up` bytes from the client and `down` bytes to it.
pub(crate) fn pipe_ended(end: &'static str, up: u64, down: u64, duration: Duration) {
    counter!("limmat_pipes_total", "end" => end).increment(1);
    counter!("limmat_bytes_total", "direction" => "in").increment(up);
    counter!("limmat_bytes_total", "direction" => "out").increment(down);
    histogram!("limmat_pipe_duration_seconds").record(duration.as_secs_f64());
}

/// A device (7.4) or a path-form client (`client_redirect`, 7.5) sent to its domain's owner.
pub(crate) fn cluster_redirect(who: &'static str) {
    metrics::counter!("limmat_cluster_redirects_total", "who" => who).increment(1);
}

/// A forwarded client forwarded once more, between inconsistent views (7.5).
pub(crate) fn cluster_hop() {
    metrics::counter!("limmat_cluster_hops_total").increment(1);
}

/// Waiting devices and mux connections of a domain that moved, told to go (7.6).
pub(crate) fn cluster_rebalanced(devices: u64) {
    metrics::counter!("limmat_cluster_rebalanced_devices_total").increment(devices);
}

/// The cluster's gauge, set before a render: live members (7.2). The gossip counters
/// (`limmat_cluster_gossip_rejected_total`, `limmat_cluster_gossip_bytes_total`) are counted
/// by the transport; they are registered here so that they show at zero too.
pub(crate) fn cluster_state(members: usize) {
    gauge!("limmat_cluster_members").set(members as f64);
    counter!("limmat_cluster_gossip_rejected_total").increment(0);
}

pub(crate) fn tls_handshake(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("limmat_tls_handshakes_total", "result" => result).increment(1);
}

/// Renders every metric, after setting the gauges of current state.
pub(crate) fn render(stats: &Stats, domains: &[DomainSnapshot]) -> String {
    let Some(handle) = handle() else {
        return "# metrics recorder unavailable: another recorder was installed first\n".into();
    };
    let now = |rx: tokio::sync::watch::Receiver<usize>| *rx.borrow() as f64;
    gauge!("limmat_open_connections").set(now(stats.open_connections()));
    gauge!("limmat_waiting_devices").set(now(stats.waiting_devices()));
    gauge!("limmat_waiting_clients").set(now(stats.waiting_clients()));
    gauge!("limmat_active_pipes").set(now(stats.pipes()));
    let mux_streams: usize = domains.iter().map(|d| d.mux_streams).sum();
    gauge!("limmat_mux_streams").set(mux_streams as f64);
    gauge!("limmat_mux_connections").set(now(stats.mux_connections()));
    gauge!("limmat_domains_online").set(domains.len() as f64);
    let mut busiest: Vec<&DomainSnapshot> = domains.iter().collect();
    busiest.sort_by_key(|d| std::cmp::Reverse((d.pipes, d.waiting, d.bytes_in + d.bytes_out)));
    let (top, rest) = busiest.split_at(busiest.len().min(TOP_DOMAINS));
    for d in top {
        let label = d.domain.clone();
        gauge!("limmat_domain_pipes", "domain" => label.clone()).set(d.pipes as f64);
        gauge!("limmat_domain_waiting", "domain" => label.clone()).set(d.waiting as f64);
        gauge!("limmat_domain_mux_streams", "domain" => label).set(d.mux_streams as f64);
    }
    let other_pipes: usize = rest.iter().map(|d| d.pipes).sum();
    let other_waiting: usize = rest.iter().map(|d| d.waiting).sum();
    gauge!("limmat_domain_pipes", "domain" => "other").set(other_pipes as f64);
    gauge!("limmat_domain_waiting", "domain" => "other").set(other_waiting as f64);
    handle.render()
}
