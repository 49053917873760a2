//! Images: references, pulling, the content store, layer snapshots and import.

pub mod builder;
pub mod snapshot;
pub mod unpack;
pub mod import;
