//! The files in `deploy/` stay in step with the binary: the systemd units keep their hardening,
//! and every flag that the units, the Kubernetes manifest and the Dockerfile pass to
//! `limmat relay`, `tunnel` or `gateway` is one that its `--help` lists, so renaming a flag
//! breaks this test.

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
    let flags = command_flags("relay");
    assert!(flags.contains("--listen"), "{flags:?}");
    flags
}

/// The flags `limmat COMMAND --help` lists.
fn command_flags(command: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_limmat"))
        .args([command, "--help"])
        .output()
        .expect("limmat runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags = flags_in(&help.replace(['<', '['], " "));
    assert!(flags.contains("--help"), "{help}");
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

/// What every unit has: a sandbox, and a graceful stop by SIGTERM.
const HARDENING: [&str; 13] = [
    "DynamicUser=yes",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
    "SystemCallFilter=@system-service",
    "MemoryDenyWriteExecute=yes",
    "KillSignal=SIGTERM",
];

/// Issue 12: the device units, `limmat-tunnel@.service` and `limmat-gateway.service`, are
/// sandboxed without any capability and pass only flags their command has.
#[test]
fn device_units_are_hardened_and_their_flags_exist() {
    for (file, command, needs) in [
        (
            "systemd/limmat-tunnel@.service",
            "tunnel",
            "EnvironmentFile=/etc/limmat/tunnel-%i.env",
        ),
        (
            "systemd/limmat-gateway.service",
            "gateway",
            "StateDirectory=limmat-gateway",
        ),
    ] {
        let unit = deploy_file(file);
        for setting in HARDENING
            .iter()
            .chain([&needs, &"CapabilityBoundingSet=\n"])
        {
            assert!(unit.contains(setting), "{file} lacks {setting:?}");
        }
        let line = exec_start(&unit);
        assert!(line.contains(&format!("limmat {command} ")), "{line}");
        let used = flags_in(&line);
        let known = command_flags(command);
        let unknown: Vec<_> = used.difference(&known).collect();
        assert!(unknown.is_empty(), "{file} uses unknown flags {unknown:?}");
    }
}

#[test]
fn systemd_unit_is_hardened_and_its_flags_exist() {
    let unit = deploy_file("systemd/limmat-relay.service");
    for setting in HARDENING {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    for setting in [
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
        "LockPersonality=yes",
        "RestrictNamespaces=yes",
        "LimitNOFILE=1048576",
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
    // Probes only on those two: every other admin path needs the token.
    let probe_paths = manifest.matches("httpGet: {path: ").count();
    assert_eq!(probe_paths, 2, "relay.yaml probes other paths");
}

/// Issue 14: the manifest is a cluster. A StatefulSet whose pod names are the node ids and
/// pick each pod's public host, a headless Service (listing pods that are not ready yet) as
/// the one seed, the cluster secret from a Secret, the internal and admin listeners on the
/// pod network, and one Service per pod for the devices redirected to it.
#[test]
fn kubernetes_manifest_is_a_cluster() {
    let manifest = deploy_file("kubernetes/relay.yaml");
    let documents: Vec<&str> = manifest.split("\n---\n").collect();
    let kind = |k: &str| -> Vec<&str> {
        documents
            .iter()
            .copied()
            .filter(|d| d.contains(&format!("\nkind: {k}\n")))
            .collect()
    };
    assert!(kind("Deployment").is_empty(), "a cluster has no Deployment");
    let [set] = kind("StatefulSet")[..] else {
        panic!("one StatefulSet")
    };
    assert!(set.contains("replicas: 3"), "{set}");
    let service_name = set
        .lines()
        .find_map(|l| l.trim().strip_prefix("serviceName: "))
        .expect("serviceName");
    let headless = kind("Service")
        .into_iter()
        .find(|d| d.contains(&format!("name: {service_name}\n")))
        .expect("the StatefulSet's Service");
    assert!(headless.contains("clusterIP: None"), "{headless}");
    assert!(
        headless.contains("publishNotReadyAddresses: true"),
        "{headless}"
    );
    assert!(
        headless.contains("protocol: UDP"),
        "gossip is UDP: {headless}"
    );
    // The downward API gives the pod's name and address.
    for field in ["fieldPath: metadata.name", "fieldPath: status.podIP"] {
        assert!(set.contains(field), "the StatefulSet lacks {field}");
    }
    let args: Vec<&str> = set
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- --"))
        .collect();
    let arg = |flag: &str| -> &str {
        args.iter()
            .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("the StatefulSet does not pass --{flag}=…"))
    };
    assert_eq!(arg("node-id"), "$(POD_NAME)");
    assert!(arg("public-host").starts_with("$(POD_NAME)."));
    assert!(arg("internal-listen").starts_with("$(POD_IP):"));
    assert!(arg("admin").starts_with("$(POD_IP):"));
    assert!(
        arg("cluster-seed").starts_with(&format!("{service_name}.")),
        "the seed is the headless Service"
    );
    let secret = arg("cluster-secret-file");
    assert!(secret.starts_with("/etc/limmat/cluster/"), "{secret}");
    assert!(set.contains("secretName: limmat-cluster-secret"), "{set}");
    assert!(
        kind("Secret")
            .iter()
            .any(|d| d.contains("name: limmat-cluster-secret\n"))
    );
    // A Service per pod, for the redirected devices.
    for pod in 0..3 {
        let selector = format!("statefulset.kubernetes.io/pod-name: limmat-relay-{pod}");
        assert!(
            kind("Service").iter().any(|d| d.contains(&selector)),
            "no Service for limmat-relay-{pod}"
        );
    }
    assert!(kind("PodDisruptionBudget")[0].contains("maxUnavailable: 1"));
}

#[test]
fn the_docker_image_runs_the_relay() {
    let dockerfile = deploy_file("docker/Dockerfile");
    let cmd = dockerfile
        .lines()
        .find(|line| line.starts_with("CMD "))
        .expect("a CMD line");
    assert!(cmd.contains("\"relay\""), "{cmd}");
    assert_known("Dockerfile", &flags_in(cmd));
}

/// Issue 12: what ships is stripped: the release profile strips symbols and debug info, and the
/// Dockerfile copies the release build.
#[test]
fn the_release_build_is_stripped_and_the_image_ships_it() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
            .unwrap();
    let release = manifest
        .split("[profile.release]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [profile.release] table");
    assert!(release.contains("strip = \"symbols\""), "{release}");
    assert!(release.contains("debug = false"), "{release}");
    let dockerfile = deploy_file("docker/Dockerfile");
    assert!(dockerfile.contains("cargo build --release"), "{dockerfile}");
    assert!(
        dockerfile.contains("cp target/release/limmat /limmat"),
        "{dockerfile}"
    );
}
