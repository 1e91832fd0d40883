//! One webhook delivery attempt over HTTP/1.1 (`gateway-api.md` §5.1, §5.4, §5.7–§5.9): the
//! [`Transport`] the scheduler drives.
//!
//! An attempt resolves the subscriber's name again, keeps only the addresses the SSRF rules
//! allow and connects to one of them, pinned for the life of that connection (no DNS
//! rebinding). `connect_timeout` covers DNS, TCP and TLS; `timeout` covers the request up
//! to the response head. HTTPS is verified against the Web PKI roots plus `ca_file`, and
//! cannot be turned off. At most 64 KiB of a response body is read; a connection whose body
//! ended within that goes back to a small pool, keyed by origin and pinned address, so the next
//! attempt to that origin reuses it (keep-alive); anything else is closed.
//!
//! With `webhooks.proxy` every attempt goes through an HTTP forward proxy (normally the Limmat
//! relay): `CONNECT host:port` (with the agent's `CONNECT` client, the workspace's one) and TLS
//! end to end for `https`, absolute-form requests for `http`, each with
//! `Proxy-Authorization: Bearer <key>`. The gateway then applies only the literal-address and
//! `localhost` checks; the proxy resolves names and applies its own egress policy.

use super::backoff::parse_retry_after;
use super::sign::signature_header;
use super::ssrf::{self, AllowList, Resolve, SsrfError, SystemResolver, Target, TargetHost};
use super::{FailureKind, Message, Outcome, Transport};
use crate::config::WebhooksSection;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use limmat_agent::connect::{ConnectAnswer, http_connect};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// At most this much of a response body is read (§5.4, §5.7).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Idle connections kept for reuse, in all and per origin.
const POOL_MAX_IDLE: usize = 32;
const POOL_MAX_PER_ORIGIN: usize = 4;
/// An idle connection older than this is closed rather than reused (servers drop idle
/// keep-alive connections after a while, and a stale one costs a failed attempt).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("limmat-gateway/", env!("CARGO_PKG_VERSION"));

/// The clock whose Unix seconds become `webhook-timestamp` (the system clock unless a test
/// sets another; not the pipeline's `WallClock`, which schedules).
pub type TimestampClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The forward proxy of §5.9.
#[derive(Clone)]
struct Proxy {
    /// Host (without brackets) and port to connect to.
    host: String,
    port: u16,
    /// `Bearer <key>`, sent on every proxy request.
    auth: Option<HeaderValue>,
}

/// Makes webhook attempts over HTTP/1.1, directly or through a forward proxy.
pub struct HttpTransport {
    connect_timeout: Duration,
    timeout: Duration,
    allow: AllowList,
    tls: TlsConnector,
    proxy: Option<Proxy>,
    resolver: Arc<dyn Resolve>,
    clock: TimestampClock,
    pool: Mutex<Pool>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The proxy key is a secret: never printed.
        f.debug_struct("HttpTransport")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("allow", &self.allow)
            .field("proxy", &self.proxy.as_ref().map(|p| (&p.host, p.port)))
            .finish_non_exhaustive()
    }
}

fn seconds(key: &str, value: Duration) -> Result<Duration, String> {
    match value {
        d if !d.is_zero() => Ok(d),
        _ => Err(format!("{key} = {value:?}: a positive duration")),
    }
}

/// The TLS client settings: Web PKI roots plus the PEM roots of `ca_file`, HTTP/1.1 only.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |why: String| format!("webhooks.ca_file = {}: {why}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn proxy_settings(url: &str, key: Option<&str>) -> Result<Proxy, String> {
    let bad = |why: &str| format!("webhooks.proxy = {url}: {why}");
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(bad("a proxy URL is http://host:port"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "put the proxy key in webhooks.proxy_key, not in the URL",
        ));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(bad("no host")),
    };
    let port = parsed.port_or_known_default().unwrap_or(80);
    let auth = match key {
        Some(k) => Some(
            HeaderValue::from_str(&format!("Bearer {k}"))
                .map_err(|_| "webhooks.proxy_key: not a valid header value".to_string())?,
        ),
        None => None,
    };
    Ok(Proxy { host, port, auth })
}

impl HttpTransport {
    /// A transport for the `[webhooks]` settings: timeouts, `allow_networks`, `ca_file`,
    /// `proxy` and `proxy_key`. An error names the key at fault.
    pub fn new(settings: &WebhooksSection) -> Result<Self, String> {
        let proxy = match &settings.proxy {
            Some(url) => Some(proxy_settings(url, settings.proxy_key.as_deref())?),
            None => None,
        };
        Ok(HttpTransport {
            connect_timeout: seconds("webhooks.connect_timeout", settings.connect_timeout)?,
            timeout: seconds("webhooks.timeout", settings.timeout)?,
            allow: AllowList::parse(&settings.allow_networks)?,
            tls: TlsConnector::from(Arc::new(tls_config(settings.ca_file.as_deref())?)),
            proxy,
            resolver: Arc::new(SystemResolver),
            clock: Arc::new(SystemTime::now),
            pool: Mutex::new(Pool::default()),
        })
    }

    #[cfg(feature = "test-util")]
    /// Resolves names with `resolver` instead of the system's (the SSRF checks still apply to
    /// what it returns).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    #[cfg(feature = "test-util")]
    /// Takes `webhook-timestamp` from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: TimestampClock) -> Self {
        self.clock = clock;
        self
    }

    #[cfg(feature = "test-util")]
    /// Idle connections currently pooled (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// A failed attempt, before it becomes an [`Outcome`].
#[derive(Debug)]
struct Fail {
    kind: FailureKind,
    status: Option<u16>,
    retry_after: Option<Duration>,
    why: String,
}

impl Fail {
    fn new(kind: FailureKind, why: impl std::fmt::Display) -> Self {
        Fail {
            kind,
            status: None,
            retry_after: None,
            why: why.to_string(),
        }
    }

    fn from_ssrf(e: SsrfError) -> Self {
        match e {
            SsrfError::Unresolved { .. } => Fail::new(FailureKind::Connect, e),
            SsrfError::Invalid(_) | SsrfError::Denied(_) => Fail::new(FailureKind::SsrfDenied, e),
        }
    }
}

/// A client connection and the task that drives it; dropping it closes the socket.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    https: bool,
    host: String,
    port: u16,
    /// The pinned address connected to, or `None` through the proxy.
    addr: Option<SocketAddr>,
}

#[derive(Default)]
struct Pool {
    idle: HashMap<PoolKey, Vec<(Conn, Instant)>>,
    total: usize,
}

impl Pool {
    fn sweep(&mut self, now: Instant) {
        for conns in self.idle.values_mut() {
            conns.retain(|(c, since)| {
                now.duration_since(*since) < POOL_IDLE_TIMEOUT && !c.sender.is_closed()
            });
        }
        self.idle.retain(|_, v| !v.is_empty());
        self.total = self.idle.values().map(Vec::len).sum();
    }

    fn take(&mut self, key: &PoolKey) -> Option<Conn> {
        self.sweep(Instant::now());
        let conns = self.idle.get_mut(key)?;
        let (conn, _) = conns.pop()?;
        self.total -= 1;
        Some(conn)
    }

    fn put(&mut self, key: PoolKey, conn: Conn) {
        let now = Instant::now();
        self.sweep(now);
        if conn.sender.is_closed() {
            return;
        }
        let conns = self.idle.entry(key).or_default();
        if conns.len() >= POOL_MAX_PER_ORIGIN {
            conns.remove(0);
            self.total -= 1;
        }
        conns.push((conn, now));
        self.total += 1;
        if self.total > POOL_MAX_IDLE {
            // Close the connection idle the longest.
            let oldest = self
                .idle
                .iter()
                .filter_map(|(k, v)| v.first().map(|(_, since)| (k.clone(), *since)))
                .min_by_key(|(_, since)| *since)
                .map(|(k, _)| k);
            if let Some(k) = oldest
                && let Some(v) = self.idle.get_mut(&k)
            {
                v.remove(0);
                self.total -= 1;
            }
            self.idle.retain(|_, v| !v.is_empty());
        }
    }
}

/// Starts HTTP/1.1 on an established stream.
async fn handshake<T>(io: T) -> Result<Conn, Fail>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Fail::new(FailureKind::Connect, e))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender, task })
}

/// TCP to the first address that accepts, in order.
async fn tcp_connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), Fail> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(Fail::new(
        FailureKind::Connect,
        last.unwrap_or_else(|| "no address".into()),
    ))
}

fn server_name(target: &Target) -> Result<ServerName<'static>, Fail> {
    match &target.host {
        TargetHost::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        TargetHost::Name(n) => {
            ServerName::try_from(n.clone()).map_err(|e| Fail::new(FailureKind::Tls, e))
        }
    }
}

/// Whether the status is one of those that are throttled and honour `Retry-After` (§5.4).
fn throttled(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

fn retry_after<B>(resp: &Response<B>) -> Option<Duration> {
    let value = resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// A proxy's own error answer, told apart from the target's by the relay's `Limmat-Error`
/// field on absolute-form requests.
fn proxy_failure<B>(resp: &Response<B>) -> Option<Fail> {
    let own = resp.headers().contains_key("limmat-error");
    proxy_refusal(resp.status(), own, false, || retry_after(resp))
}

/// Every answer to `CONNECT` but `200` is the proxy's own refusal.
fn connect_refusal(answer: &ConnectAnswer) -> Fail {
    let retry_after = || {
        let value = answer.field("retry-after")?;
        parse_retry_after(&value, SystemTime::now())
    };
    StatusCode::from_u16(answer.status())
        .ok()
        .and_then(|status| proxy_refusal(status, true, true, retry_after))
        .unwrap_or_else(|| Fail::new(FailureKind::Connect, "proxy refused CONNECT"))
}

/// The failure for a proxy's answer `status`: `own` when it is the proxy's rather than the
/// target's; `None` for the target's answers, which are no failure of the proxy's.
fn proxy_refusal(
    status: StatusCode,
    own: bool,
    from_connect: bool,
    retry_after: impl FnOnce() -> Option<Duration>,
) -> Option<Fail> {
    let kind = match status.as_u16() {
        407 => FailureKind::ProxyAuth,
        403 if own => FailureKind::ProxyDenied,
        _ if from_connect => FailureKind::Status,
        _ => return None,
    };
    Some(Fail {
        kind,
        status: Some(status.as_u16()),
        retry_after: if throttled(status) {
            retry_after()
        } else {
            None
        },
        why: format!("proxy answered {status}"),
    })
}

impl HttpTransport {
    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection for the target: a pooled one if there is one, else a new one. Runs under
    /// the connect timeout.
    async fn checkout(&self, target: &Target) -> Result<(Conn, PoolKey, bool), Fail> {
        let base = PoolKey {
            https: target.https,
            host: target.host_text(),
            port: target.port,
            addr: None,
        };
        let Some(proxy) = &self.proxy else {
            let addrs = ssrf::resolve_for_attempt(target, &self.allow, &*self.resolver)
                .await
                .map_err(Fail::from_ssrf)?;
            for &addr in &addrs {
                let key = PoolKey {
                    addr: Some(addr),
                    ..base.clone()
                };
                let pooled = self.pool().take(&key);
                if let Some(conn) = pooled {
                    return Ok((conn, key, true));
                }
            }
            let (tcp, addr) = tcp_connect(&addrs).await?;
            let conn = if target.https {
                self.tls_handshake(target, tcp).await?
            } else {
                handshake(tcp).await?
            };
            let key = PoolKey {
                addr: Some(addr),
                ..base
            };
            return Ok((conn, key, false));
        };
        // Through the proxy: literal and localhost checks only; the proxy resolves names.
        ssrf::check_literal(target, &self.allow).map_err(Fail::from_ssrf)?;
        let pooled = self.pool().take(&base);
        if let Some(conn) = pooled {
            return Ok((conn, base, true));
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((proxy.host.as_str(), proxy.port))
            .await
            .map_err(|e| Fail::new(FailureKind::Connect, format!("proxy {}: {e}", proxy.host)))?
            .collect();
        let (tcp, _) = tcp_connect(&addrs).await?;
        let conn = if target.https {
            self.connect_tunnel(proxy, target, tcp).await?
        } else {
            handshake(tcp).await?
        };
        Ok((conn, base, false))
    }

    async fn tls_handshake<T>(&self, target: &Target, io: T) -> Result<Conn, Fail>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let tls = self
            .tls
            .connect(server_name(target)?, io)
            .await
            .map_err(|e| Fail::new(FailureKind::Tls, e))?;
        handshake(tls).await
    }

    /// `CONNECT host:port` through the proxy with the agent's `CONNECT` client (the one the
    /// agent uses for its own proxies), then TLS end to end with the receiver on the same
    /// socket: the client reads the answer's head and not a byte more.
    async fn connect_tunnel(
        &self,
        proxy: &Proxy,
        target: &Target,
        mut tcp: TcpStream,
    ) -> Result<Conn, Fail> {
        let auth = match &proxy.auth {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|e| Fail::new(FailureKind::Connect, format!("proxy: {e}")))?,
            ),
            None => None,
        };
        let answer = http_connect(&mut tcp, &target.authority(), auth)
            .await
            .map_err(|e| Fail::new(FailureKind::Connect, format!("proxy: {e}")))?;
        if answer.status() != 200 {
            return Err(connect_refusal(&answer));
        }
        self.tls_handshake(target, tcp).await
    }

    fn request(
        &self,
        target: &Target,
        m: &Message<'_>,
        timestamp: i64,
    ) -> Result<Request<Full<Bytes>>, Fail> {
        let bad = |e: hyper::http::Error| Fail::new(FailureKind::Connect, format!("request: {e}"));
        // Origin form directly and through a CONNECT tunnel; absolute form to a proxy for http.
        let uri: Uri = if self.proxy.is_some() && !target.https {
            target
                .url
                .as_str()
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| Fail::new(FailureKind::Connect, e))?
        } else {
            let path = match target.url.query() {
                Some(q) => format!("{}?{q}", target.url.path()),
                None => target.url.path().to_string(),
            };
            path.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| Fail::new(FailureKind::Connect, e))?
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, target.host_header())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .header(
                HeaderName::from_static("limmat-subscription"),
                m.subscription_id,
            )
            .header(HeaderName::from_static("webhook-id"), m.msg_id)
            .header(HeaderName::from_static("webhook-timestamp"), timestamp)
            .header(
                HeaderName::from_static("webhook-signature"),
                signature_header(m.secrets, m.msg_id, timestamp, m.body),
            );
        if let (Some(proxy), false) = (&self.proxy, target.https)
            && let Some(auth) = &proxy.auth
        {
            req = req.header(header::PROXY_AUTHORIZATION, auth.clone());
        }
        req.body(Full::new(Bytes::copy_from_slice(m.body)))
            .map_err(bad)
    }

    /// Sends on a checked-out connection, up to the response head.
    async fn exchange(
        &self,
        target: &Target,
        m: &Message<'_>,
        timestamp: i64,
    ) -> Result<(Response<hyper::body::Incoming>, Conn, PoolKey), Fail> {
        // A pooled connection the server has closed in the meantime fails before any byte of
        // a response; then one fresh connection is tried (a duplicate is harmless: at least
        // once, de-duplicated by webhook-id).
        for _ in 0..2 {
            let (mut conn, key, reused) =
                tokio::time::timeout(self.connect_timeout, self.checkout(target))
                    .await
                    .map_err(|_| Fail::new(FailureKind::Timeout, "connect timeout"))??;
            let req = self.request(target, m, timestamp)?;
            let sent = tokio::time::timeout(self.timeout, async {
                conn.sender.ready().await?;
                conn.sender.send_request(req).await
            })
            .await;
            match sent {
                Ok(Ok(resp)) => return Ok((resp, conn, key)),
                Err(_) => return Err(Fail::new(FailureKind::Timeout, "no response head in time")),
                Ok(Err(e)) if reused => {
                    tracing::debug!(error = %e, "pooled connection failed; reconnecting");
                }
                Ok(Err(e)) => return Err(Fail::new(FailureKind::Connect, e)),
            }
        }
        Err(Fail::new(FailureKind::Connect, "connection closed"))
    }

    /// Reads at most [`MAX_RESPONSE_BODY`] of the body; whether it ended within that.
    async fn drain(&self, resp: Response<hyper::body::Incoming>) -> bool {
        let mut body = resp.into_body();
        let mut read = 0usize;
        let drained = tokio::time::timeout(self.timeout, async {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return false };
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                    if read > MAX_RESPONSE_BODY {
                        return false;
                    }
                }
            }
            true
        })
        .await;
        drained.unwrap_or(false)
    }

    async fn try_attempt(&self, m: &Message<'_>) -> Result<Outcome, Fail> {
        let target = ssrf::parse_url(m.url).map_err(Fail::from_ssrf)?;
        let timestamp = (self.clock)()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let (resp, conn, key) = self.exchange(&target, m, timestamp).await?;
        let status = resp.status();
        let proxy_fail = if self.proxy.is_some() && !target.https {
            proxy_failure(&resp)
        } else {
            None
        };
        let ra = if throttled(status) {
            retry_after(&resp)
        } else {
            None
        };
        if self.drain(resp).await {
            self.pool().put(key, conn);
        }
        if let Some(fail) = proxy_fail {
            return Err(fail);
        }
        Ok(match status.as_u16() {
            200..=299 => Outcome::Delivered {
                status: status.as_u16(),
            },
            410 => Outcome::Gone,
            s => Outcome::Failed {
                kind: FailureKind::Status,
                status: Some(s),
                retry_after: ra,
            },
        })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn attempt(&self, message: Message<'_>) -> Outcome {
        match self.try_attempt(&message).await {
            Ok(outcome) => {
                match outcome {
                    Outcome::Delivered { .. } => tracing::debug!(
                        msg = message.msg_id,
                        sub = message.subscription_id,
                        ?outcome,
                        "webhook attempt"
                    ),
                    Outcome::Gone => tracing::warn!(
                        msg = message.msg_id,
                        sub = message.subscription_id,
                        url = message.url,
                        "webhook receiver answered 410 Gone: the subscription is disabled"
                    ),
                    Outcome::Failed { status, .. } => tracing::warn!(
                        msg = message.msg_id,
                        sub = message.subscription_id,
                        url = message.url,
                        kind = "status",
                        status,
                        "webhook delivery failed: the receiver answered {}",
                        status.unwrap_or_default()
                    ),
                }
                outcome
            }
            Err(fail) => {
                if fail.kind == FailureKind::ProxyAuth {
                    tracing::error!(
                        "the forward proxy refused webhooks.proxy_key (407): check the key"
                    );
                }
                tracing::warn!(
                    msg = message.msg_id,
                    sub = message.subscription_id,
                    url = message.url,
                    kind = fail.kind.as_str(),
                    "webhook delivery failed: {}",
                    fail.why
                );
                Outcome::Failed {
                    kind: fail.kind,
                    status: fail.status,
                    retry_after: fail.retry_after,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(head: &[u8]) -> Fail {
        connect_refusal(&ConnectAnswer::parse(head.to_vec()).unwrap())
    }

    /// Every answer to `CONNECT` but `200` is the proxy's, classified as the hyper client
    /// that this replaced classified it.
    #[test]
    fn connect_refusals() {
        let f = refusal(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        assert_eq!((f.kind, f.status), (FailureKind::ProxyAuth, Some(407)));
        let f = refusal(b"HTTP/1.1 403 Forbidden\r\nLimmat-Error: egress-denied\r\n\r\n");
        assert_eq!((f.kind, f.status), (FailureKind::ProxyDenied, Some(403)));
        assert_eq!(f.why, "proxy answered 403 Forbidden");
        let f = refusal(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n\r\n");
        assert_eq!((f.kind, f.status), (FailureKind::Status, Some(429)));
        assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
        // Retry-After counts only on the throttled statuses.
        let f = refusal(b"HTTP/1.1 500 Internal Server Error\r\nRetry-After: 7\r\n\r\n");
        assert_eq!((f.status, f.retry_after), (Some(500), None));
        // A 2xx other than 200 is no tunnel either.
        let f = refusal(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((f.kind, f.status), (FailureKind::Status, Some(204)));
        let f = refusal(b"HTTP/1.1 099 Odd\r\n\r\n");
        assert_eq!((f.kind, f.status), (FailureKind::Connect, None));
    }
}
