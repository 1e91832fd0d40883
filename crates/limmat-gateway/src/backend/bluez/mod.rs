//! Placeholder for the BlueZ backend (§6.3): filled in by its owner.
