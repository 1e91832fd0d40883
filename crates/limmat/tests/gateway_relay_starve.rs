//! A gateway cannot be starved through the relay (issue 13 item 2): `limmat gateway` reaches
//! the relay over limmat-mux/1 (`relay.transport = auto`), so clients served at once are not
//! capped by `relay.max_connections` (32); slow-body clients, ten times that many, hold
//! streams only until `api.limits` cuts them, and meanwhile real requests through the relay
//! keep succeeding. `bench/slowbody_relay.sh` is the same with 2,000 slowhttptest clients.

mod common;
mod gateway_common;

use common::Limmat;
use gateway_common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const DOMAIN: &str = "gw-starve";
/// Slow-body clients, ten times the old pool of 32.
const SLOW: usize = 320;
/// Real requests sent while they are held.
const REAL: usize = 100;

/// A request through the relay: its status (0 when none came).
fn get(relay: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(relay) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let head =
        format!("GET /{DOMAIN}{path} HTTP/1.1\r\nHost: {relay}\r\nConnection: close\r\n\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn slow_bodies_through_the_relay_do_not_starve_the_gateway() {
    let dir = TempDir::new("gw-relay-starve");
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0"]);
    let relay_addr = relay.listening_addr();
    let config = dir.file(
        "gateway.toml",
        "[api.limits]\nbody_timeout = \"3s\"\nbody_min_rate = 500\n",
    );
    let relay_arg = relay_addr.to_string();
    let mut gw = Proc::spawn(&[
        "gateway",
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
        "--relay",
        &relay_arg,
        "--domain",
        DOMAIN,
    ]);
    let local = gw.gateway_addr();
    gw.wait_for("mux connection up");

    // Slow-body clients: a complete head announcing 1,000 bytes, then one byte, then nothing.
    let head = format!(
        "POST /{DOMAIN}/beacon/subscriptions HTTP/1.1\r\nHost: {relay_addr}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = TcpStream::connect(relay_addr).expect("the relay accepts");
            s.write_all(head.as_bytes()).expect("the head is sent");
            s
        })
        .collect();
    // Every one of them is being served by the gateway at once: more than 32.
    let relayed = eventually("the slow clients relayed", PATIENCE, || {
        let index = get_json(&format!("http://{local}/"));
        let relayed = index["relay"]["relayed"].as_u64()?;
        (relayed >= SLOW as u64).then_some(relayed)
    });
    assert!(relayed >= SLOW as u64);

    // Real requests meanwhile.
    let ok = (0..REAL)
        .filter(|_| get(relay_addr, "/beacon/beacons") == 200)
        .count();
    let held_for = opened.elapsed();
    assert!(
        ok * 100 >= REAL * 99,
        "{ok}/{REAL} real requests succeeded during the attack"
    );

    // None of the slow clients outlives the body limits: each gets its 408 (or the close).
    for s in &mut slow {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    let all_cut = opened.elapsed();
    assert!(
        all_cut < Duration::from_secs(20),
        "slow clients held for {all_cut:?} (real requests done after {held_for:?})"
    );
    eventually("every relayed client released", PATIENCE, || {
        let index = get_json(&format!("http://{local}/"));
        (index["relay"]["relayed"] == 0).then_some(())
    });
    drop(gw);
    drop(relay);
}
