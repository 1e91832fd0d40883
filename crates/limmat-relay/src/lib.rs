//! The Limmat relay: a Yaler-compatible reverse-HTTP relay (relay-protocol.md sections 2–3).
//!
//! Devices behind NAT open outgoing connections and send a `PTTH/1.0` handshake; the relay
//! holds them in a per-domain FIFO and, when a web client asks for that domain, answers the
//! device with `101` and forwards the client's bytes verbatim in both directions.
//!
//! - [`config`]: settings and their validation.
//! - [`server`]: listeners, the accept loop and graceful shutdown.
//! - `conn`: one accepted connection: read a head, classify it, hand it on.
//! - `device` / `client`: the two sides of a pairing; `registry`: the per-domain FIFOs.
//! - `pipe`: the forwarding loop; `head`: bounded head reads; `linger`: lingering close.
//! - `stream`: a leg, plain or TLS; [`tls`]: certificates, SNI selection and reload.
//! - [`auth`]: device keys; [`limits`]: per-source and per-domain abuse limits.
//! - [`egress`]: the forward proxy's egress policy; `proxy`: the forward proxy itself (6).
//! - [`stats`]: live counters that tests and operators read.
//! - [`cluster`]: membership, ownership and forwarding between nodes (section 7).

mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod server;
pub mod stats;

mod client;
mod conn;
mod device;
pub mod egress;
mod head;
pub mod limits;
mod linger;
mod metrics;
mod mux;
mod pipe;
mod proxy;
mod registry;
mod socket;
#[cfg(target_os = "linux")]
mod splice;
mod stream;
pub mod tls;

pub use config::{ConfigError, Listen, RelayConfig};
pub use egress::{Action, EgressConfig, EgressRule};
pub use limits::{Cidr, LimitConfig, Rate};
pub use metrics::share_recorder;
pub use server::{Relay, RelayHandle};
pub use stats::Stats;
pub use tls::CertPaths;
