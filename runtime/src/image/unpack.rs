//! Applies layer tars to snapshot directories.
//!
//! A layer is written into an empty directory in overlayfs "diff" form: OCI
//! whiteouts (`.wh.name`) become 0:0 character devices and opaque markers
//! (`.wh..wh..opq`) become the `trusted.overlay.opaque` xattr, so the
//! directory can be used directly as an overlayfs lowerdir.
//!
//! Entries that would land outside the destination (`..` components,
//! absolute paths, paths through a symlink written by the layer) are refused.
//! Parent components are checked with `lstat` and every final operation is a
//! non-following one (`O_NOFOLLOW`, `lchown`, `lsetxattr`, `lutimes`,
//! `linkat` without `AT_SYMLINK_FOLLOW`), so a refused or failed apply never
//! writes outside `dest`. The destination must be private to the caller while
//! the layer is applied.

use crate::digest::HashingReader;
use filetime::FileTime;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// Prefix of OCI whiteout file names.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The overlayfs xattr marking a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Layers may not set overlayfs' own xattrs (redirects, metacopy...) directly.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
/// PAX record prefix carrying extended attributes.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Errors from decompressing or applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("opening layer blob {path}: {source}")]
    Blob { path: PathBuf, source: io::Error },
    /// The (decompressed) stream is not a valid tar, or reading it failed.
    #[error("reading layer stream: {0}")]
    Stream(#[source] io::Error),
    #[error("tar entry {path:?} refused: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("tar entry {path:?}: unsupported entry type {kind}")]
    UnsupportedEntry { path: String, kind: String },
    #[error("tar entry {path:?}: {op}: {source}")]
    Entry { path: String, op: &'static str, source: io::Error },
    #[error("layer diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch { expected: String, actual: String },
    #[error("invalid digest: {0}")]
    BadDigest(String),
    #[error("parent snapshot {0} does not exist")]
    MissingParent(String),
    #[error("snapshot {chain_id}: {op}: {source}")]
    Snapshot { chain_id: String, op: &'static str, source: io::Error },
}

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Maps an OCI or Docker layer media type to its compression.
///
/// Plain-tar types (and the untyped `""`/`application/octet-stream`) return
/// [`Compression::None`]; [`open_layer`] sniffs magic bytes in that case.
pub fn compression_for_media_type(mt: &str) -> Result<Compression, UnpackError> {
    let mt = mt.trim();
    if mt.is_empty() || mt == "application/octet-stream" || mt == "application/x-tar" {
        return Ok(Compression::None);
    }
    let layerish =
        mt.starts_with("application/vnd.oci.image.layer.") || mt.starts_with("application/vnd.docker.image.rootfs.");
    if !layerish {
        return Err(UnpackError::UnsupportedMediaType(mt.to_string()));
    }
    if mt.ends_with("tar+gzip") || mt.ends_with("tar.gzip") || mt.ends_with("tar+gz") {
        Ok(Compression::Gzip)
    } else if mt.ends_with("tar+zstd") || mt.ends_with("tar.zstd") {
        Ok(Compression::Zstd)
    } else if mt.ends_with(".tar") {
        Ok(Compression::None)
    } else {
        Err(UnpackError::UnsupportedMediaType(mt.to_string()))
    }
}

/// Recognises gzip and zstd streams by their magic bytes.
pub fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps a layer blob reader in the decompressor its media type asks for,
/// sniffing magic bytes when the type claims an uncompressed tar.
pub fn open_layer<'a, R: BufRead + 'a>(media_type: &str, mut reader: R) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut compression = compression_for_media_type(media_type)?;
    if compression == Compression::None {
        compression = sniff_compression(reader.fill_buf().map_err(UnpackError::Stream)?);
    }
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(UnpackError::Stream)?),
    })
}

/// Applies one layer tar to `dest` (an empty directory) in overlayfs diff
/// format and returns the diff ID (digest of the uncompressed stream).
///
/// The whole stream is read, including padding after the end-of-archive
/// marker, so the digest covers exactly what was given.
pub fn apply_tar<R: Read>(reader: R, dest: &Path) -> Result<String, UnpackError> {
    let mut archive = tar::Archive::new(HashingReader::new(reader));
    let mut dir_times: HashMap<PathBuf, FileTime> = HashMap::new();
    for entry in archive.entries().map_err(UnpackError::Stream)? {
        let mut entry = entry.map_err(UnpackError::Stream)?;
        apply_entry(&mut entry, dest, &mut dir_times)?;
    }
    // Directory mtimes last: creating children changes them.
    for (path, mtime) in dir_times {
        filetime::set_symlink_file_times(&path, mtime, mtime).map_err(|source| UnpackError::Entry {
            path: path.display().to_string(),
            op: "setting directory mtime",
            source,
        })?;
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Stream)?;
    Ok(rest.finish().1)
}

/// Turns a tar path into a relative path of normal components, refusing
/// anything that could leave the root. `Ok(None)` means the root itself.
fn clean_path(raw: &[u8], shown: &str) -> Result<Option<PathBuf>, UnpackError> {
    let unsafe_path = |reason| UnpackError::Unsafe { path: shown.to_string(), reason };
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("path contains a `..` component")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_path("absolute path")),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Makes sure every component of `rel` under `dest` is a real directory
/// (never a symlink), creating missing ones with mode 0755.
fn ensure_dirs(dest: &Path, rel: &Path, shown: &str) -> Result<(), UnpackError> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Unsafe { path: shown.to_string(), reason: "a parent directory is a symlink" })
            }
            Ok(_) => {
                return Err(UnpackError::Entry {
                    path: shown.to_string(),
                    op: "checking parent directory",
                    source: io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", cur.display()),
                    ),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&cur)
                    // Explicit chmod: mkdir's mode is masked by the umask.
                    .and_then(|()| fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)))
                    .map_err(|source| UnpackError::Entry {
                        path: shown.to_string(),
                        op: "creating parent directory",
                        source,
                    })?;
            }
            Err(source) => {
                return Err(UnpackError::Entry { path: shown.to_string(), op: "checking parent directory", source })
            }
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (never following a symlink); missing is fine.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Nanosecond mtime from a PAX `mtime` record, falling back to the header.
fn entry_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> FileTime {
    let secs = entry.header().mtime().unwrap_or(0) as i64;
    let pax = entry.pax_extensions().ok().flatten().and_then(|exts| {
        exts.filter_map(Result::ok)
            .find(|e| e.key_bytes() == b"mtime")
            .and_then(|e| e.value().ok().and_then(parse_pax_time))
    });
    pax.unwrap_or(FileTime::from_unix_time(secs, 0))
}

fn parse_pax_time(v: &str) -> Option<FileTime> {
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
    // "-1.5" means 1.5s before the epoch.
    Some(if secs < 0 && nanos > 0 {
        FileTime::from_unix_time(secs - 1, 1_000_000_000 - nanos)
    } else {
        FileTime::from_unix_time(secs, nanos)
    })
}

/// Extended attributes as (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// `SCHILY.xattr.*` PAX records of an entry.
fn entry_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Xattrs, UnpackError> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().map_err(|source| UnpackError::Entry {
        path: shown.to_string(),
        op: "reading PAX records",
        source,
    })?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext =
            ext.map_err(|source| UnpackError::Entry { path: shown.to_string(), op: "reading PAX records", source })?;
        if let Some(name) = ext.key_bytes().strip_prefix(PAX_XATTR_PREFIX.as_bytes()) {
            out.push((name.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

fn apply_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    dir_times: &mut HashMap<PathBuf, FileTime>,
) -> Result<(), UnpackError> {
    let raw = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&raw).into_owned();
    let kind = entry.header().entry_type();
    if matches!(kind, EntryType::XGlobalHeader) {
        tracing::debug!(entry = %shown, "ignoring PAX global header");
        return Ok(());
    }
    let Some(rel) = clean_path(&raw, &shown)? else {
        // The layer root itself: like containerd, keep the snapshot's own root.
        return Ok(());
    };
    let err = |op: &'static str| {
        let shown = shown.clone();
        move |source: io::Error| UnpackError::Entry { path: shown, op, source }
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    let base = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    let header = entry.header();
    let uid = header.uid().map_err(err("reading uid"))? as u32;
    let gid = header.gid().map_err(err("reading gid"))? as u32;
    let mode = header.mode().map_err(err("reading mode"))? & 0o7777;
    let dev = if matches!(kind, EntryType::Char | EntryType::Block) {
        let major = header.device_major().map_err(err("reading device major"))?.unwrap_or(0);
        let minor = header.device_minor().map_err(err("reading device minor"))?.unwrap_or(0);
        makedev(major.into(), minor.into())
    } else {
        0
    };

    // Whiteouts and opaque markers.
    if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        ensure_dirs(dest, parent, &shown)?;
        let dir = dest.join(parent);
        if base == OPAQUE_MARKER.as_bytes() {
            xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(err("setting opaque xattr"))?;
        } else if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.*` names are AUFS bookkeeping with no overlay meaning.
            tracing::debug!(entry = %shown, "ignoring AUFS metadata entry");
        } else if hidden.is_empty() {
            return Err(UnpackError::Unsafe { path: shown, reason: "whiteout names no file" });
        } else {
            let target = dir.join(OsStr::from_bytes(hidden));
            remove_existing(&target).map_err(err("removing entry replaced by whiteout"))?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| err("creating whiteout")(e.into()))?;
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).map_err(err("chown whiteout"))?;
        }
        return Ok(());
    }

    ensure_dirs(dest, parent, &shown)?;
    let path = dest.join(&rel);
    let mtime = entry_mtime(entry);
    let xattrs = entry_xattrs(entry, &shown)?;

    match kind {
        EntryType::Directory => {
            let is_dir = match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_dir() => true,
                Ok(_) => {
                    remove_existing(&path).map_err(err("removing entry replaced by directory"))?;
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(err("checking existing entry")(e)),
            };
            if !is_dir {
                fs::DirBuilder::new().mode(0o700).create(&path).map_err(err("creating directory"))?;
            }
        }
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            remove_existing(&path).map_err(err("removing replaced entry"))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(err("creating file"))?;
            io::copy(entry, &mut f).map_err(err("writing file contents"))?;
        }
        EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| UnpackError::Unsafe { path: shown.clone(), reason: "symlink without a target" })?
                .into_owned();
            remove_existing(&path).map_err(err("removing replaced entry"))?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(err("creating symlink"))?;
        }
        EntryType::Link => {
            let raw_target = entry
                .link_name_bytes()
                .ok_or_else(|| UnpackError::Unsafe { path: shown.clone(), reason: "hard link without a target" })?
                .into_owned();
            let target_shown = String::from_utf8_lossy(&raw_target).into_owned();
            let Some(target_rel) = clean_path(&raw_target, &target_shown).map_err(|_| UnpackError::Unsafe {
                path: shown.clone(),
                reason: "hard link target escapes the layer root",
            })?
            else {
                return Err(UnpackError::Unsafe { path: shown, reason: "hard link to the layer root" });
            };
            if target_rel == rel {
                return Ok(()); // a link to itself: nothing to do
            }
            check_link_target(dest, &target_rel, &shown)?;
            remove_existing(&path).map_err(err("removing replaced entry"))?;
            // linkat without AT_SYMLINK_FOLLOW: links the target itself, never what it points to.
            fs::hard_link(dest.join(&target_rel), &path).map_err(err("creating hard link"))?;
            // The link shares the target's inode, whose metadata came from its own entry.
            return Ok(());
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let sflag = match kind {
                EntryType::Fifo => SFlag::S_IFIFO,
                EntryType::Char => SFlag::S_IFCHR,
                _ => SFlag::S_IFBLK,
            };
            remove_existing(&path).map_err(err("removing replaced entry"))?;
            mknod(&path, sflag, Mode::from_bits_truncate(0o600), dev)
                .map_err(|e| err("creating device node")(e.into()))?;
        }
        other => {
            return Err(UnpackError::UnsupportedEntry { path: shown, kind: format!("{other:?}") });
        }
    }

    // Owner first: chown clears setuid/setgid, so the mode comes after it.
    std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(err("chown"))?;
    for (name, value) in xattrs {
        let name = OsStr::from_bytes(&name);
        if name.as_bytes().starts_with(OVERLAY_XATTR_PREFIX.as_bytes()) {
            tracing::warn!(entry = %shown, xattr = ?name, "ignoring overlayfs xattr from layer");
            continue;
        }
        xattr::set(&path, name, &value).map_err(err("setting xattr"))?;
    }
    if kind != EntryType::Symlink {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(err("chmod"))?;
    }
    if kind == EntryType::Directory {
        dir_times.insert(path, mtime);
    } else {
        filetime::set_symlink_file_times(&path, mtime, mtime).map_err(err("setting mtime"))?;
    }
    Ok(())
}

/// A hard link target must already exist in this layer, be reachable without
/// symlinks, and not be a directory.
fn check_link_target(dest: &Path, target_rel: &Path, shown: &str) -> Result<(), UnpackError> {
    let mut cur = dest.to_path_buf();
    let parent = target_rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Unsafe {
                    path: shown.to_string(),
                    reason: "hard link target path goes through a symlink",
                })
            }
            _ => {
                return Err(UnpackError::Unsafe {
                    path: shown.to_string(),
                    reason: "hard link target is not in this layer",
                })
            }
        }
    }
    match fs::symlink_metadata(dest.join(target_rel)) {
        Ok(m) if m.file_type().is_dir() => {
            Err(UnpackError::Unsafe { path: shown.to_string(), reason: "hard link target is a directory" })
        }
        Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => {
            Err(UnpackError::Unsafe { path: shown.to_string(), reason: "hard link target is a whiteout" })
        }
        Ok(_) => Ok(()),
        Err(_) => Err(UnpackError::Unsafe { path: shown.to_string(), reason: "hard link target is not in this layer" }),
    }
}

/// In-memory layer tars for tests, with raw (unchecked) names.
#[cfg(test)]
pub(crate) mod test_tar {
    use tar::{EntryType, Header};

    pub const MTIME: u64 = 1_000_000_000;

    /// Fails the test loudly unless running as root.
    pub fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "image tests must run as root (they chown, mknod, set trusted xattrs and mount)"
        );
    }

    pub struct Layer(tar::Builder<Vec<u8>>);

    impl Default for Layer {
        fn default() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }
    }

    impl Layer {
        /// A ustar header with `path` copied in verbatim (no `..`/absolute checks).
        pub fn header(path: &str, kind: EntryType, mode: u32) -> Header {
            let mut h = Header::new_ustar();
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_size(0);
            h
        }
        pub fn add(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }
        pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
            self.add(Self::header(path, EntryType::Directory, mode), b"")
        }
        pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
            self.add(Self::header(path, EntryType::Regular, mode), data)
        }
        pub fn link(&mut self, kind: EntryType, path: &str, target: &str) -> &mut Self {
            let mut h = Self::header(path, kind, 0o777);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            self.add(h, b"")
        }
        pub fn device(&mut self, kind: EntryType, path: &str, major: u32, minor: u32) -> &mut Self {
            let mut h = Self::header(path, kind, 0o666);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            self.add(h, b"")
        }
        /// A PAX extended header applying to the next entry.
        pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (k, v) in records {
                let body = [format!(" {k}=").as_bytes(), v, b"\n"].concat();
                // The length prefix counts itself.
                let mut len = body.len() + 1;
                while format!("{len}").len() + body.len() != len {
                    len += 1;
                }
                data.extend_from_slice(format!("{len}").as_bytes());
                data.extend_from_slice(&body);
            }
            self.add(Self::header("PaxHeader", EntryType::XHeader, 0o644), &data)
        }
        pub fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_tar::{require_root, Layer, MTIME};
    use super::*;
    use crate::digest::of_bytes;
    use std::os::unix::fs::MetadataExt;

    fn apply(tar: &[u8], dest: &Path) -> Result<String, UnpackError> {
        apply_tar(tar, dest)
    }

    fn meta(p: &Path) -> fs::Metadata {
        fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn files_dirs_modes_owners_mtimes_xattrs() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let mut l = Layer::default();
        let mut etc = Layer::header("etc/", EntryType::Directory, 0o750);
        etc.set_mtime(1_500_000_000);
        l.add(etc, b"");
        let mut conf = Layer::header("./etc/app.conf", EntryType::Regular, 0o640);
        conf.set_uid(1000);
        conf.set_gid(1001);
        conf.set_mtime(1_600_000_000);
        l.add(conf, b"old");
        // Replaced by a later entry in the same layer.
        l.add(
            {
                let mut h = Layer::header("etc/app.conf", EntryType::Regular, 0o640);
                h.set_uid(1000);
                h.set_gid(1001);
                h.set_mtime(1_600_000_000);
                h
            },
            b"hello",
        );
        let mut suid = Layer::header("usr/bin/tool", EntryType::Regular, 0o4755);
        suid.set_uid(1000);
        l.add(suid, b"#!/bin/true\n");
        l.dir("tmp/", 0o1777);
        l.pax(&[
            ("SCHILY.xattr.user.berth", b"yes"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("mtime", b"1234567890.5"),
        ]);
        l.file("data", 0o2755, b"x");
        // Second entry for an existing dir updates its metadata.
        l.dir("tmp", 0o755);
        let tar = l.finish();
        let dest = tmp.path();
        let diff = apply(&tar, dest).unwrap();
        assert_eq!(diff, of_bytes(&tar));

        let m = meta(&dest.join("etc/app.conf"));
        assert_eq!(fs::read(dest.join("etc/app.conf")).unwrap(), b"hello");
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()), (0o640, 1000, 1001, 1_600_000_000));
        let m = meta(&dest.join("etc"));
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o750, 1_500_000_000), "dir mtime set after children");
        let m = meta(&dest.join("usr/bin/tool"));
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o4755, 1000), "setuid survives chown");
        assert_eq!(meta(&dest.join("usr")).mode() & 0o7777, 0o755, "implicit parent");
        assert_eq!(meta(&dest.join("tmp")).mode() & 0o7777, 0o755);
        let m = meta(&dest.join("data"));
        assert_eq!((m.mode() & 0o7777, m.mtime(), m.mtime_nsec()), (0o2755, 1_234_567_890, 500_000_000));
        assert_eq!(xattr::get(dest.join("data"), "user.berth").unwrap().as_deref(), Some(&b"yes"[..]));
        assert_eq!(xattr::get(dest.join("data"), "trusted.overlay.redirect").unwrap(), None);
    }

    #[test]
    fn symlinks_hardlinks_devices() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let mut l = Layer::default();
        l.file("bin/busybox", 0o755, b"elf");
        l.link(EntryType::Symlink, "bin/sh", "/bin/busybox");
        l.link(EntryType::Link, "bin/ls", "./bin/busybox");
        l.device(EntryType::Char, "dev/null", 1, 3);
        l.device(EntryType::Block, "dev/loop0", 7, 0);
        l.add(Layer::header("run/fifo", EntryType::Fifo, 0o600), b"");
        let dest = tmp.path();
        apply(&l.finish(), dest).unwrap();

        let sh = meta(&dest.join("bin/sh"));
        assert!(sh.file_type().is_symlink());
        assert_eq!(sh.mtime(), MTIME as i64, "symlink mtime via lutimes");
        assert_eq!(fs::read_link(dest.join("bin/sh")).unwrap(), Path::new("/bin/busybox"));
        assert_eq!(meta(&dest.join("bin/ls")).ino(), meta(&dest.join("bin/busybox")).ino());
        let null = meta(&dest.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!((null.rdev(), null.mode() & 0o7777), (makedev(1, 3), 0o666));
        let lp = meta(&dest.join("dev/loop0"));
        assert!(lp.file_type().is_block_device());
        assert_eq!(lp.rdev(), makedev(7, 0));
        assert!(meta(&dest.join("run/fifo")).file_type().is_fifo());
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let mut l = Layer::default();
        l.file("etc/.wh.gone", 0o644, b"");
        l.file("var/keep", 0o644, b"k");
        l.file("var/.wh..wh..opq", 0o644, b"");
        l.file("new/.wh..wh..opq", 0o644, b"");
        l.file(".wh..wh.plnk", 0o644, b""); // AUFS bookkeeping: ignored
        let dest = tmp.path();
        apply(&l.finish(), dest).unwrap();

        let w = meta(&dest.join("etc/gone"));
        assert!(w.file_type().is_char_device());
        assert_eq!(w.rdev(), 0);
        assert!(fs::symlink_metadata(dest.join("etc/.wh.gone")).is_err());
        for d in ["var", "new"] {
            assert_eq!(xattr::get(dest.join(d), OPAQUE_XATTR).unwrap().as_deref(), Some(&b"y"[..]), "{d}");
            assert!(fs::symlink_metadata(dest.join(d).join(OPAQUE_MARKER)).is_err());
        }
        assert_eq!(fs::read(dest.join("var/keep")).unwrap(), b"k");
        assert!(fs::symlink_metadata(dest.join(".wh..wh.plnk")).is_err());
    }

    /// Applies `layer` into `<outer>/dest` and checks it is refused with
    /// nothing created outside `dest`.
    fn assert_refused(outer: &Path, layer: Layer) {
        let dest = outer.join("dest");
        fs::create_dir(&dest).unwrap();
        let before: Vec<_> = walk(outer).into_iter().filter(|p| !p.starts_with(&dest)).collect();
        let err = apply(&layer.finish(), &dest).expect_err("layer must be refused");
        assert!(matches!(err, UnpackError::Unsafe { .. }), "{err}");
        let after: Vec<_> = walk(outer).into_iter().filter(|p| !p.starts_with(&dest)).collect();
        assert_eq!(before, after, "nothing written outside dest ({err})");
        fs::remove_dir_all(&dest).unwrap();
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = vec![p.to_path_buf()];
        if meta(p).is_dir() {
            let mut ents: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            ents.sort();
            for e in ents {
                out.extend(walk(&e));
            }
        }
        out
    }

    #[test]
    fn tar_slip_is_refused() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let outer = tmp.path();
        let target = outer.join("target");
        fs::create_dir(&target).unwrap();
        fs::write(outer.join("secret"), b"s").unwrap();
        let abs = format!("{}/abs", outer.display());
        let target_s = target.display().to_string();

        let mut l = Layer::default();
        l.file("../escaped", 0o644, b"x");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.file("a/../../escaped", 0o644, b"x");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.file(&abs, 0o644, b"x");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.link(EntryType::Symlink, "evil", &target_s).file("evil/passwd", 0o644, b"x");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.link(EntryType::Symlink, "rel", "..").file("rel/escaped", 0o644, b"x");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.link(EntryType::Symlink, "evil", &target_s).dir("evil/sub", 0o755);
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.link(EntryType::Symlink, "evil", &target_s).file("evil/.wh.x", 0o644, b"");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.link(EntryType::Link, "h", "../secret");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.link(EntryType::Symlink, "up", "..").link(EntryType::Link, "h", "up/secret");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.link(EntryType::Link, "h", "missing");
        assert_refused(outer, l);
        let mut l = Layer::default();
        l.file(".wh.", 0o644, b"");
        assert_refused(outer, l);
    }

    #[test]
    fn replacing_symlink_does_not_follow_it() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let mut l = Layer::default();
        l.link(EntryType::Symlink, "f", &outside.display().to_string()).file("f", 0o644, b"new");
        apply(&l.finish(), &dest).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert!(meta(&dest.join("f")).is_file());
    }

    #[test]
    fn diff_id_covers_trailing_padding() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let mut l = Layer::default();
        l.file("a", 0o644, b"a");
        let mut tar = l.finish();
        tar.extend_from_slice(&[0u8; 10240]);
        assert_eq!(apply(&tar, tmp.path()).unwrap(), of_bytes(&tar));
    }

    #[test]
    fn compressed_streams_give_the_same_diff_id() {
        require_root();
        let mut l = Layer::default();
        l.file("etc/hostname", 0o644, b"berth\n");
        let tar = l.finish();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let cases: [(&str, &[u8]); 5] = [
            ("application/vnd.oci.image.layer.v1.tar", &tar),
            ("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", &gz),
            ("application/vnd.oci.image.layer.v1.tar+zstd", &zst),
            ("application/vnd.oci.image.layer.v1.tar", &zst), // sniffed
        ];
        for (mt, blob) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let r = open_layer(mt, blob).unwrap();
            assert_eq!(apply_tar(r, tmp.path()).unwrap(), of_bytes(&tar), "{mt}");
            assert_eq!(fs::read(tmp.path().join("etc/hostname")).unwrap(), b"berth\n");
        }
    }

    #[test]
    fn media_types() {
        use Compression::*;
        for (mt, c) in [
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Gzip),
            ("", None),
        ] {
            assert_eq!(compression_for_media_type(mt).unwrap(), c, "{mt}");
        }
        for mt in ["application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+lz4"] {
            assert!(matches!(compression_for_media_type(mt), Err(UnpackError::UnsupportedMediaType(_))), "{mt}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let junk = vec![0x5au8; 2000];
        assert!(matches!(apply(&junk, tmp.path()), Err(UnpackError::Stream(_))));
        let mut l = Layer::default();
        l.file("big", 0o644, &[1u8; 4096]);
        let tar = l.finish();
        assert!(apply(&tar[..1500], tmp.path()).is_err(), "truncated tar");
        let gz_junk = [0x1f, 0x8b, 0, 1, 2, 3];
        let r = open_layer("application/vnd.oci.image.layer.v1.tar+gzip", &gz_junk[..]).unwrap();
        assert!(apply_tar(r, tmp.path()).is_err());
    }
}
