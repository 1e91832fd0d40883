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
pub(crate) async fn respond_and_close(mut stream: Stream, response: &[u8]) {
    let written = timeout(LINGER_TIME, async {
        stream.write_all(response).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let mut scratch = vec![0; 4096];
    let _ = timeout(LINGER_TIME, async {
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
