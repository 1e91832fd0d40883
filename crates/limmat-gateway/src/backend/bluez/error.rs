//! BlueZ's D-Bus errors as [`BleError`]s (`gateway-api.md` §6.3, mapped as in §6.1 and §2.8).
//!
//! BlueZ turns ATT error codes into a few D-Bus errors (`src/gatt-client.c`,
//! `create_gatt_dbus_error`), so the ATT code is recovered from the error name *and* its
//! message where BlueZ keeps it apart: `NotPermitted` "Read not permitted" is ATT 0x02, "Write
//! not permitted" 0x03, "Not paired" one of the security codes (0x05 stands for them all: each
//! maps to `403`); `NotAuthorized` is 0x08; `NotSupported` 0x06; `InvalidArguments` "Invalid
//! offset" / "Invalid Length" are 0x07 / 0x0D; any other code arrives as `Failed` "Operation
//! failed with ATT error: 0xNN". A peripheral served through the D-Bus GATT API (BlueZoo, a
//! `bluer` application) sends the `ReqError` names `InvalidOffset` and `InvalidValueLength`.

use crate::backend::BleError;
use bluer::{ErrorKind, InternalErrorKind};

/// What the failed call was doing: a connection attempt fails differently from an ATT request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A connection attempt: a failure or a lost link is a `Timeout` (→ 504, §2.5).
    Connect,
    /// A GATT read, write or subscription on a link: a lost link is `LinkLost` (→ 504).
    Attribute,
    /// Anything else (discovery, disconnection): an unexplained failure is `Unavailable`.
    Other,
}

/// ATT Read Not Permitted.
const ATT_READ_NOT_PERMITTED: u8 = 0x02;
/// ATT Write Not Permitted.
const ATT_WRITE_NOT_PERMITTED: u8 = 0x03;
/// ATT Insufficient Authentication, standing for BlueZ's "Not paired".
const ATT_INSUFFICIENT_AUTHENTICATION: u8 = 0x05;
/// ATT Request Not Supported.
const ATT_REQUEST_NOT_SUPPORTED: u8 = 0x06;
/// ATT Invalid Offset.
const ATT_INVALID_OFFSET: u8 = 0x07;
/// ATT Insufficient Authorization.
const ATT_INSUFFICIENT_AUTHORIZATION: u8 = 0x08;
/// ATT Invalid Attribute Value Length.
const ATT_INVALID_LENGTH: u8 = 0x0d;

/// Maps one `bluer` error.
pub fn map(error: &bluer::Error, op: Op) -> BleError {
    let message = error.message.as_str();
    match &error.kind {
        ErrorKind::NotFound | ErrorKind::DoesNotExist => BleError::NotFound,
        ErrorKind::NotPermitted => match message {
            "Read not permitted" => BleError::Att(ATT_READ_NOT_PERMITTED),
            "Write not permitted" => BleError::Att(ATT_WRITE_NOT_PERMITTED),
            "Not paired" => BleError::Att(ATT_INSUFFICIENT_AUTHENTICATION),
            _ => BleError::NotPermitted,
        },
        ErrorKind::NotAuthorized => BleError::Att(ATT_INSUFFICIENT_AUTHORIZATION),
        ErrorKind::NotSupported => BleError::Att(ATT_REQUEST_NOT_SUPPORTED),
        ErrorKind::InvalidOffset => BleError::Att(ATT_INVALID_OFFSET),
        ErrorKind::InvalidLength => BleError::Att(ATT_INVALID_LENGTH),
        ErrorKind::InvalidArguments => match message {
            "Invalid offset" => BleError::Att(ATT_INVALID_OFFSET),
            _ => BleError::Att(ATT_INVALID_LENGTH),
        },
        ErrorKind::InProgress => BleError::Unavailable(format!(
            "BlueZ: an operation is already in progress ({error})"
        )),
        ErrorKind::AlreadyConnected => BleError::Unavailable(format!("BlueZ: {error}")),
        ErrorKind::Failed => failed(message, op),
        ErrorKind::ConnectionAttemptFailed
        | ErrorKind::AuthenticationTimeout
        | ErrorKind::ServicesUnresolved => match op {
            Op::Attribute => BleError::LinkLost,
            Op::Connect | Op::Other => BleError::Timeout,
        },
        ErrorKind::NotReady | ErrorKind::NotAvailable => {
            BleError::Unavailable(format!("the adapter is not ready: {error}"))
        }
        ErrorKind::NotificationSessionStopped => BleError::LinkLost,
        ErrorKind::Internal(internal) => internal_error(internal, error, op),
        _ => BleError::Unavailable(format!("BlueZ: {error}")),
    }
}

/// `org.bluez.Error.Failed`: an ATT code if BlueZ kept one, otherwise a lost link or a failed
/// attempt.
fn failed(message: &str, op: Op) -> BleError {
    if let Some(code) = att_code(message) {
        return BleError::Att(code);
    }
    if message.eq_ignore_ascii_case("Not connected") {
        return BleError::NotConnected;
    }
    match op {
        Op::Connect => BleError::Timeout,
        Op::Attribute => BleError::LinkLost,
        Op::Other => BleError::Unavailable(format!("BlueZ: {message}")),
    }
}

/// The code in "Operation failed with ATT error: 0x0d" (and newer BlueZ's "ATT error: 0x0d
/// (…)" variants).
fn att_code(message: &str) -> Option<u8> {
    let (_, rest) = message.split_once("ATT error: 0x")?;
    let digits = rest.get(..2)?;
    u8::from_str_radix(digits, 16).ok()
}

/// D-Bus errors that are not BlueZ's own.
fn internal_error(internal: &InternalErrorKind, error: &bluer::Error, op: Op) -> BleError {
    match internal {
        InternalErrorKind::DBus(name) => match name.as_str() {
            "org.bluez.Error.NotConnected" => BleError::NotConnected,
            // Sent by D-Bus GATT servers (bluer's `ReqError`), which BlueZoo passes on.
            "org.bluez.Error.InvalidValueLength" => BleError::Att(ATT_INVALID_LENGTH),
            "org.freedesktop.DBus.Error.NoReply" | "org.freedesktop.DBus.Error.Timeout" => {
                BleError::Timeout
            }
            "org.freedesktop.DBus.Error.UnknownObject"
            | "org.freedesktop.DBus.Error.UnknownMethod" => BleError::NotFound,
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => BleError::Unavailable(
                "BlueZ (org.bluez) is not running on the D-Bus system bus".into(),
            ),
            _ if op == Op::Attribute => BleError::LinkLost,
            _ => BleError::Unavailable(format!("BlueZ: {error}")),
        },
        InternalErrorKind::DBusConnectionLost => {
            BleError::Unavailable("the D-Bus connection to BlueZ was lost".into())
        }
        _ => BleError::Unavailable(format!("BlueZ: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind, message: &str) -> bluer::Error {
        bluer::Error {
            kind,
            message: message.into(),
        }
    }

    #[test]
    fn att_codes_come_back_from_names_and_messages() {
        let cases = [
            (
                ErrorKind::NotPermitted,
                "Read not permitted",
                BleError::Att(0x02),
            ),
            (
                ErrorKind::NotPermitted,
                "Write not permitted",
                BleError::Att(0x03),
            ),
            (ErrorKind::NotPermitted, "Not paired", BleError::Att(0x05)),
            (
                ErrorKind::NotPermitted,
                "Notify acquired",
                BleError::NotPermitted,
            ),
            (ErrorKind::NotAuthorized, "", BleError::Att(0x08)),
            (ErrorKind::NotSupported, "", BleError::Att(0x06)),
            (
                ErrorKind::InvalidArguments,
                "Invalid offset",
                BleError::Att(0x07),
            ),
            (
                ErrorKind::InvalidArguments,
                "Invalid Length",
                BleError::Att(0x0d),
            ),
            (ErrorKind::InvalidLength, "", BleError::Att(0x0d)),
            (
                ErrorKind::Failed,
                "Operation failed with ATT error: 0x80",
                BleError::Att(0x80),
            ),
            (
                ErrorKind::Failed,
                "Operation failed with ATT error: 0x0f (x)",
                BleError::Att(0x0f),
            ),
            (ErrorKind::Failed, "Not connected", BleError::NotConnected),
            (ErrorKind::Failed, "Operation failed", BleError::LinkLost),
        ];
        for (kind, message, want) in cases {
            assert_eq!(
                map(&err(kind.clone(), message), Op::Attribute),
                want,
                "{kind:?} {message}"
            );
        }
    }

    #[test]
    fn connection_failures_are_timeouts_and_a_missing_daemon_is_unavailable() {
        assert_eq!(
            map(
                &err(ErrorKind::Failed, "le-connection-abort-by-local"),
                Op::Connect
            ),
            BleError::Timeout
        );
        assert_eq!(
            map(&err(ErrorKind::ConnectionAttemptFailed, ""), Op::Connect),
            BleError::Timeout
        );
        assert_eq!(
            map(&err(ErrorKind::DoesNotExist, ""), Op::Connect),
            BleError::NotFound
        );
        let missing = err(
            ErrorKind::Internal(InternalErrorKind::DBus(
                "org.freedesktop.DBus.Error.ServiceUnknown".into(),
            )),
            "",
        );
        assert!(
            matches!(map(&missing, Op::Other), BleError::Unavailable(m) if m.contains("not running"))
        );
        assert!(matches!(
            map(&err(ErrorKind::InProgress, ""), Op::Attribute),
            BleError::Unavailable(_)
        ));
    }
}
