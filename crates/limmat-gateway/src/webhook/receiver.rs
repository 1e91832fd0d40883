//! A small, real webhook receiver (`gateway-api.md` §5.1–§5.2), for tests and `limmat demo`.
//!
//! It listens on a real socket (HTTP/1.1 with keep-alive, optionally TLS), verifies each
//! delivery's `webhook-signature` in constant time and its `webhook-timestamp` against its own
//! clock (±5 minutes), and records what arrived: every request as an [`Attempt`], and each
//! verified, acknowledged message once as a [`Delivery`] (de-duplicated by `webhook-id`).
//! Tests wait for counts on a `watch` channel rather than sleeping, and can script the answers
//! (statuses in order, headers such as `Retry-After` or `Location`, or no answer at all). The
//! demo turns on a one-line print per verified delivery. Benchmarks observe each delivery as it
//! arrives ([`Receiver::observe`]) and turn recording off ([`Receiver::record`]), so a long
//! run neither polls growing lists nor keeps every body in memory.

use super::sign::{self, VerifyError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Request bodies over this size are refused with `413`.
const MAX_BODY: usize = 1024 * 1024;

/// How the receiver answers one verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A status with extra header fields and a body (empty unless set).
    Status {
        /// The status code.
        status: u16,
        /// Extra header fields, in order.
        headers: Vec<(String, String)>,
        /// The body.
        body: Bytes,
    },
    /// Never answer: the request stays open until the client gives up.
    Hang,
}

impl Reply {
    /// An empty reply with `status`.
    pub fn status(status: u16) -> Self {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Sets the body (of a `Status` reply).
    pub fn body(mut self, bytes: impl Into<Bytes>) -> Self {
        if let Reply::Status { body, .. } = &mut self {
            *body = bytes.into();
        }
        self
    }

    /// Adds a header field (to a `Status` reply).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// Never answer.
    pub fn hang() -> Self {
        Reply::Hang
    }
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it arrived (after its body).
    pub at: Instant,
    /// `webhook-id`, if present.
    pub id: Option<String>,
    /// `webhook-timestamp`, if present and an integer.
    pub timestamp: Option<i64>,
    /// The body as received.
    pub body: Bytes,
    /// The header fields as received.
    pub headers: HeaderMap,
    /// `None` if the delivery verified; else why it did not.
    pub rejected: Option<VerifyError>,
    /// The status answered, `None` for a hang.
    pub answered: Option<u16>,
}

/// A verified message the receiver acknowledged with a 2xx, recorded once per `webhook-id`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp` (Unix seconds).
    pub timestamp: i64,
    /// The body as received.
    pub body: Bytes,
    /// The header fields as received.
    pub headers: HeaderMap,
}

/// Called once per recorded delivery, with the time it arrived (see [`Receiver::observe`]).
pub type Observer = Arc<dyn Fn(&Delivery, SystemTime) + Send + Sync>;

struct State {
    /// Whether attempts and deliveries are kept (ids are always kept, for de-duplication).
    record: bool,
    observer: Option<Observer>,
    script: VecDeque<Reply>,
    attempts: Vec<Attempt>,
    deliveries: Vec<Delivery>,
    seen: HashSet<String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            record: true,
            observer: None,
            script: VecDeque::new(),
            attempts: Vec::new(),
            deliveries: Vec::new(),
            seen: HashSet::new(),
        }
    }
}

/// What the receiver's handle and its connections share.
struct ReceiverShared {
    keys: Vec<Vec<u8>>,
    print: bool,
    state: Mutex<State>,
    /// Counts of attempts and of (unique) deliveries, for waiters.
    attempts_tx: watch::Sender<usize>,
    deliveries_tx: watch::Sender<usize>,
    connections_tx: watch::Sender<usize>,
}

impl ReceiverShared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Options for [`Receiver::start_with`].
#[derive(Clone, Default)]
pub struct ReceiverOptions {
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Print one line per verified delivery on stdout (the demo).
    pub print: bool,
}

/// A running receiver; dropping it stops the listener and closes every connection.
pub struct Receiver {
    addr: SocketAddr,
    https: bool,
    shared: Arc<ReceiverShared>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The wait ended before the count was reached; what had arrived is inside.
#[derive(Debug, thiserror::Error)]
#[error("timed out with {0} of the awaited items")]
pub struct WaitTimeout(pub usize);

impl Receiver {
    /// A plain-HTTP receiver on `addr` (`127.0.0.1:0` for a free port) that accepts signatures
    /// made with any of `keys` (decoded secrets).
    pub async fn start(addr: SocketAddr, keys: Vec<Vec<u8>>) -> std::io::Result<Self> {
        Self::start_with(addr, keys, ReceiverOptions::default()).await
    }

    /// [`Receiver::start`] with `options` (TLS, a line per delivery on stdout).
    pub async fn start_with(
        addr: SocketAddr,
        keys: Vec<Vec<u8>>,
        options: ReceiverOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ReceiverShared {
            keys,
            print: options.print,
            state: Mutex::new(State::default()),
            attempts_tx: watch::channel(0).0,
            deliveries_tx: watch::channel(0).0,
            connections_tx: watch::channel(0).0,
        });
        let mut tasks = JoinSet::new();
        let https = options.tls.is_some();
        let acceptor = options.tls.map(TlsAcceptor::from);
        let s = shared.clone();
        tasks.spawn(accept_loop(listener, acceptor, s));
        Ok(Receiver {
            addr,
            https,
            shared,
            tasks,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>` (or `https://`; `host` replaces the address if given,
    /// for a TLS certificate's name).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Answers the next verified requests with these replies, in order, after those already
    /// scripted; when the script runs out, requests get `200`.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.state().script.extend(replies);
    }

    /// Calls `observer` for every delivery recorded from now on (verified, acknowledged, first
    /// of its `webhook-id`), with the wall-clock time its body had arrived. It runs before the
    /// answer is sent, so it should be quick (hand the delivery to another task).
    pub fn observe(&self, observer: impl Fn(&Delivery, SystemTime) + Send + Sync + 'static) {
        self.shared.state().observer = Some(Arc::new(observer));
    }

    /// Whether attempts and deliveries are kept for [`Receiver::attempts`] and
    /// [`Receiver::deliveries`] (the default); counts, waits and observers work either way.
    pub fn record(&self, keep: bool) {
        self.shared.state().record = keep;
    }

    /// Verified, acknowledged messages, once per `webhook-id`, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.state().deliveries.clone()
    }

    /// Every request, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.state().attempts.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.shared.connections_tx.borrow()
    }

    /// Waits until at least `n` deliveries have been recorded.
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, WaitTimeout> {
        wait(&self.shared.deliveries_tx, n, timeout).await?;
        Ok(self.deliveries())
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for_attempts(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Attempt>, WaitTimeout> {
        wait(&self.shared.attempts_tx, n, timeout).await?;
        Ok(self.attempts())
    }

    /// Waits until at least `n` connections have been accepted.
    pub async fn wait_for_connections(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        wait(&self.shared.connections_tx, n, timeout).await
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn wait(tx: &watch::Sender<usize>, n: usize, timeout: Duration) -> Result<(), WaitTimeout> {
    let mut rx = tx.subscribe();
    match tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(WaitTimeout(*tx.borrow())),
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<ReceiverShared>) {
    // Connection tasks live in this set, so they end with the accept loop.
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((tcp, _)) = accepted else {
            // Out of descriptors and the like: back off a little instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections_tx.send_modify(|c| *c += 1);
        let shared = shared.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn respond(status: u16, headers: &[(String, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

async fn handle(
    shared: Arc<ReceiverShared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(respond(413, &[], Bytes::new())),
    };
    let arrived = SystemTime::now();
    let headers = parts.headers;
    let id = text(&headers, "webhook-id");
    let ts_text = text(&headers, "webhook-timestamp");
    let timestamp = ts_text.as_deref().and_then(|t| t.parse().ok());
    let verdict = match (&id, &ts_text, text(&headers, "webhook-signature")) {
        (Some(id), Some(ts), Some(sig)) => {
            sign::verify(&shared.keys, id, ts, &body, &sig, unix_now()).err()
        }
        _ => Some(VerifyError::NoMatch),
    };
    let reply = if verdict.is_some() {
        Reply::status(401)
    } else {
        shared
            .state()
            .script
            .pop_front()
            .unwrap_or_else(|| Reply::status(200))
    };
    let answered = match &reply {
        Reply::Status { status, .. } => Some(*status),
        Reply::Hang => None,
    };
    let attempt = Attempt {
        at: Instant::now(),
        id: id.clone(),
        timestamp,
        body: body.clone(),
        headers: headers.clone(),
        rejected: verdict,
        answered,
    };
    let mut new_delivery = false;
    let mut observed = None;
    {
        let mut state = shared.state();
        if state.record {
            state.attempts.push(attempt);
        }
        if let (None, Some(200..=299), Some(id), Some(ts)) = (verdict, answered, &id, timestamp)
            && state.seen.insert(id.clone())
        {
            let delivery = Delivery {
                id: id.clone(),
                timestamp: ts,
                body: body.clone(),
                headers: headers.clone(),
            };
            if let Some(observer) = &state.observer {
                observed = Some((observer.clone(), delivery.clone()));
            }
            if state.record {
                state.deliveries.push(delivery);
            }
            new_delivery = true;
        }
    }
    if let Some((observer, delivery)) = observed {
        observer(&delivery, arrived);
    }
    if new_delivery {
        if shared.print {
            // A closed stdout must not panic the receiver.
            let _ = writeln!(
                std::io::stdout().lock(),
                "webhook {} verified: {}",
                id.as_deref().unwrap_or(""),
                String::from_utf8_lossy(&body)
            );
        }
        shared.deliveries_tx.send_modify(|c| *c += 1);
    }
    shared.attempts_tx.send_modify(|c| *c += 1);
    match reply {
        Reply::Status {
            status,
            headers,
            body,
        } => Ok(respond(status, &headers, body)),
        Reply::Hang => std::future::pending().await,
    }
}
