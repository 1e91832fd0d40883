//! A client request routed to a domain (spec 2.4.6–2.4.8, 2.5.6–2.5.7, 2.6.5): paired with the
//! oldest eligible waiting device, or waiting up to `client_wait` for one, then `504`.
//!
//! Pairing writes the `101` and every client byte buffered so far (from the first byte of the
//! request line: nothing is stripped or added) to the device in one write. If that fails, the
//! same client is dispatched again with what is left of its wait (re-dispatch, 2.4.8).
//!
//! An SNI-routed client is still raw TLS when it is paired: a pass-through device gets its
//! ClientHello and everything after it untouched; a TLS device without pass-through gets the
//! bytes after the relay has terminated the client's TLS (2.6.5). A `504` to an SNI-routed
//! client is sent inside TLS (2.6.6).

use crate::conn::Conn;
use crate::device::DeviceLeg;
use crate::linger::respond_and_close;
use crate::pipe;
use crate::registry::{ClientKind, ClientReady, Offer, PipeInfo};
use crate::server::Shared;
use crate::stats::Kind as Gauge;
use crate::stream::{Prefixed, Stream};
use bytes::Buf;
use limmat_wire::response;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

/// While waiting, a client may send this much beyond its head before the relay stops reading.
const WAIT_BUFFER: usize = 64 * 1024;

/// A routed client, as handed to a device's task.
pub(crate) struct ClientLeg {
    pub(crate) conn: Conn,
    /// Everything read from the client so far: the head first, or the raw ClientHello of an
    /// SNI-routed client.
    pub(crate) buf: Vec<u8>,
    pub(crate) head_len: usize,
    pub(crate) kind: ClientKind,
    pub(crate) domain: Arc<str>,
    /// The end of its `client_wait`.
    pub(crate) deadline: Instant,
}

/// Pairs `client` with `device` if given, else with whatever eligible device becomes available
/// before its deadline (a mux stream first, 5.8); answers `504` when none does. Runs the pipe
/// to its end.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    mut client: ClientLeg,
    device: Option<DeviceLeg>,
) {
    let mut device = device.map(Offer::Ptth);
    let mut refusals = 0u32;
    loop {
        let leg = match device.take() {
            Some(Offer::Mux(lease)) => {
                match Box::pin(crate::mux::open(shared, client, lease)).await {
                    None => return,
                    Some(back) => {
                        // Refused: look again, gently, so that a device that refuses every stream
                        // does not spin this task until the client's deadline (2.4.8).
                        client = back;
                        refusals += 1;
                        let pause = Duration::from_millis(u64::from(refusals.min(50)) * 2);
                        tokio::time::sleep(pause).await;
                        if Instant::now() >= client.deadline {
                            return refuse(shared, client).await;
                        }
                        continue;
                    }
                }
            }
            Some(Offer::Ptth(leg)) => Some(leg),
            None => None,
        };
        if let Some(leg) = leg {
            match pair(shared, client, leg).await {
                Pairing::Piped(client, device, sent) => {
                    return run_pipe(shared, client, device, sent).await;
                }
                Pairing::DeviceFailed(back, e) => {
                    tracing::debug!(domain = %back.domain, error = %e, "101 failed, re-dispatching");
                    client = back;
                    continue;
                }
                Pairing::ClientGone => return,
            }
        }
        let (slot, mut rx) = oneshot::channel::<Offer>();
        let may_wait = Instant::now() < client.deadline;
        let max_waiting = shared.config.max_waiting_clients;
        let wait = match shared.registry.client_ready(
            &client.domain,
            client.kind,
            slot,
            may_wait,
            max_waiting,
        ) {
            ClientReady::Mux(lease) => {
                device = Some(Offer::Mux(lease));
                continue;
            }
            ClientReady::Device(slot) => match slot.send(client) {
                // The device's task pairs and pipes.
                Ok(()) => return,
                Err(back) => {
                    client = back;
                    continue;
                }
            },
            ClientReady::Refused => return refuse(shared, client).await,
            ClientReady::Queued(wait) => wait,
        };
        let waiting = shared.stats.hold(Gauge::WaitingClient);
        let outcome = loop {
            let room = (client.head_len + WAIT_BUFFER).saturating_sub(client.buf.len());
            tokio::select! {
                // An Err means the device that popped this slot stopped first: queue again.
                leg = &mut rx => break Waited::Device(leg.ok()),
                () = sleep_until(client.deadline) => {
                    rx.close();
                    break match rx.try_recv() {
                        Ok(leg) => Waited::Device(Some(leg)),
                        Err(_) => Waited::Refuse,
                    };
                }
                read = client.conn.stream.read_into(&mut client.buf, room), if room > 0 => {
                    let gone = match read {
                        Ok(0) => Some(io::ErrorKind::UnexpectedEof.into()),
                        Ok(_) => None,
                        Err(e) => Some(e),
                    };
                    if let Some(e) = gone {
                        // A client that leaves consumes no device (2.5.6).
                        rx.close();
                        break Waited::Left(e, rx.try_recv().ok());
                    }
                }
                () = shared.shutdown.cancelled() => {
                    // Leave the FIFO first; a device handed over meanwhile is closed too.
                    rx.close();
                    break Waited::Refuse;
                }
            }
        };
        // No longer waiting, whatever comes next: free the place before acting.
        drop((wait, waiting));
        match outcome {
            Waited::Device(leg) => device = leg,
            Waited::Refuse => return refuse(shared, client).await,
            Waited::Left(reason, handed) => {
                tracing::info!(domain = %client.domain, peer = %client.conn.peer, %reason, "client left while waiting");
                if let Some(Offer::Ptth(leg)) = handed {
                    // A device was handed over in the same instant: it waits again. (A mux
                    // lease is simply dropped, which offers its stream to the next client.)
                    crate::conn::requeue(shared, leg, &client.domain);
                }
                return;
            }
        }
    }
}

/// How a client's wait ended.
enum Waited {
    /// A device was handed over, or (`None`) the one that was about to be is gone: look again.
    Device(Option<Offer>),
    /// `client_wait` is over, or the relay is stopping: `504`.
    Refuse,
    /// The client closed or failed, possibly just as a device was handed over.
    Left(io::Error, Option<Offer>),
}

/// How a pairing attempt ended.
enum Pairing {
    /// The `101` and the client's bytes (this many) reached the device: pipe them.
    Piped(ClientLeg, Conn, usize),
    /// The device is gone: the client looks for another one.
    DeviceFailed(ClientLeg, io::Error),
    /// The client's TLS handshake failed; the device went back to waiting.
    ClientGone,
}

/// Writes the `101` and the client's bytes to the device (2.4.7), terminating an SNI-routed
/// client's TLS first when the device expects the relay to (2.6.5 b).
async fn pair(shared: &Arc<Shared>, mut client: ClientLeg, device: DeviceLeg) -> Pairing {
    // A device that closed while queued is found here rather than by a write that the kernel
    // would still accept (2.4.8, "found closed").
    let mut device_conn = device.conn;
    if let Err(e) = device_conn.stream.probe_closed() {
        return Pairing::DeviceFailed(client, e);
    }
    if client.kind == ClientKind::Sni && !device.class.pass_through {
        let domain = client.domain.clone();
        client = match terminate(shared, client).await {
            Some(client) => client,
            None => {
                let leg = DeviceLeg {
                    conn: device_conn,
                    class: device.class,
                    hold_until: device.hold_until,
                };
                crate::conn::requeue(shared, leg, &domain);
                return Pairing::ClientGone;
            }
        };
    }
    // One vectored write of both parts, without copying the client's bytes.
    let mut out = response::UPGRADE_PTTH.chain(&client.buf[..]);
    let written = timeout(
        shared.config.head_timeout,
        device_conn.stream.write_all_buf(&mut out),
    )
    .await;
    match written {
        Ok(Ok(())) => {
            // A pairing returns a handshake token: the device's replacement is not a loop.
            shared.limits.paired(&client.domain);
            crate::metrics::response(response::UPGRADE_PTTH);
            let arrived = client.deadline.checked_sub(shared.config.client_wait);
            crate::metrics::paired(arrived.map_or(Duration::ZERO, |t| t.elapsed()));
            let sent = std::mem::take(&mut client.buf).len();
            Pairing::Piped(client, device_conn, sent)
        }
        Ok(Err(e)) => Pairing::DeviceFailed(client, e),
        Err(_) => Pairing::DeviceFailed(client, io::ErrorKind::TimedOut.into()),
    }
}

/// Completes an SNI-routed client's TLS handshake with the relay's (wildcard) certificate. The
/// client is then a terminated TLS leg whose decrypted bytes have not been read yet.
pub(crate) async fn terminate(shared: &Shared, client: ClientLeg) -> Option<ClientLeg> {
    let ClientLeg {
        conn,
        buf,
        domain,
        deadline,
        ..
    } = client;
    let acceptor = shared.tls.as_ref()?;
    let Stream::Tcp(tcp) = conn.stream else {
        return None;
    };
    let handshake = acceptor.accept(Prefixed::new(buf, tcp));
    match timeout(shared.config.tls_handshake_timeout, handshake).await {
        Ok(Ok(tls)) => Some(ClientLeg {
            conn: Conn {
                stream: Stream::Tls(Box::new(tls)),
                peer: conn.peer,
                open: conn.open,
            },
            buf: Vec::new(),
            head_len: 0,
            kind: ClientKind::Terminated,
            domain,
            deadline,
        }),
        Ok(Err(e)) => {
            crate::metrics::tls_handshake(false);
            tracing::info!(domain = %domain, peer = %conn.peer, error = %e, "client TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(domain = %domain, peer = %conn.peer, "client TLS handshake timed out");
            None
        }
    }
}

async fn run_pipe(shared: &Arc<Shared>, client: ClientLeg, device: Conn, sent: usize) {
    let kind = match client.kind {
        ClientKind::Plain => "plain",
        ClientKind::Terminated => "tls-terminated",
        ClientKind::Sni => "tls-passthrough",
    };
    let peer = device.peer;
    let buffer = pipe::COPY_BUFFER;
    pipe_to(shared, client, device.stream, peer, kind, sent, buffer).await;
}

/// The device leg of a pipe: a PTTH connection, which may be spliced in the kernel when both
/// legs are plain TCP, or any byte stream (a mux stream), which is copied.
pub(crate) trait DeviceLegIo:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Sized
{
    /// The plain TCP socket, when there is one.
    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        Err(self)
    }
}

impl DeviceLegIo for Stream {
    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        match self {
            Stream::Tcp(tcp) => Ok(tcp),
            other => Err(other),
        }
    }
}

impl DeviceLegIo for limmat_mux::H2Stream {}

/// Runs the pipe between a paired client and its device leg (a PTTH connection or a mux
/// stream): lists it for the admin API, counts it, and logs it at both ends. `sent` client
/// bytes already went to the device with the pairing.
pub(crate) async fn pipe_to<D>(
    shared: &Arc<Shared>,
    client: ClientLeg,
    device: D,
    device_peer: std::net::SocketAddr,
    kind: &'static str,
    sent: usize,
    buffer: usize,
) where
    D: DeviceLegIo,
{
    let _pipe = shared.stats.hold(Gauge::Pipe);
    let started = Instant::now();
    let client_peer = client.conn.peer;
    tracing::info!(domain = %client.domain, client = %client_peer, device = %device_peer, leg = kind, "paired");
    let info = PipeInfo {
        client: client_peer,
        device: device_peer,
        leg: kind,
        since: std::time::SystemTime::now(),
        counters: Default::default(),
    };
    let listed = shared.registry.pipe_started(&client.domain, info);
    listed.counters.up.fetch_add(sent as u64, Ordering::Relaxed);
    let (idle, stops) = (
        shared.config.idle_timeout,
        [&shared.hard_stop, listed.killed()],
    );
    let counters = &listed.counters;
    let outcome = match (client.conn.stream, device.into_tcp()) {
        // Both legs plain TCP: zero-copy on Linux.
        #[cfg(target_os = "linux")]
        (Stream::Tcp(client), Ok(device)) if shared.config.splice => {
            pipe::run_spliced(client, device, idle, counters, stops).await
        }
        (client, Ok(device)) => {
            let device = Stream::Tcp(device);
            pipe::run_with(client, device, buffer, idle, counters, stops).await
        }
        (client, Err(device)) => {
            pipe::run_with(client, device, buffer, idle, counters, stops).await
        }
    };
    drop(listed);
    crate::metrics::pipe_ended(&outcome, started.elapsed());
    tracing::info!(
        domain = %client.domain,
        client = %client_peer,
        device = %device_peer,
        leg = kind,
        up = outcome.up,
        down = outcome.down,
        duration_ms = started.elapsed().as_millis() as u64,
        end = ?outcome.end,
        "pipe closed"
    );
}

/// No device for this client: `504` and a lingering close (2.5.6), inside TLS for an
/// SNI-routed client (2.6.6).
pub(crate) async fn refuse(shared: &Shared, client: ClientLeg) {
    tracing::info!(domain = %client.domain, peer = %client.conn.peer, "no device: 504");
    let client = if client.kind == ClientKind::Sni {
        match terminate(shared, client).await {
            Some(client) => client,
            None => return,
        }
    } else {
        client
    };
    respond_and_close(client.conn.stream, response::GATEWAY_TIMEOUT).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Relay, RelayConfig};
    use std::time::Duration;
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
        let shared = relay.shared.clone();
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
            conn: Conn::new(&shared, Stream::Tcp(client_side), addr),
            head_len: request.len(),
            buf: request.clone(),
            kind: ClientKind::Plain,
            domain: "dom".into(),
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let dead = DeviceLeg {
            conn: Conn::new(&shared, Stream::Tcp(dead), addr),
            class: crate::registry::DeviceClass {
                tls: false,
                pass_through: false,
            },
            hold_until: Instant::now() + Duration::from_secs(30),
        };
        let dispatched = tokio::spawn({
            let shared = shared.clone();
            async move { dispatch(&shared, client, Some(dead)).await }
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
