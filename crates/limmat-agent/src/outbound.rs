//! The outbound proxy between the agent and the relay: gateways in factories, hospitals and
//! shops often reach the Internet only through an HTTP or SOCKS5 proxy.
//!
//! - [`RelayProxy`]: the setting (`--relay-proxy URL|none`, or the environment as curl reads
//!   it: `https_proxy`/`HTTPS_PROXY` for a TLS relay, `http_proxy` for a plain one, then
//!   `all_proxy`/`ALL_PROXY`, minus `no_proxy`/`NO_PROXY`).
//! - [`ProxyUrl`]: one proxy, `http://` (CONNECT, Basic credentials), `https://` (TLS to the
//!   proxy itself), `socks5://` (the agent resolves the relay) or `socks5h://` (the proxy
//!   does), with RFC 1929 user/password.
//! - [`UpstreamProxyError`]: the proxy's answers, in words a person can act on.
//!
//! Only connections to the relay go through the proxy; local services never do.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::connect::http_connect;

/// How the agent reaches the relay: directly, through the proxy the environment names, or
/// through a given proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayProxy {
    /// No proxy, whatever the environment says (`--relay-proxy none`; the library's default).
    #[default]
    Direct,
    /// The proxy environment variables, as curl reads them (`limmat tunnel`'s default).
    Environment,
    /// This proxy (`--relay-proxy URL`); `no_proxy` still applies.
    Url(ProxyUrl),
    /// This proxy, set at the named place (e.g. `gateway.toml relay.relay_proxy`), which the
    /// start-up log line names; `no_proxy` still applies.
    Named(ProxyUrl, &'static str),
}

impl RelayProxy {
    /// The same setting, its start-up log line naming `from` as where a proxy URL was set.
    pub fn set_at(self, from: &'static str) -> Self {
        match self {
            Self::Url(url) | Self::Named(url, _) => Self::Named(url, from),
            other => other,
        }
    }
}

impl FromStr for RelayProxy {
    type Err = ProxyUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "none" | "" => Ok(Self::Direct),
            "env" => Ok(Self::Environment),
            url => url.parse().map(Self::Url),
        }
    }
}

/// The protocol spoken to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyScheme {
    /// HTTP `CONNECT` over plain TCP.
    Http,
    /// HTTP `CONNECT` over TLS to the proxy.
    Https,
    /// SOCKS5; the agent resolves the relay's name.
    Socks5,
    /// SOCKS5; the proxy resolves the relay's name.
    Socks5h,
}

impl ProxyScheme {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Socks5 => "socks5",
            Self::Socks5h => "socks5h",
        }
    }
}

/// One proxy: scheme, host, port and optional credentials (percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// How the proxy is spoken to.
    pub scheme: ProxyScheme,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port (1080 for SOCKS, 80 for http, 443 for https when not given).
    pub port: u16,
    /// User and password, sent as Basic (HTTP) or RFC 1929 (SOCKS5).
    pub credentials: Option<(String, String)>,
}

/// The password is masked: the URL is logged at start.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.name())?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// Why a proxy URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyUrlError {
    /// Not a URL at all.
    #[error("`{0}` is not a proxy URL ({1})")]
    Syntax(String, String),
    /// A scheme other than http, https, socks5 and socks5h.
    #[error("proxy scheme `{0}` is not supported: use http, https, socks5 or socks5h")]
    Scheme(String),
    /// No host.
    #[error("the proxy URL `{0}` has no host")]
    NoHost(String),
}

impl FromStr for ProxyUrl {
    type Err = ProxyUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // curl takes a bare `host:port` as an HTTP proxy.
        let text = match s.contains("://") {
            true => s.to_owned(),
            false => format!("http://{s}"),
        };
        let url =
            url::Url::parse(&text).map_err(|e| ProxyUrlError::Syntax(s.into(), e.to_string()))?;
        let scheme = match url.scheme() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            other => return Err(ProxyUrlError::Scheme(other.into())),
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(ProxyUrlError::NoHost(s.into())),
        };
        let port = url.port().unwrap_or(match scheme {
            ProxyScheme::Http => 80,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
        });
        let decode = |v: &str| percent_decode_str(v).decode_utf8_lossy().into_owned();
        let credentials = (!url.username().is_empty()).then(|| {
            (
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            )
        });
        Ok(Self {
            scheme,
            host,
            port,
            credentials,
        })
    }
}

/// The proxies for TLS and plain relays and the hosts that bypass them, read once at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyPlan {
    /// For a TLS relay, with where the setting came from.
    tls: Option<(ProxyUrl, &'static str)>,
    /// For a plain relay.
    plain: Option<(ProxyUrl, &'static str)>,
    no_proxy: NoProxy,
}

impl ProxyPlan {
    /// The plan for `setting`, reading the environment through `var`.
    pub(crate) fn new(
        setting: &RelayProxy,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ProxyUrlError> {
        let first = |names: &[&'static str]| -> Result<Option<(ProxyUrl, &'static str)>, _> {
            for name in names {
                if let Some(value) = var(name).filter(|v| !v.trim().is_empty()) {
                    return Ok(Some((value.trim().parse()?, *name)));
                }
            }
            Ok(None)
        };
        let no_proxy = || {
            ["no_proxy", "NO_PROXY"]
                .iter()
                .find_map(|n| var(n))
                .map(|v| NoProxy::parse(&v))
                .unwrap_or_default()
        };
        Ok(match setting {
            RelayProxy::Direct => Self::default(),
            RelayProxy::Url(url) => Self {
                tls: Some((url.clone(), "--relay-proxy")),
                plain: Some((url.clone(), "--relay-proxy")),
                no_proxy: no_proxy(),
            },
            RelayProxy::Named(url, from) => Self {
                tls: Some((url.clone(), from)),
                plain: Some((url.clone(), from)),
                no_proxy: no_proxy(),
            },
            RelayProxy::Environment => {
                let all = first(&["all_proxy", "ALL_PROXY"])?;
                Self {
                    tls: first(&["https_proxy", "HTTPS_PROXY"])?.or_else(|| all.clone()),
                    // Upper-case HTTP_PROXY is ignored, as by curl (CGI sets it from a header).
                    plain: first(&["http_proxy"])?.or(all),
                    no_proxy: no_proxy(),
                }
            }
        })
    }

    /// The plan for `setting` from the process environment.
    pub(crate) fn from_env(setting: &RelayProxy) -> Result<Self, ProxyUrlError> {
        Self::new(setting, |name| std::env::var(name).ok())
    }

    /// The proxy for a relay at `host` (TLS or not), with where it was configured.
    pub(crate) fn for_relay(&self, host: &str, tls: bool) -> Option<&(ProxyUrl, &'static str)> {
        let proxy = match tls {
            true => self.tls.as_ref(),
            false => self.plain.as_ref(),
        }?;
        (!self.no_proxy.bypasses(host)).then_some(proxy)
    }

    /// Whether no relay connection can ever use a proxy (then nothing is checked per connection).
    pub(crate) fn is_direct(&self) -> bool {
        self.tls.is_none() && self.plain.is_none()
    }
}

/// `no_proxy`: host suffixes, IP addresses, CIDRs, or `*` for every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NoProxy {
    all: bool,
    names: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    pub(crate) fn parse(value: &str) -> Self {
        let mut out = Self::default();
        for entry in value
            .split([',', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                out.all = true;
                continue;
            }
            let entry = entry.trim_start_matches("*.").trim_start_matches('.');
            let (addr, bits) = match entry.split_once('/') {
                Some((a, b)) => (a, b.parse::<u8>().ok()),
                None => (entry, None),
            };
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    out.nets.push((ip, bits.unwrap_or(max).min(max)));
                }
                Err(_) => out.names.push(entry.to_ascii_lowercase()),
            }
        }
        out
    }

    /// Whether `host` (a name or an IP literal) goes direct.
    pub(crate) fn bypasses(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|&(net, bits)| in_net(ip, net, bits));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|name| {
            host == *name
                || (host.len() > name.len()
                    && host.ends_with(name.as_str())
                    && host.as_bytes()[host.len() - name.len() - 1] == b'.')
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let mask = |len: u32, bits: u8| -> u128 {
        match bits {
            0 => 0,
            b => (!0u128 << (len - u32::from(b))) & (!0u128 >> (128 - len)),
        }
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = mask(32, bits);
            u128::from(u32::from(a)) & m == u128::from(u32::from(b)) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = mask(128, bits);
            u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

/// Why the proxy gave no tunnel to the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamProxyError {
    /// The proxy answered 407.
    #[error(
        "the proxy at {proxy} wants credentials ({challenge}): give user:password@ in the proxy URL"
    )]
    Credentials {
        /// The proxy's host:port.
        proxy: String,
        /// `Proxy-Authenticate: …`, or a note that none was sent.
        challenge: String,
    },
    /// The proxy refused the CONNECT (403, 502 or another status).
    #[error(
        "the proxy at {proxy} refused to connect to the relay {relay} ({status} {reason}); \
         proxies often allow only port 443: use a relay on 443 (tls:host:443) or ask for an exception"
    )]
    Refused {
        /// The proxy's host:port.
        proxy: String,
        /// The relay's host:port.
        relay: String,
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The SOCKS5 proxy gave a failure reply or refused the credentials.
    #[error("the SOCKS5 proxy at {proxy} could not connect to the relay {relay}: {reason}")]
    Socks {
        /// The proxy's host:port.
        proxy: String,
        /// The relay's host:port.
        relay: String,
        /// The reply, by name.
        reason: String,
    },
    /// No answer, or not an HTTP answer.
    #[error("the proxy at {proxy} gave no usable answer: {reason}")]
    Answer {
        /// The proxy's host:port.
        proxy: String,
        /// What went wrong.
        reason: String,
    },
}

impl UpstreamProxyError {
    /// Whether this is a configuration error (wrong or missing credentials): the agent then
    /// backs off long instead of retrying every second.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Credentials { .. } => true,
            Self::Socks { reason, .. } => reason.contains("password") || reason.contains("auth"),
            _ => false,
        }
    }
}

/// An `host:port` authority, bracketed for IPv6.
pub(crate) fn authority(host: &str, port: u16) -> String {
    match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// A `Basic` credential value.
pub(crate) fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Opens the tunnel to the relay `host:port` on `stream`, a connection to the HTTP proxy
/// `proxy`: the relay's *name* goes in the CONNECT line (the proxy resolves it, as with curl).
pub(crate) async fn tunnel_http<S>(
    stream: &mut S,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let relay = authority(host, port);
    let at = authority(&proxy.host, proxy.port);
    let auth = proxy.credentials.as_ref().map(|(u, p)| basic(u, p));
    let no_answer = |reason: String| {
        io::Error::other(UpstreamProxyError::Answer {
            proxy: at.clone(),
            reason,
        })
    };
    let answer = http_connect(stream, &relay, auth.as_deref())
        .await
        .map_err(|e| no_answer(e.to_string()))?;
    match answer.status() {
        200..=299 => Ok(()),
        407 => Err(io::Error::other(UpstreamProxyError::Credentials {
            proxy: at,
            challenge: answer.field("proxy-authenticate").map_or_else(
                || "no Proxy-Authenticate".to_owned(),
                |v| format!("Proxy-Authenticate: {v}"),
            ),
        })),
        status => Err(io::Error::other(UpstreamProxyError::Refused {
            proxy: at,
            relay,
            status,
            reason: answer.reason(),
        })),
    }
}

/// Opens the tunnel to the relay `host:port` through the SOCKS5 proxy `proxy` on `tcp`. With
/// `socks5://` the agent resolves the relay (the first address); with `socks5h://` the proxy does.
pub(crate) async fn tunnel_socks(
    tcp: TcpStream,
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
) -> io::Result<TcpStream> {
    use tokio_socks::tcp::Socks5Stream;
    let relay = authority(host, port);
    let target: tokio_socks::TargetAddr<'static> = match proxy.scheme {
        ProxyScheme::Socks5 => {
            let addr = tokio::net::lookup_host((host, port))
                .await?
                .next()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
                })?;
            tokio_socks::TargetAddr::Ip(addr)
        }
        _ => tokio_socks::TargetAddr::Domain(host.to_owned().into(), port),
    };
    let result = match &proxy.credentials {
        Some((user, password)) => {
            Socks5Stream::connect_with_password_and_socket(tcp, target, user, password).await
        }
        None => Socks5Stream::connect_with_socket(tcp, target).await,
    };
    result.map(Socks5Stream::into_inner).map_err(|e| {
        let reason = match e {
            tokio_socks::Error::Io(e) => return e,
            tokio_socks::Error::PasswordAuthFailure(code) => {
                format!("the proxy refused the user/password (RFC 1929 status {code})")
            }
            tokio_socks::Error::NoAcceptableAuthMethods => {
                "no acceptable auth method: the proxy wants a user/password".to_owned()
            }
            e => e.to_string(),
        };
        io::Error::other(UpstreamProxyError::Socks {
            proxy: authority(&proxy.host, proxy.port),
            relay,
            reason,
        })
    })
}

/// The typed proxy error inside an I/O error, if that is what it is.
pub fn upstream_error(e: &io::Error) -> Option<&UpstreamProxyError> {
    e.get_ref()?.downcast_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p: ProxyUrl = "http://us%40er:p%3Ass@proxy.corp:3128".parse().unwrap();
        assert_eq!(p.scheme, ProxyScheme::Http);
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(p.credentials, Some(("us@er".to_owned(), "p:ss".to_owned())));
        assert_eq!(p.to_string(), "http://us@er:***@proxy.corp:3128");
        let p: ProxyUrl = "socks5h://[::1]".parse().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 1080));
        assert_eq!(p.to_string(), "socks5h://[::1]:1080");
        let p: ProxyUrl = "proxy:8080".parse().unwrap();
        assert_eq!((p.scheme, p.port), (ProxyScheme::Http, 8080));
        assert_eq!("https://p".parse::<ProxyUrl>().unwrap().port, 443);
        assert!(matches!(
            "ftp://p".parse::<ProxyUrl>(),
            Err(ProxyUrlError::Scheme(_))
        ));
        assert_eq!("none".parse::<RelayProxy>().unwrap(), RelayProxy::Direct);
    }

    #[test]
    fn no_proxy_as_curl() {
        let n = NoProxy::parse(".corp.example, localhost,10.0.0.0/8 ,::1, 192.168.1.7");
        assert!(n.bypasses("relay.corp.example"));
        assert!(n.bypasses("corp.example"));
        assert!(!n.bypasses("xcorp.example"));
        assert!(n.bypasses("LOCALHOST"));
        assert!(n.bypasses("10.20.30.40"));
        assert!(!n.bypasses("11.0.0.1"));
        assert!(n.bypasses("[::1]"));
        assert!(n.bypasses("192.168.1.7"));
        assert!(!n.bypasses("192.168.1.8"));
        assert!(!n.bypasses("relay.example"));
        assert!(NoProxy::parse("*").bypasses("anything"));
    }

    #[test]
    fn environment_as_curl() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let plan = ProxyPlan::new(
            &RelayProxy::Environment,
            env(&[
                ("HTTPS_PROXY", "http://s:3128"),
                ("HTTP_PROXY", "http://ignored:1"),
                ("ALL_PROXY", "socks5h://all:1080"),
                ("NO_PROXY", "bypass.example"),
            ]),
        )
        .unwrap();
        assert_eq!(plan.for_relay("r", true).unwrap().0.host, "s");
        assert_eq!(plan.for_relay("r", true).unwrap().1, "HTTPS_PROXY");
        assert_eq!(plan.for_relay("r", false).unwrap().0.host, "all");
        assert!(plan.for_relay("bypass.example", true).is_none());
        let plan = ProxyPlan::new(&RelayProxy::Direct, env(&[("ALL_PROXY", "http://x")])).unwrap();
        assert!(plan.is_direct());
        let plan = ProxyPlan::new(
            &RelayProxy::Environment,
            env(&[("http_proxy", "http://lower:1")]),
        )
        .unwrap();
        assert_eq!(plan.for_relay("r", false).unwrap().0.host, "lower");
        assert!(plan.for_relay("r", true).is_none());
    }
}
