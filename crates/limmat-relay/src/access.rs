//! The access log (issue 12): one line per client request at info, target `limmat::access`,
//! message `request`, with the method, the domain, the status of the device's answer when the
//! relay can see it, the bytes each way and the duration. Off with `access_log = false`
//! (then the same facts are logged at debug, as `pipe closed`), or by filtering the target
//! (`RUST_LOG=info,limmat::access=off`).
//!
//! A client connection is one line, however many requests it carries: the relay pipes bytes
//! and does not parse the keep-alive requests after the first, so `method` is the first
//! request's and `status` the first answer's. The status is visible when the device's answer
//! starts with `HTTP/1.x NNN`: never for pass-through TLS, whose bytes stay encrypted.
//! Clients the relay answers itself (`504`) get a line with the relay's status and no device.

use crate::context::RelayContext;
use crate::legs::ClientLeg;
use limmat_wire::reply::Reply;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// One client's line.
pub(crate) struct Line<'a> {
    pub(crate) method: Option<&'static str>,
    pub(crate) domain: &'a str,
    pub(crate) client: SocketAddr,
    /// The device leg, when there was one.
    pub(crate) device: Option<SocketAddr>,
    /// `ptth`, `mux` or the leg kind; empty when no device served the client.
    pub(crate) leg: &'static str,
    /// The device's status, or the relay's own answer.
    pub(crate) status: Option<u16>,
    /// Client to device.
    pub(crate) up: u64,
    /// Device to client.
    pub(crate) down: u64,
    pub(crate) duration: Duration,
    /// How it ended: `closed`, `error`, `idle`, `stopped`, `no device` (the relay's `504`) or
    /// `answered` (its `307`).
    pub(crate) end: &'static str,
}

/// Writes `line`: at info as `request` when the access log is on, else at debug.
pub(crate) fn log(enabled: bool, line: &Line<'_>) {
    let Line {
        method,
        domain,
        client,
        device,
        leg,
        status,
        up,
        down,
        duration,
        end,
    } = *line;
    let device = device.map(tracing::field::display);
    let leg = Some(leg).filter(|leg| !leg.is_empty());
    let duration_ms = duration.as_millis() as u64;
    if enabled {
        tracing::info!(
            target: "limmat::access",
            method, domain, %client, device, leg, status, up, down, duration_ms, end,
            "request"
        );
    } else {
        tracing::debug!(
            method, domain, %client, device, leg, status, up, down, duration_ms, end,
            "pipe closed"
        );
    }
}

/// The line of a routed client the relay answered with `504` itself: no device came.
pub(crate) fn refused(ctx: &RelayContext, client: &ClientLeg) {
    let arrived = client.deadline.checked_sub(ctx.config.client_wait);
    let waited = arrived.map_or(Duration::ZERO, |t| t.elapsed());
    let (method, domain) = (client.method(), &*client.domain);
    answered(ctx, (method, domain, client.conn.peer), 504, waited);
}

/// The line of a client the relay answered itself, with `status`, after `duration`: a `504`,
/// or the `307` of `GET /` to `root_uri`. `request` is the method, domain and client address.
pub(crate) fn answered(
    ctx: &RelayContext,
    request: (Option<&'static str>, &str, SocketAddr),
    status: u16,
    duration: Duration,
) {
    let (method, domain, client) = request;
    let line = Line {
        method,
        domain,
        client,
        device: None,
        leg: "",
        status: Some(status),
        up: 0,
        down: 0,
        duration,
        end: if status == 504 {
            "no device"
        } else {
            "answered"
        },
    };
    log(ctx.config.access_log, &line);
}

/// Records the status of the device's answer from the first bytes it sent, once; "no status"
/// stays 0.
pub(crate) fn record_status(first_bytes: &[u8], status: &AtomicU16) {
    let parsed = first_bytes.get(..12).and_then(|b| Reply::parse(b).ok());
    if let Some(reply) = parsed {
        let _ = status.compare_exchange(0, reply.status, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The status recorded by [`record_status`], if any.
pub(crate) fn status(status: &AtomicU16) -> Option<u16> {
    Some(status.load(Ordering::Relaxed)).filter(|&s| s != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_taken_from_a_status_line_only() {
        let s = AtomicU16::new(0);
        record_status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00", &s);
        assert_eq!(status(&s), None);
        record_status(b"HTTP/1", &s);
        assert_eq!(status(&s), None);
        record_status(b"HTTP/1.1 404 Not Found\r\n", &s);
        record_status(b"HTTP/1.1 200 OK\r\n", &s);
        assert_eq!(status(&s), Some(404));
    }
}
