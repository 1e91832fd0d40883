//! `limmat gateway` behind a real `limmat relay` (gateway-api.md §1.2, §5.9; checklist 3 and
//! 45): the API in path form through the relay with links that keep the relay's prefix and
//! `Host`, a GATT read, the beacon event stream, and signed webhooks delivered through the
//! relay's forward proxy, where an egress refusal shows up as `proxy-denied`.

mod common;
mod gateway_common;

use common::Limmat;
use gateway_common::*;
use limmat_gateway::webhook::receiver::Receiver;
use limmat_gateway::webhook::sign;
use limmat_relay::auth::sha256_hex;
use std::net::SocketAddr;

const DOMAIN: &str = "gw-1";
const KEY: &str = "gateway-relay-test-device-key";

/// A relay with a device key for `gw-1`, an admin listener, and the forward proxy on, allowing
/// 127.0.0.1 except the `deny` ports. Returns (relay, public address, admin address).
fn relay(dir: &TempDir, deny: &[u16]) -> (Limmat, SocketAddr, SocketAddr) {
    let keys = dir.file(
        "keys.toml",
        &format!(
            "[[device_key]]\ndomain = \"{DOMAIN}\"\nsha256 = \"{}\"\n",
            sha256_hex(KEY)
        ),
    );
    let mut args: Vec<String> = [
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--keys-file",
        &keys,
        "--forward-proxy",
    ]
    .map(String::from)
    .to_vec();
    for port in deny {
        args.extend(["--egress-deny".into(), format!("127.0.0.1/32:{port}")]);
    }
    args.extend(["--egress-allow".into(), "127.0.0.1/32".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut relay = Limmat::spawn(&args);
    let (mut public, mut admin) = (None, None);
    while public.is_none() || admin.is_none() {
        let line = relay.wait_for("listening");
        let addr: SocketAddr = common::field(&line, "addr").parse().unwrap();
        if line.contains("admin listening") {
            admin = Some(addr);
        } else {
            public = Some(addr);
        }
    }
    (relay, public.unwrap(), admin.unwrap())
}

/// `limmat gateway` registered on the relay as `gw-1`, delivering through its proxy.
fn gateway(dir: &TempDir, relay: SocketAddr) -> (Proc, SocketAddr) {
    let config = dir.file(
        "gateway.toml",
        "[presence]\nupdate_interval = \"1s\"\n\n[webhooks]\nallow_networks = [\"127.0.0.1/32\"]\nretry_base = \"200ms\"\ntimeout = \"5s\"\n",
    );
    let state = dir.path().join("state");
    let relay = relay.to_string();
    let proxy = format!("http://{relay}");
    let mut gw = Proc::spawn(&[
        "gateway",
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
        "--relay",
        &relay,
        "--domain",
        DOMAIN,
        "--secret-key",
        KEY,
        "--egress-proxy",
        &proxy,
    ]);
    let local = gw.gateway_addr();
    (gw, local)
}

#[test]
fn the_api_through_the_relay() {
    let dir = TempDir::new("gw-relay-api");
    let (mut relay, relay_addr, _) = relay(&dir, &[]);
    let (_gw, _local) = gateway(&dir, relay_addr);
    relay.wait_for("device connected");
    let base = format!("http://{relay_addr}/{DOMAIN}");

    // Checklist 3: the scan through the relay lists the six simulated nodes, and every link
    // keeps the relay's Host and the /gw-1 prefix.
    let nodes = get_json(&format!("{base}/gap/nodes?active=1&duration=1500"));
    assert!(
        nodes["self"]["href"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/gap/nodes")),
        "{nodes}"
    );
    let mut handles: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let handle = n["handle"].as_str().unwrap();
            assert_eq!(
                n["self"]["href"].as_str().unwrap(),
                format!("{base}/gap/nodes/{handle}"),
                "{n}"
            );
            handle
        })
        .collect();
    handles.sort_unstable();
    assert_eq!(
        handles,
        [
            "c0ffee000001",
            "c0ffee000002",
            "c0ffee000003",
            "c0ffee000004",
            "c0ffee000010",
            "c0ffee000011"
        ]
    );
    // Another domain's prefix is not ours.
    let (status, _) = http(
        "GET",
        &format!("http://{relay_addr}/gw-1x/gap/nodes"),
        None,
        &[],
    );
    assert_ne!(status, 200);

    // Connect "Limmat HRM" and read its battery level through the relay.
    let (status, body) = http(
        "PUT",
        &format!("{base}/gap/nodes/c0ffee000010?connect=1"),
        None,
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let value = get_json(&format!(
        "{base}/gatt/nodes/c0ffee000010/characteristics/0022/value"
    ));
    assert_eq!(value["value"], "64", "{value}");
    assert!(
        value["self"]["href"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/gatt/nodes/c0ffee000010/")),
        "{value}"
    );

    // The beacon event stream through the relay: with update_interval = "1s" events flow.
    let sse = Sse::open(&format!("{base}/beacon/events"));
    let mut seen = 0;
    while seen < 2 {
        let event = sse.next(PATIENCE).expect("an event through the relay");
        let Some(kind) = event.event.as_deref() else {
            continue;
        };
        assert!(kind.starts_with("beacon."), "{event:?}");
        let json: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(
            event.id.as_deref(),
            Some(json["sequence"].to_string().as_str())
        );
        // Links follow the relay prefix, as those of /beacon/beacons do (issue 12 item 7).
        if let Some(href) = json["data"]["beacon"]["self"]["href"].as_str() {
            assert!(
                href.starts_with(&format!("{base}/beacon/beacons/")),
                "{href}"
            );
        }
        seen += 1;
    }
    // Long streams hold relay connections, more than the pool of 4, yet short requests still
    // get through: each taken connection is replaced (§1.2).
    let streams: Vec<Sse> = (0..5)
        .map(|_| Sse::open(&format!("{base}/beacon/events")))
        .collect();
    for stream in &streams {
        stream.next(PATIENCE).expect("each stream is served");
    }
    let index = get_json(&format!("{base}/"));
    assert!(index.is_object(), "{index}");
    let (status, body) = http("GET", &format!("{base}/beacon/beacons"), None, &[]);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn webhooks_through_the_relays_forward_proxy() {
    let dir = TempDir::new("gw-relay-proxy");
    let rt = runtime();
    let key = sign::generate_secret().unwrap();
    let secret = sign::format_secret(&key);
    let ok_receiver = rt
        .block_on(Receiver::start(
            "127.0.0.1:0".parse().unwrap(),
            vec![key.clone()],
        ))
        .unwrap();
    let denied_receiver = rt
        .block_on(Receiver::start(
            "127.0.0.1:0".parse().unwrap(),
            vec![key.clone()],
        ))
        .unwrap();
    let (mut relay, relay_addr, admin) = relay(&dir, &[denied_receiver.addr().port()]);
    let (_gw, local) = gateway(&dir, relay_addr);
    relay.wait_for("device connected");
    let base = format!("http://{relay_addr}/{DOMAIN}");

    // A subscription made through the relay; deliveries go out through the relay's proxy.
    subscribe(&base, &ok_receiver.url("/hook"), &secret, "");
    let deliveries = rt
        .block_on(ok_receiver.wait_for(3, PATIENCE))
        .expect("signed deliveries through the proxy");
    for d in &deliveries {
        // The receiver verified the signature; the relay's proxy left its mark.
        let via = d.headers.get("via").and_then(|v| v.to_str().ok());
        assert_eq!(via, Some("1.1 limmat"), "{:?}", d.headers);
        let event: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
    }
    let domain = get_json(&format!("http://{admin}/api/domains/{DOMAIN}"));
    let connections = domain["proxy"]["connections"].as_u64().unwrap_or(0);
    assert!(connections >= 1, "{domain}");
    relay.wait_for("proxy connection closed");

    // A receiver the relay's egress policy denies: the attempt fails with proxy-denied and
    // never reaches it.
    let created = subscribe(
        &format!("http://{local}"),
        &denied_receiver.url("/hook"),
        &secret,
        "",
    );
    let href = created["self"]["href"].as_str().unwrap().to_owned();
    let sub = eventually("lastError proxy-denied", PATIENCE, || {
        let sub = get_json(&href);
        (sub["delivery"]["lastError"] == "proxy-denied").then_some(sub)
    });
    assert_eq!(sub["delivery"]["lastStatus"], 403, "{sub}");
    assert!(
        sub["delivery"]["failedAttempts"].as_u64().unwrap() >= 1,
        "{sub}"
    );
    assert_eq!(denied_receiver.attempts().len(), 0);
    assert_eq!(denied_receiver.connections(), 0);
    let domain = get_json(&format!("http://{admin}/api/domains/{DOMAIN}"));
    assert!(
        domain["proxy"]["denied"].as_u64().unwrap_or(0) >= 1,
        "{domain}"
    );
    relay.wait_for("denied by the egress policy");
    // The first subscription keeps delivering.
    let n = ok_receiver.deliveries().len();
    rt.block_on(ok_receiver.wait_for(n + 1, PATIENCE))
        .expect("the allowed subscription keeps delivering");
}
