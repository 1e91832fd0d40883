//! The Limmat relay protocol as pure functions: bytes in, typed values out, and typed values
//! back to exact bytes. Nothing here does I/O, so every rule of the specification
//! (`relay-protocol.md`, sections 2–3) can be tested byte for byte and fuzzed; the relay, the
//! agent and `limmat tunnel` are thin I/O layers on top.
//!
//! - [`head`]: where a request or response head ends (rule H1), across any split of reads.
//! - [`request`]: the lenient request-head scanner (H3–H13) and its classification (2.1.3).
//! - [`domain`]: domain keys, their bytes and which are registrable (H6).
//! - [`route`]: client routing in path and subdomain form (2.5).
//! - [`response`]: the relay's responses, byte-exact (2.3).
//! - [`reply`]: how a device or tunnel client reads the relay's responses (2.9).
//! - [`tunnel`]: the end-to-end conventions of `limmat tunnel` (2.8) and the device handshake.
//! - [`proxy`]: the forward proxy's targets, credentials, rewrite and refusals (6).
//! - [`tls`]: the SNI peek at a TLS ClientHello on a `tls` listener (2.6.2).
//! - [`mux`]: limmat-mux/1 stream metadata and HTTP/2 frame boundaries (section 5).
//! - [`cluster`]: the internal listener's requests and the client-forwarding head (7.1, 7.5).
//! - [`net`]: address ranges and the built-in deny set every outgoing connection obeys (6.4.3).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

// Not yet wired into the rendezvous (issue 14); its items get their docs when it is.
#[allow(missing_docs)]
pub mod cluster;
pub mod domain;
pub mod head;
pub mod mux;
pub mod net;
pub mod proxy;
pub mod reply;
pub mod request;
pub mod response;
pub mod route;
pub mod tls;
pub mod tunnel;

pub use head::HeadScanner;
pub use request::{Authorization, Kind, Protocol, RequestHead};
pub use route::{ClientRoute, Hostnames, RouteForm};
