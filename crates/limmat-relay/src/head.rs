//! Reading one request head under the relay's bounds: `max_head` bytes (H2, D1) and an absolute
//! deadline (D8), so neither an oversized nor a slowloris head can hold a connection.
//!
//! The buffer is allocated only once the socket is readable, so an idle connection costs no
//! buffer; bytes after the head stay in the buffer for the caller (H13).

use crate::stream::{Leg, Stream};
use limmat_wire::HeadScanner;
use std::io;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

/// Why no head was read. Every case closes the connection with no response (2.3).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("closed before the head was complete")]
    Closed,
    #[error("head longer than max_head")]
    TooLong,
    #[error("head not complete within head_timeout")]
    Timeout,
    #[error("relay shutting down")]
    Shutdown,
    #[error(transparent)]
    Io(#[from] io::Error),
}

const FIRST_CHUNK: usize = 2048;

/// Reads until `buf` holds a complete head and returns its length.
pub(crate) async fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    max_head: usize,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> Result<usize, HeadError> {
    let mut scanner = HeadScanner::new();
    loop {
        if buf.len() >= max_head {
            return Err(HeadError::TooLong);
        }
        // Grow by doubling, never past max_head: a head is read in O(log n) allocations.
        let chunk = buf.len().max(FIRST_CHUNK).min(max_head - buf.len());
        let read = tokio::select! {
            biased;
            read = stream.read_into(buf, chunk) => read?,
            () = sleep_until(deadline) => return Err(HeadError::Timeout),
            () = shutdown.cancelled() => return Err(HeadError::Shutdown),
        };
        if read == 0 {
            return Err(HeadError::Closed);
        }
        if let Some(len) = scanner.scan(buf) {
            return if len > max_head {
                Err(HeadError::TooLong)
            } else {
                Ok(len)
            };
        }
    }
}
