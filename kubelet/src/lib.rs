//! The pod lifecycle engine behind the `berth` binary.

pub mod api;
pub mod engine;
