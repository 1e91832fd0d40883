//! TLS on the device side (spec 2.6 and 2.9): the agent, the tunnel modes and their
//! configuration against a fake TLS relay, a tokio-rustls server on 127.0.0.1 whose
//! certificates rcgen makes per test.
//!
//! The fake relay reads the handshake through its TLS acceptor, so a head that arrives proves
//! that it came inside TLS, and the server connection tells which SNI the agent sent.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{FakeRelay, Peer, Running, UPGRADE};
use limmat_agent::tunnel::{self, ClientConfig, ClientError, TunnelClient};
use limmat_agent::{
    Agent, AgentConfig, AgentError, CancellationToken, LocalAddr, RelayAddr, TlsError, TlsOptions,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let server = server_config(vec![cert.der().clone(), ca.der().clone()], &key);
        Self {
            ca_pem: ca.pem(),
            server,
        }
    }

    /// The CA certificate in a file, for `ca_file`.
    fn ca_file(&self) -> TempFile {
        TempFile::with(self.ca_pem.as_bytes())
    }
}

/// A TLS server configuration presenting `chain` with `key`.
fn server_config(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    Arc::new(config)
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn with(contents: &[u8]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "limmat-agent-tls-{}-{}.pem",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

type TlsPeer = Peer<TlsStream<TcpStream>>;

/// A TLS listener that plays the relay (or a local TLS service).
struct TlsRelay {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    port: u16,
}

impl TlsRelay {
    async fn bind(pki: &Pki) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = TlsAcceptor::from(Arc::clone(&pki.server));
        Self {
            listener,
            acceptor,
            port,
        }
    }

    /// This relay as `tls:<host>:<port>`.
    fn addr(&self, host: &str) -> RelayAddr {
        RelayAddr {
            host: host.into(),
            port: self.port,
            tls: true,
        }
    }

    /// Accepts a TCP connection and runs the TLS handshake; returns the SNI the client sent.
    async fn try_accept(&self) -> std::io::Result<(TlsPeer, Option<String>)> {
        let (tcp, _) = self.listener.accept().await?;
        let stream = self.acceptor.accept(tcp).await?;
        let sni = stream.get_ref().1.server_name().map(str::to_owned);
        Ok((Peer::new(stream), sni))
    }

    /// Accepts a TLS connection and reads its first head, decrypted.
    async fn accept_head(&self) -> (TlsPeer, Option<String>, Vec<u8>) {
        let (mut peer, sni) = self.try_accept().await.unwrap();
        let head = peer.read_head().await;
        (peer, sni, head)
    }
}

/// The canonical handshake an agent sends to `host:port` (2.3), with the optional fields.
fn handshake(host: &str, port: u16, domain: &str, extra: &str) -> String {
    format!(
        "POST /{domain} HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\
         Host: {host}:{port}\r\n{extra}\r\n"
    )
}

/// Half-close across the TLS leg (M5): `near` sends and shuts down, `peer` reads to a clean
/// end, then answers, and `near` still receives the answer. `read_to_end` on the TLS `peer`
/// fails on a FIN without `close_notify`, so Ok means the shutdown sent one.
async fn half_close<S: AsyncRead + AsyncWrite + Unpin>(near: &mut S, peer: &mut TlsPeer) {
    near.write_all(b"up").await.unwrap();
    near.shutdown().await.unwrap();
    let mut up = Vec::new();
    peer.stream.read_to_end(&mut up).await.unwrap();
    assert_eq!(up, b"up");
    peer.send(b"down").await;
    peer.stream.shutdown().await.unwrap();
    let mut down = Vec::new();
    near.read_to_end(&mut down).await.unwrap();
    assert_eq!(down, b"down");
}

fn config(relay: RelayAddr, ca_file: Option<&TempFile>) -> AgentConfig {
    let mut config = AgentConfig::new(relay, "dom");
    config.tls.ca_file = ca_file.map(|f| f.path().to_owned());
    config
}

/// A DNS-name relay gets the handshake inside TLS with SNI; the `101` hands over a TLS
/// `RelayedConn`, early bytes first, whose half-close is a `close_notify` that leaves the
/// other direction open (M5).
#[tokio::test]
async fn handshake_inside_tls_with_sni_and_a_working_101() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let relay = TlsRelay::bind(&pki).await;
    let (mut agent, mut conns) = Running::collecting(config(relay.addr("localhost"), Some(&ca)));
    let (mut peer, sni, head) = relay.accept_head().await;
    assert_eq!(sni.as_deref(), Some("localhost"));
    assert_eq!(
        String::from_utf8_lossy(&head),
        handshake("localhost", relay.port, "dom", "")
    );
    peer.send(&[UPGRADE, b"early "].concat()).await;
    let mut conn = conns.recv().await.unwrap();
    assert!(conn.is_tls());
    peer.send(b"late").await;
    let mut got = [0u8; 10];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"early late");
    // The replacement connection is opened over TLS too.
    let (_next, sni, _) = relay.accept_head().await;
    assert_eq!(sni.as_deref(), Some("localhost"));

    half_close(&mut conn, &mut peer).await;
    drop(conn);
    agent.until(|s| s.relayed == 0 && s.upgrades == 1).await;
    agent.stop().await;
}

/// 2.6.4: no SNI for an IP-literal relay address; the certificate is checked against the IP.
#[tokio::test]
async fn no_sni_for_an_ip_literal() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let relay = TlsRelay::bind(&pki).await;
    let (agent, _conns) = Running::collecting(config(relay.addr("127.0.0.1"), Some(&ca)));
    let (_peer, sni, head) = relay.accept_head().await;
    assert_eq!(sni, None);
    assert_eq!(
        String::from_utf8_lossy(&head),
        handshake("127.0.0.1", relay.port, "dom", "")
    );
    agent.stop().await;
}

/// An untrusted certificate fails the attempt, which backs off and tries again: no panic, no
/// handshake sent. `ca_file` trusting another CA must not help.
#[tokio::test(start_paused = true)]
async fn an_untrusted_certificate_fails_and_backs_off() {
    let pki = Pki::new();
    let other_ca = Pki::new().ca_file();
    let relay = TlsRelay::bind(&pki).await;
    let (mut agent, _conns) = Running::collecting(config(relay.addr("localhost"), Some(&other_ca)));
    for attempt in 1..=2 {
        assert!(relay.try_accept().await.is_err());
        let status = agent.until(|s| s.failures == attempt).await;
        assert_eq!((status.handshakes, status.openings), (0, attempt));
    }
    agent.stop().await;
}

/// `--no-certificate-verification` accepts a certificate no root vouches for.
#[tokio::test]
async fn no_certificate_verification_accepts_any_certificate() {
    let pki = Pki::new();
    let relay = TlsRelay::bind(&pki).await;
    let mut config = config(relay.addr("localhost"), None);
    config.tls.no_certificate_verification = true;
    let (agent, _conns) = Running::collecting(config);
    let (_peer, sni, head) = relay.accept_head().await;
    assert_eq!(sni.as_deref(), Some("localhost"));
    assert_eq!(
        String::from_utf8_lossy(&head),
        handshake("localhost", relay.port, "dom", "")
    );
    agent.stop().await;
}

/// `--relay-security transport/pass-through` adds its field after `Authorization`.
#[tokio::test]
async fn pass_through_is_announced() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let relay = TlsRelay::bind(&pki).await;
    let mut config = config(relay.addr("localhost"), Some(&ca));
    config.pass_through = true;
    config.secret_key = Some("k".into());
    let (agent, _conns) = Running::collecting(config);
    let (_peer, _, head) = relay.accept_head().await;
    assert_eq!(
        String::from_utf8_lossy(&head),
        handshake(
            "localhost",
            relay.port,
            "dom",
            "Authorization: Bearer k\r\nX-Relay-Security: transport/pass-through\r\n"
        )
    );
    agent.stop().await;
}

/// 2.9: a redirect connects "with TLS exactly when the scheme is https", from a plain relay.
#[tokio::test]
async fn an_https_redirect_switches_to_tls() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let home = FakeRelay::bind().await;
    let relay = TlsRelay::bind(&pki).await;
    let (agent, mut conns) = Running::collecting(config(home.addr(), Some(&ca)));
    let (mut peer, _) = home.accept_head().await;
    peer.send(
        format!(
            "HTTP/1.1 307 \r\nLocation: https://localhost:{}/NewDom\r\n\r\n",
            relay.port
        )
        .as_bytes(),
    )
    .await;
    let (mut there, sni, head) = relay.accept_head().await;
    assert_eq!(sni.as_deref(), Some("localhost"));
    assert_eq!(
        String::from_utf8_lossy(&head),
        handshake("localhost", relay.port, "newdom", "")
    );
    there.send(UPGRADE).await;
    assert!(conns.recv().await.unwrap().is_tls());
    agent.stop().await;
}

/// A TLS relay that redirects to plain HTTP is not followed: the key would travel in clear.
#[tokio::test]
async fn a_redirect_from_tls_to_plain_http_is_refused() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let relay = TlsRelay::bind(&pki).await;
    let plain = FakeRelay::bind().await;
    let mut cfg = config(relay.addr("localhost"), Some(&ca));
    cfg.secret_key = Some("k3y".into());
    let (mut agent, _conns) = Running::collecting(cfg);
    let (mut peer, _, _) = relay.accept_head().await;
    peer.send(
        format!(
            "HTTP/1.1 307 \r\nLocation: http://127.0.0.1:{}/dom\r\n\r\n",
            plain.port
        )
        .as_bytes(),
    )
    .await;
    // The agent counts a failure and comes back to the TLS relay, never to the plain one.
    agent.until(|s| s.failures >= 1).await;
    let (_again, _, head) = relay.accept_head().await;
    assert!(String::from_utf8_lossy(&head).contains("Authorization: Bearer k3y"));
    let stray = tokio::time::timeout(std::time::Duration::from_millis(200), plain.accept()).await;
    assert!(stray.is_err(), "the agent connected to the plain relay");
    agent.stop().await;
}

/// Client mode over TLS: the exact `CONNECT` inside TLS, the bytes after the `200` first, and
/// half-close both ways.
#[tokio::test]
async fn the_tunnel_client_over_tls() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let relay = TlsRelay::bind(&pki).await;
    let mut config = ClientConfig::new(relay.addr("localhost"), "Dom");
    config.tls.ca_file = Some(ca.path().to_owned());
    let client = TunnelClient::bind(&LocalAddr::new("127.0.0.1", 0), config)
        .await
        .unwrap();
    let local_addr = client.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(client.run(shutdown.clone()));

    let mut local = TcpStream::connect(local_addr).await.unwrap();
    let (mut peer, sni, head) = relay.accept_head().await;
    assert_eq!(sni.as_deref(), Some("localhost"));
    assert_eq!(
        String::from_utf8_lossy(&head),
        format!(
            "CONNECT /dom HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            relay.port
        )
    );
    peer.send(b"HTTP/1.1 200 OK\r\n\r\nearly").await;
    let mut early = [0u8; 5];
    local.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"early");
    half_close(&mut local, &mut peer).await;

    shutdown.cancel();
    task.await.unwrap();
}

/// Server mode with a `tls:` local service (2.9: "the local TCP or TLS address"), verified
/// with the same CA file, SNI included.
#[tokio::test]
async fn server_mode_splices_to_a_tls_local_service() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let service = TlsRelay::bind(&pki).await;
    let local: LocalAddr = format!("tls:localhost:{}", service.port).parse().unwrap();
    let echo = tokio::spawn(async move {
        let (mut peer, sni) = service.try_accept().await.unwrap();
        let mut got = Vec::new();
        peer.stream.read_to_end(&mut got).await.unwrap();
        peer.stream.write_all(&got).await.unwrap();
        peer.stream.shutdown().await.unwrap();
        sni
    });
    let relay = FakeRelay::bind().await;
    let agent = Agent::new(config(relay.addr(), Some(&ca))).unwrap();
    let shutdown = CancellationToken::new();
    let mode = tokio::spawn(tunnel::run_server(agent, local, shutdown.clone()));
    let (mut peer, _) = relay.accept_head().await;
    peer.send(&[UPGRADE, b"hello"].concat()).await;
    peer.stream.shutdown().await.unwrap();
    assert_eq!(peer.read_to_end().await, b"hello");
    assert_eq!(echo.await.unwrap().as_deref(), Some("localhost"));
    shutdown.cancel();
    mode.await.unwrap();
}

/// A CA file that is missing, empty or broken stops the agent and the client at start, with
/// an error naming the file; a plain relay with a CA file is checked too.
#[tokio::test]
async fn bad_ca_files_are_refused_at_start() {
    let missing = PathBuf::from("/nonexistent/limmat-ca.pem");
    let empty = TempFile::with(b"no certificates here\n");
    let broken = TempFile::with(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    let not_der = TempFile::with(
        b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    for (path, tls) in [
        (missing.as_path(), true),
        (empty.path(), true),
        (broken.path(), false),
        (not_der.path(), true),
    ] {
        let relay = RelayAddr {
            host: "localhost".into(),
            port: 1,
            tls,
        };
        let mut config = AgentConfig::new(relay.clone(), "dom");
        config.tls.ca_file = Some(path.to_owned());
        let Err(err) = Agent::new(config) else {
            panic!("{} was accepted", path.display());
        };
        assert!(matches!(err, AgentError::Tls { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        let mut client = ClientConfig::new(relay, "dom");
        client.tls = TlsOptions::default().with_ca_file(path);
        let err = TunnelClient::bind(&LocalAddr::new("127.0.0.1", 0), client)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Config(AgentError::Tls { .. })),
            "{err}"
        );
    }
    let mut config = AgentConfig::new("tls:localhost".parse().unwrap(), "dom");
    config.tls.ca_file = Some(empty.path().to_owned());
    assert!(matches!(
        Agent::new(config),
        Err(AgentError::Tls {
            error: TlsError::CaFileEmpty { .. },
            ..
        })
    ));
    // Client mode does not terminate TLS locally.
    let err = TunnelClient::bind(
        &"tls:127.0.0.1:0".parse().unwrap(),
        ClientConfig::new("localhost:1".parse().unwrap(), "dom"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::TlsListener(_)), "{err}");
}

/// A self-signed server certificate made by `params` (for `localhost`), its PEM and a TLS
/// server that presents it on 127.0.0.1, answering each connection's handshake.
async fn self_signed_server(params: rcgen::CertificateParams) -> (String, u16) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let acceptor = TlsAcceptor::from(server_config(vec![cert.der().clone()], &key));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hi").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (cert.pem(), port)
}

/// Connects to `host:port` over TLS trusting `ca_pem`; the error's text on failure.
async fn connect_with(ca_pem: &str, host: &str, port: u16) -> Result<(), String> {
    let ca = TempFile::with(ca_pem.as_bytes());
    let options = TlsOptions::default().with_ca_file(ca.path());
    let connector = limmat_agent::Connector::new(options);
    match connector
        .connect(host, port, true, std::time::Duration::from_secs(10))
        .await
    {
        Ok(mut stream) => {
            let mut hi = [0; 2];
            stream
                .read_exact(&mut hi)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn localhost_params() -> rcgen::CertificateParams {
    rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap()
}

/// Issue 12 item 2: `openssl req -x509` makes a `CA:TRUE` certificate; given with --ca-file it
/// works as with `curl --cacert` (the very certificate is trusted), its name still checked.
#[tokio::test]
async fn a_self_signed_ca_certificate_given_with_ca_file_is_trusted_as_itself() {
    let mut params = localhost_params();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let (pem, port) = self_signed_server(params).await;
    connect_with(&pem, "localhost", port).await.unwrap();
    let wrong = connect_with(&pem, "127.0.0.1", port).await.unwrap_err();
    assert!(wrong.contains("does not name 127.0.0.1"), "{wrong}");
}

/// Every certificate error is a sentence that says what to do.
#[tokio::test]
async fn certificate_errors_say_what_to_do() {
    let (pem, port) = self_signed_server(localhost_params()).await;
    let mut stranger = localhost_params();
    stranger
        .distinguished_name
        .push(rcgen::DnType::CommonName, "someone else");
    let (other, _) = self_signed_server(stranger).await;
    let (same_subject, _) = self_signed_server(localhost_params()).await;
    let unknown = connect_with(&other, "localhost", port).await.unwrap_err();
    assert!(unknown.contains("give its CA certificate"), "{unknown}");
    assert!(unknown.contains("--ca-file"), "{unknown}");
    let same_name = connect_with(&same_subject, "localhost", port)
        .await
        .unwrap_err();
    assert!(same_name.contains("--ca-file"), "{same_name}");
    let name = connect_with(&pem, "127.0.0.1", port).await.unwrap_err();
    assert!(name.contains("does not name 127.0.0.1"), "{name}");

    let mut old = localhost_params();
    old.not_before = rcgen::date_time_ymd(2019, 1, 1);
    old.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let (pem, port) = self_signed_server(old).await;
    let expired = connect_with(&pem, "localhost", port).await.unwrap_err();
    assert!(expired.contains("has expired"), "{expired}");
}
