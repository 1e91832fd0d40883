//! Lingering close (spec 2.3): after a final response the relay half-closes (a FIN, or a TLS
//! `close_notify`), then reads and discards input for up to 2 s or 64 KiB before closing.
//! Closing at once would make the kernel answer the peer's unread request bytes with a RST,
//! which can destroy the response before the peer has read it.

use crate::stream::Stream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// Writes `response`, half-closes and drains, then drops the connection.
pub(crate) async fn respond_and_close(stream: Stream, response: &[u8]) {
    crate::metrics::response(response);
    linger(stream, response, LINGER_TIME, LINGER_BYTES).await;
}

/// The same for a forward-proxy refusal, which its own metrics count (6.5), not the
/// handshake responses'.
pub(crate) async fn refuse_and_close(stream: Stream, response: &[u8]) {
    linger(stream, response, LINGER_TIME, LINGER_BYTES).await;
}

/// The same with a short linger, for connections refused by a per-source limit: a source over
/// its limit must not hold thousands of sockets in lingering closes.
pub(crate) async fn respond_and_close_briefly(stream: Stream, response: &[u8]) {
    crate::metrics::response(response);
    linger(stream, response, LINGER_TIME / 8, 4096).await;
}

async fn linger(mut stream: Stream, response: &[u8], time: Duration, bytes: usize) {
    let written = timeout(time, async {
        stream.write_all(response).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let mut scratch = vec![0; 4096];
    let _ = timeout(time, async {
        let mut drained = 0;
        while drained < bytes {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
