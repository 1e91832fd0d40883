//! Placeholder for the simulated backend (§6.2): filled in by its owner.

use serde::Deserialize;

/// `[sim]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {}
