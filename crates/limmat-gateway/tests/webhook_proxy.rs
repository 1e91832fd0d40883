//! Delivery through a forward proxy (`gateway-api.md` §5.9), against a minimal in-test proxy
//! built on hyper that behaves as the relay's forward proxy does (relay-protocol §6): bearer
//! key on every request, `CONNECT` tunnels, absolute-form `http` requests, and error answers
//! with `Limmat-Error`. The relay's own forward proxy had not landed when this was written.

mod webhook_support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use limmat_gateway::webhook::client::HttpTransport;
use limmat_gateway::webhook::receiver::Receiver;
use limmat_gateway::webhook::{FailureKind, Outcome, Transport};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use webhook_support::*;

const PROXY_KEY: &str = "device-key-123";
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Pass,
    DenyEgress,
}

/// What the proxy saw: method, request target, `Proxy-Authorization`.
type Seen = Vec<(Method, String, Option<String>)>;

struct ProxyState {
    /// Names the proxy resolves (it, not the gateway, resolves names in proxy mode).
    names: HashMap<String, SocketAddr>,
    policy: Mutex<Policy>,
    seen: Mutex<Seen>,
}

struct TestProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    _tasks: JoinSet<()>,
}

impl TestProxy {
    async fn start(names: HashMap<String, SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            names,
            policy: Mutex::new(Policy::Pass),
            seen: Mutex::new(Vec::new()),
        });
        let mut tasks = JoinSet::new();
        let s = state.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let s = s.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| proxy(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestProxy {
            addr,
            state,
            _tasks: tasks,
        }
    }

    fn seen(&self) -> Seen {
        self.state.seen.lock().unwrap().clone()
    }

    fn set(&self, policy: Policy) {
        *self.state.policy.lock().unwrap() = policy;
    }
}

fn answer(status: u16, token: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Limmat-Error", token)
        .header("Proxy-Authenticate", "Bearer")
        .header("Connection", "close")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn proxy(
    state: Arc<ProxyState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let auth = req
        .headers()
        .get("proxy-authorization")
        .map(|v| v.to_str().unwrap().to_string());
    state
        .seen
        .lock()
        .unwrap()
        .push((req.method().clone(), req.uri().to_string(), auth.clone()));
    if auth.as_deref() != Some(&format!("Bearer {PROXY_KEY}")) {
        return Ok(answer(407, "auth"));
    }
    if *state.policy.lock().unwrap() == Policy::DenyEgress {
        return Ok(answer(403, "egress-denied"));
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return Ok(answer(400, "bad-target"));
    };
    let Some(&target) = state.names.get(authority.host()) else {
        return Ok(answer(502, "dns-failed"));
    };
    let target = SocketAddr::new(target.ip(), authority.port_u16().unwrap_or(80));
    let Ok(upstream) = TcpStream::connect(target).await else {
        return Ok(answer(502, "connect-failed"));
    };
    if req.method() == Method::CONNECT {
        tokio::spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                let mut upstream = upstream;
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
            }
        });
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    // Absolute form: forward in origin form, without the hop-by-hop proxy field.
    let (mut parts, body) = req.into_parts();
    parts.headers.remove("proxy-authorization");
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .unwrap();
    let body = body.collect().await.unwrap().to_bytes();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn proxied(proxy: &TestProxy, key: &str, ca: Option<&std::path::Path>) -> HttpTransport {
    // No allow list: the gateway resolves nothing itself in proxy mode.
    let mut s = settings(&[]);
    s.proxy = Some(format!("http://{}", proxy.addr));
    s.proxy_key = Some(key.to_string());
    s.ca_file = ca.map(|p| p.to_path_buf());
    HttpTransport::new(&s).unwrap()
}

async fn setup() -> (Pki, Receiver, Receiver, TestProxy) {
    let pki = Pki::new();
    let tls = tls_receiver(&pki).await;
    let plain = plain_receiver().await;
    let names = HashMap::from([("hook.test".to_string(), tls.addr())]);
    let proxy = TestProxy::start(names).await;
    (pki, tls, plain, proxy)
}

#[tokio::test]
async fn https_goes_through_connect_with_tls_end_to_end() {
    let (pki, rx, _, proxy) = setup().await;
    let ca = pki.ca_file();
    let t = proxied(&proxy, PROXY_KEY, Some(ca.path()));
    let url = format!("https://hook.test:{}/hook", rx.addr().port());
    let keys = [key()];
    for _ in 0..2 {
        assert_eq!(
            t.attempt(message(&url, &keys)).await,
            Outcome::Delivered { status: 200 }
        );
    }
    let got = rx.wait_for_attempts(2, WAIT).await.unwrap();
    assert!(got.iter().all(|a| a.rejected.is_none()));
    assert_eq!(&got[0].body[..], BODY);
    // One CONNECT, with the bearer key; the second attempt reused the tunnel.
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, Method::CONNECT);
    assert_eq!(seen[0].1, format!("hook.test:{}", rx.addr().port()));
    assert_eq!(seen[0].2.as_deref(), Some("Bearer device-key-123"));
    assert_eq!(rx.connections(), 1);
    // The tunnel's TLS is verified for the host name: without the private root it fails.
    let untrusting = proxied(&proxy, PROXY_KEY, None);
    assert_eq!(
        untrusting.attempt(message(&url, &keys)).await,
        Outcome::Failed {
            kind: FailureKind::Tls,
            status: None,
            retry_after: None
        }
    );
}

#[tokio::test]
async fn http_goes_in_absolute_form() {
    let rx = plain_receiver().await;
    // The proxy, not the gateway, resolves the name.
    let proxy = TestProxy::start(HashMap::from([("plain.test".to_string(), rx.addr())])).await;
    let t = proxied(&proxy, PROXY_KEY, None);
    let url = format!("http://plain.test:{}/hook?q=1", rx.addr().port());
    let keys = [key()];
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        Outcome::Delivered { status: 200 }
    );
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, Method::POST);
    assert_eq!(seen[0].1, url);
    assert_eq!(seen[0].2.as_deref(), Some("Bearer device-key-123"));
    let d = rx.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        d[0].headers["host"],
        format!("plain.test:{}", rx.addr().port())
    );
    assert!(!d[0].headers.contains_key("proxy-authorization"));
    assert_eq!(rx.attempts()[0].rejected, None);
}

#[tokio::test]
async fn proxy_refusals_are_classified() {
    let (pki, tls, _, proxy) = setup().await;
    let ca = pki.ca_file();
    let keys = [key()];
    let https = format!("https://hook.test:{}/", tls.addr().port());
    let http = format!("http://hook.test:{}/", tls.addr().port());
    let fail = |kind, status: Option<u16>| Outcome::Failed {
        kind,
        status,
        retry_after: None,
    };
    // A wrong key: 407 → proxy-auth, on both paths.
    let wrong = proxied(&proxy, "nope", Some(ca.path()));
    for url in [&https, &http] {
        assert_eq!(
            wrong.attempt(message(url, &keys)).await,
            fail(FailureKind::ProxyAuth, Some(407)),
            "{url}"
        );
    }
    // The egress policy denies: 403 → proxy-denied, on both paths.
    proxy.set(Policy::DenyEgress);
    let t = proxied(&proxy, PROXY_KEY, Some(ca.path()));
    for url in [&https, &http] {
        assert_eq!(
            t.attempt(message(url, &keys)).await,
            fail(FailureKind::ProxyDenied, Some(403)),
            "{url}"
        );
    }
    proxy.set(Policy::Pass);
    // The proxy cannot resolve or reach the target: 502, a throttled status failure.
    let unknown = "https://unknown.test/".to_string();
    assert_eq!(
        t.attempt(message(&unknown, &keys)).await,
        fail(FailureKind::Status, Some(502))
    );
    // The gateway's own literal and localhost checks still apply, before any proxy request.
    let before = proxy.seen().len();
    for url in [
        "http://127.0.0.1:9/",
        "https://[::1]:9/",
        "http://10.0.0.1/",
        "https://localhost/",
        "http://x.localhost/",
    ] {
        assert_eq!(
            t.attempt(message(url, &keys)).await,
            fail(FailureKind::SsrfDenied, None),
            "{url}"
        );
    }
    assert_eq!(proxy.seen().len(), before);
}
