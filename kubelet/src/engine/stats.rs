//! Usage samples of the node and its pods: pods and containers from the
//! CRI stats RPCs (so any runtime works), the node from /proc and the
//! filesystems of the node's root and the runtime's images. CPU rates are
//! taken over the samples of the last ten seconds or so.

use super::spec;
use super::Shared;
use cri_proto::v1 as cri;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Usage of one container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    pub name: String,
    /// Nanocores over the sampling window; `None` until two samples exist.
    pub cpu_nano_cores: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    /// Writable layer bytes.
    pub rootfs_bytes: Option<u64>,
}

/// Usage of one pod.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub cpu_nano_cores: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    pub processes: Option<u64>,
    pub containers: Vec<ContainerUsage>,
}

/// A filesystem's size and room.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FsUsage {
    pub path: String,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// Usage of the node.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    pub cpu_nano_cores: Option<u64>,
    pub memory_capacity_bytes: u64,
    /// Memory in use minus inactive file pages (kubelet's working set).
    pub memory_working_set_bytes: u64,
    pub nodefs: Option<FsUsage>,
    pub imagefs: Option<FsUsage>,
    pub max_pid: i64,
    pub processes: i64,
}

/// One look at the node and its pods.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// The window CPU rates were taken over, seconds.
    pub window: f64,
    pub node: NodeUsage,
    pub pods: Vec<PodUsage>,
}

/// Cumulative CPU counters of one sample.
struct Raw {
    at: SystemTime,
    node_cpu_ns: Option<u64>,
    /// By pod uid and by container id.
    pods: HashMap<String, u64>,
    containers: HashMap<String, u64>,
}

/// How far back CPU rates look.
const WINDOW: Duration = Duration::from_secs(10);

/// The sampler: keeps recent raw samples and the latest snapshot.
#[derive(Default)]
pub struct Stats {
    raw: Mutex<VecDeque<Raw>>,
    latest: Mutex<Option<Snapshot>>,
}

/// Kernel CPU time of the whole machine (not idle or iowait), in ns.
pub fn node_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&text)
}

pub fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    Some(busy * 1_000_000_000 / hz)
}

/// (capacity, working set) from /proc/meminfo text.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    let total = get("MemTotal");
    let usage = total.saturating_sub(get("MemFree"));
    (total, usage.saturating_sub(get("Inactive(file)")))
}

fn fs_usage(path: &Path) -> Option<FsUsage> {
    let (capacity_bytes, available_bytes, inodes, inodes_free) = super::node::fs_stats(path)?;
    Some(FsUsage { path: path.display().to_string(), capacity_bytes, available_bytes, inodes, inodes_free })
}

fn u64v(v: &Option<cri::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

impl Stats {
    /// The latest snapshot, if any was taken.
    pub fn latest(&self) -> Option<Snapshot> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes a sample through the CRI and /proc, computes rates over the
    /// window and stores the snapshot.
    pub async fn sample(&self, shared: &Shared) -> anyhow::Result<Snapshot> {
        let mut rt = shared.cri.runtime.clone();
        let list = rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default()).await?.into_inner().stats;
        let imagefs = imagefs_path(shared).await;
        let at = SystemTime::now();
        let (mem_cap, mem_ws) = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
        let mut raw = Raw { at, node_cpu_ns: node_cpu_ns(), pods: HashMap::new(), containers: HashMap::new() };
        let mut pods = Vec::new();
        for s in &list {
            let a = s.attributes.clone().unwrap_or_default();
            let meta = a.metadata.unwrap_or_default();
            let uid = a.labels.get(spec::LABEL_POD_UID).cloned().unwrap_or(meta.uid.clone());
            let linux = s.linux.clone().unwrap_or_default();
            if let Some(c) = linux.cpu.as_ref().and_then(|c| u64v(&c.usage_core_nano_seconds)) {
                raw.pods.insert(uid.clone(), c);
            }
            let mut containers = Vec::new();
            for c in &linux.containers {
                let ca = c.attributes.clone().unwrap_or_default();
                if let Some(n) = c.cpu.as_ref().and_then(|c| u64v(&c.usage_core_nano_seconds)) {
                    raw.containers.insert(ca.id.clone(), n);
                }
                containers.push((
                    ca.id.clone(),
                    ContainerUsage {
                        name: ca.metadata.map(|m| m.name).unwrap_or_default(),
                        cpu_nano_cores: None,
                        memory_working_set_bytes: c.memory.as_ref().and_then(|m| u64v(&m.working_set_bytes)),
                        rootfs_bytes: c.writable_layer.as_ref().and_then(|w| u64v(&w.used_bytes)),
                    },
                ));
            }
            pods.push((
                uid.clone(),
                containers,
                PodUsage {
                    namespace: meta.namespace,
                    name: meta.name,
                    uid,
                    cpu_nano_cores: None,
                    memory_working_set_bytes: linux.memory.as_ref().and_then(|m| u64v(&m.working_set_bytes)),
                    processes: linux.process.as_ref().and_then(|p| u64v(&p.process_count)),
                    containers: Vec::new(),
                },
            ));
        }
        let nodefs_path = std::iter::successors(Some(shared.cfg.pods_root.as_path()), |p| p.parent()).find(|p| p.exists()).unwrap_or(Path::new("/")).to_path_buf();
        let procs = nix::sys::sysinfo::sysinfo().map(|s| s.process_count() as i64).unwrap_or(0);
        let mut node = NodeUsage {
            cpu_nano_cores: None,
            memory_capacity_bytes: mem_cap,
            memory_working_set_bytes: mem_ws,
            nodefs: fs_usage(&nodefs_path),
            imagefs: imagefs.as_deref().and_then(fs_usage),
            max_pid: super::node::max_pid(),
            processes: procs,
        };
        // Rates against the oldest sample within the window.
        let mut q = self.raw.lock().unwrap_or_else(|e| e.into_inner());
        while q.len() > 1 && q.front().is_some_and(|f| at.duration_since(f.at).unwrap_or_default() > WINDOW) {
            q.pop_front();
        }
        let base = q.front();
        let dt = base.map(|b| at.duration_since(b.at).unwrap_or_default()).unwrap_or_default();
        let rate = |now: Option<u64>, then: Option<u64>| -> Option<u64> {
            let (n, t) = (now?, then?);
            (dt.as_nanos() > 0 && n >= t).then(|| ((n - t) as u128 * 1_000_000_000 / dt.as_nanos()) as u64)
        };
        if let Some(b) = base {
            node.cpu_nano_cores = rate(raw.node_cpu_ns, b.node_cpu_ns);
        }
        let mut out = Vec::new();
        for (uid, containers, mut p) in pods {
            if let Some(b) = base {
                p.cpu_nano_cores = rate(raw.pods.get(&uid).copied(), b.pods.get(&uid).copied());
            }
            for (id, mut c) in containers {
                if let Some(b) = base {
                    c.cpu_nano_cores = rate(raw.containers.get(&id).copied(), b.containers.get(&id).copied());
                }
                p.containers.push(c);
            }
            p.containers.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(p);
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        q.push_back(raw);
        drop(q);
        let snap = Snapshot {
            timestamp: at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
            window: dt.as_secs_f64(),
            node,
            pods: out,
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap.clone());
        Ok(snap)
    }
}

/// The mountpoint of the runtime's image filesystem (CRI ImageFsInfo).
async fn imagefs_path(shared: &Shared) -> Option<PathBuf> {
    let mut img = shared.cri.images.clone();
    let r = img.image_fs_info(cri::ImageFsInfoRequest::default()).await.ok()?.into_inner();
    r.image_filesystems.first().and_then(|f| f.fs_id.as_ref()).map(|f| PathBuf::from(&f.mountpoint)).filter(|p| p.exists())
}

/// Usage by pod uid.
pub fn by_uid(s: &Snapshot) -> BTreeMap<String, PodUsage> {
    s.pods.iter().map(|p| (p.uid.clone(), p.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files() {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
        let ns = parse_proc_stat("cpu  100 5 50 9000 20 1 2 3 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(ns, (100 + 5 + 50 + 1 + 2 + 3) * 1_000_000_000 / hz);
        let (cap, ws) = parse_meminfo("MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  300 kB\n");
        assert_eq!((cap, ws), (1_024_000, (800 - 300) * 1024));
    }
}
