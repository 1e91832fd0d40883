//! `limmat gateway` settings through the real binary: bad settings stop start-up with a
//! non-zero exit and a message that names the problem, `--check-config` accepts the example
//! file, and `LIMMAT_GATEWAY_LISTEN` works while a flag overrides it.

mod common;
mod gateway_common;

use gateway_common::*;
use std::process::{Command, Stdio};

/// Runs `limmat gateway …` to completion: (success, stdout, stderr).
fn gateway(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_limmat"))
        .arg("gateway")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("limmat runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_name_the_problem() {
    let dir = TempDir::new("cli-gateway-bad");
    let unknown = dir.file("unknown.toml", "[webhooks]\nretry_bse_s = 1\n");
    let range = dir.file("range.toml", "[webhooks]\ntimeout_s = 0.5\n");
    let sim = dir.file("sim.toml", "[sim]\ntime_scale = 0\n");
    let reserved = dir.file(
        "reserved.toml",
        "[relay]\naddress = \"127.0.0.1:1\"\ndomain = \"beacon\"\n",
    );
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    for (args, expected) in [
        (vec!["--config", &unknown], "retry_bse_s"),
        (vec!["--config", &range], "webhooks.timeout_s"),
        (vec!["--config", &sim], "sim.time_scale"),
        (vec!["--config", &reserved], "relay.domain"),
        (
            vec!["--config", "/nonexistent/gateway.toml"],
            "/nonexistent/gateway.toml",
        ),
        (vec!["--relay", "127.0.0.1:1"], "--relay needs --domain"),
        (vec!["--domain", "gw-1"], "--domain needs --relay"),
        (
            vec!["--relay", "127.0.0.1:1", "--domain", "gap"],
            "relay.domain = gap",
        ),
        (
            vec!["--relay", "127.0.0.1:1", "--domain", "GATT"],
            "relay.domain",
        ),
        (vec!["--listen", "nowhere"], "nowhere"),
        (vec!["--backend", "ble"], "unknown backend `ble`"),
    ] {
        let mut all = args.clone();
        all.extend(["--state-dir", state, "--check-config"]);
        let (ok, _, stderr) = gateway(&all, &[]);
        assert!(!ok, "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        // The same without --check-config: start-up stops before anything listens.
        all.pop();
        let (ok, _, stderr) = gateway(&all, &[]);
        assert!(!ok && stderr.contains(expected), "{args:?}: {stderr}");
    }
    // A build without the feature names it.
    if !cfg!(feature = "bluez") {
        let (ok, _, stderr) = gateway(
            &[
                "--backend",
                "bluez",
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                state,
            ],
            &[],
        );
        assert!(!ok, "bluez accepted");
        assert!(
            stderr.contains("backend.kind = bluez") && stderr.contains("--features bluez"),
            "{stderr}"
        );
    }
    assert!(
        !dir.path().join("state").exists(),
        "a refused start created the state directory"
    );
}

#[test]
fn check_config_accepts_the_example_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gateway.toml");
    let (ok, stdout, stderr) = gateway(&["--config", example, "--check-config"], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "configuration OK");
}

#[test]
fn the_listen_variable_works_and_a_flag_overrides_it() {
    let dir = TempDir::new("cli-gateway-env");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    // A free port for the variable: bind, learn it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let from_env = format!("127.0.0.1:{port}");
    let mut gw = Proc::spawn_env(
        &["gateway", "--state-dir", state],
        &[("LIMMAT_GATEWAY_LISTEN", &from_env)],
    );
    let addr = gw.gateway_addr();
    assert_eq!(addr.to_string(), from_env);
    let index = get_json(&format!("http://{addr}/"));
    assert!(index.is_object(), "{index}");
    drop(gw);
    // The flag wins over the variable (which now names a port that would also work).
    let mut gw = Proc::spawn_env(
        &["gateway", "--state-dir", state, "--listen", "127.0.0.1:0"],
        &[("LIMMAT_GATEWAY_LISTEN", &from_env)],
    );
    let addr = gw.gateway_addr();
    assert_ne!(addr.port(), port);
    assert!(get_json(&format!("http://{addr}/")).is_object());
    // A bad variable is named like a bad flag.
    let (ok, _, stderr) = gateway(
        &["--state-dir", state, "--check-config"],
        &[("LIMMAT_GATEWAY_LISTEN", "nowhere")],
    );
    assert!(!ok && stderr.contains("nowhere"), "{stderr}");
}

#[test]
fn sigterm_stops_the_gateway_with_open_streams() {
    let dir = TempDir::new("cli-gateway-term");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let mut gw = Proc::spawn(&["gateway", "--listen", "127.0.0.1:0", "--state-dir", state]);
    let addr = gw.gateway_addr();
    // An open event stream and an open scan stream must not hold the stop up.
    let events = Sse::open(&format!("http://{addr}/beacon/events"));
    let scan = Sse::open(&format!("http://{addr}/gap/nodes?event=1"));
    scan.next(PATIENCE).expect("an advertisement");
    gw.signal("TERM");
    let started = std::time::Instant::now();
    let (code, log) = gw.wait_exit();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{log}"
    );
    drop((events, scan));
    // The lock went with it: the state directory opens again.
    let mut gw = Proc::spawn(&["gateway", "--listen", "127.0.0.1:0", "--state-dir", state]);
    gw.gateway_addr();
}
