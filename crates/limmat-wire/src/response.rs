//! The relay's responses, byte for byte (spec 2.3 and D7).
//!
//! Device libraries read exactly 12 bytes and take bytes 9 to 11 as the status, and
//! YalerTunnel2 rejects duplicate fields, so every response is `HTTP/1.1 `, three digits, SP, an
//! empty reason, and only the fields listed here.

/// Pairs a PTTH device with a client; the client's bytes follow (57 bytes).
pub const UPGRADE_PTTH: &[u8] =
    b"HTTP/1.1 101 \r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\r\n";
/// Accepts a mux handshake; HTTP/2 follows (61 bytes).
pub const UPGRADE_MUX: &[u8] =
    b"HTTP/1.1 101 \r\nUpgrade: limmat-mux/1\r\nConnection: Upgrade\r\n\r\n";
/// Ends a wait: the device sends its next handshake on the same connection (17 bytes).
pub const RENEW: &[u8] = b"HTTP/1.1 204 \r\n\r\n";
/// Refuses a device handshake: reserved or invalid domain, or failed authentication (43 bytes).
pub const UNAUTHORIZED: &[u8] = b"HTTP/1.1 401 \r\nWWW-Authenticate: Bearer\r\n\r\n";
/// No device became available for a client (17 bytes).
pub const GATEWAY_TIMEOUT: &[u8] = b"HTTP/1.1 504 \r\n\r\n";
/// An authority-form `CONNECT` while the forward proxy is off (D7).
pub const NOT_IMPLEMENTED: &[u8] = b"HTTP/1.1 501 \r\n\r\n";

/// The `504` a browser gets for an offline or unknown domain (issue 12): the same status line
/// as [`GATEWAY_TIMEOUT`], then a short HTML page that says the device is offline, with
/// `Content-Type`, `Content-Length`, `Cache-Control: no-store` (the device may be back in a
/// moment) and `Connection: close`. Only clients whose `Accept` names `text/html` get it (see
/// [`crate::request::accepts_html`]); every other client and every device keeps the exact
/// 17 bytes.
pub fn offline_page(domain: &str) -> Vec<u8> {
    // Domains are made of `a-z0-9-._` (2.1.4), but the page escapes them anyway.
    let mut name = String::with_capacity(domain.len());
    for c in domain.chars() {
        match c {
            '&' => name.push_str("&amp;"),
            '<' => name.push_str("&lt;"),
            '>' => name.push_str("&gt;"),
            '"' => name.push_str("&quot;"),
            c => name.push(c),
        }
    }
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{name} is offline</title></head>\n<body><h1>{name} is offline</h1>\n\
         <p>No device is connected to this relay for <code>{name}</code> right now. \
         If the device is starting or reconnecting, reload this page in a few seconds.</p>\n\
         <p>504 Gateway Timeout, answered by the Limmat relay.</p></body></html>\n"
    );
    let mut out = format!(
        "HTTP/1.1 504 \r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The largest `Retry-After` the relay sends (4.3).
pub const MAX_RETRY_AFTER: u32 = 3600;

/// `307` with one `Location`: a configured `root_uri` verbatim, or a URL from [`location`].
pub fn redirect(location: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(30 + location.len());
    out.extend_from_slice(b"HTTP/1.1 307 \r\nLocation: ");
    out.extend_from_slice(location);
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// `429` with one delta-seconds `Retry-After`, kept within 1 to 3600 s.
pub fn too_many_requests(retry_after_secs: u64) -> Vec<u8> {
    let secs = retry_after_secs.clamp(1, u64::from(MAX_RETRY_AFTER));
    format!("HTTP/1.1 429 \r\nRetry-After: {secs}\r\n\r\n").into_bytes()
}

/// The `Location` of a relay redirect (2.3): scheme, host, the port always written, then the
/// original target from the first `/` of its path, query included, byte for byte.
pub fn location(tls: bool, host: &str, port: u16, target: &[u8]) -> Vec<u8> {
    let scheme = if tls { "https" } else { "http" };
    let mut out = format!("{scheme}://{host}:{port}").into_bytes();
    out.extend_from_slice(crate::request::split_target(target).1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes_and_lengths() {
        assert_eq!(UPGRADE_PTTH.len(), 57);
        assert_eq!(UPGRADE_MUX.len(), 61);
        assert_eq!(RENEW.len(), 17);
        assert_eq!(UNAUTHORIZED.len(), 43);
        assert_eq!(GATEWAY_TIMEOUT.len(), 17);
        for r in [
            UPGRADE_PTTH,
            UPGRADE_MUX,
            RENEW,
            UNAUTHORIZED,
            GATEWAY_TIMEOUT,
            NOT_IMPLEMENTED,
        ] {
            // A 12-byte reader sees `HTTP/1.1 `, three digits and SP (checklist 14).
            assert!(r.starts_with(b"HTTP/1.1 "));
            assert!(r[9..12].iter().all(u8::is_ascii_digit));
            assert_eq!(r[12], b' ');
        }
    }

    #[test]
    fn offline_page_is_a_complete_html_504() {
        let page = offline_page("my-device");
        assert!(page.starts_with(b"HTTP/1.1 504 \r\n"));
        let text = String::from_utf8(page).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\nContent-Type: text/html; charset=utf-8"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert!(body.contains("my-device is offline"));
        assert!(offline_page("<a>").windows(3).all(|w| w != b"<a>"));
    }

    #[test]
    fn redirect_bytes() {
        assert_eq!(
            redirect(b"https://example.com/"),
            b"HTTP/1.1 307 \r\nLocation: https://example.com/\r\n\r\n"
        );
    }

    #[test]
    fn retry_after_is_delta_seconds_within_bounds() {
        assert_eq!(
            too_many_requests(30),
            b"HTTP/1.1 429 \r\nRetry-After: 30\r\n\r\n"
        );
        assert_eq!(
            too_many_requests(0),
            b"HTTP/1.1 429 \r\nRetry-After: 1\r\n\r\n"
        );
        assert_eq!(
            too_many_requests(99_999),
            b"HTTP/1.1 429 \r\nRetry-After: 3600\r\n\r\n"
        );
    }

    #[test]
    fn location_keeps_path_and_query() {
        assert_eq!(
            location(false, "node-b", 80, b"/dom/x?y=1"),
            b"http://node-b:80/dom/x?y=1"
        );
        assert_eq!(
            location(true, "relay.example.com", 443, b"http://a:1/Dom?q"),
            b"https://relay.example.com:443/Dom?q"
        );
        assert_eq!(location(false, "h", 8080, b"*"), b"http://h:8080");
        // Bytes that are not UTF-8 are kept as they are.
        assert_eq!(location(false, "h", 1, b"/d\xff"), b"http://h:1/d\xff");
    }
}
