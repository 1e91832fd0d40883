//! The rendezvous of a client and a device (spec 2.4.6–2.4.8, 2.5.6–2.5.7, 2.6.5): a routed
//! client is paired with the oldest eligible waiting device (a mux stream first, 5.8), or waits
//! up to `client_wait` for one, then gets `504`.
//!
//! Everything that decides what happens to a pair lives here: pairing a PTTH device,
//! re-dispatching a client whose device failed, and giving a device back to waiting
//! ([`Requeued`]) when its client left. The mux variant of a pairing, opening a stream, is
//! [`mux::open`].
//!
//! Pairing writes the `101` and every client byte buffered so far (from the first byte of the
//! request line: nothing is stripped or added) to the device in one write. If that fails, the
//! same client is dispatched again with what is left of its wait (re-dispatch, 2.4.8).
//!
//! An SNI-routed client is still raw TLS when it is paired: a pass-through device gets its
//! ClientHello and everything after it untouched; a TLS device without pass-through gets the
//! bytes after the relay has terminated the client's TLS (2.6.5). A `504` to an SNI-routed
//! client is sent inside TLS (2.6.6).

use crate::cluster::LiveSet;
use crate::context::RelayContext;
use crate::hop::{self, Hop};
use crate::legs::{ClientKind, ClientLeg, Conn, DeviceLeg};
use crate::linger::respond_and_close;
use crate::metrics;
use crate::mux;
use crate::pipe::{self, DeviceEnd};
use crate::registry::{Admission, ClientReady, ClientWait, DeviceInfo, Offer};
use crate::stats::{GaugeGuard, Kind as Gauge};
use crate::stream::Leg;
use bytes::Buf;
use limmat_wire::response;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};

/// While waiting, a client may send this much beyond its head before the relay stops reading.
const WAIT_BUFFER: usize = 64 * 1024;

/// A PTTH device that was handed to a client which then left before the pairing: counted
/// again (without the cap check, 2.4.5), it goes back to waiting at the tail, keeping its
/// hold deadline. The task that gets it back runs its wait.
pub(crate) struct Requeued {
    pub(crate) leg: DeviceLeg,
    pub(crate) admission: Admission,
}

/// Serves a client routed to its domain, to the end of its pipe or its `504`. Every routed
/// client, by path, Host or SNI, passes through here. Returns a device to wait again, if one
/// was handed over as the client left.
///
/// In a cluster, a client whose domain another node owns is forwarded there (7.5) or, with
/// `client_redirect`, redirected; a forward that fails within 2 s is answered `504` here.
pub(crate) async fn route(ctx: &RelayContext, client: ClientLeg) -> Option<Requeued> {
    let client = match ctx.cluster.elsewhere(&client.domain) {
        None => client,
        Some(owner) => match Box::pin(hop::onward(ctx, client, owner)).await {
            Hop::Done => return None,
            Hop::Local(client) => client,
            Hop::Failed(client) => {
                refuse(ctx, client).await;
                return None;
            }
        },
    };
    dispatch(ctx, client, None).await
}

/// Pairs `client` with `device` if given, else with whatever eligible device becomes available
/// before its deadline; answers `504` when none does. Runs the pipe to its end.
pub(crate) async fn dispatch(
    ctx: &RelayContext,
    mut client: ClientLeg,
    device: Option<DeviceLeg>,
) -> Option<Requeued> {
    let mut offer = device.map(Offer::Ptth);
    let mut refusals = 0u32;
    loop {
        let next = match offer.take() {
            Some(offer) => offer,
            None => match find(ctx, client).await {
                Found::Offer(back, offer) => {
                    client = back;
                    offer
                }
                Found::Again(back) => {
                    client = back;
                    continue;
                }
                Found::Done(requeued) => return requeued,
                Found::Moved(client) => return Box::pin(route(ctx, client)).await,
            },
        };
        client = match next {
            Offer::Mux(lease) => {
                let back = Box::pin(mux::open(ctx, client, lease)).await?;
                // Refused: look again, gently, so that a device that refuses every stream
                // does not spin this task until the client's deadline (2.4.8).
                refusals += 1;
                let pause = Duration::from_millis(u64::from(refusals.min(50)) * 2);
                tokio::time::sleep(pause).await;
                if Instant::now() >= back.deadline {
                    refuse(ctx, back).await;
                    return None;
                }
                back
            }
            // Boxed, as `mux::open` is: a future is as large as its largest state, and every
            // client's routing future (built on the stack, then moved into its box) would
            // otherwise carry a PTTH pipe's few kilobytes, mux clients' too.
            Offer::Ptth(leg) => match Box::pin(pair(ctx, client, leg)).await {
                Pairing::Piped(client, device) => {
                    Box::pin(pipe::run_paired(ctx, client, device)).await;
                    return None;
                }
                Pairing::DeviceFailed(back, e) => {
                    tracing::debug!(domain = %back.domain, error = %e, "101 failed, re-dispatching");
                    back
                }
                Pairing::ClientGone(requeued) => return requeued,
            },
        };
    }
}

/// What one look for a device came to.
enum Found {
    /// A device to pair with.
    Offer(ClientLeg, Offer),
    /// Look again: the device that was about to be handed over is gone.
    Again(ClientLeg),
    /// The client went to a waiting device's task, was refused, or left.
    Done(Option<Requeued>),
    /// The domain moved to another cluster node while the client waited: route it again.
    Moved(ClientLeg),
}

/// Takes the oldest eligible device (2.4.6), or queues the client and waits for one.
async fn find(ctx: &RelayContext, client: ClientLeg) -> Found {
    let (slot, rx) = oneshot::channel::<Offer>();
    let may_wait = Instant::now() < client.deadline;
    let max_waiting = ctx.config.max_waiting_clients;
    let registry = &ctx.registry;
    match registry.client_ready(&client.domain, client.kind, slot, may_wait, max_waiting) {
        ClientReady::Mux(lease) => Found::Offer(client, Offer::Mux(lease)),
        ClientReady::Device(slot) => match slot.send(Box::new(client)) {
            // The device's task pairs and pipes.
            Ok(()) => Found::Done(None),
            Err(back) => Found::Again(*back),
        },
        ClientReady::Refused => {
            refuse(ctx, client).await;
            Found::Done(None)
        }
        ClientReady::Queued(place) => {
            let waiting = ctx.stats.hold(Gauge::WaitingClient);
            // Boxed: a mux client never waits, and should not carry the wait's state.
            Box::pin(wait(ctx, client, rx, (place, waiting))).await
        }
    }
}

/// How a client's wait ended.
enum Waited {
    /// A device was handed over, or (`None`) the one that was about to be is gone: look again.
    Device(Option<Offer>),
    /// `client_wait` is over, or the relay is stopping: `504`.
    Refuse,
    /// The domain moved to another cluster node (7.6).
    Moved,
    /// The client closed or failed, possibly just as a device was handed over.
    Left(io::Error, Option<Offer>),
}

/// Waits in the domain's client FIFO for a device, the deadline, the client's departure or
/// shutdown, reading what the client sends meanwhile (up to [`WAIT_BUFFER`]).
async fn wait(
    ctx: &RelayContext,
    mut client: ClientLeg,
    rx: oneshot::Receiver<Offer>,
    place: (ClientWait, GaugeGuard),
) -> Found {
    let outcome = wait_for_device(ctx, &mut client, rx, &place.0).await;
    // No longer waiting, whatever comes next: free the place before acting.
    drop(place);
    settle(ctx, client, outcome).await
}

/// The select loop of [`wait`]: what ends the wait first.
async fn wait_for_device(
    ctx: &RelayContext,
    client: &mut ClientLeg,
    mut rx: oneshot::Receiver<Offer>,
    place: &ClientWait,
) -> Waited {
    let moved = place.moved().clone();
    let mut live = live_watch(ctx, client);
    loop {
        let room = (client.head_len + WAIT_BUFFER).saturating_sub(client.buf.len());
        tokio::select! {
            // An Err means the device that popped this slot stopped first: queue again.
            leg = &mut rx => return Waited::Device(leg.ok()),
            () = sleep_until(client.deadline) => return take_or(rx, Waited::Refuse),
            read = client.conn.stream.read_into(&mut client.buf, room), if room > 0 => {
                let gone = match read {
                    Ok(0) => Some(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => None,
                    Err(e) => Some(e),
                };
                if let Some(e) = gone {
                    // A client that leaves consumes no device (2.5.6).
                    rx.close();
                    return Waited::Left(e, rx.try_recv().ok());
                }
            }
            () = ctx.shutdown.cancelled() => {
                // Leave the FIFO first; a device handed over meanwhile is closed too.
                rx.close();
                return Waited::Refuse;
            }
            changed = async {
                match live.as_mut() {
                    Some(live) => live.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if changed.is_err() {
                    live = None;
                } else if ctx.cluster.elsewhere(&client.domain).is_some() {
                    return take_or(rx, Waited::Moved);
                }
            }
            () = moved.cancelled() => return take_or(rx, Waited::Moved),
        }
    }
}

/// In a cluster, a change of the live set may give the domain another owner: the waiting
/// client is forwarded there at once (7.6) rather than when the rebalancing reaches its
/// domain. `None` when standalone or when the client may not hop again.
fn live_watch(ctx: &RelayContext, client: &ClientLeg) -> Option<LiveWatch> {
    (ctx.cluster.is_clustered() && client.hops < ctx.config.cluster.max_hops).then(|| {
        let mut live = ctx.cluster.live();
        live.borrow_and_update();
        live
    })
}

/// The cluster's live set, as a waiting client watches it.
type LiveWatch = watch::Receiver<Arc<LiveSet>>;

/// Leaves the FIFO; a device handed over in the same instant still wins over `otherwise`.
fn take_or(mut rx: oneshot::Receiver<Offer>, otherwise: Waited) -> Waited {
    rx.close();
    match rx.try_recv() {
        Ok(leg) => Waited::Device(Some(leg)),
        Err(_) => otherwise,
    }
}

/// Acts on how the wait ended.
async fn settle(ctx: &RelayContext, client: ClientLeg, outcome: Waited) -> Found {
    match outcome {
        Waited::Device(Some(offer)) => Found::Offer(client, offer),
        Waited::Device(None) => Found::Again(client),
        Waited::Refuse => {
            refuse(ctx, client).await;
            Found::Done(None)
        }
        Waited::Moved => {
            tracing::info!(domain = %client.domain, peer = %client.conn.peer, "client rerouted: its domain moved to another node");
            Found::Moved(client)
        }
        Waited::Left(reason, handed) => {
            tracing::info!(domain = %client.domain, peer = %client.conn.peer, %reason, "client left while waiting");
            // A device handed over in the same instant waits again. (A mux lease is simply
            // dropped, which offers its stream to the next client.)
            let requeued = match handed {
                Some(Offer::Ptth(leg)) => requeue(ctx, leg, &client.domain),
                _ => None,
            };
            Found::Done(requeued)
        }
    }
}

/// How a pairing attempt ended.
enum Pairing {
    /// The `101` and the client's bytes reached the device: pipe them.
    Piped(ClientLeg, DeviceEnd<crate::stream::Stream>),
    /// The device is gone: the client looks for another one.
    DeviceFailed(ClientLeg, io::Error),
    /// The client's TLS handshake failed; the device goes back to waiting.
    ClientGone(Option<Requeued>),
}

/// Writes the `101` and the client's bytes to the device (2.4.7), terminating an SNI-routed
/// client's TLS first when the device expects the relay to (2.6.5 b).
async fn pair(ctx: &RelayContext, mut client: ClientLeg, device: DeviceLeg) -> Pairing {
    // A device that closed while queued is found here rather than by a write that the kernel
    // would still accept (2.4.8, "found closed").
    let mut device = device;
    if let Err(e) = device.conn.stream.probe_closed() {
        return Pairing::DeviceFailed(client, e);
    }
    if client.kind == ClientKind::Sni && !device.class.pass_through {
        let domain = client.domain.clone();
        client = match terminate(ctx, client).await {
            Some(client) => client,
            None => return Pairing::ClientGone(requeue(ctx, device, &domain)),
        };
    }
    // One vectored write of both parts, without copying the client's bytes.
    let mut out = response::UPGRADE_PTTH.chain(&client.buf[..]);
    let stream = &mut device.conn.stream;
    let written = timeout(ctx.config.head_timeout, stream.write_all_buf(&mut out)).await;
    match written {
        Ok(Ok(())) => {
            metrics::response(response::UPGRADE_PTTH);
            let method = client.method();
            let sent = std::mem::take(&mut client.buf).len();
            let Conn { stream, peer, .. } = device.conn;
            let end = DeviceEnd {
                method,
                io: stream,
                peer,
                leg: client.kind.label(),
                sent,
                buffer: pipe::COPY_BUFFER,
            };
            Pairing::Piped(client, end)
        }
        Ok(Err(e)) => Pairing::DeviceFailed(client, e),
        Err(_) => Pairing::DeviceFailed(client, io::ErrorKind::TimedOut.into()),
    }
}

/// Terminates an SNI-routed client's TLS with the relay's certificate (2.6.5 b).
async fn terminate(ctx: &RelayContext, client: ClientLeg) -> Option<ClientLeg> {
    let within = ctx.config.tls_handshake_timeout;
    client.terminate(ctx.tls.as_ref(), within).await
}

/// Counts `leg` against `domain` again, without the cap check: it was counted a moment ago
/// (2.4.5), so the domain may briefly hold one connection more than `max_per_domain`.
fn requeue(ctx: &RelayContext, leg: DeviceLeg, domain: &str) -> Option<Requeued> {
    let admission = ctx.registry.admit(domain, 0)?;
    let info = DeviceInfo {
        peer: leg.conn.peer,
        class: leg.class,
        since: SystemTime::now(),
    };
    ctx.registry.describe(&admission, info);
    Some(Requeued { leg, admission })
}

/// No device for this client: `504` and a lingering close (2.5.6), inside TLS for an
/// SNI-routed client (2.6.6); a browser's `504` carries a page (issue 12). Boxed: with a TLS
/// handshake and a lingering close, its state is a kilobyte or more, which every future that
/// may refuse (every client's) would otherwise carry, and copy whenever it is moved.
pub(crate) fn refuse(
    ctx: &RelayContext,
    client: ClientLeg,
) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(refuse_now(ctx, client))
}

async fn refuse_now(ctx: &RelayContext, client: ClientLeg) {
    crate::access::refused(ctx, &client);
    let answer = client.refusal();
    let client = if client.kind == ClientKind::Sni {
        match terminate(ctx, client).await {
            Some(client) => client,
            None => return,
        }
    } else {
        client
    };
    respond_and_close(client.conn.stream, &answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Tcp;
    use crate::{Relay, RelayConfig};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the relay-side end and the peer's end.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (relay_side, _) = listener.accept().await.unwrap();
        (relay_side, peer)
    }

    /// Checklist 30: the 101 write fails, the client is re-dispatched to the next device.
    #[tokio::test]
    async fn failed_upgrade_redispatches_the_same_client() {
        let relay = Relay::bind(RelayConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            client_wait: Duration::from_secs(10),
            ..RelayConfig::default()
        })
        .await
        .unwrap();
        let ctx = relay.ctx.clone();
        let addr = relay.local_addrs()[0];
        let handle = relay.handle();
        let task = tokio::spawn(relay.run());

        // A healthy device waits in the FIFO.
        let mut healthy = TcpStream::connect(addr).await.unwrap();
        healthy
            .write_all(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut waiting = handle.stats().waiting_devices();
        waiting.wait_for(|&n| n == 1).await.unwrap();

        // A device that was reset after it was taken from the FIFO.
        let (dead, dead_peer) = socket_pair().await;
        dead_peer.set_zero_linger().unwrap();
        drop(dead_peer);
        let (client_side, mut client_peer) = socket_pair().await;
        let request = b"GET /dom/x HTTP/1.1\r\n\r\n".to_vec();
        let client = ClientLeg {
            conn: Conn::new(&ctx.stats, Tcp(client_side), addr),
            head_len: request.len(),
            buf: request.clone(),
            kind: ClientKind::Plain,
            domain: "dom".into(),
            route: limmat_wire::mux::Route::Path,
            hello_sni: None,
            deadline: Instant::now() + Duration::from_secs(10),
            hops: 0,
            public_port: Some(addr.port()),
        };
        let dead = DeviceLeg {
            conn: Conn::new(&ctx.stats, Tcp(dead), addr),
            class: crate::legs::DeviceClass {
                tls: false,
                pass_through: false,
            },
            hold_until: Instant::now() + Duration::from_secs(30),
        };
        let dispatched = tokio::spawn({
            let ctx = ctx.clone();
            async move { dispatch(&ctx, client, Some(dead)).await }
        });

        let mut got = vec![0; response::UPGRADE_PTTH.len() + request.len()];
        tokio::time::timeout(Duration::from_secs(10), healthy.read_exact(&mut got))
            .await
            .expect("the healthy device gets the client")
            .unwrap();
        assert_eq!(&got[response::UPGRADE_PTTH.len()..], request);
        healthy.write_all(b"ok").await.unwrap();
        let mut answer = [0; 2];
        client_peer.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ok");

        drop((healthy, client_peer));
        dispatched.await.unwrap();
        handle.shutdown();
        task.await.unwrap();
    }
}
