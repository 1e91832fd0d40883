//! The three modes of `limmat tunnel` as library functions (spec 2.8 and 2.9, "Modes").
//!
//! - **server**: every relayed connection is spliced to a local TCP or TLS service.
//! - **proxy**: every relayed connection first carries a `CONNECT /<domain>` head (2.8.1),
//!   answered with exactly `HTTP/1.1 200 OK\r\n\r\n` before the splice, as YalerTunnel2 does.
//! - **client**: the other end of proxy mode: a local listener whose every connection goes to
//!   the relay as `CONNECT /<domain>`, so that e.g. `ssh -p <port> localhost` reaches a device.
//!
//! The byte conventions live in `limmat_wire::tunnel`; this module only does the I/O. Relay
//! and local connections are opened with one [`Connector`], so `tls:` and the CA file apply to
//! both.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use limmat_mux::DataPath;
use limmat_wire::request::RequestHead;
use limmat_wire::route::parse_domain;
use limmat_wire::tunnel::{PROXY_BAD_GATEWAY, PROXY_METHOD_NOT_ALLOWED, PROXY_OK, connect_request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::addr::{LocalAddr, RelayAddr};
use crate::agent::{
    Agent, AgentError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, relay_connector,
};
use crate::conn::RelayedConn;
use crate::handshake::{MAX_REDIRECTS, RedirectError, Target};
use crate::head::{HeadError, read_final_reply, read_head};
use crate::serve::{LOCAL_CONNECT_TIMEOUT, splice};
use crate::transport::{self, Connector, RelayStream, TlsOptions};

/// How long a proxy-mode device waits for the client's `CONNECT` head. YalerTunnel2 closes
/// any socket idle for 75 s.
pub const PROXY_HEAD_TIMEOUT: Duration = Duration::from_secs(75);

/// How long the start-up check of the local service waits for it to accept.
const LOCAL_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// After an error answer, how long and how much to read before closing, so that the peer's
/// unread bytes do not make the kernel send a RST that destroys the answer (as the relay's
/// lingering close, 2.3).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 * 1024;

/// Server mode: runs `agent` and splices every relayed connection to `local`, over TLS for a
/// `tls:` address (verified with the agent's [`TlsOptions`]).
///
/// `limmat tunnel`'s own mode, not a stable API of the library (hidden from its docs; the
/// library's way is [`Agent::run`] with a handler such as [`crate::forward`]).
#[doc(hidden)]
pub async fn run_server(agent: Agent, local: LocalAddr, shutdown: CancellationToken) {
    let connector = agent.connector().clone();
    let path = agent.config().data_path;
    let serve = move |conn, local: LocalAddr| {
        let connector = connector.clone();
        async move { server_connection(conn, &local, &connector, path).await }
    };
    run_mode(agent, local, shutdown, serve).await;
}

/// Server mode's answer when the local service cannot be reached (issue 12, spec 2.8's
/// conventions): a `502` with a short body, instead of a connection closed without a word.
pub const SERVER_BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\nConnection: close\r\n\r\n\
the device's local service is not reachable.\n";

/// Server mode for one relayed connection: [`forward_with`](crate::forward_with), or [`SERVER_BAD_GATEWAY`] when the
/// local service refuses or does not answer.
async fn server_connection(
    conn: RelayedConn,
    local: &LocalAddr,
    connector: &Connector,
    path: DataPath,
) -> io::Result<(u64, u64)> {
    let stream = match connector
        .connect(&local.host, local.port, local.tls, LOCAL_CONNECT_TIMEOUT)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            answer_and_close(conn, SERVER_BAD_GATEWAY).await;
            return Err(io::Error::new(
                e.kind(),
                format!("cannot connect to the local service (answered 502): {e}"),
            ));
        }
    };
    let buffer = crate::serve::copy_buffer(&conn);
    crate::serve::forward_local(conn, stream, buffer, path).await
}

/// Proxy mode: runs `agent` and answers the `CONNECT` head of every relayed connection with
/// [`proxy`].
///
/// `limmat tunnel`'s own mode, not a stable API of the library (hidden from its docs; the
/// library's way is [`Agent::run`] with a handler such as [`crate::forward`]).
#[doc(hidden)]
pub async fn run_proxy(agent: Agent, local: LocalAddr, shutdown: CancellationToken) {
    let connector = agent.connector().clone();
    let path = agent.config().data_path;
    let serve = move |conn, local: LocalAddr| {
        let connector = connector.clone();
        async move { proxy(conn, &local, &connector, path).await }
    };
    run_mode(agent, local, shutdown, serve).await;
}

/// Runs `agent`, serving each relayed connection with `serve` and logging how it ended.
async fn run_mode<S, F, E>(agent: Agent, local: LocalAddr, shutdown: CancellationToken, serve: S)
where
    S: Fn(RelayedConn, LocalAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(u64, u64), E>> + Send + 'static,
    E: std::error::Error + 'static,
{
    let handler = move |conn: RelayedConn| {
        let work = serve(conn, local.clone());
        let local = local.clone();
        async move {
            match work.await {
                Ok((up, down)) => info!(%local, up, down, "relayed connection ended"),
                Err(e) if peer_gone(&e) => debug!(%local, "relayed connection cut: {e}"),
                Err(e) => warn!(%local, "relayed connection failed: {e}"),
            }
        }
    };
    agent.run(handler, shutdown).await;
}

/// Runs `mode` (server or proxy mode of `local`) and meanwhile warns if nothing accepts
/// connections at `local`, the commonest mistake (a wrong port, a service not started yet).
/// The tunnel runs anyway: the service may come up later. The probe is one TCP connection,
/// opened and closed, so `limmat tunnel` does it and the library leaves it to its caller.
#[doc(hidden)]
pub async fn with_local_check(local: &LocalAddr, mode: impl Future<Output = ()>) {
    let mut mode = std::pin::pin!(mode);
    tokio::select! {
        () = mode.as_mut() => return,
        () = check_local(local) => {}
    }
    mode.await;
}

/// Warns when nothing accepts a TCP connection at `local` within [`LOCAL_CHECK_TIMEOUT`].
async fn check_local(local: &LocalAddr) {
    let connect = TcpStream::connect((local.host.as_str(), local.port));
    match tokio::time::timeout(LOCAL_CHECK_TIMEOUT, connect).await {
        Ok(Ok(_)) => debug!(%local, "the local service accepts connections"),
        Ok(Err(e)) => warn!(
            %local,
            "nothing accepts connections at the local service {local} ({e}): clients will get an error until it does"
        ),
        Err(_) => warn!(
            %local,
            "the local service {local} did not accept a connection within {}s: clients will get an error until it does",
            LOCAL_CHECK_TIMEOUT.as_secs()
        ),
    }
}

/// Why proxy mode did not splice a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyModeError {
    #[error("no request head: {0}")]
    Head(#[from] HeadError),
    #[error("no request head within {}s", PROXY_HEAD_TIMEOUT.as_secs())]
    Timeout,
    #[error("method `{0}` is not CONNECT (answered 405)")]
    NotConnect(String),
    #[error("cannot connect to the local service (answered 502): {0}")]
    Local(io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Proxy mode for one relayed connection (2.9, checklist 39): reads one head of at most 16 KiB;
/// for `CONNECT`, connects to `local`, answers exactly the 19-byte `200` and splices, the bytes
/// that followed the head first. Otherwise answers `405`, or `502` when `local` refuses, and
/// closes. `local` is opened with `connector` (TLS for a `tls:` address). Returns the bytes
/// spliced (relay → local, local → relay).
///
/// `limmat tunnel`'s own mode, not a stable API of the library (hidden from its docs; the
/// library's way is [`Agent::run`] with a handler such as [`crate::forward`]).
#[doc(hidden)]
pub async fn proxy(
    mut conn: RelayedConn,
    local: &LocalAddr,
    connector: &Connector,
    path: DataPath,
) -> Result<(u64, u64), ProxyModeError> {
    let mut buf = Vec::new();
    let len = tokio::time::timeout(PROXY_HEAD_TIMEOUT, read_head(&mut conn, &mut buf))
        .await
        .map_err(|_| ProxyModeError::Timeout)??;
    let method = RequestHead::parse(&buf[..len]).method;
    if method != b"CONNECT" {
        let method = String::from_utf8_lossy(method).into_owned();
        answer_and_close(conn, PROXY_METHOD_NOT_ALLOWED).await;
        return Err(ProxyModeError::NotConnect(method));
    }
    let mut local_stream = match connector
        .connect(&local.host, local.port, local.tls, LOCAL_CONNECT_TIMEOUT)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            answer_and_close(conn, PROXY_BAD_GATEWAY).await;
            return Err(ProxyModeError::Local(e));
        }
    };
    conn.write_all(PROXY_OK).await?;
    local_stream.write_all(&buf[len..]).await?;
    let buffer = crate::serve::copy_buffer(&conn);
    Ok(crate::serve::forward_local(conn, local_stream, buffer, path).await?)
}

/// Writes a final answer, half-closes, and drains the peer's input briefly before closing.
async fn answer_and_close<S>(mut conn: S, answer: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if conn.write_all(answer).await.is_err() || conn.shutdown().await.is_err() {
        return;
    }
    let (mut input, mut sink) = ((&mut conn).take(LINGER_BYTES), tokio::io::sink());
    let _ = tokio::time::timeout(LINGER_TIME, tokio::io::copy(&mut input, &mut sink)).await;
}

/// Client mode: where the relay is and which device to reach.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    pub relay: RelayAddr,
    /// Validated and case-folded by [`TunnelClient::bind`].
    pub domain: String,
    pub connect_timeout: Duration,
    /// The wait for the relay's answer to `CONNECT` (the relay itself gives up sooner, with a
    /// `504`, when no device comes).
    pub response_timeout: Duration,
    /// How the relay is verified over `tls:` or after an `https` redirect.
    pub tls: TlsOptions,
    /// The outbound proxy to the relay (`--relay-proxy`).
    pub relay_proxy: crate::RelayProxy,
    /// Tunnels open at once; at the cap, local connections wait in the kernel's backlog
    /// instead of each opening a relay connection.
    pub max_sockets: usize,
    /// How a tunnel over plain TCP moves its bytes (`--data-path`).
    pub data_path: DataPath,
}

impl ClientConfig {
    pub fn new(relay: RelayAddr, domain: impl Into<String>) -> Self {
        Self {
            relay,
            domain: domain.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            tls: TlsOptions::default(),
            relay_proxy: crate::RelayProxy::Direct,
            max_sockets: crate::agent::DEFAULT_MAX_SOCKETS,
            data_path: DataPath::Auto,
        }
    }
}

/// Why client mode cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] AgentError),
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: LocalAddr, error: io::Error },
    #[error(
        "client mode listens for plain TCP, not TLS: give the local address {0} without `tls:`"
    )]
    TlsListener(LocalAddr),
}

/// Client mode: a bound local listener, ready to [`run`](TunnelClient::run).
#[derive(Debug)]
pub struct TunnelClient {
    listener: TcpListener,
    home: Target,
    config: ClientConfig,
    connector: Connector,
}

impl TunnelClient {
    /// Validates the configuration and binds `local` (port 0 picks a free port; see
    /// [`Self::local_addr`]).
    pub async fn bind(local: &LocalAddr, mut config: ClientConfig) -> Result<Self, ClientError> {
        config.domain = parse_domain(&config.domain).map_err(|error| AgentError::Domain {
            domain: config.domain.clone(),
            error,
        })?;
        if local.tls {
            return Err(ClientError::TlsListener(local.clone()));
        }
        let connector = relay_connector(&config.relay, &config.tls, &config.relay_proxy)?;
        let listener = TcpListener::bind((local.host.as_str(), local.port))
            .await
            .map_err(|error| ClientError::Bind {
                addr: local.clone(),
                error,
            })?;
        let home = Target {
            host: config.relay.host.clone(),
            port: config.relay.port,
            tls: config.relay.tls,
            domain: config.domain.clone(),
        };
        Ok(Self {
            listener,
            home,
            config,
            connector,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts local connections until `shutdown`, tunnelling each through the relay. On
    /// shutdown, open tunnels are closed; returns once every task has ended.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.local_addr() {
            Ok(addr) => info!(relay = %self.home, %addr, "tunnel client listening"),
            Err(e) => info!(relay = %self.home, error = %e, "tunnel client listening"),
        }
        let serve = |local, peer: SocketAddr| {
            let (home, config, connector) = (
                self.home.clone(),
                self.config.clone(),
                self.connector.clone(),
            );
            async move { client_connection(local, &home, &config, &connector).await }
                .instrument(info_span!("client", %peer))
        };
        accept_local(&self.listener, self.config.max_sockets, &shutdown, serve).await;
        info!("tunnel client stopped");
    }
}

/// Accepts local connections until `shutdown` and serves each with `serve` in a task that
/// `shutdown` also ends; returns once every task has ended. A permit is taken before each
/// accept, so a flood of local connections cannot open more than `max_sockets` upstream ones.
pub(crate) async fn accept_local<F, Fut>(
    listener: &TcpListener,
    max_sockets: usize,
    shutdown: &CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let sockets = Arc::new(tokio::sync::Semaphore::new(max_sockets.max(1)));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = sockets.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (local, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: pause instead of spinning.
                warn!("accept failed: {e}");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let (task, shutdown) = (serve(local, peer), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = task => {}
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// The error, or one of its sources, is the relay cancelling a mux stream (RST_STREAM CANCEL):
/// its client hung up, which is how connections end under load, not a failure an operator has
/// to act on. Anything else, a reset from either side included (the error cannot tell which
/// side's socket it came from), stays a failure.
fn peer_gone(e: &(dyn std::error::Error + 'static)) -> bool {
    let cancelled = |e: &h2::Error| e.reason() == Some(h2::Reason::CANCEL);
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return cancelled(h2);
        }
        // `limmat_mux` wraps `h2`'s errors in an `io::Error`, whose `source()` skips them.
        if let Some(h2) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<h2::Error>())
        {
            return cancelled(h2);
        }
        next = err.source();
    }
    false
}

/// One local connection in client mode.
async fn client_connection(
    local: TcpStream,
    home: &Target,
    config: &ClientConfig,
    connector: &Connector,
) {
    let _ = transport::tune(&local);
    match open_tunnel(home, config, connector).await {
        Ok((relay, leftover)) => {
            let mut local = local;
            if let Err(e) = local.write_all(&leftover).await {
                debug!("local connection closed early: {e}");
                return;
            }
            match client_splice(local, relay, config.data_path).await {
                Ok((up, down)) => info!(up, down, "tunnel ended"),
                Err(e) => info!("tunnel ended: {e}"),
            }
        }
        // Dropping `local` closes it: the user's program sees the failure at once.
        Err(e) => warn!("tunnel refused: {e}"),
    }
}

/// Client mode's pipe: in the kernel when the relay connection is plain TCP (and `path` allows
/// it), else copied; returns the bytes moved (local → relay, relay → local).
async fn client_splice(
    local: TcpStream,
    relay: RelayStream,
    path: DataPath,
) -> io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    if let (Some(mode), RelayStream::Plain(relay)) = (path.splice_mode(), &relay) {
        return crate::serve::tcp_both_ways(&local, relay, mode).await;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    splice(local, relay).await
}

/// Why client mode could not open a tunnel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    #[error("cannot connect to the relay {0}: {1}")]
    Connect(String, io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no response within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("{0}")]
    Head(#[from] HeadError),
    #[error("the relay or device answered {0}")]
    Status(u16),
    #[error("{0}")]
    Redirect(#[from] RedirectError),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// Sends `CONNECT /<domain>` (2.8.1, checklist 40) and reads the answer, following `307`/`308`.
/// On `200`, returns the relay connection and the bytes read after the `200` head.
async fn open_tunnel(
    home: &Target,
    config: &ClientConfig,
    connector: &Connector,
) -> Result<(RelayStream, Vec<u8>), TunnelError> {
    let mut target = home.clone();
    for _hop in 0..=MAX_REDIRECTS {
        let mut relay = connector
            .connect_relay(
                &target.host,
                target.port,
                target.tls,
                config.connect_timeout,
            )
            .await
            .map_err(|e| TunnelError::Connect(target.to_string(), e))?;
        relay
            .write_all(&connect_request(&target.domain, &target.host, target.port))
            .await?;
        let mut buf = Vec::new();
        let reply = tokio::time::timeout(
            config.response_timeout,
            read_final_reply(&mut relay, &mut buf),
        )
        .await
        .map_err(|_| TunnelError::Timeout(config.response_timeout))??;
        match reply.status {
            200 => {
                debug!(relay = %target, early_bytes = buf.len(), "tunnel open");
                return Ok((relay, buf));
            }
            307 | 308 => {
                let to = Target::from_location(reply.location.as_deref())?;
                info!(from = %target, %to, "redirected");
                target = to;
            }
            status => return Err(TunnelError::Status(status)),
        }
    }
    Err(TunnelError::TooManyRedirects)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mux stream the relay cancelled (its client hung up) is logged at debug; resets, other
    /// stream errors and a local service that refuses still warn.
    #[test]
    fn a_peer_that_went_away_is_not_a_failure() {
        let h2 = |reason| io::Error::new(io::ErrorKind::ConnectionReset, h2::Error::from(reason));
        assert!(peer_gone(&h2(h2::Reason::CANCEL)));
        assert!(peer_gone(&ProxyModeError::Io(h2(h2::Reason::CANCEL))));
        assert!(!peer_gone(&h2(h2::Reason::PROTOCOL_ERROR)));
        assert!(!peer_gone(&io::Error::from(io::ErrorKind::ConnectionReset)));
        assert!(!peer_gone(&io::Error::from(io::ErrorKind::UnexpectedEof)));
        assert!(!peer_gone(&ProxyModeError::Local(h2(h2::Reason::CANCEL))));
        assert!(!peer_gone(&ProxyModeError::Timeout));
    }
}
