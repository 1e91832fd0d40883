//! The internal listener (spec 7.1): peers and probes reach a node here, never on a public
//! listener (2.1.5). Every request must carry the cluster secret (`401` without it, compared
//! in constant time); then `GET /limmat/cluster/1/{node,health,members}` answer JSON, and
//! `CONNECT /<domain>` (7.5) is answered `200` and its stream handed to the relay, which
//! treats it exactly like a client of that kind on its own listener.
//!
//! Heads are read under the same bounds as on public listeners (16 KiB, 10 s), so a slow or
//! flooding peer holds nothing for long.

use super::membership::Membership;
use crate::head::read_head;
use crate::stream::{Prefixed, Stream, Tcp, Tls};
use limmat_wire::cluster::{self as wire, Bearer, Forward, Internal};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where forwarded clients go: the relay's client handling.
pub trait ForwardSink: Send + Sync + 'static {
    /// A forwarded client, already answered `200`; `early` holds the stream's first bytes
    /// (those that arrived with the head).
    fn forwarded(&self, forward: Forward, stream: Inbound, early: Vec<u8>);
}

/// A forwarded client's stream as the internal listener accepted it: plain TCP, or TLS with
/// `internal_tls`.
pub struct Inbound(pub(crate) Stream);

impl Inbound {
    /// The plain TCP socket; `None` over TLS.
    pub fn into_tcp(self) -> Option<TcpStream> {
        match self.0 {
            Tcp(tcp) => Some(tcp),
            Tls(_) => None,
        }
    }
}

/// What the endpoints answer from.
pub struct Context {
    pub secret: Arc<[u8]>,
    pub live: watch::Receiver<Arc<super::LiveSet>>,
    pub shared: Arc<super::shared::Shared>,
}

impl Context {
    pub fn of(membership: &Membership, secret: &[u8]) -> Self {
        Self {
            secret: secret.into(),
            live: membership.live(),
            shared: membership.shared().clone(),
        }
    }
}

/// Accepts until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    context: Arc<Context>,
    sink: Arc<dyn ForwardSink>,
    shutdown: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let (context, sink, shutdown) = (context.clone(), sink.clone(), shutdown.clone());
                let tls = tls.clone();
                tokio::spawn(
                    async move { connection(stream, tls, &context, &*sink, &shutdown).await },
                );
            }
            // Out of descriptors and the like: back off instead of spinning.
            Err(e) => {
                tracing::warn!(error = %e, "cluster: internal accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    context: &Context,
    sink: &dyn ForwardSink,
    shutdown: &CancellationToken,
) {
    crate::socket::configure(&stream);
    let mut stream: Stream = match tls {
        None => Tcp(stream),
        Some(acceptor) => {
            let accepted = tokio::time::timeout(
                HEAD_TIMEOUT,
                acceptor.accept(Prefixed::new(Vec::new(), stream)),
            )
            .await;
            match accepted {
                Ok(Ok(tls)) => Tls(Box::new(tls)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cluster: internal TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    let mut buf = Vec::new();
    let Ok(len) = read_head(
        &mut stream,
        &mut buf,
        MAX_HEAD,
        Instant::now() + HEAD_TIMEOUT,
        shutdown,
    )
    .await
    else {
        return;
    };
    let parsed = wire::parse_internal(&buf[..len]);
    let authorized = match parsed.bearer {
        Bearer::Token(t) => bool::from(t.ct_eq(&context.secret)),
        Bearer::Missing | Bearer::Several => false,
    };
    if !authorized {
        metrics::counter!("limmat_cluster_internal_unauthorized_total").increment(1);
        crate::linger::refuse_and_close(stream, wire::UNAUTHORIZED).await;
        return;
    }
    let response = match parsed.request {
        Err(e) => e.response(),
        Ok(Internal::Forward(forward)) => {
            if stream.write_all(wire::FORWARD_ACCEPTED).await.is_err()
                || stream.flush().await.is_err()
            {
                return;
            }
            metrics::counter!("limmat_cluster_forwards_received_total").increment(1);
            sink.forwarded(forward, Inbound(stream), buf.split_off(len));
            return;
        }
        Ok(Internal::Node) => {
            let live = context.live.borrow().clone();
            wire::json_response(true, node_json(&live).to_string().as_bytes())
        }
        Ok(Internal::Health) => {
            let live = context.live.borrow().clone();
            // 503 from the moment draining is published, before the handover.
            let serving = live.counts_self() && !live.local.draining;
            let body = json!({ "status": if serving { "serving" } else { "draining" } });
            wire::json_response(serving, body.to_string().as_bytes())
        }
        Ok(Internal::Members) => {
            wire::json_response(true, members_json(context).to_string().as_bytes())
        }
    };
    crate::linger::refuse_and_close(stream, &response).await;
}

fn node_json(live: &super::LiveSet) -> serde_json::Value {
    let m = &live.local;
    json!({
        "node_id": m.node_id,
        "public_host": m.public_host,
        "public_http_port": m.public_http_port,
        "public_https_port": m.public_https_port,
        "draining": live.local.draining || !live.counts_self(),
    })
}

/// The members view: this node's live set and every incarnation it knows of.
pub fn members_json(context: &Context) -> serde_json::Value {
    /// A copy of what `lock` holds; empty if a holder panicked.
    fn copy<T: Clone + Default>(lock: &std::sync::Mutex<T>) -> T {
        lock.lock().map(|held| held.clone()).unwrap_or_default()
    }
    let live = context.live.borrow().clone();
    let view = copy(&context.shared.view);
    let seeds = copy(&context.shared.seeds);
    let probes = copy(&context.shared.probes);
    json!({
        "node_id": live.local.node_id,
        "live": live.members().iter().map(|m| &*m.node_id).collect::<Vec<_>>(),
        "members": view,
        "seeds": seeds,
        "unreachable": probes.iter().filter(|(_, ok)| !**ok).map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        "gossip_rejected": context.shared.gossip_rejected.load(std::sync::atomic::Ordering::Relaxed),
    })
}
