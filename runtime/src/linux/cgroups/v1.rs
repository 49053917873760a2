//! cgroup v1: one directory per mounted controller hierarchy.

use std::path::{Path, PathBuf};

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, Controller, Controllers};
use cgroups_rs::CgroupPid;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources};

use super::tree::{self, write_err, Tree};
use super::{read_file, relative, remove_dir, CgroupError, CgroupManager, CgroupResult};

/// A mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mountpoint: PathBuf,
    /// Controllers (and `name=...` for named hierarchies).
    pub controllers: Vec<String>,
}

/// Parses v1 hierarchies from mountinfo text.
pub fn parse_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let post: Vec<&str> = post.split_whitespace().collect();
        if post.first() != Some(&"cgroup") || post.len() < 3 {
            continue;
        }
        let pre: Vec<&str> = pre.split_whitespace().collect();
        let Some(mp) = pre.get(4) else { continue };
        let controllers: Vec<String> = post[2]
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("clone_children") && !o.starts_with("release_agent"))
            .map(String::from)
            .collect();
        if out.iter().all(|h| h.controllers != controllers) {
            out.push(Hierarchy { mountpoint: PathBuf::from(mp), controllers });
        }
    }
    out
}

/// The host's v1 hierarchies, from /proc/self/mountinfo.
pub fn host_hierarchies() -> CgroupResult<Vec<Hierarchy>> {
    Ok(parse_hierarchies(&read_file(Path::new("/proc/self/mountinfo"))?))
}

/// A container cgroup across all v1 hierarchies, through cgroups-rs.
pub struct V1Manager {
    hierarchies: Vec<Hierarchy>,
    cg: Cgroup,
}

/// Devices every container may use (as runc allows by default): type,
/// major, minor (-1 for any), access.
const DEFAULT_DEVICES: &[(char, i64, i64, &str)] = &[
    ('c', -1, -1, "m"),
    ('b', -1, -1, "m"),
    ('c', 1, 3, "rwm"),
    ('c', 1, 8, "rwm"),
    ('c', 1, 7, "rwm"),
    ('c', 5, 0, "rwm"),
    ('c', 1, 5, "rwm"),
    ('c', 1, 9, "rwm"),
    ('c', 5, 1, "rwm"),
    ('c', 136, -1, "rwm"),
    ('c', 5, 2, "rwm"),
];

impl V1Manager {
    /// The cgroup at `path` in those of `hierarchies` that hold a
    /// controller cgroups-rs knows.
    pub fn new(hierarchies: Vec<Hierarchy>, path: &Path) -> Self {
        let hierarchies: Vec<Hierarchy> = hierarchies.into_iter().filter(tree::known_v1).collect();
        let cg = Tree::V1(hierarchies.clone()).load(&relative(path));
        V1Manager { hierarchies, cg }
    }

    /// The container's directory in the hierarchy holding `controller`.
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mountpoint.join(self.cg.path()))
    }

    fn set_memory(&self, mem: &LinuxMemory) -> CgroupResult<()> {
        let Some(mc) = self.cg.controller_of::<MemController>() else { return Ok(()) };
        let memsw_supported = mc.path().join("memory.memsw.limit_in_bytes").exists();
        let limit = mem.limit().filter(|l| *l != 0);
        let swap = mem.swap().filter(|s| *s != 0).filter(|_| memsw_supported);
        // The kernel requires memsw >= limit at every step: when the
        // first order fails, try the other one.
        let set_limit = || limit.map_or(Ok(()), |l| mc.set_limit(l).map_err(write_err(mc, "memory.limit_in_bytes")));
        let set_swap = || swap.map_or(Ok(()), |s| mc.set_memswap_limit(s).map_err(write_err(mc, "memory.memsw.limit_in_bytes")));
        if set_limit().and_then(|_| set_swap()).is_err() {
            set_swap()?;
            set_limit()?;
        }
        if let Some(r) = mem.reservation().filter(|r| *r != 0) {
            mc.set_soft_limit(r).map_err(write_err(mc, "memory.soft_limit_in_bytes"))?;
        }
        if let Some(s) = mem.swappiness().filter(|s| *s <= 100) {
            mc.set_swappiness(s).map_err(write_err(mc, "memory.swappiness"))?;
        }
        if let Some(true) = mem.disable_oom_killer() {
            mc.disable_oom_killer().map_err(write_err(mc, "memory.oom_control"))?;
        }
        Ok(())
    }

    fn set_devices(&self, devices: &[LinuxDeviceCgroup]) -> CgroupResult<()> {
        let Some(dc) = self.cg.controller_of::<DevicesController>() else { return Ok(()) };
        dc.deny_device(DeviceType::All, -1, -1, &DevicePermissions::all()).map_err(write_err(dc, "devices.deny"))?;
        for d in devices {
            let (typ, major, minor, access) = device_rule(d)?;
            if d.allow() {
                dc.allow_device(typ, major, minor, &access).map_err(write_err(dc, "devices.allow"))?;
            } else {
                dc.deny_device(typ, major, minor, &access).map_err(write_err(dc, "devices.deny"))?;
            }
        }
        for &(typ, major, minor, access) in DEFAULT_DEVICES {
            let typ = DeviceType::from_char(Some(typ)).unwrap_or(DeviceType::All);
            let access = DevicePermissions::from_str(access).unwrap_or_default();
            dc.allow_device(typ, major, minor, &access).map_err(write_err(dc, "devices.allow"))?;
        }
        Ok(())
    }
}

/// An OCI device rule as cgroups-rs takes it: type, major, minor (-1 for
/// any), access.
fn device_rule(d: &LinuxDeviceCgroup) -> CgroupResult<(DeviceType, i64, i64, Vec<DevicePermissions>)> {
    let typ = match d.typ() {
        Some(LinuxDeviceType::B) => DeviceType::Block,
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceType::Char,
        _ => DeviceType::All,
    };
    let num = |n: Option<i64>| n.filter(|n| *n >= 0 && typ != DeviceType::All).unwrap_or(-1);
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    let perms = DevicePermissions::from_str(&access)
        .map_err(|_| CgroupError::Invalid(format!("device access {access:?}: want letters of \"rwm\"")))?;
    Ok((typ, num(d.major()), num(d.minor()), perms))
}

impl CgroupManager for V1Manager {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn create(&self) -> CgroupResult<()> {
        for c in tree::dirs(&self.cg) {
            c.create().map_err(|e| tree::error("mkdir", c.path().into(), e))?;
        }
        // cgroups-rs copies cpuset.cpus/mems down from the parents but only
        // logs a failure; without them every join fails with ENOSPC.
        if let Some(cs) = self.cg.controller_of::<CpuSetController>() {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if read_file(&cs.path().join(f))?.trim().is_empty() {
                    return Err(CgroupError::Invalid(format!("{} is empty: not copied from the parent", cs.path().join(f).display())));
                }
            }
        }
        Ok(())
    }

    fn add_pid(&self, pid: i32) -> CgroupResult<()> {
        for c in tree::dirs(&self.cg) {
            c.add_task_by_tgid(&CgroupPid::from(pid as u64)).map_err(write_err(c, "cgroup.procs"))?;
        }
        Ok(())
    }

    fn join_self(&self) -> CgroupResult<()> {
        for c in tree::dirs(&self.cg) {
            c.add_task(&CgroupPid::from(0)).map_err(write_err(c, "tasks"))?;
        }
        Ok(())
    }

    fn set(&self, res: &LinuxResources) -> CgroupResult<()> {
        if let Some(cpu) = res.cpu() {
            if let Some(cc) = self.cg.controller_of::<CpuController>() {
                if let Some(s) = cpu.shares().filter(|s| *s > 0) {
                    cc.set_shares(s).map_err(write_err(cc, "cpu.shares"))?;
                }
                if let Some(p) = cpu.period().filter(|p| *p > 0) {
                    cc.set_cfs_period(p).map_err(write_err(cc, "cpu.cfs_period_us"))?;
                }
                if let Some(q) = cpu.quota().filter(|q| *q != 0) {
                    cc.set_cfs_quota(q).map_err(write_err(cc, "cpu.cfs_quota_us"))?;
                }
            }
        }
        tree::set_shared(&self.cg, res)?;
        if let Some(mem) = res.memory() {
            self.set_memory(mem)?;
        }
        if let Some(w) = res.block_io().as_ref().and_then(|b| b.weight()) {
            if let Some(bc) = self.cg.controller_of::<BlkIoController>().filter(|c| c.path().join("blkio.weight").exists()) {
                bc.set_weight(w.into()).map_err(write_err(bc, "blkio.weight"))?;
            }
        }
        match res.devices() {
            Some(devices) => self.set_devices(devices),
            None => Ok(()),
        }
    }

    fn pids(&self) -> CgroupResult<Vec<i32>> {
        let dirs = tree::dirs(&self.cg);
        let c = dirs
            .iter()
            .find(|c| matches!(c.control_type(), Controllers::Pids | Controllers::Freezer | Controllers::Mem))
            .or(dirs.first());
        Ok(c.map(|c| c.procs().into_iter().map(|p| p.pid as i32).filter(|p| *p > 0).collect()).unwrap_or_default())
    }

    fn destroy(&self) -> CgroupResult<()> {
        let mut first_err = None;
        for c in tree::dirs(&self.cg) {
            if let Err(e) = remove_dir(c.path()) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        self.hierarchies
            .iter()
            .filter_map(|h| {
                let name = h.mountpoint.file_name()?.to_str()?.to_string();
                Some((name, h.mountpoint.join(self.cg.path())))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let h = parse_hierarchies(mi);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(h[0].mountpoint, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(h[1].controllers.contains(&"name=systemd".to_string()));
    }

    #[test]
    fn device_rules() {
        let d: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}"#).unwrap();
        assert_eq!(device_rule(&d).unwrap(), (DeviceType::Char, 1, 3, DevicePermissions::all()));
        let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow":false,"major":4,"access":"rwm"}"#).unwrap();
        assert_eq!(device_rule(&d).unwrap(), (DeviceType::All, -1, -1, DevicePermissions::all()));
        let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow":true,"type":"b","access":"r"}"#).unwrap();
        assert_eq!(device_rule(&d).unwrap(), (DeviceType::Block, -1, -1, vec![DevicePermissions::Read]));
        let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow":true,"type":"c","access":"rx"}"#).unwrap();
        assert!(device_rule(&d).unwrap_err().to_string().contains("\"rx\""));
    }

    #[test]
    fn writes_into_fake_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            Hierarchy { mountpoint: d, controllers: name.split(',').map(String::from).collect() }
        };
        let hs = vec![mk("memory"), mk("pids"), mk("cpu,cpuacct"), mk("cpuset"), mk("devices"), mk("misc")];
        std::fs::write(tmp.path().join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(tmp.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        // The kernel makes new cpuset cgroups with empty cpus and mems.
        for d in ["cpuset/t", "cpuset/t/c1"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
            std::fs::write(tmp.path().join(d).join("cpuset.cpus"), "").unwrap();
            std::fs::write(tmp.path().join(d).join("cpuset.mems"), "").unwrap();
        }
        let m = V1Manager::new(hs, Path::new("/t/c1"));
        m.create().unwrap();
        let r = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(r("cpuset/t/c1/cpuset.cpus"), "0-3", "copied down from the parents");
        assert_eq!(r("cpuset/t/cpuset.mems"), "0");
        assert!(!tmp.path().join("misc/t").exists(), "no controller cgroups-rs knows");
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":1048576},"pids":{"limit":5},"cpu":{"shares":512,"quota":20000,"period":100000},
                "devices":[{"allow":true,"type":"c","major":10,"minor":200,"access":"rw"}]}"#,
        )
        .unwrap();
        m.set(&res).unwrap();
        assert_eq!(r("memory/t/c1/memory.limit_in_bytes"), "1048576");
        assert_eq!(r("pids/t/c1/pids.max"), "5");
        assert_eq!(r("cpu,cpuacct/t/c1/cpu.shares"), "512");
        assert_eq!(r("cpu,cpuacct/t/c1/cpu.cfs_quota_us"), "20000");
        // Each write replaces a fake file: the last rule of each kind stays.
        assert_eq!(r("devices/t/c1/devices.deny"), "a *:* rwm");
        assert_eq!(r("devices/t/c1/devices.allow"), "c 5:2 rwm");
        m.add_pid(42).unwrap();
        assert_eq!(r("cpu,cpuacct/t/c1/cgroup.procs"), "42");
        assert_eq!(m.pids().unwrap(), vec![42]);
        m.join_self().unwrap();
        assert_eq!(r("memory/t/c1/tasks"), "0");
        let names: Vec<String> = m.mount_sources().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["memory", "pids", "cpu,cpuacct", "cpuset", "devices"]);
    }
}
