//! The agent's state as data: counts kept by the pool and the streak kept by `report`, for
//! monitoring (`limmat tunnel --status`) and for tests to wait on events instead of sleeping.
//! Its own file so that the pool (`agent`) and what it tells its user (`report`) both read it
//! without importing each other.

/// Where the agent stands with its relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Started, nothing registered and nothing failed yet.
    #[default]
    Connecting,
    /// At least one connection is registered at the relay.
    Online,
    /// The last attempt failed and nothing registered since.
    Failing,
}

/// A snapshot of the pool, for monitoring and for tests to wait on events instead of sleeping.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AgentStatus {
    /// Connections that sent a handshake and await the relay's answer (AWAIT).
    pub waiting: usize,
    /// Relayed connections handed to the handler and not dropped yet.
    pub relayed: usize,
    /// TCP connections opened to the relay, redirects included.
    pub openings: u64,
    /// Handshakes sent, including those sent again after a `204`.
    pub handshakes: u64,
    /// `101`s received.
    pub upgrades: u64,
    /// Attempts that ended in a failure (and so in the backoff).
    pub failures: u64,
    /// limmat-mux/1 connections serving streams.
    pub mux: usize,
    /// Mux handshakes the relay did not accept (each starts an hour of PTTH with `Auto`).
    pub mux_refused: u64,
    /// Online, connecting (nothing registered yet), or failing.
    pub state: AgentState,
    /// Failed attempts since the agent was last online.
    pub failures_in_streak: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Whether the "waiting for the relay to answer" warning was given in this streak.
    #[serde(skip)]
    pub silent_warned: bool,
    /// The failure reasons already warned about in this streak (a few at most).
    #[serde(skip)]
    pub warned: Vec<String>,
}
