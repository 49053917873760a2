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
use cgroups_rs::fs::{Cgroup, Controller, Subsystem};

use super::v1::Hierarchy;
use super::CgroupError;

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

fn v1_subsystem(name: &str, point: &Path) -> Option<Subsystem> {
    let (p, b) = (point.to_path_buf(), point.to_path_buf());
    Some(match name {
        "blkio" => Subsystem::BlkIo(BlkIoController::new(p, b, false)),
        "memory" => Subsystem::Mem(MemController::new(p, b, false)),
        "pids" => Subsystem::Pid(PidController::new(p, b, false)),
        "cpuset" => Subsystem::CpuSet(CpuSetController::new(p, b, false)),
        "cpuacct" => Subsystem::CpuAcct(CpuAcctController::new(p, b)),
        "cpu" => Subsystem::Cpu(CpuController::new(p, b, false)),
        "devices" => Subsystem::Devices(DevicesController::new(p, b)),
        "freezer" => Subsystem::Freezer(FreezerController::new(p, b, false)),
        "net_cls" => Subsystem::NetCls(NetClsController::new(p, b)),
        "perf_event" => Subsystem::PerfEvent(PerfEventController::new(p, b)),
        "net_prio" => Subsystem::NetPrio(NetPrioController::new(p, b)),
        "hugetlb" => Subsystem::HugeTlb(HugeTlbController::new(p, b, false)),
        "rdma" => Subsystem::Rdma(RdmaController::new(p, b)),
        "name=systemd" => Subsystem::Systemd(SystemdController::new(p, b, false)),
        _ => return None,
    })
}

fn v2_subsystem(name: &str, root: &Path) -> Option<Subsystem> {
    let (p, b) = (root.to_path_buf(), root.to_path_buf());
    Some(match name {
        "cpu" => Subsystem::Cpu(CpuController::new(p, b, true)),
        "io" => Subsystem::BlkIo(BlkIoController::new(p, b, true)),
        "cpuset" => Subsystem::CpuSet(CpuSetController::new(p, b, true)),
        "memory" => Subsystem::Mem(MemController::new(p, b, true)),
        "pids" => Subsystem::Pid(PidController::new(p, b, true)),
        "hugetlb" => Subsystem::HugeTlb(HugeTlbController::new(p, b, true)),
        // Freezing is core v2 functionality, not a listed controller.
        "freezer" => Subsystem::Freezer(FreezerController::new(p, b, true)),
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
                    v1_subsystem(name, &h.mountpoint)
                })
                .collect(),
            Tree::V2(root) => {
                let listed = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                listed.split_whitespace().chain(["freezer"]).filter_map(|n| v2_subsystem(n, root)).collect()
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

/// Maps a failed write of `file` in controller `c`'s directory.
pub fn write_err<'a>(
    c: &'a dyn Controller,
    file: &'a str,
) -> impl FnOnce(cgroups_rs::fs::error::Error) -> CgroupError + 'a {
    move |e| error("write", c.path().join(file), e)
}

/// A cgroups-rs failure on `file` under `dir`, keeping the OS error when
/// there is one.
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
