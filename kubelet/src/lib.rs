//! The pod side of Berth: the pod lifecycle engine, manifests, probes and
//! hooks, the local API and kubectl-like output.

pub mod api;
pub mod engine;
pub mod manifest;
pub mod output;
pub mod probe;
