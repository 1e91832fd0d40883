//! Limmat relay.
