//! README "Running a cluster", followed as a reader follows it: the Quick start's web server,
//! then the section's commands run literally by `bash` with `limmat` on the `PATH` — three
//! nodes on 127.0.0.2–4, four devices, the members and owners, a node killed, the devices back;
//! then the section's one-command demo, `examples/cluster/demo.sh`, which must clean up itself.
//! Between blocks the test waits as a reader would, but on the nodes' admin API (the members
//! it lists, a domain that answers), never on a fixed sleep.

mod common;
mod readme_common;

use readme_common::{Session, blocks};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `GET path` on `addr`; the status line's code and the body.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The node ids of the admin listener's `/api/cluster` live set.
fn live(admin: &str) -> Option<Vec<String>> {
    let (_, body) = get(admin, "/api/cluster")?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        json["live"]
            .as_array()?
            .iter()
            .filter_map(|v| Some(v.as_str()?.to_owned()))
            .collect(),
    )
}

/// Polls `check` until it holds, for at most 30 s.
fn until(shell: &Session, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}\n{}", shell.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_cluster_section_works() {
    let mut shell = Session::new("cluster");
    // The Quick start's relay, web server and device: the web server on 8100 is used here.
    let quick = blocks("Quick start");
    shell.start(&quick[1]);
    shell.wait_ports(&[8100]);

    let section = blocks("Running a cluster");
    assert_eq!(section.len(), 6, "{section:?}");
    shell.start(&section[0]);
    let nodes = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let admins: Vec<String> = nodes.iter().map(|ip| format!("{ip}:9480")).collect();
    shell.wait_addrs(&admins);
    let three = ["node-2", "node-3", "node-4"];
    until(&shell, "three live members everywhere", || {
        admins.iter().all(|a| live(a).is_some_and(|l| l == three))
    });

    shell.start(&section[1]);
    until(&shell, "every sensor answers through node-2", || {
        (1..=4).all(|i| {
            get("127.0.0.2:8480", &format!("/sensor-{i}/"))
                .is_some_and(|(status, body)| status == 200 && body.contains("hello"))
        })
    });

    let got = shell.run(&section[2]);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "['node-2', 'node-3', 'node-4']", "{got}");
    assert_eq!(lines[1], "node-4", "node-4 owns sensor-3: {got}");
    assert_eq!(got.matches("hello from sensor-3").count(), 3, "{got}");
    assert!(got.contains("hello from sensor-1"), "{got}");

    // node-4 killed: the others drop it and sensor-3 answers again through both.
    shell.run(&section[3]);
    until(&shell, "node-4 gone and sensor-3 back", || {
        admins[..2]
            .iter()
            .all(|a| live(a).is_some_and(|l| l == three[..2]))
            && nodes[..2].iter().all(|ip| {
                get(&format!("{ip}:8480"), "/sensor-3/").is_some_and(|(status, _)| status == 200)
            })
    });
    let got = shell.run(&section[4]);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "['node-2', 'node-3']", "{got}");
    assert_eq!(got.matches("hello from sensor-3").count(), 2, "{got}");

    // The one-command demo (its own ports), run from the repository as the README says.
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"),
        shell.dir.join("examples"),
    )
    .unwrap();
    let started = Instant::now();
    let got = shell.run(&section[5]);
    eprintln!("{got}");
    let owners = got.lines().filter(|l| l.contains("  ->  node-")).count();
    assert_eq!(owners, 6, "every device's owner: {got}");
    let killed = got
        .lines()
        .find_map(|l| l.strip_prefix("Killing node-"))
        .unwrap_or_else(|| panic!("no node killed: {got}"));
    let victim = &killed[..1];
    let moved = killed.split(": ").nth(1).unwrap_or_default();
    for device in moved.split(' ').filter(|d| !d.is_empty()) {
        assert!(
            got.lines()
                .any(|l| l.starts_with(&format!("  {device} answers again"))
                    && !l.contains(&format!("node-{victim},"))),
            "{device} not back: {got}"
        );
    }
    assert!(
        got.ends_with("All 6 devices answer through the surviving nodes. Stopping everything.\n"),
        "{got}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{got}");
    // It stopped what it started: its ports are free again.
    for ip in nodes {
        assert!(
            TcpStream::connect((ip, 8580)).is_err(),
            "node {ip} still runs"
        );
    }
}
