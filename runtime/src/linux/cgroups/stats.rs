//! Reading usage statistics of a cgroup (CPU, memory, swap, pids) from
//! cgroup v1 or v2 files. Missing files give `None`, not errors: a
//! controller may be absent, or the cgroup gone between two reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::relative;
use super::v1::Hierarchy;

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone)]
pub enum Layout {
    /// One hierarchy per (group of) controllers.
    V1(Vec<Hierarchy>),
    /// The unified hierarchy's root.
    V2(PathBuf),
}

/// Memory usage of a cgroup, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage: u64,
    /// Usage minus inactive file pages (kubelet's and cadvisor's definition).
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
    /// Swap in use, when the kernel accounts it.
    pub swap_usage: Option<u64>,
    /// Swap limit (swap alone, not memory+swap); `None` when unlimited or unknown.
    pub swap_limit: Option<u64>,
}

/// A snapshot of a cgroup's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    pub memory: Option<MemoryStats>,
    /// Number of processes (pids.current, or the cgroup.procs of the whole subtree).
    pub processes: Option<u64>,
}

/// Limits at or above this are "unlimited" on v1 (the kernel reports
/// PAGE_COUNTER_MAX rounded to pages, about 2^63).
const V1_UNLIMITED: u64 = 1 << 62;

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `max` → None, a number → Some.
fn read_max(p: &Path) -> Option<Option<u64>> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

/// `key value` lines (memory.stat, cpu.stat).
pub fn parse_flat_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn read_keyed(p: &Path) -> Option<HashMap<String, u64>> {
    Some(parse_flat_keyed(&std::fs::read_to_string(p).ok()?))
}

/// Processes in `dir` and every cgroup below it.
fn count_procs(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    let mut n = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            n += count_procs(&e.path()).unwrap_or(0);
        }
    }
    Some(n)
}

impl Layout {
    /// This host's layout.
    pub fn host() -> super::CgroupResult<Layout> {
        if super::is_unified() {
            Ok(Layout::V2(PathBuf::from("/sys/fs/cgroup")))
        } else {
            Ok(Layout::V1(super::v1::host_hierarchies()?))
        }
    }

    /// The directory of cgroup `path` in the hierarchy of `controller`
    /// (the unified directory on v2).
    pub fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        let rel = relative(Path::new(path));
        match self {
            Layout::V2(root) => Some(root.join(rel)),
            Layout::V1(hs) => hs.iter().find(|h| h.controllers.iter().any(|c| c == controller)).map(|h| h.mountpoint.join(rel)),
        }
    }

    /// Usage of cgroup `path` (a cgroupfs path like `/berth/<id>`).
    pub fn stats(&self, path: &str) -> CgroupStats {
        match self {
            Layout::V1(_) => self.stats_v1(path),
            Layout::V2(_) => self.stats_v2(path),
        }
    }

    fn stats_v1(&self, path: &str) -> CgroupStats {
        let cpu_usage_ns = self.dir("cpuacct", path).and_then(|d| read_u64(&d.join("cpuacct.usage")));
        let memory = self.dir("memory", path).and_then(|d| {
            let usage = read_u64(&d.join("memory.usage_in_bytes"))?;
            let stat = read_keyed(&d.join("memory.stat")).unwrap_or_default();
            let get = |k: &str| stat.get(&format!("total_{k}")).or_else(|| stat.get(k)).copied().unwrap_or(0);
            let limit = read_u64(&d.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
            let memsw_usage = read_u64(&d.join("memory.memsw.usage_in_bytes"));
            let memsw_limit = read_u64(&d.join("memory.memsw.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
            Some(MemoryStats {
                usage,
                working_set: usage.saturating_sub(get("inactive_file")),
                rss: get("rss"),
                page_faults: get("pgfault"),
                major_page_faults: get("pgmajfault"),
                limit,
                swap_usage: memsw_usage.map(|m| m.saturating_sub(usage)),
                swap_limit: memsw_limit.map(|m| m.saturating_sub(limit.unwrap_or(0))),
            })
        });
        let processes = self
            .dir("pids", path)
            .and_then(|d| read_u64(&d.join("pids.current")))
            .or_else(|| self.dir("memory", path).and_then(|d| count_procs(&d)));
        CgroupStats { cpu_usage_ns, memory, processes }
    }

    fn stats_v2(&self, path: &str) -> CgroupStats {
        let Some(d) = self.dir("", path) else { return CgroupStats::default() };
        let cpu_usage_ns = read_keyed(&d.join("cpu.stat")).and_then(|s| s.get("usage_usec").map(|u| u * 1000));
        let memory = read_u64(&d.join("memory.current")).map(|usage| {
            let stat = read_keyed(&d.join("memory.stat")).unwrap_or_default();
            let get = |k: &str| stat.get(k).copied().unwrap_or(0);
            MemoryStats {
                usage,
                working_set: usage.saturating_sub(get("inactive_file")),
                rss: get("anon"),
                page_faults: get("pgfault"),
                major_page_faults: get("pgmajfault"),
                limit: read_max(&d.join("memory.max")).flatten(),
                swap_usage: read_u64(&d.join("memory.swap.current")),
                swap_limit: read_max(&d.join("memory.swap.max")).flatten(),
            }
        });
        let processes = read_u64(&d.join("pids.current")).or_else(|| count_procs(&d));
        CgroupStats { cpu_usage_ns, memory, processes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v1_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let h = |name: &str, ctls: &[&str]| Hierarchy { mountpoint: r.join(name), controllers: ctls.iter().map(|s| s.to_string()).collect() };
        let layout = Layout::V1(vec![h("cpu", &["cpu"]), h("cpuacct", &["cpuacct"]), h("memory", &["memory"]), h("pids", &["pids"])]);
        write(r, "cpuacct/pod/c1/cpuacct.usage", "123456789\n");
        write(r, "memory/pod/c1/memory.usage_in_bytes", "30000000\n");
        write(
            r,
            "memory/pod/c1/memory.stat",
            "cache 100\nrss 5\ninactive_file 7\ntotal_cache 4000000\ntotal_rss 25000000\ntotal_inactive_file 1000000\ntotal_pgfault 900\ntotal_pgmajfault 3\n",
        );
        write(r, "memory/pod/c1/memory.limit_in_bytes", "9223372036854771712\n");
        write(r, "memory/pod/c1/memory.memsw.usage_in_bytes", "30004096\n");
        write(r, "memory/pod/c1/memory.memsw.limit_in_bytes", "9223372036854771712\n");
        write(r, "pids/pod/c1/pids.current", "4\n");
        let s = layout.stats("/pod/c1");
        assert_eq!(s.cpu_usage_ns, Some(123456789));
        let m = s.memory.unwrap();
        assert_eq!(
            m,
            MemoryStats {
                usage: 30_000_000,
                working_set: 29_000_000,
                rss: 25_000_000,
                page_faults: 900,
                major_page_faults: 3,
                limit: None,
                swap_usage: Some(4096),
                swap_limit: None,
            }
        );
        assert_eq!(s.processes, Some(4));

        // A limit; no pids controller: processes counted from cgroup.procs, recursively.
        write(r, "memory/pod/c1/memory.limit_in_bytes", "104857600\n");
        write(r, "memory/pod/c1/memory.memsw.limit_in_bytes", "104857600\n");
        write(r, "memory/pod/cgroup.procs", "10\n");
        write(r, "memory/pod/c1/cgroup.procs", "11\n12\n");
        write(r, "memory/pod/memory.usage_in_bytes", "1\n");
        let layout = Layout::V1(vec![h("cpuacct", &["cpuacct"]), h("memory", &["memory"])]);
        let m = layout.stats("/pod/c1").memory.unwrap();
        assert_eq!((m.limit, m.swap_limit), (Some(104_857_600), Some(0)));
        assert_eq!(layout.stats("/pod").processes, Some(3));
        // Missing cgroup: nothing, no panic.
        assert_eq!(layout.stats("/gone"), CgroupStats { processes: None, ..Default::default() });
    }

    #[test]
    fn v2_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        write(r, "pod/c1/cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 0\n");
        write(r, "pod/c1/memory.current", "20000000\n");
        write(r, "pod/c1/memory.stat", "anon 15000000\nfile 5000000\ninactive_file 3000000\nactive_file 2000000\npgfault 77\npgmajfault 2\n");
        write(r, "pod/c1/memory.max", "max\n");
        write(r, "pod/c1/memory.swap.current", "0\n");
        write(r, "pod/c1/memory.swap.max", "max\n");
        write(r, "pod/c1/pids.current", "2\n");
        let layout = Layout::V2(r.to_path_buf());
        let s = layout.stats("/pod/c1");
        assert_eq!(s.cpu_usage_ns, Some(2_500_000));
        assert_eq!(
            s.memory.unwrap(),
            MemoryStats {
                usage: 20_000_000,
                working_set: 17_000_000,
                rss: 15_000_000,
                page_faults: 77,
                major_page_faults: 2,
                limit: None,
                swap_usage: Some(0),
                swap_limit: None,
            }
        );
        assert_eq!(s.processes, Some(2));
        write(r, "pod/c1/memory.max", "52428800\n");
        write(r, "pod/c1/memory.swap.max", "0\n");
        let m = layout.stats("pod/c1").memory.unwrap();
        assert_eq!((m.limit, m.swap_limit), (Some(52_428_800), Some(0)));
        // No pids controller: recursive cgroup.procs.
        write(r, "pod/cgroup.procs", "");
        write(r, "pod/c1/cgroup.procs", "5\n6\n");
        assert_eq!(layout.stats("/pod").processes, Some(2));
        assert_eq!(layout.stats("/gone"), CgroupStats::default());
    }
}
