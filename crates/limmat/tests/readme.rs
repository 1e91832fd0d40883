//! The README, followed as a user follows it: its sections in order, in one working directory,
//! each section's commands run literally by `bash` (with `limmat` on the `PATH`, as the Quick
//! start's `export PATH=…` line puts it), the processes it starts in the background left
//! running for the next sections, as in a shell. Between a block that starts processes and the
//! block that uses them, the test waits for their ports to accept, as a reader would.
//!
//! Not run here: the build line (this test runs on the binary the build made), the SSH lines
//! (they need an SSH server), the forward proxy's lines (they reach example.com, and CI has no
//! Internet) and the TLS section's pass-through line (tested by `e2e_tls`). The device-key
//! lines are also tested by `cli_key`, the demo's commands by `demo`, the inspecting squid's
//! lines by `relay_proxy`.

mod common;
mod readme_common;

use readme_common::{Session, blocks};
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn the_sections_work_in_order() {
    let mut shell = Session::new("sections");

    // Quick start: a relay, a web server and a tunnel, then the two forms of the URL.
    let quick = blocks("Quick start");
    assert!(quick[0].contains("cargo build --release"), "{}", quick[0]);
    assert!(quick[3].contains("ssh -p"), "{}", quick[3]);
    shell.start(&quick[1]);
    shell.wait_ports(&[8180, 8100]);
    let got = shell.run(&quick[2]);
    assert_eq!(got.matches("hello from the device").count(), 2, "{got}");

    // TLS: the recipe's self-signed certificate, a TLS relay, a device verifying it with
    // --ca-file, and curl through it by SNI.
    let tls = blocks("TLS, SNI routing and end-to-end pass-through");
    assert!(
        tls[0].contains("basicConstraints=critical,CA:FALSE"),
        "{}",
        tls[0]
    );
    shell.start(&tls[0]);
    shell.wait_ports(&[8443]);
    let got = shell.run(&tls[1]);
    assert!(got.contains("hello from the device"), "{got}");

    // Behind a corporate proxy: a squid with a password carries a device to the relay.
    let proxy = blocks("Behind a corporate proxy");
    shell.start(&proxy[0]);
    shell.wait_ports(&[3129]);
    shell.start(&proxy[1]);
    let got = shell.run(&proxy[2]);
    assert!(got.contains("hello through the proxy"), "{got}");

    // Device keys: the relays of both kinds start with what the lines made.
    let keys = blocks("Device keys");
    shell.start(&keys[0]);
    shell.wait_ports(&[8280, 8281]);

    // Several services in one agent, on the Quick start's relay and web server (a client
    // waits up to `--client-wait` for the device to register).
    let services = blocks("Several services in one agent");
    shell.start(&services[0]);
    let got = shell.run(&services[1]);
    assert_eq!(got.trim(), "hello from another site", "{got}");

    // The gateway, served locally and through the Quick start's relay.
    let gateway = blocks("The BLE gateway");
    shell.start(&gateway[0]);
    shell.wait_ports(&[8300]);
    let got = shell.run(&gateway[1]);
    let lists: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&got)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {got}"));
    assert_eq!(lists.len(), 2, "{got}");
    let local = lists[0]["self"]["href"].as_str().unwrap_or_default();
    let relayed = lists[1]["self"]["href"].as_str().unwrap_or_default();
    assert_eq!(local, "http://127.0.0.1:8300/beacon/beacons", "{got}");
    assert_eq!(
        relayed, "http://127.0.0.1:8180/gw-zurich-01/beacon/beacons",
        "{got}"
    );

    // Operating a relay: the admin listener of a relay with the keys file made above.
    let operating = blocks("Operating a relay");
    shell.start(&operating[0]);
    shell.wait_ports(&[9380]);
    let got = shell.run(&operating[1]);
    assert!(got.trim_start().starts_with('['), "{got}");
    assert!(got.contains("limmat_waiting_devices 0"), "{got}");
}

/// `examples/gateway.toml` names every key of every section (commented where it has no
/// default), `[sim]` and its `[[sim.beacon]]` and `[[sim.peripheral]]` tables included: each
/// field of the configuration's section types appears as a key.
#[test]
fn the_gateway_example_lists_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join("examples/gateway.toml")).unwrap();
    let mut keys = BTreeSet::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(table) = line.strip_prefix('[') {
            let table = table.trim_matches(|c| c == '[' || c == ']');
            keys.extend(table.split('.').map(str::to_owned));
        } else {
            // `key = value`, and the keys of an inline table `{ a = 1, b = 2 }`.
            for part in line.split(['{', ',']) {
                if let Some((key, _)) = part.split_once('=') {
                    keys.insert(key.trim().to_owned());
                }
            }
        }
    }
    let sources = [
        (
            "crates/limmat-gateway/src/config.rs",
            &[
                "GatewayConfig",
                "GatewaySection",
                "ApiSection",
                "RelaySection",
                "BackendSection",
                "PresenceSection",
                "BeaconsSection",
                "WebhooksSection",
            ][..],
        ),
        ("crates/limmat-gateway/src/listener.rs", &["Limits"][..]),
        (
            "crates/limmat-gateway/src/backend/sim/config.rs",
            &[
                "SimConfig",
                "BeaconConfig",
                "PeripheralConfig",
                "RssiConfig",
            ][..],
        ),
    ];
    let mut missing = Vec::new();
    for (file, structs) in sources {
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        for name in structs {
            let start = source
                .find(&format!("pub struct {name} {{"))
                .unwrap_or_else(|| panic!("{file} has no struct {name}"));
            let body = &source[start..];
            let body = &body[..body.find("\n}").unwrap_or(body.len())];
            let mut rename = None;
            for line in body.lines().map(str::trim) {
                if let Some(to) = line.strip_prefix("#[serde(rename = \"") {
                    rename = to.split('"').next().map(str::to_owned);
                }
                // A field the file cannot set (filled in by the program) is no key.
                if line == "#[serde(skip)]" {
                    rename = Some(String::new());
                }
                let Some(field) = line.strip_prefix("pub ") else {
                    continue;
                };
                let Some((field, _)) = field.split_once(':') else {
                    continue;
                };
                let key = rename.take().unwrap_or_else(|| field.to_owned());
                if !key.is_empty() && !keys.contains(&key) {
                    missing.push(format!("{name}.{key}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "examples/gateway.toml lacks {missing:?}"
    );
}
