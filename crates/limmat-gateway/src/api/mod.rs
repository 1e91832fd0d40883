//! The gateway's HTTP API (`gateway-api.md` §1.3, §2, §3): one axum router served on the local
//! listener and on every relay connection. The parts are independent routers, each with its
//! own state ([`gap`] and [`gatt`] over the BLE layer, [`beacon`] over the beacon pipeline),
//! merged here with what all of them share:
//!
//! - the relay prefix (§1.2): `/<domain>/<path>` is served as `/<path>`, and the prefix the
//!   request came with is remembered so links keep working through the relay;
//! - absolute links ([`Base`]): `api.public_base_url`, or `http://` + `Host` + prefix;
//! - the bearer token (§1.3), also accepted as `access_token` for `EventSource`;
//! - the OpenAPI document (3.1), generated from the handlers' annotations (`/openapi.json`);
//! - `405` answers as problem documents with `Allow` (axum's own have no body).

pub mod beacon;
pub mod gap;
pub mod gatt;
pub mod index;
pub mod json_body;
pub mod openapi;
pub mod openapi_schemas;
pub mod problem;
pub mod query;
pub mod sse;
pub mod target;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use problem::Problem;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use utoipa_axum::router::OpenApiRouter;

/// What the shared middleware needs to know.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// The relay domain, when the gateway is reachable through a relay in path form.
    pub domain: Option<String>,
    /// `api.token`.
    pub token: Option<String>,
    /// `api.public_base_url`.
    pub public_base_url: Option<String>,
}

/// The absolute base of links for this request, without a trailing slash:
/// `http://relay.example/gw-zurich-01` through a relay in path form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base(pub String);

impl Base {
    /// `base + path`, where `path` starts with `/`.
    pub fn href(&self, path: &str) -> String {
        format!("{}{}", self.0, path)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Base, Problem> {
        Ok(parts
            .extensions
            .get::<Base>()
            .cloned()
            .unwrap_or_else(|| Base(String::new())))
    }
}

/// The parts served over the BLE layer: the index, GAP and GATT.
pub fn ble_parts(ble: Arc<crate::ble::Ble>, info: index::IndexInfo) -> Vec<OpenApiRouter> {
    vec![
        index::routes(ble.clone(), info),
        gap::routes(ble.clone()),
        gatt::routes(ble),
    ]
}

/// A `200` with a JSON body: the answer of every GAP/GATT resource.
pub(crate) fn json(value: serde_json::Value) -> Response {
    axum::Json(value).into_response()
}

/// Merge the API's parts (each already given its state) into the served router.
pub fn router(settings: ApiSettings, parts: Vec<OpenApiRouter>) -> Router {
    let mut api = OpenApiRouter::new();
    for part in parts {
        api = api.merge(part);
    }
    let (router, doc) = api.split_for_parts();
    let doc = Arc::new(openapi::complete(doc, settings.token.is_some()));
    let router = router.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json((*doc).clone()) }
        }),
    );
    let routed = router.fallback(|| async { Problem::not_found("no such resource") });
    // These run around routing (a `Router::layer` runs per route: too late to strip the
    // prefix, and too early to see the `Allow` a method router adds), so they wrap the routed
    // service whole.
    let methods = middleware::from_fn(method_problem);
    let bodies = middleware::from_fn(body_rules);
    let settings = Arc::new(settings);
    let shared = middleware::from_fn(move |req: Request, next: Next| {
        let settings = settings.clone();
        async move { shared(settings, req, next).await }
    });
    Router::new().fallback_service(shared.layer(bodies.layer(methods.layer(routed))))
}

/// Prefix stripping, link base and authentication, before routing.
async fn shared(settings: Arc<ApiSettings>, mut req: Request, next: Next) -> Response {
    let (path, prefix) = strip_prefix(req.uri().path(), settings.domain.as_deref());
    if let Some(path) = path {
        let rest = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        match Uri::builder().path_and_query(rest).build() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => {
                return Problem::bad_request("path", "malformed request target").into_response();
            }
        }
    }
    let base = match &settings.public_base_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()))
                .unwrap_or("localhost");
            format!("http://{host}{prefix}")
        }
    };
    req.extensions_mut().insert(Base(base));
    if let Some(token) = &settings.token
        && !authorized(&req, token)
    {
        return Problem::unauthorized().into_response();
    }
    if let Some(uri) = without_access_token(req.uri()) {
        *req.uri_mut() = uri;
    }
    next.run(req).await
}

/// The URI without `access_token`, which authentication consumed (handlers refuse parameters
/// they do not know); `None` when there is none.
fn without_access_token(uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    let is_token = |pair: &&str| pair.split('=').next() == Some("access_token");
    if !query.split('&').any(|p| is_token(&p)) {
        return None;
    }
    let rest: Vec<&str> = query.split('&').filter(|p| !is_token(p)).collect();
    let target = match rest.is_empty() {
        true => uri.path().to_string(),
        false => format!("{}?{}", uri.path(), rest.join("&")),
    };
    Uri::builder().path_and_query(target).build().ok()
}

/// §1.3 for every route at once: a request that carries a body must say it is
/// `application/json` (`415`), and one that declares more than 64 KiB gets `413` unread.
/// (Handlers that read bodies enforce the limit on what actually arrives, see [`json_body`].)
async fn body_rules(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let has_body = length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    if length.is_some_and(|n| n > json_body::LIMIT as u64) {
        return json_body::too_large().into_response();
    }
    if has_body && !json_body::is_json(headers) {
        return json_body::unsupported_type().into_response();
    }
    next.run(req).await
}

/// axum answers an unsupported method with a bodiless `405`; give it the problem body §1.3
/// asks for, keeping its `Allow`.
async fn method_problem(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Problem::method_not_allowed(&allow).into_response()
}

/// `(rewritten path, prefix)`: `/<domain>/x` → (`/x`, `/<domain>`), compared case-insensitively
/// and only up to a segment boundary; other paths are left alone.
fn strip_prefix(path: &str, domain: Option<&str>) -> (Option<String>, String) {
    let Some(domain) = domain else {
        return (None, String::new());
    };
    let Some(rest) = path.strip_prefix('/') else {
        return (None, String::new());
    };
    let (first, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !first.eq_ignore_ascii_case(domain) {
        return (None, String::new());
    }
    let tail = if tail.is_empty() { "/" } else { tail };
    (Some(tail.to_string()), format!("/{first}"))
}

fn authorized(req: &Request, token: &str) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| {
            let mut params = query::Params::parse(req.uri().query()).ok()?;
            params.scalar("access_token").ok().flatten()
        });
    presented.is_some_and(|p| p.as_bytes().ct_eq(token.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::strip_prefix;

    #[test]
    fn prefix_is_stripped_at_segment_boundaries_only() {
        let d = Some("gw-01");
        assert_eq!(
            strip_prefix("/gw-01/gap/nodes", d),
            (Some("/gap/nodes".into()), "/gw-01".into())
        );
        assert_eq!(
            strip_prefix("/GW-01", d),
            (Some("/".into()), "/GW-01".into())
        );
        assert_eq!(strip_prefix("/gw-01x/gap", d), (None, String::new()));
        assert_eq!(strip_prefix("/gap/nodes", d), (None, String::new()));
        assert_eq!(strip_prefix("/gap/nodes", None), (None, String::new()));
    }
}
