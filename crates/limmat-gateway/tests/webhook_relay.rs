//! Delivery through the real relay's forward proxy (`gateway-api.md` §5.9, checklist 45):
//! a relay in this process with the proxy on, a device key for the gateway's domain and
//! `127.0.0.1/32` opened by an egress allow rule; signed deliveries reach the real receiver
//! over `CONNECT` + TLS and in absolute form, and the relay's egress refusal is `proxy-denied`.

mod webhook_support;

use limmat_gateway::webhook::client::HttpTransport;
use limmat_gateway::webhook::{FailureKind, Outcome, Transport};
use limmat_relay::auth::{DeviceKey, KeySources, sha256_hex};
use limmat_relay::{Action, EgressRule, Relay, RelayConfig, RelayHandle};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use webhook_support::*;

const DEVICE_KEY: &str = "gateway-device-key-for-the-gw-domain";
const WAIT: Duration = Duration::from_secs(10);

struct TestRelay {
    addr: SocketAddr,
    handle: RelayHandle,
    task: JoinHandle<()>,
}

impl TestRelay {
    /// A relay with the forward proxy on; `egress_allow` as `--egress-allow` rules.
    async fn start(egress_allow: &[&str]) -> Self {
        let mut config = RelayConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..RelayConfig::default()
        };
        config.keys = KeySources {
            device_keys: vec![DeviceKey {
                domain: "gw".into(),
                sha256: sha256_hex(DEVICE_KEY),
            }],
            ..KeySources::default()
        };
        config.forward_proxy = true;
        config.egress.rules = egress_allow
            .iter()
            .map(|r| EgressRule::parse(Action::Allow, r).unwrap())
            .collect();
        let relay = Relay::bind(config).await.unwrap();
        let addr = relay.local_addrs()[0];
        let handle = relay.handle();
        let task = tokio::spawn(relay.run());
        TestRelay { addr, handle, task }
    }

    async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap();
    }

    /// A transport that delivers through this relay with `key`.
    fn transport(&self, key: &str, ca: Option<&std::path::Path>) -> HttpTransport {
        // The literal 127.0.0.1 must pass the gateway's own check; the relay decides after.
        let mut s = settings(&["127.0.0.1/32"]);
        s.proxy = Some(format!("http://{}", self.addr));
        s.proxy_key = Some(key.to_string());
        s.ca_file = ca.map(|p| p.to_path_buf());
        HttpTransport::new(&s).unwrap()
    }
}

#[tokio::test]
async fn signed_deliveries_reach_the_receiver_through_the_relay() {
    let relay = TestRelay::start(&["127.0.0.1/32"]).await;
    let pki = Pki::new();
    let ca = pki.ca_file();
    let tls = tls_receiver(&pki).await;
    let plain = plain_receiver().await;
    let t = relay.transport(DEVICE_KEY, Some(ca.path()));
    let keys = [key()];
    let https = tls.url("/hook");
    let http = plain.url("/hook?x=1");
    for url in [&https, &http, &https] {
        assert_eq!(
            t.attempt(message(url, &keys)).await,
            Outcome::Delivered { status: 200 },
            "{url}"
        );
    }
    for rx in [&tls, &plain] {
        let got = rx.wait_for(1, WAIT).await.unwrap();
        assert_eq!(got[0].id, MSG);
        assert_eq!(&got[0].body[..], BODY);
        assert!(rx.attempts().iter().all(|a| a.rejected.is_none()));
    }
    // The relay forwards absolute-form requests in origin form with `Via`, without the key.
    let h = &plain.deliveries()[0].headers;
    assert_eq!(h["via"], "1.1 limmat");
    assert!(!h.contains_key("proxy-authorization"));
    // The second https attempt reused the tunnel.
    assert_eq!(tls.attempts().len(), 2);
    assert_eq!(tls.connections(), 1);
    drop(t);
    relay.stop().await;
}

#[tokio::test]
async fn relay_refusals_are_proxy_denied_and_proxy_auth() {
    // No allow rule: the relay's built-in deny set refuses 127.0.0.1.
    let relay = TestRelay::start(&[]).await;
    let pki = Pki::new();
    let ca = pki.ca_file();
    let tls = tls_receiver(&pki).await;
    let plain = plain_receiver().await;
    let keys = [key()];
    let denied = |status| Outcome::Failed {
        kind: FailureKind::ProxyDenied,
        status: Some(status),
        retry_after: None,
    };
    let t = relay.transport(DEVICE_KEY, Some(ca.path()));
    for url in [tls.url("/"), plain.url("/")] {
        assert_eq!(t.attempt(message(&url, &keys)).await, denied(403), "{url}");
    }
    let wrong = relay.transport("not-the-key", Some(ca.path()));
    for url in [tls.url("/"), plain.url("/")] {
        assert_eq!(
            wrong.attempt(message(&url, &keys)).await,
            Outcome::Failed {
                kind: FailureKind::ProxyAuth,
                status: Some(407),
                retry_after: None,
            },
            "{url}"
        );
    }
    assert_eq!(tls.connections() + plain.connections(), 0);
    drop((t, wrong));
    relay.stop().await;
}
