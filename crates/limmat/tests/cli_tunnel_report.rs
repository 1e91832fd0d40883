//! What `limmat tunnel` tells its user, read from the real process's log: the online line with
//! the public URL, one warning per failure streak (not one per slot per second), the recovery
//! line, a relay that accepts and stays silent, and a local service that is not there.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener};

/// A port of 127.0.0.1 that nothing listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A relay, an origin, and `limmat tunnel server <origin> <relay> Dev EXTRA…`.
fn relay_and_tunnel(extra: &[&str]) -> (Limmat, SocketAddr, Limmat, SocketAddr) {
    let origin = http_origin();
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0"]);
    let relay_addr = relay.listening_addr();
    let (origin_arg, relay_arg) = (origin.to_string(), relay_addr.to_string());
    let mut args = vec!["tunnel", "server", &origin_arg, &relay_arg, "Dev"];
    args.extend(extra);
    (relay, relay_addr, Limmat::spawn(&args), origin)
}

#[test]
fn a_good_start_says_online_with_the_url() {
    let (_relay, relay_addr, mut tunnel, _) = relay_and_tunnel(&[]);
    let line = tunnel.wait_for("online:");
    let url = format!("http://{relay_addr}/dev/");
    assert!(
        line.contains(&format!("online: {url} (mux, 1 connection)")),
        "{line}"
    );
    assert_eq!(curl(&[&format!("{url}x")]), "GET /dev/x HTTP/1.1");
    assert!(
        !tunnel.log.iter().any(|l| l.contains("WARN")),
        "{}",
        tunnel.log.join("\n")
    );
}

#[test]
fn a_relay_that_is_down_warns_once_then_recovery_is_said() {
    let origin = http_origin();
    let port = free_port();
    let relay_addr = format!("127.0.0.1:{port}");
    let mut tunnel = Limmat::spawn(&[
        "tunnel",
        "server",
        &origin.to_string(),
        &relay_addr,
        "dev",
        "--transport",
        "ptth",
        "--min-listeners",
        "4",
    ]);
    // Four slots fail every second; wait for a few rounds of them.
    for _ in 0..8 {
        tunnel.wait_for("attempt failed");
    }
    let _relay = Limmat::spawn(&["relay", "--listen", &relay_addr]);
    let recovered = tunnel.wait_for("recovered after");
    tunnel.wait_for("online:");
    let warnings = tunnel
        .log
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("attempt failed"))
        .count();
    assert_eq!(warnings, 1, "{}", tunnel.log.join("\n"));
    assert!(recovered.contains("failures"), "{recovered}");
}

#[test]
fn a_silent_relay_and_a_missing_local_service_are_reported() {
    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let local = format!("127.0.0.1:{}", free_port());
    let mut tunnel = Limmat::spawn(&[
        "tunnel",
        "server",
        &local,
        &silent_addr.to_string(),
        "dev",
        "--transport",
        "mux",
    ]);
    let line = tunnel.wait_for("nothing accepts connections at the local service");
    assert!(line.contains("WARN") && line.contains(&local), "{line}");
    let line = tunnel.wait_for("waiting for the relay to answer");
    assert!(line.contains("WARN"), "{line}");
    drop(silent);
}

/// The `status listening addr=…` address of a tunnel started with `--status 127.0.0.1:0`.
fn status_addr(tunnel: &mut Limmat) -> String {
    field(&tunnel.wait_for("status listening"), "addr").to_owned()
}

#[test]
fn the_status_port_serves_json_and_metrics() {
    let (relay, relay_addr, mut tunnel, origin) = relay_and_tunnel(&["--status", "127.0.0.1:0"]);
    let status = status_addr(&mut tunnel);
    tunnel.wait_for("online:");
    let page: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://{status}/status")])).unwrap();
    assert_eq!(page["state"], "online", "{page}");
    let service = &page["services"][0];
    assert_eq!(service["mode"], "server", "{page}");
    assert_eq!(service["domain"], "dev", "{page}");
    assert_eq!(service["relay"], relay_addr.to_string(), "{page}");
    assert_eq!(service["transport"], "auto", "{page}");
    assert_eq!(service["state"], "online", "{page}");
    assert_eq!(service["connections"], 1, "{page}");
    assert_eq!(service["mux"], 1, "{page}");
    assert_eq!(service["failures"], 0, "{page}");
    assert!(service["last_error"].is_null(), "{page}");
    let metrics = curl(&[&format!("http://{status}/metrics")]);
    let labels = format!("{{mode=\"server\",domain=\"dev\",local=\"{origin}\"}}");
    assert!(
        metrics.contains(&format!("limmat_agent_online{labels} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE limmat_agent_failures_total counter"),
        "{metrics}"
    );
    // A relay that goes away: the page says failing, with the reason.
    drop(relay);
    tunnel.wait_for("attempt failed");
    let page: serde_json::Value =
        serde_json::from_str(&curl(&[&format!("http://{status}/status")])).unwrap();
    assert_eq!(page["services"][0]["state"], "failing", "{page}");
    assert!(page["services"][0]["last_error"].is_string(), "{page}");
}
