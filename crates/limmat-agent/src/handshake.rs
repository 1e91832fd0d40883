//! One device connection in the AWAIT state of spec 2.9: send the handshake, read the relay's
//! answer, and turn it into what the pool does next.
//!
//! The relay holds a waiting connection for up to its `hold_time` and then renews it with a
//! `204`, after which the same connection carries the next handshake. So one connection may see
//! many handshakes; this module loops over them until the relay pairs a client (`101`), sends
//! the device elsewhere (`307`/`308`), asks it to wait (`429`), or something goes wrong.

use std::time::Duration;

use limmat_wire::reply::{Redirect, RetryAfter};
use limmat_wire::request::Protocol;
use limmat_wire::tunnel::device_handshake;
use tokio::io::AsyncWriteExt;

use crate::head::{HeadError, read_final_reply};
use crate::transport::RelayStream;

/// Where a device connection goes, over what, and which domain it registers there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub domain: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls {
            f.write_str("tls:")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.domain)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.domain)
        }
    }
}

/// Why a `307`/`308` cannot be followed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    #[error("a redirect without a usable Location")]
    BadLocation,
}

impl Target {
    /// Where a `307`/`308` with this `Location` sends a device or tunnel client: its host, TLS
    /// exactly when the scheme is `https`, and the domain from its path (2.9).
    pub fn from_location(location: Option<&[u8]>) -> Result<Self, RedirectError> {
        let r = location
            .and_then(Redirect::parse)
            .ok_or(RedirectError::BadLocation)?;
        Ok(Target {
            host: r.host,
            port: r.port,
            tls: r.tls,
            domain: r.domain,
        })
    }
}

/// How the relay ended the wait, other than by failing.
#[derive(Debug)]
pub enum Outcome {
    /// `101`: a client is paired. `leftover` holds the client's bytes that were read together
    /// with the `101` head (checklist 50).
    Upgraded {
        stream: RelayStream,
        leftover: Vec<u8>,
    },
    /// The exact mux `101`: HTTP/2 follows (5.1); `leftover` is the start of it.
    Mux {
        stream: RelayStream,
        leftover: Vec<u8>,
    },
    /// `307` or `308` with a usable `Location`.
    Redirect(Target),
    /// `429` with a delta-seconds `Retry-After`.
    RetryAfter(Duration),
}

/// Progress reported while the connection waits, for the status and the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A handshake went out; the connection is now in AWAIT.
    Sent,
    /// A `204` with nothing after it: the relay is fine, the wait starts again.
    Renewed,
}

/// Why an attempt failed; every one of these leads to the backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    #[error("cannot connect to the relay: {0}")]
    Connect(std::io::Error),
    #[error("sending the handshake failed: {0}")]
    Send(std::io::Error),
    #[error("no response within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("{0}")]
    Head(#[from] HeadError),
    #[error("the relay sent {0} bytes after a 204")]
    BytesAfterRenewal(usize),
    #[error("the relay answered {0}")]
    Status(u16),
    #[error("{0}")]
    Redirect(#[from] RedirectError),
    #[error("the relay answered 429 without a delta-seconds Retry-After")]
    BadRetryAfter,
    #[error("more than {MAX_REDIRECTS} redirects in a row")]
    TooManyRedirects,
    #[error("a redirect from TLS to plain HTTP ({0}) is not followed: it would expose the key")]
    InsecureRedirect(String),
    #[error("the relay does not speak limmat-mux/1 (it answered {0})")]
    NoMux(u16),
    /// `401`: about the key, not the protocol; a mux probe is not given up for it (issue 12).
    #[error("the relay refused the device key (401): check --secret-key / LIMMAT_SECRET_KEY")]
    KeyRefused,
    #[error("the mux connection is dead (no PING ACK in time)")]
    MuxDead,
}

/// Redirects followed in a row without a `101` or `204`; one more is a failure.
pub const MAX_REDIRECTS: u32 = 5;

/// The longest `Retry-After` honoured: the longest stage of the backoff. A larger value is
/// more likely a fault than a wish to be silent for months, and it keeps `Instant`s finite.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// The optional fields of a device handshake (2.9, "Request").
#[derive(Debug, Clone, Copy)]
pub struct HandshakeFields<'a> {
    /// Sent as `Authorization: Bearer <key>`.
    pub key: Option<&'a str>,
    /// Sent as `X-Relay-Security: transport/pass-through` (2.6.5).
    pub pass_through: bool,
}

/// Runs the handshake loop on a connected `stream` (AWAIT), reporting progress to `on_event`.
/// `response_timeout` bounds the wait for each response head (75 s, checklist 48).
///
/// With `Protocol::Mux`, only the exact 61-byte mux `101` is success, `307`/`308` and `429`
/// are followed as for PTTH, `401` is [`AttemptError::KeyRefused`] as for PTTH (the key, not
/// the protocol), and any other answer, an end of stream or an unreadable head included, is
/// [`AttemptError::NoMux`] (5.8; status 0 when there was none).
pub async fn exchange(
    mut stream: RelayStream,
    target: &Target,
    protocol: Protocol,
    fields: HandshakeFields<'_>,
    response_timeout: Duration,
    mut on_event: impl FnMut(Event),
) -> Result<Outcome, AttemptError> {
    let mux = protocol == Protocol::Mux;
    let handshake = device_handshake(
        protocol,
        &target.domain,
        &target.host,
        target.port,
        fields.key,
        fields.pass_through,
    );
    let mut buf = Vec::new();
    loop {
        stream
            .write_all(&handshake)
            .await
            .map_err(AttemptError::Send)?;
        on_event(Event::Sent);
        let reply = tokio::time::timeout(response_timeout, read_final_reply(&mut stream, &mut buf))
            .await
            .map_err(|_| AttemptError::Timeout(response_timeout))?;
        let reply = match reply {
            Ok(reply) => reply,
            // 5.8: any answer but the mux `101`, EOF included, means PTTH. A Yaler relay pairs
            // the probe with a waiting device as if it were a client, and that device closes.
            Err(_) if mux => return Err(AttemptError::NoMux(0)),
            Err(e) => return Err(e.into()),
        };
        if reply.status == 401 {
            return Err(AttemptError::KeyRefused);
        }
        match reply.status {
            101 if mux && reply.exact_mux_upgrade => {
                return Ok(Outcome::Mux {
                    stream,
                    leftover: buf,
                });
            }
            307 | 308 | 429 if mux => {}
            status if mux => return Err(AttemptError::NoMux(status)),
            _ => {}
        }
        match reply.status {
            101 => {
                return Ok(Outcome::Upgraded {
                    stream,
                    leftover: buf,
                });
            }
            // The relay discards a device's extra bytes (H13), so it never sends any after a
            // 204 either: bytes here mean the two ends disagree about where we are.
            204 if !buf.is_empty() => return Err(AttemptError::BytesAfterRenewal(buf.len())),
            204 => on_event(Event::Renewed),
            307 | 308 => {
                let to = Target::from_location(reply.location.as_deref())?;
                return Ok(Outcome::Redirect(to));
            }
            429 => match reply.retry_after {
                Some(RetryAfter::Seconds(n)) => {
                    // At least a second: `Retry-After: 0` from some other relay must not turn
                    // into a reconnect loop with no delay at all.
                    let wait = Duration::from_secs(n.max(1)).min(MAX_RETRY_AFTER);
                    return Ok(Outcome::RetryAfter(wait));
                }
                _ => return Err(AttemptError::BadRetryAfter),
            },
            status => return Err(AttemptError::Status(status)),
        }
    }
}
