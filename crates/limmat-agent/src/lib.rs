//! The device side of the Limmat relay protocol (spec 2.9), for embedding and for
//! `limmat tunnel`.
//!
//! A device behind NAT cannot accept connections, so it opens them: an [`Agent`] keeps
//! connections waiting at the relay, each carrying a PTTH handshake, and when the relay pairs
//! one with a client (`101`) the connection is handed over as a [`RelayedConn`], an ordinary
//! `AsyncRead + AsyncWrite` stream. The caller then [`forward`]s it to a local TCP service,
//! serves HTTP on it in-process with [`serve_http`], or does anything else with it.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use limmat_agent::{Agent, AgentConfig, CancellationToken, LocalAddr, forward};
//!
//! let config = AgentConfig::new("relay.example.com:80".parse()?, "my-device");
//! let agent = Agent::new(config)?;
//! let local: LocalAddr = "127.0.0.1:22".parse()?;
//! let shutdown = CancellationToken::new();
//! agent
//!     .run(
//!         move |conn| {
//!             let local = local.clone();
//!             async move {
//!                 let _ = forward(conn, &local).await;
//!             }
//!         },
//!         shutdown,
//!     )
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! Modules, one concern each: `backoff` (the staged reconnect schedule of spec 2.9, internal),
//! [`addr`] (CLI addresses), `transport` (opening plain and TLS connections: [`Connector`],
//! [`RelayStream`]), `head` (reading heads), `handshake` (one connection's AWAIT state),
//! [`conn`] (the relayed stream, PTTH or a mux stream), [`mux`] (the limmat-mux/1 transport
//! choice and stream metadata), [`agent`] (the pool), `serve` (splicing and HTTP), [`tunnel`]
//! (the `limmat tunnel` modes), [`connect`] (the one HTTP `CONNECT` client, also used by the
//! gateway's webhooks), [`egress`] (using a relay's forward proxy: [`connect_via_proxy`],
//! `limmat tunnel egress`) and [`outbound`] (an HTTP or SOCKS5 proxy between the agent and
//! the relay); `verify` checks the relay's certificate as `curl --cacert` does and words its
//! errors.

pub mod addr;
pub mod agent;
mod backoff;
pub mod conn;
pub mod connect;
pub mod egress;
mod handshake;
mod head;
pub mod mux;
pub mod outbound;
mod report;
mod serve;
pub mod status;
mod transport;
pub mod tunnel;
mod verify;

pub use addr::{AddrError, LocalAddr, RelayAddr};
pub use agent::{Agent, AgentConfig, AgentError};
pub use conn::RelayedConn;
pub use connect::{ConnectAnswer, ConnectAnswerError, http_connect};
pub use egress::{EgressProxy, ForwardProxyError, ProxyAuth, connect_via_proxy};
pub use handshake::{AttemptError, RedirectError};
pub use head::{HeadError, MAX_HEAD};
pub use limmat_mux::DataPath;
pub use limmat_wire::mux::{Listener, Route};
pub use mux::{StreamMeta, Transport};
pub use outbound::{ProxyScheme, ProxyUrl, ProxyUrlError, RelayProxy, UpstreamProxyError};
pub use serve::{BoxError, forward, forward_with, serve_http};
pub use status::{AgentState, AgentStatus};
/// Re-exported so that callers need no direct `tokio-util` dependency to stop an agent.
pub use tokio_util::sync::CancellationToken;
pub use transport::{Connector, RelayStream, TlsError, TlsOptions};
