//! `--log-format`: JSON logs are one object per line with typed fields, the flag is global, and
//! a bad value is refused with an error naming it. The relay's access log: one line per client
//! request, off with `--access-log=false`.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};

/// Waits for the JSON line whose `message` is `message` and returns it parsed; every line on
/// the way must be a JSON object.
fn wait_for_json(relay: &mut Limmat, message: &str) -> Value {
    loop {
        let line = relay.wait_for("");
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        if value["message"] == message {
            return value;
        }
    }
}

fn listening(relay: &mut Limmat) -> SocketAddr {
    let line = wait_for_json(relay, "listening");
    line["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("an address")
}

/// A relay logging JSON, with one more flag, and its address.
fn json_relay(flag: &str) -> (Limmat, SocketAddr) {
    let args = ["relay", "--log-format=json", "--listen=127.0.0.1:0", flag];
    let mut relay = Limmat::spawn(&args);
    let addr = listening(&mut relay);
    (relay, addr)
}

/// A device waits for `dom`, a client asks `GET /dom/x`, the device answers `200` and both
/// close; returns the bytes of the request and of the answer.
fn one_request(relay: &mut Limmat, addr: SocketAddr) -> (usize, usize) {
    let mut device = TcpStream::connect(addr).unwrap();
    device
        .write_all(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n")
        .unwrap();
    wait_for_json(relay, "device connected");
    let mut client = TcpStream::connect(addr).unwrap();
    let request = b"GET /dom/x HTTP/1.1\r\n\r\n";
    client.write_all(request).unwrap();
    let mut got = vec![0; 57 + request.len()];
    device.read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{got:?}");
    assert!(got.ends_with(request), "{got:?}");
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    device.write_all(answer).unwrap();
    let mut back = vec![0; answer.len()];
    client.read_exact(&mut back).unwrap();
    device.shutdown(Shutdown::Both).unwrap();
    client.shutdown(Shutdown::Both).unwrap();
    (request.len(), answer.len())
}

/// Issue 12: one access-log line per client request, numbers as numbers, the device's status
/// when the relay can see it; a client the relay answers itself gets one too.
#[test]
fn access_log_is_one_json_object_per_request_with_typed_fields() {
    // 1 s, not 0: "device connected" is logged as the device is admitted, a moment before it
    // waits in the registry, and a client in that moment must not get the 504 at once.
    let (mut relay, addr) = json_relay("--client-wait=1s");
    let (up, down) = one_request(&mut relay, addr);

    let line = wait_for_json(&mut relay, "request");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["target"], "limmat::access", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["domain"], "dom", "{line}");
    assert_eq!(line["status"].as_u64(), Some(200), "{line}");
    for peer in ["client", "device"] {
        let peer: SocketAddr = line[peer].as_str().expect(peer).parse().expect(peer);
        assert!(peer.ip().is_loopback(), "{line}");
    }
    assert_eq!(line["leg"], "plain", "{line}");
    assert_eq!(line["up"].as_u64(), Some(up as u64), "{line}");
    assert_eq!(line["down"].as_u64(), Some(down as u64), "{line}");
    assert!(line["duration_ms"].is_u64(), "{line}");
    assert_eq!(line["end"], "closed", "{line}");
    assert!(line["timestamp"].is_string(), "{line}");

    // No device: the relay's own 504.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"HEAD /gone HTTP/1.1\r\n\r\n").unwrap();
    let line = wait_for_json(&mut relay, "request");
    assert_eq!(line["method"], "HEAD", "{line}");
    assert_eq!(line["domain"], "gone", "{line}");
    assert_eq!(line["status"].as_u64(), Some(504), "{line}");
    assert_eq!(line["end"], "no device", "{line}");
    assert!(line.get("device").is_none(), "{line}");

    // No domain at all: the relay's 504 is logged as well.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let line = wait_for_json(&mut relay, "request");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["domain"], "", "{line}");
    assert_eq!(line["status"].as_u64(), Some(504), "{line}");
}

#[test]
fn access_log_can_be_turned_off() {
    let (mut relay, addr) = json_relay("--access-log=false");
    one_request(&mut relay, addr);
    // The same facts at debug (the tests run with RUST_LOG=debug), and no access line.
    let line = wait_for_json(&mut relay, "pipe closed");
    assert_eq!(line["level"], "DEBUG", "{line}");
    assert!(
        relay.log.iter().all(|l| !l.contains("limmat::access")),
        "{:?}",
        relay.log
    );
}

/// The first stderr line of `limmat args` run with `LIMMAT_LOG_FORMAT=env` (or without it).
fn first_log_line(args: &[&str], env: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_limmat"));
    command
        .args(args)
        .env_remove("LIMMAT_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(env) = env {
        command.env("LIMMAT_LOG_FORMAT", env);
    }
    let mut child = command.spawn().expect("limmat starts");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn log_format_is_global_and_read_from_the_environment() {
    let listen = ["--listen", "127.0.0.1:0"];
    for (args, env) in [
        (vec!["--log-format", "json", "relay"], None),
        (vec!["relay", "--log-format", "json"], None),
        (vec!["relay"], Some("json")),
        // The flag wins over the environment.
        (vec!["relay", "--log-format", "json"], Some("text")),
    ] {
        let args = [&args[..], &listen[..]].concat();
        let line = first_log_line(&args, env);
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{args:?} {env:?}: not JSON ({e}): {line}"));
        assert_eq!(value["message"], "listening", "{line}");
    }
    for env in [None, Some("text")] {
        let line = first_log_line(&["relay", "--listen", "127.0.0.1:0"], env);
        assert!(line.contains("listening addr="), "{env:?}: {line}");
    }
}

#[test]
fn unknown_log_format_is_named() {
    for args in [
        &["relay", "--log-format", "yaml"][..],
        &[
            "--log-format",
            "yaml",
            "tunnel",
            "server",
            "127.0.0.1:80",
            "127.0.0.1:8080",
            "dom",
        ],
    ] {
        let (ok, stderr) = run(args);
        assert!(!ok);
        assert!(
            stderr.contains("yaml") && stderr.contains("--log-format"),
            "{stderr}"
        );
    }
}
