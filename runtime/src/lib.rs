//! Berth's container runtime: images, OCI specs, executors, shims, pod
//! sandboxes and the CRI server.

pub mod config;
pub mod digest;
pub mod image;

pub use config::Config;
pub mod linux;
pub mod oci;
