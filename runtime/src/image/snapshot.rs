//! Layer snapshots keyed by chain ID.
