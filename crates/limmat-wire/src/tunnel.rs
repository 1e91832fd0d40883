//! Bytes that the device side writes: the device handshake (2.3, 5.1) and the end-to-end
//! conventions of `limmat tunnel` (2.8), which the relay forwards without looking at them.

use crate::request::Protocol;

/// The canonical device handshake of 2.3 (or 5.1 for mux), with `Host: <host>:<port>`.
pub fn device_handshake(
    protocol: Protocol,
    domain: &str,
    host: &str,
    port: u16,
    key: Option<&str>,
    pass_through: bool,
) -> Vec<u8> {
    let upgrade = String::from_utf8_lossy(protocol.token());
    let mut head = format!(
        "POST /{domain} HTTP/1.1\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\nHost: {}:{port}\r\n",
        host_for_header(host)
    );
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if pass_through {
        head.push_str("X-Relay-Security: transport/pass-through\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// What `limmat tunnel client` sends per accepted connection (2.8.1), exactly.
pub fn connect_request(domain: &str, host: &str, port: u16) -> Vec<u8> {
    format!(
        "CONNECT /{domain} HTTP/1.1\r\nHost: {}:{port}\r\n\r\n",
        host_for_header(host)
    )
    .into_bytes()
}

/// An IPv6 literal needs brackets in a `Host` field.
fn host_for_header(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// The proxy-mode device's answer to `CONNECT /<domain>` (19 bytes).
pub const PROXY_OK: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";
/// The proxy-mode device's answer to anything but `CONNECT`.
pub const PROXY_METHOD_NOT_ALLOWED: &[u8] = b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The proxy-mode device's answer when its local service refuses the connection.
pub const PROXY_BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Authorization, Kind, RequestHead};

    #[test]
    fn canonical_handshake_bytes() {
        assert_eq!(
            device_handshake(Protocol::Ptth, "dom", "relay.example.com", 80, None, false),
            b"POST /dom HTTP/1.1\r\nUpgrade: PTTH/1.0\r\nConnection: Upgrade\r\n\
              Host: relay.example.com:80\r\n\r\n"
        );
        let with_key = device_handshake(Protocol::Mux, "dom", "::1", 8080, Some("k3y"), true);
        assert_eq!(
            with_key,
            b"POST /dom HTTP/1.1\r\nUpgrade: limmat-mux/1\r\nConnection: Upgrade\r\n\
              Host: [::1]:8080\r\nAuthorization: Bearer k3y\r\n\
              X-Relay-Security: transport/pass-through\r\n\r\n"
        );
        // The relay's scanner reads back what the agent writes.
        let head = RequestHead::parse(&with_key);
        assert_eq!(head.kind(), Kind::Device(Protocol::Mux));
        assert_eq!(head.authorization, Authorization::One(b"Bearer k3y"));
        assert!(head.pass_through);
    }

    #[test]
    fn tunnel_client_bytes() {
        assert_eq!(
            connect_request("dom", "127.0.0.1", 8080),
            b"CONNECT /dom HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
        assert_eq!(PROXY_OK.len(), 19);
        assert_eq!(
            RequestHead::parse(&connect_request("d", "h", 1)).kind(),
            Kind::Client
        );
    }
}
