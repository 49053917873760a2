//! Where tests find cgroup files: on cgroup v1 each controller has its own
//! hierarchy under /sys/fs/cgroup; on v2 (the hack/v2vm suite) there is one
//! unified tree, with v2's own file names.

use std::path::{Path, PathBuf};

pub const ROOT: &str = "/sys/fs/cgroup";

/// Whether /sys/fs/cgroup is the unified (v2) hierarchy.
pub fn unified() -> bool {
    nix::sys::statfs::statfs(ROOT).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The hierarchy roots: every v1 mount (not the symlinks like `cpu`), or
/// the v2 root.
pub fn roots() -> Vec<PathBuf> {
    if unified() {
        return vec![PathBuf::from(ROOT)];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(ROOT)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir() && !p.is_symlink()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The directory of cgroup `path` (`/a/b`) for `controller`: its v1
/// hierarchy, or the unified directory on v2.
pub fn dir(controller: &str, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if unified() {
        Path::new(ROOT).join(rel)
    } else {
        Path::new(ROOT).join(controller).join(rel)
    }
}

/// The existing directories of cgroup `path`, one per hierarchy.
pub fn dirs(path: &str) -> Vec<PathBuf> {
    roots().into_iter().map(|r| r.join(path.trim_start_matches('/'))).filter(|p| p.is_dir()).collect()
}

/// Reads a cgroup file, trimmed; panics with the path when it cannot.
pub fn read(controller: &str, path: &str, file: &str) -> String {
    let p = dir(controller, path).join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}
