//! Issue 17: the agent reaches the relay through REAL corporate proxies that the tests start
//! (scripts/test installs them): squid with Basic credentials checked by `basic_ncsa_auth` and
//! a port allow-list, squid with `ssl_bump` (a TLS-inspecting proxy whose CA the agent is given
//! with `--ca-file`), and microsocks with a user and password (socks5h). In every cell the
//! agent's established sockets go only to the proxy (read from `/proc/<pid>/fd` and
//! `/proc/net/tcp*`), and a client reaches the device through the relay.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

/// A temporary directory that squid, started as root and running as `nobody`, can write to.
fn temp_dir(tag: &str) -> TempDir {
    let dir = common::temp_dir(&format!("proxy-{tag}"));
    set_mode(&dir.0, 0o777);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A port free on 127.0.0.1 for a program that cannot bind port 0 and report it (squid,
/// microsocks): bound and released at once.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `port` accepts connections (the proxy is up) or its process has exited.
fn wait_listening(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A squid started for one test, stopped (and its shared memory removed) on drop.
struct Squid {
    child: Child,
    port: u16,
    name: String,
    dir: TempDir,
}

/// What the squid in front of the relay does.
enum SquidKind {
    /// CONNECT with Basic credentials (basic_ncsa_auth), only to `ports`.
    Basic { ports: Vec<u16> },
    /// CONNECT without credentials; TLS is bumped with the CA in `ca.pem`/`ca.key`; upgrades
    /// to PTTH/1.0 pass, limmat-mux/1 does not.
    Bump,
}

impl Squid {
    fn start(tag: &str, kind: SquidKind) -> Self {
        let dir = temp_dir(tag);
        let d = dir.0.display().to_string();
        let port = free_port();
        let name = format!("lmt{}{tag}", std::process::id());
        let user = match nix_uid() {
            0 => "nobody".to_owned(),
            _ => whoami(),
        };
        let mut conf = format!(
            "pid_filename {d}/squid.pid\ncache_log {d}/cache.log\naccess_log stdio:{d}/access.log\n\
             cache deny all\ncoredump_dir {d}\nnetdb_filename none\ncache_effective_user {user}\n\
             shutdown_lifetime 0 seconds\nacl CONNECT method CONNECT\n"
        );
        match kind {
            SquidKind::Basic { ports } => {
                let status = Command::new("htpasswd")
                    .args(["-bc", &format!("{d}/passwd"), USER, PASSWORD])
                    .stderr(Stdio::null())
                    .status()
                    .expect("htpasswd runs (scripts/test installs apache2-utils)");
                assert!(status.success());
                set_mode(&dir.0.join("passwd"), 0o644);
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                conf.push_str(&format!(
                    "http_port 127.0.0.1:{port}\n\
                     auth_param basic program /usr/lib/squid/basic_ncsa_auth {d}/passwd\n\
                     auth_param basic realm limmat-test\n\
                     acl authed proxy_auth REQUIRED\n\
                     acl relay_ports port {}\n\
                     http_access deny CONNECT !relay_ports\n\
                     http_access allow authed\nhttp_access deny all\n",
                    ports.join(" ")
                ));
            }
            SquidKind::Bump => {
                let status = Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .args([
                        "-keyout",
                        &format!("{d}/ca.key"),
                        "-out",
                        &format!("{d}/ca.pem"),
                    ])
                    .args(["-subj", "/CN=Limmat test inspecting proxy"])
                    .stderr(Stdio::null())
                    .status()
                    .expect("openssl runs");
                assert!(status.success());
                for f in ["ca.key", "ca.pem"] {
                    set_mode(&dir.0.join(f), 0o644);
                }
                let certgen = "/usr/lib/squid/security_file_certgen";
                let status = Command::new(certgen)
                    .args(["-c", "-s", &format!("{d}/ssl_db"), "-M", "4MB"])
                    .stdout(Stdio::null())
                    .status()
                    .expect("security_file_certgen runs (squid-openssl)");
                assert!(status.success());
                if nix_uid() == 0 {
                    let _ = Command::new("chown")
                        .args(["-R", "nobody", &format!("{d}/ssl_db")])
                        .status();
                }
                conf.push_str(&format!(
                    "http_port 127.0.0.1:{port} ssl-bump tls-cert={d}/ca.pem tls-key={d}/ca.key \
                     generate-host-certificates=on dynamic_cert_mem_cache_size=4MB\n\
                     sslcrtd_program {certgen} -s {d}/ssl_db -M 4MB\n\
                     sslcrtd_children 2\n\
                     acl step1 at_step SslBump1\nssl_bump peek step1\nssl_bump bump all\n\
                     tls_outgoing_options flags=DONT_VERIFY_PEER\n\
                     sslproxy_cert_error allow all\n\
                     http_upgrade_request_protocols PTTH/1.0 allow all\n\
                     http_access allow all\n"
                ));
            }
        }
        std::fs::write(dir.0.join("squid.conf"), conf).unwrap();
        let mut child = Command::new("squid")
            .args(["-N", "-n", &name, "-f", &format!("{d}/squid.conf")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid runs (scripts/test installs squid-openssl)");
        wait_listening(&mut child, port, "squid");
        Squid {
            child,
            port,
            name,
            dir,
        }
    }

    fn url(&self, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", self.name))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

fn nix_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// microsocks with a user and password, killed on drop.
struct Socks {
    child: Child,
    port: u16,
}

impl Socks {
    fn start() -> Self {
        let port = free_port();
        let mut child = Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", USER, "-P", PASSWORD])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("microsocks runs (scripts/test installs it)");
        wait_listening(&mut child, port, "microsocks");
        Socks { child, port }
    }
}

impl Drop for Socks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The remote ports of the established TCP connections of process `pid`.
fn remote_ports(pid: u32) -> Vec<u16> {
    let mut inodes = Vec::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                {
                    inodes.push(inode.to_owned());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "01" || !inodes.iter().any(|i| i == cols[9]) {
                continue;
            }
            if let Some((_, port)) = cols[2].rsplit_once(':') {
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// The agent's established connections all go to `proxy` (and there is one at least).
fn assert_only_to(agent: &Limmat, proxy: u16, cell: &str) {
    let ports = remote_ports(agent.pid());
    assert!(
        !ports.is_empty() && ports.iter().all(|&p| p == proxy),
        "{cell}: the agent's sockets go to ports {ports:?}, not only to the proxy's {proxy}"
    );
}

/// A relay with a plain and a TLS listener (certificate for `localhost`).
struct Relay {
    process: Limmat,
    plain: SocketAddr,
    tls: SocketAddr,
    cert: PathBuf,
    _dir: TempDir,
}

fn relay(tag: &str) -> Relay {
    let dir = temp_dir(&format!("relay-{tag}"));
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_path = dir.0.join("relay.pem");
    let key_path = dir.0.join("relay.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let mut process = Limmat::spawn(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "tls:127.0.0.1:0",
        "--hostname",
        "localhost",
        "--cert",
        cert_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
        "--client-wait",
        "5s",
    ]);
    let (mut plain, mut tls) = (None, None);
    for _ in 0..2 {
        let line = process.wait_for("listening");
        let addr: SocketAddr = field(&line, "addr").parse().unwrap();
        match field(&line, "tls") {
            "true" => tls = Some(addr),
            _ => plain = Some(addr),
        }
    }
    Relay {
        process,
        plain: plain.unwrap(),
        tls: tls.unwrap(),
        cert: cert_path,
        _dir: dir,
    }
}

/// The relay's `device connected` line for `domain`.
fn device_connected(relay: &mut Limmat, domain: &str) -> String {
    loop {
        let line = relay.wait_for("device connected");
        if line.contains(&format!("domain={domain} ")) {
            return line;
        }
    }
}

/// One cell: a tunnel server through `proxy_url` (flag or variable), registered with the
/// expected transport, its sockets only to the proxy, and a client served through the relay.
fn cell(
    relay: &mut Relay,
    proxy_url: &str,
    proxy_port: u16,
    env_name: Option<&str>,
    transport: &str,
    tls: bool,
    domain: &str,
) -> String {
    let origin = http_origin();
    let relay_arg = match tls {
        true => format!("tls:localhost:{}", relay.tls.port()),
        false => format!("localhost:{}", relay.plain.port()),
    };
    let origin = origin.to_string();
    let ca = relay.cert.to_str().unwrap().to_owned();
    let mut args = vec![
        "tunnel",
        "server",
        &origin,
        &relay_arg,
        domain,
        "--transport",
        transport,
        "--ca-file",
        &ca,
    ];
    let env: Vec<(&str, &str)> = match env_name {
        Some(name) => vec![(name, proxy_url)],
        None => {
            args.extend(["--relay-proxy", proxy_url]);
            Vec::new()
        }
    };
    let mut agent = Limmat::spawn_env(&env, &args);
    let from = agent.wait_for("relay connections go through a proxy");
    assert!(
        from.contains(env_name.unwrap_or("--relay-proxy")),
        "the log line names where the proxy came from: {from}"
    );
    assert!(!from.contains(PASSWORD), "the password is masked: {from}");
    let connected = device_connected(&mut relay.process, domain);
    assert_eq!(
        connected.contains("mux device connected"),
        transport == "mux",
        "{connected}"
    );
    assert_only_to(&agent, proxy_port, domain);
    let (scheme, port) = match tls {
        true => ("https", relay.tls.port()),
        false => ("http", relay.plain.port()),
    };
    let body = curl(&[
        "--cacert",
        &ca,
        &format!("{scheme}://localhost:{port}/{domain}/status"),
    ]);
    assert!(body.contains("/status"), "{domain}: {body}");
    format!(
        "| {transport:4} | {:5} | {:28} | served, sockets only to the proxy |",
        if tls { "TLS" } else { "plain" },
        env_name.map_or_else(|| "--relay-proxy".to_owned(), |n| format!("env {n}"))
    )
}

/// squid with Basic credentials: PTTH and mux × plain and TLS relay × flag and variable.
#[test]
fn squid_with_basic_credentials_carries_every_cell() {
    let mut relay = relay("basic");
    let squid = Squid::start(
        "basic",
        SquidKind::Basic {
            ports: vec![relay.plain.port(), relay.tls.port()],
        },
    );
    let url = squid.url(Some((USER, PASSWORD)));
    let mut table = Vec::new();
    let mut n = 0;
    for transport in ["ptth", "mux"] {
        for tls in [false, true] {
            let env = if tls { "https_proxy" } else { "http_proxy" };
            for env_name in [None, Some(env)] {
                n += 1;
                let row = cell(
                    &mut relay,
                    &url,
                    squid.port,
                    env_name,
                    transport,
                    tls,
                    &format!("sq{n}"),
                );
                table.push(format!("| squid Basic {row}"));
            }
        }
    }
    let log = squid.access_log();
    assert!(
        log.contains(&format!("CONNECT localhost:{}", relay.tls.port())),
        "{log}"
    );
    assert!(log.contains(USER), "{log}");
    eprintln!("{}", table.join("\n"));
}

/// microsocks with a user and password (socks5h: the proxy resolves `localhost`).
#[test]
fn socks5h_with_a_password_carries_every_cell() {
    let mut relay = relay("socks");
    let socks = Socks::start();
    let url = format!("socks5h://{USER}:{PASSWORD}@127.0.0.1:{}", socks.port);
    let mut table = Vec::new();
    let mut n = 0;
    for transport in ["ptth", "mux"] {
        for tls in [false, true] {
            for env_name in [None, Some("ALL_PROXY")] {
                n += 1;
                let row = cell(
                    &mut relay,
                    &url,
                    socks.port,
                    env_name,
                    transport,
                    tls,
                    &format!("so{n}"),
                );
                table.push(format!("| microsocks socks5h {row}"));
            }
        }
    }
    eprintln!("{}", table.join("\n"));
}

/// A wrong password: the 407 in words, and a long backoff (1–2 attempts in 12 s).
#[test]
fn a_wrong_proxy_password_says_407_and_backs_off() {
    let relay = relay("wrong");
    let squid = Squid::start(
        "wrong",
        SquidKind::Basic {
            ports: vec![relay.plain.port(), relay.tls.port()],
        },
    );
    let mut agent = Limmat::spawn_env(
        &[],
        &[
            "tunnel",
            "server",
            "127.0.0.1:9",
            &format!("localhost:{}", relay.plain.port()),
            "wrongpw",
            "--transport",
            "ptth",
            "--relay-proxy",
            &squid.url(Some((USER, "wrong"))),
        ],
    );
    let line = agent.wait_for("wants credentials");
    assert!(line.contains("Basic realm=\"limmat-test\""), "{line}");
    // Counting attempts over a span of time is what is measured here; nothing to wait on.
    std::thread::sleep(Duration::from_secs(12));
    let attempts = squid.access_log().matches("TCP_DENIED/407").count();
    eprintln!("attempts under a 407 in 12 s: {attempts}");
    assert!((1..=2).contains(&attempts), "{attempts} attempts in 12 s");
}

/// A relay port the proxy does not allow: the refusal names the relay and suggests 443.
#[test]
fn a_port_the_proxy_refuses_is_named() {
    let relay = relay("ports");
    let squid = Squid::start("ports", SquidKind::Basic { ports: vec![443] });
    let mut agent = Limmat::spawn_env(
        &[("http_proxy", &squid.url(Some((USER, PASSWORD))))],
        &[
            "tunnel",
            "server",
            "127.0.0.1:9",
            &format!("localhost:{}", relay.plain.port()),
            "ports",
            "--transport",
            "ptth",
        ],
    );
    let line = agent.wait_for("refused to connect to the relay");
    assert!(
        line.contains(&format!("localhost:{}", relay.plain.port())),
        "{line}"
    );
    assert!(line.contains("443"), "{line}");
}

/// `no_proxy` sends the agent straight to the relay; squid sees nothing.
#[test]
fn no_proxy_bypasses_the_proxy() {
    let mut relay = relay("noproxy");
    let squid = Squid::start(
        "noproxy",
        SquidKind::Basic {
            ports: vec![relay.plain.port()],
        },
    );
    let url = squid.url(Some((USER, PASSWORD)));
    let agent = Limmat::spawn_env(
        &[("http_proxy", &url), ("no_proxy", "example.com,localhost")],
        &[
            "tunnel",
            "server",
            &http_origin().to_string(),
            &format!("localhost:{}", relay.plain.port()),
            "bypass",
            "--transport",
            "ptth",
        ],
    );
    device_connected(&mut relay.process, "bypass");
    assert_only_to(&agent, relay.plain.port(), "no_proxy");
    assert!(
        !squid.access_log().contains("CONNECT"),
        "{}",
        squid.access_log()
    );
}

/// squid with ssl_bump in front of a TLS relay, its CA given with --ca-file: under `auto`
/// the mux upgrade does not pass, the agent says why and serves over PTTH.
#[test]
fn an_inspecting_proxy_falls_back_to_ptth() {
    let mut relay = relay("bump");
    let squid = Squid::start("bump", SquidKind::Bump);
    let ca = squid.dir.0.join("ca.pem");
    let mut agent = Limmat::spawn_env(
        &[],
        &[
            "tunnel",
            "server",
            &http_origin().to_string(),
            &format!("tls:localhost:{}", relay.tls.port()),
            "bumped",
            "--transport",
            "auto",
            "--relay-proxy",
            &squid.url(None),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    );
    let line = agent.wait_for("PTTH/1.0 for an hour");
    eprintln!("fallback: {line}");
    let connected = device_connected(&mut relay.process, "bumped");
    assert!(!connected.contains("mux device"), "{connected}");
    assert_only_to(&agent, squid.port, "ssl_bump");
    let body = curl(&[
        "--cacert",
        relay.cert.to_str().unwrap(),
        &format!("https://localhost:{}/bumped/status", relay.tls.port()),
    ]);
    assert!(body.contains("/status"), "{body}");
    assert!(
        squid.access_log().contains("POST"),
        "{}",
        squid.access_log()
    );
}

/// Without the proxy's CA, the unknown issuer is blamed on the inspecting proxy.
#[test]
fn an_inspecting_proxy_without_its_ca_is_named() {
    let relay = relay("bumpca");
    let squid = Squid::start("bumpca", SquidKind::Bump);
    let mut agent = Limmat::spawn_env(
        &[],
        &[
            "tunnel",
            "server",
            "127.0.0.1:9",
            &format!("tls:localhost:{}", relay.tls.port()),
            "bumpca",
            "--transport",
            "ptth",
            "--relay-proxy",
            &squid.url(None),
            "--ca-file",
            relay.cert.to_str().unwrap(),
        ],
    );
    agent.wait_for("TLS-inspecting proxy seems to answer");
}

/// `limmat gateway` with `relay.relay_proxy` in gateway.toml: the log line names the file's
/// key, and the gateway's relay connections go only to the SOCKS proxy.
#[test]
fn the_gateway_reads_relay_proxy_from_its_file() {
    let mut relay = relay("gateway");
    let socks = Socks::start();
    let dir = temp_dir("gateway");
    let config = dir.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\naddress = \"localhost:{}\"\ndomain = \"gw-proxied\"\n\
             relay_proxy = \"socks5h://{USER}:{PASSWORD}@127.0.0.1:{}\"\n",
            relay.plain.port(),
            socks.port
        ),
    )
    .unwrap();
    let state = dir.0.join("state");
    let mut gateway = Limmat::spawn_env(
        &[],
        &[
            "gateway",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let line = gateway.wait_for("relay connections go through a proxy");
    assert!(line.contains("gateway.toml relay.relay_proxy"), "{line}");
    assert!(!line.contains(PASSWORD), "{line}");
    device_connected(&mut relay.process, "gw-proxied");
    assert_only_to(&gateway, socks.port, "gateway");
}

/// Client mode and egress mode go through the proxy too: a tunnel client reaches a device and
/// an egress port reaches the relay's forward proxy, both only through squid.
#[test]
fn client_and_egress_modes_go_through_the_proxy() {
    const KEY: &str = "relay-proxy-egress-test-key";
    let dir = temp_dir("egress");
    let keys = dir.0.join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[device_key]]\ndomain = \"egress-dev\"\nsha256 = \"{}\"\n",
            limmat_relay::auth::sha256_hex(KEY)
        ),
    )
    .unwrap();
    let mut relay = Limmat::spawn(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--keys-file",
        keys.to_str().unwrap(),
        "--forward-proxy",
        "--egress-allow",
        "127.0.0.1/32",
        "--client-wait",
        "5s",
    ]);
    let relay_addr = relay.listening_addr();
    let squid = Squid::start(
        "egress",
        SquidKind::Basic {
            ports: vec![relay_addr.port()],
        },
    );
    let url = squid.url(Some((USER, PASSWORD)));
    let relay_arg = format!("localhost:{}", relay_addr.port());

    // A device in proxy mode (direct), reached by a tunnel client through squid.
    let origin = http_origin();
    let _device = Limmat::spawn_env(
        &[("LIMMAT_SECRET_KEY", KEY)],
        &[
            "tunnel",
            "proxy",
            &origin.to_string(),
            &relay_arg,
            "egress-dev",
            "--relay-proxy",
            "none",
        ],
    );
    device_connected(&mut relay, "egress-dev");
    let mut client = Limmat::spawn_env(
        &[("http_proxy", &url)],
        &["tunnel", "client", "127.0.0.1:0", &relay_arg, "egress-dev"],
    );
    client.wait_for("relay connections go through a proxy");
    let client_addr = client.listening_addr();
    let body = curl(&[&format!("http://{client_addr}/via-client")]);
    assert!(body.contains("/via-client"), "{body}");

    // Egress mode: the relay's forward proxy, through squid.
    let egress_proxy = format!("http://{relay_arg}");
    let mut egress = Limmat::spawn_env(
        &[],
        &[
            "tunnel",
            "egress",
            "127.0.0.1:0",
            "--egress-proxy",
            &egress_proxy,
            "--secret-key",
            KEY,
            "--relay-proxy",
            &url,
        ],
    );
    egress.wait_for("relay connections go through a proxy");
    let line = egress.wait_for("egress proxy listening");
    let egress_addr = field(&line, "addr").to_owned();
    let body = curl(&[
        "-x",
        &format!("http://{egress_addr}"),
        &format!("http://{origin}/via-egress"),
    ]);
    assert!(body.contains("/via-egress"), "{body}");
    // squid logs a tunnel when it closes: wait for both lines.
    let connect = format!("CONNECT localhost:{}", relay_addr.port());
    let deadline = Instant::now() + PATIENCE;
    while squid.access_log().matches(&connect).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "one tunnel for the client, one for the egress request:\n{}",
            squid.access_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
