//! Opening connections, plain or TLS: to the relay and to the local service.
//!
//! Everything the agent says to the relay goes over a [`RelayStream`], so that the handshake,
//! the pool, [`RelayedConn`](crate::RelayedConn) and the tunnel modes need not know whether the
//! bytes are encrypted (spec 2.6, 2.9: `tls:`, or port 443). A [`Connector`] holds the TLS
//! client configuration: certificates are verified against the system roots plus an optional
//! CA file, or, only when asked for explicitly, not at all. The configuration is built once
//! (reading the roots is file I/O) and shared by every connection.
//!
//! SNI is sent only for a DNS name: for an IP literal rustls sends none, which is what the
//! relay needs to tell a device from an SNI-routed client (2.6.4).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, warn};

use crate::outbound::{self, ProxyPlan, ProxyScheme};
use crate::verify::{self, PinningVerifier};

/// How long the kernel waits before probing an idle connection, and then between probes. A
/// waiting device connection is silent for up to 75 s, so dead NAT state is found within
/// minutes rather than hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How TLS servers (the relay, or a `tls:` local service) are authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM certificates trusted in addition to the system roots (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (`--no-certificate-verification`). The connection is then
    /// encrypted but not authenticated: anyone on the path can impersonate the relay.
    pub no_certificate_verification: bool,
}

impl TlsOptions {
    /// Trusts the PEM certificates of `path` as well (`--ca-file`).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Accepts any certificate (`--no-certificate-verification`; for tests only).
    pub fn without_certificate_verification(mut self) -> Self {
        self.no_certificate_verification = true;
        self
    }
}

/// Why no TLS client configuration could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read the CA file {}: {error}", path.display())]
    CaFileRead { path: PathBuf, error: io::Error },
    #[error("the CA file {} contains no PEM certificate", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("the CA file {} has a bad certificate: {reason}", path.display())]
    CaFileBad { path: PathBuf, reason: String },
    #[error(
        "no usable system root certificates ({0}); give a CA file (--ca-file) to verify the server"
    )]
    NoSystemRoots(String),
    #[error("cannot set up TLS: {0}")]
    Config(rustls::Error),
}

/// Opens plain or TLS connections with one [`TlsOptions`]. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    options: TlsOptions,
    /// The outbound proxy for relay connections; empty (direct) unless configured.
    proxy: Arc<ProxyPlan>,
    /// Built at the first TLS connection (or by [`Connector::prepare`]) and kept.
    tls: Arc<Mutex<Option<TlsConnector>>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `options`; nothing is read until TLS is first needed. Logs a warning
    /// when certificate verification is off, so that it shows at every start.
    pub fn new(options: TlsOptions) -> Self {
        if options.no_certificate_verification {
            warn!("TLS certificate verification is OFF: TLS servers are not authenticated");
        }
        Self {
            options,
            proxy: Arc::default(),
            tls: Arc::new(Mutex::new(None)),
        }
    }

    /// The same connector, opening relay connections ([`Connector::connect_relay`]) through
    /// `plan`'s proxy.
    pub(crate) fn with_proxy(mut self, plan: ProxyPlan) -> Self {
        self.proxy = Arc::new(plan);
        self
    }

    /// The TLS options.
    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// Builds the TLS configuration now (reading the CA file and the system roots), so that a
    /// missing or empty CA file is an error at start rather than a failure retried by the
    /// backoff.
    pub fn prepare(&self) -> Result<(), TlsError> {
        self.tls_connector().map(drop)
    }

    fn tls_connector(&self) -> Result<TlsConnector, TlsError> {
        // The data is a cached value, consistent even if a holder panicked.
        let mut slot = self.tls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tls) = &*slot {
            return Ok(tls.clone());
        }
        let tls = TlsConnector::from(Arc::new(client_config(&self.options)?));
        *slot = Some(tls.clone());
        Ok(tls)
    }

    /// Connects to `host:port`, with TLS when `tls` is set, all within `timeout` (2.9: "TCP/TLS
    /// connected (timeout 30 s)"). A certificate that does not verify is an
    /// [`io::ErrorKind::InvalidData`] error.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        tls: bool,
        timeout: Duration,
    ) -> io::Result<RelayStream> {
        let attempt = async {
            let tcp = connect_tcp(host, port).await?;
            if !tls {
                return Ok(RelayStream::Plain(tcp));
            }
            let tls = self
                .tls_over(host, tcp)
                .await
                .map_err(|e| verify::explain(e, host))?;
            Ok(RelayStream::Tls(Box::new(tls)))
        };
        within(timeout, attempt, None).await
    }

    /// TLS to `host` over `io`.
    async fn tls_over<S>(&self, host: &str, io: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let connector = self.tls_connector().map_err(io::Error::other)?;
        // An IP literal becomes `ServerName::IpAddress`, for which rustls sends no SNI;
        // the certificate must then name the IP address.
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{host}` is not a valid TLS server name"),
            )
        })?;
        connector.connect(name, io).await
    }

    /// Connects to the relay at `host:port` like [`Connector::connect`], through the outbound
    /// proxy when one is configured for that relay and `no_proxy` does not exempt it.
    pub async fn connect_relay(
        &self,
        host: &str,
        port: u16,
        tls: bool,
        timeout: Duration,
    ) -> io::Result<RelayStream> {
        if self.proxy.is_direct() {
            return self.connect(host, port, tls, timeout).await;
        }
        let Some((proxy, _)) = self.proxy.for_relay(host, tls) else {
            return self.connect(host, port, tls, timeout).await;
        };
        let at = outbound::authority(&proxy.host, proxy.port);
        let attempt = async {
            let tcp = connect_tcp(&proxy.host, proxy.port).await?;
            let tunnel = match proxy.scheme {
                ProxyScheme::Http => {
                    let mut tcp = tcp;
                    outbound::tunnel_http(&mut tcp, proxy, host, port).await?;
                    RelayStream::Plain(tcp)
                }
                ProxyScheme::Https => {
                    let mut to_proxy = self.tls_over(&proxy.host, tcp).await?;
                    outbound::tunnel_http(&mut to_proxy, proxy, host, port).await?;
                    RelayStream::Tls(Box::new(to_proxy))
                }
                _ => RelayStream::Plain(outbound::tunnel_socks(tcp, proxy, host, port).await?),
            };
            if !tls {
                return Ok(tunnel);
            }
            let stream = match tunnel {
                RelayStream::Plain(tcp) => {
                    RelayStream::Tls(Box::new(self.tls_over(host, tcp).await?))
                }
                inner => RelayStream::Nested(Box::new(self.tls_over(host, inner).await?)),
            };
            Ok(stream)
        }
        .await
        .map_err(|e| verify::explain(inspected(e, host), host));
        within(timeout, async { attempt }, Some(&at)).await
    }
}

/// Runs `attempt` within `timeout`; the error names the proxy when there is one.
async fn within<T>(
    timeout: Duration,
    attempt: impl Future<Output = io::Result<T>>,
    proxy: Option<&str>,
) -> io::Result<T> {
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        let secs = timeout.as_secs();
        io::Error::new(
            io::ErrorKind::TimedOut,
            match proxy {
                Some(at) => format!("the proxy at {at} did not answer within {secs}s"),
                None => format!("connecting timed out after {secs}s"),
            },
        )
    })?
}

/// A relay certificate from an unknown issuer behind a proxy most likely comes from a
/// TLS-inspecting proxy: say so, with the way out.
fn inspected(e: io::Error, relay: &str) -> io::Error {
    let unknown_issuer = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            )
        });
    if !unknown_issuer {
        return e;
    }
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "a TLS-inspecting proxy seems to answer for the relay {relay} (its certificate has an \
             unknown issuer): add the proxy's CA with --ca-file, or ask for an exception for the \
             relay's host"
        ),
    )
}

/// The rustls client configuration for `options`: TLS 1.2 and 1.3 on ring (M6), no ALPN (the
/// relay would select `http/1.1` at most, and the agent speaks no HTTP after the `101`).
fn client_config(options: &TlsOptions) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    if options.no_certificate_verification {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth());
    }
    let (roots, pinned) = root_store(options.ca_file.as_ref())?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinningVerifier::new(webpki, pinned)))
        .with_no_client_auth())
}

/// The system roots plus the certificates of `ca_file`, and those certificates themselves (a
/// server certificate byte-identical to one of them is accepted as itself).
type Roots = (RootCertStore, Vec<CertificateDer<'static>>);

fn root_store(ca_file: Option<&PathBuf>) -> Result<Roots, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
    let native = rustls_native_certs::load_native_certs();
    // One unreadable file or odd certificate in the system store must not stop the agent.
    for e in &native.errors {
        debug!("system root certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "system root certificates loaded");
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|error| TlsError::CaFileRead {
            path: path.clone(),
            error,
        })?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let bad = |reason: String| TlsError::CaFileBad {
                path: path.clone(),
                reason,
            };
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
            pinned.push(cert);
            found += 1;
        }
        if found == 0 {
            return Err(TlsError::CaFileEmpty { path: path.clone() });
        }
        debug!(path = %path.display(), certificates = found, "CA file loaded");
    } else if added == 0 {
        let why = match native.errors.first() {
            Some(e) => e.to_string(),
            None => "the system store is empty".to_owned(),
        };
        return Err(TlsError::NoSystemRoots(why));
    }
    Ok((roots, pinned))
}

/// The verifier of `--no-certificate-verification`: accepts every certificate for every name.
/// Handshake signatures are still checked, against the presented (unverified) key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to the relay (or to a local service): plain TCP or TLS over TCP.
///
/// Shutting down a TLS stream sends `close_notify` and then a FIN, and the stream can still be
/// read afterwards, so half-close crosses TLS legs (M5).
#[derive(Debug)]
pub enum RelayStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large, and most connections wait idle for a long time. Also
    /// a plain relay reached through an `https://` proxy (TLS to the proxy).
    Tls(Box<TlsStream<TcpStream>>),
    /// TLS to the relay inside TLS to an `https://` proxy.
    Nested(Box<TlsStream<RelayStream>>),
}

impl RelayStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
            Self::Nested(s) => s.get_ref().0.tcp(),
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }
}

impl From<TcpStream> for RelayStream {
    fn from(stream: TcpStream) -> Self {
        Self::Plain(stream)
    }
}

impl AsyncRead for RelayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Nested(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Nested(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Self::Nested(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            Self::Nested(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Nested(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Nested(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to `host:port` with Happy Eyeballs (RFC 8305): the name is resolved at every
/// call (DNS changes and cluster nodes are picked up on reconnect), the addresses are
/// interleaved by family, a new attempt starts every [`ATTEMPT_DELAY`] (or at once when one
/// fails) without cancelling the earlier ones, and the first to connect wins. The socket gets
/// `TCP_NODELAY` (heads and small interactive writes go out at once) and TCP keepalive, except
/// a name with one loopback address (a local service, mostly), which gets `TCP_NODELAY` only.
async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    let stream = match addrs.as_slice() {
        // One address, the usual case for a local service: nothing to race, so no task.
        [addr] => {
            let stream = attempt(*addr).await?;
            if addr.ip().is_loopback() {
                // A loopback peer cannot vanish without the kernel knowing, so keepalive would
                // never find anything: three `setsockopt` calls saved per connection.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            stream
        }
        _ => race(&interleave(addrs), ATTEMPT_DELAY).await?,
    };
    tune(&stream)?;
    Ok(stream)
}

/// One connection attempt, given up after [`ATTEMPT_TIMEOUT`].
async fn attempt(addr: SocketAddr) -> io::Result<TcpStream> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{addr} did not answer within {}s",
                ATTEMPT_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// RFC 8305's "Connection Attempt Delay".
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// One address that neither answers nor refuses is given up after this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses in alternating families, starting with the family of the first (RFC 8305 4).
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs[0].is_ipv6();
    let (mut a, mut b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.drain(..), b.drain(..));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Races connections to `addrs` in order, starting the next `delay` after the previous one
/// or as soon as one fails; returns the first that connects (the others are dropped).
async fn race(addrs: &[SocketAddr], delay: Duration) -> io::Result<TcpStream> {
    let mut running = tokio::task::JoinSet::new();
    let mut next = addrs.iter().copied();
    let mut last_err = None;
    loop {
        // Each turn starts the next address: at first, after `delay`, or after a failure.
        {
            if let Some(addr) = next.next() {
                running.spawn(attempt(addr));
            }
        }
        if running.is_empty() {
            return Err(last_err.unwrap_or_else(|| io::Error::other("no address to connect to")));
        }
        let more = next.len() > 0;
        tokio::select! {
            Some(done) = running.join_next() => {
                match done {
                    Ok(Ok(stream)) => return Ok(stream),
                    Ok(Err(e)) => last_err = Some(e),
                    Err(e) => last_err = Some(io::Error::other(e)),
                }
            }
            () = tokio::time::sleep(delay), if more => {}
        }
    }
}

/// Sets `TCP_NODELAY` and keepalive on a connected or accepted socket.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpSocket};

    /// A loopback listener that never answers: its accept queue is full and never drained,
    /// so the kernel drops further SYNs and a connect hangs (as with a black-holed route).
    async fn black_hole() -> (TcpListener, SocketAddr, Vec<TcpStream>) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                _ => return (listener, addr, queued),
            }
        }
        panic!("the accept queue never filled");
    }

    /// RFC 8305: the first address never answers, the second does: connected in under 1 s,
    /// to the second.
    #[tokio::test]
    async fn happy_eyeballs_skips_a_black_holed_first_address() {
        let (_hole, dead, _queued) = black_hole().await;
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let start = std::time::Instant::now();
        let stream = race(&[dead, live_addr], ATTEMPT_DELAY).await.unwrap();
        let took = start.elapsed();
        eprintln!("connected past a black-holed first address in {took:?}");
        assert_eq!(stream.peer_addr().unwrap(), live_addr);
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}
