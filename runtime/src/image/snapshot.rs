//! Layer snapshots keyed by chain ID.
//!
//! Each snapshot holds only its own layer's diff, in overlayfs form, so a
//! layer shared by several images (same chain ID) is stored once. Layout:
//!
//! ```text
//! <root>/<chain hex>/fs        the layer's files (an overlayfs lowerdir)
//! <root>/<chain hex>/parent    parent chain ID (absent for a base layer)
//! <root>/<chain hex>/diff_id   the layer's diff ID
//! <root>/.tmp-*                unpacks in progress (or left by a crash)
//! <root>/.rm-*                 removals in progress
//! ```
//!
//! A snapshot directory only appears under its final name by an atomic
//! rename once complete, so its presence means it is usable.

use super::unpack::{apply_tar, open_layer, UnpackError};
use crate::digest;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::collections::HashSet;
use std::fs;
use std::io::{self, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TMP_PREFIX: &str = ".tmp-";
const RM_PREFIX: &str = ".rm-";
/// Longest mount data the legacy `mount(2)` call accepts (one page, with NUL).
const MAX_MOUNT_DATA: usize = 4095;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A directory of layer snapshots.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
}

/// Removes a temporary directory on drop unless disarmed.
struct TmpDir(Option<PathBuf>);

impl Drop for TmpDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), error = %e, "removing temporary snapshot dir");
            }
        }
    }
}

impl Snapshotter {
    /// Opens (creating if needed) a snapshot directory.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// The directory holding the snapshots.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// OCI chain ID: the diff ID for a base layer, else
    /// `sha256("<parent chain ID> <diff ID>")`.
    pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
        match parent {
            None => diff_id.to_string(),
            Some(p) => digest::of_bytes(format!("{p} {diff_id}").as_bytes()),
        }
    }

    /// The snapshot's own directory (holding `fs`, `parent`...). Malformed
    /// chain IDs map to a name that is never created.
    fn dir(&self, chain_id: &str) -> PathBuf {
        match digest::hex_part(chain_id) {
            Ok(hex) => self.root.join(hex),
            Err(_) => self.root.join(".invalid"),
        }
    }

    /// Whether a complete snapshot exists for `chain_id`.
    pub fn exists(&self, chain_id: &str) -> bool {
        digest::hex_part(chain_id).is_ok() && self.path(chain_id).is_dir()
    }

    /// The layer's filesystem directory (an overlayfs lowerdir).
    pub fn path(&self, chain_id: &str) -> PathBuf {
        self.dir(chain_id).join("fs")
    }

    /// The parent chain ID recorded for a snapshot (`None` for a base layer).
    pub fn parent(&self, chain_id: &str) -> io::Result<Option<String>> {
        if !self.exists(chain_id) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("snapshot {chain_id} does not exist")));
        }
        match fs::read_to_string(self.dir(chain_id).join("parent")) {
            Ok(p) => Ok(Some(p.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The chain of snapshots from `top` down to its base layer, top first.
    pub fn chain(&self, top: &str) -> io::Result<Vec<String>> {
        let mut out = vec![top.to_string()];
        let mut cur = top.to_string();
        while let Some(p) = self.parent(&cur)? {
            if out.contains(&p) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("snapshot chain of {top} loops at {p}")));
            }
            out.push(p.clone());
            cur = p;
        }
        Ok(out)
    }

    /// Unpacks a (possibly compressed) layer blob on top of `parent` into the
    /// snapshot for its chain ID and returns `(chain_id, diff_id)`.
    ///
    /// The layer is unpacked into a temporary directory under the root, its
    /// diff ID checked against `expected_diff_id` when given, and then renamed
    /// into place atomically; if another unpack of the same chain won the
    /// race, ours is discarded. With `expected_diff_id` given and the snapshot
    /// already present, the blob is not read at all.
    pub fn apply_layer(
        &self,
        parent: Option<&str>,
        blob: &Path,
        media_type: &str,
        expected_diff_id: Option<&str>,
    ) -> Result<(String, String), UnpackError> {
        if let Some(p) = parent {
            if !self.exists(p) {
                return Err(UnpackError::MissingParent(p.to_string()));
            }
        }
        if let Some(expected) = expected_diff_id {
            digest::hex_part(expected).map_err(UnpackError::BadDigest)?;
            let chain_id = Self::chain_id(parent, expected);
            if self.exists(&chain_id) {
                return Ok((chain_id, expected.to_string()));
            }
        }

        let file = fs::File::open(blob).map_err(|source| UnpackError::Blob { path: blob.to_path_buf(), source })?;
        let reader = open_layer(media_type, BufReader::with_capacity(128 * 1024, file))?;
        let tmp = self.make_tmp().map_err(|source| UnpackError::Snapshot {
            chain_id: "(new)".to_string(),
            op: "creating temporary directory",
            source,
        })?;
        let tmp_dir = tmp.0.clone().unwrap_or_default();
        let fs_dir = tmp_dir.join("fs");
        fs::create_dir(&fs_dir).map_err(|source| UnpackError::Snapshot {
            chain_id: "(new)".to_string(),
            op: "creating fs directory",
            source,
        })?;
        let diff_id = apply_tar(reader, &fs_dir)?;
        if let Some(expected) = expected_diff_id {
            if expected != diff_id {
                return Err(UnpackError::DiffIdMismatch { expected: expected.to_string(), actual: diff_id });
            }
        }
        let chain_id = Self::chain_id(parent, &diff_id);
        let snap_err = |op| {
            let chain_id = chain_id.clone();
            move |source| UnpackError::Snapshot { chain_id, op, source }
        };
        if let Some(p) = parent {
            fs::write(tmp_dir.join("parent"), p).map_err(snap_err("writing parent file"))?;
        }
        fs::write(tmp_dir.join("diff_id"), &diff_id).map_err(snap_err("writing diff_id file"))?;

        let final_dir = self.dir(&chain_id);
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &tmp_dir,
            nix::fcntl::AT_FDCWD,
            &final_dir,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                let mut tmp = tmp;
                tmp.0 = None; // now the snapshot itself
            }
            Err(nix::errno::Errno::EEXIST | nix::errno::Errno::ENOTEMPTY) => {
                tracing::debug!(%chain_id, "snapshot created concurrently; discarding ours");
            }
            Err(e) => return Err(snap_err("renaming into place")(e.into())),
        }
        Ok((chain_id, diff_id))
    }

    /// Creates a fresh, uniquely named temporary directory under the root.
    fn make_tmp(&self) -> io::Result<TmpDir> {
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
            let p = self.root.join(format!("{TMP_PREFIX}{}-{n}-{nanos}", std::process::id()));
            match fs::create_dir(&p) {
                Ok(()) => return Ok(TmpDir(Some(p))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes a snapshot. Missing snapshots are not an error. The caller must
    /// make sure no other snapshot has it as parent and nothing mounts it.
    pub fn remove(&self, chain_id: &str) -> io::Result<()> {
        let hex = digest::hex_part(chain_id).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let dir = self.root.join(hex);
        // Rename first so a crash mid-removal can't leave a partial snapshot
        // under its real name.
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let doomed = self.root.join(format!("{RM_PREFIX}{hex}-{}-{n}", std::process::id()));
        match fs::rename(&dir, &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Chain IDs of all complete snapshots, sorted.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for ent in fs::read_dir(&self.root)? {
            let ent = ent?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else { continue };
            let id = format!("sha256:{name}");
            if self.exists(&id) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes temporary and half-removed directories left by a crash. Call
    /// at startup, before any unpack runs.
    pub fn cleanup_incomplete(&self) -> io::Result<()> {
        for ent in fs::read_dir(&self.root)? {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) || name.starts_with(RM_PREFIX) {
                tracing::info!(path = %ent.path().display(), "removing incomplete snapshot dir");
                fs::remove_dir_all(ent.path())?;
            }
        }
        Ok(())
    }

    /// Disk bytes and inodes used under the root (hard links counted once),
    /// for CRI `ImageFsInfo`.
    pub fn usage(&self) -> io::Result<(u64, u64)> {
        let (mut bytes, mut inodes) = (0u64, 0u64);
        let mut seen = HashSet::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for ent in fs::read_dir(&dir)? {
                let ent = ent?;
                let m = match fs::symlink_metadata(ent.path()) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                    Err(e) => return Err(e),
                };
                if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                    continue;
                }
                bytes += m.blocks() * 512;
                inodes += 1;
                if m.file_type().is_dir() {
                    stack.push(ent.path());
                }
            }
        }
        Ok((bytes, inodes))
    }

    /// The overlayfs `lowerdir=` value for a chain given top first (`a:b:c`).
    pub fn lowerdirs(&self, chain_ids_top_first: &[String]) -> String {
        let paths: Vec<PathBuf> = chain_ids_top_first.iter().map(|c| self.path(c)).collect();
        join_lowerdirs(&paths)
    }

    /// Mounts the chain ending at `top` at `target`: read-write with the given
    /// upper and work dirs, or read-only without them.
    pub fn mount(&self, top: &str, upper_work: Option<(&Path, &Path)>, target: &Path) -> io::Result<()> {
        let lowers: Vec<PathBuf> = self.chain(top)?.iter().map(|c| self.path(c)).collect();
        mount_overlay(&lowers, upper_work, target)
    }
}

/// Escapes a path for overlayfs mount options (`:` separates lowerdirs and
/// `,` options; both may be escaped with `\`).
fn escape_option(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn join_lowerdirs(lowerdirs: &[PathBuf]) -> String {
    lowerdirs.iter().map(|p| escape_option(p)).collect::<Vec<_>>().join(":")
}

/// Mounts an overlay of `lowerdirs` (top first) at `target`.
///
/// With `upper_work` the mount is read-write. Without it the view is
/// read-only; a single read-only layer is a read-only bind mount, since
/// overlayfs needs two lowerdirs or an upper dir.
pub fn mount_overlay(lowerdirs: &[PathBuf], upper_work: Option<(&Path, &Path)>, target: &Path) -> io::Result<()> {
    if lowerdirs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "overlay mount needs at least one lowerdir"));
    }
    if upper_work.is_none() && lowerdirs.len() == 1 {
        mount(Some(&lowerdirs[0]), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, ro, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(e.into());
        }
        return Ok(());
    }
    let mut data = format!("lowerdir={}", join_lowerdirs(lowerdirs));
    let mut flags = MsFlags::empty();
    match upper_work {
        Some((upper, work)) => {
            data.push_str(&format!(",upperdir={},workdir={}", escape_option(upper), escape_option(work)));
        }
        None => flags |= MsFlags::MS_RDONLY,
    }
    if data.len() > MAX_MOUNT_DATA {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("overlay mount options are {} bytes, over the {MAX_MOUNT_DATA}-byte limit", data.len()),
        ));
    }
    mount(Some("overlay"), target, Some("overlay"), flags, Some(data.as_str())).map_err(|e| {
        io::Error::new(io::Error::from(e).kind(), format!("mounting overlay at {}: {e} ({data})", target.display()))
    })
}

/// Unmounts `target` (lazily, so a busy mount is detached rather than kept).
pub fn unmount(target: &Path) -> io::Result<()> {
    umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
}
