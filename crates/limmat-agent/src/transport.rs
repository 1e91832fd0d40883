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

/// How long the kernel waits before probing an idle connection, and then between probes. A
/// waiting device connection is silent for up to 75 s, so dead NAT state is found within
/// minutes rather than hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How TLS servers (the relay, or a `tls:` local service) are authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM certificates trusted in addition to the system roots (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (`--no-certificate-verification`). The connection is then
    /// encrypted but not authenticated: anyone on the path can impersonate the relay.
    pub no_certificate_verification: bool,
}

/// Why no TLS client configuration could be built.
#[derive(Debug, thiserror::Error)]
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
            tls: Arc::new(Mutex::new(None)),
        }
    }

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
            let connector = self.tls_connector().map_err(io::Error::other)?;
            // An IP literal becomes `ServerName::IpAddress`, for which rustls sends no SNI;
            // the certificate must then name the IP address.
            let name = ServerName::try_from(host.to_owned()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{host}` is not a valid TLS server name"),
                )
            })?;
            let stream = connector.connect(name, tcp).await?;
            Ok(RelayStream::Tls(Box::new(stream)))
        };
        tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting timed out after {}s", timeout.as_secs()),
            )
        })?
    }
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
    Ok(builder
        .with_root_certificates(root_store(options.ca_file.as_ref())?)
        .with_no_client_auth())
}

/// The system roots plus the certificates of `ca_file`.
fn root_store(ca_file: Option<&PathBuf>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
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
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
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
    Ok(roots)
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
    /// Boxed: the TLS state is large, and most connections wait idle for a long time.
    Tls(Box<TlsStream<TcpStream>>),
}

impl RelayStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
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
        matches!(self, Self::Tls(_))
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
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to `host:port`, trying each resolved address in turn. The socket gets
/// `TCP_NODELAY` (heads and small interactive writes go out at once) and TCP keepalive.
async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last_err = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                tune(&stream)?;
                return Ok(stream);
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
    }))
}

/// Sets `TCP_NODELAY` and keepalive on a connected or accepted socket.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}
