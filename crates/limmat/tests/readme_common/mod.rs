//! What the README tests share: the README's `sh` blocks by section, and a shell session
//! that runs them in one directory and stops what they leave running.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const README: &str = include_str!("../../../../README.md");

/// The fenced `sh` blocks of the section whose heading is `title` (any level), up to the next
/// heading of the same or a higher level. Headings inside fences (shell comments) do not count;
/// fences indented in a list item do.
pub fn blocks(title: &str) -> Vec<String> {
    let mut level = None;
    // An open fence: its indentation, whether it is `sh`, and its lines.
    let mut fence: Option<(String, bool, Vec<String>)> = None;
    let mut found = Vec::new();
    for line in README.lines() {
        let trimmed = line.trim_start();
        if let Some((indent, sh, mut lines)) = fence.take() {
            if trimmed.starts_with("```") {
                if sh && level.is_some() {
                    found.push(lines.join("\n"));
                }
            } else {
                lines.push(
                    line.strip_prefix(indent.as_str())
                        .unwrap_or(line)
                        .to_owned(),
                );
                fence = Some((indent, sh, lines));
            }
            continue;
        }
        if let Some(lang) = trimmed.strip_prefix("```") {
            let indent = line[..line.len() - trimmed.len()].to_owned();
            fence = Some((indent, lang == "sh", Vec::new()));
            continue;
        }
        if line.starts_with('#') {
            let depth = line.chars().take_while(|&c| c == '#').count();
            let heading = line[depth..].trim();
            match level {
                Some(l) if depth <= l => break,
                None if heading == title => level = Some(depth),
                _ => {}
            }
        }
    }
    assert!(level.is_some(), "README has no section {title:?}");
    found
}

/// A shell session in one directory: runs blocks with `limmat` on the `PATH` and stops every
/// process they left running when dropped.
pub struct Session {
    pub dir: PathBuf,
    path: String,
    groups: Vec<u32>,
}

impl Session {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("limmat-readme-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_limmat")).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Session {
            dir,
            path,
            groups: Vec::new(),
        }
    }

    fn command(&self, block: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            // Its own process group, so that what it leaves in the background can be stopped.
            .process_group(0);
        command
    }

    /// Runs a block that starts processes in the background; their output goes to a file.
    pub fn start(&mut self, block: &str) {
        let log = std::fs::File::create(self.dir.join(format!("block-{}.log", self.groups.len())))
            .unwrap();
        let mut child = self
            .command(block)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("bash runs");
        self.groups.push(child.id());
        let status = child.wait().unwrap();
        assert!(status.success(), "{block}\n{}", self.logs());
    }

    /// Runs a block to its end and returns its standard output.
    pub fn run(&mut self, block: &str) -> String {
        let child = self
            .command(block)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs");
        self.groups.push(child.id());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{block}\n{stderr}\n{}", self.logs());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the background processes wrote so far.
    pub fn logs(&self) -> String {
        (0..self.groups.len())
            .filter_map(|i| std::fs::read_to_string(self.dir.join(format!("block-{i}.log"))).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until something accepts on each of `ports` of 127.0.0.1.
    pub fn wait_ports(&self, ports: &[u16]) {
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        self.wait_addrs(&addrs);
    }

    /// Waits until something accepts on each of `addrs` (`IP:PORT`).
    pub fn wait_addrs(&self, addrs: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in addrs {
            while TcpStream::connect(addr.as_str()).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nothing listens on {addr}\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for group in &self.groups {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
