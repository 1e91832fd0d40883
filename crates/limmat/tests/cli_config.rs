//! `limmat relay --config`, `LIMMAT_…` variables and `--check-config`: the sources merge as
//! flags > variables > file > defaults, and a bad key, value or variable is refused by name.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A configuration file unique to this test process, removed when the test is done with it.
struct ConfigFile(PathBuf);

impl std::ops::Deref for ConfigFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes a configuration file unique to this test process.
fn config(name: &str, text: &str) -> ConfigFile {
    let path = std::env::temp_dir().join(format!("limmat-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    ConfigFile(path)
}

/// Runs limmat with extra environment variables; returns (success, stdout, stderr).
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_limmat"))
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

/// Sends a request for a domain no device holds and returns the response, which must come
/// long before the default client wait of 5 s.
fn ask_nobody(relay: &mut Limmat) -> String {
    let addr = relay.listening_addr();
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    client.write_all(b"GET /nobody HTTP/1.1\r\n\r\n").unwrap();
    let mut response = [0; 64];
    let n = client.read(&mut response).expect("an answer within 3 s");
    String::from_utf8_lossy(&response[..n]).into_owned()
}

#[test]
fn the_file_sets_listen_and_client_wait() {
    let file = config(
        "file-settings",
        "listen = [\"127.0.0.1:0\"]\nclient_wait = \"0s\"\n",
    );
    let mut relay = Limmat::spawn(&["relay", "--config", file.to_str().unwrap()]);
    assert!(ask_nobody(&mut relay).starts_with("HTTP/1.1 504"));
}

#[test]
fn a_flag_overrides_the_file() {
    let file = config(
        "flag-over-file",
        "listen = \"127.0.0.1:0\"\nclient_wait = \"1h\"\n",
    );
    let mut relay = Limmat::spawn(&[
        "relay",
        "--config",
        file.to_str().unwrap(),
        "--client-wait",
        "0",
    ]);
    assert!(ask_nobody(&mut relay).starts_with("HTTP/1.1 504"));
}

#[test]
fn variables_override_the_file_and_flags_override_variables() {
    // max_head below 256 is refused, naming the value in force.
    let small = config("small-head", "max_head = 100\n");
    let big = config("big-head", "max_head = \"1KiB\"\n");
    let (small, big) = (small.to_str().unwrap(), big.to_str().unwrap());
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["relay", "--check-config"];
        all.extend_from_slice(args);
        run_env(&all, env)
    };
    let (ok, _, stderr) = check(&["--config", small], &[]);
    assert!(!ok && stderr.contains("max_head is 100 bytes"), "{stderr}");
    let (ok, _, stderr) = check(&["--config", small], &[("LIMMAT_MAX_HEAD", "1KiB")]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = check(&["--config", big], &[("LIMMAT_MAX_HEAD", "200")]);
    assert!(!ok && stderr.contains("max_head is 200 bytes"), "{stderr}");
    let (ok, _, stderr) = check(&["--max-head", "2KiB"], &[("LIMMAT_MAX_HEAD", "200")]);
    assert!(ok, "{stderr}");
    // LIMMAT_CONFIG names the file when --config does not.
    let (ok, _, stderr) = check(&[], &[("LIMMAT_CONFIG", small)]);
    assert!(!ok && stderr.contains("max_head is 100 bytes"), "{stderr}");
}

#[test]
fn an_unknown_key_is_named() {
    let file = config("unknown-key", "hold_tme = \"30s\"\n");
    let (ok, stderr) = run(&["relay", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(file.to_str().unwrap())
            && stderr.contains("unknown key \"hold_tme\"")
            && stderr.contains("did you mean hold_time?"),
        "{stderr}"
    );
}

#[test]
fn a_bad_value_names_the_key_and_the_value() {
    let file = config("bad-hold-time", "hold_time = \"90s\"\n");
    let (ok, stderr) = run(&["relay", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("hold_time = \"90s\"") && stderr.contains("from 1s to 74s"),
        "{stderr}"
    );
    let file = config("bad-rate", "conn_rate_per_ip = \"fast\"\n");
    let (ok, stderr) = run(&["relay", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("conn_rate_per_ip = \"fast\"") && stderr.contains("500/s:1000"),
        "{stderr}"
    );
    let file = config("bad-toml", "hold_time = \n");
    let (ok, stderr) = run(&["relay", "--config", file.to_str().unwrap()]);
    assert!(!ok && stderr.contains(file.to_str().unwrap()), "{stderr}");
}

#[test]
fn a_bad_variable_is_named() {
    let (ok, _, stderr) = run_env(
        &["relay", "--listen", "127.0.0.1:0"],
        &[("LIMMAT_CONN_RATE_PER_IP", "fast")],
    );
    assert!(!ok);
    assert!(
        stderr.contains("LIMMAT_CONN_RATE_PER_IP") && stderr.contains("fast"),
        "{stderr}"
    );
    let (ok, _, stderr) = run_env(&["relay"], &[("LIMMAT_LISTEN", "127.0.0.1:0,nowhere")]);
    assert!(!ok);
    assert!(
        stderr.contains("LIMMAT_LISTEN") && stderr.contains("nowhere"),
        "{stderr}"
    );
}

#[test]
fn check_config_validates_without_listening() {
    // A busy port does not matter: nothing is bound.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let file = config("check-ok", &format!("listen = [\"{addr}\"]\n"));
    let (ok, stdout, stderr) = run_env(
        &[
            "relay",
            "--check-config",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "configuration OK");
}

#[test]
fn check_config_loads_the_files() {
    let file = config(
        "check-missing",
        "listen = [\"tls:127.0.0.1:0\"]\n[[cert]]\ncert = \"/nonexistent/relay.pem\"\nkey = \"/nonexistent/relay.key\"\n",
    );
    let (ok, stdout, stderr) = run_env(
        &[
            "relay",
            "--check-config",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && stdout.is_empty());
    assert!(stderr.contains("/nonexistent/relay.pem"), "{stderr}");
    let (ok, _, stderr) = run_env(
        &[
            "relay",
            "--check-config",
            "--keys-file",
            "/nonexistent/keys.toml",
        ],
        &[],
    );
    assert!(!ok && stderr.contains("/nonexistent/keys.toml"), "{stderr}");
}

#[test]
fn device_keys_of_the_file_are_checked_and_count_as_a_key_source() {
    let entry = |sha256: &str| {
        format!(
            "listen = [\"0.0.0.0:0\"]\nrevoked_keys = []\n[[device_key]]\ndomain = \"my-device\"\nsha256 = \"{sha256}\"\n"
        )
    };
    // A public listener is allowed because a key source makes auth = keys.
    let good = config("device-key", &entry(&"ab".repeat(32)));
    let (ok, _, stderr) = run_env(
        &[
            "relay",
            "--check-config",
            "--config",
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let bad = config("device-key-bad", &entry("abc"));
    let (ok, _, stderr) = run_env(
        &["relay", "--check-config", "--config", bad.to_str().unwrap()],
        &[],
    );
    assert!(!ok && stderr.contains("device_key #1"), "{stderr}");
}

#[test]
fn the_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/relay.toml");
    let (ok, stdout, stderr) = run_env(&["relay", "--check-config", "--config", example], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "configuration OK");
}

#[test]
fn admin_listener_from_the_file_serves_probes() {
    let dir = std::env::temp_dir().join(format!("limmat-admin-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("relay.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut relay = Limmat::spawn(&["relay", "--config", file.to_str().unwrap()]);
    let line = relay.wait_for("admin listening");
    let admin: std::net::SocketAddr = field(&line, "addr").parse().unwrap();
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Off loopback, a token is required.
    std::fs::write(&file, "listen = [\"127.0.0.1:0\"]\nadmin = \"0.0.0.0:0\"\n").unwrap();
    let (ok, stderr) = run(&["relay", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_empty_list_variable_is_refused() {
    let (ok, _, stderr) = run_env(&["relay", "--check-config"], &[("LIMMAT_HOSTNAME", ",")]);
    assert!(!ok);
    assert!(stderr.contains("LIMMAT_HOSTNAME"), "{stderr}");
}

/// Issue 12: `relay --help` groups the flags under topic headings, and every setting names
/// its variable.
#[test]
fn relay_help_is_grouped_and_names_every_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args(["relay", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for heading in [
        "Listeners:",
        "TLS:",
        "Limits and timeouts:",
        "Device keys:",
        "Admin:",
        "Logging:",
        "Forward proxy:",
        "Cluster:",
    ] {
        assert!(help.lines().any(|l| l == heading), "no {heading}\n{help}");
    }
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(flag) = line.trim().strip_prefix("--") else {
            continue;
        };
        let name = flag.split(['[', ' ', '=']).next().unwrap_or_default();
        if ["config", "check-config", "help", "log-format"].contains(&name) {
            continue;
        }
        let env = format!("[env: LIMMAT_{}]", name.to_uppercase().replace('-', "_"));
        assert!(
            lines[i + 1].contains(&env),
            "--{name} lacks {env}:\n{}",
            lines[i + 1]
        );
    }
}

/// Issue 12: a misspelt `LIMMAT_…` variable is reported with the one meant, and a listener
/// may be given by name.
#[test]
fn misspelt_variables_are_reported_and_names_resolve() {
    let (ok, stdout, stderr) = run_env(
        &["relay", "--listen", "localhost:0", "--check-config"],
        &[("LIMMAT_HOLDTIME", "10s"), ("LIMMAT_HOLD_TIME", "")],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(
        stderr.contains("LIMMAT_HOLDTIME is not a Limmat variable")
            && stderr.contains("did you mean LIMMAT_HOLD_TIME?"),
        "{stderr}"
    );
    let mut relay = Limmat::spawn(&["relay", "--listen", "localhost:0", "--admin", "localhost:0"]);
    let addr = relay.listening_addr();
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST, "{addr}");
    // The admin line may come before or after the public one (which `listening_addr` read).
    let admin = match relay.log.iter().find(|l| l.contains("admin listening")) {
        Some(line) => line.clone(),
        None => relay.wait_for("admin listening"),
    };
    assert!(admin.contains("127.0.0.1:"), "{admin}");
    let (ok, _, stderr) = run_env(&["relay", "--listen", "no-such-host.invalid:80"], &[]);
    assert!(!ok);
    assert!(stderr.contains("no-such-host.invalid:80"), "{stderr}");
}
