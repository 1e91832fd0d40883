//! Every `limmat relay` setting, defined once in the table below: its flag, its `LIMMAT_…`
//! variable, its file key, its parser and where it lands in [`RelayConfig`] (see
//! [`crate::settings`] for how to add one). A few keys exist only in the file: certificate
//! pairs as `[[cert]]` tables, static device keys and the ordered `[[egress.rule]]` tables.

use crate::runtime::{Choice, Layout};
use crate::settings::{
    self, Entry, Layer, boolean, count, from_str, many, one, path, socket_addr, text,
};
use crate::units;
use anyhow::anyhow;
use limmat_relay::auth::{AuthMode, DeviceKey};
use limmat_relay::cluster::ClusterConfig;
use limmat_relay::egress::{HostPattern, Ports};
use limmat_relay::{Action, CertPaths, Cidr, DataPath, EgressRule, Listen, Rate, RelayConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

settings::settings! {
    /// Every relay setting, unset unless its source gives it: flags, variables and the file each
    /// fill one of these, and [`merge`] lays them over each other before the defaults apply. The
    /// defaults are therefore written in the help text rather than given to clap, which would
    /// make a default flag override the file.
    pub struct RelaySettings => RelayConfig {
        /// Address to listen on for devices and clients (repeatable); `tls:ADDR` for TLS.
        /// [default: 127.0.0.1:8080]
        #[arg(help_heading = "Listeners", value_name = "ADDR")]
        listen: Vec<Listen> = many(listen) => |c, v| c.listen = v;
        /// PEM certificate chain for TLS listeners (repeatable, paired with --key in order;
        /// chosen by SNI, the first is the default). Reloaded when the file changes or on SIGHUP.
        #[arg(help_heading = "TLS", value_name = "FILE")]
        cert: Vec<PathBuf> = many(path);
        /// PEM private key for the --cert at the same position.
        #[arg(help_heading = "TLS", value_name = "FILE")]
        key: Vec<PathBuf> = many(path);
        /// The ClientHello and TLS handshake must be done within this. [default: 10s]
        #[arg(help_heading = "TLS", value_name = "DURATION")]
        tls_handshake_timeout: Duration = one(units::duration)
            => |c, v| c.tls_handshake_timeout = v;
        /// Public hostname of the relay (repeatable); turns on <domain>.<hostname> routing.
        #[arg(help_heading = "Listeners", value_name = "NAME")]
        hostname: Vec<String> = many(text) => |c, v| c.hostnames = v;
        /// A waiting device gets 204 after this long (1s to 74s). [default: 30s]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        hold_time: Duration = one(hold_time) => |c, v| c.hold_time = v;
        /// How long a client waits for a device before 504 (0 = answer at once). [default: 5s]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        client_wait: Duration = one(units::duration) => |c, v| c.client_wait = v;
        /// Close a pipe after this long without a byte either way (0 = never). [default: 10m]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        idle_timeout: Duration = one(units::duration) => |c, v| c.idle_timeout = v;
        /// Waiting connections allowed per domain (0 = no cap); more get 429. [default: 32]
        #[arg(help_heading = "Limits and timeouts", value_name = "N")]
        max_per_domain: usize = one(count) => |c, v| c.max_per_domain = v;
        /// Retry-After of the 429 sent over max-per-domain. [default: 30s]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        cap_retry_after: Duration = one(units::duration) => |c, v| c.cap_retry_after = v;
        /// Longest request head; longer heads are closed with no response. [default: 16KiB]
        #[arg(help_heading = "Limits and timeouts", value_name = "SIZE")]
        max_head: usize = one(units::size) => |c, v| c.max_head = v;
        /// A head must be complete this long after accept or a 204. [default: 10s]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        head_timeout: Duration = one(units::duration) => |c, v| c.head_timeout = v;
        /// Clients allowed to wait per domain (0 = no limit); more get 504 at once.
        /// [default: 256]
        #[arg(help_heading = "Limits and timeouts", value_name = "N")]
        max_waiting_clients: usize = one(count) => |c, v| c.max_waiting_clients = v;
        /// Answer a new connection's first handshake with 204, as Yaler v2.1 does (`=false`
        /// turns off what the file or LIMMAT_FIRST_POST_RENEW turned on). [default: false]
        #[arg(help_heading = "Listeners", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        first_post_renew: bool = one(boolean) => |c, v| c.first_post_renew = v;
        /// Where `GET /` is redirected (307); without it, 504.
        #[arg(help_heading = "Listeners", value_name = "URI")]
        root_uri: String = one(text) => |c, v| c.root_uri = Some(v);
        /// How long open pipes may finish after SIGTERM or SIGINT. [default: 30s]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        drain_timeout: Duration = one(units::duration) => |c, v| c.drain_timeout = v;
        /// limmat-mux/1: PING a mux device after this long without receiving anything.
        /// [default: 30s]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        mux_ping_interval: Duration = one(units::duration) => |c, v| c.mux_ping_interval = v;
        /// limmat-mux/1: a mux device whose PING ACK takes longer is dead and dropped.
        /// [default: 20s]
        #[arg(help_heading = "Limits and timeouts", value_name = "DURATION")]
        mux_ping_timeout: Duration = one(units::duration) => |c, v| c.mux_ping_timeout = v;
        /// `keys`: every device needs a key (the default when a key source is given); `open`:
        /// any device may register any domain (allowed by default on loopback-only relays).
        #[arg(help_heading = "Device keys", value_name = "open|keys")]
        auth: AuthMode = one(from_str::<AuthMode>) => |c, v| c.auth = Some(v);
        /// TOML file of [[device_key]] entries (domain, sha256) and revoked_keys (repeatable).
        #[arg(help_heading = "Device keys", value_name = "FILE")]
        keys_file: Vec<PathBuf> = many(path) => |c, v| c.keys.keys_files = v;
        /// Master secret for derived keys lmk1.… (repeatable, for rotation).
        #[arg(help_heading = "Device keys", value_name = "FILE")]
        master_secret_file: Vec<PathBuf> = many(path) => |c, v| c.keys.master_secret_files = v;
        /// Open connections per client address (IPv6 per /64); 0 = no limit. [default: 1024]
        #[arg(help_heading = "Limits and timeouts", value_name = "N")]
        max_conns_per_ip: usize = one(count) => |c, v| c.limits.max_conns_per_ip = v;
        /// New connections per address, as RATE/UNIT:BURST; 0 = no limit.
        /// [default: 500/s:1000]
        #[arg(help_heading = "Limits and timeouts", value_name = "RATE")]
        conn_rate_per_ip: Rate = one(from_str::<Rate>) => |c, v| c.limits.conn_rate_per_ip = v;
        /// Failed device authentications per address before 429; 0 = no limit.
        /// [default: 10/min:20]
        #[arg(help_heading = "Limits and timeouts", value_name = "RATE")]
        auth_failures_per_ip: Rate = one(from_str::<Rate>)
            => |c, v| c.limits.auth_failures_per_ip = v;
        /// Device handshakes per domain (each pairing returns one); 0 = no limit.
        /// [default: 10/s:64]
        #[arg(help_heading = "Limits and timeouts", value_name = "RATE")]
        handshake_rate_per_domain: Rate = one(from_str::<Rate>)
            => |c, v| c.limits.handshake_rate_per_domain = v;
        /// Address ranges the per-address limits do not apply to (repeatable; `none` for no
        /// exemption at all). [default: 127.0.0.0/8, ::1/128]
        #[arg(help_heading = "Limits and timeouts", value_name = "CIDR")]
        limit_exempt: Vec<Option<Cidr>> = many(exempt)
            => |c, v| c.limits.limit_exempt = v.into_iter().flatten().collect();
        /// Open connections of the whole relay; at the limit it stops accepting; 0 = no limit.
        /// [default: 65536]
        #[arg(help_heading = "Limits and timeouts", value_name = "N")]
        max_connections: usize = one(count) => |c, v| c.max_connections = v;
        /// Admin listener: /healthz, /readyz, /metrics, the JSON API and the dashboard.
        /// [default: none]
        #[arg(help_heading = "Admin", value_name = "ADDR")]
        admin: std::net::SocketAddr = one(socket_addr) => |c, v| c.admin = Some(v);
        /// File holding the admin bearer token; required when --admin is not loopback.
        #[arg(help_heading = "Admin", value_name = "FILE")]
        admin_token_file: PathBuf = one(path) => |c, v| c.admin_token_file = Some(v);
        /// One line per client request at info (method, domain, the device's status, bytes,
        /// duration; target limmat::access); `=false` logs them at debug. [default: true]
        #[arg(help_heading = "Logging", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        access_log: bool = one(boolean) => |c, v| c.access_log = v;
        /// Let authenticated devices use the relay as an HTTP proxy (CONNECT host:port and
        /// http:// requests, spec section 6); needs device keys. [default: false]
        #[arg(help_heading = "Forward proxy", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        forward_proxy: bool = one(boolean) => |c, v| c.forward_proxy = v;
        /// Forward proxy: let devices reach RULE, a CIDR or host pattern with optional :PORTS
        /// (127.0.0.1/32, 10.1.2.0/24:443, *.example.com:443,8883); repeatable. Checked before
        /// the built-in deny set of private, loopback, link-local and other non-public ranges.
        #[arg(help_heading = "Forward proxy", value_name = "RULE")]
        egress_allow: Vec<EgressRule> = rules(allow_rule);
        /// Forward proxy: never let devices reach RULE (same syntax); repeatable. Deny rules are
        /// checked before allow rules.
        #[arg(help_heading = "Forward proxy", value_name = "RULE")]
        egress_deny: Vec<EgressRule> = rules(deny_rule);
        /// Forward proxy: what applies to an address that no rule and no built-in range
        /// matches. [default: allow]
        #[arg(help_heading = "Forward proxy", value_name = "allow|deny")]
        egress_default: Action = one(from_str::<Action>) => |c, v| c.egress.default = v;
        /// Forward proxy: resolving and connecting to a target must be done within this.
        /// [default: 10s]
        #[arg(help_heading = "Forward proxy", value_name = "DURATION")]
        proxy_connect_timeout: Duration = one(units::duration)
            => |c, v| c.proxy_connect_timeout = v;
        /// Forward proxy: concurrent tunnels and requests per device domain (0 = no limit);
        /// more get 429. [default: 64]
        #[arg(help_heading = "Forward proxy", value_name = "N")]
        proxy_max_per_domain: usize = one(count) => |c, v| c.proxy_max_per_domain = v;
        /// Cluster (spec 7): this node's unique, stable id, such as the pod name; required
        /// with --cluster-seed.
        #[arg(help_heading = "Cluster", value_name = "ID")]
        node_id: String = one(text);
        /// Cluster: the host devices are redirected to when this node owns their domain;
        /// every node must be reachable under its own. [default: the first --hostname]
        #[arg(help_heading = "Cluster", value_name = "HOST")]
        public_host: String = one(text);
        /// Cluster: the plain port in redirects to this node. [default: the first plain
        /// listener's]
        #[arg(help_heading = "Cluster", value_name = "PORT")]
        public_http_port: u16 = one(from_str::<u16>);
        /// Cluster: the TLS port in redirects to this node. [default: the first TLS
        /// listener's]
        #[arg(help_heading = "Cluster", value_name = "PORT")]
        public_https_port: u16 = one(from_str::<u16>);
        /// Cluster: the internal listener (probes, forwarded clients), on a private network;
        /// required with --cluster-seed.
        #[arg(help_heading = "Cluster", value_name = "ADDR")]
        internal_listen: std::net::SocketAddr = one(socket_addr);
        /// Cluster: gossip over UDP. [default: the internal listener's address]
        #[arg(help_heading = "Cluster", value_name = "ADDR")]
        gossip_listen: std::net::SocketAddr = one(socket_addr);
        /// Cluster: a peer's gossip address, HOST:PORT, resolved again every seed interval (a
        /// headless Service name lists every pod); repeatable. Without seeds the relay is
        /// standalone and opens no UDP socket.
        #[arg(help_heading = "Cluster", value_name = "HOST:PORT")]
        cluster_seed: Vec<String> = many(seed);
        /// Cluster: file holding the shared secret (one line, at least 16 characters) that
        /// signs gossip and authenticates forwards; required with --cluster-seed.
        #[arg(help_heading = "Cluster", value_name = "FILE")]
        cluster_secret_file: PathBuf = one(path);
        /// Cluster: how many internal hops a client may take between nodes whose views
        /// disagree. [default: 2]
        #[arg(help_heading = "Cluster", value_name = "N")]
        max_hops: u32 = one(from_str::<u32>);
        /// Cluster: path-form clients at a node that does not own the domain get a 307 to the
        /// owner instead of being forwarded. [default: false]
        #[arg(help_heading = "Cluster", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        client_redirect: bool = one(boolean);
        /// Cluster: TLS on the internal listener and the forwarding hop, with the relay's
        /// --cert/--key; peers are verified against --cluster-internal-ca and the first
        /// --hostname. [default: false]
        #[arg(help_heading = "Cluster", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
        cluster_internal_tls: bool = one(boolean);
        /// Cluster: PEM file of the CA certificates that signed the nodes' certificate;
        /// required with --cluster-internal-tls (a self-signed certificate is its own CA).
        #[arg(help_heading = "Cluster", value_name = "FILE")]
        cluster_internal_ca: PathBuf = one(path);
        /// How the relay spreads its work over threads: `per-core`, one single-threaded
        /// runtime per worker thread, each accepting its own connections (SO_REUSEPORT);
        /// `multi-thread`, tokio's work-stealing pool; `current-thread`, one thread (cheapest
        /// per request where the relay shares its cores; see docs/benchmarks.md).
        /// [default: current-thread]
        #[arg(help_heading = "Performance", value_name = "per-core|multi-thread|current-thread")]
        runtime: Layout = one(from_str::<Layout>);
        /// Threads of `per-core` and `multi-thread` (0 = one per core). [default: 0]
        #[arg(help_heading = "Performance", value_name = "N")]
        worker_threads: usize = one(crate::runtime::threads);
        /// How a pipe between two plain TCP connections moves its bytes: `splice` in the
        /// kernel, `copy` through the relay, or `auto`, copying until a direction turns out to
        /// be bulk and splicing from then on (Linux; elsewhere always copy). [default: auto]
        #[arg(help_heading = "Performance", value_name = "auto|splice|copy")]
        data_path: DataPath = one(from_str::<DataPath>) => |c, v| c.data_path = v;
        /// Cluster: gossip this often. [default: 250ms]
        #[arg(help_heading = "Cluster", value_name = "DURATION")]
        cluster_gossip_interval: Duration = one(units::duration);
        /// Cluster: seed names are resolved again this often. [default: 10s]
        #[arg(help_heading = "Cluster", value_name = "DURATION")]
        cluster_seed_interval: Duration = one(units::duration);
        /// Cluster: a peer counts for ownership once it has been live this long. [default: 1s]
        #[arg(help_heading = "Cluster", value_name = "DURATION")]
        cluster_join_delay: Duration = one(units::duration);
        /// Cluster: the 204s of devices whose domain moved are spread over this. [default: 5s]
        #[arg(help_heading = "Cluster", value_name = "DURATION")]
        cluster_rebalance_spread: Duration = one(units::duration);
    }
}

/// The relay's runtime layout when no source names one (docs/benchmarks.md).
const DEFAULT_RUNTIME: Layout = Layout::CurrentThread;

/// The relay's listener when no source names one.
const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 8080);

/// Keys only the file has, read by [`from_entries`]; named in suggestions for typos.
const FILE_ONLY: &[&str] = &["certs", "device_key", "revoked_keys", "egress_rule"];

/// The `[cluster]` table's keys (spec 7) and the settings they fill; the flags and variables
/// are the settings' names (`node_id` is `--node-id` and LIMMAT_NODE_ID, `seeds` is the
/// repeatable `--cluster-seed`). Cluster settings are written only in the table.
const CLUSTER_KEYS: &[(&str, &str)] = &[
    ("node_id", "node_id"),
    ("public_host", "public_host"),
    ("public_http_port", "public_http_port"),
    ("public_https_port", "public_https_port"),
    ("internal_listen", "internal_listen"),
    ("gossip_listen", "gossip_listen"),
    ("seeds", "cluster_seed"),
    ("cluster_secret_file", "cluster_secret_file"),
    ("max_hops", "max_hops"),
    ("client_redirect", "client_redirect"),
    ("gossip_interval", "cluster_gossip_interval"),
    ("seed_interval", "cluster_seed_interval"),
    ("join_delay", "cluster_join_delay"),
    ("rebalance_spread", "cluster_rebalance_spread"),
    ("internal_tls", "cluster_internal_tls"),
    ("internal_ca", "cluster_internal_ca"),
];

/// The file's own keys: static device keys (spec 4.1.2), revoked keys and the ordered
/// `[[egress.rule]]` tables (6.4.2).
#[derive(Debug, Default)]
pub struct FileOnly {
    pub device_key: Vec<DeviceKey>,
    pub revoked_keys: Vec<String>,
    pub egress_rule: Vec<EgressRule>,
}

/// `upper` over `lower`, setting by setting. Certificates and keys go together, since they
/// pair by position.
pub fn merge(upper: RelaySettings, mut lower: RelaySettings) -> RelaySettings {
    if upper.cert.is_some() || upper.key.is_some() {
        lower.cert = None;
        lower.key = None;
    }
    upper.or(lower)
}

impl RelaySettings {
    /// The merged settings and the file's own keys over the defaults, and the runtime to run
    /// on (the relay's `accept_runtimes` follow from it).
    pub fn into_config(
        mut self,
        file: FileOnly,
    ) -> anyhow::Result<(RelayConfig, ClusterConfig, Choice)> {
        let cluster = ClusterSettings::take(&mut self);
        let runtime = Choice {
            layout: self.runtime.take().unwrap_or(DEFAULT_RUNTIME),
            threads: self.worker_threads.take().unwrap_or(0),
        };
        let cert = self.cert.take().unwrap_or_default();
        let key = self.key.take().unwrap_or_default();
        if cert.len() != key.len() {
            anyhow::bail!(
                "{} --cert but {} --key: give one --key for each --cert, in the same order",
                cert.len(),
                key.len()
            );
        }
        // The file's rule tables in their order, then deny rules, then allow rules: flags
        // cannot keep their relative order, and a deny first is the safe reading.
        let rules = [
            Some(file.egress_rule),
            self.egress_deny.take(),
            self.egress_allow.take(),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .collect();
        let mut config = RelayConfig {
            listen: vec![Listen::plain(DEFAULT_LISTEN.into())],
            ..RelayConfig::default()
        };
        self.apply(&mut config);
        config.certs = cert
            .into_iter()
            .zip(key)
            .map(|(cert, key)| CertPaths { cert, key })
            .collect();
        config.egress.rules = rules;
        config.keys.device_keys = file.device_key;
        config.keys.revoked_keys = file.revoked_keys;
        config.accept_runtimes = runtime.extra_runtimes();
        let cluster = cluster.into_config(&config)?;
        Ok((config, cluster, runtime))
    }
}

/// The `[cluster]` settings, taken out of [`RelaySettings`] before the rest applies: they fill
/// [`ClusterConfig`], whose defaults are the spec's, and some default to other settings.
struct ClusterSettings {
    node_id: Option<String>,
    public_host: Option<String>,
    public_http_port: Option<u16>,
    public_https_port: Option<u16>,
    internal_listen: Option<std::net::SocketAddr>,
    gossip_listen: Option<std::net::SocketAddr>,
    seeds: Option<Vec<String>>,
    secret_file: Option<PathBuf>,
    max_hops: Option<u32>,
    client_redirect: Option<bool>,
    gossip_interval: Option<Duration>,
    seed_interval: Option<Duration>,
    join_delay: Option<Duration>,
    rebalance_spread: Option<Duration>,
    internal_tls: Option<bool>,
    internal_ca: Option<PathBuf>,
}

impl ClusterSettings {
    fn take(s: &mut RelaySettings) -> Self {
        Self {
            node_id: s.node_id.take(),
            public_host: s.public_host.take(),
            public_http_port: s.public_http_port.take(),
            public_https_port: s.public_https_port.take(),
            internal_listen: s.internal_listen.take(),
            gossip_listen: s.gossip_listen.take(),
            seeds: s.cluster_seed.take(),
            secret_file: s.cluster_secret_file.take(),
            max_hops: s.max_hops.take(),
            client_redirect: s.client_redirect.take(),
            gossip_interval: s.cluster_gossip_interval.take(),
            seed_interval: s.cluster_seed_interval.take(),
            join_delay: s.cluster_join_delay.take(),
            rebalance_spread: s.cluster_rebalance_spread.take(),
            internal_tls: s.cluster_internal_tls.take(),
            internal_ca: s.cluster_internal_ca.take(),
        }
    }

    /// The cluster settings over the spec's defaults. The public host defaults to the first
    /// `--hostname`, the public ports to the first listener of each kind, and the drain time
    /// is the relay's own `drain_timeout`. A clustered node (one with seeds) is checked here,
    /// so a missing secret file or node id stops the relay with the setting's flag named.
    fn into_config(self, relay: &RelayConfig) -> anyhow::Result<ClusterConfig> {
        let mut c = ClusterConfig::default();
        let first_port = |tls: bool| {
            relay
                .listen
                .iter()
                .find(|l| l.tls == tls)
                .map(|l| l.addr.port())
                .filter(|&p| p != 0)
        };
        c.node_id = self.node_id;
        c.public_host = self
            .public_host
            .or_else(|| relay.hostnames.first().cloned());
        c.public_http_port = self.public_http_port.or_else(|| first_port(false));
        c.public_https_port = self.public_https_port.or_else(|| first_port(true));
        c.internal_listen = self.internal_listen;
        c.gossip_listen = self.gossip_listen;
        c.seeds = self.seeds.unwrap_or_default();
        c.cluster_secret_file = self.secret_file;
        c.drain_timeout = relay.drain_timeout;
        if let Some(v) = self.max_hops {
            c.max_hops = v;
        }
        if let Some(v) = self.client_redirect {
            c.client_redirect = v;
        }
        c.internal_tls = self.internal_tls.unwrap_or(false);
        c.internal_ca = self.internal_ca;
        for (value, field) in [
            (self.gossip_interval, &mut c.gossip_interval),
            (self.seed_interval, &mut c.seed_interval),
            (self.join_delay, &mut c.join_delay),
            (self.rebalance_spread, &mut c.rebalance_spread),
        ] {
            if let Some(v) = value {
                *field = v;
            }
        }
        if c.is_clustered() {
            check_cluster(&c, relay)?;
        }
        Ok(c)
    }
}

/// The checks of a clustered node, with the flags named as an operator types them.
fn check_cluster(c: &ClusterConfig, relay: &RelayConfig) -> anyhow::Result<()> {
    use limmat_relay::cluster::ClusterConfigError as E;
    if c.public_host.is_none()
        && relay
            .listen
            .first()
            .is_some_and(|l| l.addr.ip().is_unspecified())
    {
        anyhow::bail!(
            "cluster: give --public-host (or a --hostname): devices are redirected to it, and the \
             first listener's address {} is not one they can reach",
            relay.listen[0].addr
        );
    }
    c.check().map(drop).map_err(|e| match e {
        E::Missing(name) => anyhow!(
            "cluster: --{} ([cluster] {name}) is required with --cluster-seed",
            name.replace('_', "-")
        ),
        E::InternalCa => anyhow!(
            "cluster: --cluster-internal-tls needs --cluster-internal-ca ([cluster] internal_ca), \
             the CA certificates of the nodes' certificate"
        ),
        other => anyhow!(other),
    })?;
    if c.internal_tls && (relay.certs.is_empty() || relay.hostnames.is_empty()) {
        anyhow::bail!(
            "cluster: --cluster-internal-tls serves the relay's own certificate: give --cert, \
             --key and the --hostname it names"
        );
    }
    Ok(())
}

/// A `--cluster-seed`: `HOST:PORT`, a name or an address, resolved later and again and again.
pub fn seed(s: &str) -> Result<String, String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let bad = || format!("{s:?} is not a seed such as 10.0.0.2:7946 or relay-headless:7946");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(s.to_owned()),
        _ => Err(bad()),
    }
}

/// A listener: `[tls:]ADDR`, where ADDR may name a host (`localhost:8090`), resolved at start.
pub fn listen(s: &str) -> Result<Listen, String> {
    let (tls, addr) = Listen::split_scheme(s);
    let addr = settings::socket_addr(addr)
        .map_err(|e| format!("{e} (a listener is [tls:]ADDR, such as tls:0.0.0.0:443)"))?;
    Ok(if tls {
        Listen::tls(addr)
    } else {
        Listen::plain(addr)
    })
}

/// Every setting's help line ends with its `LIMMAT_…` variable, as clap writes it for the
/// settings it reads itself (the relay reads its variables in [`crate::settings::from_env`]).
pub fn with_env_in_help(command: clap::Command) -> clap::Command {
    command.mut_args(|arg| {
        let id = arg.get_id().as_str().to_owned();
        if !RelaySettings::NAMES.contains(&id.as_str()) {
            return arg;
        }
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        arg.help(format!("{help} [env: {}]", settings::env_name(&id)))
    })
}

/// The variables a relay reads.
pub fn env_names() -> impl Iterator<Item = String> {
    RelaySettings::NAMES.iter().map(|n| settings::env_name(n))
}

/// A hold time, checked here too so that the file key or variable is named: devices read with
/// a 75 s timeout, so a longer wait without a byte would cut them off (D2).
pub fn hold_time(s: &str) -> Result<Duration, String> {
    let d = units::duration(s)?;
    if d < Duration::from_secs(1) || d >= Duration::from_secs(75) {
        return Err(format!(
            "hold_time must be from 1s to 74s, below the devices' 75 s read timeout ({s:?} given)"
        ));
    }
    Ok(d)
}

/// A `limit_exempt` value: a range, or `none`.
pub fn exempt(value: &str) -> Result<Option<Cidr>, String> {
    match value {
        "none" => Ok(None),
        range => range.parse().map(Some),
    }
}

/// An `--egress-allow` value.
pub fn allow_rule(s: &str) -> Result<EgressRule, String> {
    EgressRule::parse(Action::Allow, s)
}

/// An `--egress-deny` value.
pub fn deny_rule(s: &str) -> Result<EgressRule, String> {
    EgressRule::parse(Action::Deny, s)
}

/// A list of egress rules. In a variable, a rule's port list has commas too
/// (`LIMMAT_EGRESS_ALLOW=10.0.0.0/8:443,8883,*.example.com`): an item that is only a port or
/// a port range continues the rule before it.
fn rules(
    raw: settings::Raw,
    parse: impl Fn(&str) -> Result<EgressRule, String>,
) -> Result<Vec<EgressRule>, String> {
    let raw = match raw {
        settings::Raw::Env(s) => {
            let mut items: Vec<String> = Vec::new();
            for item in settings::split_env(&s)? {
                let port_only = item.bytes().all(|b| b.is_ascii_digit() || b == b'-');
                match items.last_mut() {
                    Some(last) if port_only && last.contains(':') => {
                        last.push(',');
                        last.push_str(&item);
                    }
                    _ => items.push(item),
                }
            }
            settings::Raw::List(items)
        }
        other => other,
    };
    many(raw, parse)
}

/// Reads a configuration file: every key must be a setting.
pub fn from_file(file: &Path) -> anyhow::Result<(RelaySettings, FileOnly)> {
    let entries = settings::read_file(file)?;
    from_entries(entries).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// A `[[cert]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertTable {
    cert: PathBuf,
    key: PathBuf,
}

/// An `[[egress.rule]]` table (spec 6.4.2).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    action: String,
    cidr: Option<String>,
    host: Option<String>,
    /// `"443,8883,1000-2000"`, or a single port as a number.
    ports: Option<toml::Value>,
    #[serde(default)]
    domains: Vec<String>,
}

impl RuleTable {
    fn into_rule(self) -> Result<EgressRule, String> {
        let ports = match self.ports {
            None => None,
            Some(toml::Value::String(s)) => Some(s.parse::<Ports>()?),
            Some(toml::Value::Integer(n)) => Some(n.to_string().parse::<Ports>()?),
            Some(other) => return Err(format!("ports = {other}: expected \"443,8000-8100\"")),
        };
        let domains = self
            .domains
            .iter()
            .map(|d| limmat_wire::route::parse_domain(d).map_err(|e| format!("domain {d:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(EgressRule {
            action: self.action.parse()?,
            cidr: self.cidr.as_deref().map(str::parse::<Cidr>).transpose()?,
            host: self
                .host
                .as_deref()
                .map(str::parse::<HostPattern>)
                .transpose()?,
            ports,
            domains,
        })
    }
}

/// A file's keys to settings; errors name the key, its value and what was expected.
fn from_entries(entries: Vec<Entry>) -> Result<(RelaySettings, FileOnly), String> {
    let mut settings = RelaySettings::default();
    let mut file = FileOnly::default();
    let mut certs: Option<Vec<CertTable>> = None;
    for entry in entries {
        match entry.name.as_str() {
            "cert" | "certs" => {
                if certs.is_some() {
                    return Err("give certificates as either [[cert]] or certs, not both".into());
                }
                certs =
                    Some(entry.tables("[[cert]] tables with cert = \"FILE\" and key = \"FILE\"")?);
            }
            "key" => {
                return Err(entry.bad(
                    "a private key goes next to its certificate: [[cert]] cert = \"…\" key = \"…\"",
                ));
            }
            "device_key" => {
                file.device_key = entry.tables("[[device_key]] tables with domain and sha256")?;
            }
            "egress_rule" => {
                let tables: Vec<RuleTable> = entry
                    .tables("[[egress.rule]] tables of action, cidr, host, ports and domains")?;
                file.egress_rule = tables
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        r.into_rule()
                            .map_err(|e| format!("egress.rule #{}: {e}", i + 1))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "revoked_keys" => {
                file.revoked_keys = many(entry.raw()?, text).map_err(|e| entry.bad(e))?;
            }
            name if entry.key.starts_with("cluster.") => {
                let key = &name["cluster_".len()..];
                let Some((_, setting)) = CLUSTER_KEYS.iter().find(|(k, _)| *k == key) else {
                    let keys: Vec<&str> = CLUSTER_KEYS.iter().map(|(k, _)| *k).collect();
                    return Err(match settings::suggest(key, keys.iter()) {
                        Some(near) => {
                            format!("unknown key {:?} (did you mean cluster.{near}?)", entry.key)
                        }
                        None => format!("unknown key {:?}", entry.key),
                    });
                };
                let entry = settings::Entry {
                    name: (*setting).to_owned(),
                    ..entry
                };
                settings::set_entry(&mut settings, &entry, FILE_ONLY)?
            }
            name if !entry.key.starts_with("cluster.")
                && CLUSTER_KEYS.iter().any(|(_, setting)| *setting == name) =>
            {
                return Err(format!(
                    "{}: a cluster setting goes in the [cluster] table",
                    entry.key
                ));
            }
            _ => settings::set_entry(&mut settings, &entry, FILE_ONLY)?,
        }
    }
    if let Some(certs) = certs {
        let (cert, key) = certs.into_iter().map(|c| (c.cert, c.key)).unzip();
        settings.cert = Some(cert);
        settings.key = Some(key);
    }
    Ok((settings, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Raw;

    fn parse(source: &str) -> Result<(RelaySettings, FileOnly), String> {
        from_entries(settings::entries(source)?)
    }

    #[test]
    fn every_setting_parses_from_the_file() {
        let (s, file) = parse(
            r#"
            listen = ["127.0.0.1:8080", "tls:0.0.0.0:443"]
            hold_time = "20s"
            max_head = "8KiB"
            max_per_domain = 0
            first_post_renew = true
            conn_rate_per_ip = "500/s:1000"
            limit_exempt = "none"
            revoked_keys = ["sha256:00"]
            [[cert]]
            cert = "a.pem"
            key = "a.key"
            [[device_key]]
            domain = "d"
            sha256 = "00"
            "#,
        )
        .unwrap();
        assert_eq!(s.listen.unwrap().len(), 2);
        assert_eq!(s.hold_time, Some(Duration::from_secs(20)));
        assert_eq!(s.max_head, Some(8192));
        assert_eq!(s.max_per_domain, Some(0));
        assert_eq!(s.first_post_renew, Some(true));
        assert_eq!(s.limit_exempt, Some(vec![None]));
        assert_eq!(s.cert, Some(vec![PathBuf::from("a.pem")]));
        assert_eq!(s.key, Some(vec![PathBuf::from("a.key")]));
        assert_eq!(file.device_key[0].domain, "d");
        assert_eq!(file.revoked_keys, ["sha256:00"]);
    }

    #[test]
    fn certs_may_be_an_inline_array() {
        let (s, _) = parse(r#"certs = [{ cert = "a.pem", key = "a.key" }]"#).unwrap();
        assert_eq!(s.key, Some(vec![PathBuf::from("a.key")]));
        let e = parse(r#"certs = [{ cert = "a.pem" }]"#).err().unwrap();
        assert!(e.contains("certs") && e.contains("key"), "{e}");
    }

    #[test]
    fn errors_name_key_value_and_expectation() {
        let e = parse(r#"hold_time = "90s""#).err().unwrap();
        assert!(
            e.starts_with(r#"hold_time = "90s": "#) && e.contains("1s to 74s"),
            "{e}"
        );
        let e = parse("hold_tme = \"30s\"").err().unwrap();
        assert_eq!(e, r#"unknown key "hold_tme" (did you mean hold_time?)"#);
        let e = parse("max-head = 1").err().unwrap();
        assert!(e.contains("did you mean max_head?"), "{e}");
        let e = parse("hold_time = [\"1s\"]").err().unwrap();
        assert!(e.contains("single value"), "{e}");
        let e = parse("listen = [{a = 1}]").err().unwrap();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn egress_settings() {
        let (s, file) = parse(
            r#"
            forward_proxy = true
            egress_allow = ["127.0.0.1/32", "*.example.com:443,8883"]
            proxy_max_per_domain = 8
            [egress]
            default = "deny"
            [[egress.rule]]
            action = "allow"
            cidr = "10.1.2.0/24"
            ports = 443
            domains = ["Backend"]
            [[egress.rule]]
            action = "deny"
            host = "*.internal"
            "#,
        )
        .unwrap();
        assert_eq!(s.forward_proxy, Some(true));
        assert_eq!(s.egress_default, Some(Action::Deny));
        assert_eq!(s.proxy_max_per_domain, Some(8));
        let allow = s.egress_allow.unwrap();
        assert_eq!(allow[1].to_string(), "allow *.example.com ports 443,8883");
        let table = file.egress_rule;
        assert_eq!(
            table[0].to_string(),
            "allow 10.1.2.0/24 ports 443 for backend"
        );
        assert_eq!(table[1].to_string(), "deny *.internal");
        let e = parse("[[egress.rule]]\naction = \"maybe\"").err().unwrap();
        assert!(e.contains("egress.rule #1") && e.contains("maybe"), "{e}");
        let e = parse("egress_deny = [\"not a rule\"]").err().unwrap();
        assert!(e.starts_with("egress_deny = "), "{e}");
        let e = parse("egress_default = \"deny\"\n[egress]\ndefault = \"deny\"")
            .err()
            .unwrap();
        assert!(
            e.contains("egress.default") && e.contains("egress_default"),
            "{e}"
        );
        // In a variable, port lists continue the rule before them.
        let mut s = RelaySettings::default();
        let value = "10.0.0.0/8:443,8883,1000-2000, *.example.com,127.0.0.1/32";
        s.set("egress_allow", Raw::Env(value.into())).unwrap();
        let rules: Vec<String> = s
            .egress_allow
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            rules,
            [
                "allow 10.0.0.0/8 ports 443,8883,1000-2000",
                "allow *.example.com",
                "allow 127.0.0.1/32"
            ]
        );
    }

    #[test]
    fn cluster_settings_fill_the_cluster_config() {
        let dir = std::env::temp_dir().join(format!("limmat-cli-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
        let (s, file) = parse(&format!(
            r#"
            listen = ["127.0.0.2:8080", "tls:127.0.0.2:8443"]
            hostname = ["a.relay.example.com", "relay.example.com"]
            drain_timeout = "7s"
            [cluster]
            node_id = "node-a"
            internal_listen = "127.0.0.2:7946"
            seeds = ["relay-headless:7946", "127.0.0.3:7946"]
            cluster_secret_file = {secret:?}
            max_hops = 3
            client_redirect = true
            join_delay = "2s"
            rebalance_spread = "1s"
            "#
        ))
        .unwrap();
        let (_, cluster, _) = s.into_config(file).unwrap();
        assert!(cluster.is_clustered());
        assert_eq!(cluster.node_id.as_deref(), Some("node-a"));
        assert_eq!(cluster.public_host.as_deref(), Some("a.relay.example.com"));
        assert_eq!(
            (cluster.public_http_port, cluster.public_https_port),
            (Some(8080), Some(8443))
        );
        assert_eq!(cluster.seeds.len(), 2);
        assert_eq!((cluster.max_hops, cluster.client_redirect), (3, true));
        assert_eq!(cluster.join_delay, Duration::from_secs(2));
        assert_eq!(cluster.rebalance_spread, Duration::from_secs(1));
        assert_eq!(cluster.drain_timeout, Duration::from_secs(7));

        // Clear errors: a bad seed, a missing secret file, a missing node id.
        let e = parse("[cluster]\nseeds = [\"no-port\"]").err().unwrap();
        assert!(e.contains("cluster.seeds") && e.contains("no-port"), "{e}");
        let config = |extra: &str| {
            let (s, file) = parse(&format!(
                "hostname = [\"h\"]\n[cluster]\nseeds = [\"127.0.0.3:7946\"]\n{extra}"
            ))
            .unwrap();
            s.into_config(file).map(drop).unwrap_err().to_string()
        };
        let e = config("internal_listen = \"127.0.0.2:7946\"\ncluster_secret_file = \"x\"");
        assert!(e.contains("--node-id"), "{e}");
        let e = config("node_id = \"a\"\ninternal_listen = \"127.0.0.2:7946\"");
        assert!(e.contains("--cluster-secret-file"), "{e}");
        let missing = dir.join("missing");
        let e = config(&format!(
            "node_id = \"a\"\ninternal_listen = \"127.0.0.2:7946\"\ncluster_secret_file = {missing:?}"
        ));
        assert!(e.contains("missing"), "{e}");
        // internal_tls names what it lacks: the CA, then the relay's own certificate.
        let base = format!(
            "node_id = \"a\"\ninternal_listen = \"127.0.0.2:7946\"\ncluster_secret_file = {secret:?}\ninternal_tls = true"
        );
        let e = config(&base);
        assert!(e.contains("--cluster-internal-ca"), "{e}");
        let e = config(&format!("{base}\ninternal_ca = {secret:?}"));
        assert!(e.contains("--cert"), "{e}");
        let e = parse("node_id = \"a\"").err().unwrap();
        assert!(e.contains("[cluster] table"), "{e}");
        let e = parse("[cluster]\nnode_di = \"a\"").err().unwrap();
        assert!(e.contains("did you mean cluster.node_id?"), "{e}");
        // Standalone: nothing is required.
        let (_, cluster, _) = RelaySettings::default()
            .into_config(FileOnly::default())
            .unwrap();
        assert!(!cluster.is_clustered());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let mut s = RelaySettings::default();
        s.set("listen", Raw::Env("127.0.0.1:1, tls:[::1]:2".into()))
            .unwrap();
        assert_eq!(
            s.listen.unwrap()[1],
            Listen::tls("[::1]:2".parse().unwrap())
        );
    }

    #[test]
    fn the_layers_merge_and_fill_the_defaults() {
        let mut file = RelaySettings::default();
        file.set("max_head", Raw::Scalar("1KiB".into())).unwrap();
        file.set("cert", Raw::List(vec!["f.pem".into()])).unwrap();
        file.set("key", Raw::List(vec!["f.key".into()])).unwrap();
        let mut flags = RelaySettings::default();
        flags.set("cert", Raw::List(vec!["a.pem".into()])).unwrap();
        let merged = merge(flags, file);
        // The flag's certificate does not pair with the file's key.
        let e = merged.into_config(FileOnly::default()).unwrap_err();
        assert!(e.to_string().contains("1 --cert but 0 --key"), "{e}");
        let (config, cluster, _) = RelaySettings::default()
            .into_config(FileOnly::default())
            .unwrap();
        assert!(!cluster.is_clustered());
        assert_eq!(config.listen, [Listen::plain(DEFAULT_LISTEN.into())]);
        assert_eq!(
            config.proxy_max_per_domain,
            RelayConfig::default().proxy_max_per_domain
        );
    }
}
