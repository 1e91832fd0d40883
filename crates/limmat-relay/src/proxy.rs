//! The forward proxy for devices (spec 6): an authenticated device sends an ordinary HTTP
//! proxy request (`CONNECT host:port`, or an absolute-form `http://` request) on the relay's
//! public listener, and the relay connects to the origin on its behalf, within the egress
//! policy, and splices.
//!
//! The order of checks is chosen so that the proxy is never open and leaks nothing to an
//! unauthenticated peer: the source's failed-authentication bucket, then the key, then the
//! target, then the per-domain limit, then resolution, the policy on every resolved address and
//! the connection to an allowed address, which is the address that was checked (no second
//! resolution, so DNS rebinding cannot change it). One request per connection: after an
//! absolute-form request's response the connection closes, so every request is authorised
//! and checked on its own.

use crate::conn::Conn;
use crate::egress::Policy;
use crate::linger::{refuse_and_close, respond_and_close};
use crate::registry::PipeCounters;
use crate::server::Shared;
use crate::stream::Stream;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use limmat_wire::proxy::{self as wire, Body, Credentials, Host, Refusal, Target};
use limmat_wire::route::parse_domain;
use limmat_wire::{RequestHead, response};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// The proxy's state on a relay that runs it.
pub(crate) struct Proxy {
    pub(crate) policy: Policy,
    pub(crate) stats: Arc<ProxyStats>,
}

/// `connect` or `http`, as the metrics label it (6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Http,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Http => "http",
        }
    }
}

/// Per-domain proxy counters, for the admin API (they outlive the domain's connections).
#[derive(Default)]
pub(crate) struct ProxyStats {
    domains: Mutex<HashMap<Arc<str>, ProxySnapshot>>,
}

/// One domain's proxy counters as the admin API shows them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct ProxySnapshot {
    /// Tunnels and requests that reached their origin.
    pub(crate) connections: u64,
    /// Those open now.
    pub(crate) active: usize,
    /// Refused by the egress policy.
    pub(crate) denied: u64,
    /// Bad targets, limits, DNS and connection failures.
    pub(crate) errors: u64,
    /// Device to origin.
    pub(crate) bytes_out: u64,
    /// Origin to device.
    pub(crate) bytes_in: u64,
}

impl ProxyStats {
    fn update(&self, domain: &str, f: impl FnOnce(&mut ProxySnapshot)) {
        let mut map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(domain) {
            Some(entry) => f(entry),
            None => f(map.entry(domain.into()).or_default()),
        }
    }

    /// Takes a place under `proxy_max_per_domain` (zero: no limit).
    fn enter(self: &Arc<Self>, domain: &str, max: usize) -> Option<Active> {
        let mut map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(domain.into()).or_default();
        if max > 0 && entry.active >= max {
            return None;
        }
        entry.active += 1;
        metrics::gauge!("limmat_proxy_active", "domain" => domain.to_owned()).increment(1.0);
        Some(Active {
            stats: self.clone(),
            domain: domain.to_owned(),
        })
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, ProxySnapshot)> {
        let map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = map
            .iter()
            .map(|(d, s)| (d.to_string(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub(crate) fn snapshot_of(&self, domain: &str) -> Option<ProxySnapshot> {
        let map = self.domains.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(domain).cloned()
    }
}

/// One open tunnel or request of a domain, until dropped.
struct Active {
    stats: Arc<ProxyStats>,
    domain: String,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.stats
            .update(&self.domain, |s| s.active = s.active.saturating_sub(1));
        metrics::gauge!("limmat_proxy_active", "domain" => self.domain.clone()).decrement(1.0);
    }
}

/// Who a proxy request is from: the domain its key identifies, and the key's fingerprint.
struct Device {
    domain: String,
    fingerprint: String,
}

/// Serves one proxy request whose head is `buf[..head_len]`; bytes after it are the start
/// of the tunnel or of the request body.
pub(crate) async fn serve(shared: &Arc<Shared>, conn: Conn, buf: Vec<u8>, head_len: usize) {
    let Some(proxy) = &shared.proxy else {
        // The forward proxy is off (D7): the exact 501, never authenticated.
        return respond_and_close(conn.stream, response::NOT_IMPLEMENTED).await;
    };
    let head = RequestHead::parse(&buf[..head_len]);
    let kind = match head.method {
        b"CONNECT" => Kind::Connect,
        _ => Kind::Http,
    };
    let peer = conn.peer;
    let device = match authenticate(shared, peer, &buf[..head_len]) {
        Ok(device) => device,
        Err(refusal) => {
            let verdict = if refusal == Refusal::Auth {
                "auth_failed"
            } else {
                "error"
            };
            counter(kind, "unknown", verdict);
            return refuse_and_close(conn.stream, &refusal.response()).await;
        }
    };
    let domain = device.domain.as_str();
    let refuse = |refusal: Refusal, why: &str| {
        tracing::info!(%domain, key = %device.fingerprint, %peer, kind = kind.label(), verdict = "error", token = refusal.token(), why, "proxy request refused");
        proxy.stats.update(domain, |s| s.errors += 1);
        counter(kind, domain, "error");
        refusal.response()
    };
    let parsed = match kind {
        Kind::Connect => wire::parse_authority(head.target).map(|t| (t, None)),
        Kind::Http => wire::parse_absolute(head.target).map(|a| (a.target.clone(), Some(a))),
    };
    let (target, absolute) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let response = refuse(Refusal::BadTarget, &e.to_string());
            return refuse_and_close(conn.stream, &response).await;
        }
    };
    let body = match (&absolute, wire::body(&buf[..head_len])) {
        (None, _) => Body::None,
        (Some(_), Ok(body)) => body,
        (Some(_), Err(e)) => {
            let response = refuse(Refusal::BadTarget, &format!("body framing: {e:?}"));
            return refuse_and_close(conn.stream, &response).await;
        }
    };
    let Some(active) = proxy
        .stats
        .enter(domain, shared.config.proxy_max_per_domain)
    else {
        let response = refuse(Refusal::RateLimited(1), "proxy_max_per_domain reached");
        return refuse_and_close(conn.stream, &response).await;
    };
    let started = Instant::now();
    let connected = connect(shared, &proxy.policy, domain, &target).await;
    let (origin, chosen, rule) = match connected {
        Ok(c) => c,
        Err(Failure::Denied(rule)) => {
            tracing::info!(%domain, key = %device.fingerprint, %peer, kind = kind.label(), host = %target.host, port = target.port, verdict = "denied", %rule, "proxy request denied by the egress policy");
            proxy.stats.update(domain, |s| s.denied += 1);
            counter(kind, domain, "denied");
            return refuse_and_close(conn.stream, &Refusal::EgressDenied.response()).await;
        }
        Err(Failure::Refused(refusal, why)) => {
            let response = refuse(refusal, &why);
            return refuse_and_close(conn.stream, &response).await;
        }
    };
    crate::socket::configure(&origin);
    proxy.stats.update(domain, |s| s.connections += 1);
    counter(kind, domain, "allowed");
    let Conn { stream, open, .. } = conn;
    let counters = PipeCounters::default();
    let end = match absolute {
        None => tunnel(shared, stream, origin, &buf[head_len..], &counters).await,
        Some(absolute) => {
            let request = wire::origin_request(&buf[..head_len], &absolute);
            forward(
                shared,
                stream,
                origin,
                request,
                &buf[head_len..],
                body,
                &counters,
            )
            .await
        }
    };
    let (up, down) = (
        counters.up.load(Ordering::Relaxed),
        counters.down.load(Ordering::Relaxed),
    );
    proxy.stats.update(domain, |s| {
        s.bytes_out += up;
        s.bytes_in += down;
    });
    metrics::counter!("limmat_proxy_bytes_total", "domain" => domain.to_owned(), "direction" => "out").increment(up);
    metrics::counter!("limmat_proxy_bytes_total", "domain" => domain.to_owned(), "direction" => "in").increment(down);
    drop(active);
    tracing::info!(%domain, key = %device.fingerprint, %peer, kind = kind.label(), host = %target.host, port = target.port, addr = %chosen, verdict = "allowed", %rule, bytes_out = up, bytes_in = down, duration_ms = started.elapsed().as_millis() as u64, end = ?end, "proxy connection closed");
    // Counted as open until the accounting is done, so that the gauge tells when it is.
    drop(open);
}

fn counter(kind: Kind, domain: &str, verdict: &'static str) {
    metrics::counter!("limmat_proxy_requests_total", "domain" => domain.to_owned(), "kind" => kind.label(), "verdict" => verdict).increment(1);
}

/// 6.2: the source's failed-authentication bucket, then `Proxy-Authorization`: a Bearer key
/// identifies its domain; Basic names the domain as the user and the key as the password.
fn authenticate(shared: &Shared, peer: SocketAddr, head: &[u8]) -> Result<Device, Refusal> {
    if let Err(refusal) = shared.limits.auth_allowed(peer.ip()) {
        tracing::info!(%peer, "proxy request refused: too many failed authentications");
        return Err(Refusal::RateLimited(refusal.secs()));
    }
    let checked = match &shared.auth {
        Some(auth) => {
            let auth = auth.read().unwrap_or_else(PoisonError::into_inner).clone();
            check_credentials(&auth, wire::credentials(head))
        }
        // Unreachable: the relay refuses to start the proxy in open mode.
        None => Err("no device keys".to_owned()),
    };
    checked.map_err(|why| {
        shared.limits.auth_failed(peer.ip());
        tracing::info!(%peer, verdict = "auth_failed", reason = %why, "proxy request refused: authentication");
        Refusal::Auth
    })
}

fn check_credentials(
    auth: &crate::auth::Authenticator,
    credentials: Credentials<'_>,
) -> Result<Device, String> {
    let (domain, key) = match credentials {
        Credentials::Missing => return Err("no Proxy-Authorization".into()),
        Credentials::Several => return Err("more than one Proxy-Authorization".into()),
        Credentials::Unsupported => return Err("not Bearer or Basic".into()),
        Credentials::Bearer(key) => {
            let domain = auth
                .domain_of_key(key)
                .ok_or_else(|| format!("key {} is not valid", crate::auth::fingerprint(key)))?;
            (domain, key.to_vec())
        }
        Credentials::Basic(token) => {
            let decoded = STANDARD
                .decode(token)
                .map_err(|_| "Basic credentials are not base64".to_owned())?;
            let colon = decoded
                .iter()
                .position(|&b| b == b':')
                .ok_or("Basic credentials without a password")?;
            let user = std::str::from_utf8(&decoded[..colon])
                .ok()
                .and_then(|u| parse_domain(u).ok())
                .ok_or("the Basic user is not a domain")?;
            (user, decoded[colon + 1..].to_vec())
        }
    };
    let key = auth
        .check_key(&domain, &key)
        .map_err(|failure| format!("{failure}"))?;
    Ok(Device {
        domain,
        fingerprint: key.fingerprint,
    })
}

/// Why no origin connection was made.
enum Failure {
    /// The policy denied every resolved address; the rule that denied the first one.
    Denied(String),
    Refused(Refusal, String),
}

/// Resolves the target once, judges every address, and connects to the first allowed one
/// that answers, all within `proxy_connect_timeout`. Returns the socket, the address and the
/// rule that allowed it.
async fn connect(
    shared: &Shared,
    policy: &Policy,
    domain: &str,
    target: &Target,
) -> Result<(TcpStream, SocketAddr, String), Failure> {
    let deadline = Instant::now() + shared.config.proxy_connect_timeout;
    let timed_out = || {
        Failure::Refused(
            Refusal::ConnectTimeout,
            "proxy_connect_timeout passed".into(),
        )
    };
    let addrs: Vec<SocketAddr> = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), target.port));
            match timeout_at(deadline, lookup).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    return Err(Failure::Refused(Refusal::DnsFailed, e.to_string()));
                }
                Ok(Ok(addrs)) => addrs.collect(),
            }
        }
    };
    if addrs.is_empty() {
        return Err(Failure::Refused(Refusal::DnsFailed, "no addresses".into()));
    }
    let mut denied = None;
    let mut failed = None;
    for addr in addrs {
        let verdict = policy.check(domain, &target.host, addr);
        if !verdict.allowed {
            tracing::debug!(%domain, %addr, rule = %verdict.rule, "egress denied");
            denied.get_or_insert(format!("{addr}: {}", verdict.rule));
            continue;
        }
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                tracing::debug!(%domain, %addr, error = %e, "proxy connect failed");
                failed = Some(format!("{addr}: {e}"));
            }
            Ok(Ok(stream)) => {
                // A name of this host that no rule knows: caught by where the socket landed.
                if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr())
                    && policy.is_self_connection(local, peer)
                {
                    denied.get_or_insert(format!("{addr}: the relay's own endpoint"));
                    continue;
                }
                return Ok((stream, addr, verdict.rule));
            }
        }
    }
    match (failed, denied) {
        (Some(why), _) => Err(Failure::Refused(Refusal::ConnectFailed, why)),
        (None, Some(rule)) => Err(Failure::Denied(rule)),
        (None, None) => Err(Failure::Refused(Refusal::DnsFailed, "no addresses".into())),
    }
}

/// `CONNECT`: `200`, the bytes that came after the head, then the pipe (2.7 rules).
async fn tunnel(
    shared: &Shared,
    mut client: Stream,
    mut origin: TcpStream,
    early: &[u8],
    counters: &PipeCounters,
) -> crate::pipe::End {
    if client.write_all(wire::CONNECTED).await.is_err() {
        return crate::pipe::End::Error;
    }
    if !early.is_empty() {
        if origin.write_all(early).await.is_err() {
            return crate::pipe::End::Error;
        }
        counters.up.fetch_add(early.len() as u64, Ordering::Relaxed);
    }
    splice(shared, client, origin, counters).await
}

/// Absolute form: the rewritten head and the request's body to the origin, the response back
/// until the origin closes (it was sent `Connection: close`).
async fn forward(
    shared: &Shared,
    client: Stream,
    mut origin: TcpStream,
    request: Vec<u8>,
    early: &[u8],
    body: Body,
    counters: &PipeCounters,
) -> crate::pipe::End {
    let remaining = match body {
        Body::None => 0,
        Body::Length(n) => n,
        Body::Chunked => u64::MAX,
    };
    let first = early
        .len()
        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
    let mut out = request;
    out.extend_from_slice(&early[..first]);
    if origin.write_all(&out).await.is_err() {
        return crate::pipe::End::Error;
    }
    counters.up.fetch_add(out.len() as u64, Ordering::Relaxed);
    let client = BodyOnly {
        inner: tokio::io::AsyncReadExt::take(client, remaining.saturating_sub(first as u64)),
    };
    splice(shared, client, origin, counters).await
}

/// The pipe of 2.7 between the device and the origin; it ends only with them, or with the
/// relay's drain timeout.
async fn splice<C>(
    shared: &Shared,
    client: C,
    origin: TcpStream,
    counters: &PipeCounters,
) -> crate::pipe::End
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let stops = [&shared.hard_stop, &shared.hard_stop];
    let origin = Stream::Tcp(origin);
    let idle = shared.config.idle_timeout;
    crate::pipe::run_with(
        client,
        origin,
        crate::pipe::COPY_BUFFER,
        idle,
        counters,
        stops,
    )
    .await
    .end
}

/// A client leg that reads only the rest of one request's body, then reports the end: bytes
/// beyond it (a pipelined second request) never reach the origin unchecked.
struct BodyOnly {
    inner: tokio::io::Take<Stream>,
}

impl AsyncRead for BodyOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BodyOnly {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.inner.get_mut()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner.get_mut()).poll_shutdown(cx)
    }
}
