//! The forward proxy on real sockets (spec 6): CONNECT and absolute-form requests to origins
//! on 127.0.0.1 opened by an explicit allow rule, authentication, bad input, the egress
//! policy's refusals (a sweep over every denied range), limits and the admin counters.

mod common;

use common::*;
use limmat_relay::auth::{DeviceKey, KeySources, sha256_hex};
use limmat_relay::{Action, EgressRule, Relay, RelayConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const KEY: &str = "proxy-test-key-for-the-dev-domain";

fn keys() -> KeySources {
    KeySources {
        device_keys: vec![DeviceKey {
            domain: "dev".into(),
            sha256: sha256_hex(KEY),
        }],
        ..KeySources::default()
    }
}

fn allow(rule: &str) -> EgressRule {
    EgressRule::parse(Action::Allow, rule).unwrap()
}

/// A relay with the proxy on, a key for `dev`, and `rules` before the built-in deny set.
async fn proxy_relay(
    rules: Vec<EgressRule>,
    configure: impl FnOnce(&mut RelayConfig),
) -> TestRelay {
    start(move |c| {
        c.keys = keys();
        c.forward_proxy = true;
        c.egress.rules = rules;
        configure(c);
    })
    .await
}

fn bearer() -> String {
    format!("Proxy-Authorization: Bearer {KEY}\r\n")
}

/// An origin that echoes every byte back.
async fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An HTTP origin that sends each request head it receives to the test and answers with it.
async fn http_origin() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let body = head.clone();
                let _ = tx.send(head);
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(response.as_bytes()).await;
            });
        }
    });
    (addr, rx)
}

/// Sends `head` and returns everything the relay answers until it closes.
async fn exchange(relay: &TestRelay, head: &str) -> String {
    let mut s = relay.send(head.as_bytes()).await;
    String::from_utf8_lossy(&read_to_end(&mut s).await).into_owned()
}

fn status(response: &str) -> &str {
    response.get(9..12).unwrap_or(response)
}

#[tokio::test]
async fn connect_pipes_both_ways_with_early_bytes() {
    let origin = echo_origin().await;
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |_| {}).await;
    let head = format!(
        "CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n{}\r\nearly",
        bearer()
    );
    let mut s = relay.send(head.as_bytes()).await;
    let ok = read_n(&mut s, limmat_wire::proxy::CONNECTED.len()).await;
    assert_eq!(ok, limmat_wire::proxy::CONNECTED);
    assert_eq!(read_n(&mut s, 5).await, b"early");
    s.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, b"ping");
    // A half-close reaches the origin, whose echo then ends too.
    s.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"");
    drop(s);
    relay.open_connections(0).await;
    relay.stop().await;
}

#[tokio::test]
async fn absolute_form_is_rewritten_to_origin_form() {
    let (origin, mut heads) = http_origin().await;
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |_| {}).await;
    let head = format!(
        "GET http://{origin}/path?q=1 HTTP/1.1\r\nHost: {origin}\r\n{}Proxy-Connection: keep-alive\r\n\
         Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nUser-Agent: test\r\n\r\n",
        bearer()
    );
    let response = exchange(&relay, &head).await;
    assert_eq!(status(&response), "200", "{response}");
    let seen = timeout(PATIENCE, heads.recv()).await.unwrap().unwrap();
    assert_eq!(
        seen,
        format!(
            "GET /path?q=1 HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: test\r\nVia: 1.1 limmat\r\n\
             Connection: close\r\n\r\n"
        )
    );
    assert!(response.ends_with(&seen));
    relay.stop().await;
}

#[tokio::test]
async fn absolute_form_post_forwards_exactly_its_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |_| {}).await;
    // The body, then a pipelined second request that must not reach the origin.
    let head = format!(
        "POST http://{origin}/up HTTP/1.1\r\n{}Content-Length: 5\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n",
        bearer()
    );
    let mut client = relay.send(head.as_bytes()).await;
    let (mut s, _) = timeout(PATIENCE, listener.accept()).await.unwrap().unwrap();
    // The relay ends its request after the body (a FIN), so this read ends.
    let got = String::from_utf8_lossy(&read_to_end(&mut s).await).into_owned();
    assert!(got.starts_with("POST /up HTTP/1.1\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        .await
        .unwrap();
    drop(s);
    let response = read_to_end(&mut client).await;
    assert_eq!(response, b"HTTP/1.1 204 No Content\r\n\r\n");
    relay.stop().await;
}

#[tokio::test]
async fn authentication() {
    let origin = echo_origin().await;
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |c| {
        c.limits.limit_exempt = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let auth = String::from_utf8(limmat_wire::proxy::Refusal::Auth.response()).unwrap();
    for lines in [
        String::new(),
        "Proxy-Authorization: Bearer wrong-key\r\n".into(),
        "Proxy-Authorization: Bearer\r\n".into(),
        "Proxy-Authorization: Digest abc\r\n".into(),
        format!("{}{}", bearer(), bearer()),
        // The device handshake's field is not the proxy's.
        format!("Authorization: Bearer {KEY}\r\n"),
        // Basic with the wrong domain as the user.
        "Proxy-Authorization: Basic b3RoZXI6cHJveHktdGVzdC1rZXktZm9yLXRoZS1kZXYtZG9tYWlu\r\n"
            .into(),
        "Proxy-Authorization: Basic !!!\r\n".into(),
    ] {
        let head = format!("CONNECT {origin} HTTP/1.1\r\n{lines}\r\n");
        assert_eq!(exchange(&relay, &head).await, auth, "{lines}");
        let head = format!("GET http://{origin}/ HTTP/1.1\r\n{lines}\r\n");
        assert_eq!(exchange(&relay, &head).await, auth, "{lines}");
    }
    // Basic: the domain as the user, the key as the password ("dev:<key>").
    let basic = "Proxy-Authorization: Basic ZGV2OnByb3h5LXRlc3Qta2V5LWZvci10aGUtZGV2LWRvbWFpbg==";
    let mut s = relay
        .send(format!("CONNECT {origin} HTTP/1.1\r\n{basic}\r\n\r\n").as_bytes())
        .await;
    let ok = read_n(&mut s, limmat_wire::proxy::CONNECTED.len()).await;
    assert_eq!(ok, limmat_wire::proxy::CONNECTED);
    drop(s);
    relay.stop().await;
}

#[tokio::test]
async fn failed_authentications_are_rate_limited() {
    let relay = proxy_relay(vec![], |c| {
        c.limits.limit_exempt = vec![];
        c.limits.auth_failures_per_ip = "1/h:2".parse().unwrap();
    })
    .await;
    for _ in 0..2 {
        let r = exchange(&relay, "CONNECT example.org:443 HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&r), "407");
    }
    let r = exchange(&relay, "CONNECT example.org:443 HTTP/1.1\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 429 Too Many Requests\r\nRetry-After: "),
        "{r}"
    );
    assert!(r.ends_with("Limmat-Error: rate-limited\r\n\r\n"), "{r}");
    relay.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused() {
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |c| c.max_head = 1024).await;
    let bad = String::from_utf8(limmat_wire::proxy::Refusal::BadTarget.response()).unwrap();
    let auth = bearer();
    for head in [
        format!("CONNECT example.org HTTP/1.1\r\n{auth}\r\n"),
        format!("CONNECT example.org:0 HTTP/1.1\r\n{auth}\r\n"),
        format!("CONNECT example.org:99999 HTTP/1.1\r\n{auth}\r\n"),
        format!("CONNECT [::1 HTTP/1.1\r\n{auth}\r\n"),
        format!("CONNECT a..b:443 HTTP/1.1\r\n{auth}\r\n"),
        format!("CONNECT user@host:443 HTTP/1.1\r\n{auth}\r\n"),
        format!("GET ftp://example.org/file HTTP/1.1\r\n{auth}\r\n"),
        format!("GET https://example.org/ HTTP/1.1\r\n{auth}\r\n"),
        format!("GET http://user:pw@example.org/ HTTP/1.1\r\n{auth}\r\n"),
        format!("GET http://:80/ HTTP/1.1\r\n{auth}\r\n"),
        format!(
            "POST http://example.org/ HTTP/1.1\r\n{auth}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
    ] {
        assert_eq!(exchange(&relay, &head).await, bad, "{head}");
    }
    // An oversized head is closed with no response, as every head (H2).
    let long = format!(
        "CONNECT example.org:443 HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(2048)
    );
    assert_eq!(exchange(&relay, &long).await, "");
    relay.stop().await;
}

#[tokio::test]
async fn the_proxy_is_never_open() {
    let own_admin = "127.0.0.1:0".parse().unwrap();
    let relay = proxy_relay(vec![], |c| c.admin = Some(own_admin)).await;
    let forbidden =
        String::from_utf8(limmat_wire::proxy::Refusal::EgressDenied.response()).unwrap();
    let own = relay.addr;
    let admin = relay.admin.unwrap();
    let auth = bearer();
    let targets = [
        "127.0.0.1:80".to_owned(),
        "127.0.0.1:22".into(),
        "10.0.0.1:80".into(),
        "10.255.255.255:443".into(),
        "172.16.0.1:80".into(),
        "172.31.1.1:80".into(),
        "192.168.0.1:80".into(),
        "169.254.169.254:80".into(),
        "[::1]:80".into(),
        "0.0.0.0:80".into(),
        "100.64.0.1:80".into(),
        "224.0.0.1:80".into(),
        "[::ffff:127.0.0.1]:80".into(),
        "[::ffff:169.254.169.254]:80".into(),
        "[64:ff9b::7f00:1]:80".into(),
        "[fe80::1]:80".into(),
        "[fd00::1]:80".into(),
        "[::]:80".into(),
        "[::ffff:7f00:1]:80".into(),
        // Names the resolver turns into loopback: judged by the address, not the spelling.
        "2130706433:80".into(),
        "127.1:80".into(),
        "0x7f.0.0.1:80".into(),
        own.to_string(),
        admin.to_string(),
        format!("localhost:{}", own.port()),
        "localhost:80".into(),
    ];
    for target in &targets {
        let head = format!("CONNECT {target} HTTP/1.1\r\n{auth}\r\n");
        assert_eq!(exchange(&relay, &head).await, forbidden, "CONNECT {target}");
        let head = format!("GET http://{target}/ HTTP/1.1\r\n{auth}\r\n");
        assert_eq!(exchange(&relay, &head).await, forbidden, "GET {target}");
        // Unauthenticated, the same targets get 407 and nothing else.
        let head = format!("CONNECT {target} HTTP/1.1\r\n\r\n");
        assert_eq!(status(&exchange(&relay, &head).await), "407", "{target}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn own_endpoints_stay_denied_under_an_allow_rule() {
    let relay = proxy_relay(vec![allow("127.0.0.1/32"), allow("::/0")], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let forbidden =
        String::from_utf8(limmat_wire::proxy::Refusal::EgressDenied.response()).unwrap();
    for target in [
        relay.addr.to_string(),
        relay.admin.unwrap().to_string(),
        format!("[::ffff:127.0.0.1]:{}", relay.addr.port()),
    ] {
        let head = format!("CONNECT {target} HTTP/1.1\r\n{}\r\n", bearer());
        assert_eq!(exchange(&relay, &head).await, forbidden, "{target}");
    }
    relay.stop().await;
}

#[tokio::test]
async fn dns_and_connection_failures() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |_| {}).await;
    let r = exchange(
        &relay,
        &format!("CONNECT {closed} HTTP/1.1\r\n{}\r\n", bearer()),
    )
    .await;
    assert_eq!(
        r,
        String::from_utf8(limmat_wire::proxy::Refusal::ConnectFailed.response()).unwrap()
    );
    // `.invalid` never resolves (RFC 6761).
    let r = exchange(
        &relay,
        &format!(
            "CONNECT no-such-host.invalid:443 HTTP/1.1\r\n{}\r\n",
            bearer()
        ),
    )
    .await;
    assert_eq!(
        r,
        String::from_utf8(limmat_wire::proxy::Refusal::DnsFailed.response()).unwrap()
    );
    relay.stop().await;
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener whose accept queue is full drops further SYNs, so a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |c| {
        c.proxy_connect_timeout = Duration::from_millis(300);
    })
    .await;
    let r = exchange(
        &relay,
        &format!("CONNECT {addr} HTTP/1.1\r\n{}\r\n", bearer()),
    )
    .await;
    assert_eq!(
        r,
        String::from_utf8(limmat_wire::proxy::Refusal::ConnectTimeout.response()).unwrap()
    );
    drop((fillers, listener));
    relay.stop().await;
}

#[tokio::test]
async fn concurrent_tunnels_per_domain_are_limited() {
    let origin = echo_origin().await;
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |c| c.proxy_max_per_domain = 1).await;
    let head = format!("CONNECT {origin} HTTP/1.1\r\n{}\r\n", bearer());
    let mut first = relay.send(head.as_bytes()).await;
    read_n(&mut first, limmat_wire::proxy::CONNECTED.len()).await;
    let r = exchange(&relay, &head).await;
    assert!(
        r.starts_with("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n"),
        "{r}"
    );
    drop(first);
    relay.open_connections(0).await;
    let mut again = relay.send(head.as_bytes()).await;
    assert_eq!(
        read_n(&mut again, limmat_wire::proxy::CONNECTED.len()).await,
        limmat_wire::proxy::CONNECTED
    );
    drop(again);
    relay.stop().await;
}

#[tokio::test]
async fn proxy_off_and_open_mode() {
    // Off: CONNECT gets the exact 501 of D7; an absolute-form request is a Yaler client.
    let relay = start(|_| {}).await;
    let r = exchange(&relay, "CONNECT example.org:443 HTTP/1.1\r\n\r\n").await;
    assert_eq!(r, "HTTP/1.1 501 \r\n\r\n");
    let r = exchange(&relay, "GET http://example.org/ HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.as_bytes(), GATEWAY_TIMEOUT);
    relay.stop().await;
    // The proxy is refused in open mode.
    let refused = Relay::bind(RelayConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        forward_proxy: true,
        ..RelayConfig::default()
    })
    .await;
    let err = refused.err().expect("refused").to_string();
    assert!(
        err.contains("forward_proxy needs device authentication"),
        "{err}"
    );
}

#[tokio::test]
async fn device_handshakes_to_relay_hostnames_are_not_proxied() {
    let relay = proxy_relay(vec![], |c| c.hostnames = vec!["relay.test".into()]).await;
    let head = "POST http://relay.test/dev HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n";
    // A device handshake (without a key here): 401, not a proxy's 407.
    assert_eq!(exchange(&relay, head).await.as_bytes(), UNAUTHORIZED);
    relay.stop().await;
}

/// Sends a GET to the admin listener and returns the JSON body.
async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let response = String::from_utf8(read_to_end(&mut s).await).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test]
async fn admin_api_counts_per_domain() {
    let origin = echo_origin().await;
    let relay = proxy_relay(vec![allow("127.0.0.1/32")], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = relay.admin.unwrap();
    let head = format!("CONNECT {origin} HTTP/1.1\r\n{}\r\n", bearer());
    let mut s = relay.send(head.as_bytes()).await;
    read_n(&mut s, limmat_wire::proxy::CONNECTED.len()).await;
    s.write_all(b"12345").await.unwrap();
    read_n(&mut s, 5).await;
    drop(s);
    let denied = format!("CONNECT 10.0.0.1:80 HTTP/1.1\r\n{}\r\n", bearer());
    assert_eq!(status(&exchange(&relay, &denied).await), "403");
    relay.open_connections(0).await;
    let d = admin_json(admin, "/api/domains/dev").await;
    let proxy = &d["proxy"];
    assert_eq!(proxy["connections"], 1, "{d}");
    assert_eq!(proxy["denied"], 1, "{d}");
    assert_eq!(proxy["active"], 0, "{d}");
    assert_eq!(proxy["bytes_out"], 5, "{d}");
    assert_eq!(proxy["bytes_in"], 5, "{d}");
    let all = admin_json(admin, "/api/domains").await;
    assert_eq!(all[0]["domain"], "dev", "{all}");
    assert_eq!(all[0]["proxy"]["connections"], 1, "{all}");
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let metrics = String::from_utf8(read_to_end(&mut s).await).unwrap();
    for series in [
        "limmat_proxy_requests_total{",
        "verdict=\"allowed\"",
        "verdict=\"denied\"",
        "limmat_proxy_bytes_total{",
        "limmat_proxy_active{",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    relay.stop().await;
}
