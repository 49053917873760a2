//! The kubelet cgroup hierarchy: `kubepods` (the node's allocatable),
//! `kubepods/burstable` and `kubepods/besteffort`, one `pod<uid>` cgroup
//! per pod beneath (Guaranteed pods directly under `kubepods`), the
//! runtime's container cgroups beneath that. Named for the cgroupfs driver
//! (`/kubepods/burstable/pod<uid>`) or the systemd driver
//! (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`;
//! Berth writes those directories itself, it does not talk to systemd).
//! Works on cgroup v1 (every mounted hierarchy) and v2 over a layout that
//! tests point at a fake tree.

use super::node::{format_cpuset, CgroupDriver, Node};
use super::qos::{self, QosClass};
use super::spec;
use berth_runtime::linux::cgroups::stats::Layout;
use berth_runtime::linux::cgroups::v1::V1Manager;
use berth_runtime::linux::cgroups::v2::V2Manager;
use berth_runtime::linux::cgroups::CgroupManager;
use oci_spec::runtime::LinuxResources;
use serde_json::json;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of one kubelet-managed cgroup; `None` leaves a value alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values {
    pub cpu_shares: Option<i64>,
    /// -1 for no quota.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    /// Bytes; -1 for no limit.
    pub memory: Option<i64>,
    /// -1 for no limit.
    pub pids: Option<i64>,
    pub cpuset: Option<String>,
}

/// A cgroup name as kubelet holds it: components below the hierarchy root.
pub type Name = Vec<String>;

/// kubelet's `ParseCgroupfsToCgroupName` / `ParseSystemdToCgroupName`.
pub fn parse_root(root: &str, driver: CgroupDriver) -> Name {
    let root = root.trim();
    if driver == CgroupDriver::Systemd && root.ends_with(".slice") {
        let base = root.trim_end_matches('/').rsplit('/').next().unwrap_or("").trim_end_matches(".slice");
        return base.split('-').filter(|p| !p.is_empty()).map(|p| p.replace('_', "-")).collect();
    }
    root.split('/').filter(|p| !p.is_empty()).map(str::to_string).collect()
}

/// The path of a name for a driver: `/a/b` (cgroupfs) or
/// `/a.slice/a-b.slice` (systemd, `-` in names escaped as `_`).
pub fn to_path(name: &[String], driver: CgroupDriver) -> String {
    match driver {
        CgroupDriver::Cgroupfs => format!("/{}", name.join("/")),
        CgroupDriver::Systemd => {
            if name.is_empty() {
                return "/".into();
            }
            let mut out = String::new();
            let mut prefix = String::new();
            for (i, part) in name.iter().enumerate() {
                if i > 0 {
                    prefix.push('-');
                }
                prefix.push_str(&part.replace('-', "_"));
                out.push('/');
                out.push_str(&prefix);
                out.push_str(".slice");
            }
            out
        }
    }
}

/// The pod cgroup tree of one node.
pub struct PodCgroups {
    layout: Layout,
    /// A hybrid v1 host's cgroup2 mount: runc (under containerd, say) makes
    /// the pod's cgroups there too, so removal clears them.
    hybrid: Option<PathBuf>,
    pub driver: CgroupDriver,
    root: Name,
    node: Node,
    period: i64,
    cfs_quota: bool,
    pids_limit: i64,
    /// Serialises changes to the tree.
    lock: Mutex<()>,
    warned: Mutex<HashSet<String>>,
    /// The burstable cgroup's shares as last written.
    burstable_shares: Mutex<Option<i64>>,
}

fn io_err(op: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cgroup {op} {}: {e}", path.display())
}

impl PodCgroups {
    /// The tree under `root` (kubelet's `cgroupRoot`) on this host.
    pub fn host(node: &Node, root: &str) -> anyhow::Result<PodCgroups> {
        let layout = Layout::host().map_err(|e| anyhow::anyhow!("finding the cgroup hierarchies: {e}"))?;
        let mut cg = Self::new(node, root, layout);
        use berth_runtime::linux::process::{hybrid_cgroup2_mounted, HYBRID_CGROUP2};
        if matches!(cg.layout, Layout::V1(_)) && hybrid_cgroup2_mounted() {
            cg.hybrid = Some(PathBuf::from(HYBRID_CGROUP2));
        }
        Ok(cg)
    }

    pub fn new(node: &Node, root: &str, layout: Layout) -> PodCgroups {
        let cfg = &node.cfg;
        PodCgroups {
            layout,
            hybrid: None,
            driver: cfg.cgroup_driver,
            root: parse_root(root, cfg.cgroup_driver),
            period: cfg.cfs_period().unwrap_or(100_000),
            cfs_quota: cfg.cpu_cfs_quota,
            pids_limit: cfg.pod_pids_limit,
            node: node.clone(),
            lock: Mutex::new(()),
            warned: Mutex::new(HashSet::new()),
            burstable_shares: Mutex::new(None),
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self.layout, Layout::V2(_))
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn name(&self, rest: &[&str]) -> Name {
        let mut n = self.root.clone();
        n.extend(rest.iter().map(|s| s.to_string()));
        n
    }

    /// The name of a QoS class's cgroup.
    pub fn qos_name(&self, class: QosClass) -> Name {
        match class {
            QosClass::Guaranteed => self.name(&["kubepods"]),
            QosClass::Burstable => self.name(&["kubepods", "burstable"]),
            QosClass::BestEffort => self.name(&["kubepods", "besteffort"]),
        }
    }

    pub fn pod_name(&self, pod: &Pod) -> Name {
        let mut n = self.qos_name(qos::class_of(pod));
        n.push(format!("pod{}", spec::pod_uid(pod)));
        n
    }

    pub fn path(&self, name: &[String]) -> String {
        to_path(name, self.driver)
    }

    /// The pod's cgroup: the runtime's `cgroup_parent` of its sandbox.
    pub fn pod_path(&self, pod: &Pod) -> String {
        self.path(&self.pod_name(pod))
    }

    /// Every directory of a cgroup (one per v1 hierarchy).
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let rel = berth_runtime::linux::cgroups::relative(Path::new(path));
        match &self.layout {
            Layout::V2(root) => vec![root.join(rel)],
            Layout::V1(hs) => hs.iter().map(|h| h.mountpoint.join(&rel)).collect(),
        }
    }

    /// The directory holding `controller`'s files of a cgroup.
    pub fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        self.layout.dir(controller, path)
    }

    fn warn_once(&self, key: String, msg: String) {
        if self.warned.lock().unwrap_or_else(|e| e.into_inner()).insert(key) {
            tracing::warn!("{msg}");
        }
    }

    /// The runtime's manager (cgroups-rs) of the cgroup at `path`.
    fn manager(&self, path: &str) -> Box<dyn CgroupManager> {
        match &self.layout {
            Layout::V1(hs) => Box::new(V1Manager::new(hs.clone(), Path::new(path))),
            Layout::V2(root) => Box::new(V2Manager::new(root.clone(), Path::new(path))),
        }
    }

    /// Creates a cgroup and its ancestors in every hierarchy (cpusets
    /// filled from the parent on v1; on v2 controllers enabled down to the
    /// containers' cgroups below it).
    fn create(&self, path: &str) -> anyhow::Result<()> {
        match &self.layout {
            Layout::V1(_) => self.manager(path).create()?,
            Layout::V2(root) => {
                let m = V2Manager::new(root.clone(), Path::new(path));
                m.create()?;
                m.delegate()?;
            }
        }
        Ok(())
    }

    /// Writes limits into a cgroup, one value at a time: a value the kernel
    /// refuses is reported and does not keep the others out. Memory goes
    /// first when it grows and last when it shrinks is the caller's business.
    pub fn apply(&self, path: &str, v: &Values) -> anyhow::Result<()> {
        let mgr = self.manager(path);
        let mut errors = Vec::new();
        let mut set = |res: serde_json::Value| {
            let res: LinuxResources = serde_json::from_value(res).expect("resources from fixed fields");
            if let Err(e) = mgr.set(&res) {
                errors.push(e.to_string());
            }
        };
        if let Some(s) = v.cpu_shares {
            set(json!({"cpu": {"shares": s}}));
        }
        if v.cpu_quota.is_some() || v.cpu_period.is_some() {
            // v2 writes both in cpu.max: the period defaults to the node's.
            let period = v.cpu_period.or(self.is_v2().then_some(self.period));
            set(json!({"cpu": {"quota": v.cpu_quota, "period": period}}));
        }
        if let Some(m) = v.memory {
            set(json!({"memory": {"limit": if m > 0 { m } else { -1 }}}));
        }
        if let Some(p) = v.pids {
            set(json!({"pids": {"limit": p}}));
        }
        if let Some(c) = &v.cpuset {
            set(json!({"cpu": {"cpus": c}}));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(errors.join("; ")))
        }
    }

    /// The kubepods cgroup's limits: the node's capacity minus what is
    /// reserved for the system (`enforceNodeAllocatable: [pods]`).
    pub fn kubepods_values(&self) -> Values {
        let n = &self.node;
        let enforce = n.cfg.enforce_node_allocatable.iter().any(|e| e == "pods");
        let cpu = n.pods_cgroup.get("cpu").copied().unwrap_or(0);
        let mut v = Values { cpu_shares: Some(qos::shares(qos::milli(cpu))), ..Default::default() };
        if enforce {
            v.memory = n.pods_cgroup.get("memory").map(|m| qos::value(*m)).filter(|m| *m > 0);
            v.pids = n.pods_cgroup.get("pid").map(|m| qos::value(*m)).filter(|m| *m > 0);
        }
        if n.pod_cpus.len() != n.all_cpus.len() {
            v.cpuset = Some(format_cpuset(&n.pod_cpus));
        }
        v
    }

    /// Creates kubepods and the QoS cgroups with their settings.
    pub fn ensure_qos(&self) -> anyhow::Result<()> {
        *self.burstable_shares.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let kubepods = self.path(&self.qos_name(QosClass::Guaranteed));
        self.create(&kubepods)?;
        if let Err(e) = self.apply(&kubepods, &self.kubepods_values()) {
            self.warn_once("kubepods".into(), format!("setting the kubepods cgroup: {e:#}"));
        }
        for class in [QosClass::Burstable, QosClass::BestEffort] {
            let p = self.path(&self.qos_name(class));
            self.create(&p)?;
        }
        let be = self.path(&self.qos_name(QosClass::BestEffort));
        if let Err(e) = self.apply(&be, &Values { cpu_shares: Some(qos::MIN_SHARES), ..Default::default() }) {
            self.warn_once("besteffort".into(), format!("setting the besteffort cgroup: {e:#}"));
        }
        Ok(())
    }

    /// Burstable's cpu shares follow the cpu requests of its pods.
    pub fn update_qos(&self, pods: &[Pod]) {
        let milli: i64 = pods.iter().filter(|p| qos::class_of(p) == QosClass::Burstable).map(|p| qos::milli(qos::pod_request(p, "cpu"))).sum();
        let shares = qos::shares(milli);
        let mut last = self.burstable_shares.lock().unwrap_or_else(|e| e.into_inner());
        if *last == Some(shares) {
            return;
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.path(&self.qos_name(QosClass::Burstable));
        if self.dirs(&p).iter().any(|d| d.exists()) {
            match self.apply(&p, &Values { cpu_shares: Some(shares), ..Default::default() }) {
                Ok(()) => *last = Some(shares),
                Err(e) => self.warn_once("burstable".into(), format!("setting the burstable cgroup: {e:#}")),
            }
        }
    }

    /// kubelet's `ResourceConfigForPod`, plus the pod pids limit.
    pub fn pod_values(&self, pod: &Pod) -> Values {
        let req = qos::pod_requests(pod);
        let lim = qos::pod_limits(pod);
        let cpu_req = qos::milli(req.get("cpu").copied().unwrap_or(0));
        let cpu_lim = qos::milli(lim.limits.get("cpu").copied().unwrap_or(0));
        let mem_lim = qos::value(lim.limits.get("memory").copied().unwrap_or(0));
        let shares = qos::shares(cpu_req);
        let quota = if self.cfs_quota { qos::quota(cpu_lim, self.period) } else { -1 };
        // No limit at all is "no quota".
        let quota = if quota == 0 { -1 } else { quota };
        let mut v = Values::default();
        match qos::class_of(pod) {
            QosClass::Guaranteed => {
                v.cpu_shares = Some(shares);
                v.cpu_quota = Some(quota);
                v.cpu_period = Some(self.period);
                v.memory = Some(if mem_lim > 0 { mem_lim } else { -1 });
            }
            QosClass::Burstable => {
                v.cpu_shares = Some(shares);
                if lim.cpu_declared {
                    v.cpu_quota = Some(quota);
                    v.cpu_period = Some(self.period);
                }
                if lim.memory_declared {
                    v.memory = Some(mem_lim);
                }
            }
            QosClass::BestEffort => v.cpu_shares = Some(qos::MIN_SHARES),
        }
        if self.pids_limit > 0 {
            v.pids = Some(self.pids_limit);
        }
        v
    }

    /// Creates (or updates) the pod's cgroup; returns its path. A value the
    /// kernel refuses is logged, not fatal.
    pub fn ensure_pod(&self, pod: &Pod) -> anyhow::Result<String> {
        let path = self.pod_path(pod);
        let parent = self.path(&self.qos_name(qos::class_of(pod)));
        if !self.dirs(&parent).iter().all(|d| d.exists()) {
            self.ensure_qos()?;
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.create(&path)?;
        if let Err(e) = self.apply(&path, &self.pod_values(pod)) {
            self.warn_once(format!("pod/{}", spec::pod_uid(pod)), format!("pod {}/{}: setting its cgroup: {e:#}", spec::pod_namespace(pod), spec::pod_name(pod)));
        }
        Ok(path)
    }

    /// Processes in a cgroup and below it (the first hierarchy that has it).
    pub fn procs(&self, path: &str) -> Vec<i32> {
        fn walk(dir: &Path, out: &mut Vec<i32>) {
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        let dir = self.dir("pids", path).or_else(|| self.dir("memory", path)).filter(|d| d.exists()).or_else(|| self.dirs(path).into_iter().find(|d| d.exists()));
        if let Some(d) = dir {
            walk(&d, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Removes a pod's cgroup (what remains of its containers' too): any
    /// process still in it is killed first, as kubelet does.
    pub fn remove_pod(&self, pod: &Pod) {
        let path = self.pod_path(pod);
        if let Err(e) = self.remove_tree(&path, true) {
            tracing::warn!(pod = %format!("{}/{}", spec::pod_namespace(pod), spec::pod_name(pod)), "removing the pod cgroup: {e:#}");
        }
    }

    /// Removes a cgroup and every cgroup below it in all hierarchies,
    /// deepest first; `kill` SIGKILLs what still runs in it.
    pub fn remove_tree(&self, path: &str, kill: bool) -> anyhow::Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if kill {
            for pid in self.procs(path) {
                if pid > 0 {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        let mut first = None;
        let mut dirs = self.dirs(path);
        if let Some(h) = &self.hybrid {
            dirs.push(h.join(berth_runtime::linux::cgroups::relative(Path::new(path))));
        }
        for d in dirs {
            if let Err(e) = remove_dirs(&d) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Pod cgroups that exist: (uid, path).
    pub fn pod_cgroups(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for class in [QosClass::Guaranteed, QosClass::Burstable, QosClass::BestEffort] {
            let name = self.qos_name(class);
            let parent = self.path(&name);
            let Some(dir) = self.dirs(&parent).into_iter().find(|d| d.exists()) else { continue };
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let base = match self.driver {
                    CgroupDriver::Cgroupfs => Some(file.as_str()),
                    CgroupDriver::Systemd => file.strip_suffix(".slice").and_then(|f| f.rsplit('-').next()),
                };
                if let Some(uid) = base.and_then(|b| b.strip_prefix("pod")) {
                    let uid = if self.driver == CgroupDriver::Systemd { uid.replace('_', "-") } else { uid.to_string() };
                    let mut n = name.clone();
                    n.push(format!("pod{uid}"));
                    out.push((uid, self.path(&n)));
                }
            }
        }
        out
    }

    /// Removes pod cgroups of pods not in `known` that no process uses.
    pub fn remove_orphans(&self, known: &HashSet<String>) {
        for (uid, path) in self.pod_cgroups() {
            if !known.contains(&uid) && self.procs(&path).is_empty() {
                tracing::info!(uid, "removing the cgroup of a pod that is gone");
                if let Err(e) = self.remove_tree(&path, false) {
                    tracing::debug!("{e:#}");
                }
            }
        }
    }

    /// Removes the QoS cgroups and kubepods once no pod is left (at the
    /// end of a standalone run).
    pub fn cleanup(&self) {
        let kubepods = self.path(&self.qos_name(QosClass::Guaranteed));
        if !self.procs(&kubepods).is_empty() {
            tracing::warn!("processes are left in {kubepods}; keeping it");
            return;
        }
        if let Err(e) = self.remove_tree(&kubepods, false) {
            tracing::warn!("removing {kubepods}: {e:#}");
        }
    }
}

/// rmdir of a directory tree of cgroups, deepest first. The kernel refuses
/// (EBUSY) while exiting tasks linger: retried for about a second.
fn remove_dirs(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir).map_err(|e| io_err("read", dir, e))?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dirs(&e.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut pause = Duration::from_micros(200);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            // A fake tree (tests) holds plain files: empty it first.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
                for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_file(f.path());
                }
                std::fs::remove_dir(dir).map_err(|e| io_err("rmdir", dir, e))?;
                return Ok(());
            }
            Err(e) => return Err(io_err("rmdir", dir, e)),
        }
    }
}

#[allow(clippy::unnecessary_cast)]
fn is_cgroupfs(p: &Path) -> bool {
    const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    nix::sys::statfs::statfs(p).map(|s| matches!(s.filesystem_type().0 as i64, CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC)).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::super::node::{Machine, NodeConfig};
    use super::super::qos::NANO;
    use super::*;
    use berth_runtime::linux::cgroups::v1::Hierarchy;
    use berth_runtime::linux::cgroups::v2::shares_to_weight;

    fn node(cfg: NodeConfig) -> Node {
        let mut capacity = qos::List::new();
        capacity.insert("cpu".into(), 2 * NANO);
        capacity.insert("memory".into(), (4i128 << 30) * NANO);
        capacity.insert("pods".into(), 110 * NANO);
        capacity.insert("pid".into(), 32768 * NANO);
        Node::new("n", cfg, Machine { capacity, cpus: vec![0, 1] })
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
    }

    const GUARANTEED: &str = "metadata: {name: g, uid: 1111-22}\nspec: {containers: [{name: c, image: i, resources: {limits: {cpu: 500m, memory: 64Mi}}}]}\n";
    const BURSTABLE: &str =
        "metadata: {name: b, uid: 3333-44}\nspec: {overhead: {cpu: 100m}, containers: [{name: c, image: i, resources: {requests: {cpu: 250m, memory: 32Mi}, limits: {memory: 64Mi}}}]}\n";
    const BEST_EFFORT: &str = "metadata: {name: e, uid: 5555-66}\nspec: {containers: [{name: c, image: i}]}\n";

    #[test]
    fn names_for_both_drivers() {
        let n = |s: &str| s.to_string();
        assert_eq!(to_path(&[n("kubepods"), n("burstable"), n("pod12-34")], CgroupDriver::Cgroupfs), "/kubepods/burstable/pod12-34");
        assert_eq!(
            to_path(&[n("kubepods"), n("burstable"), n("pod12-34")], CgroupDriver::Systemd),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"
        );
        assert_eq!(parse_root("/berth/x", CgroupDriver::Cgroupfs), vec![n("berth"), n("x")]);
        assert_eq!(parse_root("/", CgroupDriver::Systemd), Vec::<String>::new());
        assert_eq!(parse_root("/a.slice/a-b_c.slice", CgroupDriver::Systemd), vec![n("a"), n("b-c")]);
        let cg = PodCgroups::new(&node(NodeConfig { cgroup_driver: CgroupDriver::Systemd, ..Default::default() }), "/berth", Layout::V2("/nonexistent".into()));
        assert_eq!(cg.pod_path(&pod(BURSTABLE)), "/berth.slice/berth-kubepods.slice/berth-kubepods-burstable.slice/berth-kubepods-burstable-pod3333_44.slice");
        let cg = PodCgroups::new(&node(NodeConfig::default()), "/berth", Layout::V2("/nonexistent".into()));
        assert_eq!(cg.pod_path(&pod(GUARANTEED)), "/berth/kubepods/pod1111-22");
        assert_eq!(cg.pod_path(&pod(BEST_EFFORT)), "/berth/kubepods/besteffort/pod5555-66");
    }

    #[test]
    fn pod_values_per_class() {
        let cfg = NodeConfig { pod_pids_limit: 100, ..Default::default() };
        let cg = PodCgroups::new(&node(cfg), "/r", Layout::V2("/nonexistent".into()));
        assert_eq!(
            cg.pod_values(&pod(GUARANTEED)),
            Values { cpu_shares: Some(512), cpu_quota: Some(50_000), cpu_period: Some(100_000), memory: Some(64 << 20), pids: Some(100), cpuset: None }
        );
        // Requests + overhead for shares; memory limit declared, cpu not.
        assert_eq!(cg.pod_values(&pod(BURSTABLE)), Values { cpu_shares: Some(358), memory: Some(64 << 20), pids: Some(100), ..Default::default() });
        assert_eq!(cg.pod_values(&pod(BEST_EFFORT)), Values { cpu_shares: Some(2), pids: Some(100), ..Default::default() });
        let nq = PodCgroups::new(&node(NodeConfig { cpu_cfs_quota: false, cpu_cfs_quota_period: "50ms".into(), ..Default::default() }), "/r", Layout::V2("/x".into()));
        let v = nq.pod_values(&pod(GUARANTEED));
        assert_eq!((v.cpu_quota, v.cpu_period, v.pids), (Some(-1), Some(50_000), None));
    }

    #[test]
    fn v2_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::write(r.join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n").unwrap();
        std::fs::write(r.join("cgroup.subtree_control"), "").unwrap();
        let cfg = NodeConfig { system_reserved: [("memory".to_string(), "1Gi".to_string())].into(), reserved_system_cpus: "0".into(), pod_pids_limit: 64, ..Default::default() };
        let cg = PodCgroups::new(&node(cfg), "/berth", Layout::V2(r.to_path_buf()));
        cg.ensure_qos().unwrap();
        assert_eq!(read(r.join("cgroup.subtree_control")), "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc");
        assert_eq!(read(r.join("berth/kubepods/cgroup.subtree_control")), "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc");
        // kubepods: 1 CPU left (shares 1024 → weight 39), memory minus reserved, the pod cpuset.
        assert_eq!(read(r.join("berth/kubepods/cpu.weight")), "39");
        assert_eq!(read(r.join("berth/kubepods/memory.max")), (3i64 << 30).to_string());
        assert_eq!(read(r.join("berth/kubepods/pids.max")), "32768");
        assert_eq!(read(r.join("berth/kubepods/cpuset.cpus")), "1");
        assert_eq!(read(r.join("berth/kubepods/besteffort/cpu.weight")), "1");
        let g = pod(GUARANTEED);
        // The kernel fills cpu.max of a new cgroup; cgroups-rs reads it back.
        std::fs::create_dir_all(r.join("berth/kubepods/pod1111-22")).unwrap();
        std::fs::write(r.join("berth/kubepods/pod1111-22/cpu.max"), "max 100000\n").unwrap();
        let path = cg.ensure_pod(&g).unwrap();
        assert_eq!(path, "/berth/kubepods/pod1111-22");
        let d = r.join("berth/kubepods/pod1111-22");
        assert_eq!(read(d.join("cpu.max")), "50000 100000");
        assert_eq!(read(d.join("memory.max")), (64 << 20).to_string());
        assert_eq!(read(d.join("pids.max")), "64");
        assert_eq!(read(d.join("cpu.weight")), shares_to_weight(512).to_string());
        assert_eq!(read(d.join("cgroup.subtree_control")), "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc", "containers get controllers");
        let b = pod(BURSTABLE);
        cg.ensure_pod(&b).unwrap();
        assert_eq!(read(r.join("berth/kubepods/burstable/pod3333-44/memory.max")), (64 << 20).to_string());
        assert!(!r.join("berth/kubepods/burstable/pod3333-44/cpu.max").exists(), "no cpu limit declared");
        cg.update_qos(&[g.clone(), b.clone()]);
        assert_eq!(read(r.join("berth/kubepods/burstable/cpu.weight")), shares_to_weight(qos::shares(350) as u64).to_string());
        let mut uids: Vec<String> = cg.pod_cgroups().into_iter().map(|(u, _)| u).collect();
        uids.sort();
        assert_eq!(uids, vec!["1111-22".to_string(), "3333-44".to_string()]);
        cg.remove_orphans(&["1111-22".to_string()].into());
        assert!(!r.join("berth/kubepods/burstable/pod3333-44").exists());
        cg.remove_pod(&g);
        assert!(!d.exists());
        cg.cleanup();
        assert!(!r.join("berth/kubepods").exists());
    }

    #[test]
    fn v1_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let mk = |name: &str| {
            std::fs::create_dir_all(r.join(name)).unwrap();
            Hierarchy { mountpoint: r.join(name), controllers: name.split(',').map(str::to_string).collect() }
        };
        let hs = vec![mk("cpu"), mk("memory"), mk("pids"), mk("cpuset"), mk("freezer"), mk("devices")];
        std::fs::write(r.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(r.join("cpuset/cpuset.mems"), "0\n").unwrap();
        // The kernel makes new cpuset cgroups with empty cpus and mems.
        for d in ["t", "t/kubepods", "t/kubepods/burstable", "t/kubepods/besteffort", "t/kubepods/burstable/pod3333-44"] {
            let d = r.join("cpuset").join(d);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpuset.cpus"), "").unwrap();
            std::fs::write(d.join("cpuset.mems"), "").unwrap();
        }
        let cg = PodCgroups::new(&node(NodeConfig::default()), "/t", Layout::V1(hs));
        let path = cg.ensure_pod(&pod(BURSTABLE)).unwrap();
        assert_eq!(path, "/t/kubepods/burstable/pod3333-44");
        assert_eq!(read(r.join("cpu/t/kubepods/cpu.shares")), "2048");
        assert_eq!(read(r.join("memory/t/kubepods/memory.limit_in_bytes")), (4i64 << 30).to_string());
        assert_eq!(read(r.join("cpu/t/kubepods/besteffort/cpu.shares")), "2");
        assert_eq!(read(r.join("cpu/t/kubepods/burstable/pod3333-44/cpu.shares")), "358");
        assert_eq!(read(r.join("memory/t/kubepods/burstable/pod3333-44/memory.limit_in_bytes")), (64 << 20).to_string());
        assert_eq!(read(r.join("cpuset/t/kubepods/burstable/pod3333-44/cpuset.cpus")), "0-1", "cpusets are filled from the parent");
        assert!(r.join("freezer/t/kubepods/burstable/pod3333-44").is_dir(), "every hierarchy");
        // Pod cgroups keep their parent's device rules (v1 refuses changes
        // to a cgroup with children).
        assert!(std::fs::read_dir(r.join("devices/t/kubepods/burstable/pod3333-44")).unwrap().next().is_none());
        cg.remove_pod(&pod(BURSTABLE));
        assert!(!r.join("cpu/t/kubepods/burstable/pod3333-44").exists());
        assert!(!r.join("freezer/t/kubepods/burstable/pod3333-44").exists());
        cg.cleanup();
        assert!(!r.join("memory/t/kubepods").exists());
    }
}
