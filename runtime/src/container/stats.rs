//! Container usage (cgroup statistics, writable layer) and live resource
//! updates.

use super::{ContainerError, Manager, Result, State};
use crate::linux::cgroups::{self, stats::Layout, CgroupManager};
use crate::spec::{self, SpecContext};
use cri_proto::v1::{ContainerConfig, LinuxContainerConfig, LinuxContainerResources};
use oci_spec::runtime::LinuxResources;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Disk usage of a directory tree: bytes allocated and inodes, each inode
/// counted once (hard links).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks `root` without following symlinks or crossing devices.
pub fn disk_usage(root: &Path) -> DiskUsage {
    let mut seen = HashSet::new();
    let mut u = DiskUsage::default();
    let Ok(meta) = std::fs::symlink_metadata(root) else { return u };
    let dev = meta.dev();
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, meta)) = stack.pop() {
        if meta.dev() != dev || !seen.insert(meta.ino()) {
            continue;
        }
        u.inodes += 1;
        u.bytes += meta.blocks() * 512;
        if meta.is_dir() {
            for e in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                if let Ok(m) = e.metadata() {
                    stack.push((e.path(), m));
                }
            }
        }
    }
    u
}

/// The mount point of the filesystem holding `path` (longest matching
/// mount in /proc/self/mountinfo).
pub fn mountpoint_of(path: &Path) -> PathBuf {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The cgroup manager for a live update: every hierarchy but `devices` on
/// v1, so the container's device rules are left as they are.
fn update_manager(path: &str) -> cgroups::CgroupResult<Box<dyn CgroupManager>> {
    match Layout::host()? {
        Layout::V2(root) => Ok(Box::new(cgroups::v2::V2Manager::new(root, Path::new(path)))),
        Layout::V1(hs) => {
            let hs = hs.into_iter().filter(|h| !h.controllers.iter().any(|c| c == "devices")).collect();
            Ok(Box::new(cgroups::v1::V1Manager::new(hs, Path::new(path))))
        }
    }
}

/// Validates CRI resources and converts them to OCI ones (as at creation).
pub fn to_oci(id: &str, r: &LinuxContainerResources, cgroup_v2: bool) -> Result<LinuxResources> {
    let neg = [
        ("cpu_shares", r.cpu_shares),
        ("cpu_period", r.cpu_period),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
        ("cpu_quota", r.cpu_quota.max(-1) + 1),
        ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes.max(-1) + 1),
    ];
    if let Some((field, _)) = neg.iter().find(|(_, v)| *v < 0) {
        return Err(ContainerError::Invalid { id: id.into(), field: "resources", reason: format!("{field} is negative") });
    }
    let cfg = ContainerConfig { linux: Some(LinuxContainerConfig { resources: Some(r.clone()), ..Default::default() }), ..Default::default() };
    let ctx = SpecContext { cgroup_v2, ..Default::default() };
    let mut warnings = Vec::new();
    spec::build_resources(&cfg, &ctx, &mut warnings).map_err(|source| ContainerError::Spec { id: id.into(), source })
}

/// Applies `res` to cgroup `path` (skipping device rules); on v2 also the
/// `unified` entries.
pub fn apply(path: &str, res: &LinuxResources) -> cgroups::CgroupResult<()> {
    let m = update_manager(path)?;
    m.set(res)?;
    if let (Some(unified), Layout::V2(root)) = (res.unified(), Layout::host()?) {
        let dir = root.join(cgroups::relative(Path::new(path)));
        for (k, v) in unified {
            if k.contains('/') || k.starts_with('.') {
                return Err(cgroups::CgroupError::Invalid(format!("unified key {k:?}")));
            }
            std::fs::write(dir.join(k), v).map_err(|source| cgroups::CgroupError::Io { op: "write", path: dir.join(k), source })?;
        }
    }
    Ok(())
}

impl Manager {
    /// The container's writable layer (the overlay upper directory).
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.state_path(id).join("upper")
    }

    /// Changes the resources of a container: the live cgroup if it is
    /// created or running, and the record (so status reports them).
    pub fn update_resources(&self, id: &str, res: &LinuxContainerResources) -> Result<()> {
        let mut r = self.record(id)?;
        let oci = to_oci(id, res, cgroups::is_unified())?;
        let st = self.status(id)?;
        if matches!(st.state, State::Running | State::Created) {
            apply(&r.cgroups_path, &oci).map_err(|e| ContainerError::Io {
                id: id.into(),
                path: PathBuf::from(&r.cgroups_path),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        r.config.linux.get_or_insert_with(Default::default).resources = Some(res.clone());
        self.save(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_of_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(tmp.path().join("d/f"), tmp.path().join("g")).unwrap();
        let u = disk_usage(tmp.path());
        assert_eq!(u.inodes, 3, "root, d, f (g is f)");
        assert!(u.bytes >= 100_000, "{u:?}");
        assert_eq!(disk_usage(&tmp.path().join("missing")), DiskUsage::default());
        assert!(tmp.path().starts_with(mountpoint_of(tmp.path())));
    }

    #[test]
    fn validates_resources() {
        let ok = LinuxContainerResources { cpu_quota: 50_000, cpu_period: 100_000, memory_limit_in_bytes: 1 << 26, ..Default::default() };
        let oci = to_oci("c", &ok, false).unwrap();
        assert_eq!(oci.memory().as_ref().unwrap().limit(), Some(1 << 26));
        assert_eq!(oci.memory().as_ref().unwrap().swap(), Some(1 << 26), "swap = limit");
        assert_eq!(oci.cpu().as_ref().unwrap().quota(), Some(50_000));
        for bad in [
            LinuxContainerResources { cpu_shares: -1, ..Default::default() },
            LinuxContainerResources { memory_limit_in_bytes: -5, ..Default::default() },
            LinuxContainerResources { cpu_quota: -2, ..Default::default() },
        ] {
            assert!(matches!(to_oci("c", &bad, false), Err(ContainerError::Invalid { .. } | ContainerError::Spec { .. })), "{bad:?}");
        }
    }
}
