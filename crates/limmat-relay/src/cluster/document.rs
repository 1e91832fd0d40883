//! A node's document: what it publishes about itself as chitchat key-values (spec 7.2), and
//! reading a peer's back. A peer whose document is incomplete or malformed (another version,
//! a bug) is kept out of the live set rather than guessed at.

use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The chitchat keys of a node document.
pub mod key {
    pub const NODE_ID: &str = "node_id";
    pub const PUBLIC_HOST: &str = "public_host";
    pub const PUBLIC_HTTP_PORT: &str = "public_http_port";
    pub const PUBLIC_HTTPS_PORT: &str = "public_https_port";
    pub const INTERNAL: &str = "internal";
    pub const DRAINING: &str = "draining";
}

/// One node as peers see it: where devices are redirected to (7.4) and where clients are
/// forwarded to (7.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub node_id: Arc<str>,
    pub public_host: String,
    pub public_http_port: Option<u16>,
    pub public_https_port: Option<u16>,
    /// The internal listener.
    pub internal: SocketAddr,
    pub draining: bool,
}

impl Member {
    /// The public port devices are redirected to: the TLS one for a handshake over TLS.
    pub fn port(&self, tls: bool) -> Option<u16> {
        if tls {
            self.public_https_port
        } else {
            self.public_http_port
        }
    }

    /// The key-values this node publishes.
    pub fn to_key_values(&self) -> Vec<(String, String)> {
        let port = |p: Option<u16>| p.map(|p| p.to_string()).unwrap_or_default();
        vec![
            (key::NODE_ID.into(), self.node_id.to_string()),
            (key::PUBLIC_HOST.into(), self.public_host.clone()),
            (key::PUBLIC_HTTP_PORT.into(), port(self.public_http_port)),
            (key::PUBLIC_HTTPS_PORT.into(), port(self.public_https_port)),
            (key::INTERNAL.into(), self.internal.to_string()),
            (key::DRAINING.into(), self.draining.to_string()),
        ]
    }

    /// Reads a peer's document; `Err` names the first missing or malformed key.
    pub fn from_key_values<'a>(
        node_id: &str,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Member, &'static str> {
        let port = |k: &'static str| match get(k) {
            Some("") => Ok(None),
            Some(v) => v.parse::<u16>().map(Some).map_err(|_| k),
            None => Err(k),
        };
        if get(key::NODE_ID) != Some(node_id) {
            return Err(key::NODE_ID);
        }
        let public_host = get(key::PUBLIC_HOST)
            .filter(|h| limmat_wire::cluster::is_token(h.as_bytes()))
            .ok_or(key::PUBLIC_HOST)?;
        Ok(Member {
            node_id: node_id.into(),
            public_host: public_host.to_string(),
            public_http_port: port(key::PUBLIC_HTTP_PORT)?,
            public_https_port: port(key::PUBLIC_HTTPS_PORT)?,
            internal: get(key::INTERNAL)
                .and_then(|v| v.parse().ok())
                .ok_or(key::INTERNAL)?,
            draining: match get(key::DRAINING) {
                Some("true") => true,
                Some("false") => false,
                _ => return Err(key::DRAINING),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn round_trip_and_bad_documents() {
        let m = Member {
            node_id: "node-a".into(),
            public_host: "a.relay.example.com".into(),
            public_http_port: Some(80),
            public_https_port: None,
            internal: "10.0.0.1:7946".parse().unwrap(),
            draining: false,
        };
        let kv: HashMap<String, String> = m.to_key_values().into_iter().collect();
        let get = |k: &str| kv.get(k).map(String::as_str);
        assert_eq!(Member::from_key_values("node-a", get), Ok(m.clone()));
        assert_eq!(Member::from_key_values("node-b", get), Err(key::NODE_ID));
        for (k, v) in [
            (key::PUBLIC_HTTP_PORT, "http"),
            (key::INTERNAL, "nowhere"),
            (key::DRAINING, "maybe"),
            (key::PUBLIC_HOST, "a b"),
        ] {
            let mut bad = kv.clone();
            bad.insert(k.into(), v.into());
            let get = |k: &str| bad.get(k).map(String::as_str);
            assert_eq!(Member::from_key_values("node-a", get), Err(k));
        }
    }
}
