//! What the state database holds, one type per table value. Values with a body are encoded as
//! `[u32 LE length of the metadata JSON][metadata JSON][body bytes]`, so the body's exact bytes
//! (§5.1) are stored as they are, not re-serialised.

use crate::address::{Address, AddressType};
use crate::beacon::{Decoded, Frame, Source, decode};
use crate::events::{BeaconState, Filter};
use crate::uuid::Uuid;
use serde::{Deserialize, Serialize};

/// `batch` of a subscription (§3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    pub max_events: u32,
    pub max_delay_ms: u64,
}

/// A signing secret (`whsec_…`); a rotated-out one keeps signing until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub value: String,
    pub until_ms: Option<u64>,
}

/// The delivery counters and retry state of a subscription (§3.7, §5.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub coalesced: u64,
    pub dead_letters: u64,
    pub consecutive_failures: u32,
    pub last_attempt_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    /// The subscription's backoff gate: no attempt before this.
    pub next_attempt_ms: Option<u64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The first failure since the last success (for `disable_after_s`).
    pub failing_since_ms: Option<u64>,
}

/// A webhook subscription, secrets included (the table is in a 0600 file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Types and filter; an empty `types` means all four.
    pub filter: Filter,
    pub batch: Option<BatchSpec>,
    /// Newest first.
    pub secrets: Vec<Secret>,
    pub description: Option<String>,
    pub created_ms: u64,
    /// `None` while enabled; `gone`, `failing` or `manual`.
    pub disabled_reason: Option<String>,
    pub delivery: Delivery,
}

impl Subscription {
    pub fn enabled(&self) -> bool {
        self.disabled_reason.is_none()
    }

    /// `active`, `retrying` or `disabled`.
    pub fn status(&self) -> &'static str {
        if !self.enabled() {
            "disabled"
        } else if self.delivery.consecutive_failures > 0 {
            "retrying"
        } else {
            "active"
        }
    }
}

/// A queued message (a single event or a batch) without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// `msg_<ULID>`: the `webhook-id` of every attempt.
    pub id: String,
    pub created_ms: u64,
    pub sequences: Vec<u64>,
    /// For a single beacon event: its type and key (coalescing, §5.6).
    pub event_type: Option<String>,
    pub key: Option<String>,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

impl MessageMeta {
    /// A message not yet attempted: `id` (`msg_…`), created at `now_ms`, holding `sequences`.
    pub fn fresh(id: String, now_ms: u64, sequences: Vec<u64>) -> MessageMeta {
        MessageMeta {
            id,
            created_ms: now_ms,
            sequences,
            event_type: None,
            key: None,
            attempts: 0,
            next_attempt_ms: 0,
            last_status: None,
            last_error: None,
        }
    }
}

/// A dead letter (§3.8) without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadMeta {
    pub id: String,
    pub created_ms: u64,
    pub dead_ms: u64,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub reason: String,
    pub sequences: Vec<u64>,
}

impl DeadMeta {
    pub fn from_message(meta: MessageMeta, reason: &str, now_ms: u64) -> DeadMeta {
        DeadMeta {
            id: meta.id,
            created_ms: meta.created_ms,
            dead_ms: now_ms,
            attempts: meta.attempts,
            last_status: meta.last_status,
            last_error: meta.last_error,
            reason: reason.into(),
            sequences: meta.sequences,
        }
    }
}

/// A present beacon as the presence table keeps it: the frame as its canonical pair, so it
/// decodes back to the same beacon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub company: Option<u16>,
    pub service: Option<Uuid>,
    pub payload: String,
    pub address: String,
    pub address_type: AddressType,
    pub rssi: Option<i16>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub sightings: u64,
}

impl PresenceRecord {
    pub fn of(state: &BeaconState) -> PresenceRecord {
        let (source, payload) = state.beacon.encode();
        let (company, service) = match source {
            Source::Manufacturer(c) => (Some(c), None),
            Source::Service(u) => (None, Some(u)),
        };
        PresenceRecord {
            company,
            service,
            payload: crate::hex::encode(&payload),
            address: state.address.to_string(),
            address_type: state.address_type,
            rssi: state.rssi,
            first_seen_ms: state.first_seen_ms,
            last_seen_ms: state.last_seen_ms,
            sightings: state.sightings,
        }
    }

    /// The state back, or `None` if the record no longer decodes to a beacon.
    pub fn state(&self) -> Option<BeaconState> {
        let source = match (self.company, self.service) {
            (Some(c), _) => Source::Manufacturer(c),
            (None, Some(u)) => Source::Service(u),
            (None, None) => return None,
        };
        let payload = crate::hex::decode(&self.payload).ok()?;
        let Decoded::Frame(Frame::Beacon(beacon)) = decode(&source, &payload) else {
            return None;
        };
        let address: Address = self.address.parse().ok()?;
        Some(BeaconState {
            beacon,
            address,
            address_type: self.address_type,
            rssi: self.rssi,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            sightings: self.sightings,
        })
    }
}

/// `[len][meta JSON][body]`.
pub fn encode_with_body<M: Serialize>(meta: &M, body: &[u8]) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).unwrap_or_default();
    let len = u32::try_from(meta.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + meta.len() + body.len());
    out.extend(len.to_le_bytes());
    out.extend(meta);
    out.extend(body);
    out
}

/// The inverse of [`encode_with_body`]; `None` for a damaged value.
pub fn decode_with_body<M: for<'de> Deserialize<'de>>(value: &[u8]) -> Option<(M, Vec<u8>)> {
    let (len, rest) = value.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    let (meta, body) = rest.split_at_checked(len)?;
    Some((serde_json::from_slice(meta).ok()?, body.to_vec()))
}

/// `[u64 LE milliseconds][bytes]`: an event-log or batch-pending entry.
pub fn encode_timed(ms: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + bytes.len());
    out.extend(ms.to_le_bytes());
    out.extend(bytes);
    out
}

/// The inverse of [`encode_timed`].
pub fn decode_timed(value: &[u8]) -> Option<(u64, &[u8])> {
    let (ms, rest) = value.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*ms), rest))
}
