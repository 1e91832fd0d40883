//! TLS for tests: self-signed certificates written to PEM files, rustls clients that trust
//! them, and bounded reads on TLS streams.

use super::PATIENCE;
use limmat_relay::CertPaths;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `names`, written to PEM files in a fresh directory.
pub struct Pem {
    pub der: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub paths: CertPaths,
    _dir: TempDir,
}

pub struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn pem(names: &[&str]) -> Pem {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("limmat-tls-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let paths = CertPaths {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&paths.cert, cert.cert.pem()).unwrap();
    std::fs::write(&paths.key, cert.key_pair.serialize_pem()).unwrap();
    Pem {
        der: cert.cert.der().clone(),
        key: PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap(),
        paths,
        _dir: TempDir(dir),
    }
}

pub fn connector(trusted: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

pub async fn tls_connect(
    addr: std::net::SocketAddr,
    sni: &str,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    connector.connect(name, tcp).await
}

pub async fn read_exact_tls<S: tokio::io::AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    buf
}

pub async fn read_to_end_tls<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("EOF in time");
    buf
}

/// A client that trusts only `device_cert` (so it fails if a relay terminated its TLS), sends
/// `secret request` to `sni` at `addr` and returns the 13-byte answer.
pub fn spawn_secret_client(
    addr: std::net::SocketAddr,
    sni: &'static str,
    device_cert: &Pem,
) -> tokio::task::JoinHandle<Vec<u8>> {
    let only_device = connector(&[&device_cert.der], &[]);
    tokio::spawn(async move {
        let mut tls = tls_connect(addr, sni, &only_device).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tls, b"secret request")
            .await
            .unwrap();
        let mut answer = vec![0; 13];
        tls.read_exact(&mut answer).await.unwrap();
        answer
    })
}

/// A pass-through device's side: terminates the forwarded client's TLS with its own
/// certificate (the client asked for `sni`), reads `secret request` and answers `secret answer`.
pub async fn serve_secret_as_device(device: TcpStream, device_cert: &Pem, sni: &str) {
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![device_cert.der.clone()], device_cert.key.clone_key())
        .unwrap();
    let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(server))
        .accept(device)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.server_name(), Some(sni));
    assert_eq!(read_exact_tls(&mut tls, 14).await, b"secret request");
    tokio::io::AsyncWriteExt::write_all(&mut tls, b"secret answer")
        .await
        .unwrap();
}
