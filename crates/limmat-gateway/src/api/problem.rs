//! RFC 9457 problem details (`gateway-api.md` §1.3, §2.8): every error the API returns is one
//! of these, as `application/problem+json`, so clients can tell a gateway's `504` ("BLE device
//! unreachable") from the relay's bodiless one ("gateway unreachable"). Backend errors map here
//! in one place ([`From<BleError>`]).

use crate::backend::BleError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem response.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A stable kebab-case id (`not-connected`, `bad-request`, …).
    pub code: String,
    /// The parameter, path segment or body member at fault (400s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The ATT error code the device sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub att_error: Option<u8>,
    /// For `405`: the methods the resource allows.
    #[serde(skip)]
    pub allow: Option<String>,
    /// For `401`.
    #[serde(skip)]
    pub www_authenticate: bool,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            field: None,
            att_error: None,
            allow: None,
            www_authenticate: false,
        }
    }

    /// `400` naming the field at fault.
    pub fn bad_request(field: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail).with_field(field)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// `405` with `Allow`.
    pub fn method_not_allowed(allow: &str) -> Problem {
        let mut p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            format!("this resource allows {allow}"),
        );
        p.allow = Some(allow.to_string());
        p
    }

    /// `501` for an [O] feature, named.
    pub fn not_implemented(feature: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "not-implemented",
            format!("{feature} is not implemented by this gateway or backend"),
        )
    }

    pub fn unauthorized() -> Problem {
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` is required",
        );
        p.www_authenticate = true;
        p
    }

    pub fn with_field(mut self, field: &str) -> Problem {
        self.field = Some(field.to_string());
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The status of an ATT error code (§2.8).
fn att_status(code: u8) -> StatusCode {
    match code {
        0x07 | 0x0d | 0x80..=0xff => StatusCode::BAD_REQUEST,
        0x05 | 0x08 | 0x0c | 0x0f => StatusCode::FORBIDDEN,
        0x01 | 0x0a => StatusCode::NOT_FOUND,
        0x02 | 0x03 | 0x06 => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl From<BleError> for Problem {
    fn from(e: BleError) -> Problem {
        match e {
            BleError::NotFound => Problem::not_found("no such node or attribute"),
            BleError::NotConnected => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "not-connected",
                "the node is not connected",
            ),
            BleError::NotPermitted => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "not-permitted",
                "the characteristic's properties do not allow this operation",
            ),
            BleError::Att(code) => {
                let mut p = Problem::new(
                    att_status(code),
                    "att-error",
                    format!("the device answered with ATT error 0x{code:02x}"),
                );
                p.att_error = Some(code);
                p
            }
            BleError::Timeout => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the BLE operation timed out",
            ),
            BleError::LinkLost => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "link-lost",
                "the link was lost during the operation",
            ),
            BleError::Unsupported(feature) => Problem::not_implemented(feature),
            BleError::Unavailable(why) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(allow) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            headers.insert(header::ALLOW, allow);
        }
        if self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn att_errors_map_as_the_spec_says() {
        for (code, status) in [
            (0x0d, 400),
            (0x80, 400),
            (0x0f, 403),
            (0x05, 403),
            (0x01, 404),
            (0x03, 405),
        ] {
            let p = Problem::from(BleError::Att(code));
            assert_eq!(p.status, status, "0x{code:02x}");
            assert_eq!(p.att_error, Some(code));
        }
        assert_eq!(Problem::from(BleError::NotConnected).code, "not-connected");
        assert_eq!(Problem::from(BleError::Timeout).status, 504);
    }
}
