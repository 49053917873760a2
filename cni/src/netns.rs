//! Pod network namespaces: created on a throwaway thread and kept alive by
//! a bind mount of its nsfs file onto a path (like `ip netns add`), so the
//! namespace outlives every process in it and a restarted daemon can still
//! run CNI DEL in it.

use std::io;
use std::path::Path;

/// Creates a new network namespace bind-mounted at `path` (its parent is
/// created). The namespace has only a `lo`, down.
pub fn create(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A leftover of an earlier attempt at the same path.
    remove(path)?;
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    let target = path.to_path_buf();
    let res = std::thread::spawn(move || -> io::Result<()> {
        // Only this thread moves to the new namespace; it ends right after.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let src = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(Some(src.as_str()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")));
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

/// Whether `path` holds a network namespace (an nsfs bind mount).
pub fn exists(path: &Path) -> bool {
    // NSFS_MAGIC
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == 0x6e73_6673)
}

/// Unmounts and removes a namespace made by [`create`]; a missing path is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    loop {
        match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            // Not (or no longer) a mount point, or not there at all.
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(e.into()),
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn create_and_remove() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("netns/pod1");
        create(&p).unwrap();
        assert!(exists(&p));
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_ne!(std::fs::metadata(&p).unwrap().ino(), own, "a new namespace, not this one");
        // This thread stayed in its own namespace.
        assert_eq!(std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(), own);
        remove(&p).unwrap();
        assert!(!p.exists());
        assert!(!exists(&p));
        remove(&p).unwrap();
    }
}
