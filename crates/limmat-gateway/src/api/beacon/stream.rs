//! `GET /beacon/events` (§3.6): accepted events as Server-Sent Events, `id: <sequence>`,
//! `event: <type>`, the event's JSON on one line. Resuming with `Last-Event-ID` (or
//! `?lastEventId=`) replays later events from the log while it holds them, otherwise sends
//! `event: gap` with `{"requested", "oldest"}`. Every connection has a small forwarding task;
//! a client that has not taken an event for 30 s, or that falls behind the live buffer, is
//! disconnected (it can resume). A comment line every 15 s keeps NATs open.

use super::params;
use crate::api::Base;
use crate::api::problem::Problem;
use crate::events::{EventMeta, Filter, TYPES};
use crate::pipeline::Beacons;
use crate::store::blocking;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How long a client may leave an event untaken before it is disconnected.
const SLOW_CLIENT: Duration = Duration::from_secs(30);
/// Events replayed from the log per read.
const REPLAY_CHUNK: usize = 512;

/// The largest sequence number: they are `int64` in `/openapi.json`, as in most clients.
const SEQUENCE_MAX: u64 = i64::MAX as u64;

/// The live stream of accepted events.
#[utoipa::path(get, path = "/beacon/events", tag = "beacon",
    params(("type" = Option<String>, Query, description = "Event types, repeated or comma-separated"),
        ("format" = Option<String>, Query, description = "Beacon formats (eddystone-tlm selects telemetry)"),
        ("key" = Option<String>, Query, description = "Keys, or prefixes ending in *"),
        ("minRssi" = Option<i16>, Query, description = "For entered and updated events"),
        ("lastEventId" = Option<u64>, Query, description = "Resume after this sequence")),
    responses((status = 200, description = "text/event-stream of events", content_type = "text/event-stream")))]
pub async fn events(
    State(beacons): State<Beacons>,
    base: Base,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<axum::response::Response, Problem> {
    let mut p = params(query.as_deref())?;
    let filter = Filter {
        types: p.list("type"),
        formats: p.list("format"),
        keys: p.list("key"),
        min_rssi: super::min_rssi(&mut p)?,
    };
    if let Some(t) = filter.types.iter().find(|t| !TYPES.contains(&t.as_str())) {
        return Err(Problem::bad_request(
            "type",
            format!("unknown event type `{t}`"),
        ));
    }
    if let Some(f) = filter
        .formats
        .iter()
        .find(|f| crate::beacon::Format::from_name(f).is_none())
    {
        return Err(Problem::bad_request(
            "format",
            format!("unknown format `{f}`"),
        ));
    }
    let mut resume: Option<u64> = p.parsed("lastEventId", "a sequence number")?;
    if resume.is_some_and(|n| n > SEQUENCE_MAX) {
        return Err(Problem::bad_request(
            "lastEventId",
            "`lastEventId` is not a sequence number (at most 2^63 - 1)",
        ));
    }
    p.finish()?;
    if let Some(h) = headers.get("last-event-id") {
        let parsed = h.to_str().ok().and_then(|v| v.trim().parse().ok());
        resume = Some(parsed.filter(|n| *n <= SEQUENCE_MAX).ok_or_else(|| {
            Problem::bad_request("Last-Event-ID", "`Last-Event-ID` is not a sequence number")
        })?);
    }
    // Subscribe before reading the log, so nothing falls between the replay and live events.
    let live = beacons.live();
    let (tx, rx) = mpsc::channel::<Event>(64);
    let rebase = Rebase::new(&beacons.settings().links_base, &base.0);
    tokio::spawn(forward(beacons, filter, rebase, resume, live, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keep-alive"),
        )
        .into_response())
}

/// Moves an event's links from the base they were written with (events are written once, for
/// every reader and webhook) to the base of this request, as `/beacon/beacons` gives it.
struct Rebase {
    /// `"href":"<written base>/`, and the same with this request's base.
    from: String,
    to: String,
}

impl Rebase {
    fn new(written: &str, request: &str) -> Self {
        let href = |base: &str| format!("\"href\":\"{}/", base.trim_end_matches('/'));
        Rebase {
            from: href(written),
            to: href(request),
        }
    }

    /// The event's JSON with its links under the request's base. Links are written by
    /// serde_json, which escapes neither `/` nor `:`, so the prefix matches them exactly.
    fn apply<'a>(&self, json: &'a str) -> std::borrow::Cow<'a, str> {
        if self.from == self.to || self.to.len() <= "\"href\":\"/".len() {
            return json.into();
        }
        json.replace(&self.from, &self.to).into()
    }
}

fn sse_event(sequence: u64, meta: &EventMeta, json: &str, rebase: &Rebase) -> Event {
    Event::default()
        .id(sequence.to_string())
        .event(meta.type_)
        .data(rebase.apply(json))
}

/// Feed one connection: the replay (or gap), then live events, until the client goes away,
/// stalls for [`SLOW_CLIENT`], lags behind the live buffer, or the gateway stops.
async fn forward(
    beacons: Beacons,
    filter: Filter,
    rebase: Rebase,
    resume: Option<u64>,
    mut live: broadcast::Receiver<std::sync::Arc<crate::pipeline::LiveEvent>>,
    tx: mpsc::Sender<Event>,
) {
    let send = |event: Event| {
        let tx = tx.clone();
        async move { tx.send_timeout(event, SLOW_CLIENT).await.is_ok() }
    };
    let mut last = 0u64;
    if let Some(requested) = resume {
        last = requested;
        loop {
            let after = last;
            let chunk = blocking(beacons.store(), move |s| s.log_after(after, REPLAY_CHUNK)).await;
            let Ok((oldest, events)) = chunk else { break };
            if after == requested && oldest.is_some_and(|o| o > requested.saturating_add(1)) {
                let gap = serde_json::json!({ "requested": requested, "oldest": oldest });
                if !send(Event::default().event("gap").data(gap.to_string())).await {
                    return;
                }
            }
            let done = events.len() < REPLAY_CHUNK;
            for (sequence, json) in events {
                last = sequence;
                let Some(meta) = EventMeta::of_json(&json) else {
                    continue;
                };
                if filter.matches(&meta) && !send(sse_event(sequence, &meta, &json, &rebase)).await
                {
                    return;
                }
            }
            if done {
                break;
            }
        }
    }
    let shutdown = beacons.shutting_down().clone();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            event = live.recv() => event,
        };
        match event {
            Ok(event) => {
                if event.sequence <= last || !filter.matches(&event.meta) {
                    continue;
                }
                if !send(sse_event(event.sequence, &event.meta, &event.json, &rebase)).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                metrics::counter!("limmat_gateway_sse_lagging_disconnects_total").increment(1);
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
