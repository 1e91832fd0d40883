//! Socket options every accepted connection gets (2.1.2, D5): `TCP_NODELAY`, because relayed
//! request/response traffic is latency-bound, and keepalive, so dead peers behind NAT are found
//! even on pipes that are idle for hours.

use socket2::{SockRef, TcpKeepalive};
use std::time::Duration;
use tokio::net::TcpStream;

/// Listen backlog: deep enough for a burst of devices reconnecting at once after a restart.
pub(crate) const BACKLOG: u32 = 4096;

/// 60 s idle, then a probe every 15 s, 4 probes (D5).
pub(crate) fn configure(stream: &TcpStream) {
    let sock = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    if let Err(e) = stream
        .set_nodelay(true)
        .and_then(|()| sock.set_tcp_keepalive(&keepalive))
    {
        // The peer may already be gone; the first read will tell.
        tracing::debug!(error = %e, "socket options");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Checklist 36: TCP_NODELAY and keepalive (60 s / 15 s / 4) on every relay socket.
    #[tokio::test]
    async fn nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        configure(&stream);
        let sock = SockRef::from(&stream);
        assert!(stream.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(15));
        assert_eq!(sock.keepalive_retries().unwrap(), 4);
    }
}
