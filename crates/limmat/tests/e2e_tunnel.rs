//! End to end with the real binaries: `limmat tunnel server` behind `limmat relay` serves a
//! local HTTP server to curl in path and subdomain form, and `limmat tunnel proxy` + `client`
//! carry a TCP echo and an SSH-like interactive stream (the server speaks first).

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

/// A local service that greets first, like sshd, then answers each line in upper case.
fn ssh_like_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                writer.write_all(b"SSH-2.0-LimmatTest\r\n").unwrap();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if writer
                        .write_all(format!("{}\n", line.to_uppercase()).as_bytes())
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn tunnel_server_serves_curl_in_path_and_subdomain_form() {
    serves_curl(&[], &[]);
}

/// The same under every runtime layout of the relay and the tunnel (`--runtime`): with four
/// `per-core` runtimes a device and its clients are accepted on different runtimes nearly
/// every time, for PTTH connections and for mux streams alike.
#[test]
fn every_runtime_layout_serves_the_same() {
    let relay_per_core = ["--runtime", "per-core", "--worker-threads", "4"];
    let tunnel_multi = ["--runtime", "multi-thread", "--worker-threads", "2"];
    for transport in ["ptth", "mux"] {
        let tunnel = ["--transport", transport];
        serves_curl(&relay_per_core, &tunnel);
        serves_curl(
            &["--runtime", "current-thread"],
            &[&tunnel[..], &tunnel_multi].concat(),
        );
        serves_curl(&["--runtime", "multi-thread"], &tunnel);
    }
}

/// `limmat tunnel server` behind `limmat relay`, each with these extra flags, serves curl.
fn serves_curl(relay_flags: &[&str], tunnel_flags: &[&str]) {
    let origin = http_origin();
    let relay_args = [
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--hostname",
        "relay.example.com",
        "--client-wait",
        "1s",
    ];
    let mut relay = Limmat::spawn(&[&relay_args[..], relay_flags].concat());
    let relay_addr = relay.listening_addr();
    let origin = origin.to_string();
    let relay_at = relay_addr.to_string();
    let tunnel_args = [
        "tunnel",
        "server",
        &origin,
        &relay_at,
        "My-Device",
        "--min-listeners",
        "2",
    ];
    let _tunnel = Limmat::spawn(&[&tunnel_args[..], tunnel_flags].concat());
    relay.wait_for("device connected");
    let base = format!("http://{relay_addr}");
    // Path form: the device sees the prefix, as with Yaler.
    assert_eq!(
        curl(&[&format!("{base}/my-device/led?on=1")]),
        "GET /my-device/led?on=1 HTTP/1.1"
    );
    // Subdomain form: the device sees its own path.
    let host = format!("my-device.relay.example.com:{}", relay_addr.port());
    assert_eq!(
        curl(&[
            "--resolve",
            &format!("{host}:127.0.0.1"),
            &format!("http://{host}/status")
        ]),
        "GET /status HTTP/1.1"
    );
    // Many requests in a row: each pairing is replaced at once.
    for i in 0..20 {
        assert_eq!(
            curl(&[&format!("{base}/my-device/{i}")]),
            format!("GET /my-device/{i} HTTP/1.1")
        );
    }
    // An unknown domain gets the relay's 504 after the client wait.
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/nobody"),
    ]);
    assert_eq!(status, "504");
}

#[test]
fn proxy_and_client_carry_an_interactive_stream() {
    let service = ssh_like_service();
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0"]);
    let relay_addr = relay.listening_addr().to_string();
    let _proxy = Limmat::spawn(&[
        "tunnel",
        "proxy",
        &service.to_string(),
        &relay_addr,
        "ssh-box",
    ]);
    relay.wait_for("device connected");
    let mut client = Limmat::spawn(&["tunnel", "client", "127.0.0.1:0", &relay_addr, "ssh-box"]);
    let local = client.listening_addr();

    // Two sessions, one after the other, each interactive line by line.
    for session in 0..2 {
        let stream = TcpStream::connect(local).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut banner = String::new();
        reader.read_line(&mut banner).unwrap();
        assert_eq!(banner, "SSH-2.0-LimmatTest\r\n");
        for i in 0..20 {
            writer
                .write_all(format!("session {session} line {i}\n").as_bytes())
                .unwrap();
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            assert_eq!(answer, format!("SESSION {session} LINE {i}\n"));
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

#[test]
fn proxy_and_client_carry_a_bulk_echo() {
    bulk_echo(&[]);
}

/// The same over PTTH, whose plain TCP legs the tunnel's every `--data-path` may splice: the
/// bytes and the half-close after them arrive alike.
#[test]
fn every_data_path_carries_the_same_bulk_echo() {
    for path in ["auto", "splice", "copy"] {
        bulk_echo(&["--transport", "ptth", "--data-path", path]);
    }
}

/// A plain echo service: 1 MiB through client mode, the relay and proxy mode, and back; the
/// tunnels get `flags` (client mode those but `--transport`).
fn bulk_echo(flags: &[&str]) {
    let client_flags: Vec<&str> = match flags {
        ["--transport", _, rest @ ..] => rest.to_vec(),
        all => all.to_vec(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0"]);
    let relay_addr = relay.listening_addr().to_string();
    let echo = echo.to_string();
    let proxy = ["tunnel", "proxy", &echo, &relay_addr, "echo"];
    let _proxy = Limmat::spawn(&[&proxy[..], flags].concat());
    relay.wait_for("device connected");
    let client = ["tunnel", "client", "127.0.0.1:0", &relay_addr, "echo"];
    let mut client = Limmat::spawn(&[&client[..], &client_flags].concat());
    let local = client.listening_addr();

    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let stream = TcpStream::connect(local).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    let mut reader = stream;
    reader.read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert!(
        echoed == payload,
        "echo differs ({} of {} bytes)",
        echoed.len(),
        payload.len()
    );
}
