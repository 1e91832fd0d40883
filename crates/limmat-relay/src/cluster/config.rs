//! The `[cluster]` settings (spec 7.1–7.6) with their defaults, and the checks that refuse a
//! node that could not take part in a cluster (an address peers cannot reach, a weak secret).
//!
//! Defined once, with serde: the relay's TOML reads this struct, and its flags fill the same
//! fields. Without `seeds` a node is standalone and none of the cluster's sockets are opened.

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// A unique, stable id, for example the pod name (7.1).
    pub node_id: Option<String>,
    /// The host devices are redirected to; default: the first `hostname`.
    pub public_host: Option<String>,
    /// The plain port devices are redirected to; default: the first plain listener's.
    pub public_http_port: Option<u16>,
    /// The TLS port devices are redirected to; default: the first TLS listener's.
    pub public_https_port: Option<u16>,
    /// The internal listener: probes and forwarded clients (7.1).
    pub internal_listen: Option<SocketAddr>,
    /// TLS on the internal listener and the forwarding client (7.1), with the relay's own
    /// certificates; peers are verified against `internal_ca` and the first hostname.
    pub internal_tls: bool,
    /// PEM file of the CA certificates that signed the nodes' certificate; required with
    /// `internal_tls` (with a self-signed certificate, that certificate itself).
    pub internal_ca: Option<PathBuf>,
    /// Gossip over UDP; default: the internal listener's address.
    pub gossip_listen: Option<SocketAddr>,
    /// `host:port` of peers' gossip sockets; names are resolved again every `seed_interval`.
    pub seeds: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub seed_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub gossip_interval: Duration,
    /// A peer counts for ownership after being live this long without a break (7.2).
    #[serde(deserialize_with = "duration")]
    pub join_delay: Duration,
    /// The shared secret: gossip HMAC key and the internal listener's bearer token.
    pub cluster_secret_file: Option<PathBuf>,
    /// Forwarding hops a client may take between inconsistent views (7.5).
    pub max_hops: u32,
    /// Path-form clients at a non-owner get a 307 instead of a forward (7.5).
    pub client_redirect: bool,
    /// `204`s of moved domains are spread over this (7.6).
    #[serde(deserialize_with = "duration")]
    pub rebalance_spread: Duration,
    /// How long pipes may finish after SIGTERM (7.6).
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            public_host: None,
            public_http_port: None,
            public_https_port: None,
            internal_listen: None,
            internal_tls: false,
            internal_ca: None,
            gossip_listen: None,
            seeds: Vec::new(),
            seed_interval: Duration::from_secs(10),
            gossip_interval: Duration::from_millis(250),
            join_delay: Duration::from_secs(1),
            cluster_secret_file: None,
            max_hops: 2,
            client_redirect: false,
            rebalance_spread: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A setting that keeps a node out of a cluster, named so an operator can fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterConfigError {
    #[error("cluster: `{0}` is required when `seeds` are configured")]
    Missing(&'static str),
    #[error("cluster: node_id {0:?} must be 1 to 128 visible ASCII characters without spaces")]
    NodeId(String),
    #[error(
        "cluster: {0} {1} is not an address peers can reach; give this node's own IP, not 0.0.0.0"
    )]
    Unspecified(&'static str, SocketAddr),
    #[error("cluster: cannot read cluster_secret_file {0}: {1}")]
    SecretFile(PathBuf, String),
    #[error(
        "cluster: cluster_secret_file {0} must hold at least 16 visible ASCII characters (one line)"
    )]
    WeakSecret(PathBuf),
    #[error("cluster: {0} must be more than zero")]
    Zero(&'static str),
    #[error(
        "cluster: internal_tls needs internal_ca, the CA certificates of the nodes' certificate"
    )]
    InternalCa,
}

/// The checked settings a clustered node runs with.
#[derive(Debug, Clone)]
pub struct Checked {
    pub node_id: String,
    pub internal_listen: SocketAddr,
    pub gossip_listen: SocketAddr,
    pub secret: Vec<u8>,
}

impl ClusterConfig {
    /// A node is clustered when it has seeds; otherwise it is a standalone relay (7.2).
    pub fn is_clustered(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// Checks a clustered node's settings and reads its secret.
    pub fn check(&self) -> Result<Checked, ClusterConfigError> {
        use ClusterConfigError as E;
        let node_id = self.node_id.clone().ok_or(E::Missing("node_id"))?;
        if node_id.len() > 128 || !limmat_wire::cluster::is_token(node_id.as_bytes()) {
            return Err(E::NodeId(node_id));
        }
        let internal_listen = self.internal_listen.ok_or(E::Missing("internal_listen"))?;
        let gossip_listen = self.gossip_listen.unwrap_or(internal_listen);
        for (name, addr) in [
            ("internal_listen", internal_listen),
            ("gossip_listen", gossip_listen),
        ] {
            if addr.ip().is_unspecified() {
                return Err(E::Unspecified(name, addr));
            }
        }
        if self.internal_tls && self.internal_ca.is_none() {
            return Err(E::InternalCa);
        }
        for (name, value) in [
            ("gossip_interval", self.gossip_interval),
            ("seed_interval", self.seed_interval),
        ] {
            if value.is_zero() {
                return Err(E::Zero(name));
            }
        }
        let path = self
            .cluster_secret_file
            .clone()
            .ok_or(E::Missing("cluster_secret_file"))?;
        let secret = read_secret(&path)?;
        Ok(Checked {
            node_id,
            internal_listen,
            gossip_listen,
            secret,
        })
    }
}

/// The secret is the file's first line without surrounding whitespace.
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, ClusterConfigError> {
    let text = std::fs::read(path)
        .map_err(|e| ClusterConfigError::SecretFile(path.to_owned(), e.to_string()))?;
    let secret = text
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default()
        .trim_ascii()
        .to_vec();
    if secret.len() < 16 || !limmat_wire::cluster::is_token(&secret) {
        return Err(ClusterConfigError::WeakSecret(path.to_owned()));
    }
    Ok(secret)
}

/// `"250ms"`, `"10s"`, `"1m"` (or a bare `0`).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration such as 250ms, 10s or 1m ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specs() {
        let c: ClusterConfig = toml::from_str("").unwrap();
        assert_eq!(c, ClusterConfig::default());
        assert_eq!(c.seed_interval, Duration::from_secs(10));
        assert_eq!(c.gossip_interval, Duration::from_millis(250));
        assert_eq!(c.join_delay, Duration::from_secs(1));
        assert_eq!(c.max_hops, 2);
        assert!(!c.client_redirect && !c.internal_tls && !c.is_clustered());
        assert_eq!(c.rebalance_spread, Duration::from_secs(5));
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn toml_and_checks() {
        let dir = std::env::temp_dir().join(format!("limmat-cluster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "0123456789abcdefXYZ\n").unwrap();
        let text = format!(
            "node_id = \"node-a\"\ninternal_listen = \"127.0.0.2:7946\"\n\
             seeds = [\"relay-headless:7946\"]\ngossip_interval = \"100ms\"\n\
             cluster_secret_file = {:?}\n",
            secret
        );
        let c: ClusterConfig = toml::from_str(&text).unwrap();
        let checked = c.check().unwrap();
        assert_eq!(checked.gossip_listen, "127.0.0.2:7946".parse().unwrap());
        assert_eq!(checked.secret, b"0123456789abcdefXYZ");
        assert_eq!(c.gossip_interval, Duration::from_millis(100));

        let bad = |f: &dyn Fn(&mut ClusterConfig)| {
            let mut c = c.clone();
            f(&mut c);
            c.check().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.node_id = Some("a b".into())).contains("node_id"));
        assert!(
            bad(&|c| c.internal_listen = Some("0.0.0.0:1".parse().unwrap())).contains("0.0.0.0")
        );
        assert!(bad(&|c| c.cluster_secret_file = Some(dir.join("nope"))).contains("nope"));
        std::fs::write(dir.join("weak"), "short\n").unwrap();
        assert!(bad(&|c| c.cluster_secret_file = Some(dir.join("weak"))).contains("16"));
        assert!(bad(&|c| c.node_id = None).contains("node_id"));
        let err = toml::from_str::<ClusterConfig>("gossip_interval = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("soon"));
        assert!(toml::from_str::<ClusterConfig>("sedes = []").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
