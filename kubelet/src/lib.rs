//! The pod side of Berth: the pod lifecycle engine, manifests, the local API
//! and kubectl-like output.

pub mod api;
pub mod engine;
pub mod manifest;
pub mod output;
