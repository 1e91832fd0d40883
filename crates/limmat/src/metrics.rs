//! The process's one Prometheus recorder. The binary installs it, with each library's
//! histogram buckets, before a relay or gateway starts, and hands it to both: the relay renders
//! it on its admin `/metrics` (through `limmat_relay::share_recorder`), the gateway on its
//! local `/metrics` (`Options::prometheus`). So `limmat demo`, which runs both, exports both
//! sets of series from one registry. A relay without an admin listener installs nothing: its
//! metrics calls then cost nothing.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The recorder, installed on the first call; `None` if it could not be (another recorder
/// is installed), in which case `/metrics` says so.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let gateway = Matcher::Prefix(limmat_gateway::metrics::PREFIX.into());
            let recorder = PrometheusBuilder::new()
                .set_buckets(&limmat_relay::HISTOGRAM_SECONDS)
                .ok()?
                .set_buckets_for_metric(gateway, &limmat_gateway::metrics::HISTOGRAM_SECONDS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            limmat_relay::share_recorder(handle.clone());
            Some(handle)
        })
        .clone()
}
