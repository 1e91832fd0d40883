//! Strict JSON request bodies (§0, §1.3): `application/json` only (`415`), at most 64 KiB
//! (`413`), well-formed JSON (`400`), and no unknown members (`400` naming the member, via
//! `deny_unknown_fields`).

use crate::api::json_body;
use crate::api::problem::Problem;
use axum::body::Body;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

/// Read and parse a JSON body with the spec's status codes.
pub async fn json<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, Problem> {
    if !json_body::is_json(headers) {
        return Err(json_body::unsupported_type());
    }
    let bytes = json_body::read(body).await?;
    serde_json::from_slice(&bytes).map_err(rejection)
}

/// A serde error as a `400` naming the member at fault where serde says which.
pub fn rejection(e: serde_json::Error) -> Problem {
    let text = e.to_string();
    let named = |marker: &str| {
        text.split_once(marker)
            .and_then(|(_, rest)| rest.strip_prefix('`'))
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_string())
    };
    let field = named("unknown field ")
        .or_else(|| named("missing field "))
        .unwrap_or_else(|| "body".to_string());
    let detail = if e.is_syntax() || e.is_eof() {
        format!("malformed JSON: {text}")
    } else {
        format!("invalid body: {text}")
    };
    Problem::bad_request(&field, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        url: String,
    }

    #[test]
    fn rejections_name_the_member() {
        let e = serde_json::from_str::<Body>(r#"{"url":"x","urll":1}"#).unwrap_err();
        assert_eq!(rejection(e).field.as_deref(), Some("urll"));
        let e = serde_json::from_str::<Body>(r#"{}"#).unwrap_err();
        assert_eq!(rejection(e).field.as_deref(), Some("url"));
        let e = serde_json::from_str::<Body>(r#"{"#).unwrap_err();
        assert_eq!(rejection(e).field.as_deref(), Some("body"));
    }
}
