//! Live counters of the relay: open connections, waiting devices, waiting clients and pipes.
//!
//! Gauges are `watch` channels so that tests (and later the admin API) can wait for a value
//! instead of polling, e.g. "every connection is closed again".

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
        self.gauge(kind).0.send_modify(|n| *n += 1);
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
            .0
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}
