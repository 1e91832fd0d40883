//! A client whose domain another cluster node owns (spec 7.5): forwarded one internal hop to
//! the owner, redirected (`client_redirect`, path-form clients only), or served here when the
//! hop limit is reached, so that inconsistent views can never make a loop.
//!
//! The forward carries every byte read from the client so far (its head, decrypted for a
//! terminated TLS client, or the raw ClientHello of an SNI-routed one); then the client and
//! the owner's internal connection are piped like a client and a device, so the owner sees
//! the bytes exactly as if the client had connected to it. The pairing calls this before it
//! looks for a device; it sits on the pipe's floor.

use crate::cluster::Member;
use crate::context::RelayContext;
use crate::legs::{ClientKind, ClientLeg};
use crate::linger::respond_and_close;
use crate::metrics;
use crate::pipe::{self, DeviceEnd};
use limmat_wire::cluster::{Forward, ForwardLeg};
use limmat_wire::mux::Route;
use limmat_wire::{RequestHead, response};
use tokio::io::AsyncWriteExt;

/// What became of a client at a non-owner.
pub(crate) enum Hop {
    /// Forwarded and piped to its end, or redirected.
    Done,
    /// Served here: the hop limit is reached (7.5).
    Local(ClientLeg),
    /// The owner could not be reached within 2 s: the client gets `504` here (it is probed).
    Failed(ClientLeg),
}

/// Forwards `client` to `owner`, redirects it, or gives it back to be served here.
pub(crate) async fn onward(ctx: &RelayContext, mut client: ClientLeg, owner: Member) -> Hop {
    let settings = &ctx.config.cluster;
    if client.hops >= settings.max_hops {
        tracing::info!(domain = %client.domain, hops = client.hops, owner = %owner.node_id, "cluster: hop limit reached, serving the client here");
        return Hop::Local(client);
    }
    if settings.client_redirect
        && client.hops == 0
        && client.route == Route::Path
        && client.kind != ClientKind::Sni
        && let Some(redirect) = redirect(&client, &owner)
    {
        metrics::cluster_redirect("client");
        crate::access::answered(
            ctx,
            (client.method(), &client.domain, client.conn.peer),
            307,
            std::time::Duration::ZERO,
        );
        respond_and_close(client.conn.stream, &redirect).await;
        return Hop::Done;
    }
    let forward = Forward {
        domain: client.domain.to_string(),
        owner: owner.node_id.to_string(),
        hops: client.hops + 1,
        leg: match client.kind {
            ClientKind::Plain => ForwardLeg::Plain,
            ClientKind::Terminated => ForwardLeg::TlsTerminated,
            ClientKind::Sni => ForwardLeg::TlsSni,
        },
        route: client.route,
        client_addr: client.conn.peer,
        public_port: client.public_port(),
        sni: client.sni().map(str::to_owned),
    };
    if client.hops > 0 {
        metrics::cluster_hop();
    }
    let (io, early) = match ctx.cluster.forward(&owner, &forward, &client.buf).await {
        Ok(opened) => opened,
        Err(_) => return Hop::Failed(client),
    };
    tracing::debug!(domain = %client.domain, owner = %owner.node_id, hops = forward.hops, "cluster: client forwarded");
    // Bytes the owner sent right after its `200` are already the client's.
    if !early.is_empty() && client.conn.stream.write_all(&early).await.is_err() {
        return Hop::Done;
    }
    let end = DeviceEnd {
        method: client.method(),
        io,
        peer: owner.internal,
        leg: client.kind.label(),
        sent: std::mem::take(&mut client.buf).len(),
        buffer: pipe::COPY_BUFFER,
    };
    pipe::run_paired(ctx, client, end).await;
    Hop::Done
}

/// The internal hop is a device leg like any other: spliced in the kernel when both legs are
/// plain TCP, copied otherwise (`internal_tls`).
impl pipe::DeviceLegIo for crate::cluster::Outbound {
    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        match self {
            tokio_util::either::Either::Left(tcp) => Ok(tcp),
            other => Err(other),
        }
    }
}

/// The `307` of 7.4 for a path-form client: the owner's public host and port, the scheme of
/// the client's leg, the original path.
fn redirect(client: &ClientLeg, owner: &Member) -> Option<Vec<u8>> {
    let head = RequestHead::parse(client.buf.get(..client.head_len)?);
    let tls = client.kind == ClientKind::Terminated;
    let location =
        limmat_wire::cluster::location(&owner.public_host, owner.port(tls)?, tls, head.path);
    Some(response::redirect(&location))
}
