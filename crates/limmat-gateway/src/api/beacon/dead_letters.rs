//! Dead letters (§3.8): list (oldest first, paged with `limit` and `after`), replay (all in
//! order, or one; `202`; `412` on a disabled subscription) and purge (`204`).

use super::{params, store_problem};
use crate::api::Base;
use crate::api::problem::Problem;
use crate::events::{Href, timestamp};
use crate::pipeline::Beacons;
use crate::store::blocking;
use crate::store::delivery::DeadLetter;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterJson<'a> {
    id: &'a str,
    created_at: String,
    dead_at: String,
    attempts: u32,
    last_status: Option<u16>,
    last_error: Option<&'a str>,
    reason: &'a str,
    events: usize,
    body: Option<Box<RawValue>>,
}

fn json_of(d: &DeadLetter) -> DeadLetterJson<'_> {
    DeadLetterJson {
        id: &d.meta.id,
        created_at: timestamp(d.meta.created_ms),
        dead_at: timestamp(d.meta.dead_ms),
        attempts: d.meta.attempts,
        last_status: d.meta.last_status,
        last_error: d.meta.last_error.as_deref(),
        reason: &d.meta.reason,
        events: d.meta.sequences.len(),
        body: std::str::from_utf8(&d.body)
            .ok()
            .and_then(|b| RawValue::from_string(b.to_string()).ok()),
    }
}

/// Dead letters, oldest first.
#[utoipa::path(operation_id = "list_dead_letters", get, path = "/beacon/subscriptions/{id}/dead-letters", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>"),
        ("limit" = Option<u32>, Query, description = "1 to 500, default 100"),
        ("after" = Option<String>, Query, description = "A msg id: list what comes after it")),
    responses((status = 200, description = "`{self, deadLetters}`"), (status = 404, description = "No such subscription or msg id")))]
pub async fn list(
    State(beacons): State<Beacons>,
    base: Base,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let mut p = params(query.as_deref())?;
    let limit: u32 = p.parsed("limit", "1 to 500")?.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::bad_request("limit", "`limit` must be 1 to 500"));
    }
    let after = p.scalar("after")?;
    p.finish()?;
    let href = base.href(&format!("/beacon/subscriptions/{id}/dead-letters"));
    let letters = blocking(beacons.store(), move |s| {
        s.dead_letters(&id, after.as_deref(), limit as usize)
    })
    .await
    .map_err(store_problem)?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct List<'a> {
        #[serde(rename = "self")]
        self_: Href,
        dead_letters: Vec<DeadLetterJson<'a>>,
    }
    let list = List {
        self_: Href { href },
        dead_letters: letters.iter().map(json_of).collect(),
    };
    Ok(Json(&list).into_response())
}

async fn replay(beacons: Beacons, id: String, msg: Option<String>) -> Result<Response, Problem> {
    let now = beacons.now_ms();
    let n = blocking(beacons.store(), move |s| s.replay(&id, msg.as_deref(), now))
        .await
        .map_err(store_problem)?;
    beacons.wake_scheduler();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "requeued": n })),
    )
        .into_response())
}

/// Re-queue every dead letter, in order.
#[utoipa::path(operation_id = "replay_dead_letters", post, path = "/beacon/subscriptions/{id}/dead-letters/replay", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>")),
    responses((status = 202, description = "Re-queued"), (status = 404, description = "No such subscription"),
        (status = 412, description = "The subscription is disabled")))]
pub async fn replay_all(
    State(beacons): State<Beacons>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    replay(beacons, id, None).await
}

/// Re-queue one dead letter.
#[utoipa::path(operation_id = "replay_dead_letter", post, path = "/beacon/subscriptions/{id}/dead-letters/{msg_id}/replay", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>"), ("msg_id" = String, Path, description = "msg_<ULID>")),
    responses((status = 202, description = "Re-queued"), (status = 404, description = "No such subscription or dead letter"),
        (status = 412, description = "The subscription is disabled")))]
pub async fn replay_one(
    State(beacons): State<Beacons>,
    Path((id, msg_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    params(query.as_deref())?.finish()?;
    replay(beacons, id, Some(msg_id)).await
}

/// Purge every dead letter.
#[utoipa::path(operation_id = "purge_dead_letters", delete, path = "/beacon/subscriptions/{id}/dead-letters", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>")),
    responses((status = 204, description = "Purged"), (status = 404, description = "No such subscription")))]
pub async fn purge_all(
    State(beacons): State<Beacons>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, Problem> {
    params(query.as_deref())?.finish()?;
    blocking(beacons.store(), move |s| s.purge_dead_letters(&id, None))
        .await
        .map_err(store_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Purge one dead letter.
#[utoipa::path(operation_id = "purge_dead_letter", delete, path = "/beacon/subscriptions/{id}/dead-letters/{msg_id}", tag = "beacon",
    params(("id" = String, Path, description = "sub_<ULID>"), ("msg_id" = String, Path, description = "msg_<ULID>")),
    responses((status = 204, description = "Purged"), (status = 404, description = "No such subscription or dead letter")))]
pub async fn purge_one(
    State(beacons): State<Beacons>,
    Path((id, msg_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, Problem> {
    params(query.as_deref())?.finish()?;
    blocking(beacons.store(), move |s| {
        s.purge_dead_letters(&id, Some(&msg_id))
    })
    .await
    .map_err(store_problem)?;
    Ok(StatusCode::NO_CONTENT)
}
