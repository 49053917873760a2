//! cgroup v2: one directory in the unified hierarchy.

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::{mkdir_all, read_file, read_pids, relative, remove_dir, write_file, CgroupError, CgroupManager, CgroupResult};

/// A container cgroup under a unified hierarchy rooted at `root`.
pub struct V2Manager {
    root: PathBuf,
    path: PathBuf,
}

/// cgroup v1 `cpu.shares` (2..=262144) → cgroup v2 `cpu.weight`
/// (1..=10000): `1 + ((shares - 2) * 9999) / 262142`, the conversion
/// Kubernetes, runc and crun use. 0 means "unset" and stays 0; out-of-range
/// shares clamp.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

impl V2Manager {
    pub fn new(root: impl Into<PathBuf>, path: &Path) -> Self {
        V2Manager { root: root.into(), path: relative(path) }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.path)
    }

    fn write(&self, file: &str, value: &str) -> CgroupResult<()> {
        write_file(&self.dir().join(file), value)
    }

    /// Enables every available controller in `cgroup.subtree_control` of
    /// the root and each ancestor of the container cgroup.
    fn enable_controllers(&self) -> CgroupResult<()> {
        let available = read_file(&self.root.join("cgroup.controllers"))?;
        let wanted: Vec<String> = available.split_whitespace().map(|c| format!("+{c}")).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut dir = self.root.clone();
        let comps: Vec<_> = self.path.components().collect();
        for (i, comp) in comps.iter().enumerate() {
            write_file(&dir.join("cgroup.subtree_control"), &wanted.join(" "))?;
            dir.push(comp);
            if i + 1 < comps.len() {
                mkdir_all(&dir)?;
            }
        }
        Ok(())
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn create(&self) -> CgroupResult<()> {
        if self.path.as_os_str().is_empty() {
            return Err(CgroupError::Invalid("refusing to use the root cgroup".into()));
        }
        self.enable_controllers()?;
        mkdir_all(&self.dir())
    }

    fn add_pid(&self, pid: i32) -> CgroupResult<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    fn set(&self, res: &LinuxResources) -> CgroupResult<()> {
        if let Some(cpu) = res.cpu() {
            if let Some(s) = cpu.shares().filter(|s| *s > 0) {
                self.write("cpu.weight", &shares_to_weight(s).to_string())?;
            }
            let quota = cpu.quota().filter(|q| *q != 0);
            let period = cpu.period().filter(|p| *p != 0);
            if quota.is_some() || period.is_some() {
                let q = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                self.write("cpu.max", &format!("{q} {}", period.unwrap_or(100_000)))?;
            }
            if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                self.write("cpuset.cpus", c)?;
            }
            if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                self.write("cpuset.mems", m)?;
            }
        }
        if let Some(mem) = res.memory() {
            let limit = mem.limit().filter(|l| *l != 0);
            if let Some(l) = limit {
                self.write("memory.max", &if l < 0 { "max".into() } else { l.to_string() })?;
            }
            // OCI swap is memory+swap (v1 memsw); v2 swap.max is swap alone.
            if let Some(s) = mem.swap().filter(|s| *s != 0) {
                let v = match (s, limit) {
                    (s, _) if s < 0 => "max".to_string(),
                    (s, Some(l)) if l > 0 => {
                        if s < l {
                            return Err(CgroupError::Invalid(format!("memory+swap {s} below memory limit {l}")));
                        }
                        (s - l).to_string()
                    }
                    (s, _) => s.to_string(),
                };
                self.write("memory.swap.max", &v)?;
            }
            if let Some(r) = mem.reservation().filter(|r| *r > 0) {
                self.write("memory.low", &r.to_string())?;
            }
        }
        if let Some(pids) = res.pids() {
            let v = if pids.limit() > 0 { pids.limit().to_string() } else { "max".into() };
            self.write("pids.max", &v)?;
        }
        for h in res.hugepage_limits().iter().flatten() {
            self.write(&format!("hugetlb.{}.max", h.page_size()), &h.limit().to_string())?;
        }
        if let Some(w) = res.block_io().as_ref().and_then(|b| b.weight()) {
            if self.dir().join("io.weight").exists() {
                self.write("io.weight", &w.to_string())?;
            }
        }
        // Device rules need an eBPF program on v2; not applied yet.
        Ok(())
    }

    fn pids(&self) -> CgroupResult<Vec<i32>> {
        read_pids(&self.dir().join("cgroup.procs"))
    }

    fn destroy(&self) -> CgroupResult<()> {
        remove_dir(&self.dir())
    }

    fn kill_all(&self) -> bool {
        let f = self.dir().join("cgroup.kill");
        f.exists() && write_file(&f, "1").is_ok()
    }

    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        vec![(String::new(), self.dir())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
        tmp
    }

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
    }

    #[test]
    fn writes_v2_files() {
        let tmp = fake_root();
        let m = V2Manager::new(tmp.path(), Path::new("/berth/c1"));
        m.create().unwrap();
        let res: LinuxResources = serde_json::from_str(
            r#"{"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1","mems":"0"},
                "memory":{"limit":104857600,"swap":209715200},"pids":{"limit":42},
                "hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}"#,
        )
        .unwrap();
        m.set(&res).unwrap();
        m.add_pid(1234).unwrap();
        let r = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(r("cgroup.subtree_control"), "+cpuset +cpu +io +memory +pids");
        assert_eq!(r("berth/cgroup.subtree_control"), "+cpuset +cpu +io +memory +pids");
        assert_eq!(r("berth/c1/cpu.weight"), "39");
        assert_eq!(r("berth/c1/cpu.max"), "50000 100000");
        assert_eq!(r("berth/c1/cpuset.cpus"), "0-1");
        assert_eq!(r("berth/c1/cpuset.mems"), "0");
        assert_eq!(r("berth/c1/memory.max"), "104857600");
        assert_eq!(r("berth/c1/memory.swap.max"), "104857600");
        assert_eq!(r("berth/c1/pids.max"), "42");
        assert_eq!(r("berth/c1/hugetlb.2MB.max"), "4194304");
        assert_eq!(r("berth/c1/cgroup.procs"), "1234");
        assert_eq!(m.mount_sources(), vec![(String::new(), tmp.path().join("berth/c1"))]);
    }

    #[test]
    fn unlimited_values() {
        let tmp = fake_root();
        let m = V2Manager::new(tmp.path(), Path::new("c2"));
        m.create().unwrap();
        let res: LinuxResources =
            serde_json::from_str(r#"{"cpu":{"quota":-1,"period":50000},"memory":{"limit":-1,"swap":-1},"pids":{"limit":0}}"#)
                .unwrap();
        m.set(&res).unwrap();
        let r = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(r("c2/cpu.max"), "max 50000");
        assert_eq!(r("c2/memory.max"), "max");
        assert_eq!(r("c2/memory.swap.max"), "max");
        assert_eq!(r("c2/pids.max"), "max");
    }

    #[test]
    fn kill_all_writes_cgroup_kill() {
        let tmp = fake_root();
        let m = V2Manager::new(tmp.path(), Path::new("k"));
        m.create().unwrap();
        assert!(!m.kill_all(), "no cgroup.kill: the kernel is older than 5.14");
        std::fs::write(tmp.path().join("k/cgroup.kill"), "").unwrap();
        assert!(m.kill_all());
        assert_eq!(std::fs::read_to_string(tmp.path().join("k/cgroup.kill")).unwrap(), "1");
    }

    #[test]
    fn refuses_root() {
        let tmp = fake_root();
        assert!(V2Manager::new(tmp.path(), Path::new("/")).create().is_err());
    }
}
