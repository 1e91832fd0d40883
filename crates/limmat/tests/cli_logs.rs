//! `--log-format`: JSON logs are one object per line with typed fields, the flag is global, and
//! a bad value is refused with an error naming it.

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

#[test]
fn pipe_closed_is_one_json_object_with_typed_fields() {
    let mut relay = Limmat::spawn(&["relay", "--log-format", "json", "--listen", "127.0.0.1:0"]);
    let addr = listening(&mut relay);

    let mut device = TcpStream::connect(addr).unwrap();
    device
        .write_all(b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\n\r\n")
        .unwrap();
    wait_for_json(&mut relay, "device connected");
    let mut client = TcpStream::connect(addr).unwrap();
    let request = b"GET /dom HTTP/1.1\r\n\r\n";
    client.write_all(request).unwrap();
    let mut got = vec![0; 57 + request.len()];
    device.read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{got:?}");
    assert!(got.ends_with(request), "{got:?}");
    device.shutdown(Shutdown::Both).unwrap();
    client.shutdown(Shutdown::Both).unwrap();
    drop((device, client));

    let closed = wait_for_json(&mut relay, "pipe closed");
    assert_eq!(closed["level"], "INFO", "{closed}");
    assert_eq!(closed["domain"], "dom", "{closed}");
    for peer in ["client", "device"] {
        let peer: SocketAddr = closed[peer].as_str().expect(peer).parse().expect(peer);
        assert!(peer.ip().is_loopback(), "{closed}");
    }
    assert_eq!(closed["leg"], "plain", "{closed}");
    assert_eq!(
        closed["up"].as_u64(),
        Some(request.len() as u64),
        "{closed}"
    );
    assert_eq!(closed["down"].as_u64(), Some(0), "{closed}");
    assert!(closed["duration_ms"].is_u64(), "{closed}");
    assert!(closed["end"].is_string(), "{closed}");
    assert!(closed["timestamp"].is_string(), "{closed}");
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
