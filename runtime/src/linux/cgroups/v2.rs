//! cgroup v2: one directory in the unified hierarchy.

use std::path::{Path, PathBuf};

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, Controller};
use cgroups_rs::CgroupPid;
use oci_spec::runtime::{LinuxMemory, LinuxResources};

use super::tree::{self, write_err, Tree};
use super::{mkdir_all, read_file, relative, remove_dir, write_file, CgroupError, CgroupManager, CgroupResult};

/// A container cgroup under a unified hierarchy rooted at `root`, through
/// cgroups-rs.
pub struct V2Manager {
    root: PathBuf,
    /// The cgroup, its path relative to `root`.
    cg: Cgroup,
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
        let root = root.into();
        let cg = Tree::V2(root.clone()).load(&relative(path));
        V2Manager { root, cg }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.join(self.cg.path())
    }

    fn set_memory(&self, mem: &LinuxMemory) -> CgroupResult<()> {
        let Some(mc) = self.cg.controller_of::<MemController>() else { return Ok(()) };
        let limit = mem.limit().filter(|l| *l != 0);
        if let Some(l) = limit {
            // -1 is "max" to cgroups-rs.
            mc.set_limit(l.max(-1)).map_err(write_err(mc, "memory.max"))?;
        }
        // OCI swap is memory+swap (v1 memsw); v2 swap.max is swap alone.
        if let Some(s) = mem.swap().filter(|s| *s != 0) {
            let v = match (s, limit) {
                (s, _) if s < 0 => -1,
                (s, Some(l)) if l > 0 => {
                    if s < l {
                        return Err(CgroupError::Invalid(format!("memory+swap {s} below memory limit {l}")));
                    }
                    s - l
                }
                (s, _) => s,
            };
            mc.set_memswap_limit(v).map_err(write_err(mc, "memory.swap.max"))?;
        }
        if let Some(r) = mem.reservation().filter(|r| *r > 0) {
            mc.set_soft_limit(r).map_err(write_err(mc, "memory.low"))?;
        }
        Ok(())
    }

    /// blkio weight (10..=1000): `io.bfq.weight` takes it as is; `io.weight`
    /// (1..=10000) takes it converted, as runc does.
    fn set_io_weight(&self, w: u16) -> CgroupResult<()> {
        let Some(bc) = self.cg.controller_of::<BlkIoController>() else { return Ok(()) };
        if bc.path().join("io.bfq.weight").exists() {
            return bc.set_weight(w.into()).map_err(write_err(bc, "io.bfq.weight"));
        }
        let file = bc.path().join("io.weight");
        if file.exists() {
            let w = u64::from(w.clamp(10, 1000));
            write_file(&file, &(1 + (w - 10) * 9999 / 990).to_string())?;
        }
        Ok(())
    }

    /// Enables every available controller in `cgroup.subtree_control` of
    /// the root and each ancestor of the container cgroup.
    fn enable_controllers(&self) -> CgroupResult<()> {
        let line = self.controllers_line()?;
        if line.is_empty() {
            return Ok(());
        }
        let mut dir = self.root.clone();
        let comps: Vec<_> = Path::new(self.cg.path()).components().collect();
        for (i, comp) in comps.iter().enumerate() {
            write_file(&dir.join("cgroup.subtree_control"), &line)?;
            dir.push(comp);
            if i + 1 < comps.len() {
                mkdir_all(&dir)?;
            }
        }
        Ok(())
    }

    /// Enables the controllers for the cgroups below this one too (a pod's
    /// cgroup, whose containers another runtime may create).
    pub fn delegate(&self) -> CgroupResult<()> {
        let line = self.controllers_line()?;
        if line.is_empty() {
            return Ok(());
        }
        write_file(&self.dir().join("cgroup.subtree_control"), &line)
    }

    /// `+name` for every controller the root offers, as one
    /// `cgroup.subtree_control` line.
    fn controllers_line(&self) -> CgroupResult<String> {
        let available = read_file(&self.root.join("cgroup.controllers"))?;
        Ok(available.split_whitespace().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" "))
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn create(&self) -> CgroupResult<()> {
        if self.cg.path().is_empty() {
            return Err(CgroupError::Invalid("refusing to use the root cgroup".into()));
        }
        // cgroups-rs reads the controllers to enable from /sys/fs/cgroup
        // whatever the root: enable them here, then let it make the leaf.
        self.enable_controllers()?;
        for c in tree::dirs(&self.cg) {
            c.create().map_err(|e| tree::error("mkdir", c.path().into(), e))?;
        }
        Ok(())
    }

    fn add_pid(&self, pid: i32) -> CgroupResult<()> {
        self.cg.add_task_by_tgid(CgroupPid::from(pid as u64)).map_err(|e| tree::error("write", self.dir().join("cgroup.procs"), e))
    }

    fn set(&self, res: &LinuxResources) -> CgroupResult<()> {
        if let Some(cpu) = res.cpu() {
            if let Some(cc) = self.cg.controller_of::<CpuController>() {
                if let Some(s) = cpu.shares().filter(|s| *s > 0) {
                    cc.set_shares(shares_to_weight(s)).map_err(write_err(cc, "cpu.weight"))?;
                }
                let quota = cpu.quota().filter(|q| *q != 0);
                let period = cpu.period().filter(|p| *p != 0);
                if quota.is_some() || period.is_some() {
                    // A quota of -1 is "max"; the period defaults to 100 ms.
                    cc.set_cfs_quota_and_period(Some(quota.unwrap_or(-1)), Some(period.unwrap_or(100_000)))
                        .map_err(write_err(cc, "cpu.max"))?;
                }
            }
        }
        tree::set_shared(&self.cg, res)?;
        if let Some(mem) = res.memory() {
            self.set_memory(mem)?;
        }
        if let Some(w) = res.block_io().as_ref().and_then(|b| b.weight()) {
            self.set_io_weight(w)?;
        }
        // Device rules need an eBPF program on v2; not applied yet.
        Ok(())
    }

    fn pids(&self) -> CgroupResult<Vec<i32>> {
        Ok(self.cg.procs().into_iter().map(|p| p.pid as i32).filter(|p| *p > 0).collect())
    }

    fn destroy(&self) -> CgroupResult<()> {
        remove_dir(&self.dir())
    }

    fn kill_all(&self) -> bool {
        self.cg.kill().is_ok()
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
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids\n").unwrap();
        std::fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
        tmp
    }

    /// Files the kernel fills in a new cgroup that cgroups-rs reads back.
    fn kernel_defaults(dir: &Path) {
        std::fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
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
        kernel_defaults(&m.dir());
        let res: LinuxResources = serde_json::from_str(
            r#"{"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0-1","mems":"0"},
                "memory":{"limit":104857600,"swap":209715200},"pids":{"limit":42},
                "hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}"#,
        )
        .unwrap();
        m.set(&res).unwrap();
        m.add_pid(1234).unwrap();
        let r = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(r("cgroup.subtree_control"), "+cpuset +cpu +io +memory +hugetlb +pids");
        assert_eq!(r("berth/cgroup.subtree_control"), "+cpuset +cpu +io +memory +hugetlb +pids");
        assert_eq!(r("berth/c1/cpu.weight"), "39");
        assert_eq!(r("berth/c1/cpu.max"), "50000 100000");
        assert_eq!(r("berth/c1/cpuset.cpus"), "0-1");
        assert_eq!(r("berth/c1/cpuset.mems"), "0");
        assert_eq!(r("berth/c1/memory.max"), "104857600");
        assert_eq!(r("berth/c1/memory.swap.max"), "104857600");
        assert_eq!(r("berth/c1/pids.max"), "42");
        assert_eq!(r("berth/c1/hugetlb.2MB.max"), "4194304");
        assert_eq!(r("berth/c1/cgroup.procs"), "1234");
        assert_eq!(m.pids().unwrap(), vec![1234]);
        assert_eq!(m.mount_sources(), vec![(String::new(), tmp.path().join("berth/c1"))]);
    }

    #[test]
    fn unlimited_values() {
        let tmp = fake_root();
        let m = V2Manager::new(tmp.path(), Path::new("c2"));
        m.create().unwrap();
        kernel_defaults(&m.dir());
        let res: LinuxResources =
            serde_json::from_str(r#"{"cpu":{"quota":-1,"period":50000},"memory":{"limit":-1,"swap":-1},"pids":{"limit":0}}"#)
                .unwrap();
        m.set(&res).unwrap();
        let r = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
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
    fn io_weight_converted_unless_bfq() {
        let tmp = fake_root();
        let m = V2Manager::new(tmp.path(), Path::new("io"));
        m.create().unwrap();
        std::fs::write(m.dir().join("io.weight"), "default 100\n").unwrap();
        let res: LinuxResources = serde_json::from_str(r#"{"blockIO":{"weight":500}}"#).unwrap();
        m.set(&res).unwrap();
        assert_eq!(std::fs::read_to_string(m.dir().join("io.weight")).unwrap(), "4950");
        std::fs::write(m.dir().join("io.bfq.weight"), "100\n").unwrap();
        m.set(&res).unwrap();
        assert_eq!(std::fs::read_to_string(m.dir().join("io.bfq.weight")).unwrap(), "500");
    }

    #[test]
    fn destroy_removes_the_leaf_and_tolerates_a_missing_one() {
        let tmp = fake_root();
        let m = V2Manager::new(tmp.path(), Path::new("gone/c"));
        m.create().unwrap();
        m.destroy().unwrap();
        assert!(!tmp.path().join("gone/c").exists());
        assert!(tmp.path().join("gone").exists(), "only the leaf is the container's");
        m.destroy().unwrap();
    }

    #[test]
    fn refuses_root() {
        let tmp = fake_root();
        assert!(V2Manager::new(tmp.path(), Path::new("/")).create().is_err());
    }
}
