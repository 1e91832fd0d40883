//! `GET /openapi.json` (`gateway-api.md` §1.3): the OpenAPI 3.1 document utoipa generates from
//! the handlers' annotations, completed with what holds for every operation because the shared
//! middleware and the listener do it, not the handler:
//!
//! - Limmat's `info` (title, version, licence), `servers`, and the bearer token
//!   (`api.token`, also as `access_token`) as `securitySchemes`, required when a token is set;
//! - the problem answers every operation can give: `400` (an unknown or repeated query
//!   parameter), `401` with a token, `404` on paths with parameters, `408` for a body that
//!   arrives too slowly, `413` and `415` (body rules), `503` (request timeout);
//! - the ranges and patterns the extractors check, for parameters declared in many places.
//!
//! A test runs a real OpenAPI validator on the result and schemathesis against a gateway.

use serde_json::{Map, Value, json};

/// The document for a gateway with (or without) `api.token`.
pub fn complete(doc: utoipa::openapi::OpenApi, token: bool) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    doc["info"] = json!({
        "title": "Limmat gateway API",
        "version": env!("CARGO_PKG_VERSION"),
        "summary": "GAP/GATT REST and the Limmat Beacon API of a Limmat BLE gateway",
        "description": "The HTTP API of `limmat gateway`: the Bluetooth SIG GAP/GATT REST API \
            (scan, connect, discover, read, write, notifications as Server-Sent Events) and the \
            Limmat Beacon API (present beacons, a live event stream, signed webhook \
            subscriptions). Errors are RFC 9457 problem documents.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    });
    doc["servers"] = json!([{
        "url": "/",
        "description": "This gateway, on its local listener or through its relay (`http://<relay>/<domain>/`)",
    }]);
    if !doc["components"]["securitySchemes"].is_object() {
        doc["components"]["securitySchemes"] = json!({});
    }
    let schemes = object(&mut doc["components"], "securitySchemes");
    schemes.insert(
        "bearer".into(),
        json!({"type": "http", "scheme": "bearer",
               "description": "`api.token`, as `Authorization: Bearer <token>`"}),
    );
    schemes.insert(
        "accessToken".into(),
        json!({"type": "apiKey", "in": "query", "name": "access_token",
               "description": "`api.token` as a query parameter, for `EventSource`"}),
    );
    if token {
        doc["security"] = json!([{"bearer": []}, {"accessToken": []}]);
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (_, op) in item.iter_mut() {
                operation(path, op, token);
            }
        }
    }
    doc
}

fn object<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !value[key].is_object() {
        value[key] = json!({});
    }
    match value[key].as_object_mut() {
        Some(map) => map,
        None => unreachable!("just made an object"),
    }
}

/// 12 hex digits or the colon form of a Bluetooth address (`address.rs`).
const ADDRESS: &str = r"[0-9A-Fa-f]{12}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}";
/// A 16- or 32-bit UUID (optionally `0x`) or the 128-bit form (`uuid.rs`).
const UUID: &str = r"(?:0[xX])?(?:[0-9A-Fa-f]{4}|[0-9A-Fa-f]{8})|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";
/// The event types of `/beacon/events` (`events::TYPES`).
const TYPE: &str = r"beacon\.(?:entered|updated|left|telemetry)";
/// The beacon format names (`beacon::Format::as_str`).
const FORMAT: &str = r"ibeacon|altbeacon|eddystone-(?:uid|url|tlm|eid)";

/// A value that is one `item`.
fn one(item: &str) -> Value {
    json!({"pattern": format!("^(?:{item})$")})
}

/// What `query::Params::list` accepts when each item must be an `item`: comma-separated items,
/// empty ones skipped (`a,,b`, a trailing comma, nothing at all).
pub fn list_pattern(item: &str) -> String {
    format!("^,*(?:(?:{item})(?:,+(?:{item}))*)?,*$")
}

fn list(item: &str) -> Value {
    json!({"pattern": list_pattern(item)})
}

/// What the extractors of `target.rs`, `query.rs` and the handlers accept, as JSON Schema, for
/// a parameter `name` in `place`.
fn constraints(place: &str, name: &str) -> Option<Value> {
    let value = match (place, name) {
        ("path", "node") => one(ADDRESS),
        ("path", "service" | "characteristic" | "descriptor") => one("[0-9A-Fa-f]{4}"),
        ("path", "value") => one("(?:[0-9A-Fa-f]{2}){1,512}"),
        ("query", "duration" | "timeout") => json!({"minimum": 100, "maximum": 30000}),
        ("query", "limit") => json!({"minimum": 1, "maximum": 500}),
        ("query", "minRssi" | "filter_rssi") => json!({"minimum": -127, "maximum": 20}),
        // Sequence numbers are `int64` on the wire; the handler refuses larger ones.
        ("query", "lastEventId") => json!({"minimum": 0, "maximum": i64::MAX}),
        ("query", "uuid") => one(UUID),
        ("query", "type") => list(TYPE),
        ("query", "format") => list(FORMAT),
        ("query", "filter_mac") => list(ADDRESS),
        ("query", "filter_uuid") => list(UUID),
        ("query", "filter_company") => list("[0-9A-Fa-f]{4}"),
        _ => return None,
    };
    Some(value)
}

fn operation(path: &str, op: &mut Value, token: bool) {
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for param in params {
            let (Some(place), Some(name)) = (param["in"].as_str(), param["name"].as_str()) else {
                continue;
            };
            if let (Some(Value::Object(extra)), Some(schema)) =
                (constraints(place, name), param["schema"].as_object_mut())
            {
                schema.extend(extra);
            }
        }
    }
    let body = op.get("requestBody").is_some();
    let responses = object(op, "responses");
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status)
            .or_insert_with(|| problem(description));
    };
    add(
        "400",
        "Malformed input: an unknown, repeated or out-of-range parameter",
    );
    if token {
        add(
            "401",
            "`api.token` is set and the token is missing or wrong",
        );
    }
    if path.contains('{') {
        add("404", "No such resource");
    }
    if body {
        add("408", "The request body arrived too slowly (`api.limits`)");
    }
    add("413", "A request body over 64 KiB");
    add("415", "A request body that is not `application/json`");
    add(
        "503",
        "The handler did not answer within `api.limits.request_timeout_s`, or the state database cannot accept writes",
    );
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    })
}
