//! The parts of limmat-mux/1 (spec section 5) that the relay (HTTP/2 client) and the agent
//! (HTTP/2 server) share, on top of the `h2` crate:
//!
//! - [`settings`]: the window, frame and stream settings both ends use (5.2, 5.5);
//! - [`H2Stream`]: one CONNECT stream as an `AsyncRead + AsyncWrite` byte stream, so that a mux
//!   stream goes through the same pipe and tunnel code as a PTTH connection (5.3, 5.4);
//! - [`MuxIo`] and [`Signals`]: the connection's socket, watched for liveness (bytes read),
//!   with the relay's drain GOAWAY inserted between frames and the device noticing it (5.7);
//! - [`copy_bidirectional`]: the pipe of both ends, whose buffers grow only for bulk flows;
//!   [`Ends`] lets a leg that knows where its bytes end have its last ones leave with the
//!   other leg's FIN ([`copy_bidirectional_ends`]);
//! - [`DataPath`] and, on Linux, `splice`: moving bytes between two plain TCP sockets in the
//!   kernel, for the relay's PTTH pipes and the tunnel's local connections;
//! - [`Driver`]: the one loop that drives a connection, client or server: PING when nothing
//!   was received for an interval, dead after a timeout without the ACK (5.6), and receive
//!   windows grown to the path's bandwidth-delay product (5.5).
//!
//! Nothing here speaks HTTP/2 by hand except the one fixed GOAWAY frame, which `h2` does not
//! let a client send; see `limmat_wire::mux`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod copy;
mod data_path;
mod driver;
mod ends;
mod io;
mod keepalive;
pub mod settings;
#[cfg(target_os = "linux")]
pub mod splice;
mod stream;

pub use copy::{copy_bidirectional, copy_bidirectional_ends};
pub use data_path::DataPath;
pub use driver::{Connection, Driven, Driver};
pub use ends::Ends;
pub use io::{MuxIo, Signals};
pub use stream::H2Stream;

/// What the crate's tests share.
#[cfg(test)]
mod testing {
    /// The CONNECT request the relay opens a stream with, as `h2`'s client sends it.
    pub(crate) fn connect_request() -> http::Request<()> {
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri("relay.example:80")
            .body(())
            .unwrap()
    }
}
