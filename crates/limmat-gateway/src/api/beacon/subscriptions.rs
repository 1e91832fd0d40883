//! Webhook subscriptions (§3.1, §3.7): create, list, read, change, delete, ping and secret
//! rotation. Bodies are strict ([`super::body`]); the secret appears only in the `201` of a
//! creation and in the answer of a rotation; storage failures are `503`.

use super::body;
use super::{params, store_problem};
use crate::api::Base;
use crate::api::problem::Problem;
use crate::events::{Filter, Href, TYPES, new_id, timestamp};
use crate::pipeline::Beacons;
use crate::store::blocking;
use crate::store::records::{BatchSpec, Delivery, Secret, Subscription};
use crate::store::subscriptions::SubscriptionView;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// `filter` in a request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterBody {
    pub formats: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    pub min_rssi: Option<i16>,
}

/// `batch` in a request body.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchBody {
    pub max_events: u32,
    pub max_delay_ms: u64,
}

/// `POST /beacon/subscriptions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBody {
    pub url: String,
    #[schema(value_type = Option<Vec<String>>)]
    pub types: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub filter: Option<FilterBody>,
    #[schema(value_type = Option<Object>)]
    pub batch: Option<BatchBody>,
    pub secret: Option<String>,
    pub description: Option<String>,
}

/// `PATCH /beacon/subscriptions/{id}`: members present are changed; `batch: null` removes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchBody {
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    pub types: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub filter: Option<FilterBody>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub batch: Option<Option<BatchBody>>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
}

fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The JSON of a subscription (§3.7).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionJson<'a> {
    #[serde(rename = "self")]
    self_: Href,
    id: &'a str,
    url: &'a str,
    types: Vec<&'a str>,
    filter: FilterJson<'a>,
    batch: Option<BatchSpec>,
    description: Option<&'a str>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    status: &'static str,
    disabled_reason: Option<&'a str>,
    delivery: DeliveryJson<'a>,
    dead_letters: Href,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FilterJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    formats: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_rssi: Option<i16>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryJson<'a> {
    pending: u64,
    in_flight: Option<&'a str>,
    delivered: u64,
    failed_attempts: u64,
    coalesced: u64,
    dead_letters: u64,
    consecutive_failures: u32,
    last_attempt_at: Option<String>,
    last_success_at: Option<String>,
    next_attempt_at: Option<String>,
    last_status: Option<u16>,
    last_error: Option<&'a str>,
}

fn some_if(list: &[String]) -> Option<&[String]> {
    (!list.is_empty()).then_some(list)
}

fn json_of<'a>(
    base: &Base,
    v: &'a SubscriptionView,
    secret: Option<&'a str>,
) -> SubscriptionJson<'a> {
    let s = &v.sub;
    let d: &Delivery = &s.delivery;
    let href = base.href(&format!("/beacon/subscriptions/{}", s.id));
    SubscriptionJson {
        dead_letters: Href {
            href: format!("{href}/dead-letters"),
        },
        self_: Href { href },
        id: &s.id,
        url: &s.url,
        types: if s.filter.types.is_empty() {
            TYPES.to_vec()
        } else {
            s.filter.types.iter().map(String::as_str).collect()
        },
        filter: FilterJson {
            formats: some_if(&s.filter.formats),
            keys: some_if(&s.filter.keys),
            min_rssi: s.filter.min_rssi,
        },
        batch: s.batch,
        description: s.description.as_deref(),
        created_at: timestamp(s.created_ms),
        secret,
        status: s.status(),
        disabled_reason: s.disabled_reason.as_deref(),
        delivery: DeliveryJson {
            pending: v.pending,
            in_flight: v.in_flight.as_deref(),
            delivered: d.delivered,
            failed_attempts: d.failed_attempts,
            coalesced: d.coalesced,
            dead_letters: d.dead_letters,
            consecutive_failures: d.consecutive_failures,
            last_attempt_at: d.last_attempt_ms.map(timestamp),
            last_success_at: d.last_success_ms.map(timestamp),
            next_attempt_at: d.next_attempt_ms.map(timestamp),
            last_status: d.last_status,
            last_error: d.last_error.as_deref(),
        },
    }
}

/// Validate a subscription URL: the rules of §3.7 and the registration SSRF check of §5.8.
async fn check_url(url: &str, allow: &[String]) -> Result<(), Problem> {
    use crate::webhook::ssrf::{AllowList, SsrfError, check_registration};
    // `allow_networks` was validated with the configuration; an entry that does not parse
    // allows nothing.
    let allow = AllowList::parse(allow).unwrap_or_default();
    match check_registration(url, &allow).await {
        Ok(()) => Ok(()),
        Err(SsrfError::Denied(what)) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "url-not-allowed",
            format!("{what} is not an allowed destination"),
        )
        .with_field("url")),
        Err(e) => Err(Problem::bad_request("url", e.to_string())),
    }
}

fn check_types(types: &[String]) -> Result<(), Problem> {
    if types.is_empty() {
        return Err(Problem::bad_request("types", "`types` is empty"));
    }
    match types.iter().find(|t| !TYPES.contains(&t.as_str())) {
        Some(t) => Err(Problem::bad_request(
            "types",
            format!("unknown event type `{t}`"),
        )),
        None => Ok(()),
    }
}

fn apply_filter(filter: &mut Filter, body: FilterBody) -> Result<(), Problem> {
    if let Some(formats) = body.formats {
        if formats.is_empty() {
            return Err(Problem::bad_request("filter.formats", "`formats` is empty"));
        }
        if let Some(f) = formats
            .iter()
            .find(|f| crate::beacon::Format::from_name(f).is_none())
        {
            return Err(Problem::bad_request(
                "filter.formats",
                format!("unknown format `{f}`"),
            ));
        }
        filter.formats = formats;
    }
    if let Some(keys) = body.keys {
        if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
            return Err(Problem::bad_request("filter.keys", "empty key list or key"));
        }
        filter.keys = keys;
    }
    if let Some(min) = body.min_rssi {
        if !(-127..=20).contains(&min) {
            return Err(Problem::bad_request(
                "filter.minRssi",
                "`minRssi` must be -127 to 20",
            ));
        }
        filter.min_rssi = Some(min);
    }
    Ok(())
}

fn check_batch(batch: BatchBody) -> Result<BatchSpec, Problem> {
    if !(1..=1000).contains(&batch.max_events) {
        return Err(Problem::bad_request(
            "batch.maxEvents",
            "`maxEvents` must be 1 to 1000",
        ));
    }
    if batch.max_delay_ms > 60_000 {
        return Err(Problem::bad_request(
            "batch.maxDelayMs",
            "`maxDelayMs` must be 0 to 60000",
        ));
    }
    Ok(BatchSpec {
        max_events: batch.max_events,
        max_delay_ms: batch.max_delay_ms,
    })
}

fn check_description(d: &Option<String>) -> Result<(), Problem> {
    match d {
        Some(d) if d.chars().count() > 256 => Err(Problem::bad_request(
            "description",
            "`description` is longer than 256 characters",
        )),
        _ => Ok(()),
    }
}

/// `whsec_` + base64 of 24–64 bytes.
fn check_secret(secret: &str) -> Result<(), Problem> {
    match crate::store::delivery::secret_key(secret) {
        Some(key) if (24..=64).contains(&key.len()) => Ok(()),
        _ => Err(Problem::bad_request(
            "secret",
            "`secret` must be whsec_ + base64 of 24 to 64 bytes",
        )),
    }
}

/// A new secret: 32 bytes from the OS CSPRNG.
fn generate_secret() -> Result<String, Problem> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no randomness for a secret",
        )
    })?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// Create a subscription: `201`, `Location`, and the secret (this once).
#[utoipa::path(operation_id = "create_subscription", post, path = "/beacon/subscriptions", tag = "beacon", request_body = CreateBody,
    responses((status = 201, description = "Created; the body includes the secret, shown only here"),
        (status = 400, description = "Invalid body or URL not allowed"), (status = 409, description = "max_subscriptions reached"),
        (status = 413, description = "Body over 64 KiB"), (status = 415, description = "Not application/json"),
        (status = 503, description = "The state database cannot accept writes")))]
pub async fn create(
    State(beacons): State<Beacons>,
    base: Base,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    req: Body,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    let b: CreateBody = body::json(&headers, req).await?;
    check_url(&b.url, &beacons.settings().allow_networks).await?;
    let mut filter = Filter::default();
    if let Some(types) = b.types {
        check_types(&types)?;
        filter.types = types;
    }
    if let Some(f) = b.filter {
        apply_filter(&mut filter, f)?;
    }
    let batch = b.batch.map(check_batch).transpose()?;
    check_description(&b.description)?;
    let secret = match b.secret {
        Some(s) => {
            check_secret(&s)?;
            s
        }
        None => generate_secret()?,
    };
    let sub = Subscription {
        id: new_id("sub"),
        url: b.url,
        filter,
        batch,
        secrets: vec![Secret {
            value: secret.clone(),
            until_ms: None,
        }],
        description: b.description,
        created_ms: beacons.now_ms(),
        disabled_reason: None,
        delivery: Delivery::default(),
    };
    let view = blocking(beacons.store(), move |s| s.create_subscription(sub))
        .await
        .map_err(store_problem)?;
    let json = json_of(&base, &view, Some(&secret));
    let location = HeaderValue::from_str(&json.self_.href)
        .map_err(|_| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "bad link"))?;
    let mut response = (StatusCode::CREATED, Json(&json)).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// The subscriptions, without secrets.
#[utoipa::path(operation_id = "list_subscriptions", get, path = "/beacon/subscriptions", tag = "beacon",
    responses((status = 200, description = "`{self, subscriptions}`")))]
pub async fn list(
    State(beacons): State<Beacons>,
    base: Base,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    let views = beacons.store().subscriptions();
    #[derive(Serialize)]
    struct List<'a> {
        #[serde(rename = "self")]
        self_: Href,
        subscriptions: Vec<SubscriptionJson<'a>>,
    }
    let list = List {
        self_: Href {
            href: base.href("/beacon/subscriptions"),
        },
        subscriptions: views.iter().map(|v| json_of(&base, v, None)).collect(),
    };
    Ok(Json(&list).into_response())
}

fn find(beacons: &Beacons, id: &str) -> Result<SubscriptionView, Problem> {
    beacons
        .store()
        .subscription(id)
        .ok_or_else(|| Problem::not_found(format!("no subscription {id}")))
}

/// One subscription with its delivery status, without its secret.
#[utoipa::path(operation_id = "get_subscription", get, path = "/beacon/subscriptions/{id}", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>")),
    responses((status = 200, description = "The subscription"), (status = 404, description = "No such subscription")))]
pub async fn get(
    State(beacons): State<Beacons>,
    base: Base,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    let view = find(&beacons, &id)?;
    Ok(Json(&json_of(&base, &view, None)).into_response())
}

/// Change `url`, `types`, `filter`, `batch`, `description` or `enabled`.
#[utoipa::path(operation_id = "patch_subscription", patch, path = "/beacon/subscriptions/{id}", tag = "beacon", request_body = PatchBody,
    params(("id" = String, Path, description = "sub_<ULID>")),
    responses((status = 200, description = "The changed subscription"), (status = 404, description = "No such subscription")))]
pub async fn patch(
    State(beacons): State<Beacons>,
    base: Base,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    req: Body,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    let current = find(&beacons, &id)?;
    let b: PatchBody = body::json(&headers, req).await?;
    if let Some(url) = &b.url {
        check_url(url, &beacons.settings().allow_networks).await?;
    }
    let mut filter = current.sub.filter.clone();
    if let Some(types) = b.types {
        check_types(&types)?;
        filter.types = types;
    }
    if let Some(f) = b.filter {
        apply_filter(&mut filter, f)?;
    }
    let batch = match b.batch {
        Some(Some(batch)) => Some(Some(check_batch(batch)?)),
        Some(None) => Some(None),
        None => None,
    };
    check_description(&b.description)?;
    let now = beacons.now_ms();
    let (url, description, enabled) = (b.url, b.description, b.enabled);
    let sid = id.clone();
    let view = blocking(beacons.store(), move |s| {
        s.update_subscription(&sid, now, |sub| {
            if let Some(url) = url {
                sub.url = url;
            }
            sub.filter = filter;
            if let Some(batch) = batch {
                sub.batch = batch;
            }
            if description.is_some() {
                sub.description = description;
            }
            match enabled {
                Some(true) => sub.disabled_reason = None,
                Some(false) if sub.enabled() => sub.disabled_reason = Some("manual".into()),
                _ => {}
            }
        })
    })
    .await
    .map_err(store_problem)?;
    beacons.wake_scheduler();
    Ok(Json(&json_of(&base, &view, None)).into_response())
}

/// Drop a subscription, its queue and its dead letters.
#[utoipa::path(operation_id = "delete_subscription", delete, path = "/beacon/subscriptions/{id}", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such subscription")))]
pub async fn delete(
    State(beacons): State<Beacons>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, Problem> {
    params(query.as_deref())?.finish()?;
    blocking(beacons.store(), move |s| s.delete_subscription(&id))
        .await
        .map_err(store_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queue a `webhook.ping`: `202`.
#[utoipa::path(operation_id = "ping_subscription", post, path = "/beacon/subscriptions/{id}/ping", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>")),
    responses((status = 202, description = "Queued"), (status = 404, description = "No such subscription"),
        (status = 412, description = "The subscription is disabled")))]
pub async fn ping(
    State(beacons): State<Beacons>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    let now = beacons.now_ms();
    let event = blocking(beacons.store(), move |s| s.enqueue_ping(&id, now))
        .await
        .map_err(store_problem)?;
    beacons.wake_scheduler();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "event": event })),
    )
        .into_response())
}

/// A new secret; the old one keeps signing (second signature) for 24 h.
#[utoipa::path(operation_id = "rotate_subscription_secret", post, path = "/beacon/subscriptions/{id}/rotate-secret", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>")),
    responses((status = 200, description = "`{secret}`: the new secret"), (status = 404, description = "No such subscription")))]
pub async fn rotate_secret(
    State(beacons): State<Beacons>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    let secret = generate_secret()?;
    let now = beacons.now_ms();
    let new = secret.clone();
    blocking(beacons.store(), move |s| {
        s.update_subscription(&id, now, |sub| {
            let until = now.saturating_add(24 * 3600 * 1000);
            sub.secrets.retain(|s| s.until_ms.is_none_or(|u| u > now));
            for old in &mut sub.secrets {
                old.until_ms = Some(old.until_ms.map_or(until, |u| u.min(until)));
            }
            sub.secrets.insert(
                0,
                Secret {
                    value: new,
                    until_ms: None,
                },
            );
        })
    })
    .await
    .map_err(store_problem)?;
    Ok(Json(serde_json::json!({ "secret": secret })).into_response())
}
