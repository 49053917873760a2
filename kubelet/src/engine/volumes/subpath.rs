//! subPath mounts without the symlink escape: the path is resolved inside
//! the volume by the kernel (`openat2` with `RESOLVE_BENEATH`, so a symlink
//! that leads out of the volume fails), missing directories are created one
//! by one the same way, and the opened file is bind-mounted through
//! `/proc/self/fd/N` on a stable path the runtime then mounts. A symlink
//! swapped in after the check changes nothing: the bind holds the object
//! that was opened.

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

fn how(flags: OFlag, resolve: ResolveFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(resolve)
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Opens `sub` inside the volume rooted at `root` (an `O_PATH` descriptor),
/// creating missing directories with `dir_mode`.
pub fn open_beneath(root: &Path, sub: &str, dir_mode: u32) -> anyhow::Result<OwnedFd> {
    let parts: Vec<&str> = sub.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    if parts.is_empty() || Path::new(sub).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        bail!("subPath {sub:?} must be a relative path inside the volume without '..'");
    }
    let root_fd = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).with_context(|| format!("opening volume {}", root.display()))?;
    let escape = || anyhow::anyhow!("subPath {sub:?} is outside the volume (a symlink on the way leads out of it)");
    match openat2(&root_fd, sub, how(OFlag::O_PATH, beneath())) {
        Ok(fd) => return Ok(fd),
        Err(Errno::EXDEV) | Err(Errno::ELOOP) => return Err(escape()),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(anyhow::anyhow!("subPath {sub:?}: {e}")),
    }
    // Create what is missing, a component at a time, each inside the volume.
    let mut parent: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let prefix = parts[..=i].join("/");
        match openat2(&root_fd, prefix.as_str(), how(OFlag::O_PATH, beneath())) {
            Ok(fd) => {
                parent = Some(fd);
                continue;
            }
            Err(Errno::EXDEV) | Err(Errno::ELOOP) => return Err(escape()),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(anyhow::anyhow!("subPath {sub:?}: {prefix}: {e}")),
        }
        let dir = match &parent {
            Some(p) => p,
            None => &root_fd,
        };
        match nix::sys::stat::mkdirat(dir, *part, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(anyhow::anyhow!("subPath {sub:?}: creating {prefix}: {e}")),
        }
        let made = openat2(dir, *part, how(OFlag::O_RDONLY | OFlag::O_DIRECTORY, ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH))
            .map_err(|e| anyhow::anyhow!("subPath {sub:?}: opening {prefix}: {e}"))?;
        nix::sys::stat::fchmod(&made, Mode::from_bits_truncate(dir_mode)).with_context(|| format!("chmod {prefix}"))?;
        parent = Some(openat2(dir, *part, how(OFlag::O_PATH | OFlag::O_DIRECTORY, ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH)).map_err(|e| anyhow::anyhow!("subPath {sub:?}: opening {prefix}: {e}"))?);
    }
    parent.ok_or_else(|| anyhow::anyhow!("subPath {sub:?}: nothing to open"))
}

/// Binds the object behind `fd` on `target` (created as a file or a
/// directory to match), replacing an earlier bind there.
pub fn bind_fd(fd: &OwnedFd, target: &Path) -> anyhow::Result<()> {
    let st = nix::sys::stat::fstat(fd).context("fstat")?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if super::fsutil::is_mount_point(target) {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW);
    }
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() == is_dir && !m.file_type().is_symlink() => {}
        Ok(_) => {
            super::fsutil::remove_tree(target)?;
        }
        Err(_) => {}
    }
    if std::fs::symlink_metadata(target).is_err() {
        if is_dir {
            std::fs::create_dir(target).with_context(|| format!("creating {}", target.display()))?;
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o750))?;
        } else {
            std::fs::OpenOptions::new().write(true).create_new(true).open(target).with_context(|| format!("creating {}", target.display()))?;
        }
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(Some(source.as_str()), target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).with_context(|| format!("bind-mounting the subPath on {}", target.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stays_inside_the_volume() {
        let d = tempfile::tempdir().unwrap();
        let vol = d.path().join("vol");
        std::fs::create_dir_all(vol.join("in/deep")).unwrap();
        std::fs::write(d.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink("/", vol.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("in/up")).unwrap();
        std::os::unix::fs::symlink("deep", vol.join("in/ok")).unwrap();
        std::os::unix::fs::symlink("../secret", vol.join("file")).unwrap();
        for bad in ["abs", "abs/etc", "in/up", "in/up/secret", "file", "../secret", "/etc"] {
            let e = open_beneath(&vol, bad, 0o755);
            assert!(e.is_err(), "{bad} opened");
        }
        assert!(open_beneath(&vol, "abs/new/dir", 0o755).is_err(), "no directory created through an escaping link");
        // Links that stay inside are fine.
        let fd = open_beneath(&vol, "in/ok", 0o755).unwrap();
        let st = nix::sys::stat::fstat(&fd).unwrap();
        assert_eq!(st.st_ino, std::fs::metadata(vol.join("in/deep")).unwrap().ino());
        // Missing directories are created with the volume's mode.
        let fd = open_beneath(&vol, "made/here", 0o2775).unwrap();
        drop(fd);
        assert_eq!(std::fs::metadata(vol.join("made/here")).unwrap().mode() & 0o7777, 0o2775);
        assert_eq!(std::fs::metadata(vol.join("made")).unwrap().mode() & 0o7777, 0o2775);
    }
}
