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

use crate::auth::{Authenticator, fingerprint};
use crate::context::{ProxyState, RelayContext};
use crate::egress::Policy;
use crate::legs::Conn;
use crate::linger::{refuse_and_close, respond_and_close};
use crate::pipe::{self, End};
use crate::snapshot::PipeCounters;
use crate::stream::Stream;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use limmat_wire::proxy::{self as wire, AbsoluteTarget, Body, Credentials, Host, Refusal, Target};
use limmat_wire::route::parse_domain;
use limmat_wire::{RequestHead, response};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

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

/// Who a proxy request is from: the domain its key identifies, and the key's fingerprint.
struct Device {
    domain: String,
    fingerprint: String,
}

/// Serves one proxy request whose head is `buf[..head_len]`; bytes after it are the start
/// of the tunnel or of the request body.
pub(crate) async fn serve(ctx: &RelayContext, conn: Conn, buf: Vec<u8>, head_len: usize) {
    let Some(proxy) = &ctx.proxy else {
        // The forward proxy is off (D7): the exact 501, never authenticated.
        return respond_and_close(conn.stream, response::NOT_IMPLEMENTED).await;
    };
    let (head, early) = buf.split_at(head_len);
    let parsed = RequestHead::parse(head);
    let kind = match parsed.method {
        b"CONNECT" => Kind::Connect,
        _ => Kind::Http,
    };
    let peer = conn.peer;
    let device = match authenticate(ctx, peer, head) {
        Ok(device) => device,
        Err(refusal) => {
            let verdict = match refusal {
                Refusal::Auth => "auth_failed",
                _ => "error",
            };
            counter(kind, "unknown", verdict);
            return refuse_and_close(conn.stream, &refusal.response()).await;
        }
    };
    let who = Who {
        device: &device,
        peer,
        kind,
        proxy,
    };
    let request = match target(kind, &parsed, head) {
        Ok(request) => request,
        Err(why) => {
            return refuse_and_close(conn.stream, &who.refuse(Refusal::BadTarget, &why)).await;
        }
    };
    let domain = device.domain.as_str();
    let Some(active) = proxy.stats.enter(domain, ctx.config.proxy_max_per_domain) else {
        let response = who.refuse(Refusal::RateLimited(1), "proxy_max_per_domain reached");
        return refuse_and_close(conn.stream, &response).await;
    };
    let started = Instant::now();
    let target = request.target();
    let (origin, chosen, rule) = match connect(ctx, &proxy.policy, domain, target).await {
        Ok(connected) => connected,
        Err(Failure::Denied(rule)) => {
            tracing::info!(%domain, key = %device.fingerprint, %peer, kind = kind.label(), host = %target.host, port = target.port, verdict = "denied", %rule, "proxy request denied by the egress policy");
            proxy.stats.update(domain, |s| s.denied += 1);
            counter(kind, domain, "denied");
            return refuse_and_close(conn.stream, &Refusal::EgressDenied.response()).await;
        }
        Err(Failure::Refused(refusal, why)) => {
            return refuse_and_close(conn.stream, &who.refuse(refusal, &why)).await;
        }
    };
    crate::socket::configure(&origin);
    proxy.stats.update(domain, |s| s.connections += 1);
    counter(kind, domain, "allowed");
    let Conn { stream, open, .. } = conn;
    let counters = PipeCounters::default();
    let end = match &request {
        Request::Connect(_) => tunnel(ctx, stream, origin, early, &counters).await,
        Request::Absolute(absolute, body) => {
            let request = wire::origin_request(head, absolute);
            forward(ctx, stream, origin, request, early, *body, &counters).await
        }
    };
    let (up, down) = account(proxy, domain, &counters);
    drop(active);
    tracing::info!(%domain, key = %device.fingerprint, %peer, kind = kind.label(), host = %target.host, port = target.port, addr = %chosen, verdict = "allowed", %rule, bytes_out = up, bytes_in = down, duration_ms = started.elapsed().as_millis() as u64, end = ?end, "proxy connection closed");
    // Counted as open until the accounting is done, so that the gauge tells when it is.
    drop(open);
}

/// A proxy request's device, for its refusals.
struct Who<'a> {
    device: &'a Device,
    peer: SocketAddr,
    kind: Kind,
    proxy: &'a ProxyState,
}

impl Who<'_> {
    /// Logs and counts a refusal of an authenticated request; returns the response to send.
    fn refuse(&self, refusal: Refusal, why: &str) -> Vec<u8> {
        let (domain, kind) = (self.device.domain.as_str(), self.kind);
        tracing::info!(%domain, key = %self.device.fingerprint, peer = %self.peer, kind = kind.label(), verdict = "error", token = refusal.token(), why, "proxy request refused");
        self.proxy.stats.update(domain, |s| s.errors += 1);
        counter(kind, domain, "error");
        refusal.response()
    }
}

/// What a proxy request asks for (6.1).
enum Request {
    /// `CONNECT host:port`: a tunnel.
    Connect(Target),
    /// An absolute-form request and its body framing.
    Absolute(AbsoluteTarget, Body),
}

impl Request {
    fn target(&self) -> &Target {
        match self {
            Request::Connect(target) => target,
            Request::Absolute(absolute, _) => &absolute.target,
        }
    }
}

/// Parses the request target, and the body framing of an absolute-form request.
fn target(kind: Kind, parsed: &RequestHead<'_>, head: &[u8]) -> Result<Request, String> {
    match kind {
        Kind::Connect => match wire::parse_authority(parsed.target) {
            Ok(target) => Ok(Request::Connect(target)),
            Err(e) => Err(e.to_string()),
        },
        Kind::Http => {
            let absolute = wire::parse_absolute(parsed.target).map_err(|e| e.to_string())?;
            match wire::body(head) {
                Ok(body) => Ok(Request::Absolute(absolute, body)),
                Err(e) => Err(format!("body framing: {e:?}")),
            }
        }
    }
}

/// Adds a finished request's bytes to its domain's counters; returns them (up, down).
fn account(proxy: &ProxyState, domain: &str, counters: &PipeCounters) -> (u64, u64) {
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
    (up, down)
}

fn counter(kind: Kind, domain: &str, verdict: &'static str) {
    metrics::counter!("limmat_proxy_requests_total", "domain" => domain.to_owned(), "kind" => kind.label(), "verdict" => verdict).increment(1);
}

/// 6.2: the source's failed-authentication bucket, then `Proxy-Authorization`: a Bearer key
/// identifies its domain; Basic names the domain as the user and the key as the password.
fn authenticate(ctx: &RelayContext, peer: SocketAddr, head: &[u8]) -> Result<Device, Refusal> {
    if let Err(refusal) = ctx.limits.auth_allowed(peer.ip()) {
        tracing::info!(%peer, "proxy request refused: too many failed authentications");
        return Err(Refusal::RateLimited(refusal.secs()));
    }
    let checked = match ctx.keys() {
        Some(keys) => check_credentials(&keys, wire::credentials(head)),
        // Unreachable: the relay refuses to start the proxy in open mode.
        None => Err("no device keys".to_owned()),
    };
    checked.map_err(|why| {
        ctx.limits.auth_failed(peer.ip());
        tracing::info!(%peer, verdict = "auth_failed", reason = %why, "proxy request refused: authentication");
        Refusal::Auth
    })
}

fn check_credentials(auth: &Authenticator, credentials: Credentials<'_>) -> Result<Device, String> {
    let (domain, key) = match credentials {
        Credentials::Missing => return Err("no Proxy-Authorization".into()),
        Credentials::Several => return Err("more than one Proxy-Authorization".into()),
        Credentials::Unsupported => return Err("not Bearer or Basic".into()),
        Credentials::Bearer(key) => {
            let domain = auth
                .domain_of_key(key)
                .ok_or_else(|| format!("key {} is not valid", fingerprint(key)))?;
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
    ctx: &RelayContext,
    policy: &Policy,
    domain: &str,
    target: &Target,
) -> Result<(TcpStream, SocketAddr, String), Failure> {
    let deadline = Instant::now() + ctx.config.proxy_connect_timeout;
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
    ctx: &RelayContext,
    mut client: Stream,
    mut origin: TcpStream,
    early: &[u8],
    counters: &PipeCounters,
) -> End {
    if client.write_all(wire::CONNECTED).await.is_err() {
        return End::Error;
    }
    if !early.is_empty() {
        if origin.write_all(early).await.is_err() {
            return End::Error;
        }
        counters.up.fetch_add(early.len() as u64, Ordering::Relaxed);
    }
    splice(ctx, client, origin, counters).await
}

/// Absolute form: the rewritten head and the request's body to the origin, the response back
/// until the origin closes (it was sent `Connection: close`).
async fn forward(
    ctx: &RelayContext,
    client: Stream,
    mut origin: TcpStream,
    request: Vec<u8>,
    early: &[u8],
    body: Body,
    counters: &PipeCounters,
) -> End {
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
        return End::Error;
    }
    counters.up.fetch_add(out.len() as u64, Ordering::Relaxed);
    let client = BodyOnly {
        inner: tokio::io::AsyncReadExt::take(client, remaining.saturating_sub(first as u64)),
    };
    splice(ctx, client, origin, counters).await
}

/// The pipe of 2.7 between the device and the origin; it ends only with them, or with the
/// relay's drain timeout.
async fn splice<C>(ctx: &RelayContext, client: C, origin: TcpStream, counters: &PipeCounters) -> End
where
    C: AsyncRead + AsyncWrite + limmat_mux::Ends + Unpin,
{
    let stops = [&ctx.hard_stop, &ctx.hard_stop];
    let idle = ctx.config.idle_timeout;
    pipe::run_with(client, origin, pipe::COPY_BUFFER, idle, counters, stops)
        .await
        .end
}

/// A client leg that reads only the rest of one request's body, then reports the end: bytes
/// beyond it (a pipelined second request) never reach the origin unchecked.
struct BodyOnly {
    inner: tokio::io::Take<Stream>,
}

impl limmat_mux::Ends for BodyOnly {}

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
