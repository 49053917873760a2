//! Layer snapshots keyed by chain ID. (placeholder signatures; replaced by the unpack branch)
#![allow(unused)]
use std::io;
use std::path::{Path, PathBuf};
pub struct Snapshotter { root: PathBuf }
#[derive(Debug, thiserror::Error)]
#[error("unpack")]
pub struct UnpackError;
impl Snapshotter {
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> { Ok(Self { root: root.into() }) }
    pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String { todo!() }
    pub fn exists(&self, chain_id: &str) -> bool { todo!() }
    pub fn path(&self, chain_id: &str) -> PathBuf { todo!() }
    pub fn apply_layer(&self, parent: Option<&str>, blob: &Path, media_type: &str, expected_diff_id: Option<&str>) -> Result<(String, String), UnpackError> { todo!() }
    pub fn remove(&self, chain_id: &str) -> io::Result<()> { todo!() }
    pub fn list(&self) -> io::Result<Vec<String>> { todo!() }
    pub fn cleanup_incomplete(&self) -> io::Result<()> { todo!() }
    pub fn usage(&self) -> io::Result<(u64, u64)> { todo!() }
}
