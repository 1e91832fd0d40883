//! `limmat relay key`: derived keys match the spec's test vector (4.1.3), new keys come with a
//! `[[device_key]]` entry holding their SHA-256 (4.1.2), and bad input is refused by name.

mod common;

use common::run;
use limmat_relay::auth::{derive_key, sha256_hex};
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

/// 32 random bytes in base64: a master secret strong enough to load.
const STRONG: &str = "q9Jc0m7tq5yGQw3S9pB0m1XlZrC8k2yTQ6m8yV0dX1E=";

#[test]
fn derived_key_is_the_last_word_and_matches_the_derivation() {
    // The spec's test vector itself is checked in limmat-relay's auth tests: its secret is too
    // short to be accepted from a file, by design.
    assert_eq!(
        derive_key(b"limmat-test-master-secret", "gsiot-ffmq-ttd5"),
        VECTOR
    );
    let secret = SecretFile::new("vector", &format!("{STRONG}\n"));
    let expected = derive_key(STRONG.as_bytes(), "gsiot-ffmq-ttd5");
    for domain in ["gsiot-ffmq-ttd5", "GSIOT-ffmq-ttd5"] {
        let out = stdout_of(&[
            "relay",
            "key",
            "--master-secret-file",
            secret.path(),
            domain,
        ]);
        assert_eq!(
            out.split_whitespace().last(),
            Some(expected.as_str()),
            "{out}"
        );
        assert!(!out.contains(STRONG), "{out}");
    }
}

#[test]
fn weak_master_secrets_are_refused() {
    for (name, text) in [
        ("short", "short\n"),
        ("placeholder", "REPLACE: head -c 32 /dev/urandom | base64\n"),
    ] {
        let weak = SecretFile::new(name, text);
        let (ok, stderr) = run(&["relay", "key", "--master-secret-file", weak.path(), "dom"]);
        assert!(!ok, "{stderr}");
        assert!(stderr.contains("not a usable secret"), "{stderr}");
        assert!(
            stderr.contains("head -c 32 /dev/urandom | base64 >"),
            "{stderr}"
        );
        let (ok, stderr) = run(&[
            "relay",
            "--check-config",
            "--master-secret-file",
            weak.path(),
        ]);
        assert!(!ok, "{stderr}");
        assert!(stderr.contains("not a usable secret"), "{stderr}");
    }
}

#[test]
fn the_first_master_secret_is_used() {
    let first = SecretFile::new("first", STRONG);
    let second = SecretFile::new("second", "Z2FwZ2FwZ2FwZ2FwZ2FwZ2FwZ2FwZ2FwZ2FwZ2FwZ2Fw");
    let out = stdout_of(&[
        "relay",
        "key",
        "--master-secret-file",
        first.path(),
        "--master-secret-file",
        second.path(),
        "gsiot-ffmq-ttd5",
    ]);
    let expected = derive_key(STRONG.as_bytes(), "gsiot-ffmq-ttd5");
    assert_eq!(
        out.split_whitespace().last(),
        Some(expected.as_str()),
        "{out}"
    );
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

/// The README's device-key lines, run as written (the relay's listen line aside): the key that
/// `--append` prints is the one whose hash lands in keys.toml, and the relay accepts it. The
/// master-secret lines make a secret the relay accepts, and `relay key` derives from it.
#[test]
fn readme_key_recipe_works_as_written() {
    let readme = include_str!("../../../README.md");
    let line = |needle: &str| -> String {
        let found = readme
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("README has no line starting {needle:?}"));
        // The trailing comment is for the reader; the shell ignores it too.
        found.to_owned()
    };
    let append = line("limmat relay key --new my-device --append keys.toml");
    let make_secret = line("head -c 32 /dev/urandom | base64 > master.secret");
    let derive = line("limmat relay key --master-secret-file master.secret my-device");

    let dir = std::env::temp_dir().join(format!("limmat-readme-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_limmat"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |script: &str| -> String {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(&dir)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .expect("bash runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{script}: {stderr}");
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };

    // Two devices' keys, appended one after the other: each printed key is the one accepted.
    let first = sh(&append).trim().to_owned();
    let second = sh(&append).trim().to_owned();
    assert_eq!(first.len(), 43, "stdout is the key alone: {first:?}");
    assert_ne!(first, second);
    let keys = dir.join("keys.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "keys.toml mode {mode:o}");
    }
    let text = std::fs::read_to_string(&keys).unwrap();
    assert!(
        !text.contains(&first),
        "the key itself is not stored: {text}"
    );
    let auth = limmat_relay::auth::Authenticator::load(&limmat_relay::auth::KeySources {
        keys_files: vec![keys.clone()],
        ..Default::default()
    })
    .expect("keys.toml loads");
    for key in [&first, &second] {
        assert_eq!(
            auth.domain_of_key(key.as_bytes()).as_deref(),
            Some("my-device"),
            "{text}"
        );
    }
    let (ok, stderr) = run(&[
        "relay",
        "--check-config",
        "--keys-file",
        keys.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");

    // A keys file that does not load is reported and left as it was.
    std::fs::write(&keys, "[[device_key]\n").unwrap();
    let (ok, stderr) = run(&[
        "relay",
        "key",
        "--new",
        "my-device",
        "--append",
        keys.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("nothing was appended"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), "[[device_key]\n");

    // The master-secret lines: the secret made as written passes the strength check.
    sh(&make_secret);
    let out = sh(&derive);
    assert!(
        out.split_whitespace()
            .last()
            .is_some_and(|k| k.starts_with("lmk1.")),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
