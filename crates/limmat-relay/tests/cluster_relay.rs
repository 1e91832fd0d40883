//! Clustered relays (spec 7.4–7.6, checklist 86–92): whole in-process relays on real sockets
//! on 127.0.0.2–127.0.0.6, gossiping with each other. Tests wait on the live-set watch and the
//! relay's gauges, never on a fixed sleep, and stop every relay they start.

mod common;

use common::cluster::{Node, SECRET, domain_of, node, two_nodes, until_live};
use common::{GATEWAY_TIMEOUT, PATIENCE, RENEW, UPGRADE, handshake, read_n, read_to_end};
use limmat_relay::RelayConfig;
use limmat_wire::cluster::{Forward, ForwardLeg};
use limmat_wire::mux::Route;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Checklist 86: PTTH, DPTTH and mux handshakes at a non-owner get the Yaler-shaped 307 to
/// the owner's public host and port, with the original path kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_at_a_non_owner_get_the_307_to_the_owner() {
    let (a, b) = two_nodes(|_| {}).await;
    let d = domain_of(&b, "node-a", "dev");
    for upgrade in ["PTTH/1.0", "DPTTH/1.0", "limmat-mux/1"] {
        let mut s = b
            .send(
                format!("POST /{d}/some/path?x=1 HTTP/1.1\r\nUpgrade: {upgrade}\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        let want = redirect_to(&a, &format!("/{d}/some/path?x=1"));
        let got = read_to_end(&mut s).await;
        assert_eq!(String::from_utf8_lossy(&got), want, "{upgrade}");
    }
    // At the owner the same handshake waits.
    let _device = a.send(&handshake(&d)).await;
    a.waiting_devices(1).await;
    a.stop().await;
    b.stop().await;
}

/// The 307 of 7.4 to `node`'s public host and port, with `path`.
fn redirect_to(node: &Node, path: &str) -> String {
    format!(
        "HTTP/1.1 307 \r\nLocation: http://{}{path}\r\n\r\n",
        node.addr
    )
}

/// A waiting device of a domain that moved gets the paced `204`, and its next handshake the
/// `307` to `to`, the new owner (7.6).
async fn handed_over(device: &mut TcpStream, d: &str, to: &Node) {
    assert_eq!(read_n(device, RENEW.len()).await, RENEW);
    device.write_all(&handshake(d)).await.unwrap();
    let got = read_to_end(device).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        redirect_to(to, &format!("/{d}"))
    );
}

/// Reads the device's side of a pairing: the 101, then exactly `request`.
async fn paired(device: &mut TcpStream, request: &[u8]) {
    let got = read_n(device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[..UPGRADE.len()], UPGRADE);
    assert_eq!(
        String::from_utf8_lossy(&got[UPGRADE.len()..]),
        String::from_utf8_lossy(request)
    );
}

/// Checklist 87: clients at a non-owner, by path, by Host and by `CONNECT /<domain>`, are
/// forwarded one hop; the device at the owner gets their bytes exactly, and its answer
/// reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_at_a_non_owner_are_forwarded_verbatim() {
    let (a, b) = two_nodes(|_| {}).await;
    let d = domain_of(&b, "node-a", "fwd");
    let requests = [
        format!("GET /{d}/x HTTP/1.1\r\nHost: relay.test\r\n\r\n"),
        format!("GET /y HTTP/1.1\r\nHost: {d}.relay.test\r\n\r\n"),
        format!("CONNECT /{d} HTTP/1.1\r\nHost: relay.test\r\n\r\nraw bytes"),
    ];
    for request in &requests {
        let mut device = a.send(&handshake(&d)).await;
        a.waiting_devices(1).await;
        let mut client = b.send(request.as_bytes()).await;
        paired(&mut device, request.as_bytes()).await;
        device
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nhello")
            .await
            .unwrap();
        drop(device);
        let got = read_to_end(&mut client).await;
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\nhello");
        // The pipe ran at the owner: no device ever waited at the forwarding node.
        assert_eq!(*b.handle.stats().waiting_devices().borrow(), 0);
        a.waiting_devices(0).await;
    }
    a.stop().await;
    b.stop().await;
}

/// Checklist 87: with `client_redirect`, a path-form client gets the 307 instead; a
/// Host-routed one is still forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_redirect_sends_path_clients_to_the_owner() {
    let (a, b) = two_nodes(|c| c.cluster.client_redirect = true).await;
    let d = domain_of(&b, "node-a", "redir");
    let mut client = b
        .send(format!("GET /{d}/page HTTP/1.1\r\n\r\n").as_bytes())
        .await;
    let got = read_to_end(&mut client).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        redirect_to(&a, &format!("/{d}/page"))
    );
    let mut device = a.send(&handshake(&d)).await;
    a.waiting_devices(1).await;
    let request = format!("GET / HTTP/1.1\r\nHost: {d}.relay.test\r\n\r\n");
    let client = b.send(request.as_bytes()).await;
    paired(&mut device, request.as_bytes()).await;
    drop((client, device));
    a.stop().await;
    b.stop().await;
}

/// A forward as a peer would send it, straight to `to`'s internal listener.
async fn forge(to: &Node, domain: &str, hops: u32, request: &[u8]) -> TcpStream {
    let forward = Forward {
        domain: domain.into(),
        owner: to.id.clone(),
        hops,
        leg: ForwardLeg::Plain,
        route: Route::Path,
        client_addr: "127.0.0.9:4242".parse().unwrap(),
        public_port: 80,
        sni: None,
    };
    let mut s = TcpStream::connect(to.internal).await.unwrap();
    let mut out = forward.encode(SECRET.as_bytes()).unwrap();
    out.extend_from_slice(request);
    s.write_all(&out).await.unwrap();
    let accepted = read_n(&mut s, limmat_wire::cluster::FORWARD_ACCEPTED.len()).await;
    assert_eq!(accepted, limmat_wire::cluster::FORWARD_ACCEPTED);
    s
}

/// Checklist 88: a node that does not own a forwarded client's domain forwards it again only
/// while `Limmat-Hops` < `max_hops`; at the limit it serves the client itself (here: `504`,
/// since the device waits at the owner), so inconsistent views cannot loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_stops_at_max_hops() {
    let (a, b) = two_nodes(|c| c.client_wait = Duration::from_millis(500)).await;
    let d = domain_of(&b, "node-a", "hops");
    let mut device = a.send(&handshake(&d)).await;
    a.waiting_devices(1).await;
    // Hops 2 = max_hops: b, which believes a owns the domain, serves it locally.
    let request = format!("GET /{d}/late HTTP/1.1\r\n\r\n");
    let mut at_limit = forge(&b, &d, 2, request.as_bytes()).await;
    let got = read_to_end(&mut at_limit).await;
    assert_eq!(got, GATEWAY_TIMEOUT);
    assert_eq!(
        *a.handle.stats().waiting_devices().borrow(),
        1,
        "the device was not used"
    );
    // Hops 1 < max_hops: b forwards once more, to a, where the device gets the bytes.
    let request = format!("GET /{d}/ok HTTP/1.1\r\n\r\n");
    let below = forge(&b, &d, 1, request.as_bytes()).await;
    paired(&mut device, request.as_bytes()).await;
    drop((below, device));
    a.stop().await;
    b.stop().await;
}

/// A forward whose owner's internal listener is gone gets `504` from the forwarding node
/// within the 2 s budget (7.5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_504_when_the_owner_cannot_be_reached() {
    let (a, b) = two_nodes(|_| {}).await;
    let d = domain_of(&b, "node-a", "down");
    // a stops: its internal listener closes at once, while b still counts it until the
    // failure detector notices.
    a.handle.shutdown();
    let a_task = a.task;
    timeout(PATIENCE, a_task).await.unwrap().unwrap();
    let started = std::time::Instant::now();
    let mut client = b
        .send(format!("GET /{d}/x HTTP/1.1\r\n\r\n").as_bytes())
        .await;
    let got = read_to_end(&mut client).await;
    // Either the forward failed (504 at once) or b had already dropped a and served the
    // client itself (504 after client_wait): no client is lost silently.
    assert_eq!(got, GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
    b.stop().await;
}

/// Checklist 89: when a node joins, waiting devices of the domains that moved get a `204`,
/// and their re-POST a `307` to the new owner; an open pipe of a moved domain is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_moves_waiting_devices_and_leaves_pipes_alone() {
    let patient = |c: &mut RelayConfig| c.client_wait = Duration::from_secs(10);
    let a = node("127.0.0.4", "node-a", &[], patient).await;
    until_live(&[&a], &["node-a"]).await;
    // Domains that node-b will win once it joins, computed from the rendezvous hash alone.
    let wins_b = |d: &str| limmat_relay::cluster::owner::owner(["node-a", "node-b"], d) == Some(1);
    let moving: Vec<String> = (0..200)
        .map(|i| format!("mv{i}"))
        .filter(|d| wins_b(d))
        .take(4)
        .collect();
    let staying = (0..200)
        .map(|i| format!("st{i}"))
        .find(|d| !wins_b(d))
        .unwrap();
    let mut devices = Vec::new();
    for d in &moving {
        devices.push(a.send(&handshake(d)).await);
    }
    let mut stay = a.send(&handshake(&staying)).await;
    a.waiting_devices(moving.len() + 1).await;
    // A client waiting at node-a for a moving domain whose device is not connected yet.
    let waiter_domain = (0..200)
        .map(|i| format!("wc{i}"))
        .find(|d| wins_b(d))
        .unwrap();
    let waiter_request = format!("GET /{waiter_domain}/w HTTP/1.1\r\n\r\n");
    let mut waiter = a.send(waiter_request.as_bytes()).await;
    common::until(a.handle.stats().waiting_clients(), 1, "waiting clients").await;
    // A pipe of a moving domain, open across the join.
    let mut piped = devices.pop().unwrap();
    let request = format!("GET /{}/stream HTTP/1.1\r\n\r\n", moving[moving.len() - 1]);
    let mut client = a.send(request.as_bytes()).await;
    paired(&mut piped, request.as_bytes()).await;

    let b = node("127.0.0.5", "node-b", &[a.gossip], patient).await;
    until_live(&[&a, &b], &["node-a", "node-b"]).await;
    // The waiting client is forwarded to node-b and served by the device that arrives there.
    common::until(a.handle.stats().waiting_clients(), 0, "waiting clients").await;
    let mut late_device = b.send(&handshake(&waiter_domain)).await;
    paired(&mut late_device, waiter_request.as_bytes()).await;
    late_device.write_all(b"moved").await.unwrap();
    assert_eq!(read_n(&mut waiter, 5).await, b"moved");
    drop((late_device, waiter));
    for (device, d) in devices.iter_mut().zip(&moving) {
        let got = read_n(device, RENEW.len()).await;
        assert_eq!(got, RENEW, "{d} renewed");
        device.write_all(&handshake(d)).await.unwrap();
        let got = read_to_end(device).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            redirect_to(&b, &format!("/{d}"))
        );
    }
    // The device that stays keeps waiting; the pipe still carries bytes both ways.
    a.waiting_devices(1).await;
    piped.write_all(b"still here").await.unwrap();
    assert_eq!(read_n(&mut client, 10).await, b"still here");
    client.write_all(b"and here").await.unwrap();
    assert_eq!(read_n(&mut piped, 8).await, b"and here");
    let mut nothing = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(50), stay.read(&mut nothing))
            .await
            .is_err(),
        "the staying device got nothing"
    );
    drop((piped, client));
    a.stop().await;
    b.stop().await;
}

/// Checklist 89 / 7.6: draining hands every waiting device over (`204`, then `307` to the
/// other node) and `drain()` returns once none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_hands_devices_over() {
    let (a, b) = two_nodes(|_| {}).await;
    let d = domain_of(&a, "node-a", "drain");
    let mut device = a.send(&handshake(&d)).await;
    a.waiting_devices(1).await;
    let draining = {
        let h = a.handle.clone();
        tokio::spawn(async move { h.drain().await })
    };
    handed_over(&mut device, &d, &b).await;
    timeout(PATIENCE, draining).await.unwrap().unwrap();
    until_live(&[&b], &["node-b"]).await;
    timeout(PATIENCE, a.task).await.unwrap().unwrap();
    b.stop().await;
}

/// 7.6, the drain's order: a draining node keeps its domains, and serves a client of one
/// whose device it holds, until its peers have dropped it from their live sets; only then does
/// it stop counting itself. (The other order let a peer that had not heard forward a client
/// back to it at the hop limit, to wait for a device that had already left: the rolling
/// restart's `504`s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_over_only_after_its_peers_dropped_it() {
    let (a, b) = two_nodes(|c| c.cluster.rebalance_spread = Duration::from_secs(2)).await;
    let d = domain_of(&a, "node-a", "order");
    let mut device = a.send(&handshake(&d)).await;
    a.waiting_devices(1).await;
    let mut own = a.handle.live_members();
    own.borrow_and_update();
    let draining = {
        let h = a.handle.clone();
        tokio::spawn(async move { h.drain().await })
    };
    // The moment node-a stops counting itself, node-b no longer counts node-a.
    let handed = timeout(PATIENCE, own.wait_for(|s| !s.counts_self())).await;
    assert!(handed.is_ok(), "node-a never handed over");
    let b_live = b.handle.live_members().borrow().clone();
    assert!(
        b_live.members().iter().all(|m| &*m.node_id != "node-a"),
        "node-a handed over while node-b still counted it"
    );
    drop(handed);
    // Its device then goes to node-b (204, then the 307).
    handed_over(&mut device, &d, &b).await;
    timeout(PATIENCE, draining).await.unwrap().unwrap();
    timeout(PATIENCE, a.task).await.unwrap().unwrap();
    b.stop().await;
}

/// 7.6: a client waiting for a domain that a live-set change gives to another node is
/// forwarded there at once, not when the (deliberately slow) pacing of the moved devices
/// reaches its domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_client_follows_its_domain_at_once() {
    let slow = |c: &mut RelayConfig| {
        c.client_wait = Duration::from_secs(30);
        c.cluster.rebalance_spread = Duration::from_secs(20);
    };
    let a = node("127.0.0.2", "node-a", &[], slow).await;
    until_live(&[&a], &["node-a"]).await;
    let both = ["node-a", "node-b"];
    let of_b = |prefix: &str| -> Vec<String> {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|d| {
                limmat_relay::cluster::owner::owner(both, d).map(|i| both[i]) == Some("node-b")
            })
            .take(10)
            .collect()
    };
    // Alone, node-a owns everything: ten devices and one client wait there.
    let moved = of_b("paced");
    let mut devices = Vec::new();
    for d in &moved {
        devices.push(a.send(&handshake(d)).await);
    }
    a.waiting_devices(moved.len()).await;
    let d = of_b("client").remove(0);
    let request = format!("GET /{d}/x HTTP/1.1\r\nHost: relay.test\r\n\r\n");
    let client = a.send(request.as_bytes()).await;
    let mut waiting = a.handle.stats().waiting_clients();
    timeout(PATIENCE, waiting.wait_for(|&n| n == 1))
        .await
        .unwrap()
        .unwrap();
    // node-b joins, with the client's device; node-a then forwards the client to it.
    let b = node("127.0.0.3", "node-b", &[a.gossip], slow).await;
    let mut device = b.send(&handshake(&d)).await;
    until_live(&[&a, &b], &both).await;
    let joined = tokio::time::Instant::now();
    let got = read_n(&mut device, UPGRADE.len() + request.len()).await;
    assert_eq!(&got[UPGRADE.len()..], request.as_bytes());
    let took = joined.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop((devices, device, client));
    a.stop().await;
    b.stop().await;
}

/// Checklist 91: the internal endpoints answer 401 without the cluster secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_need_the_secret() {
    let a = node("127.0.0.6", "node-a", &[], |_| {}).await;
    for path in ["node", "health", "members"] {
        let mut s = TcpStream::connect(a.internal).await.unwrap();
        s.write_all(format!("GET /limmat/cluster/1/{path} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let got = read_to_end(&mut s).await;
        assert!(got.starts_with(b"HTTP/1.1 401 "), "{path}");
    }
    let mut s = TcpStream::connect(a.internal).await.unwrap();
    s.write_all(b"CONNECT /dom HTTP/1.1\r\nLimmat-Hops: 1\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_end(&mut s).await.starts_with(b"HTTP/1.1 401 "));
    a.stop().await;
}

/// Checklist 92: a restarted node starts empty, and the relay writes nothing to disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_starts_empty_and_writes_nothing() {
    let listing = || {
        let mut all: Vec<_> = std::fs::read_dir(".")
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        all.sort();
        all
    };
    let before = listing();
    let a = node("127.0.0.2", "node-r", &[], |_| {}).await;
    let _device = a.send(&handshake("persist")).await;
    a.waiting_devices(1).await;
    a.stop().await;
    let again = node("127.0.0.2", "node-r", &[], |_| {}).await;
    until_live(&[&again], &["node-r"]).await;
    assert_eq!(*again.handle.stats().waiting_devices().borrow(), 0);
    let members = again.handle.cluster_members();
    assert_eq!(members["node_id"], "node-r");
    again.stop().await;
    assert_eq!(
        listing(),
        before,
        "nothing written to the working directory"
    );
}

/// A plain GET on the admin listener: the status line and the body.
async fn admin_get(node: &Node, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(node.admin.expect("admin listener"))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&read_to_end(&mut s).await).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The admin API shows the members and their states (`/api/cluster`), each domain's owner,
/// and the cluster's metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_members_and_owners() {
    let (a, b) = two_nodes(|c| c.admin = Some("127.0.0.1:0".parse().unwrap())).await;
    let (status, body) = admin_get(&a, "/api/cluster").await;
    assert!(status.contains(" 200 "), "{status}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["node_id"], "node-a");
    assert_eq!(view["live"], serde_json::json!(["node-a", "node-b"]));
    let states: Vec<_> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["node_id"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&("node-b".into(), "live".into())),
        "{states:?}"
    );
    let d = domain_of(&a, "node-b", "adm");
    let (status, body) = admin_get(&a, &format!("/api/domains/{d}")).await;
    assert!(status.contains(" 404 "), "{status}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["owner"], "node-b");
    let mine = domain_of(&a, "node-a", "adm");
    let _device = a.send(&handshake(&mine)).await;
    a.waiting_devices(1).await;
    let (_, body) = admin_get(&a, &format!("/api/domains/{mine}")).await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["owner"], "node-a");
    assert_eq!(answer["waiting"], 1);
    let (_, metrics) = admin_get(&a, "/metrics").await;
    assert!(metrics.contains("limmat_cluster_members 2"), "{metrics}");
    assert!(metrics.contains("limmat_cluster_gossip_rejected_total"));
    assert!(metrics.contains("limmat_cluster_gossip_bytes_total{direction=\"received\"}"));
    a.stop().await;
    b.stop().await;
}

/// 7.6: when a node joins, a mux connection of a domain that moved gets GOAWAY at the same time
/// as the domain's waiting PTTH devices get their `204`; its open stream is not interrupted,
/// and the connection ends with its last stream. The re-POST gets the `307`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_sends_goaway_to_mux_connections_of_moved_domains() {
    let a = node("127.0.0.6", "node-a", &[], |_| {}).await;
    until_live(&[&a], &["node-a"]).await;
    let d = (0..200)
        .map(|i| format!("mux{i}"))
        .find(|d| limmat_relay::cluster::owner::owner(["node-a", "node-b"], d) == Some(1))
        .unwrap();
    let mut mux = a
        .send(format!("POST /{d} HTTP/1.1\r\nUpgrade: limmat-mux/1\r\n\r\n").as_bytes())
        .await;
    assert_eq!(
        read_n(&mut mux, limmat_wire::response::UPGRADE_MUX.len()).await,
        limmat_wire::response::UPGRADE_MUX
    );
    let mut conn = h2::server::handshake(mux).await.unwrap();
    common::until(a.handle.stats().mux_connections(), 1, "mux connections").await;
    let mut client = a
        .send(format!("GET /{d}/s HTTP/1.1\r\n\r\n").as_bytes())
        .await;
    let (_request, mut respond) = conn.accept().await.unwrap().unwrap();
    let driver = tokio::spawn(async move { while let Some(Ok(_)) = conn.accept().await {} });
    let mut body = respond
        .send_response(http::Response::new(()), false)
        .unwrap();
    body.send_data(bytes::Bytes::from_static(b"before"), false)
        .unwrap();
    assert_eq!(read_n(&mut client, 6).await, b"before");
    // A PTTH device of the same domain shows when the domain moved.
    let mut ptth = a.send(&handshake(&d)).await;
    a.waiting_devices(1).await;

    let b = node("127.0.0.5", "node-b", &[a.gossip], |_| {}).await;
    until_live(&[&a, &b], &["node-a", "node-b"]).await;
    assert_eq!(read_n(&mut ptth, RENEW.len()).await, RENEW);
    // The open stream still carries bytes; when it ends, so does the connection.
    body.send_data(bytes::Bytes::from_static(b"after"), true)
        .unwrap();
    assert_eq!(read_n(&mut client, 5).await, b"after");
    drop(client);
    timeout(PATIENCE, driver)
        .await
        .expect("the mux connection ends after its last stream")
        .unwrap();
    let mut again = a
        .send(format!("POST /{d} HTTP/1.1\r\nUpgrade: limmat-mux/1\r\n\r\n").as_bytes())
        .await;
    let got = read_to_end(&mut again).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        redirect_to(&b, &format!("/{d}"))
    );
    drop(ptth);
    a.stop().await;
    b.stop().await;
}
