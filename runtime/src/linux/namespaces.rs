//! Joining (setns) and creating (unshare) namespaces.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxNamespaceType;

use super::{Context, SysResult};

/// Clone flag for an OCI namespace type.
pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Name of the namespace file under /proc/PID/ns.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Namespaces to enter, in kernel-friendly order (user first, mount last so
/// other /proc paths are still reachable when they are opened).
#[derive(Debug, Default)]
pub struct NamespacePlan {
    /// Existing namespaces to join: (type, path).
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    /// Namespaces to create.
    pub create: Vec<LinuxNamespaceType>,
}

fn order(t: LinuxNamespaceType) -> u8 {
    match t {
        LinuxNamespaceType::User => 0,
        LinuxNamespaceType::Ipc => 1,
        LinuxNamespaceType::Uts => 2,
        LinuxNamespaceType::Network => 3,
        LinuxNamespaceType::Pid => 4,
        LinuxNamespaceType::Cgroup => 5,
        LinuxNamespaceType::Time => 6,
        LinuxNamespaceType::Mount => 7,
    }
}

impl NamespacePlan {
    /// Joins and creates the planned namespaces. A new or joined PID
    /// namespace only applies to children forked afterwards.
    pub fn enter(&self) -> SysResult<()> {
        let mut join: Vec<_> = self.join.iter().collect();
        join.sort_by_key(|(t, _)| order(*t));
        // Open every path first: joining the mount namespace changes lookups.
        let files = join
            .iter()
            .map(|(t, p)| File::open(p).ctx(|| format!("open {} namespace {}", proc_name(*t), p.display())))
            .collect::<SysResult<Vec<_>>>()?;
        for ((t, p), f) in join.iter().zip(&files) {
            nix::sched::setns(f, clone_flag(*t))
                .ctx(|| format!("setns {} namespace {}", proc_name(*t), p.display()))?;
        }
        let flags = self.create.iter().fold(CloneFlags::empty(), |a, t| a | clone_flag(*t));
        if !flags.is_empty() {
            nix::sched::unshare(flags).ctx(|| format!("unshare namespaces {:?}", self.create))?;
        }
        Ok(())
    }

    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.create.contains(&t) || self.join.iter().any(|(j, _)| *j == t)
    }
}

/// Plan for joining all of `pid`'s namespaces of the given types (exec).
pub fn join_process(pid: i32, types: &[LinuxNamespaceType]) -> NamespacePlan {
    let join = types
        .iter()
        .filter(|t| **t != LinuxNamespaceType::User)
        .map(|t| (*t, Path::new("/proc").join(pid.to_string()).join("ns").join(proc_name(*t))))
        .collect();
    NamespacePlan { join, create: Vec::new() }
}
