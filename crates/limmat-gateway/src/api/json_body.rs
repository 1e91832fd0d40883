//! JSON request bodies (`gateway-api.md` §0, §1.3): `application/json` only (else `415`), at
//! most 64 KiB (else `413`), valid JSON (else `400`), and no member the handler does not know
//! (else `400` naming it), so a typo in a body fails as loudly as one in a query.

use super::problem::Problem;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

/// The largest body accepted.
pub const LIMIT: usize = 64 * 1024;

/// Read and decode an optional JSON body: `Ok(None)` when it is empty. `members` are the names
/// the type knows; any other gets `400` naming it.
pub async fn optional<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    members: &[&str],
) -> Result<Option<T>, Problem> {
    let bytes = read(body).await?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if !is_json(headers) {
        return Err(unsupported_type());
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request("body", format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(object) = &value else {
        return Err(Problem::bad_request(
            "body",
            "the body must be a JSON object",
        ));
    };
    if let Some(unknown) = object.keys().find(|k| !members.contains(&k.as_str())) {
        return Err(Problem::bad_request(
            unknown,
            format!("unknown body member `{unknown}`"),
        ));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| Problem::bad_request(member_at_fault(&e, members), e.to_string()))
}

/// The whole body, at most [`LIMIT`] bytes: `413` beyond, `408` when it arrives too slowly
/// (`api.limits`), `400` when it cannot be read.
pub async fn read(body: Body) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, LIMIT).await.map_err(|e| {
        let e = e.into_inner();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
        while let Some(c) = cause {
            if c.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            if c.is::<tower_http::timeout::TimeoutError>() || c.is::<crate::listener::TooSlow>() {
                return Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body-timeout",
                    format!("the request body arrived too slowly: {c}"),
                );
            }
            cause = c.source();
        }
        Problem::bad_request("body", "the request body could not be read")
    })
}

/// `413`.
pub fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("request bodies are limited to {LIMIT} bytes"),
    )
}

/// `415`.
pub fn unsupported_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "request bodies must be application/json",
    )
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// serde names the member in its message (`invalid type: … for key \`x\``) only sometimes;
/// pick the first known member it mentions, else `body`.
fn member_at_fault<'a>(error: &serde_json::Error, members: &[&'a str]) -> &'a str {
    let text = error.to_string();
    members
        .iter()
        .find(|m| text.contains(&format!("`{m}`")))
        .copied()
        .unwrap_or("body")
}
