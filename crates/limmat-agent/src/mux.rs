//! The device's side of limmat-mux/1 (spec section 5): which transport a connection uses, and
//! what the relay says about each stream's client.
//!
//! With mux, one long-lived connection carries every client as an HTTP/2 CONNECT stream, the
//! device being the HTTP/2 server; a stream is handed to the handler as a
//! [`RelayedConn`](crate::RelayedConn) exactly like a PTTH connection, so every tunnel mode
//! works unchanged. The pool logic (handshake, fallback, reconnect on GOAWAY) is in
//! [`crate::agent`]; the `h2` plumbing is shared with the relay in `limmat-mux`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;
use limmat_wire::mux::{Listener, Route, field};

/// How long `auto` keeps using PTTH/1.0 with a relay that did not accept mux (5.8).
pub const FALLBACK_FOR: Duration = Duration::from_secs(3600);

/// Which device transport the agent uses (`--transport`, 5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A waiting connection per client (section 2).
    #[default]
    Ptth,
    /// limmat-mux/1 only; never falls back.
    Mux,
    /// limmat-mux/1, and PTTH/1.0 for an hour with a relay that answers anything but the mux
    /// `101` (what `limmat tunnel` does by default).
    Auto,
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ptth" => Ok(Transport::Ptth),
            "mux" => Ok(Transport::Mux),
            "auto" => Ok(Transport::Auto),
            other => Err(format!("unknown transport `{other}` (ptth, mux or auto)")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Ptth => "ptth",
            Transport::Mux => "mux",
            Transport::Auto => "auto",
        })
    }
}

/// What the relay sent with a mux stream (5.3). Fields it did not send, or sent in a form not
/// understood, are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMeta {
    pub domain: Option<String>,
    /// The client's address (a PTTH device never learns it).
    pub client_addr: Option<SocketAddr>,
    pub listener: Option<Listener>,
    /// `Path`: the request target carries the `/<domain>` prefix.
    pub route: Option<Route>,
    pub sni: Option<String>,
    pub node: Option<String>,
}

impl StreamMeta {
    /// Reads the metadata in one pass over the fields: looking each one up by its name as
    /// text would parse and hash the name six times per stream.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut meta = Self::default();
        for (name, value) in headers {
            let text = || value.to_str().ok().map(str::to_owned);
            match name.as_str() {
                field::DOMAIN => meta.domain = text(),
                field::CLIENT_ADDR => {
                    meta.client_addr = value.to_str().ok().and_then(|a| a.parse().ok());
                }
                field::LISTENER => meta.listener = Listener::parse(value.as_bytes()),
                field::ROUTE => meta.route = Route::parse(value.as_bytes()),
                field::SNI => meta.sni = text(),
                field::NODE => meta.node = text(),
                _ => {}
            }
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn metadata_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(field::DOMAIN, HeaderValue::from_static("dom"));
        h.insert(
            field::CLIENT_ADDR,
            HeaderValue::from_static("[2001:db8::1]:5678"),
        );
        h.insert(field::LISTENER, HeaderValue::from_static("tls-passthrough"));
        h.insert(field::ROUTE, HeaderValue::from_static("sni"));
        h.insert(field::SNI, HeaderValue::from_static("dom.relay.example"));
        let m = StreamMeta::from_headers(&h);
        assert_eq!(m.domain.as_deref(), Some("dom"));
        assert_eq!(m.client_addr, Some("[2001:db8::1]:5678".parse().unwrap()));
        assert_eq!(m.listener, Some(Listener::TlsPassthrough));
        assert_eq!(m.route, Some(Route::Sni));
        assert_eq!(m.sni.as_deref(), Some("dom.relay.example"));
        assert_eq!(m.node, None);
        h.insert(field::CLIENT_ADDR, HeaderValue::from_static("nonsense"));
        h.insert(field::NODE, HeaderValue::from_static("node-2"));
        h.insert("x-other", HeaderValue::from_static("ignored"));
        let m = StreamMeta::from_headers(&h);
        assert_eq!(m.client_addr, None);
        assert_eq!(m.node.as_deref(), Some("node-2"));
        assert_eq!(m.domain.as_deref(), Some("dom"));
        assert_eq!("auto".parse(), Ok(Transport::Auto));
        assert!("h2".parse::<Transport>().is_err());
    }
}
