//! The gateway's Prometheus metrics (issue: operations), recorded through the `metrics` facade
//! where things happen and rendered on the local listener's `GET /metrics` (`gateway-api.md`
//! §1.3: never through the relay, where anyone could read them). The names are collected
//! here so that the exported set is visible in one place:
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `limmat_gateway_advertisements_total` | counter | advertisement reports from the backend's scan |
//! | `limmat_gateway_beacons_present` | gauge | beacons present now (committed) |
//! | `limmat_gateway_events_accepted_total{type}` | counter | events committed to the log (§5.3) |
//! | `limmat_gateway_events_rejected_total` | counter | events lost to a failed commit, never accepted |
//! | `limmat_gateway_webhook_deliveries_total{outcome}` | counter | attempts: `delivered`, `failed`, `gone` |
//! | `limmat_gateway_outbox_depth` | gauge | events queued for delivery, all subscriptions |
//! | `limmat_gateway_delivery_latency_seconds` | histogram | event accepted → its 2xx |
//! | `limmat_gateway_dead_letters_total{reason}` | counter | messages moved to dead letters |
//! | `limmat_gateway_dead_letters_purged_total` | counter | dead letters dropped by retention |
//! | `limmat_gateway_coalesced_total` | counter | superseded `beacon.updated` dropped (§5.6) |
//!
//! A process that embeds a relay too (`limmat demo`) installs one recorder for both and hands
//! its handle in; a lone gateway installs its own.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The bucket boundaries (seconds) of the gateway's histograms, for a recorder installed by
/// the program that embeds the gateway.
pub const HISTOGRAM_SECONDS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
];

/// The prefix of every gateway metric.
pub const PREFIX: &str = "limmat_gateway_";

/// The process-wide recorder, installed on first use; `None` if another recorder was installed
/// by someone else (then pass its handle in `server::Options::prometheus` instead).
pub fn install() -> Option<PrometheusHandle> {
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
        .clone()
}

pub(crate) fn advertisement() {
    metrics::counter!("limmat_gateway_advertisements_total").increment(1);
}

pub(crate) fn beacons_present(n: usize) {
    metrics::gauge!("limmat_gateway_beacons_present").set(n as f64);
}

pub(crate) fn event_accepted(event_type: &'static str) {
    metrics::counter!("limmat_gateway_events_accepted_total", "type" => event_type).increment(1);
}

pub(crate) fn events_rejected(n: u64) {
    metrics::counter!("limmat_gateway_events_rejected_total").increment(n);
}

/// One delivery attempt's outcome: `delivered`, `failed` or `gone`.
pub(crate) fn delivery(outcome: &'static str) {
    metrics::counter!("limmat_gateway_webhook_deliveries_total", "outcome" => outcome).increment(1);
}

pub(crate) fn outbox_depth(n: usize) {
    metrics::gauge!("limmat_gateway_outbox_depth").set(n as f64);
}

pub(crate) fn delivery_latency(latency: Duration) {
    metrics::histogram!("limmat_gateway_delivery_latency_seconds").record(latency.as_secs_f64());
}

pub(crate) fn dead_letter(reason: &'static str) {
    metrics::counter!("limmat_gateway_dead_letters_total", "reason" => reason).increment(1);
}

pub(crate) fn dead_letters_purged(n: u64) {
    metrics::counter!("limmat_gateway_dead_letters_purged_total").increment(n);
}

pub(crate) fn coalesced(n: u64) {
    metrics::counter!("limmat_gateway_coalesced_total").increment(n);
}
