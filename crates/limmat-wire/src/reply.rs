//! Reading the relay's responses on the device side (spec 2.9, "Response parsing").
//!
//! The agent is lenient where the relay might differ (any reason phrase, field names in any
//! case, `HTTP/1.0`) and strict where YalerTunnel2 is (one `Location`, one delta-seconds
//! `Retry-After`).

use crate::domain::fold_domain_run;

/// A response head from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The status code.
    pub status: u16,
    /// The `Location` value, if any.
    pub location: Option<&'a [u8]>,
    /// The `Retry-After` value, if any.
    pub retry_after: Option<RetryAfter>,
}

/// A `Retry-After` value: only delta-seconds count; an HTTP date is an ordinary failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Delta-seconds.
    Seconds(u64),
    /// Anything else, such as an HTTP date.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Why a response head is not one a device can act on.
pub enum ReplyError {
    /// The head does not start with `HTTP/1.x ` and three digits.
    NotHttp,
    /// A second `Location` field.
    DuplicateLocation,
    /// A second `Retry-After` field.
    DuplicateRetryAfter,
}

impl core::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ReplyError::NotHttp => "the response does not start with `HTTP/1.x` and a status",
            ReplyError::DuplicateLocation => "the response has more than one Location",
            ReplyError::DuplicateRetryAfter => "the response has more than one Retry-After",
        })
    }
}

impl std::error::Error for ReplyError {}

impl<'a> Reply<'a> {
    /// Parses a complete response head (as found by [`crate::HeadScanner`]).
    pub fn parse(head: &'a [u8]) -> Result<Self, ReplyError> {
        let status = match head {
            [
                b'H',
                b'T',
                b'T',
                b'P',
                b'/',
                b'1',
                b'.',
                _,
                b' ',
                a,
                b,
                c,
                ..,
            ] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(ReplyError::NotHttp),
        };
        let mut reply = Reply {
            status,
            location: None,
            retry_after: None,
        };
        for line in head.split(|&b| b == b'\n').skip(1) {
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"location") {
                if reply.location.replace(value).is_some() {
                    return Err(ReplyError::DuplicateLocation);
                }
            } else if name.eq_ignore_ascii_case(b"retry-after") {
                let parsed = parse_delta_seconds(value);
                if reply.retry_after.replace(parsed).is_some() {
                    return Err(ReplyError::DuplicateRetryAfter);
                }
            }
        }
        Ok(reply)
    }
}

fn trim(value: &[u8]) -> &[u8] {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let start = value
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

fn parse_delta_seconds(value: &[u8]) -> RetryAfter {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return RetryAfter::Invalid;
    }
    // Saturate absurdly long numbers rather than fail: the meaning is "wait a long time".
    let secs = value.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    RetryAfter::Seconds(secs)
}

/// Where a `307`/`308` sends a device: scheme decides TLS, the path after the first `/` is
/// the new domain (2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `https`: connect with TLS.
    pub tls: bool,
    /// The host to connect to.
    pub host: String,
    /// The port, or the scheme's default.
    pub port: u16,
    /// The domain to register there.
    pub domain: String,
}

impl Redirect {
    /// Parses a `Location` value; `None` if it is not an `http(s)://host[:port]/domain` URL.
    pub fn parse(location: &[u8]) -> Option<Self> {
        let (tls, rest) = if let Some(rest) = strip_prefix_ci(location, b"http://") {
            (false, rest)
        } else {
            (true, strip_prefix_ci(location, b"https://")?)
        };
        let host_end = rest
            .iter()
            .position(|&b| b == b':' || b == b'/')
            .unwrap_or(rest.len());
        let host = std::str::from_utf8(&rest[..host_end]).ok()?;
        if host.is_empty() {
            return None;
        }
        let rest = &rest[host_end..];
        let (port, rest) = match rest.strip_prefix(b":") {
            Some(after) => {
                let end = after.iter().position(|&b| b == b'/').unwrap_or(after.len());
                let port = std::str::from_utf8(&after[..end]).ok()?.parse().ok()?;
                (port, &after[end..])
            }
            None => (if tls { 443 } else { 80 }, rest),
        };
        let domain = fold_domain_run(rest.strip_prefix(b"/")?);
        crate::domain::is_registrable(&domain).then(|| Redirect {
            tls,
            host: host.to_owned(),
            port,
            domain,
        })
    }
}

fn strip_prefix_ci<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &bytes[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            Reply::parse(crate::response::RENEW).map(|r| r.status),
            Ok(204)
        );
        assert_eq!(
            Reply::parse(b"HTTP/1.0 101 Switching\r\n\r\n").map(|r| r.status),
            Ok(101)
        );
        assert_eq!(
            Reply::parse(b"HTTP/2 200\r\n\r\n"),
            Err(ReplyError::NotHttp)
        );
        assert_eq!(
            Reply::parse(b"HTTP/1.1 20x \r\n\r\n"),
            Err(ReplyError::NotHttp)
        );
        assert_eq!(Reply::parse(b"garbage\r\n\r\n"), Err(ReplyError::NotHttp));
    }

    #[test]
    fn location_and_retry_after() {
        let r = Reply::parse(b"HTTP/1.1 307 \r\nlocation:  http://b:81/dom \r\n\r\n").unwrap();
        assert_eq!(r.location, Some(&b"http://b:81/dom"[..]));
        let r = Reply::parse(b"HTTP/1.1 429 \r\nRetry-After: 30\r\n\r\n").unwrap();
        assert_eq!(r.retry_after, Some(RetryAfter::Seconds(30)));
        let r = Reply::parse(b"HTTP/1.1 429 \r\nRetry-After: Fri, 07 Nov 2025\r\n\r\n").unwrap();
        assert_eq!(r.retry_after, Some(RetryAfter::Invalid));
        assert_eq!(
            Reply::parse(b"HTTP/1.1 307 \r\nLocation: http://a/b\r\nLocation: http://a/c\r\n\r\n"),
            Err(ReplyError::DuplicateLocation)
        );
        assert_eq!(
            Reply::parse(b"HTTP/1.1 429 \nRetry-After: 1\nRetry-After: 2\n\n"),
            Err(ReplyError::DuplicateRetryAfter)
        );
    }

    #[test]
    fn redirects() {
        assert_eq!(
            Redirect::parse(b"http://node-b:8081/Dom/x?y"),
            Some(Redirect {
                tls: false,
                host: "node-b".into(),
                port: 8081,
                domain: "dom".into()
            })
        );
        assert_eq!(
            Redirect::parse(b"HTTPS://relay.example.com/dom"),
            Some(Redirect {
                tls: true,
                host: "relay.example.com".into(),
                port: 443,
                domain: "dom".into()
            })
        );
        assert_eq!(Redirect::parse(b"ftp://a/dom"), None);
        assert_eq!(Redirect::parse(b"http://a:99999/dom"), None);
        assert_eq!(Redirect::parse(b"http://a:80"), None);
        assert_eq!(Redirect::parse(b"http:///dom"), None);
        assert_eq!(Redirect::parse(b"http://a/relay_domain"), None);
    }
}
