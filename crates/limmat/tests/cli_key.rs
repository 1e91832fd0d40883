//! `limmat relay key`: derived keys match the spec's test vector (4.1.3), new keys come with a
//! `[[device_key]]` entry holding their SHA-256 (4.1.2), and bad input is refused by name.

mod common;

use common::run;
use limmat_relay::auth::sha256_hex;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const VECTOR: &str = "lmk1.Z3Npb3QtZmZtcS10dGQ1.62FuudxH3sP__U8QW7GzPMr_Mk3kPmaB6dw5vfHPcGQ";

/// Runs limmat to success and returns its stdout (`common::run` returns only stderr).
fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("limmat runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "limmat {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A master secret file in the temporary directory, removed on drop.
struct SecretFile(PathBuf);

impl SecretFile {
    fn new(name: &str, contents: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("limmat-cli-key-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn derived_key_is_the_last_word_and_matches_the_test_vector() {
    let secret = SecretFile::new("vector", "limmat-test-master-secret\n");
    for domain in ["gsiot-ffmq-ttd5", "GSIOT-ffmq-ttd5"] {
        let out = stdout_of(&[
            "relay",
            "key",
            "--master-secret-file",
            secret.path(),
            domain,
        ]);
        assert_eq!(out.split_whitespace().last(), Some(VECTOR), "{out}");
        assert!(!out.contains("limmat-test-master-secret"), "{out}");
    }
}

#[test]
fn the_first_master_secret_is_used() {
    let first = SecretFile::new("first", "limmat-test-master-secret");
    let second = SecretFile::new("second", "another secret");
    let out = stdout_of(&[
        "relay",
        "key",
        "--master-secret-file",
        first.path(),
        "--master-secret-file",
        second.path(),
        "gsiot-ffmq-ttd5",
    ]);
    assert_eq!(out.split_whitespace().last(), Some(VECTOR), "{out}");
}

#[test]
fn new_key_comes_with_its_hash_entry() {
    let out = stdout_of(&["relay", "key", "--new", "Dom"]);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("device key for dom: "))
        .unwrap_or_else(|| panic!("no key line in {out}"));
    assert_eq!(
        key.len(),
        43,
        "256 bits in base64url without padding: {key}"
    );
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{key}"
    );
    let entry = format!(
        "[[device_key]]\ndomain = \"dom\"\nsha256 = \"{}\"",
        sha256_hex(key)
    );
    assert!(out.contains(&entry), "{entry} in {out}");
    assert!(out.contains("only once"), "{out}");
    // Two runs give two keys.
    assert!(!stdout_of(&["relay", "key", "--new", "dom"]).contains(key));
}

#[test]
fn errors_name_the_problem() {
    let missing = std::env::temp_dir().join("limmat-cli-key-no-such-file");
    let missing = missing.to_str().unwrap();
    let (ok, stderr) = run(&["relay", "key", "--master-secret-file", missing, "dom"]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot read master secret file {missing}")),
        "{stderr}"
    );

    let empty = SecretFile::new("empty", "\n");
    let (ok, stderr) = run(&["relay", "key", "--master-secret-file", empty.path(), "dom"]);
    assert!(!ok);
    assert!(stderr.contains("is empty"), "{stderr}");

    let (ok, stderr) = run(&["relay", "key", "--new", "relay_domain"]);
    assert!(!ok);
    assert!(
        stderr.contains("invalid domain \"relay_domain\""),
        "{stderr}"
    );
    assert!(stderr.contains("reserved"), "{stderr}");

    let (ok, stderr) = run(&["relay", "key", "--new", "a/b"]);
    assert!(!ok);
    assert!(stderr.contains("invalid domain \"a/b\""), "{stderr}");
}

#[test]
fn exactly_one_of_new_and_master_secret_file() {
    let secret = SecretFile::new("both", "s");
    let (ok, stderr) = run(&["relay", "key", "dom"]);
    assert!(!ok, "{stderr}");
    let (ok, stderr) = run(&[
        "relay",
        "key",
        "--new",
        "--master-secret-file",
        secret.path(),
        "dom",
    ]);
    assert!(!ok);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
