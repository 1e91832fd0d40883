//! The Limmat Beacon API (`gateway-api.md` §3.1) over the running [`Beacons`] engine: the
//! present beacons, the live event stream ([`stream`]), webhook subscriptions
//! ([`subscriptions`]) and their dead letters ([`dead_letters`]). Everything served was
//! committed first (§5.3).
//!
//! - [`body`]: strict JSON request bodies (415/413/400 naming the member).

pub mod body;
pub mod dead_letters;
pub mod stream;
pub mod subscriptions;

use crate::api::Base;
use crate::api::problem::Problem;
use crate::api::query::Params;
use crate::beacon::Format;
use crate::events::{BeaconObject, Href, key_matches};
use crate::pipeline::Beacons;
use crate::store::StoreError;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of §3.1, with the engine as state.
pub fn routes(beacons: Beacons) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_beacons))
        .routes(routes!(get_beacon))
        .routes(routes!(stream::events))
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(
            subscriptions::get,
            subscriptions::patch,
            subscriptions::delete
        ))
        .routes(routes!(subscriptions::ping))
        .routes(routes!(subscriptions::rotate_secret))
        .routes(routes!(dead_letters::list, dead_letters::purge_all))
        .routes(routes!(dead_letters::purge_one))
        .routes(routes!(dead_letters::replay_all))
        .routes(routes!(dead_letters::replay_one))
        .with_state(beacons)
}

/// Strict query parameters; `access_token` belongs to the auth layer.
pub(crate) fn params(raw: Option<&str>) -> Result<Params, Problem> {
    let mut p = Params::parse(raw)?;
    let _ = p.list("access_token");
    Ok(p)
}

/// Store errors as problems: missing things are `404`, the subscription limit `409`, a
/// disabled subscription `412`, and a failing database `503` (§5.3).
pub(crate) fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::NoSubscription => Problem::not_found("no such subscription"),
        StoreError::NoDeadLetter => Problem::not_found("no such dead letter"),
        StoreError::Limit(n) => Problem::new(
            StatusCode::CONFLICT,
            "max-subscriptions",
            format!("webhooks.max_subscriptions ({n}) reached"),
        ),
        StoreError::Disabled => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "subscription-disabled",
            "the subscription is disabled",
        ),
        other => {
            tracing::error!(error = %other, "state database operation failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                "the state database cannot accept writes",
            )
        }
    }
}

/// `minRssi`: −127 to 20 dBm, as for `filter.minRssi` (§3.7).
pub(crate) fn min_rssi(p: &mut Params) -> Result<Option<i16>, Problem> {
    let value: Option<i16> = p.parsed("minRssi", "an RSSI in dBm")?;
    match value {
        Some(v) if !(-127..=20).contains(&v) => Err(Problem::bad_request(
            "minRssi",
            "`minRssi` must be within -127–20 dBm",
        )),
        v => Ok(v),
    }
}

/// `format`, `key` and `minRssi` of `GET /beacon/beacons`.
struct BeaconFilter {
    formats: Vec<String>,
    keys: Vec<String>,
    min_rssi: Option<i16>,
}

impl BeaconFilter {
    fn matches(&self, key: &str, format: Format, rssi: Option<i16>) -> bool {
        (self.formats.is_empty() || self.formats.iter().any(|f| f == format.as_str()))
            && (self.keys.is_empty() || self.keys.iter().any(|k| key_matches(k, key)))
            && self.min_rssi.is_none_or(|m| rssi.is_some_and(|r| r >= m))
    }
}

/// The beacons present now, sorted by key.
#[utoipa::path(get, path = "/beacon/beacons", tag = "beacon",
    params(("format" = Option<String>, Query, description = "Beacon formats, repeated or comma-separated"),
        ("key" = Option<String>, Query, description = "Keys, or prefixes ending in *"),
        ("minRssi" = Option<i16>, Query, description = "Latest RSSI at least this")),
    responses((status = 200, description = "`{self, beacons}`")))]
pub async fn list_beacons(
    State(beacons): State<Beacons>,
    base: Base,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let mut p = params(query.as_deref())?;
    let filter = BeaconFilter {
        formats: p.list("format"),
        keys: p.list("key"),
        min_rssi: min_rssi(&mut p)?,
    };
    p.finish()?;
    if let Some(f) = filter
        .formats
        .iter()
        .find(|f| Format::from_name(f).is_none())
    {
        return Err(Problem::bad_request(
            "format",
            format!("unknown format `{f}`"),
        ));
    }
    let present = beacons.present();
    #[derive(Serialize)]
    struct List<'a> {
        #[serde(rename = "self")]
        self_: Href,
        beacons: Vec<BeaconObject<'a>>,
    }
    let list = List {
        self_: Href {
            href: base.href("/beacon/beacons"),
        },
        beacons: present
            .iter()
            .filter(|(b, _)| filter.matches(&b.key(), b.beacon.format(), b.rssi))
            .map(|(b, t)| b.object(Some(&base.0), t.as_ref()))
            .collect(),
    };
    Ok(Json(&list).into_response())
}

/// One present beacon; `404` if it is absent.
#[utoipa::path(get, path = "/beacon/beacons/{key}", tag = "beacon",
    params(("key" = String, Path, description = "The beacon's key, percent-encoded")),
    responses((status = 200, description = "The beacon object"), (status = 404, description = "Not present")))]
pub async fn get_beacon(
    State(beacons): State<Beacons>,
    base: Base,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    let (state, telemetry) = beacons
        .beacon(&key)
        .ok_or_else(|| Problem::not_found(format!("no beacon {key} is present")))?;
    Ok(Json(&state.object(Some(&base.0), telemetry.as_ref())).into_response())
}
