//! What to do with a [`RelayedConn`]: splice it to a local TCP or TLS service, or serve HTTP on
//! it in-process (spec 2.9, "Library use").
//!
//! Serving in-process means a Rust program reachable through the relay needs no local port at
//! all: the relayed connection goes straight into a hyper service.

use std::error::Error as StdError;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::addr::LocalAddr;
use crate::conn::RelayedConn;
use crate::transport::{Connector, RelayStream};
use limmat_mux::DataPath;

/// The wait for a TCP connection to the local service.
pub const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// An error from serving HTTP, as hyper reports it.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Splices `conn` to the service at `local` (server mode): the client's early bytes first,
/// then both directions until both have ended, a FIN on one side becoming a half-close on the
/// other. Returns the bytes copied (relay → local, local → relay).
///
/// A `tls:` local service is verified against the system roots; [`forward_with`] takes a
/// [`Connector`] with other [`TlsOptions`](crate::TlsOptions).
pub async fn forward(conn: RelayedConn, local: &LocalAddr) -> io::Result<(u64, u64)> {
    // One connector for the process, so that the system roots are read once.
    static SYSTEM: OnceLock<Connector> = OnceLock::new();
    let connector = SYSTEM.get_or_init(|| Connector::new(Default::default()));
    forward_with(conn, local, connector).await
}

/// [`forward`], opening the local connection with `connector`.
pub async fn forward_with(
    conn: RelayedConn,
    local: &LocalAddr,
    connector: &Connector,
) -> io::Result<(u64, u64)> {
    let local = connector
        .connect(&local.host, local.port, local.tls, LOCAL_CONNECT_TIMEOUT)
        .await?;
    let buffer = copy_buffer(&conn);
    splice_with(conn, local, buffer).await
}

/// Copy buffer per direction for a relayed connection: a mux stream moves larger DATA frames
/// when handed larger writes, so it gets 64 KiB; a PTTH socket keeps tokio's 8 KiB.
pub(crate) fn copy_buffer(conn: &RelayedConn) -> usize {
    if conn.mux_meta().is_some() {
        64 << 10
    } else {
        8 << 10
    }
}

/// Forwards between a relayed connection and the local service's: with `path` other than
/// `Copy` and both plain TCP, the client's early bytes go out first and the rest moves with
/// [`limmat_mux::splice`] (bulk in the kernel); otherwise [`splice_with`] copies with up to
/// `buffer` bytes per direction.
pub(crate) async fn forward_local(
    conn: RelayedConn,
    local: RelayStream,
    buffer: usize,
    path: DataPath,
) -> io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    let local = match (path.splice_mode(), local) {
        (Some(mode), RelayStream::Plain(local)) => {
            return match conn.into_plain_tcp() {
                Ok(relay) => spliced(relay, local, mode).await,
                Err(conn) => splice_with(conn, local, buffer).await,
            };
        }
        (_, local) => local,
    };
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    splice_with(conn, local, buffer).await
}

/// A plain relayed connection to a plain local one: the early bytes, then both ways in the
/// kernel; returns the bytes moved (relay → local, local → relay).
#[cfg(target_os = "linux")]
async fn spliced(
    relay: crate::conn::PlainTcp,
    mut local: tokio::net::TcpStream,
    mode: limmat_mux::splice::Mode,
) -> io::Result<(u64, u64)> {
    use tokio::io::AsyncWriteExt;
    local.write_all(&relay.leftover).await?;
    let (up, down) = tcp_both_ways(&relay.tcp, &local, mode).await?;
    Ok((relay.leftover.len() as u64 + up, down))
}

/// Both ways between two plain TCP sockets with [`limmat_mux::splice`]; returns the bytes
/// moved (`a` → `b`, `b` → `a`).
#[cfg(target_os = "linux")]
pub(crate) async fn tcp_both_ways(
    a: &tokio::net::TcpStream,
    b: &tokio::net::TcpStream,
    mode: limmat_mux::splice::Mode,
) -> io::Result<(u64, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (a_read, b_read) = (AtomicU64::new(0), AtomicU64::new(0));
    let counters = limmat_mux::splice::Counters {
        a_read: &a_read,
        b_read: &b_read,
        b_first: None,
    };
    limmat_mux::splice::both_ways(a, b, mode, counters).await?;
    Ok((
        a_read.load(Ordering::Relaxed),
        b_read.load(Ordering::Relaxed),
    ))
}

/// [`splice`] with up to `buffer` bytes per direction (grown to only for bulk flows).
pub(crate) async fn splice_with<A, B>(mut a: A, mut b: B, buffer: usize) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    limmat_mux::copy_bidirectional(&mut a, &mut b, buffer).await
}

/// Copies both ways until both directions have ended (2.7: half-close is propagated).
pub(crate) async fn splice<A, B>(mut a: A, mut b: B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    limmat_mux::copy_bidirectional(&mut a, &mut b, 8 << 10).await
}

/// Serves HTTP on `conn` with a hyper service: HTTP/1.1 (with upgrades, so WebSockets work)
/// or HTTP/2 with prior knowledge, told apart by the first bytes.
pub async fn serve_http<S, B>(conn: RelayedConn, service: S) -> Result<(), BoxError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(conn), service)
        .await
}
