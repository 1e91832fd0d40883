//! Opening connections: to the relay and to the local service.
//!
//! Everything the agent says to the relay goes over a [`RelayStream`], so that TLS (spec 2.6,
//! the `tls:` prefix) and the mux transport (section 5) can later be added here, as another
//! kind of stream behind the same type, without touching the handshake or the pool.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// A connection to the relay. Plain TCP for now; a TLS variant belongs here.
pub type RelayStream = TcpStream;

/// How long the kernel waits before probing an idle connection, and then between probes. A
/// waiting device connection is silent for up to 75 s, so dead NAT state is found within
/// minutes rather than hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Connects to `host:port`, trying each resolved address in turn, all within `timeout`.
/// The socket gets `TCP_NODELAY` (heads and small interactive writes go out at once) and TCP
/// keepalive.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let attempt = async {
        let mut last_err = None;
        for addr in tokio::net::lookup_host((host, port)).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
        }))
    };
    let stream = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting timed out after {}s", timeout.as_secs()),
        )
    })??;
    tune(&stream)?;
    Ok(stream)
}

/// Sets `TCP_NODELAY` and keepalive on a connected or accepted socket.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}
