//! How the gateway serves HTTP connections, on its local listener and on every connection the
//! relay hands it, so that slow and flooding clients cannot hold it: the settings of
//! `[api.limits]` and the connection loop that applies them.
//!
//! Each limit is the tool made for it where one exists:
//!
//! - **head**: hyper's `header_read_timeout` — a request head must be complete within
//!   `head_timeout` of the connection being ready for one (accepted, or the previous response
//!   sent), else the connection is closed;
//! - **body**: tower-http's [`TimeoutBody`] closes a body with no byte for `body_timeout`, and
//!   [`MinRate`] one that arrives slower than `body_min_rate` bytes per second on average once
//!   `body_timeout` has passed (the handler answers `408`, see `api::json_body`);
//! - **request**: a handler that has not answered within `request_timeout` gets a `503`
//!   problem instead (a tokio timeout). A stream's response is its headers, so SSE streams are
//!   not cut; they follow their own rules: a keep-alive comment every 15 s, and
//! - **send**: a write that cannot make progress for `send_timeout` (a client that stopped
//!   reading, `gateway-api.md` §3.6) ends the connection ([`Guarded`]);
//! - **keep-alive idle**: a connection with no request in progress that receives no byte for
//!   `idle_timeout` is closed ([`Guarded`]; hyper's head timer bounds the whole head, this
//!   one the silences before and inside it);
//! - **connections**: at most `max_connections` local connections at once (by default what the
//!   process's file limit leaves after a reserve). At the cap the listener stops accepting, so
//!   the kernel's backlog holds newcomers until the timeouts above free a slot, and says so in
//!   one line per episode rather than one per connection.
//!
//! Relayed connections get the same timeouts; their number is `relay.max_connections`.

use crate::api::problem::Problem;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Buf;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// File descriptors kept back from the automatic connection cap, for the state database,
/// webhook deliveries and relay connections.
const FD_RESERVE: nix::sys::resource::rlim_t = 256;

/// `[api.limits]`: what a client may take of the gateway's listeners.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A complete request head within this of the connection being ready for one.
    #[serde(with = "crate::config_value::duration")]
    pub head_timeout: Duration,
    /// No byte for this long while no request is in progress closes the connection.
    #[serde(with = "crate::config_value::duration")]
    pub idle_timeout: Duration,
    /// The longest silence inside a request body, and the grace before `body_min_rate`.
    #[serde(with = "crate::config_value::duration")]
    pub body_timeout: Duration,
    /// The slowest average a request body may arrive at, bytes per second.
    pub body_min_rate: u64,
    /// A handler must answer (send its response head) within this.
    #[serde(with = "crate::config_value::duration")]
    pub request_timeout: Duration,
    /// A write that makes no progress for this long ends the connection.
    #[serde(with = "crate::config_value::duration")]
    pub send_timeout: Duration,
    /// Local connections open at once; `0` derives it from the file limit.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 500,
            request_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_connections: 0,
        }
    }
}

impl Limits {
    /// Range checks, naming the key (`api.limits.…`).
    pub fn validate(&self) -> Result<(), crate::config_value::ConfigError> {
        for (key, v) in [
            ("head_timeout", self.head_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_timeout", self.body_timeout),
            ("request_timeout", self.request_timeout),
            ("send_timeout", self.send_timeout),
        ] {
            crate::config_value::check(
                (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&v),
                &format!("api.limits.{key}"),
                humantime::format_duration(v),
                "100ms to 1h",
            )?;
        }
        crate::config_value::check(
            self.body_min_rate <= 1 << 30,
            "api.limits.body_min_rate",
            self.body_min_rate,
            "bytes per second, at most 1073741824 (0 for none)",
        )
    }

    /// The connection cap: `max_connections`, or what the file limit leaves.
    pub fn connection_cap(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let files = raise_file_limit();
        usize::try_from(files.saturating_sub(FD_RESERVE).clamp(16, 1 << 20)).unwrap_or(1 << 20)
    }
}

/// Raise the soft limit on open files to the hard one (as the Go runtime and most servers do)
/// and return the limit now in force (`rlim_t`: 32 bits on armv7, 64 on aarch64 and x86-64).
fn raise_file_limit() -> nix::sys::resource::rlim_t {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Serve `router` on `listener` under `limits` until `stop`; then stop accepting, let open
/// requests finish for at most `grace`, and drop what is left (streams do not end by
/// themselves).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
    grace: Duration,
) {
    let cap = limits.connection_cap();
    tracing::debug!(max_connections = cap, "local listener limits");
    let slots = Arc::new(Semaphore::new(cap));
    let limits = Arc::new(limits);
    let conns = TaskTracker::new();
    let hard = CancellationToken::new();
    let mut saturation = Saturation::default();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                saturation.reached(cap);
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = stop.cancelled() => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let (router, limits) = (router.clone(), limits.clone());
                let (stop, hard) = (stop.clone(), hard.clone());
                conns.spawn(async move {
                    let _slot = slot;
                    if let Err(e) = serve_connection(stream, router, &limits, stop, hard).await {
                        tracing::debug!(error = %e, "local connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning, and let
                // the kernel's backlog hold new connections meanwhile.
                saturation.accept_failed(&e);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::info!("requests still open after the shutdown grace period are dropped");
        hard.cancel();
        conns.wait().await;
    }
}

/// One line when the connection cap is reached or accepts fail, at most once a minute, with
/// how often it happened since the last line.
#[derive(Default)]
struct Saturation {
    logged: Option<Instant>,
    unlogged: u64,
}

impl Saturation {
    const EVERY: Duration = Duration::from_secs(60);

    fn due(&mut self) -> Option<u64> {
        self.unlogged += 1;
        if self.logged.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        self.logged = Some(Instant::now());
        Some(std::mem::take(&mut self.unlogged))
    }

    fn reached(&mut self, cap: usize) {
        if let Some(times) = self.due() {
            tracing::warn!(
                max_connections = cap,
                times,
                "the local listener has reached its connection limit (api.limits.max_connections): new connections wait in the backlog until open ones finish or time out"
            );
        }
    }

    fn accept_failed(&mut self, error: &io::Error) {
        if let Some(times) = self.due() {
            tracing::warn!(%error, times, "the local listener cannot accept connections");
        }
    }
}

/// Serve one HTTP/1.1 connection (local or relayed) with `router` under `limits`. On `stop`
/// the connection finishes its request and closes; on `hard` it closes at once.
pub async fn serve_connection<IO>(
    io: IO,
    router: Router,
    limits: &Limits,
    stop: CancellationToken,
    hard: CancellationToken,
) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Guarded::new(io, activity.clone(), limits);
    let service = RequestLimits {
        router,
        activity,
        request_timeout: limits.request_timeout,
        body_timeout: limits.body_timeout,
        body_min_rate: limits.body_min_rate,
    };
    let service = hyper::service::service_fn(move |req| service.clone().call(req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return done,
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
        () = hard.cancelled() => return Ok(()),
    }
    tokio::select! {
        done = conn.as_mut() => done,
        () = hard.cancelled() => Ok(()),
    }
}

/// Serve a connection the relay handed the agent, under the same limits; `stop` ends it after
/// its request, or after `grace`.
pub async fn serve_relayed<IO>(
    io: IO,
    router: Router,
    limits: &Limits,
    stop: CancellationToken,
    grace: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hard = CancellationToken::new();
    let grace = async {
        stop.cancelled().await;
        tokio::time::sleep(grace).await;
        hard.cancel();
    };
    tokio::select! {
        served = serve_connection(io, router, limits, stop.clone(), hard.clone()) => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "relayed connection ended");
            }
        }
        () = grace => {}
    }
}

/// Whether a request is in progress on a connection, and when the last one ended: what the
/// idle timer of [`Guarded`] needs to know.
struct Activity {
    open: AtomicUsize,
    epoch: Instant,
    /// Milliseconds after `epoch` at which the last response ended.
    ended_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            open: AtomicUsize::new(0),
            epoch: Instant::now(),
            ended_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> InProgress {
        self.open.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }

    fn busy(&self) -> bool {
        self.open.load(Ordering::Acquire) > 0
    }

    fn last_end(&self) -> Instant {
        self.epoch + Duration::from_millis(self.ended_ms.load(Ordering::Acquire))
    }
}

/// A request in progress: from the handler's call until its response body is dropped.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.ended_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The per-request limits around the router.
#[derive(Clone)]
struct RequestLimits {
    router: Router,
    activity: Arc<Activity>,
    request_timeout: Duration,
    body_timeout: Duration,
    body_min_rate: u64,
}

impl RequestLimits {
    async fn call(
        self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let in_progress = self.activity.begin();
        let req = req.map(|body| {
            let body = MinRate::new(body, self.body_timeout, self.body_min_rate);
            Body::new(TimeoutBody::new(self.body_timeout, body))
        });
        let response =
            match tokio::time::timeout(self.request_timeout, self.router.oneshot(req)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request-timeout",
                    format!(
                        "the gateway did not answer within {} s (api.limits.request_timeout)",
                        self.request_timeout.as_secs_f64()
                    ),
                )
                .into_response(),
            };
        // The request stays in progress until its body, a stream perhaps, is gone.
        Ok(response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _ = &in_progress;
                frame
            }))
        }))
    }
}

/// A request body that must keep an average of `rate` bytes per second once `grace` has
/// passed: by `start + grace + read / rate` the next byte must have arrived.
struct MinRate<B> {
    inner: B,
    rate: u64,
    grace: Duration,
    start: Instant,
    read: u64,
    deadline: Pin<Box<Sleep>>,
}

/// A request body that arrived slower than `api.limits.body_min_rate`.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {0} bytes per second")]
pub struct TooSlow(pub u64);

impl<B> MinRate<B> {
    fn new(inner: B, grace: Duration, rate: u64) -> Self {
        let start = Instant::now();
        MinRate {
            inner,
            rate,
            grace,
            start,
            read: 0,
            deadline: Box::pin(tokio::time::sleep_until(start + grace)),
        }
    }

    fn next_deadline(&self) -> Instant {
        let earned = Duration::from_secs_f64(self.read as f64 / self.rate.max(1) as f64);
        self.start + self.grace + earned
    }
}

impl<B> hyper::body::Body for MinRate<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.remaining() as u64;
                    let next = this.next_deadline();
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                if this.rate > 0 && this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(TooSlow(this.rate)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket with the two timers hyper lacks: the keep-alive idle timeout (no
/// byte while no request is in progress) and the send timeout (a write stuck that long).
struct Guarded<IO> {
    io: IO,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    send_timeout: Duration,
    last_read: Instant,
    read_deadline: Option<Instant>,
    read_timer: Pin<Box<Sleep>>,
    write_stuck: bool,
    write_timer: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, activity: Arc<Activity>, limits: &Limits) -> Self {
        let now = Instant::now();
        Guarded {
            io,
            activity,
            idle_timeout: limits.idle_timeout,
            send_timeout: limits.send_timeout,
            last_read: now,
            read_deadline: None,
            read_timer: Box::pin(tokio::time::sleep_until(now)),
            write_stuck: false,
            write_timer: Box::pin(tokio::time::sleep_until(now)),
        }
    }

    /// A write that is `Pending`: start the send timer if it is not running; an error once
    /// it has run out.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.write_stuck {
            self.write_stuck = true;
            let deadline = Instant::now() + self.send_timeout;
            self.write_timer.as_mut().reset(deadline);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for api.limits.send_timeout",
        ))
    }

    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.write_stuck = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.write_pending(cx).map(Err),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.activity.busy() => Poll::Pending,
            Poll::Pending => {
                let deadline = this.last_read.max(this.activity.last_end()) + this.idle_timeout;
                if this.read_deadline != Some(deadline) {
                    this.read_deadline = Some(deadline);
                    this.read_timer.as_mut().reset(deadline);
                }
                ready!(this.read_timer.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request for api.limits.idle_timeout",
                )))
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.written(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.written(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.written(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.written(cx, polled)
    }
}
