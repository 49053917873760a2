//! cgroup v1: one directory per mounted controller hierarchy.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::{mkdir_all, read_file, read_pids, relative, remove_dir, write_file, CgroupManager, CgroupResult};

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

/// A container cgroup across all v1 hierarchies.
pub struct V1Manager {
    hierarchies: Vec<Hierarchy>,
    path: PathBuf,
}

/// Devices every container may use (as runc allows by default).
const DEFAULT_DEVICES: &[&str] = &[
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 1:5 rwm", "c 1:9 rwm",
    "c 5:1 rwm", "c 136:* rwm", "c 5:2 rwm",
];

impl V1Manager {
    pub fn new(hierarchies: Vec<Hierarchy>, path: &Path) -> Self {
        V1Manager { hierarchies, path: relative(path) }
    }

    /// The container's directory in the hierarchy holding `controller`.
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mountpoint.join(&self.path))
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> CgroupResult<()> {
        match self.dir(controller) {
            Some(d) => write_file(&d.join(file), value),
            None => Ok(()),
        }
    }

    /// cpuset children start empty; copy cpus/mems down from the parents.
    fn init_cpuset(&self, hierarchy: &Hierarchy) -> CgroupResult<()> {
        let mut dir = hierarchy.mountpoint.clone();
        for comp in self.path.components() {
            let parent = dir.clone();
            dir.push(comp);
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if read_file(&dir.join(f))?.trim().is_empty() {
                    write_file(&dir.join(f), read_file(&parent.join(f))?.trim())?;
                }
            }
        }
        Ok(())
    }
}

fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let typ = match d.typ() {
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        _ => "a",
    };
    let num = |n: Option<i64>| n.filter(|n| *n >= 0).map_or("*".to_string(), |n| n.to_string());
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    if typ == "a" {
        return format!("a *:* {access}");
    }
    format!("{typ} {}:{} {access}", num(d.major()), num(d.minor()))
}

impl CgroupManager for V1Manager {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn create(&self) -> CgroupResult<()> {
        for h in &self.hierarchies {
            mkdir_all(&h.mountpoint.join(&self.path))?;
            if h.controllers.iter().any(|c| c == "cpuset") {
                self.init_cpuset(h)?;
            }
        }
        Ok(())
    }

    fn add_pid(&self, pid: i32) -> CgroupResult<()> {
        for h in &self.hierarchies {
            write_file(&h.mountpoint.join(&self.path).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn join_self(&self) -> CgroupResult<()> {
        for h in &self.hierarchies {
            write_file(&h.mountpoint.join(&self.path).join("tasks"), "0")?;
        }
        Ok(())
    }

    fn set(&self, res: &LinuxResources) -> CgroupResult<()> {
        if let Some(cpu) = res.cpu() {
            if let Some(s) = cpu.shares().filter(|s| *s > 0) {
                self.write("cpu", "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = cpu.period().filter(|p| *p > 0) {
                self.write("cpu", "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = cpu.quota().filter(|q| *q != 0) {
                self.write("cpu", "cpu.cfs_quota_us", &q.to_string())?;
            }
            if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                self.write("cpuset", "cpuset.cpus", c)?;
            }
            if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                self.write("cpuset", "cpuset.mems", m)?;
            }
        }
        if let Some(mem) = res.memory() {
            let memsw_supported = self.dir("memory").is_some_and(|d| d.join("memory.memsw.limit_in_bytes").exists());
            let limit = mem.limit().filter(|l| *l != 0);
            let swap = mem.swap().filter(|s| *s != 0).filter(|_| memsw_supported);
            // The kernel requires memsw >= limit at every step: when the
            // first order fails, try the other one.
            let set_limit = || match limit {
                Some(l) => self.write("memory", "memory.limit_in_bytes", &l.to_string()),
                None => Ok(()),
            };
            let set_swap = || match swap {
                Some(s) => self.write("memory", "memory.memsw.limit_in_bytes", &s.to_string()),
                None => Ok(()),
            };
            if set_limit().and_then(|_| set_swap()).is_err() {
                set_swap()?;
                set_limit()?;
            }
            if let Some(r) = mem.reservation().filter(|r| *r != 0) {
                self.write("memory", "memory.soft_limit_in_bytes", &r.to_string())?;
            }
            if let Some(s) = mem.swappiness().filter(|s| *s <= 100) {
                self.write("memory", "memory.swappiness", &s.to_string())?;
            }
            if let Some(true) = mem.disable_oom_killer() {
                self.write("memory", "memory.oom_control", "1")?;
            }
        }
        if let Some(pids) = res.pids() {
            let v = if pids.limit() > 0 { pids.limit().to_string() } else { "max".into() };
            self.write("pids", "pids.max", &v)?;
        }
        for h in res.hugepage_limits().iter().flatten() {
            let file = format!("hugetlb.{}.limit_in_bytes", h.page_size());
            self.write("hugetlb", &file, &h.limit().to_string())?;
        }
        if let Some(w) = res.block_io().as_ref().and_then(|b| b.weight()) {
            if self.dir("blkio").is_some_and(|d| d.join("blkio.weight").exists()) {
                self.write("blkio", "blkio.weight", &w.to_string())?;
            }
        }
        if self.dir("devices").is_some() {
            self.write("devices", "devices.deny", "a")?;
            for d in res.devices().iter().flatten() {
                let file = if d.allow() { "devices.allow" } else { "devices.deny" };
                self.write("devices", file, &device_rule(d))?;
            }
            for rule in DEFAULT_DEVICES {
                self.write("devices", "devices.allow", rule)?;
            }
        }
        Ok(())
    }

    fn pids(&self) -> CgroupResult<Vec<i32>> {
        let h = self
            .hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == "pids" || c == "freezer" || c == "memory"))
            .or(self.hierarchies.first());
        match h {
            Some(h) => read_pids(&h.mountpoint.join(&self.path).join("cgroup.procs")),
            None => Ok(Vec::new()),
        }
    }

    fn destroy(&self) -> CgroupResult<()> {
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = remove_dir(&h.mountpoint.join(&self.path)) {
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
                Some((name, h.mountpoint.join(&self.path)))
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
        assert_eq!(device_rule(&d), "c 1:3 rwm");
        let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow":false,"access":"rwm"}"#).unwrap();
        assert_eq!(device_rule(&d), "a *:* rwm");
    }

    #[test]
    fn writes_into_fake_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            Hierarchy { mountpoint: d, controllers: vec![name.to_string()] }
        };
        let m = V1Manager::new(vec![mk("memory"), mk("pids")], Path::new("/t/c1"));
        m.create().unwrap();
        let res: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":1048576},"pids":{"limit":5}}"#).unwrap();
        m.set(&res).unwrap();
        let r = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(r("memory/t/c1/memory.limit_in_bytes"), "1048576");
        assert_eq!(r("pids/t/c1/pids.max"), "5");
    }
}
