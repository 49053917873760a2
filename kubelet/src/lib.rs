//! The pod lifecycle engine's building blocks, shared by the `berth` binary.

pub mod probe;
