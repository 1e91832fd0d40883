//! TLS on the internal hop (`internal_tls`, spec 7.1): forwarded tls-terminated clients cross
//! it in clear otherwise. The internal listener answers with the relay's own certificates
//! (every node has the same ones, 7.1); a node connecting to a peer verifies it against the
//! CA certificates of `internal_ca` and the relay's first hostname, which every node's
//! certificate names. TLS itself is rustls; this file only builds its configurations and
//! opens connections, plain or not, for the forwarding client, the probes and the drain.

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::either::Either;

/// A connection to a peer's internal listener: plain, or TLS when `internal_tls` is on.
pub type Outbound = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Both sides of the internal hop's TLS.
#[derive(Clone)]
pub struct InternalTls {
    pub(crate) acceptor: TlsAcceptor,
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for InternalTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why the internal hop's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InternalTlsError {
    #[error("cluster: cannot read internal_ca {0}: {1}")]
    Ca(std::path::PathBuf, String),
    #[error("cluster: internal_ca {0} holds no usable CA certificate")]
    NoCa(std::path::PathBuf),
    #[error("cluster: {0:?} is not a name a certificate can be verified against")]
    Name(String),
    #[error("cluster: TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl InternalTls {
    /// `acceptor` serves the relay's certificates; peers are verified against the CA
    /// certificates in the PEM file `ca` and the name `name` (the relay's first hostname).
    pub fn new(acceptor: TlsAcceptor, ca: &Path, name: &str) -> Result<Self, InternalTlsError> {
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| InternalTlsError::Ca(ca.to_owned(), e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| InternalTlsError::Ca(ca.to_owned(), e.to_string()))?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(InternalTlsError::NoCa(ca.to_owned()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| InternalTlsError::Name(name.to_owned()))?;
        Ok(Self {
            acceptor,
            connector: TlsConnector::from(Arc::new(client)),
            name,
        })
    }
}

/// Connects to a peer's internal listener, with TLS when `tls` is given. The caller bounds
/// the time.
pub async fn connect(addr: SocketAddr, tls: Option<&InternalTls>) -> io::Result<Outbound> {
    let tcp = TcpStream::connect(addr).await?;
    crate::socket::configure(&tcp);
    match tls {
        None => Ok(Either::Left(tcp)),
        Some(tls) => {
            let stream = tls.connector.connect(tls.name.clone(), tcp).await?;
            Ok(Either::Right(Box::new(stream)))
        }
    }
}
