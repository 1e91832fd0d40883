//! The forwarding side of 7.5: connect to the owner's internal listener, send the head of
//! [`limmat_wire::cluster::Forward`] with the client's first bytes in the same write, and read
//! the owner's `200`, all within 2 s. Past that the caller answers the client `504` itself, and
//! the owner is probed at once so that the members view shows a member whose gossip is alive
//! but whose internal listener is not.

use super::shared::Shared;
use super::tls::{self, InternalTls, Outbound};
use limmat_wire::HeadScanner;
use limmat_wire::cluster::{self as wire, ForwardReply};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connecting and the owner's answer must both be done within this (7.5).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// The owner's answer is a few bytes; anything longer is garbage.
const MAX_REPLY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the owner did not answer within 2 s")]
    Timeout,
    #[error("cannot reach the owner: {0}")]
    Io(#[from] std::io::Error),
    #[error("the owner refused the forward with {0}")]
    Refused(u16),
    #[error("the owner answered something that is not HTTP")]
    Garbage,
    #[error("the owner closed the connection")]
    Closed,
}

/// Opens the internal hop. On success the stream carries the client's stream and `Vec` holds
/// bytes the owner sent after its `200` (the device's first bytes, if any).
pub async fn open(
    internal: SocketAddr,
    tls: Option<&InternalTls>,
    head: &[u8],
    early: &[u8],
) -> Result<(Outbound, Vec<u8>), ForwardError> {
    let result = tokio::time::timeout(FORWARD_TIMEOUT, async {
        let mut stream = tls::connect(internal, tls).await?;
        let mut out = Vec::with_capacity(head.len() + early.len());
        out.extend_from_slice(head);
        out.extend_from_slice(early);
        stream.write_all(&out).await?;
        let mut buf = Vec::with_capacity(64);
        let mut scanner = HeadScanner::new();
        let len = loop {
            if buf.len() >= MAX_REPLY {
                return Err(ForwardError::Garbage);
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ForwardError::Closed);
            }
            if let Some(len) = scanner.scan(&buf) {
                break len;
            }
        };
        match wire::forward_reply(&buf[..len]) {
            ForwardReply::Accepted => Ok((stream, buf.split_off(len))),
            ForwardReply::Refused(status) => Err(ForwardError::Refused(status)),
            ForwardReply::Garbage => Err(ForwardError::Garbage),
        }
    })
    .await;
    let outcome = result.unwrap_or(Err(ForwardError::Timeout));
    let label = match &outcome {
        Ok(_) => "ok",
        Err(ForwardError::Timeout) => "timeout",
        Err(ForwardError::Refused(_)) => "refused",
        Err(_) => "error",
    };
    metrics::counter!("limmat_cluster_forwards_total", "result" => label).increment(1);
    outcome
}

/// Asks a member's internal listener for its health, within 2 s.
pub async fn probe(internal: SocketAddr, tls: Option<&InternalTls>, secret: &[u8]) -> bool {
    matches!(get(internal, tls, secret, "health", MAX_REPLY).await, Some(b) if b.starts_with(b"HTTP/1.1 200 "))
}

/// The node ids a member counts as live (`GET /limmat/cluster/1/members`), within 2 s;
/// `None` when it cannot be asked or answers something else.
pub async fn live_of(
    internal: SocketAddr,
    tls: Option<&InternalTls>,
    secret: &[u8],
) -> Option<Vec<String>> {
    let answer = get(internal, tls, secret, "members", MAX_MEMBERS).await?;
    let text = std::str::from_utf8(&answer).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Members {
        live: Vec<String>,
    }
    serde_json::from_str::<Members>(body).ok().map(|m| m.live)
}

/// The members view of a large cluster is bigger than a forward's answer.
const MAX_MEMBERS: usize = 1 << 20;

/// `GET /limmat/cluster/1/<what>` with the secret; the whole answer (the listener closes
/// after it), at most `limit` bytes, within 2 s.
async fn get(
    internal: SocketAddr,
    tls: Option<&InternalTls>,
    secret: &[u8],
    what: &str,
    limit: usize,
) -> Option<Vec<u8>> {
    let request = [
        b"GET /limmat/cluster/1/".as_slice(),
        what.as_bytes(),
        b" HTTP/1.1\r\nAuthorization: Bearer ",
        secret,
        b"\r\n\r\n",
    ]
    .concat();
    let answer = tokio::time::timeout(FORWARD_TIMEOUT, async {
        let mut s = tls::connect(internal, tls).await?;
        s.write_all(&request).await?;
        let mut buf = Vec::new();
        // A TLS peer may close without close_notify; what arrived is the answer.
        let _ = (&mut s).take(limit as u64).read_to_end(&mut buf).await;
        Ok::<_, std::io::Error>(buf)
    })
    .await;
    answer.ok()?.ok()
}

/// After a failed forward: probe the member and record the result in the members view.
pub fn probe_after_failure(
    shared: Arc<Shared>,
    node_id: Arc<str>,
    internal: SocketAddr,
    tls: Option<InternalTls>,
    secret: Arc<[u8]>,
) {
    tokio::spawn(async move {
        let ok = probe(internal, tls.as_ref(), &secret).await;
        if !ok {
            tracing::warn!(%node_id, %internal, "cluster: member's internal listener is unreachable");
        }
        if let Ok(mut p) = shared.probes.lock() {
            let before = p.insert(node_id.clone(), ok);
            if ok && before == Some(false) {
                tracing::info!(%node_id, "cluster: member's internal listener reachable again");
            }
        }
    });
}
