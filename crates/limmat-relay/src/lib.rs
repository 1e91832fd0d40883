//! The Limmat relay: a Yaler-compatible reverse-HTTP relay (relay-protocol.md sections 2–3).
//!
//! Devices behind NAT open outgoing connections and send a `PTTH/1.0` handshake; the relay
//! holds them in a per-domain FIFO and, when a web client asks for that domain, answers the
//! device with `101` and forwards the client's bytes verbatim in both directions.
//!
//! The modules stand in floors; each imports only from the floors below it:
//!
//! - [`server`]: listeners, the accept loop and graceful shutdown; `admin`: the admin API.
//! - `conn`: one accepted connection: TLS peek, read a head, classify it, hand it on.
//! - `device`: admission (4.4), waiting and renewal; `pairing`: the rendezvous of a client
//!   and a device, re-dispatch and requeue; `mux`: limmat-mux/1 connections and streams;
//!   `proxy`: the forward proxy (6).
//! - `pipe`: the forwarding loop; `access`: its access log; `context`: what every task reads; `registry`: the
//!   per-domain FIFOs and their drop guards; `legs`: the connections handed between tasks.
//! - `stream`: a leg, plain or TLS; `head`: bounded head reads; `linger`: lingering close;
//!   `metrics`, [`stats`], `snapshot`, `proxy_stats`: what operators and tests read.
//! - [`config`]: settings and their validation; [`tls`]: certificates, SNI selection and
//!   reload; [`auth`]: device keys; [`limits`]: per-source and per-domain abuse limits;
//!   [`egress`]: the forward proxy's egress policy; [`cluster`]: membership, ownership and
//!   forwarding between nodes (section 7); `hop`: a client at a non-owner (7.5), on the pipe's
//!   floor; `rebalance`: moving devices when the live set changes, and draining (7.6).

#![warn(missing_docs)]
// No unsafe code; only the kernel-facing splice module may ever opt in, with a reason.
#![deny(unsafe_code)]

mod access;
mod admin;
pub mod auth;
// Its remaining undocumented items are internal plumbing made public for its own tests.
#[allow(missing_docs)]
pub mod cluster;
pub mod config;
pub mod server;
pub mod stats;

mod conn;
mod context;
mod device;
pub mod egress;
mod fd_reserve;
mod head;
mod hop;
mod legs;
pub mod limits;
mod linger;
mod metrics;
mod mux;
mod pairing;
mod pipe;
mod proxy;
mod proxy_stats;
mod rebalance;
mod registry;
mod runtimes;
mod snapshot;
mod socket;
#[cfg(target_os = "linux")]
mod splice;
mod stream;
#[cfg(test)]
mod testing;
pub mod tls;

pub use admin::listener::serve as serve_admin;
pub use cluster::ClusterConfig;
pub use config::{ConfigError, DataPath, Listen, RelayConfig};
pub use egress::{Action, EgressConfig, EgressRule};
pub use limits::{Cidr, LimitConfig, Rate};
pub use metrics::{HISTOGRAM_SECONDS, share_recorder};
pub use server::{Relay, RelayHandle, StartError};
pub use stats::Stats;
pub use tls::CertPaths;
