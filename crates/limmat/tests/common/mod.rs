//! Runs the real `limmat` binary as a child process: its log lines are read from stderr so tests
//! learn bound ports and wait for events without sleeping, and the child is killed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Limmat {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Limmat {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_command(Command::new(env!("CARGO_BIN_EXE_limmat")).args(args))
    }

    /// `limmat ARGS` with the environment variables `env` set and every proxy variable
    /// (`http_proxy`, `no_proxy`, …) of the test's own environment removed.
    pub fn spawn_env(env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_limmat"));
        for name in [
            "http_proxy",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            command.env_remove(name);
        }
        Self::spawn_command(command.envs(env.iter().copied()).args(args))
    }

    /// The process id, to look at the process's sockets.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `limmat ARGS` with at most `files` open files (soft and hard limit, through
    /// util-linux's `prlimit`).
    pub fn spawn_with_file_limit(files: u64, args: &[&str]) -> Self {
        Self::spawn_command(
            Command::new("prlimit")
                .arg(format!("--nofile={files}:{files}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_limmat"))
                .args(args),
        )
    }

    fn spawn_command(command: &mut Command) -> Self {
        let mut child = command
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("limmat starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The log lines that arrived since the last call or wait, without waiting.
    pub fn take_lines(&mut self) -> Vec<String> {
        let new: Vec<String> = self.lines.try_iter().collect();
        self.log.extend(new.iter().cloned());
        new
    }

    /// Waits for the `listening addr=…` line of a public listener (or of tunnel client mode)
    /// and returns the address; the admin listener's line is skipped.
    pub fn listening_addr(&mut self) -> SocketAddr {
        loop {
            let line = self.wait_for("listening");
            if !line.contains("admin listening") {
                return field(&line, "addr").parse().expect("an address");
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its status and remaining stderr.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let rest: Vec<String> =
                    std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_secs(1)).ok())
                        .collect();
                self.log.extend(rest);
                return (status, self.log.join("\n"));
            }
            assert!(Instant::now() < deadline, "limmat did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Limmat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name=value` in a log line.
pub fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=");
    let start = line
        .find(&key)
        .map(|i| i + key.len())
        .unwrap_or_else(|| panic!("{name} in {line}"));
    line[start..].split_whitespace().next().unwrap_or("")
}

/// Runs limmat to completion with `args`; returns (success, stderr).
pub fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("limmat runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads a request head and returns its first line without the line ending.
pub fn read_request(reader: &mut impl BufRead) -> Option<String> {
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    Some(request_line.trim_end().to_owned())
}

/// A local HTTP server that answers every request with its own request line as the body.
pub fn http_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let Some(request_line) = read_request(&mut reader) else {
                    return;
                };
                let body = request_line.as_str();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = reader.get_mut().write_all(response.as_bytes());
            });
        }
    });
    addr
}

/// Runs curl (scripts/test installs it) and returns its stdout; fails the test on an error.
pub fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory under the temporary directory, named after `tag` and the test process,
/// removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh [`TempDir`] for `tag`.
pub fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("limmat-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
