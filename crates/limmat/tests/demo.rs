//! `limmat demo` end to end: every listener on a free port, the printed URLs show the bound
//! ports, every printed curl command works as printed (through the relay), a subscription made
//! with the printed command gets a verified delivery printed by the demo's receiver, and
//! Ctrl-C ends the demo with exit 0 and removes its state directory.

mod common;
mod gateway_common;

use gateway_common::*;
use std::process::Command;

/// The printed curl commands, continuation lines joined.
fn commands(output: &[String]) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current: Option<String> = None;
    for line in output {
        let line = line.trim();
        if let Some(mut command) = current.take() {
            command.push(' ');
            command.push_str(line.trim_end_matches('\\'));
            if line.ends_with('\\') {
                current = Some(command);
            } else {
                commands.push(command);
            }
        } else if line.starts_with("curl ") {
            if line.ends_with('\\') {
                current = Some(line.trim_end_matches('\\').to_owned());
            } else {
                commands.push(line.to_owned());
            }
        }
    }
    commands
}

/// Runs a printed command with `sh -c`, plus `extra` curl options: (exit code, stdout).
fn sh(command: &str, extra: &str) -> (Option<i32>, String) {
    let out = Command::new("sh")
        .args(["-c", &format!("{command} --max-time 10 {extra}")])
        .output()
        .expect("sh runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_demo_works_as_printed() {
    let tmp = TempDir::new("demo-tmp");
    let mut demo = Proc::spawn_env(
        &[
            "demo",
            "--relay-listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--receiver-listen",
            "127.0.0.1:0",
            "--time-scale",
            "20",
        ],
        &[("TMPDIR", tmp.str())],
    );
    demo.wait_stdout("Press Ctrl-C to stop");
    demo.wait_stdout("/beacon/subscriptions'");
    let output = demo.stdout.clone();
    let text = output.join("\n");
    assert!(!text.contains(":0/"), "a printed URL shows port 0:\n{text}");
    let url_of = |label: &str| -> String {
        let line = output
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in\n{text}"));
        line.split_whitespace().last().unwrap().to_owned()
    };
    let through_relay = url_of("gateway through the relay");
    let local = url_of("gateway, local listener");
    let dashboard = url_of("relay dashboard");
    assert!(through_relay.ends_with("/gw-demo/"), "{through_relay}");
    for url in [&through_relay, &local] {
        let index = get_json(url);
        assert!(index.is_object(), "{url}: {index}");
    }
    let (status, _) = http("GET", &dashboard, None, &[]);
    assert_eq!(status, 200, "{dashboard}");
    // One recorder for the whole process: the relay's admin /metrics and the gateway's local
    // /metrics render the same registry, relay and gateway series alike.
    for metrics in [format!("{dashboard}metrics"), format!("{local}metrics")] {
        let (status, body) = http("GET", &metrics, None, &[]);
        assert_eq!(status, 200, "{metrics}: {body}");
        for series in ["limmat_connections_accepted_total", "limmat_gateway_"] {
            assert!(body.contains(series), "{metrics} lacks {series}: {body}");
        }
    }

    let commands = commands(&output);
    assert_eq!(commands.len(), 9, "{commands:#?}");
    for command in &commands {
        assert!(
            command.contains(through_relay.trim_end_matches('/')),
            "not through the relay: {command}"
        );
    }
    let run = |needle: &str| -> String {
        let command = commands
            .iter()
            .find(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no command with {needle:?}"));
        let (code, out) = sh(command, "");
        assert_eq!(code, Some(0), "{command}: {out}");
        out
    };
    let nodes = json(&run("gap/nodes?active=1"));
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(6), "{nodes}");
    let connected = json(&run("?connect=1"));
    assert_eq!(connected["connected"], true, "{connected}");
    let battery = json(&run("0022/value"));
    assert_eq!(battery["value"], "64", "{battery}");
    run("0042/value/0102");
    let vendor = json(&run("0042/value'"));
    assert_eq!(vendor["value"], "0102", "{vendor}");
    let beacons = json(&run("beacon/beacons'"));
    assert!(
        !beacons["beacons"].as_array().unwrap().is_empty(),
        "{beacons}"
    );
    // The streams: run them for a moment (curl ends with 28, its timeout).
    for (needle, expected) in [
        ("notify=1&event=1", "event: notification"),
        ("beacon/events", "event: beacon."),
    ] {
        let command = commands.iter().find(|c| c.contains(needle)).unwrap();
        let (code, out) = sh(command, "--max-time 4");
        assert_eq!(code, Some(28), "{command}: {out}");
        assert!(out.contains(expected), "{command}: {out}");
    }

    // The printed subscription: 201, and a verified delivery printed by the receiver.
    let command = commands
        .iter()
        .find(|c| c.contains("beacon/subscriptions"))
        .unwrap();
    let (code, out) = sh(command, "-w '\\n%{http_code}'");
    assert_eq!(code, Some(0), "{out}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "201", "{body}");
    let sub = json(body);
    assert!(sub["id"].is_string(), "{sub}");
    let line = demo.wait_stdout(" verified: ");
    assert!(line.starts_with("webhook "), "{line}");
    let event = json(line.split_once(" verified: ").unwrap().1);
    assert!(
        event["type"] == "beacon.entered" || event["type"] == "beacon.left",
        "{event}"
    );
    assert_eq!(event["gateway"], "limmat-demo");
    // Links in a webhook point through the relay (issue 12 item 7).
    let href = event["data"]["beacon"]["self"]["href"]
        .as_str()
        .unwrap_or_default();
    assert!(
        href.starts_with(&format!("{through_relay}beacon/beacons/")),
        "{event}"
    );
    // And in the event stream, they follow the listener it is read on, as /beacon/beacons.
    for base in [&through_relay, &local] {
        let events = Sse::open(&format!("{base}beacon/events"));
        let event = std::iter::from_fn(|| events.next(PATIENCE))
            .find(|e| e.event.as_deref().is_some_and(|t| t.starts_with("beacon.")))
            .expect("a beacon event");
        let event = json(&event.data);
        let href = event["data"]["beacon"]["self"]["href"]
            .as_str()
            .unwrap_or_default();
        assert!(
            href.starts_with(&format!("{base}beacon/beacons/")),
            "{base}: {event}"
        );
        let beacons = get_json(&format!("{base}beacon/beacons"));
        let listed = beacons["beacons"][0]["self"]["href"]
            .as_str()
            .unwrap_or_default();
        assert!(
            listed.starts_with(&format!("{base}beacon/beacons/")),
            "{beacons}"
        );
    }

    // A subscription whose receiver refuses connections: each failed delivery is logged with
    // its reason (issue 12).
    let hook = url_of("webhook receiver");
    let refused = command.replace(&hook, "http://127.0.0.1:1/refused");
    assert_ne!(&refused, command);
    let (code, out) = sh(&refused, "");
    assert_eq!(code, Some(0), "{out}");
    let failed = demo.wait_for("webhook delivery failed");
    assert!(
        failed.contains("127.0.0.1:1/refused") && failed.contains("kind=\"connect\""),
        "{failed}"
    );

    // Ctrl-C: a clean stop, exit 0, and the state directory is gone, even with streams open
    // through the relay and on the local listener.
    let streams = [
        Sse::open(&format!(
            "{through_relay}gatt/nodes/c0ffee000010/characteristics/0032/value?notify=1&event=1"
        )),
        Sse::open(&format!("{through_relay}beacon/events")),
        Sse::open(&format!("{local}gap/nodes?event=1")),
    ];
    for stream in &streams {
        stream.next(PATIENCE).expect("the stream is open");
    }
    demo.signal("INT");
    let stopping = std::time::Instant::now();
    let (code, log) = demo.wait_exit();
    assert_eq!(code, Some(0), "{log}");
    // A clean stop warns about nothing.
    let warnings: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("stop requested"))
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(15),
        "the demo took {:?} to stop",
        stopping.elapsed()
    );
    drop(streams);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map_while(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("limmat-demo-"))
        })
        .collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

/// Issue 12: without `-v` (and without RUST_LOG) the demo writes nothing on stderr, through a
/// request and a stop, so its instructions stay readable; a bad `--time-scale` is refused
/// before anything listens.
#[test]
fn the_demo_is_quiet_by_default() {
    use std::io::{BufRead, BufReader, Read};
    let tmp = TempDir::new("demo-quiet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args([
            "demo",
            "--relay-listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .args([
            "--gateway-listen",
            "127.0.0.1:0",
            "--receiver-listen",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .env("TMPDIR", tmp.str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("limmat starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut base = None;
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(url) = line.trim().strip_prefix("gateway through the relay") {
            base = Some(url.trim().to_owned());
        }
        if line.contains("/beacon/subscriptions'") {
            break;
        }
        line.clear();
    }
    let base = base.expect("the relay URL is printed");
    let (status, _) = http("GET", &format!("{base}beacon/beacons"), None, &[]);
    assert_eq!(status, 200);
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert_eq!(stderr, "", "the demo logged without -v");

    for bad in ["0", "-1", "fast", "NaN"] {
        let (ok, stderr) = crate::common::run(&["demo", &format!("--time-scale={bad}")]);
        assert!(!ok);
        assert!(stderr.contains("--time-scale"), "{bad}: {stderr}");
        assert!(!stderr.contains("cannot start"), "{bad}: {stderr}");
    }
}
