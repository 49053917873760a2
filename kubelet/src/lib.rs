//! The pod lifecycle engine behind the `berth` binary.

pub mod engine;
