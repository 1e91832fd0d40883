//! HTTP/2 settings of a mux connection (spec 5.2, 5.5), applied to `h2`'s builders so that the
//! relay and the agent agree.
//!
//! Windows are large from the start: a stream's initial window of 2 MiB and a connection window
//! of 32 MiB, so that one stream is not capped at *window / RTT* (about 16 MB/s at 130 ms with
//! the 64 KiB default), and [`crate::Keepalive`] grows the receive windows further from
//! measured bandwidth-delay products up to [`MAX_WINDOW`].

use std::time::Duration;

/// A stream's initial receive window (spec: at least 256 KiB).
pub const STREAM_WINDOW: u32 = 2 << 20;
/// The connection's receive window (spec: at least the stream ceiling).
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// The ceiling adaptive windows grow to (spec: at least 16 MiB).
pub const MAX_WINDOW: u32 = 16 << 20;
/// The largest DATA frame each end accepts.
pub const MAX_FRAME: u32 = 64 << 10;
/// Bytes `h2` buffers per stream before a writer waits for the peer's window.
pub const SEND_BUFFER: usize = 1 << 20;
/// The device's default `SETTINGS_MAX_CONCURRENT_STREAMS` (5.2).
pub const DEVICE_MAX_STREAMS: u32 = 256;
/// Send a PING after this long without receiving anything (5.6).
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// The connection is dead when the PING ACK takes longer than this (5.6).
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The relay's side (HTTP/2 client): no push, no streams from the device (5.2).
pub fn client() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.enable_push(false)
        .max_concurrent_streams(0)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER)
        .initial_max_send_streams(DEVICE_MAX_STREAMS as usize);
    b
}

/// The device's side (HTTP/2 server), accepting at most `max_streams` at once.
pub fn server(max_streams: u32) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(max_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER);
    b
}
