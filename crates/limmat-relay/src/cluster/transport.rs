//! Gossip datagrams with an HMAC-SHA256 tag (spec 7.2): a chitchat `Transport` over UDP that
//! appends a tag keyed with the cluster secret to every datagram it sends and drops, and
//! counts, every datagram whose tag does not verify, before chitchat parses a byte of it.
//!
//! Without it anyone who can send a UDP packet to the gossip port could join the cluster,
//! publish a document, and take domains. The tag is checked in constant time (`hmac`'s
//! `verify_slice`). Replayed datagrams carry old heartbeats and versions, which chitchat
//! ignores.

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type HmacSha256 = Hmac<Sha256>;

/// Tag length.
const TAG: usize = 32;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;
/// Separates this use of the secret from its use as the internal listener's bearer token.
const CONTEXT: &[u8] = b"limmat-gossip/1\0";

/// Opens HMAC-tagged UDP sockets for chitchat.
pub struct HmacTransport {
    key: HmacSha256,
    rejected: Arc<AtomicU64>,
}

impl HmacTransport {
    /// `rejected` counts the datagrams dropped for a bad tag.
    pub fn new(secret: &[u8], rejected: Arc<AtomicU64>) -> Self {
        Self {
            // HMAC accepts keys of any length.
            key: HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!()),
            rejected,
        }
    }
}

/// The tag of `payload` under `key`.
pub fn tag(key: &HmacSha256, payload: &[u8]) -> [u8; TAG] {
    let mut mac = key.clone();
    mac.update(CONTEXT);
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

#[async_trait]
impl Transport for HmacTransport {
    async fn open(&self, bind: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind gossip socket {bind}/udp: {e}"))?;
        Ok(Box::new(HmacSocket {
            socket,
            key: self.key.clone(),
            rejected: self.rejected.clone(),
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            recv_buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct HmacSocket {
    socket: tokio::net::UdpSocket,
    key: HmacSha256,
    rejected: Arc<AtomicU64>,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
}

/// ICMP errors of earlier sends surface on a UDP socket's next read; a dead peer must not stop
/// gossip.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | OutOfMemory | HostUnreachable | NetworkUnreachable
    )
}

#[async_trait]
impl Socket for HmacSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        self.send_buf.clear();
        message.serialize(&mut self.send_buf);
        let tag = tag(&self.key, &self.send_buf);
        self.send_buf.extend_from_slice(&tag);
        if self.send_buf.len() > MAX_DATAGRAM {
            tracing::warn!(bytes = self.send_buf.len(), %to, "gossip datagram too large, dropped");
            return Ok(());
        }
        match self.socket.send_to(&self.send_buf, to).await {
            Ok(sent) => {
                metrics::counter!("limmat_cluster_gossip_bytes_total", "direction" => "sent")
                    .increment(sent as u64);
                Ok(())
            }
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(r) => r,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            metrics::counter!("limmat_cluster_gossip_bytes_total", "direction" => "received")
                .increment(len as u64);
            let datagram = &self.recv_buf[..len];
            let verified = len >= TAG && {
                let (payload, tag) = datagram.split_at(len - TAG);
                let mut mac = self.key.clone();
                mac.update(CONTEXT);
                mac.update(payload);
                mac.verify_slice(tag).is_ok()
            };
            if !verified {
                let n = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!("limmat_cluster_gossip_rejected_total").increment(1);
                // Logarithmic: a flood of forged datagrams cannot flood the log.
                if n.is_power_of_two() {
                    tracing::warn!(%from, rejected = n, "gossip datagram without a valid cluster tag dropped");
                }
                continue;
            }
            let mut payload = &datagram[..len - TAG];
            match ChitchatMessage::deserialize(&mut payload) {
                Ok(message) => return Ok((from, message)),
                Err(e) => {
                    tracing::warn!(%from, error = %e, "malformed gossip datagram with a valid tag")
                }
            }
        }
    }
}
