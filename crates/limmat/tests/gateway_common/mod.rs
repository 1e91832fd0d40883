//! Helpers for the gateway's end-to-end tests: a temporary directory, HTTP through curl, an
//! SSE reader (curl -N), and the real `limmat gateway` as a child process whose log lines tell
//! the bound port. Every child is killed and reaped on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A fresh directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("limmat-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Writes `name` inside and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One request with curl: (status, body). `extra` are more curl arguments.
pub fn http(method: &str, url: &str, body: Option<&str>, extra: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "10", "-X", method]);
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    cmd.args(extra);
    cmd.args(["-w", "\n%{http_code}", url]);
    let out = cmd.output().expect("curl runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "curl {method} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl printed the status");
    (status.trim().parse().expect("a status"), body.to_owned())
}

/// `GET url` as JSON, which must answer 200.
pub fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = http("GET", url, None, &[]);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// One SSE event: `id:`, `event:` and `data:`.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An open `text/event-stream` read by `curl -N`; the curl process is killed on drop.
pub struct Sse {
    child: Child,
    events: mpsc::Receiver<SseEvent>,
}

impl Sse {
    pub fn open(url: &str) -> Self {
        let mut child = Command::new("curl")
            .args([
                "--silent",
                "--no-buffer",
                "-H",
                "Accept: text/event-stream",
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl runs");
        let stdout = child.stdout.take().expect("piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut current = SseEvent::default();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.is_empty() {
                    let done = std::mem::take(&mut current);
                    if (done.event.is_some() || !done.data.is_empty()) && tx.send(done).is_err() {
                        return;
                    }
                } else if let Some(v) = line.strip_prefix("id:") {
                    current.id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    current.event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    current.data.push_str(v.trim_start());
                }
            }
        });
        Self { child, events }
    }

    /// The next event, or `None` if the stream ended or `timeout` passed.
    pub fn next(&self, timeout: Duration) -> Option<SseEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Events already received, without waiting.
    pub fn drain(&self) -> Vec<SseEvent> {
        self.events.try_iter().collect()
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `limmat` child process (stdout discarded, stderr read line by line). The child
/// sits behind a shared lock so that another thread (a receiver's handler) can SIGKILL it.
pub struct Proc {
    child: Arc<Mutex<Child>>,
    lines: mpsc::Receiver<String>,
    out: mpsc::Receiver<String>,
    pub log: Vec<String>,
    /// Standard output lines read so far.
    pub stdout: Vec<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_limmat"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("limmat starts");
        let lines = read_lines(child.stderr.take().expect("stderr is piped"));
        let out = read_lines(child.stdout.take().expect("stdout is piped"));
        Self {
            child: Arc::new(Mutex::new(child)),
            lines,
            out,
            log: Vec::new(),
            stdout: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// Sends a signal by name (`INT`, `TERM`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for a standard output line containing `needle` and returns it.
    pub fn wait_stdout(&mut self, needle: &str) -> String {
        wait_line(&self.out, &mut self.stdout, needle, "output")
    }

    /// A handle that SIGKILLs the child from anywhere.
    pub fn killer(&self) -> Killer {
        Killer(self.child.clone())
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        wait_line(&self.lines, &mut self.log, needle, "log")
    }

    /// Lines logged so far, without waiting.
    pub fn drain(&mut self) -> &[String] {
        self.log.extend(self.lines.try_iter());
        &self.log
    }

    /// The gateway's local listener, from its `gateway listening local_addr=…` line.
    pub fn gateway_addr(&mut self) -> SocketAddr {
        let line = self.wait_for("gateway listening");
        crate::common::field(&line, "local_addr")
            .parse()
            .expect("an address")
    }

    /// Waits for the exit: (exit code, the whole log).
    pub fn wait_exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.lock().try_wait().expect("try_wait");
            if let Some(status) = status {
                let rest: Vec<String> =
                    std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(1)).ok())
                        .collect();
                self.log.extend(rest);
                return (status.code(), self.log.join("\n"));
            }
            assert!(Instant::now() < deadline, "limmat did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&self) {
        self.killer().kill();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILLs (and reaps) a child process.
#[derive(Clone)]
pub struct Killer(Arc<Mutex<Child>>);

impl Killer {
    pub fn kill(&self) {
        let mut child = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // `Child::kill` is SIGKILL on Unix.
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Polls `f` until it gives `Some`, at most `timeout`; `what` names it in the failure.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes lines from `from` into `seen` until one contains `needle`, at most [`PATIENCE`].
fn wait_line(
    from: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    what: &str,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match from.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!(
                "no {what} line with {needle:?}; {what} so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// `POST {base}/beacon/subscriptions` for `url` with `secret` and the extra JSON members
/// `more` (`""` or `, "batch": {…}`); must answer 201. Returns the created subscription.
pub fn subscribe(base: &str, url: &str, secret: &str, more: &str) -> serde_json::Value {
    let body = format!(r#"{{"url": "{url}", "secret": "{secret}"{more}}}"#);
    let (status, created) = http(
        "POST",
        &format!("{base}/beacon/subscriptions"),
        Some(&body),
        &[],
    );
    assert_eq!(status, 201, "{created}");
    serde_json::from_str(&created).unwrap()
}

/// A thread that forwards the lines of `from` to the returned channel.
fn read_lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A multi-threaded runtime for the in-test webhook receiver.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
