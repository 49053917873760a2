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
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    /// Opens (creating if needed) a snapshot directory. The root is made
    /// mode 0700: layers hold setuid binaries and devices that host users
    /// must not reach.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
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
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot chain of {top} loops at {p}"),
                ));
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
        // The top layer's root is the container's `/`: 0755 regardless of umask.
        fs::create_dir(&fs_dir)
            .and_then(|()| fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755)))
            .map_err(|source| UnpackError::Snapshot {
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

    /// Removes temporary and half-removed directories left by a crash: those
    /// of processes that no longer run. Directories of live processes (another
    /// `berth` unpacking into the same root) are theirs and left alone.
    pub fn cleanup_incomplete(&self) -> io::Result<()> {
        for ent in fs::read_dir(&self.root)? {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            // `.tmp-<pid>-<n>-<nanos>` and `.rm-<hex>-<pid>-<n>`.
            let pid = if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
                rest.split('-').next()
            } else if let Some(rest) = name.strip_prefix(RM_PREFIX) {
                rest.split('-').nth(1)
            } else {
                continue;
            };
            let alive = pid
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists());
            if alive {
                continue;
            }
            tracing::info!(path = %ent.path().display(), "removing incomplete snapshot dir");
            fs::remove_dir_all(ent.path())?;
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
        let ctx = |what: &str, e: nix::errno::Errno| {
            let msg = format!("{what} {} at {}: {e}", lowerdirs[0].display(), target.display());
            io::Error::new(io::Error::from(e).kind(), msg)
        };
        mount(Some(&lowerdirs[0]), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| ctx("bind-mounting", e))?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, ro, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(ctx("making read-only the bind mount of", e));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::of_bytes;
    use crate::image::unpack::test_tar::{require_root, Layer};
    use std::os::unix::fs::FileTypeExt;

    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    /// Writes a layer blob into `dir` and returns its path and diff ID.
    fn blob(dir: &Path, name: &str, layer: Layer) -> (PathBuf, String) {
        let tar = layer.finish();
        let p = dir.join(name);
        fs::write(&p, &tar).unwrap();
        (p, of_bytes(&tar))
    }

    /// Entries of the snapshot root other than complete snapshots.
    fn leftovers(s: &Snapshotter) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(s.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !s.exists(&format!("sha256:{n}")))
            .collect();
        v.sort();
        v
    }

    /// Unmounts on drop, so a failing test leaves no mount behind.
    struct MountGuard(PathBuf);
    impl Drop for MountGuard {
        fn drop(&mut self) {
            if let Err(e) = unmount(&self.0) {
                eprintln!("unmounting {}: {e}", self.0.display());
            }
        }
    }

    #[test]
    fn chain_id_formula() {
        let a = of_bytes(b"layer a");
        let b = of_bytes(b"layer b");
        assert_eq!(Snapshotter::chain_id(None, &a), a);
        assert_eq!(Snapshotter::chain_id(Some(&a), &b), of_bytes(format!("{a} {b}").as_bytes()));
        assert_eq!(
            Snapshotter::chain_id(Some("a"), "b"),
            "sha256:c8687a08aa5d6ed2044328fa6a697ab8e96dc34291e8c2034ae8c38e6fcc6d65"
        );
    }

    #[test]
    fn shared_base_is_stored_once() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
        let mut base = Layer::default();
        base.file("etc/os-release", 0o644, b"berth");
        let (base_blob, base_diff) = blob(tmp.path(), "base", base);
        let mut a = Layer::default();
        a.file("app/a", 0o644, b"a");
        let (a_blob, a_diff) = blob(tmp.path(), "a", a);
        let mut b = Layer::default();
        b.file("app/b", 0o644, b"b");
        let (b_blob, b_diff) = blob(tmp.path(), "b", b);

        // Image A: base + a.
        let (base_id, d) = s.apply_layer(None, &base_blob, TAR, Some(&base_diff)).unwrap();
        assert_eq!((base_id.as_str(), d.as_str()), (base_diff.as_str(), base_diff.as_str()));
        let (a_id, _) = s.apply_layer(Some(&base_id), &a_blob, TAR, None).unwrap();
        // Image B: base again (found, not re-read: the path doesn't exist) + b.
        let (base_again, _) = s.apply_layer(None, Path::new("/nonexistent"), TAR, Some(&base_diff)).unwrap();
        assert_eq!(base_again, base_id);
        // Without an expected diff ID it is unpacked and discarded as a duplicate.
        assert_eq!(s.apply_layer(None, &base_blob, TAR, None).unwrap(), (base_id.clone(), base_diff.clone()));
        let (b_id, _) = s.apply_layer(Some(&base_id), &b_blob, TAR, Some(&b_diff)).unwrap();

        assert_eq!(a_id, Snapshotter::chain_id(Some(&base_id), &a_diff));
        let mut want = vec![base_id.clone(), a_id.clone(), b_id.clone()];
        want.sort();
        assert_eq!(s.list().unwrap(), want);
        assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
        assert_eq!(s.chain(&a_id).unwrap(), vec![a_id.clone(), base_id.clone()]);
        assert_eq!(s.chain(&b_id).unwrap(), vec![b_id.clone(), base_id.clone()]);
        assert_eq!(s.parent(&base_id).unwrap(), None);
        assert_eq!(fs::read(s.path(&b_id).join("app/b")).unwrap(), b"b");
        assert_eq!(fs::metadata(s.root()).unwrap().permissions().mode() & 0o7777, 0o700);
        assert_eq!(fs::metadata(s.path(&b_id)).unwrap().permissions().mode() & 0o7777, 0o755);
        assert!(!s.path(&b_id).join("etc").exists(), "snapshots hold only their own diff");
        assert_eq!(
            s.lowerdirs(&s.chain(&a_id).unwrap()),
            format!("{}:{}", s.path(&a_id).display(), s.path(&base_id).display())
        );
        let (bytes, inodes) = s.usage().unwrap();
        assert!(bytes > 0 && inodes >= 12, "{bytes} {inodes}");

        // Missing parents are refused.
        let err = s.apply_layer(Some(&of_bytes(b"nope")), &a_blob, TAR, None).unwrap_err();
        assert!(matches!(err, UnpackError::MissingParent(_)), "{err}");

        s.remove(&a_id).unwrap();
        s.remove(&a_id).unwrap(); // idempotent
        assert!(!s.exists(&a_id));
        assert_eq!(s.list().unwrap().len(), 2);
        assert!(s.remove("../x").is_err());
        assert!(!s.exists("sha256:../../etc"));
    }

    #[test]
    fn diff_id_mismatch_leaves_no_snapshot() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
        let mut l = Layer::default();
        l.file("f", 0o644, b"f");
        let (p, diff) = blob(tmp.path(), "l", l);
        let wrong = of_bytes(b"something else");
        let err = s.apply_layer(None, &p, TAR, Some(&wrong)).unwrap_err();
        match &err {
            UnpackError::DiffIdMismatch { expected, actual } => {
                assert_eq!((expected, actual), (&wrong, &diff));
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(s.list().unwrap().is_empty());
        assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
        assert!(matches!(s.apply_layer(None, &p, TAR, Some("md5:00")), Err(UnpackError::BadDigest(_))));

        // A refused layer is cleaned up too.
        let mut bad = Layer::default();
        bad.file("../x", 0o644, b"x");
        let (p, _) = blob(tmp.path(), "bad", bad);
        assert!(matches!(s.apply_layer(None, &p, TAR, None), Err(UnpackError::Unsafe { .. })));
        assert!(leftovers(&s).is_empty(), "{:?}", leftovers(&s));
        assert!(!tmp.path().join("x").exists());
    }

    #[test]
    fn compressed_blobs_share_the_snapshot() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let mut l = Layer::default();
        l.file("bin/app", 0o755, &[7u8; 5000]);
        let tar = l.finish();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 0).unwrap();
        let diff = of_bytes(&tar);
        for (name, data, mt) in [
            ("tar", &tar, TAR),
            ("gz", &gz, "application/vnd.oci.image.layer.v1.tar+gzip"),
            ("zst", &zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
        ] {
            let s = Snapshotter::new(tmp.path().join(name)).unwrap();
            let p = tmp.path().join(format!("{name}.blob"));
            fs::write(&p, data).unwrap();
            assert_eq!(s.apply_layer(None, &p, mt, Some(&diff)).unwrap(), (diff.clone(), diff.clone()), "{name}");
            assert_eq!(fs::read(s.path(&diff).join("bin/app")).unwrap(), vec![7u8; 5000]);
        }
    }

    #[test]
    fn cleanup_removes_incomplete_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(tmp.path()).unwrap();
        // Beyond the largest possible pid: a process that is gone.
        fs::create_dir_all(tmp.path().join(".tmp-4194305-2-3/fs/x")).unwrap();
        fs::create_dir_all(tmp.path().join(".rm-abc-4194305-1")).unwrap();
        fs::create_dir_all(tmp.path().join(".rm-abc")).unwrap();
        // Another live process's unpack and removal are left alone.
        let live = [format!(".tmp-{}-0-0", std::process::id()), ".rm-abc-1-0".to_string()];
        for d in &live {
            fs::create_dir_all(tmp.path().join(d).join("fs")).unwrap();
        }
        s.cleanup_incomplete().unwrap();
        let mut want = live.to_vec();
        want.sort();
        assert_eq!(leftovers(&s), want);
    }

    #[test]
    fn overlay_mount_applies_whiteouts_and_opaque_dirs() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(tmp.path().join("snapshots")).unwrap();
        let mut l1 = Layer::default();
        l1.file("etc/passwd", 0o644, b"root")
            .file("etc/shadow", 0o600, b"secret")
            .file("opt/old1", 0o644, b"1")
            .file("opt/old2", 0o644, b"2");
        let (b1, _) = blob(tmp.path(), "l1", l1);
        let mut l2 = Layer::default();
        l2.file("etc/.wh.shadow", 0o644, b"").file("opt/.wh..wh..opq", 0o644, b"").file("opt/new", 0o644, b"n");
        let (b2, _) = blob(tmp.path(), "l2", l2);
        let (c1, _) = s.apply_layer(None, &b1, TAR, None).unwrap();
        let (c2, _) = s.apply_layer(Some(&c1), &b2, TAR, None).unwrap();
        assert!(fs::symlink_metadata(s.path(&c2).join("etc/shadow")).unwrap().file_type().is_char_device());

        let names = |d: &Path| {
            let mut v: Vec<String> =
                fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };

        // Read-only view of the 2-layer chain.
        let ro = tmp.path().join("ro");
        fs::create_dir(&ro).unwrap();
        s.mount(&c2, None, &ro).unwrap();
        let guard = MountGuard(ro.clone());
        assert_eq!(names(&ro.join("etc")), ["passwd"]);
        assert_eq!(names(&ro.join("opt")), ["new"]);
        assert_eq!(fs::read(ro.join("etc/passwd")).unwrap(), b"root");
        let e = fs::write(ro.join("x"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        drop(guard);

        // Read-write view with upper/work dirs.
        let (rw, upper, work) = (tmp.path().join("rw"), tmp.path().join("upper"), tmp.path().join("work"));
        for d in [&rw, &upper, &work] {
            fs::create_dir(d).unwrap();
        }
        s.mount(&c2, Some((&upper, &work)), &rw).unwrap();
        let guard = MountGuard(rw.clone());
        assert_eq!(names(&rw.join("opt")), ["new"]);
        fs::write(rw.join("etc/hostname"), b"h").unwrap();
        fs::remove_file(rw.join("etc/passwd")).unwrap();
        drop(guard);
        assert_eq!(fs::read(upper.join("etc/hostname")).unwrap(), b"h");
        assert_eq!(fs::read(s.path(&c1).join("etc/passwd")).unwrap(), b"root", "lower layer untouched");

        // A single layer read-only: a read-only bind mount.
        let one = tmp.path().join("one");
        fs::create_dir(&one).unwrap();
        s.mount(&c1, None, &one).unwrap();
        let guard = MountGuard(one.clone());
        assert_eq!(names(&one.join("opt")), ["old1", "old2"]);
        assert_eq!(fs::write(one.join("x"), b"x").unwrap_err().raw_os_error(), Some(libc::EROFS));
        drop(guard);
        assert!(names(&one).is_empty(), "unmounted");
    }
}
