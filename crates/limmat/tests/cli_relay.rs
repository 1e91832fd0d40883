//! `limmat relay` as a process: bad settings are refused with an error naming them, and
//! SIGTERM stops it gracefully.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;

#[test]
fn hold_time_of_75s_is_refused() {
    // Checklist 20.
    for bad in ["75s", "0s", "2m"] {
        let (ok, stderr) = run(&["relay", "--listen", "127.0.0.1:0", "--hold-time", bad]);
        assert!(!ok);
        assert!(stderr.contains("hold_time"), "{stderr}");
    }
}

#[test]
fn bad_values_are_named() {
    let (ok, stderr) = run(&["relay", "--listen", "nonsense"]);
    assert!(!ok);
    assert!(
        stderr.contains("nonsense") && stderr.contains("--listen"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["relay", "--max-head", "lots"]);
    assert!(!ok);
    assert!(
        stderr.contains("lots") && stderr.contains("--max-head"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["relay", "--client-wait", "soon"]);
    assert!(!ok);
    assert!(stderr.contains("soon"), "{stderr}");
    let (ok, stderr) = run(&["relay", "--root-uri", "example.com"]);
    assert!(!ok);
    assert!(stderr.contains("root_uri"), "{stderr}");
}

#[test]
fn busy_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, stderr) = run(&["relay", "--listen", &addr]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn serves_and_stops_gracefully_on_sigterm() {
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0", "--client-wait", "0"]);
    let addr = relay.listening_addr();
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET /nobody HTTP/1.1\r\n\r\n").unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).unwrap();
    assert_eq!(response, b"HTTP/1.1 504 \r\n\r\n");
    relay.signal("TERM");
    let (status, log) = relay.wait_exit();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped"), "{log}");
    // A clean stop warns about nothing.
    assert!(!log.contains(" WARN "), "{log}");
}

/// Issue 12: a second SIGINT during the drain exits at once (status 130), without waiting for
/// the open pipe or the 30 s drain timeout.
#[test]
fn a_second_ctrl_c_during_the_drain_exits_at_once() {
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0"]);
    let addr = relay.listening_addr();
    let mut device = TcpStream::connect(addr).unwrap();
    device
        .write_all(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n")
        .unwrap();
    relay.wait_for("device connected");
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET /dom HTTP/1.1\r\n\r\n").unwrap();
    let mut upgrade = [0; 57];
    device.read_exact(&mut upgrade).unwrap();
    relay.signal("INT");
    relay.wait_for("draining open=");
    let second = std::time::Instant::now();
    relay.signal("INT");
    let (status, log) = relay.wait_exit();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        second.elapsed() < std::time::Duration::from_secs(5),
        "{log}"
    );
    assert!(log.contains("second stop request"), "{log}");
    drop((device, client));
}

#[test]
fn tunnel_arguments_are_checked() {
    let (ok, stderr) = run(&["tunnel", "server", "127.0.0.1:0", "127.0.0.1:8080", "dom"]);
    assert!(!ok);
    assert!(stderr.contains("port 0"), "{stderr}");
    let (ok, stderr) = run(&[
        "tunnel",
        "server",
        "127.0.0.1:80",
        "127.0.0.1:8080",
        "relay_domain",
    ]);
    assert!(!ok);
    assert!(stderr.contains("reserved"), "{stderr}");
    let (ok, stderr) = run(&["tunnel", "server", "127.0.0.1:80", "127.0.0.1:8080", "a/b"]);
    assert!(!ok);
    assert!(stderr.contains("'/'"), "{stderr}");
    let (ok, stderr) = run(&["tunnel", "proxy", "localhost", "127.0.0.1:8080", "dom"]);
    assert!(!ok);
    assert!(stderr.contains("port is required"), "{stderr}");
    let (ok, stderr) = run(&["tunnel", "bogus", "127.0.0.1:80", "127.0.0.1:8080", "dom"]);
    assert!(!ok);
    assert!(stderr.contains("bogus"), "{stderr}");
    let (ok, stderr) = run(&[
        "tunnel",
        "server",
        "127.0.0.1:80",
        "127.0.0.1:8080",
        "dom",
        "--min-listeners",
        "0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("at least 1"), "{stderr}");
}

#[test]
fn security_settings_are_checked_at_start() {
    let (ok, stderr) = run(&["relay", "--listen", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(stderr.contains("--auth open"), "{stderr}");
    let (ok, stderr) = run(&["relay", "--keys-file", "/nonexistent/keys.toml"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/keys.toml"), "{stderr}");
    let (ok, stderr) = run(&["relay", "--listen", "tls:127.0.0.1:0"]);
    assert!(!ok);
    assert!(stderr.contains("--cert"), "{stderr}");
    let (ok, stderr) = run(&["relay", "--cert", "a.pem"]);
    assert!(!ok);
    assert!(stderr.contains("--key"), "{stderr}");
    let (ok, stderr) = run(&["relay", "--auth", "maybe"]);
    assert!(!ok);
    assert!(stderr.contains("maybe"), "{stderr}");
    let (ok, stderr) = run(&["relay", "--conn-rate-per-ip", "fast"]);
    assert!(!ok);
    assert!(stderr.contains("fast"), "{stderr}");
    let (ok, stderr) = run(&["relay", "--limit-exempt", "10.0.0.0/99"]);
    assert!(!ok);
    assert!(stderr.contains("10.0.0.0/99"), "{stderr}");
}

#[test]
fn a_closed_stderr_neither_stops_serving_nor_blocks_sigterm() {
    // The port is chosen here because the relay's log cannot be read: its stderr is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args(["relay", "--listen", &addr, "--client-wait", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // every log line now fails with EPIPE
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut client = loop {
        match TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("relay not listening: {e}"),
        }
    };
    // Serving logs a line; the connection's task must survive it.
    client.write_all(b"GET /nobody HTTP/1.1\r\n\r\n").unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).unwrap();
    assert_eq!(response, b"HTTP/1.1 504 \r\n\r\n");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not stop the relay"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
