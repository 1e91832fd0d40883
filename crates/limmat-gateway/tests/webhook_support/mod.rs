//! Helpers shared by the webhook integration tests: settings, messages and a private PKI.
#![allow(dead_code)]

use limmat_gateway::config::WebhooksSection;
use limmat_gateway::webhook::Message;
use limmat_gateway::webhook::receiver::{Receiver, ReceiverOptions};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::Duration;

pub const SUB: &str = "sub_01JGGZ8Q4V8X2M7N3P5R6T9W0Y";
pub const MSG: &str = "msg_01JGGZ8Q4V8X2M7N3P5R6T9W0Y";
pub const BODY: &[u8] = br#"{"id":"evt_01JGGZ8Q4V8X2M7N3P5R6T9W0Y","type":"webhook.ping","timestamp":"2025-01-01T12:00:00.000Z","gateway":"limmat-demo","data":{}}"#;

/// The HMAC key of the tests' subscriptions.
pub fn key() -> Vec<u8> {
    (0u8..32).collect()
}

/// `[webhooks]` with small timeouts and the given allow list, built in code (the file's range
/// checks would refuse sub-second timeouts).
pub fn settings(allow: &[&str]) -> WebhooksSection {
    WebhooksSection {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        allow_networks: allow.iter().map(|s| s.to_string()).collect(),
        ..WebhooksSection::default()
    }
}

pub fn message<'a>(url: &'a str, keys: &'a [Vec<u8>]) -> Message<'a> {
    Message {
        subscription_id: SUB,
        msg_id: MSG,
        url,
        body: BODY,
        secrets: keys,
    }
}

/// A private CA and a server certificate it signed for `hook.test` and `127.0.0.1`.
pub struct Pki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["hook.test".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Pki {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    /// The CA certificate in a temporary file, for `ca_file`.
    pub fn ca_file(&self) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, self.ca_pem.as_bytes()).unwrap();
        f
    }
}

/// A receiver on 127.0.0.1 that knows [`key`].
pub async fn plain_receiver() -> Receiver {
    Receiver::start("127.0.0.1:0".parse().unwrap(), vec![key()])
        .await
        .unwrap()
}

/// An HTTPS receiver on 127.0.0.1 with the PKI's server certificate.
pub async fn tls_receiver(pki: &Pki) -> Receiver {
    Receiver::start_with(
        "127.0.0.1:0".parse().unwrap(),
        vec![key()],
        ReceiverOptions {
            tls: Some(pki.server.clone()),
            print: false,
        },
    )
    .await
    .unwrap()
}
