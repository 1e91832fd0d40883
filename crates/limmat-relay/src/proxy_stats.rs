//! The forward proxy's per-domain counters (spec 6.5), which the admin API shows and which
//! outlive a domain's connections; and the guard that counts one open tunnel or request
//! against `proxy_max_per_domain`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Per-domain proxy counters, for the admin API (they outlive the domain's connections).
#[derive(Default)]
pub(crate) struct ProxyStats {
    domains: Mutex<HashMap<Arc<str>, ProxySnapshot>>,
}

/// One domain's proxy counters as the admin API shows them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct ProxySnapshot {
    /// Tunnels and requests that reached their origin.
    pub(crate) connections: u64,
    /// Those open now.
    pub(crate) active: usize,
    /// Refused by the egress policy.
    pub(crate) denied: u64,
    /// Bad targets, limits, DNS and connection failures.
    pub(crate) errors: u64,
    /// Device to origin.
    pub(crate) bytes_out: u64,
    /// Origin to device.
    pub(crate) bytes_in: u64,
}

impl ProxyStats {
    pub(crate) fn update(&self, domain: &str, f: impl FnOnce(&mut ProxySnapshot)) {
        let mut map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(domain) {
            Some(entry) => f(entry),
            None => f(map.entry(domain.into()).or_default()),
        }
    }

    /// Takes a place under `proxy_max_per_domain` (zero: no limit).
    pub(crate) fn enter(self: &Arc<Self>, domain: &str, max: usize) -> Option<Active> {
        let mut map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(domain.into()).or_default();
        if max > 0 && entry.active >= max {
            return None;
        }
        entry.active += 1;
        metrics::gauge!("limmat_proxy_active", "domain" => domain.to_owned()).increment(1.0);
        Some(Active {
            stats: self.clone(),
            domain: domain.to_owned(),
        })
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, ProxySnapshot)> {
        let map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = map
            .iter()
            .map(|(d, s)| (d.to_string(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(crate) fn snapshot_of(&self, domain: &str) -> Option<ProxySnapshot> {
        let map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(domain).cloned()
    }
}

/// One open tunnel or request of a domain, until dropped.
pub(crate) struct Active {
    stats: Arc<ProxyStats>,
    domain: String,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.stats
            .update(&self.domain, |s| s.active = s.active.saturating_sub(1));
        metrics::gauge!("limmat_proxy_active", "domain" => self.domain.clone()).decrement(1.0);
    }
}
