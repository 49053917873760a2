//! Filesystem helpers for volumes: tmpfs mounts, finding and undoing mounts
//! under a directory, removal that never reaches through a mount, disk usage,
//! and Kubernetes' volume ownership rules for fsGroup.

use anyhow::{bail, Context};
use berth_runtime::spec::unescape_mountinfo;
use nix::mount::{MntFlags, MsFlags};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mount points at or under `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Whether `path` is a mount point (its device differs from its parent's,
/// or it is listed as one).
pub fn is_mount_point(path: &Path) -> bool {
    let (Ok(m), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else { return false };
    match std::fs::metadata(parent) {
        Ok(p) if p.dev() != m.dev() => true,
        _ => mounts_under(path).iter().any(|p| p == path),
    }
}

/// Whether `path` is the root of a tmpfs mount.
pub fn is_tmpfs_mount(path: &Path) -> bool {
    is_mount_point(path) && nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Makes `dir` a tmpfs mount of `size` bytes (0: the kernel's default), or
/// checks that it already is one. Nothing is ever written to `dir` unless it
/// is a tmpfs.
pub fn ensure_tmpfs(dir: &Path, size: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if is_tmpfs_mount(dir) {
        return Ok(());
    }
    let mut data = String::new();
    if size > 0 {
        data = format!("size={size}");
    }
    nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(data.as_str()))
        .with_context(|| format!("mounting a tmpfs on {}", dir.display()))?;
    if !is_tmpfs_mount(dir) {
        bail!("{} is not a tmpfs after mounting one", dir.display());
    }
    Ok(())
}

/// Detaches every mount at or under `dir`; fails if any is left.
pub fn unmount_all(dir: &Path) -> anyhow::Result<()> {
    for m in mounts_under(dir) {
        if let Err(e) = nix::mount::umount2(&m, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            tracing::warn!(mount = %m.display(), "unmounting: {e}");
        }
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        bail!("mounts left under {}: {:?}", dir.display(), left);
    }
    Ok(())
}

/// Removes `dir` and what is in it without crossing into another
/// filesystem: a mount point that is still there stops the removal.
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    let top = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if !top.is_dir() {
        return std::fs::remove_file(dir).with_context(|| format!("removing {}", dir.display()));
    }
    remove_in(dir, top.dev())?;
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

fn remove_in(dir: &Path, dev: u64) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            if m.dev() != dev {
                bail!("{} is a mount point; not removing it", p.display());
            }
            // Directories may have been made read-only for the pod.
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
            remove_in(&p, dev)?;
            std::fs::remove_dir(&p).with_context(|| format!("removing {}", p.display()))?;
        } else {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// Disk usage of a directory tree in bytes (allocated blocks, each inode
/// once), not crossing mount points.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else { return 0 };
    let mut seen = std::collections::HashSet::new();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != top.dev() {
                continue;
            }
            if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;

/// Whether the volume root already has the group and permissions fsGroup
/// asks for (the `OnRootMismatch` test).
fn root_matches(dir: &Path, gid: u32, readonly: bool) -> bool {
    let Ok(m) = std::fs::metadata(dir) else { return false };
    if m.gid() != gid || !m.is_dir() {
        return false;
    }
    let want = if readonly { RO_MASK } else { RW_MASK } | EXEC_MASK;
    m.mode() & want == want && m.mode() & libc::S_ISGID != 0
}

/// Kubernetes' SetVolumeOwnership: every file and directory gets group
/// `gid` and group read (and write, unless the volume is read-only)
/// permission; directories also get the setgid bit and group search.
/// Symlinks change group only. With `OnRootMismatch` nothing is walked when
/// the root already matches.
pub fn set_ownership(dir: &Path, gid: u32, readonly: bool, policy: Option<&str>) -> anyhow::Result<()> {
    if policy == Some("OnRootMismatch") && root_matches(dir, gid, readonly) {
        return Ok(());
    }
    let mask = if readonly { RO_MASK } else { RW_MASK };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        std::os::unix::fs::lchown(&p, None, Some(gid)).with_context(|| format!("chgrp {}", p.display()))?;
        if m.file_type().is_symlink() {
            continue;
        }
        let mut mode = m.mode() & 0o7777 | mask;
        if m.is_dir() {
            mode |= libc::S_ISGID | EXEC_MASK;
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    // Stay on the volume's filesystem.
                    if e.metadata().is_ok_and(|em| em.dev() == m.dev()) {
                        stack.push(e.path());
                    }
                }
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_rules() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("v");
        std::fs::create_dir_all(v.join("sub")).unwrap();
        std::fs::write(v.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(v.join("sub/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("sub/f", v.join("link")).unwrap();
        set_ownership(&v, 4321, true, None).unwrap();
        let f = std::fs::metadata(v.join("sub/f")).unwrap();
        assert_eq!((f.gid(), f.mode() & 0o7777), (4321, 0o640));
        let s = std::fs::metadata(v.join("sub")).unwrap();
        assert_eq!(s.mode() & 0o7777, 0o2755);
        assert_eq!(std::fs::symlink_metadata(v.join("link")).unwrap().gid(), 4321);
        assert!(root_matches(&v, 4321, true));
        assert!(!root_matches(&v, 4321, false));

        // OnRootMismatch leaves the tree alone when the root matches.
        std::os::unix::fs::chown(v.join("sub/f"), None, Some(0)).unwrap();
        set_ownership(&v, 4321, true, Some("OnRootMismatch")).unwrap();
        assert_eq!(std::fs::metadata(v.join("sub/f")).unwrap().gid(), 0);
        set_ownership(&v, 4321, true, Some("Always")).unwrap();
        assert_eq!(std::fs::metadata(v.join("sub/f")).unwrap().gid(), 4321);
        // Read-write volumes get group write.
        set_ownership(&v, 4321, false, None).unwrap();
        assert_eq!(std::fs::metadata(v.join("sub/f")).unwrap().mode() & 0o777, 0o660);
    }

    #[test]
    fn remove_tree_and_usage() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("v");
        std::fs::create_dir_all(v.join("a/b")).unwrap();
        std::fs::write(v.join("a/b/f"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(v.join("a/b/f"), v.join("a/g")).unwrap();
        let u = disk_usage(&v);
        assert!((100_000..200_000).contains(&u), "{u}");
        std::fs::set_permissions(v.join("a/b"), std::fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&v).unwrap();
        assert!(!v.exists());
        remove_tree(&v).unwrap();
    }
}
