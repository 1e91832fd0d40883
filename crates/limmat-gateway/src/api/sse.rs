//! Server-Sent Events, the way every stream of the API sends them (`gateway-api.md` §1.2,
//! §1.3): `text/event-stream` with `Cache-Control: no-cache`, events with `id:`, `event:` and
//! JSON `data:` on one line, and a `: keep-alive` comment every 15 s, because 3G NATs drop
//! idle flows and each stream holds one relay connection.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;

/// How often an idle stream sends `: keep-alive`.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event: `event: <name>`, optional `id:`, and `data:` the JSON of `data` on one line
/// (serde_json never emits raw newlines).
pub fn event(name: &str, id: Option<u64>, data: &impl Serialize) -> Event {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    let event = Event::default().event(name).data(json);
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// The response for a stream of events; it ends when `events` ends.
pub fn response<S>(events: S) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    use futures::StreamExt;
    Sse::new(events.map(Ok::<Event, Infallible>))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}
