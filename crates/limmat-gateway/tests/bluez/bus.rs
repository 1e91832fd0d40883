//! The processes behind the BlueZoo test (`gateway-api.md` §6.4): a private D-Bus daemon and
//! BlueZoo on it. Every child is killed by its pid when the [`Children`] guard drops, which
//! also happens when an assertion fails.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The environment variable libdbus (and so bluer) reads for the system bus.
pub const SYSTEM_BUS: &str = "DBUS_SYSTEM_BUS_ADDRESS";

/// Child processes, killed (and reaped) in reverse start order on drop.
#[derive(Default)]
pub struct Children(Vec<Child>);

impl Children {
    fn push(&mut self, child: Child) {
        self.0.push(child);
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            // `Child::kill` sends SIGKILL to exactly this pid.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `dbus-daemon --session --nofork --print-address` and returns the address it printed.
pub fn start_bus(children: &mut Children) -> String {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // It warns that it cannot raise its fd limit, which does not matter here.
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon is missing: scripts/test installs the `dbus` package");
    let stdout = child.stdout.take().expect("piped stdout");
    children.push(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the bus address");
    let address = line.trim().to_owned();
    assert!(!address.is_empty(), "dbus-daemon printed no address");
    address
}

/// Starts the private bus, points this process's system bus at it (`DBUS_SYSTEM_BUS_ADDRESS`)
/// and builds the runtime the test runs on; returns the bus address and the runtime.
///
/// Call it first in a test binary's only test function: it sets a process-wide environment
/// variable, which libdbus reads once, at the process's first connection to the system bus.
pub fn private_system_bus(children: &mut Children) -> (String, tokio::runtime::Runtime) {
    let address = start_bus(children);
    // SAFETY: the caller is the only test of its binary and calls this first, so no other
    // thread exists yet that could read the environment, and nothing has connected yet.
    // Edition 2024: the environment is process-wide; this runs before any other thread reads it.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(SYSTEM_BUS, &address);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    (address, runtime)
}

/// Runs `scenario` on `runtime`, failing with BlueZoo's log named if it takes over `limit`.
pub fn run_within<F: std::future::Future>(
    runtime: &tokio::runtime::Runtime,
    limit: Duration,
    scenario: F,
) -> F::Output {
    runtime.block_on(async {
        tokio::time::timeout(limit, scenario)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the scenario hung; BlueZoo's log: {}",
                    bluezoo_log().display()
                )
            })
    })
}

/// Where BlueZoo's log goes (shown in failure messages).
pub fn bluezoo_log() -> PathBuf {
    std::env::temp_dir().join(format!("limmat-bluezoo-{}.log", std::process::id()))
}

/// Starts BlueZoo on the bus at `address` with one mock adapter per entry of `adapters`
/// (`hci0`, `hci1`, … in order), and returns once `org.bluez` has an owner, as announced by
/// `NameOwnerChanged`, and every adapter has announced `Powered: true`. BlueZoo takes the name
/// before it exports its adapters, so the name alone is not enough.
pub fn start_bluezoo(children: &mut Children, address: &str, adapters: &[&str]) -> Bluezoo {
    use dbus::arg::PropMap;
    use dbus::blocking::Connection;
    use dbus::message::MatchRule;
    use std::collections::HashSet;
    use std::sync::Mutex;

    let mut channel = dbus::channel::Channel::open_private(address).expect("connecting to the bus");
    channel.register().expect("registering on the bus");
    let conn = Connection::from(channel);
    let appeared = Arc::new(AtomicBool::new(false));
    let flag = appeared.clone();
    let rule = MatchRule::new_signal("org.freedesktop.DBus", "NameOwnerChanged");
    conn.add_match(
        rule,
        move |(name, _old, new): (String, String, String), _, _| {
            if name == "org.bluez" && !new.is_empty() {
                flag.store(true, Ordering::SeqCst);
            }
            true
        },
    )
    .expect("subscribing to NameOwnerChanged");
    let powered = Arc::new(Mutex::new(HashSet::new()));
    let seen = powered.clone();
    let rule = MatchRule::new_signal("org.freedesktop.DBus.Properties", "PropertiesChanged");
    conn.add_match(
        rule,
        move |(interface, changed, _): (String, PropMap, Vec<String>), _, message| {
            let on = dbus::arg::prop_cast::<bool>(&changed, "Powered") == Some(&true);
            if interface == "org.bluez.Adapter1"
                && on
                && let Some(path) = message.path()
            {
                seen.lock().expect("powered set").insert(path.to_string());
            }
            true
        },
    )
    .expect("subscribing to PropertiesChanged");

    // `bluezoo-fix/sitecustomize.py` corrects BlueZoo's ManufacturerData type (see there).
    let fix = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bluez/bluezoo-fix");
    let python_path = match std::env::var("PYTHONPATH") {
        Ok(old) if !old.is_empty() => format!("{fix}:{old}"),
        _ => fix.to_owned(),
    };
    let log = std::fs::File::create(bluezoo_log()).expect("creating the BlueZoo log");
    let mut command = Command::new("bluezoo");
    command
        .args(["--auto-enable", "--scan-interval", "1"])
        .env(SYSTEM_BUS, address)
        .env("PYTHONPATH", python_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for adapter in adapters {
        command.args(["--adapter", adapter]);
    }
    let child = command
        .spawn()
        .expect("bluezoo is missing: scripts/test installs it with pip");
    let bluezoo = Bluezoo { pid: child.id() };
    children.push(child);

    // Signals, not sleeps: `process` blocks on the bus socket until a message arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = || {
        appeared.load(Ordering::SeqCst)
            && powered.lock().expect("powered set").len() == adapters.len()
    };
    while !ready() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "org.bluez and its adapters did not appear within 30 s; see {}",
            bluezoo_log().display()
        );
        conn.process(left).expect("reading the bus");
    }
    bluezoo
}

/// The BlueZoo child, which the test can freeze to make BlueZ unresponsive.
pub struct Bluezoo {
    pid: u32,
}

impl Bluezoo {
    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the process: while it is stopped, every call to
    /// `org.bluez` waits. A stopped child is still killed by [`Children`].
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }
}
