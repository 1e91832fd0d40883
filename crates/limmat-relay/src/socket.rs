//! Socket options every accepted connection gets (2.1.2, D5): `TCP_NODELAY`, because relayed
//! request/response traffic is latency-bound, and keepalive, so dead peers behind NAT are found
//! even on pipes that are idle for hours. Accepted connections inherit them from their listener.

use socket2::{SockRef, TcpKeepalive};
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;

/// Listen backlog: deep enough for a burst of devices reconnecting at once after a restart.
pub(crate) const BACKLOG: u32 = 4096;

/// Sets `TCP_NODELAY` and keepalive (60 s idle, then a probe every 15 s, 4 probes; D5) on a
/// socket. On a listening socket it is done once: on Linux every connection it accepts inherits
/// them (the kernel clones the listener's TCP settings into each new socket), which saves five
/// `setsockopt` calls per connection on the accept path; see [`configure_accepted`].
pub(crate) fn set_options(sock: SockRef<'_>) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    sock.set_tcp_keepalive(&keepalive)
}

/// Sets the same options on a socket the relay connected.
pub(crate) fn configure(stream: &TcpStream) {
    if let Err(e) = set_options(SockRef::from(stream)) {
        // The peer may already be gone; the first read will tell.
        tracing::debug!(error = %e, "socket options");
    }
}

/// The options of an accepted connection: inherited from its listener on Linux
/// ([`set_options`]), set one by one elsewhere.
pub(crate) fn configure_accepted(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = stream;
    #[cfg(not(target_os = "linux"))]
    configure(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connection accepted from `listener`, and its peer.
    async fn accepted(listener: TcpListener) -> (TcpStream, TcpStream) {
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, peer)
    }

    fn assert_options(stream: &TcpStream) {
        let sock = SockRef::from(stream);
        assert!(stream.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(15));
        assert_eq!(sock.keepalive_retries().unwrap(), 4);
    }

    /// Checklist 36: TCP_NODELAY and keepalive (60 s / 15 s / 4) on every relay socket.
    #[tokio::test]
    async fn nodelay_and_keepalive() {
        let (stream, _peer) = accepted(TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
        configure(&stream);
        assert_options(&stream);
    }

    /// The same options on a connection accepted from a configured listener, without a call per
    /// connection (the kernel copies them from the listener).
    #[tokio::test]
    async fn accepted_connections_inherit_them() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        set_options(SockRef::from(&socket)).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (stream, _peer) = accepted(socket.listen(8).unwrap()).await;
        configure_accepted(&stream);
        assert_options(&stream);
    }
}
