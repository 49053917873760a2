//! The pod side of Berth: manifests, output formatting (and the pod engine).

pub mod manifest;
pub mod output;
