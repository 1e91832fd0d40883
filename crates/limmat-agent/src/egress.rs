//! Using a relay's forward proxy (spec 6) from the device side: networks that let a device
//! reach only the relay can still reach the Internet through it, authenticated with the
//! device's own key.
//!
//! - [`connect_via_proxy`]: one `CONNECT` tunnel, for Rust code on a device: the relay's
//!   refusals come back as typed errors ([`ForwardProxyError`]).
//! - [`EgressProxy`]: `limmat tunnel egress`, a local plain HTTP proxy port for device programs
//!   that cannot add `Proxy-Authorization` themselves; each connection goes to the relay's
//!   proxy with the header added.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use limmat_wire::proxy::{parse_authority, with_proxy_authorization};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::addr::RelayAddr;
use crate::agent::{AgentError, DEFAULT_CONNECT_TIMEOUT, relay_connector};
use crate::connect::{ConnectAnswerError, http_connect};
use crate::head::read_head;
use crate::outbound::{RelayProxy, authority, basic};
use crate::serve::splice;
use crate::transport::{self, Connector, RelayStream, TlsOptions};
use crate::tunnel::accept_local;

/// How long to wait for the relay's answer to a `CONNECT`: it answers within its own
/// `proxy_connect_timeout` (10 s by default).
pub const PROXY_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The credentials sent as `Proxy-Authorization` (6.2).
#[derive(Clone, PartialEq, Eq)]
pub enum ProxyAuth {
    /// `Bearer <key>`: the key identifies its domain.
    Bearer(String),
    /// `Basic`, with the domain as the user and the key as the password.
    Basic { domain: String, key: String },
}

impl ProxyAuth {
    /// The `Proxy-Authorization` value.
    pub fn header_value(&self) -> String {
        match self {
            ProxyAuth::Bearer(key) => format!("Bearer {key}"),
            ProxyAuth::Basic { domain, key } => basic(domain, key),
        }
    }
}

/// Keys stay out of logs.
impl std::fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyAuth::Bearer(_) => f.write_str("Bearer(…)"),
            ProxyAuth::Basic { domain, .. } => write!(f, "Basic({domain}, …)"),
        }
    }
}

/// Why [`connect_via_proxy`] has no tunnel through the relay's forward proxy; the relay's
/// refusals by their status (6.3).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardProxyError {
    #[error("the target {0:?} is not a host and port")]
    Target(String),
    #[error("cannot connect to the proxy: {0}")]
    Connect(io::Error),
    #[error("the proxy refused the key (407)")]
    Auth,
    #[error("the relay's egress policy denies this target (403)")]
    Denied,
    #[error("the proxy could not resolve or reach the target (502 {0})")]
    BadGateway(String),
    #[error("the proxy timed out connecting to the target (504)")]
    Timeout,
    #[error("the proxy answered {status} {token}")]
    Status { status: u16, token: String },
    #[error("no answer from the proxy within {}s", PROXY_RESPONSE_TIMEOUT.as_secs())]
    NoAnswer,
    #[error("bad answer from the proxy: {0}")]
    Answer(String),
}

/// Opens a tunnel to `target_host:port` through the relay's forward proxy at `proxy_addr`
/// and returns the socket, ready for the target's bytes (TLS, MQTT, anything). The request
/// and the answer go through the crate's one `CONNECT` client ([`crate::connect`]), so no byte
/// the target sends early is left behind in a buffer.
pub async fn connect_via_proxy(
    proxy_addr: impl ToSocketAddrs,
    auth: ProxyAuth,
    target_host: &str,
    port: u16,
) -> Result<TcpStream, ForwardProxyError> {
    let bracketed = authority(target_host, port);
    let target = parse_authority(bracketed.as_bytes())
        .map_err(|_| ForwardProxyError::Target(bracketed.clone()))?;
    let mut stream = TcpStream::connect(proxy_addr)
        .await
        .map_err(ForwardProxyError::Connect)?;
    let _ = transport::tune(&stream);
    let (authority, value) = (target.authority(), auth.header_value());
    let exchange = http_connect(&mut stream, &authority, Some(&value));
    let answer = match tokio::time::timeout(PROXY_RESPONSE_TIMEOUT, exchange).await {
        Err(_) => return Err(ForwardProxyError::NoAnswer),
        Ok(Err(ConnectAnswerError::Send(e))) => return Err(ForwardProxyError::Connect(e)),
        Ok(Err(ConnectAnswerError::TooLong)) => {
            return Err(ForwardProxyError::Answer("the head is too long".into()));
        }
        Ok(Err(e)) => return Err(ForwardProxyError::Answer(e.to_string())),
        Ok(Ok(answer)) => answer,
    };
    let token = || answer.field("limmat-error").unwrap_or_default();
    match answer.status() {
        200..=299 => Ok(stream),
        407 => Err(ForwardProxyError::Auth),
        403 => Err(ForwardProxyError::Denied),
        502 => Err(ForwardProxyError::BadGateway(token())),
        504 => Err(ForwardProxyError::Timeout),
        status => Err(ForwardProxyError::Status {
            status,
            token: token(),
        }),
    }
}

/// `limmat tunnel egress`: a bound local proxy port, ready to [`run`](EgressProxy::run).
#[derive(Debug)]
pub struct EgressProxy {
    listener: TcpListener,
    /// The relay's proxy listener, `host:port`.
    relay: String,
    auth: ProxyAuth,
    max_sockets: usize,
    /// Opens the connections to the relay's proxy, through an outbound proxy if one is set.
    connector: Connector,
}

impl EgressProxy {
    /// Binds the local port. It carries the device's credentials, so anything that can reach
    /// it acts as the device: a non-loopback address is logged as a warning.
    pub async fn bind(
        local: &str,
        relay: String,
        auth: ProxyAuth,
        max_sockets: usize,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(local).await?;
        if listener
            .local_addr()
            .is_ok_and(|addr| !addr.ip().is_loopback())
        {
            warn!(%local, "the egress proxy port is not on loopback: anything that reaches it uses this device's key");
        }
        Ok(Self {
            listener,
            relay,
            auth,
            max_sockets: max_sockets.max(1),
            connector: Connector::new(TlsOptions::default()),
        })
    }

    /// Sends the connections to the relay's proxy through the outbound proxy `proxy`
    /// (`--relay-proxy`, or the environment as curl reads it); logs which one is used.
    pub fn with_relay_proxy(mut self, proxy: &RelayProxy) -> Result<Self, AgentError> {
        let (host, port) = split_authority(&self.relay);
        let relay = RelayAddr::plain(host, port);
        self.connector = relay_connector(&relay, &TlsOptions::default(), proxy)?;
        Ok(self)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts local connections until `shutdown`; each sends one proxy request to the relay
    /// with `Proxy-Authorization` added (the relay serves one request per connection).
    pub async fn run(self, shutdown: CancellationToken) {
        let value: Arc<str> = self.auth.header_value().into();
        let relay: Arc<str> = self.relay.into();
        match self.listener.local_addr() {
            Ok(addr) => info!(%addr, %relay, "egress proxy listening"),
            Err(e) => info!(error = %e, %relay, "egress proxy listening"),
        }
        let serve = |local, peer: SocketAddr| {
            let (value, relay) = (value.clone(), relay.clone());
            let connector = self.connector.clone();
            async move { egress_connection(local, &connector, &relay, &value).await }
                .instrument(info_span!("egress", %peer))
        };
        accept_local(&self.listener, self.max_sockets, &shutdown, serve).await;
        info!("egress proxy stopped");
    }
}

/// `host:port` (the host bracketed when IPv6) as host and port; port 80 when none is given.
fn split_authority(authority: &str) -> (&str, u16) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse().unwrap_or(80),
        ),
        _ => (authority, 80),
    }
}

/// One local connection: its request head with our `Proxy-Authorization`, then a splice.
async fn egress_connection(mut local: TcpStream, connector: &Connector, relay: &str, value: &str) {
    let _ = transport::tune(&local);
    let mut buf = Vec::new();
    let head_len = match read_head(&mut local, &mut buf).await {
        Ok(len) => len,
        Err(e) => return debug!("no request head: {e}"),
    };
    let mut request = with_proxy_authorization(&buf[..head_len], value);
    request.extend_from_slice(&buf[head_len..]);
    let (host, port) = split_authority(relay);
    let connected = connector
        .connect_relay(host, port, false, DEFAULT_CONNECT_TIMEOUT)
        .await;
    let mut upstream = match connected {
        Ok(s) => s,
        Err(e) => {
            warn!(%relay, "cannot connect to the relay's proxy: {e}");
            let _ = local
                .write_all(limmat_wire::tunnel::PROXY_BAD_GATEWAY)
                .await;
            return;
        }
    };
    if let RelayStream::Plain(tcp) = &upstream {
        let _ = transport::tune(tcp);
    }
    if let Err(e) = upstream.write_all(&request).await {
        return debug!("relay closed early: {e}");
    }
    match splice(local, upstream).await {
        Ok((up, down)) => debug!(up, down, "egress connection ended"),
        Err(e) => debug!("egress connection ended: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn header_values() {
        assert_eq!(ProxyAuth::Bearer("k".into()).header_value(), "Bearer k");
        let basic = ProxyAuth::Basic {
            domain: "dev".into(),
            key: "k".into(),
        };
        assert_eq!(basic.header_value(), "Basic ZGV2Oms=");
        assert_eq!(format!("{basic:?}"), "Basic(dev, …)");
    }

    /// A one-shot proxy that answers `answer` and returns what it was sent.
    async fn fake_proxy(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let len = read_head(&mut s, &mut buf).await.unwrap();
            s.write_all(answer).await.unwrap();
            buf.truncate(len);
            buf
        });
        (addr, task)
    }

    #[tokio::test]
    async fn statuses_become_typed_errors() {
        let auth = || ProxyAuth::Bearer("k".into());
        let (addr, sent) = fake_proxy(b"HTTP/1.1 200 OK\r\n\r\nbanner").await;
        let mut s = connect_via_proxy(addr, auth(), "::1", 22).await.unwrap();
        assert_eq!(
            sent.await.unwrap(),
            b"CONNECT [::1]:22 HTTP/1.1\r\nHost: [::1]:22\r\nProxy-Authorization: Bearer k\r\n\r\n"
        );
        // The target's early bytes are still in the socket.
        let mut banner = [0u8; 6];
        s.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"banner");
        for (answer, check) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\nLimmat-Error: auth\r\n\r\n"[..],
                (|e: &ForwardProxyError| matches!(e, ForwardProxyError::Auth))
                    as fn(&ForwardProxyError) -> bool,
            ),
            (b"HTTP/1.1 403 Forbidden\r\n\r\n", |e| {
                matches!(e, ForwardProxyError::Denied)
            }),
            (
                b"HTTP/1.1 502 Bad Gateway\r\nLimmat-Error: dns-failed\r\n\r\n",
                |e| matches!(e, ForwardProxyError::BadGateway(t) if t == "dns-failed"),
            ),
            (b"HTTP/1.1 504 Gateway Timeout\r\n\r\n", |e| {
                matches!(e, ForwardProxyError::Timeout)
            }),
            (b"HTTP/1.1 429 Too Many Requests\r\n\r\n", |e| {
                matches!(e, ForwardProxyError::Status { status: 429, .. })
            }),
            (b"nonsense\r\n\r\n", |e| {
                matches!(e, ForwardProxyError::Answer(_))
            }),
        ] {
            let answer: &'static [u8] = answer;
            let (addr, _sent) = fake_proxy(answer).await;
            let err = connect_via_proxy(addr, auth(), "example.org", 443)
                .await
                .unwrap_err();
            assert!(check(&err), "{err:?}");
        }
        let err = connect_via_proxy("127.0.0.1:1", auth(), "a b", 443)
            .await
            .unwrap_err();
        assert!(matches!(err, ForwardProxyError::Target(_)), "{err:?}");
    }
}
