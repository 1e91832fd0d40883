//! `limmat tunnel --config`: several services in one process, and SIGHUP reloads that start
//! and stop services while the others keep serving; bad files are refused with the file, the
//! service and the key.

mod common;

use common::*;
use std::path::PathBuf;

/// A temporary configuration file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "limmat-services-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn write(&self, text: &str) {
        // Write then rename, so that the reload never reads half a file.
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn service(mode: &str, local: &str, domain: &str) -> String {
    format!("\n[[service]]\nmode = \"{mode}\"\nlocal = \"{local}\"\ndomain = \"{domain}\"\n")
}

#[test]
fn services_start_and_reload_without_touching_the_others() {
    let (one, two) = (http_origin(), http_origin());
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0", "--client-wait", "2s"]);
    let relay_addr = relay.listening_addr();
    let top = format!("relay = \"{relay_addr}\"\n");
    let first = service("server", &one.to_string(), "one") + "transport = \"mux\"\n";
    let file = TempFile::new("reload", &format!("{top}{first}"));
    let mut tunnel = Limmat::spawn(&["tunnel", "--config", file.path(), "--status", "127.0.0.1:0"]);
    let status = field(&tunnel.wait_for("status listening"), "addr").to_owned();
    tunnel.wait_for("mux connection up");
    let base = format!("http://{relay_addr}");
    assert_eq!(curl(&[&format!("{base}/one/a")]), "GET /one/a HTTP/1.1");

    // Add a PTTH service; the first one stays up and keeps its connection.
    let second = service("server", &two.to_string(), "two") + "transport = \"ptth\"\n";
    file.write(&format!("{top}{first}{second}"));
    tunnel.signal("HUP");
    let line = tunnel.wait_for("tunnel services reloaded");
    assert!(
        line.contains("started=1") && line.contains("stopped=0") && line.contains("unchanged=1"),
        "{line}"
    );
    relay.wait_for("device connected");
    assert_eq!(curl(&[&format!("{base}/two/b")]), "GET /two/b HTTP/1.1");
    assert_eq!(curl(&[&format!("{base}/one/c")]), "GET /one/c HTTP/1.1");
    let page: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://{status}/status")])).unwrap();
    let domains: Vec<&str> = page["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["domain"].as_str())
        .collect();
    assert_eq!(domains, ["one", "two"], "{page}");
    assert!(
        !tunnel
            .log
            .iter()
            .any(|l| l.contains("mux connection closed")),
        "the first service was touched:\n{}",
        tunnel.log.join("\n")
    );

    // A bad file changes nothing.
    file.write(&format!("{top}{first}[[service]]\nmode = \"server\"\n"));
    tunnel.signal("HUP");
    let line = tunnel.wait_for("not reloaded");
    assert!(line.contains("service 2: missing key `local`"), "{line}");
    assert_eq!(curl(&[&format!("{base}/two/d")]), "GET /two/d HTTP/1.1");

    // Remove the first service: it stops, the second keeps serving.
    file.write(&format!("{top}{second}"));
    tunnel.signal("HUP");
    tunnel.wait_for("service stopped");
    let line = tunnel.wait_for("tunnel services reloaded");
    assert!(
        line.contains("started=0") && line.contains("stopped=1"),
        "{line}"
    );
    assert_eq!(curl(&[&format!("{base}/two/e")]), "GET /two/e HTTP/1.1");
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/one/f"),
    ]);
    assert_eq!(status, "504");
    let page = curl(&[&format!("http://{status}/status")]);
    assert!(!page.contains("\"one\""), "{page}");
}

#[test]
fn bad_files_name_the_file_the_service_and_the_key() {
    for (name, text, expected) in [
        (
            "domain",
            "relay = \"127.0.0.1:1\"\n[[service]]\nmode = \"server\"\nlocal = \"127.0.0.1:1\"\n",
            "service 1: missing key `domain`",
        ),
        (
            "mode",
            "relay = \"127.0.0.1:1\"\n[[service]]\nmode = \"tunnel\"\nlocal = \"127.0.0.1:1\"\ndomain = \"d\"\n",
            "service 1: `mode` = \"tunnel\": not a mode",
        ),
        (
            "key",
            "relay = \"127.0.0.1:1\"\n[[service]]\nmode = \"server\"\nlocal = \"127.0.0.1:1\"\ndomain = \"d\"\nmax_socket = 3\n",
            "service 1: unknown key `max_socket` (did you mean `max_sockets`?)",
        ),
    ] {
        let file = TempFile::new(name, text);
        let (ok, stderr) = run(&["tunnel", "--config", file.path()]);
        assert!(!ok, "{name}: accepted");
        assert!(
            stderr.contains(file.path()) && stderr.contains(expected),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn flags_beside_the_file_are_refused() {
    let file = TempFile::new("flags", "relay = \"127.0.0.1:1\"\n[[service]]\n");
    let (ok, stderr) = run(&["tunnel", "--config", file.path(), "--transport", "mux"]);
    assert!(
        !ok && stderr.contains("only --status, --runtime and --worker-threads go beside it"),
        "{stderr}"
    );
}
