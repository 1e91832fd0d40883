//! The admin dashboard in a real browser: the relay binary with two devices online, Debian's
//! headless chromium loading the page, and the rendered DOM and a screenshot checked.
//! `scripts/test` installs chromium; the test fails rather than skips when it is missing.

mod common;

use common::{Limmat, field};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CHROMIUM: &str = "chromium";
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh chromium profile directory, removed on drop.
struct Profile(PathBuf);

impl Profile {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "limmat-dashboard-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("profile dir");
        Self(dir)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs headless chromium with `extra` arguments on `url`; killed after `CHROMIUM_TIMEOUT`.
fn chromium(tag: &str, extra: &[&str], url: &str) -> Output {
    let profile = Profile::new(tag);
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg("--virtual-time-budget=5000")
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{CHROMIUM} does not run ({e}); scripts/test installs it (apt-get install chromium)"
            )
        });
    // Drain the pipes on threads so a chatty chromium cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    // Wait on a thread so the timeout needs no polling; kill by pid if chromium hangs.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(CHROMIUM_TIMEOUT) {
        Ok(status) => status.expect("wait for chromium"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{CHROMIUM} {extra:?} {url} did not finish within {CHROMIUM_TIMEOUT:?}");
        }
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A PTTH device connection for `domain`, kept open by the caller.
fn device(relay: SocketAddr, domain: &str) -> TcpStream {
    let mut stream = TcpStream::connect(relay).expect("connect to the relay");
    write!(
        stream,
        "POST /{domain} HTTP/1.1\r\nHost: {relay}\r\nUpgrade: PTTH/1.0\r\n\r\n"
    )
    .expect("send the PTTH request");
    stream
}

/// The relay's public and admin addresses, whichever `listening` line comes first.
fn addresses(relay: &mut Limmat) -> (SocketAddr, SocketAddr) {
    let (mut public, mut admin) = (None, None);
    while public.is_none() || admin.is_none() {
        let line = relay.wait_for("listening");
        let addr: SocketAddr = field(&line, "addr").parse().expect("an address");
        if line.contains("admin listening") {
            admin = Some(addr);
        } else {
            public = Some(addr);
        }
    }
    (public.unwrap(), admin.unwrap())
}

fn target_dir() -> PathBuf {
    // crates/limmat -> the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

#[test]
fn dashboard_lists_online_domains_in_chromium() {
    let mut relay = Limmat::spawn(&["relay", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (public, admin) = addresses(&mut relay);

    let _alpha = device(public, "alpha");
    let _beta = device(public, "beta");
    relay.wait_for("device connected");
    relay.wait_for("device connected");

    let url = format!("http://{admin}/");
    let dump = chromium("dom", &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "chromium --dump-dom failed: {}\n{}",
        dump.status,
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dom.contains("Limmat relay"), "{dom}");
    for domain in ["alpha", "beta"] {
        assert!(
            dom.contains(&format!("data-domain=\"{domain}\"")),
            "no row for {domain} in the dashboard:\n{dom}"
        );
    }
    assert!(
        dom.contains("id=\"total-domains\">2<"),
        "the header counts two domains online:\n{dom}"
    );
    assert!(dom.contains("<svg"), "sparklines are drawn:\n{dom}");

    let target = target_dir();
    std::fs::create_dir_all(&target).expect("target dir");
    let png = target.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let shot = chromium(
        "png",
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,800",
        ],
        &url,
    );
    assert!(
        shot.status.success(),
        "chromium --screenshot failed: {}\n{}",
        shot.status,
        String::from_utf8_lossy(&shot.stderr)
    );
    let size = std::fs::metadata(&png)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()))
        .len();
    assert!(
        size > 5 * 1024,
        "screenshot {} is only {size} bytes",
        png.display()
    );
}
