//! Berth's container runtime: images, OCI specs, executors, shims, pod
//! sandboxes and the CRI server.

pub mod config;
pub mod container;
pub mod digest;
pub mod image;
pub mod linux;
pub mod logs;
pub mod server;
pub mod oci;
pub mod sandbox;
pub mod shim;
pub mod spec;

pub use config::Config;
