//! Cgroup management behind one trait, with v1 (per-controller hierarchies)
//! and v2 (unified) implementations. Both take the filesystem root they work
//! under, so they can be tested against a fake tree.

pub mod stats;
mod tree;
pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

/// A cgroup operation failure.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cgroup: {0}")]
    Invalid(String),
}

pub type CgroupResult<T> = Result<T, CgroupError>;

/// One container's cgroup (in every hierarchy on v1).
pub trait CgroupManager: Send + Sync {
    /// "v1" or "v2".
    fn version(&self) -> &'static str;
    /// Creates the cgroup directories.
    fn create(&self) -> CgroupResult<()>;
    /// Moves `pid` into the cgroup.
    fn add_pid(&self, pid: i32) -> CgroupResult<()>;
    /// Moves the calling process into the cgroup. The caller must be
    /// single-threaded (the container init). On v1 this writes `0` to each
    /// hierarchy's `tasks`: migrating only the current thread lets the
    /// kernel skip the global threadgroup rwsem, whose write side waits for
    /// an RCU grace period (milliseconds, tens under load) on every
    /// `cgroup.procs` write.
    fn join_self(&self) -> CgroupResult<()> {
        self.add_pid(0)
    }
    /// Applies resource limits; device rules only when `res` lists some
    /// (a cgroup with children, such as a pod's, refuses them on v1).
    fn set(&self, res: &LinuxResources) -> CgroupResult<()>;
    /// Pids in the cgroup.
    fn pids(&self) -> CgroupResult<Vec<i32>>;
    /// Removes the cgroup directories (the processes must be gone).
    fn destroy(&self) -> CgroupResult<()>;
    /// SIGKILLs every process of the cgroup and its descendants at once,
    /// forks in flight included (v2's `cgroup.kill`, Linux 5.14+). False
    /// when the kernel cannot: the caller signals each pid instead.
    fn kill_all(&self) -> bool {
        false
    }
    /// Bind sources for a container's cgroup mount: (name under the mount
    /// point, host directory). On v2 a single entry with an empty name.
    fn mount_sources(&self) -> Vec<(String, PathBuf)>;
}

/// Cgroup path relative to the hierarchy roots (`/a/b` → `a/b`).
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

/// Magic number of cgroup2 filesystems.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// True if /sys/fs/cgroup is a unified (v2) hierarchy.
#[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
pub fn is_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The manager for this host's cgroup layout and the given cgroups path.
pub fn for_host(path: &Path) -> CgroupResult<Box<dyn CgroupManager>> {
    if is_unified() {
        Ok(Box::new(v2::V2Manager::new("/sys/fs/cgroup", path)))
    } else {
        let hierarchies = v1::host_hierarchies()?;
        Ok(Box::new(v1::V1Manager::new(hierarchies, path)))
    }
}

pub(crate) fn write_file(path: &Path, value: &str) -> CgroupResult<()> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io { op: "write", path: path.into(), source })
}

pub(crate) fn read_file(path: &Path) -> CgroupResult<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io { op: "read", path: path.into(), source })
}

pub(crate) fn mkdir_all(path: &Path) -> CgroupResult<()> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Io { op: "mkdir", path: path.into(), source })
}

/// Removes a cgroup directory, retrying while the kernel still sees
/// exiting tasks (EBUSY; there is no fd to block on for that on v1). The
/// pause starts at 100 µs and doubles up to 20 ms, for about 1 s in all.
/// Missing directories are fine. (cgroups-rs's delete sleeps 10 ms before
/// its first retry, which a pod teardown would feel; on v2 it is this same
/// rmdir without a retry.)
pub(crate) fn remove_dir(path: &Path) -> CgroupResult<()> {
    let mut pause = std::time::Duration::from_micros(100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(20));
            }
            Err(source) => return Err(CgroupError::Io { op: "rmdir", path: path.into(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_strips_root() {
        assert_eq!(relative(Path::new("/a/b")), PathBuf::from("a/b"));
        assert_eq!(relative(Path::new("a/../b")), PathBuf::from("a/b"));
    }
}
