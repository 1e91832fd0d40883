//! One delivery attempt against the real receiver over real sockets on 127.0.0.1
//! (`gateway-api.md` §5.1–§5.8; checklist 31, 32, 34, 35, 36–37 at attempt level, 40), over
//! plain HTTP and over TLS with a private CA, with keep-alive reuse.

mod webhook_support;

use limmat_gateway::webhook::client::{HttpTransport, USER_AGENT};
use limmat_gateway::webhook::receiver::{Receiver, Reply};
use limmat_gateway::webhook::sign;
use limmat_gateway::webhook::ssrf::StaticResolver;
use limmat_gateway::webhook::{FailureKind, Outcome, Transport};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use webhook_support::*;

const LOCAL: &str = "127.0.0.1:0";
const WAIT: Duration = Duration::from_secs(10);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn receiver() -> Receiver {
    plain_receiver().await
}

fn transport(allow: &[&str]) -> HttpTransport {
    HttpTransport::new(&settings(allow)).unwrap()
}

fn failed(kind: FailureKind, status: Option<u16>, retry_after: Option<Duration>) -> Outcome {
    Outcome::Failed {
        kind,
        status,
        retry_after,
    }
}

#[tokio::test]
async fn a_delivery_is_signed_verified_and_carries_the_5_1_headers() {
    let rx = receiver().await;
    let t = transport(&["127.0.0.1/32"]);
    let url = rx.url("/hooks/limmat?x=1");
    let keys = [key()];
    let outcome = t.attempt(message(&url, &keys)).await;
    assert_eq!(outcome, Outcome::Delivered { status: 200 });
    let got = rx.wait_for(1, WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(d.id, MSG);
    assert_eq!(&d.body[..], BODY);
    let h = |n: &str| d.headers.get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("user-agent"), USER_AGENT);
    assert!(USER_AGENT.starts_with("limmat-gateway/"));
    assert_eq!(h("limmat-subscription"), SUB);
    assert_eq!(h("webhook-id"), MSG);
    assert_eq!(h("host"), rx.addr().to_string());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((d.timestamp - now).abs() <= 5);
    assert_eq!(
        h("webhook-signature"),
        sign::sign(&key(), MSG, d.timestamp, BODY)
    );
    // Checklist 34: the receiver verified it (it answers 401 and records no delivery
    // otherwise), and the path and query went through.
    let attempts = rx.attempts();
    assert_eq!(attempts[0].rejected, None);
    assert_eq!(attempts[0].answered, Some(200));
}

#[tokio::test]
async fn the_receiver_rejects_bad_signatures_and_accepts_rotated_keys() {
    let old = vec![1u8; 24];
    let new = vec![2u8; 64];
    // A receiver that knows only the old key accepts a rotation's two signatures.
    let rx = Receiver::start(LOCAL.parse().unwrap(), vec![old.clone()])
        .await
        .unwrap();
    let t = transport(&["127.0.0.1/32"]);
    let url = rx.url("/");
    let both = [new.clone(), old.clone()];
    assert_eq!(
        t.attempt(message(&url, &both)).await,
        Outcome::Delivered { status: 200 }
    );
    let sig = rx.deliveries()[0].headers["webhook-signature"]
        .to_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = sig.split(' ').collect();
    assert_eq!(parts.len(), 2, "{sig}");
    assert!(parts.iter().all(|p| p.starts_with("v1,")));
    // Signed with an unknown key: 401, recorded as a rejected attempt, not a delivery.
    let wrong = [new];
    assert_eq!(
        t.attempt(message(&url, &wrong)).await,
        failed(FailureKind::Status, Some(401), None)
    );
    let attempts = rx.wait_for_attempts(2, WAIT).await.unwrap();
    assert_eq!(attempts[1].rejected, Some(sign::VerifyError::NoMatch));
    assert_eq!(rx.deliveries().len(), 1);
}

#[tokio::test]
async fn a_timestamp_out_of_tolerance_is_rejected() {
    let rx = receiver().await;
    let skew = SystemTime::now() - Duration::from_secs(301);
    let t = transport(&["127.0.0.1/32"]).with_clock(Arc::new(move || skew));
    let url = rx.url("/");
    let keys = [key()];
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        failed(FailureKind::Status, Some(401), None)
    );
    assert_eq!(rx.attempts()[0].rejected, Some(sign::VerifyError::Stale));
}

/// Checklist 35: the same `webhook-id` and byte-identical body on every attempt, with the
/// timestamp of each attempt (a controlled clock one second apart).
#[tokio::test]
async fn retries_keep_id_and_body_and_change_the_timestamp() {
    let rx = receiver().await;
    rx.script([Reply::status(500)]);
    let offset = Arc::new(AtomicU64::new(0));
    let start = SystemTime::now();
    let o = offset.clone();
    let t = transport(&["127.0.0.1/32"]).with_clock(Arc::new(move || {
        start + Duration::from_secs(o.load(Ordering::SeqCst))
    }));
    let url = rx.url("/");
    let keys = [key()];
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        failed(FailureKind::Status, Some(500), None)
    );
    offset.store(1, Ordering::SeqCst);
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        Outcome::Delivered { status: 200 }
    );
    let a = rx.wait_for_attempts(2, WAIT).await.unwrap();
    assert_eq!(a[0].id.as_deref(), Some(MSG));
    assert_eq!(a[0].id, a[1].id);
    assert_eq!(a[0].body, a[1].body);
    assert_eq!(&a[0].body[..], BODY);
    assert_eq!(a[1].timestamp.unwrap(), a[0].timestamp.unwrap() + 1);
    assert_ne!(
        a[0].headers["webhook-signature"],
        a[1].headers["webhook-signature"]
    );
    // Both verified; the receiver records the message once.
    assert!(a.iter().all(|a| a.rejected.is_none()));
    assert_eq!(rx.deliveries().len(), 1);
}

/// §5.4 at attempt level (checklist 36–38): statuses, Retry-After, redirects never followed.
#[tokio::test]
async fn responses_are_classified_as_5_4_says() {
    let rx = receiver().await;
    let elsewhere = receiver().await;
    rx.script([
        Reply::status(500),
        Reply::status(500),
        Reply::status(500),
        Reply::status(200),
        Reply::status(503).header("Retry-After", "2"),
        Reply::status(429).header("Retry-After", "99999999"),
        Reply::status(502).header("Retry-After", "soon"),
        Reply::status(504),
        Reply::status(500).header("Retry-After", "2"),
        Reply::status(302).header("Location", &elsewhere.url("/")),
        Reply::status(410),
        Reply::status(404),
        Reply::status(204),
    ]);
    let t = transport(&["127.0.0.1/32"]);
    let url = rx.url("/");
    let keys = [key()];
    let mut outcomes = Vec::new();
    for _ in 0..13 {
        outcomes.push(t.attempt(message(&url, &keys)).await);
    }
    let status = |s| failed(FailureKind::Status, Some(s), None);
    assert_eq!(
        outcomes,
        vec![
            status(500),
            status(500),
            status(500),
            Outcome::Delivered { status: 200 },
            failed(FailureKind::Status, Some(503), Some(Duration::from_secs(2))),
            failed(
                FailureKind::Status,
                Some(429),
                Some(Duration::from_secs(8 * 3600))
            ),
            status(502),
            status(504),
            status(500),
            status(302),
            Outcome::Gone,
            status(404),
            Outcome::Delivered { status: 204 },
        ]
    );
    // The 302's Location was never fetched.
    assert_eq!(elsewhere.connections(), 0);
    assert_eq!(elsewhere.attempts().len(), 0);
}

/// Checklist 40 at attempt level: a receiver that never answers costs `timeout`, and
/// meanwhile other deliveries go on.
#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let hanging = receiver().await;
    hanging.script([Reply::hang()]);
    let healthy = receiver().await;
    let mut s = settings(&["127.0.0.1/32"]);
    s.timeout = Duration::from_millis(400);
    let t = Arc::new(HttpTransport::new(&s).unwrap());
    let hang_url = hanging.url("/");
    let ok_url = healthy.url("/");
    let keys = [key()];
    let started = Instant::now();
    let slow = {
        let t = t.clone();
        let (u, k) = (hang_url.clone(), keys.clone());
        tokio::spawn(async move { t.attempt(message(&u, &k)).await })
    };
    // While the first attempt hangs, three others complete.
    hanging.wait_for_attempts(1, WAIT).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            t.attempt(message(&ok_url, &keys)).await,
            Outcome::Delivered { status: 200 }
        );
    }
    assert!(!slow.is_finished());
    assert_eq!(
        slow.await.unwrap(),
        failed(FailureKind::Timeout, None, None)
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// Two attempts to one origin share one TCP connection (§5.6 keep-alive).
#[tokio::test]
async fn attempts_to_one_origin_reuse_the_connection() {
    let rx = receiver().await;
    rx.script([Reply::status(500)]);
    let t = transport(&["127.0.0.1/32"]);
    let url = rx.url("/a");
    let keys = [key()];
    for _ in 0..3 {
        t.attempt(message(&url, &keys)).await;
    }
    rx.wait_for_attempts(3, WAIT).await.unwrap();
    assert_eq!(rx.connections(), 1);
    assert_eq!(t.idle_connections(), 1);
    // A receiver that closed its side is noticed; the next attempt connects afresh.
    let url2 = rx.url("/b");
    drop(rx);
    assert!(matches!(
        t.attempt(message(&url2, &keys)).await,
        Outcome::Failed {
            kind: FailureKind::Connect,
            ..
        }
    ));
}

/// At most 64 KiB of a response body is read: a longer one closes the connection instead of
/// pooling it; a short one leaves it for reuse.
#[tokio::test]
async fn a_long_response_body_closes_the_connection() {
    let rx = receiver().await;
    rx.script([
        Reply::status(200).body(vec![b'x'; 100 * 1024]),
        Reply::status(500).body(vec![b'y'; 1024]),
    ]);
    let t = transport(&["127.0.0.1/32"]);
    let url = rx.url("/");
    let keys = [key()];
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(t.idle_connections(), 0);
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        failed(FailureKind::Status, Some(500), None)
    );
    assert_eq!(t.idle_connections(), 1);
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(rx.connections(), 2);
}

/// Checklist 31 and 32 at the transport: with an empty allow list a loopback literal,
/// `localhost` and names that resolve to loopback fail with `ssrf-denied`, and no connection
/// is made.
#[tokio::test]
async fn denied_destinations_fail_without_a_connection() {
    let rx = receiver().await;
    let port = rx.addr().port();
    let keys = [key()];
    let resolver = StaticResolver::new()
        .with("hook.test", &[LOOPBACK])
        .with("rebind.test", &["::1".parse().unwrap(), LOOPBACK])
        .into_arc();
    let closed = transport(&[]).with_resolver(resolver.clone());
    let urls = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://a.localhost:{port}/"),
        format!("http://hook.test:{port}/"),
        format!("http://rebind.test:{port}/"),
    ];
    // A real name from /etc/hosts that the system resolver maps to loopback, if there is one.
    if let Some(name) = hosts_name_for_loopback() {
        let system = transport(&[]);
        let url = format!("http://{name}:{port}/");
        assert_eq!(
            system.attempt(message(&url, &keys)).await,
            failed(FailureKind::SsrfDenied, None, None),
            "{url}"
        );
    }
    for url in &urls {
        assert_eq!(
            closed.attempt(message(url, &keys)).await,
            failed(FailureKind::SsrfDenied, None, None),
            "{url}"
        );
    }
    // The same name with loopback allowed connects; being the first connection accepted, it
    // shows the denied attempts made none.
    let open = transport(&["127.0.0.1/32"]).with_resolver(resolver);
    let url = format!("http://hook.test:{port}/");
    assert_eq!(
        open.attempt(message(&url, &keys)).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(rx.connections(), 1);
    assert_eq!(
        rx.attempts()[0].headers["host"],
        format!("hook.test:{port}")
    );
    // A name that does not resolve at delivery time is a connect failure.
    let url = format!("http://unknown.test:{port}/");
    assert_eq!(
        open.attempt(message(&url, &keys)).await,
        failed(FailureKind::Connect, None, None)
    );
}

/// A name of /etc/hosts (other than localhost) that maps to a loopback address.
fn hosts_name_for_loopback() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut fields = line.split('#').next()?.split_whitespace();
        let ip: IpAddr = fields.next()?.parse().ok()?;
        if !ip.is_loopback() {
            return None;
        }
        fields
            .find(|n| !n.eq_ignore_ascii_case("localhost") && !n.ends_with(".localhost"))
            .map(str::to_string)
    })
}

#[tokio::test]
async fn refused_connections_fail_with_connect() {
    // A port nothing listens on: bind, note, close.
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind(LOCAL).unwrap();
        l.local_addr().unwrap()
    };
    let t = transport(&["127.0.0.1/32"]);
    let url = format!("http://{addr}/");
    let keys = [key()];
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        failed(FailureKind::Connect, None, None)
    );
}

/// `connect_timeout` covers the TLS handshake: a listener whose backlog completes TCP but
/// that never speaks TLS costs the connect timeout, then `timeout`.
#[tokio::test]
async fn a_stalled_tls_handshake_times_out_within_connect_timeout() {
    let silent = tokio::net::TcpListener::bind(LOCAL).await.unwrap();
    let mut s = settings(&["127.0.0.1/32"]);
    s.connect_timeout = Duration::from_millis(300);
    let t = HttpTransport::new(&s).unwrap();
    let url = format!("https://{}/", silent.local_addr().unwrap());
    let keys = [key()];
    let started = Instant::now();
    assert_eq!(
        t.attempt(message(&url, &keys)).await,
        failed(FailureKind::Timeout, None, None)
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// HTTPS with a private CA in `ca_file`, by IP literal and by name (SNI and name check), and
/// `tls` without that root.
#[tokio::test]
async fn https_receivers_are_verified_against_ca_file() {
    let pki = Pki::new();
    let rx = tls_receiver(&pki).await;
    let port = rx.addr().port();
    let keys = [key()];
    let ca = pki.ca_file();
    let mut s = settings(&["127.0.0.1/32"]);
    s.ca_file = Some(ca.path().to_path_buf());
    let resolver = StaticResolver::new()
        .with("hook.test", &[LOOPBACK])
        .with("other.test", &[LOOPBACK])
        .into_arc();
    let t = HttpTransport::new(&s)
        .unwrap()
        .with_resolver(resolver.clone());
    let by_ip = format!("https://127.0.0.1:{port}/");
    let by_name = format!("https://hook.test:{port}/");
    assert_eq!(
        t.attempt(message(&by_ip, &keys)).await,
        Outcome::Delivered { status: 200 }
    );
    assert_eq!(
        t.attempt(message(&by_name, &keys)).await,
        Outcome::Delivered { status: 200 }
    );
    // A name the certificate does not cover fails the TLS check.
    let wrong_name = format!("https://other.test:{port}/");
    assert_eq!(
        t.attempt(message(&wrong_name, &keys)).await,
        failed(FailureKind::Tls, None, None)
    );
    // Without the private root: tls.
    let web_pki_only = transport(&["127.0.0.1/32"]);
    assert_eq!(
        web_pki_only.attempt(message(&by_ip, &keys)).await,
        failed(FailureKind::Tls, None, None)
    );
    // One connection per origin (by IP, by name) and one per failed handshake.
    assert_eq!(rx.attempts().len(), 2);
    assert_eq!(rx.connections(), 4);
}

#[test]
fn bad_settings_name_their_key() {
    let mut s = settings(&["127.0.0.1"]);
    let e = HttpTransport::new(&s).unwrap_err();
    assert!(e.contains("webhooks.allow_networks"), "{e}");
    s = settings(&[]);
    s.ca_file = Some("/nonexistent/ca.pem".into());
    let e = HttpTransport::new(&s).unwrap_err();
    assert!(e.contains("webhooks.ca_file"), "{e}");
    s = settings(&[]);
    s.proxy = Some("https://relay:443".into());
    let e = HttpTransport::new(&s).unwrap_err();
    assert!(e.contains("webhooks.proxy"), "{e}");
    s = settings(&[]);
    s.timeout = Duration::ZERO;
    let e = HttpTransport::new(&s).unwrap_err();
    assert!(e.contains("webhooks.timeout"), "{e}");
}
