//! `/openapi.json` checked by third-party tools against the real `limmat gateway` on the
//! simulated backend, with a token: `openapi-spec-validator` validates the document
//! (OpenAPI 3.1, unique operation ids, resolvable references), and a short schemathesis run
//! (every check: the default, spelt out in the settings file rather than as `--checks all`,
//! which would override the per-operation settings below; a bounded number of examples) fails on any answer the
//! document does not describe: a status it does not list, a body that violates its schema, a
//! content type it does not name, a request it calls valid but that is refused, an invalid one
//! that is accepted, a request without the token that is served, or a 5xx other than the
//! spec's `501` for optional features. `scripts/test` installs both tools.

mod common;
mod gateway_common;

use gateway_common::*;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "openapi-test-token";

/// Operations whose parameters exclude or require each other (`active` and `passive`,
/// `connect` or `enable`, `notify` or `indicate`, `noresponse` or `long`), or whose body a
/// schema cannot judge (a webhook URL must pass the SSRF check): schema-valid requests may
/// rightly get `400`, so schemathesis's `positive_data_acceptance` does not apply to them.
/// Every other check does.
const COMBINED: &[&str] = &[
    "GET /gap/nodes",
    "PUT /gap/nodes/{node}",
    "PUT /gatt/nodes/{node}/characteristics/{characteristic}",
    "GET /gatt/nodes/{node}/characteristics/{characteristic}/value",
    "PUT /gatt/nodes/{node}/characteristics/{characteristic}/value",
    "PUT /gatt/nodes/{node}/characteristics/{characteristic}/value/{value}",
    "POST /beacon/subscriptions",
    "PATCH /beacon/subscriptions/{id}",
];

/// A tool from the virtual environment `scripts/test` makes, else from `PATH`.
fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp/.cache"));
    let venv = cache.join("limmat/openapi-venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.exists());
    found.unwrap_or_else(|| panic!("{name} is not installed: run scripts/test --deps-only"))
}

#[test]
fn the_openapi_document_is_valid_and_true() {
    let dir = TempDir::new("gateway-openapi");
    let config = dir.file(
        "gateway.toml",
        &format!(
            "[api]\ntoken = \"{TOKEN}\"\n[gateway]\nstate_dir = \"{}/state\"\n",
            dir.str()
        ),
    );
    let mut gateway = Proc::spawn(&["gateway", "--listen", "127.0.0.1:0", "--config", &config]);
    let base = format!("http://{}", gateway.gateway_addr());
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (status, text) = http("GET", &format!("{base}/openapi.json"), None, &["-H", &auth]);
    assert_eq!(status, 200, "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let file = dir.file("openapi.json", &text);

    // Limmat's own metadata, and a summary on every operation.
    assert_eq!(doc["info"]["license"]["identifier"], "Apache-2.0");
    assert!(doc["info"]["contact"].is_null(), "{}", doc["info"]);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["servers"].is_array());
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        }
    }

    // A real validator.
    let out = Command::new(tool("openapi-spec-validator"))
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openapi-spec-validator: {said}");

    // Schemathesis: a 501 is right for the operations that declare it, nowhere else.
    let mut settings = String::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{} {path}", method.to_uppercase());
            let optional = op["responses"]["501"].is_object();
            let combined = COMBINED.contains(&name.as_str());
            // An event stream never ends: its answer is the status and headers, which arrive
            // at once, so its requests need not wait the whole timeout below.
            let stream_only = op["responses"]["200"]["content"]
                .as_object()
                .is_some_and(|c| c.len() == 1 && c.contains_key("text/event-stream"));
            if optional || combined || stream_only {
                settings += &format!("[[operations]]\ninclude-name = \"{name}\"\n");
            }
            if stream_only {
                settings += "request-timeout = 0.5\n";
            }
            if optional {
                settings += "checks.not_a_server_error.expected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"501\"]\n";
            }
            if combined {
                settings += "checks.positive_data_acceptance.enabled = false\n";
            }
        }
    }
    let settings = dir.file("schemathesis.toml", &settings);
    let mut schemathesis = Command::new(tool("schemathesis"));
    schemathesis.args([
        "--config-file",
        &settings,
        "run",
        &format!("{base}/openapi.json"),
    ]);
    // A failing run prints its seed; `SCHEMATHESIS_SEED=<seed>` replays it.
    if let Some(seed) = std::env::var_os("SCHEMATHESIS_SEED") {
        schemathesis.arg("--seed").arg(seed);
    }
    let out = schemathesis
        // Bounded for CI (about 20 s on two busy cores): the coverage phase's boundary and
        // near-boundary values of every parameter and body, and 2 random examples per
        // operation. A request still unanswered after 3 s (0.5 s for event streams, set
        // above) is an open SSE stream or a long scan, which schemathesis counts as a pass
        // without a body to check; the default 2 s scans and every other answer are checked.
        .args(["--max-examples", "2", "--workers", "2"])
        .args(["--phases", "coverage,fuzzing", "--request-timeout", "3"])
        .args(["--max-failures", "20", "--header", &auth])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gateway);
}
