//! What the admin API and the metrics show about a domain: its device connections and its
//! pipes, as plain data that the registry fills in and serialises nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

/// Bytes a live pipe has moved, updated by the pipe as it reads.
#[derive(Debug, Default)]
pub(crate) struct PipeCounters {
    pub(crate) up: AtomicU64,
    pub(crate) down: AtomicU64,
    /// The status of the device's first answer, 0 until seen (for the access log).
    pub(crate) status: std::sync::atomic::AtomicU16,
}

/// A pipe as the admin API shows it.
#[derive(Debug, Clone)]
pub(crate) struct PipeInfo {
    pub(crate) client: SocketAddr,
    pub(crate) device: SocketAddr,
    pub(crate) leg: &'static str,
    pub(crate) since: SystemTime,
    pub(crate) counters: Arc<PipeCounters>,
}

/// One domain as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DomainSnapshot {
    pub(crate) domain: String,
    /// Device connections waiting or renewing (what `max_per_domain` counts).
    pub(crate) waiting: usize,
    pub(crate) waiting_clients: usize,
    pub(crate) pipes: usize,
    /// Open limmat-mux/1 streams over all of the domain's mux connections.
    pub(crate) mux_streams: usize,
    /// Client to device, ended and live pipes.
    pub(crate) bytes_in: u64,
    /// Device to client.
    pub(crate) bytes_out: u64,
    /// Unix seconds.
    pub(crate) online_since: u64,
    pub(crate) devices: Vec<DeviceSnapshot>,
    pub(crate) pipe_list: Vec<PipeSnapshot>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DeviceSnapshot {
    pub(crate) id: u64,
    pub(crate) addr: String,
    pub(crate) transport: &'static str,
    /// `ptth` (a waiting connection) or `mux` (a limmat-mux/1 connection).
    pub(crate) protocol: &'static str,
    /// Open streams on a mux connection.
    pub(crate) streams: usize,
    pub(crate) pass_through: bool,
    pub(crate) since: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct PipeSnapshot {
    pub(crate) id: u64,
    pub(crate) client: String,
    pub(crate) device: String,
    pub(crate) leg: &'static str,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) since: u64,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
