//! The files in `deploy/` stay in step with the binary: the systemd unit keeps its hardening,
//! and every flag that the unit, the Kubernetes manifest and the Dockerfile pass to
//! `limmat relay` is one that `limmat relay --help` lists, so renaming a flag breaks this test.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn deploy_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `--flag` names among whitespace-, quote- or comma-separated words.
fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '[' || c == ']')
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.split('=').next().unwrap().to_owned())
        .collect()
}

/// The flags `limmat relay --help` lists.
fn relay_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args(["relay", "--help"])
        .output()
        .expect("limmat runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags = flags_in(&help.replace(['<', '['], " "));
    assert!(flags.contains("--listen"), "{help}");
    flags
}

fn assert_known(file: &str, used: &BTreeSet<String>) {
    let known = relay_flags();
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "{file} uses unknown flags {unknown:?}");
}

/// The unit's `ExecStart=` command line, continuation lines joined.
fn exec_start(unit: &str) -> String {
    let start = unit.find("\nExecStart=").expect("ExecStart=") + 1;
    let mut command = String::new();
    for line in unit[start..].lines() {
        match line.strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(line);
                break;
            }
        }
    }
    command
}

#[test]
fn systemd_unit_is_hardened_and_its_flags_exist() {
    let unit = deploy_file("systemd/limmat-relay.service");
    for setting in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
        "SystemCallFilter=@system-service",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictNamespaces=yes",
        "LimitNOFILE=1048576",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredential=",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    let command = exec_start(&unit);
    assert!(command.contains("limmat relay "), "{command}");
    let used = flags_in(&command);
    assert!(used.contains("--drain-timeout"), "{command}");
    assert_known("limmat-relay.service", &used);
}

#[test]
fn kubernetes_and_docker_flags_exist() {
    let manifest = deploy_file("kubernetes/relay.yaml");
    // Only list items (`- --flag`) are arguments; comments may mention flags freely.
    let args: String = manifest
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- --"))
        .map(|flag| format!(" --{flag}"))
        .collect();
    let used = flags_in(&args);
    for flag in [
        "--listen",
        "--admin",
        "--admin-token-file",
        "--drain-timeout",
    ] {
        assert!(used.contains(flag), "relay.yaml does not pass {flag}");
    }
    assert_known("relay.yaml", &used);
    for probe in ["path: /healthz", "path: /readyz"] {
        assert!(manifest.contains(probe), "relay.yaml lacks {probe:?}");
    }

    let dockerfile = deploy_file("docker/Dockerfile");
    let cmd = dockerfile
        .lines()
        .find(|line| line.starts_with("CMD "))
        .expect("a CMD line");
    assert!(cmd.contains("\"relay\""), "{cmd}");
    assert_known("Dockerfile", &flags_in(cmd));
}
