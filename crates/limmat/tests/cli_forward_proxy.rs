//! The forward proxy through the real binary and real clients (spec 6): `curl -x` with Basic
//! credentials in the proxy URL, `curl --proxy-header` with a Bearer key, `curl -p` through a
//! CONNECT tunnel, refusals curl sees, the open-mode refusal, and `limmat tunnel egress`
//! giving a program without credentials a local proxy port.

mod common;

use common::*;
use limmat_relay::auth::sha256_hex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

const KEY: &str = "cli-forward-proxy-test-key";

struct KeysFile(PathBuf);

impl KeysFile {
    fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("limmat-proxy-keys-{}.toml", std::process::id()));
        let entry = format!(
            "[[device_key]]\ndomain = \"dev\"\nsha256 = \"{}\"\n",
            sha256_hex(KEY)
        );
        std::fs::write(&path, entry).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for KeysFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A relay with the proxy on and 127.0.0.1 opened by an explicit rule.
fn proxy_relay(keys: &KeysFile) -> (Limmat, SocketAddr) {
    let mut relay = Limmat::spawn(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--keys-file",
        keys.path(),
        "--forward-proxy",
        "--egress-allow",
        "127.0.0.1/32",
    ]);
    let addr = relay.listening_addr();
    (relay, addr)
}

/// curl's exit status and the HTTP status it saw (`-w %{http_code}`), for refusals.
fn curl_status(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs (scripts/test installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn curl_through_the_forward_proxy() {
    let keys = KeysFile::new();
    let origin = http_origin();
    let (mut relay, addr) = proxy_relay(&keys);
    let proxy = format!("http://{addr}");
    let url = format!("http://{origin}/hello?x=1");
    // Absolute form with a Bearer key in a header; the origin sees origin form.
    let header = format!("Proxy-Authorization: Bearer {KEY}");
    let body = curl(&["-x", &proxy, "--proxy-header", &header, &url]);
    assert_eq!(body, "GET /hello?x=1 HTTP/1.1");
    relay.wait_for("proxy connection closed");
    // Basic credentials in the proxy URL: the domain as user, the key as password.
    let basic = format!("http://dev:{KEY}@{addr}");
    assert_eq!(curl(&["-x", &basic, &url]), "GET /hello?x=1 HTTP/1.1");
    // Through a CONNECT tunnel (`-p`): the request inside is the client's own.
    let body = curl(&["-p", "-x", &proxy, "--proxy-header", &header, &url]);
    assert_eq!(body, "GET /hello?x=1 HTTP/1.1");
    let line = relay.wait_for("kind=\"connect\"");
    assert!(
        line.contains("domain=dev") && line.contains("verdict=\"allowed\""),
        "{line}"
    );
    // Refusals as curl sees them: no key, a wrong key, the relay itself, the metadata address.
    assert_eq!(curl_status(&["-x", &proxy, &url]), (true, "407".into()));
    let wrong = "Proxy-Authorization: Bearer wrong";
    assert_eq!(
        curl_status(&["-x", &proxy, "--proxy-header", wrong, &url]),
        (true, "407".into())
    );
    for denied in [
        format!("http://{addr}/dev"),
        "http://169.254.169.254/latest/".into(),
        format!("http://localhost:{}/", addr.port()),
    ] {
        let got = curl_status(&["-x", &proxy, "--proxy-header", &header, &denied]);
        assert_eq!(got, (true, "403".into()), "{denied}");
    }
    let got = curl_status(&["-x", &proxy, "--proxy-header", &header, "ftp://127.0.0.1/x"]);
    assert_eq!(got.1, "400");
}

#[test]
fn the_proxy_is_refused_in_open_mode() {
    let (ok, stderr) = run(&["relay", "--listen", "127.0.0.1:0", "--forward-proxy"]);
    assert!(!ok);
    assert!(
        stderr.contains("forward_proxy needs device authentication"),
        "{stderr}"
    );
    // The same from a variable, and in --check-config.
    let out = Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args(["relay", "--check-config"])
        .env("LIMMAT_FORWARD_PROXY", "true")
        .env("LIMMAT_EGRESS_ALLOW", "10.0.0.0/8:443,8883")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("forward_proxy needs"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["relay", "--check-config", "--egress-deny", "not a rule"]);
    assert!(!ok && stderr.contains("not an egress rule"), "{stderr}");
}

#[test]
fn tunnel_egress_gives_programs_a_local_proxy_port() {
    let keys = KeysFile::new();
    let origin = http_origin();
    let (_relay, addr) = proxy_relay(&keys);
    let mut egress = Limmat::spawn(&[
        "tunnel",
        "egress",
        "127.0.0.1:0",
        "--egress-proxy",
        &format!("http://{addr}"),
        "--domain",
        "dev",
        "--secret-key",
        KEY,
    ]);
    let line = egress.wait_for("egress proxy listening");
    let local = field(&line, "addr");
    let proxy = format!("http://{local}");
    let url = format!("http://{origin}/via-egress");
    assert_eq!(curl(&["-x", &proxy, &url]), "GET /via-egress HTTP/1.1");
    assert_eq!(
        curl(&["-p", "-x", &proxy, &url]),
        "GET /via-egress HTTP/1.1"
    );
    // The relay's policy still applies.
    assert_eq!(
        curl_status(&["-x", &proxy, "http://10.0.0.1/"]),
        (true, "403".into())
    );
}
