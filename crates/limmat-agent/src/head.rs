//! Reading one head (a response from the relay, or the request in proxy mode) off a stream.
//!
//! Bytes are read in chunks, so a read may return the head together with whatever follows it
//! (the client's first bytes after a `101`, say). Those bytes are never lost: they stay in the
//! caller's buffer after the head, to be handed on first.

use std::io;

use limmat_wire::HeadScanner;
use limmat_wire::reply::{Reply, ReplyError, RetryAfter};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest head the agent accepts, from the relay or from a proxy-mode client (2.9).
pub const MAX_HEAD: usize = 16 * 1024;

/// How much to ask the kernel for per read.
const READ_CHUNK: usize = 4 * 1024;

/// Why no usable head was read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    #[error("the connection closed before a complete head ({0} bytes read)")]
    Eof(usize),
    #[error("the head is longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("reading the head failed: {0}")]
    Io(#[from] io::Error),
    #[error("bad response: {0}")]
    Reply(#[from] ReplyError),
}

/// Reads until `buf` (which may already hold bytes) starts with a complete head, and returns the
/// head's length. Bytes read past the head stay in `buf`.
pub async fn read_head<S>(io: &mut S, buf: &mut Vec<u8>) -> Result<usize, HeadError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut scanner = HeadScanner::new();
    loop {
        if let Some(len) = scanner.scan(buf) {
            return if len <= MAX_HEAD {
                Ok(len)
            } else {
                Err(HeadError::TooLong)
            };
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLong);
        }
        buf.reserve(READ_CHUNK);
        if io.read_buf(buf).await? == 0 {
            return Err(HeadError::Eof(buf.len()));
        }
    }
}

/// The facts of a final response head that the agent acts on, owned so that the buffer can
/// move on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalReply {
    pub status: u16,
    /// The head was exactly the 61-byte limmat-mux/1 `101` (2.3, 5.8).
    pub exact_mux_upgrade: bool,
    pub location: Option<Vec<u8>>,
    pub retry_after: Option<RetryAfter>,
}

/// Reads response heads until a final one, skipping interim `1xx` responses other than `101`
/// (checklist 51), and removes it from `buf`: what is left in `buf` came after the head.
pub async fn read_final_reply<S>(io: &mut S, buf: &mut Vec<u8>) -> Result<FinalReply, HeadError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    loop {
        let len = read_head(io, buf).await?;
        let reply = Reply::parse(&buf[..len])?;
        let reply = FinalReply {
            status: reply.status,
            exact_mux_upgrade: &buf[..len] == limmat_wire::response::UPGRADE_MUX,
            location: reply.location.map(<[u8]>::to_vec),
            retry_after: reply.retry_after,
        };
        buf.drain(..len);
        if !(100..200).contains(&reply.status) || reply.status == 101 {
            return Ok(reply);
        }
        tracing::debug!(status = reply.status, "skipped an interim response");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn final_reply(bytes: &[u8]) -> (Result<FinalReply, HeadError>, Vec<u8>) {
        let mut input = bytes;
        let mut buf = Vec::new();
        let reply = read_final_reply(&mut input, &mut buf).await;
        (reply, buf)
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_leftover_kept() {
        let (reply, rest) =
            final_reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 \n\nHTTP/1.1 101 \r\n\r\nabc")
                .await;
        assert_eq!(reply.unwrap().status, 101);
        assert_eq!(rest, b"abc");
    }

    #[tokio::test]
    async fn bad_heads_are_errors() {
        assert!(matches!(
            final_reply(b"HTTP/1.1 101 \r\n").await.0,
            Err(HeadError::Eof(15))
        ));
        assert!(matches!(
            final_reply(b"garbage\r\n\r\n").await.0,
            Err(HeadError::Reply(ReplyError::NotHttp))
        ));
        let long = [
            b"HTTP/1.1 204 \r\nX: ".as_slice(),
            &[b'a'; MAX_HEAD],
            b"\r\n\r\n",
        ]
        .concat();
        assert!(matches!(
            final_reply(&long).await.0,
            Err(HeadError::TooLong)
        ));
        let (ok, _) = final_reply(&[&long[..MAX_HEAD - 4], b"\r\n\r\n"].concat()).await;
        assert_eq!(ok.unwrap().status, 204);
    }
}
