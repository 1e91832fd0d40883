//! Webhook delivery (`gateway-api.md` §5). Two halves meet at [`Transport`]:
//!
//! - the **scheduler** (`scheduler`) owns the persistent queues: which message goes next, per
//!   subscription order, backoff state, dead letters, disabling — all committed to the store;
//! - the **transport** (`client`) makes one attempt: SSRF-checked, address-pinned connection
//!   (directly or through a forward proxy), the signed `POST`, and the [`Outcome`] classified as
//!   §5.4 says. It keeps no queue state, so a crash between the two loses nothing.
//!
//! The seam also lets the scheduler be tested against a scripted transport.

pub(crate) mod backoff;
internal! {
    mod client;
}
pub(crate) mod policy;
#[cfg(feature = "receiver")]
pub mod receiver;
pub(crate) mod scheduler;
pub mod sign;
internal! {
    mod ssrf;
}

use async_trait::async_trait;
use std::time::Duration;

/// One delivery attempt of one message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// `sub_<ULID>`, sent as `limmat-subscription`.
    pub subscription_id: &'a str,
    /// `msg_<ULID>`, sent as `webhook-id`: identical on every attempt.
    pub msg_id: &'a str,
    /// The subscription's URL, checked against the SSRF rules at every attempt.
    pub url: &'a str,
    /// The exact body, identical on every attempt.
    pub body: &'a [u8],
    /// HMAC keys (decoded secrets), the newest first; each adds a `v1,` signature.
    pub secrets: &'a [Vec<u8>],
}

/// What `lastError` says about a failed attempt (§3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No complete answer within the timeout.
    Timeout,
    /// The TCP connection could not be made.
    Connect,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// The receiver answered with a status other than 2xx or 410.
    Status,
    /// The URL's address is in a refused range (§3.7, spec 6.4 of the relay).
    SsrfDenied,
    /// The forward proxy refused the `CONNECT` (403 or another non-2xx).
    ProxyDenied,
    /// The forward proxy wants credentials (407).
    ProxyAuth,
}

impl FailureKind {
    /// The word of `lastError.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Status => "status",
            FailureKind::SsrfDenied => "ssrf-denied",
            FailureKind::ProxyDenied => "proxy-denied",
            FailureKind::ProxyAuth => "proxy-auth",
        }
    }
}

/// The result of one attempt, classified as §5.4 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx.
    Delivered {
        /// The 2xx status.
        status: u16,
    },
    /// `410 Gone`: disable the subscription.
    Gone,
    /// Anything else.
    Failed {
        /// What went wrong.
        kind: FailureKind,
        /// The HTTP status, if a response came.
        status: Option<u16>,
        /// `Retry-After` of the response, capped at 8 h.
        retry_after: Option<Duration>,
    },
}

/// Makes delivery attempts.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Makes one attempt to deliver `message` and classifies what came of it.
    async fn attempt(&self, message: Message<'_>) -> Outcome;
}
