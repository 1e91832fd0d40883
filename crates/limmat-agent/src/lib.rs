//! Limmat agent.
