//! A cgroups-rs hierarchy over mount points Berth names itself: the host's
//! (from mountinfo) or a fake tree in tests. The crate's own hierarchies
//! always read /proc/self/mountinfo or /sys/fs/cgroup.

use std::path::{Path, PathBuf};

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::devices::DevicesController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hugetlb::HugeTlbController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::net_cls::NetClsController;
use cgroups_rs::fs::net_prio::NetPrioController;
use cgroups_rs::fs::perf_event::PerfEventController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::rdma::RdmaController;
use cgroups_rs::fs::systemd::SystemdController;
use cgroups_rs::fs::{Cgroup, Controller, MaxValue, Subsystem};
use oci_spec::runtime::LinuxResources;

use super::v1::Hierarchy;
use super::{CgroupError, CgroupResult};

/// The mounted hierarchies a cgroup lives in.
#[derive(Debug, Clone)]
pub enum Tree {
    /// One mount per (group of) v1 controllers.
    V1(Vec<Hierarchy>),
    /// The unified hierarchy's root; controllers from its `cgroup.controllers`.
    V2(PathBuf),
}

/// v1 controller names in the order tasks join them (blkio before memory,
/// for writeback accounting, as cgroups-rs does).
const V1_ORDER: &[&str] = &[
    "blkio", "memory", "pids", "cpuset", "cpuacct", "cpu", "devices", "freezer", "net_cls", "perf_event", "net_prio",
    "hugetlb", "rdma", "name=systemd",
];

/// Controllers cgroups-rs handles on v2 (freezing is core v2
/// functionality, not a listed controller, but has its own handle).
const V2_NAMES: &[&str] = &["cpu", "io", "cpuset", "memory", "pids", "hugetlb", "freezer"];

/// The cgroups-rs handle of controller `name` mounted at `point`.
fn subsystem(name: &str, point: &Path, v2: bool) -> Option<Subsystem> {
    let (p, b) = (point.to_path_buf(), point.to_path_buf());
    Some(match name {
        "blkio" | "io" => Subsystem::BlkIo(BlkIoController::new(p, b, v2)),
        "memory" => Subsystem::Mem(MemController::new(p, b, v2)),
        "pids" => Subsystem::Pid(PidController::new(p, b, v2)),
        "cpuset" => Subsystem::CpuSet(CpuSetController::new(p, b, v2)),
        "cpuacct" => Subsystem::CpuAcct(CpuAcctController::new(p, b)),
        "cpu" => Subsystem::Cpu(CpuController::new(p, b, v2)),
        "devices" => Subsystem::Devices(DevicesController::new(p, b)),
        "freezer" => Subsystem::Freezer(FreezerController::new(p, b, v2)),
        "net_cls" => Subsystem::NetCls(NetClsController::new(p, b)),
        "perf_event" => Subsystem::PerfEvent(PerfEventController::new(p, b)),
        "net_prio" => Subsystem::NetPrio(NetPrioController::new(p, b)),
        "hugetlb" => Subsystem::HugeTlb(HugeTlbController::new(p, b, v2)),
        "rdma" => Subsystem::Rdma(RdmaController::new(p, b)),
        "name=systemd" => Subsystem::Systemd(SystemdController::new(p, b, v2)),
        _ => return None,
    })
}

impl cgroups_rs::fs::Hierarchy for Tree {
    fn subsystems(&self) -> Vec<Subsystem> {
        match self {
            Tree::V1(hs) => V1_ORDER
                .iter()
                .filter_map(|name| {
                    let h = hs.iter().find(|h| h.controllers.iter().any(|c| c == name))?;
                    subsystem(name, &h.mountpoint, false)
                })
                .collect(),
            Tree::V2(root) => {
                let listed = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                listed
                    .split_whitespace()
                    .chain(["freezer"])
                    .filter(|n| V2_NAMES.contains(n))
                    .filter_map(|n| subsystem(n, root, true))
                    .collect()
            }
        }
    }

    fn root(&self) -> PathBuf {
        match self {
            Tree::V1(hs) => hs
                .first()
                .and_then(|h| h.mountpoint.parent())
                .map_or_else(|| PathBuf::from("/sys/fs/cgroup"), Path::to_path_buf),
            Tree::V2(root) => root.clone(),
        }
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().unwrap_or(Path::new(""));
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        matches!(self, Tree::V2(_))
    }
}

impl Tree {
    /// A handle on the cgroup at `rel` (relative to the hierarchy roots);
    /// nothing is created.
    pub fn load(&self, rel: &Path) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), rel)
    }
}

/// The controllers of `cg`, one per directory (v1 mounts may hold
/// several controllers; on v2 every controller shares one directory).
pub fn dirs(cg: &Cgroup) -> Vec<&dyn Controller> {
    let mut seen: Vec<&Path> = Vec::new();
    let mut out = Vec::new();
    for s in cg.subsystems() {
        let c = s.to_controller();
        if !seen.contains(&c.path()) {
            seen.push(c.path());
            out.push(c);
        }
    }
    out
}

/// True if cgroups-rs manages a controller of `h`.
pub fn known_v1(h: &Hierarchy) -> bool {
    h.controllers.iter().any(|c| V1_ORDER.contains(&c.as_str()))
}

/// Applies the limits whose files and values v1 and v2 share: cpuset,
/// pids and hugetlb.
pub fn set_shared(cg: &Cgroup, res: &LinuxResources) -> CgroupResult<()> {
    if let (Some(cpu), Some(cs)) = (res.cpu(), cg.controller_of::<CpuSetController>()) {
        if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            cs.set_cpus(c).map_err(write_err(cs, "cpuset.cpus"))?;
        }
        if let Some(m) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            cs.set_mems(m).map_err(write_err(cs, "cpuset.mems"))?;
        }
    }
    if let (Some(pids), Some(pc)) = (res.pids(), cg.controller_of::<PidController>()) {
        let max = if pids.limit() > 0 { MaxValue::Value(pids.limit()) } else { MaxValue::Max };
        pc.set_pid_max(max).map_err(write_err(pc, "pids.max"))?;
    }
    if let Some(hc) = cg.controller_of::<HugeTlbController>() {
        for h in res.hugepage_limits().iter().flatten() {
            let file = format!("hugetlb.{}.{}", h.page_size(), if cg.v2() { "max" } else { "limit_in_bytes" });
            hc.set_limit_in_bytes(h.page_size(), h.limit().max(0) as u64).map_err(write_err(hc, &file))?;
        }
    }
    Ok(())
}

/// Maps a failed write of `file` in controller `c`'s directory.
pub fn write_err<'a>(
    c: &'a dyn Controller,
    file: &'a str,
) -> impl FnOnce(cgroups_rs::fs::error::Error) -> CgroupError + 'a {
    move |e| error("write", c.path().join(file), e)
}

/// A cgroups-rs failure of `op` on `path`, keeping the OS error when there
/// is one.
pub fn error(op: &'static str, path: PathBuf, e: cgroups_rs::fs::error::Error) -> CgroupError {
    use std::error::Error as _;
    match e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
        Some(io) => CgroupError::Io {
            op,
            path,
            source: io.raw_os_error().map_or_else(|| std::io::Error::new(io.kind(), io.to_string()), std::io::Error::from_raw_os_error),
        },
        None => CgroupError::Invalid(format!("{op} {}: {}", path.display(), e.kind())),
    }
}
