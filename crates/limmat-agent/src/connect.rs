//! The one HTTP `CONNECT` client of the workspace: it opens a tunnel through an HTTP proxy on
//! a stream the caller has connected, and hands back the proxy's answer for the caller to
//! judge. Three callers, three judgements of the same bytes:
//!
//! - the agent's outbound proxy (`outbound`): a corporate proxy between the agent and the
//!   relay, with Basic credentials;
//! - [`crate::connect_via_proxy`]: the relay's forward proxy (spec 6) with the device's key,
//!   whose refusals become typed errors;
//! - the gateway's webhook transport (`gateway-api.md` §5.9), which classifies the refusals
//!   as delivery failures.
//!
//! The request bytes come from [`limmat_wire::proxy::connect_request`] (pure, byte-tested).
//! The answer is read a byte at a time up to the end of its head, so no byte the target sends
//! early (a TLS ServerHello, an SSH banner) is left behind in a buffer: after a `2xx` the
//! stream carries the target's bytes and nothing else.

use std::io;

use limmat_wire::HeadScanner;
use limmat_wire::proxy::{connect_request, fields};
use limmat_wire::reply::{Reply, ReplyError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::head::MAX_HEAD;

/// A proxy's answer to `CONNECT`: its head, which the status line of has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAnswer {
    head: Vec<u8>,
    status: u16,
}

impl ConnectAnswer {
    /// The answer to a complete response `head`, if its status line is HTTP's (and it has at
    /// most one `Location` and one `Retry-After`, as [`Reply::parse`] requires).
    pub fn parse(head: Vec<u8>) -> Result<Self, ReplyError> {
        let status = Reply::parse(&head)?.status;
        Ok(Self { head, status })
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent (empty when there is none).
    pub fn reason(&self) -> String {
        let line = self.head.split(|&b| b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(line)
            .trim()
            .splitn(3, ' ')
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    }

    /// The value of the first field called `name` (any case), trimmed; invalid UTF-8 is
    /// replaced.
    pub fn field(&self, name: &str) -> Option<String> {
        fields(&self.head)
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The whole head, status line to the empty line.
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

/// Why a `CONNECT` got no answer to judge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectAnswerError {
    /// The request could not be written.
    #[error("{0}")]
    Send(io::Error),
    /// The answer could not be read (the proxy closed, or a read failed).
    #[error("{0}")]
    Read(io::Error),
    /// The answer's head is longer than [`MAX_HEAD`].
    #[error("the answer head is too long")]
    TooLong,
    /// The answer is not an HTTP response head.
    #[error("{0}")]
    NotHttp(ReplyError),
}

/// Sends `CONNECT authority` (`host:port`, an IPv6 host bracketed) with `proxy_authorization`
/// as the `Proxy-Authorization` value if given, and reads the answer's head. The caller
/// judges the status; after a `2xx` the stream is the tunnel. No timeout of its own: callers
/// bound it with theirs.
pub async fn http_connect<S>(
    stream: &mut S,
    authority: &str,
    proxy_authorization: Option<&str>,
) -> Result<ConnectAnswer, ConnectAnswerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(&connect_request(authority, proxy_authorization))
        .await
        .map_err(ConnectAnswerError::Send)?;
    let mut scanner = HeadScanner::new();
    let mut head = Vec::with_capacity(128);
    loop {
        head.push(stream.read_u8().await.map_err(ConnectAnswerError::Read)?);
        if scanner.scan(&head).is_some() {
            return ConnectAnswer::parse(head).map_err(ConnectAnswerError::NotHttp);
        }
        if head.len() >= MAX_HEAD {
            return Err(ConnectAnswerError::TooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `http_connect` against `answer` (plus `after`, the target's first bytes) and
    /// returns what was sent, the outcome and what the stream still holds.
    async fn exchange(
        auth: Option<&str>,
        answer: &[u8],
    ) -> (Vec<u8>, Result<ConnectAnswer, ConnectAnswerError>, Vec<u8>) {
        let (mut client, mut proxy) = tokio::io::duplex(64 * 1024);
        proxy.write_all(answer).await.unwrap();
        proxy.write_all(b"after").await.unwrap();
        proxy.shutdown().await.unwrap();
        let outcome = http_connect(&mut client, "[::1]:22", auth).await;
        let mut sent = vec![0u8; 256];
        let n = proxy.read(&mut sent).await.unwrap();
        sent.truncate(n);
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        (sent, outcome, rest)
    }

    #[tokio::test]
    async fn sends_the_request_and_reads_exactly_the_head() {
        let (sent, outcome, rest) = exchange(
            Some("Bearer k"),
            b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n",
        )
        .await;
        assert_eq!(
            sent,
            b"CONNECT [::1]:22 HTTP/1.1\r\nHost: [::1]:22\r\nProxy-Authorization: Bearer k\r\n\r\n"
        );
        let answer = outcome.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.reason(), "Connection established");
        assert_eq!(answer.field("VIA").as_deref(), Some("x"));
        assert_eq!(answer.field("retry-after"), None);
        // The target's early bytes are still in the stream.
        assert_eq!(rest, b"after");
    }

    #[tokio::test]
    async fn answers_and_failures() {
        let (sent, outcome, _) = exchange(
            None,
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate:  Basic realm=\"r\" \r\n\r\n",
        )
        .await;
        assert_eq!(sent, b"CONNECT [::1]:22 HTTP/1.1\r\nHost: [::1]:22\r\n\r\n");
        let answer = outcome.unwrap();
        assert_eq!(answer.status(), 407);
        assert_eq!(
            answer.field("proxy-authenticate").as_deref(),
            Some("Basic realm=\"r\"")
        );
        let (_, outcome, _) = exchange(None, b"HTTP/1.0 502\r\n\r\n").await;
        assert_eq!(outcome.unwrap().reason(), "");
        let (_, outcome, _) = exchange(None, b"nonsense\r\n\r\n").await;
        assert!(
            matches!(outcome, Err(ConnectAnswerError::NotHttp(_))),
            "{outcome:?}"
        );
        let (_, outcome, _) = exchange(None, b"HTTP/1.1 200 OK\r\n").await;
        assert!(
            matches!(outcome, Err(ConnectAnswerError::Read(_))),
            "{outcome:?}"
        );
        let long = [&b"HTTP/1.1 200 OK\r\nA: "[..], &[b'a'; MAX_HEAD]].concat();
        let (_, outcome, _) = exchange(None, &long).await;
        assert!(
            matches!(outcome, Err(ConnectAnswerError::TooLong)),
            "{outcome:?}"
        );
    }
}
