//! Set-up shared by the unit tests: a relay bound on 127.0.0.1 and a connection accepted as
//! the relay would accept it, for tests that hold the relay's own futures and values.

use crate::legs::Conn;
use crate::stream::Tcp;
use crate::{Relay, RelayConfig};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// A relay with the default configuration on a free port of 127.0.0.1.
pub(crate) async fn relay() -> Relay {
    Relay::bind(RelayConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..RelayConfig::default()
    })
    .await
    .unwrap()
}

/// A connection accepted on a fresh listener, counted in `relay`'s stats; with the peer's end
/// and the address the peer reached.
pub(crate) async fn accepted(relay: &Relay) -> (Conn, TcpStream, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reached = listener.local_addr().unwrap();
    let peer_end = TcpStream::connect(reached).await.unwrap();
    let (tcp, peer) = listener.accept().await.unwrap();
    (
        Conn::new(&relay.ctx.stats, Tcp(tcp), peer),
        peer_end,
        reached,
    )
}
