//! Live counters of the relay: open connections, waiting devices, waiting clients and pipes.
//!
//! Gauges are `watch` channels so that tests (and later the admin API) can wait for a value
//! instead of polling, e.g. "every connection is closed again". A change wakes receivers only
//! while there are any: a `watch` send notifies eight `Notify`s, each behind its own lock,
//! and a mux stream changes four gauges (about 1,900 instructions per stream, callgrind),
//! while a relay in service has no receiver at all (the metrics and the admin API read the
//! current value).

use std::sync::Arc;
use tokio::sync::watch;

/// Shared by every task of a relay.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    inner: Arc<Gauges>,
}

#[derive(Debug, Default)]
struct Gauges {
    open: Gauge,
    waiting_devices: Gauge,
    waiting_clients: Gauge,
    pipes: Gauge,
    mux: Gauge,
}

#[derive(Debug)]
struct Gauge(watch::Sender<usize>);

impl Default for Gauge {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Gauge {
    /// Changes the count; receivers are woken only if there are any. A receiver subscribed
    /// meanwhile still sees the new value: it reads the value under the channel's lock, which
    /// the change holds.
    fn change(&self, change: impl FnOnce(&mut usize)) {
        self.0.send_if_modified(|n| {
            change(n);
            self.0.receiver_count() > 0
        });
    }
}

/// Which gauge a [`GaugeGuard`] holds up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Open,
    WaitingDevice,
    WaitingClient,
    Pipe,
    Mux,
}

impl Stats {
    fn gauge(&self, kind: Kind) -> &Gauge {
        match kind {
            Kind::Open => &self.inner.open,
            Kind::WaitingDevice => &self.inner.waiting_devices,
            Kind::WaitingClient => &self.inner.waiting_clients,
            Kind::Pipe => &self.inner.pipes,
            Kind::Mux => &self.inner.mux,
        }
    }

    /// Counts one more until the guard drops.
    pub(crate) fn hold(&self, kind: Kind) -> GaugeGuard {
        self.gauge(kind).change(|n| *n += 1);
        GaugeGuard {
            stats: self.clone(),
            kind,
        }
    }

    /// Sockets the relay holds open, of every kind.
    pub fn open_connections(&self) -> watch::Receiver<usize> {
        self.inner.open.0.subscribe()
    }

    /// Device connections waiting for a client.
    pub fn waiting_devices(&self) -> watch::Receiver<usize> {
        self.inner.waiting_devices.0.subscribe()
    }

    /// Clients waiting for a device.
    pub fn waiting_clients(&self) -> watch::Receiver<usize> {
        self.inner.waiting_clients.0.subscribe()
    }

    /// limmat-mux/1 device connections ready for streams (draining ones excluded).
    pub fn mux_connections(&self) -> watch::Receiver<usize> {
        self.inner.mux.0.subscribe()
    }

    /// Paired connections forwarding bytes (mux streams included).
    pub fn pipes(&self) -> watch::Receiver<usize> {
        self.inner.pipes.0.subscribe()
    }
}

/// Decrements its gauge when dropped, so no exit path can forget to.
#[derive(Debug)]
pub(crate) struct GaugeGuard {
    stats: Stats,
    kind: Kind,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.stats
            .gauge(self.kind)
            .change(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes made with no receiver still count; a receiver sees them, and is woken by the
    /// changes made while it waits.
    #[tokio::test]
    async fn gauges_count_without_receivers_and_wake_the_ones_there_are() {
        let stats = Stats::default();
        let first = stats.hold(Kind::Pipe);
        let second = stats.hold(Kind::Pipe);
        drop(first);
        let mut pipes = stats.pipes();
        assert_eq!(*pipes.borrow(), 1);
        let waiting = tokio::spawn(async move { *pipes.wait_for(|&n| n == 0).await.unwrap() });
        // The receiver is waiting by now (one task at a time in this runtime).
        tokio::task::yield_now().await;
        drop(second);
        let woken = tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await;
        assert_eq!(woken.expect("the waiting receiver is woken").unwrap(), 0);
        assert_eq!(*stats.open_connections().borrow(), 0);
    }
}
