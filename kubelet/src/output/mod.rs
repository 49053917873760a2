//! kubectl-like output for pods (with the engine's status) and their events.
//!
//! - [`pods_table`]: `get pods` (`-o wide`, NAMESPACE column), STATUS computed like kubectl's
//!   printer ([`pod_row`]).
//! - [`pods_document`]: `-o yaml` / `-o json`, one object or a `List`.
//! - [`describe_pod`]: `describe pod`, including the events table.
//!
//! Every function takes `now` so output is reproducible; pass `Timestamp::now()`.

mod describe;
mod duration;
mod pods;
mod tabwriter;

pub use describe::{describe_pod, describe_probe, qos_class};
pub use duration::{human_duration, rfc1123z, since};
pub use k8s_openapi::jiff::Timestamp;
pub use pods::{pod_row, pods_document, pods_table, Format, PodRow, TableOptions};

#[cfg(test)]
mod tests;
