//! A client request routed to a domain (spec 2.4.6–2.4.8, 2.5.6–2.5.7): paired with the oldest
//! waiting device, or waiting up to `client_wait` for one, then `504`.
//!
//! Pairing writes the `101` and every client byte buffered so far (from the first byte of the
//! request line: nothing is stripped or added) to the device in one write. If that fails, the
//! same client is dispatched again with what is left of its wait (re-dispatch, 2.4.8).

use crate::conn::Conn;
use crate::device::DeviceLeg;
use crate::linger::respond_and_close;
use crate::pipe;
use crate::registry::ClientReady;
use crate::server::Shared;
use crate::stats::Kind as Gauge;
use bytes::Buf;
use limmat_wire::response;
use std::io;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

/// While waiting, a client may send this much beyond its head before the relay stops reading.
const WAIT_BUFFER: usize = 64 * 1024;

/// A routed client, as handed to a device's task.
pub(crate) struct ClientLeg {
    pub(crate) conn: Conn,
    /// Everything read from the client so far, head first.
    pub(crate) buf: Vec<u8>,
    pub(crate) head_len: usize,
    pub(crate) domain: Arc<str>,
    /// The end of its `client_wait`.
    pub(crate) deadline: Instant,
}

/// Pairs `client` with `device` if given, else with whatever device becomes available before
/// its deadline; answers `504` when none does. Runs the pipe to its end.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    mut client: ClientLeg,
    mut device: Option<DeviceLeg>,
) {
    loop {
        if let Some(leg) = device.take() {
            match upgrade(shared, &client, leg.conn).await {
                Ok(conn) => return run_pipe(shared, client, conn).await,
                Err(e) => {
                    tracing::debug!(domain = %client.domain, error = %e, "101 failed, re-dispatching");
                    continue;
                }
            }
        }
        let (slot, mut rx) = oneshot::channel::<DeviceLeg>();
        let may_wait = Instant::now() < client.deadline;
        let max_waiting = shared.config.max_waiting_clients;
        let wait = match shared
            .registry
            .client_ready(&client.domain, slot, may_wait, max_waiting)
        {
            ClientReady::Device(slot) => match slot.send(client) {
                // The device's task pairs and pipes.
                Ok(()) => return,
                Err(back) => {
                    client = back;
                    continue;
                }
            },
            ClientReady::Refused => return refuse(client).await,
            ClientReady::Queued(wait) => wait,
        };
        let waiting = shared.stats.hold(Gauge::WaitingClient);
        let outcome = loop {
            let room = client.buf.len() < client.head_len + WAIT_BUFFER;
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
                ready = client.conn.stream.readable(), if room => {
                    if let Err(e) = ready.and_then(|()| read_more(&mut client)) {
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
            Waited::Refuse => return refuse(client).await,
            Waited::Left(reason, handed) => {
                tracing::info!(domain = %client.domain, peer = %client.conn.peer, %reason, "client left while waiting");
                if let Some(leg) = handed {
                    // A device was handed over in the same instant: it waits again.
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
    Device(Option<DeviceLeg>),
    /// `client_wait` is over, or the relay is stopping: `504`.
    Refuse,
    /// The client closed or failed, possibly just as a device was handed over.
    Left(io::Error, Option<DeviceLeg>),
}

/// Buffers what a waiting client sends; EOF and errors mean it left.
fn read_more(client: &mut ClientLeg) -> io::Result<()> {
    let limit = client.head_len + WAIT_BUFFER;
    if client.buf.capacity() == client.buf.len() {
        client.buf.reserve((limit - client.buf.len()).min(8192));
    }
    match client.conn.stream.try_read_buf(&mut client.buf) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the `101` and the client's bytes to the device (2.4.7).
async fn upgrade(shared: &Shared, client: &ClientLeg, mut device: Conn) -> io::Result<Conn> {
    // A device that closed while queued is found here rather than by a write that the kernel
    // would still accept (2.4.8, "found closed").
    let mut probe = [0u8; 64];
    loop {
        match device.stream.try_read(&mut probe) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    // One vectored write of both parts, without copying the client's bytes.
    let mut out = response::UPGRADE_PTTH.chain(&client.buf[..]);
    match timeout(
        shared.config.head_timeout,
        device.stream.write_all_buf(&mut out),
    )
    .await
    {
        Ok(Ok(())) => Ok(device),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

async fn run_pipe(shared: &Arc<Shared>, client: ClientLeg, device: Conn) {
    let _pipe = shared.stats.hold(Gauge::Pipe);
    let started = Instant::now();
    let (client_peer, device_peer) = (client.conn.peer, device.peer);
    tracing::info!(domain = %client.domain, client = %client_peer, device = %device_peer, "paired");
    let outcome = pipe::run(
        client.conn.stream,
        device.stream,
        shared.config.idle_timeout,
        &shared.hard_stop,
    )
    .await;
    tracing::info!(
        domain = %client.domain,
        client = %client_peer,
        device = %device_peer,
        up = outcome.up + client.buf.len() as u64,
        down = outcome.down,
        duration_ms = started.elapsed().as_millis() as u64,
        end = ?outcome.end,
        "pipe closed"
    );
}

/// No device for this client: `504` and a lingering close (2.5.6).
pub(crate) async fn refuse(client: ClientLeg) {
    tracing::info!(domain = %client.domain, peer = %client.conn.peer, "no device: 504");
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
            conn: Conn::new(&shared, client_side, addr),
            head_len: request.len(),
            buf: request.clone(),
            domain: "dom".into(),
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let dead = DeviceLeg {
            conn: Conn::new(&shared, dead, addr),
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
