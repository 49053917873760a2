//! The node's resource settings — a subset of kubelet's
//! `KubeletConfiguration` (YAML or JSON, `--kubelet-config`), overridable by
//! kubelet's flag names — and what follows from them: capacity,
//! allocatable, labels, taints, eviction thresholds.

use super::qos::{self, List, NANO};
use crate::manifest::quantity::ParsedQuantity;
use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// kubelet's cgroup drivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

/// Node settings, by `KubeletConfiguration`'s field names. Berth's own
/// additions: `nodeLabels`, `housekeepingInterval`, `evictionMonitoringPeriod`,
/// `simulatedSignals`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Root of the kubelet cgroup hierarchy ("": the runtime's cgroup parent).
    pub cgroup_root: String,
    pub cgroup_driver: CgroupDriver,
    /// kubepods, burstable and besteffort cgroups, one cgroup per pod.
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    /// Enforce cpu limits with CFS quota.
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: bool,
    /// CFS period, e.g. `100ms`.
    #[serde(rename = "cpuCFSQuotaPeriod")]
    pub cpu_cfs_quota_period: String,
    /// Only `none` (shared CPUs).
    pub cpu_manager_policy: String,
    /// CPUs kept from pods (a cpuset list, e.g. `0` or `0-1,4`).
    #[serde(rename = "reservedSystemCPUs")]
    pub reserved_system_cpus: String,
    pub max_pods: i64,
    /// pids.max of each pod cgroup; -1 for no limit.
    pub pod_pids_limit: i64,
    pub system_reserved: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    pub enforce_node_allocatable: Vec<String>,
    /// e.g. `memory.available: 100Mi`, `nodefs.available: 10%`.
    pub eviction_hard: BTreeMap<String, String>,
    pub eviction_soft: BTreeMap<String, String>,
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    pub eviction_minimum_reclaim: BTreeMap<String, String>,
    pub eviction_pressure_transition_period: String,
    pub eviction_max_pod_grace_period: i64,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: i32,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: i32,
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: String,
    pub register_with_taints: Vec<Taint>,
    pub node_labels: BTreeMap<String, String>,
    /// How often usage is sampled, and eviction and garbage collection looked at.
    pub housekeeping_interval: String,
    /// How often unused images are looked for (kubelet: 5m).
    #[serde(rename = "imageGCPeriod")]
    pub image_gc_period: String,
    /// Eviction signal values that replace the observed ones, for tests and
    /// demos: `memory.available: 50Mi`.
    pub simulated_signals: BTreeMap<String, String>,
    /// A file of `signal=value` lines, read every round, that replace
    /// observed values while it exists.
    pub simulated_signals_file: String,
}

/// kubelet's default hard eviction thresholds on Linux.
pub fn default_eviction_hard() -> BTreeMap<String, String> {
    [("memory.available", "100Mi"), ("nodefs.available", "10%"), ("nodefs.inodesFree", "5%"), ("imagefs.available", "15%"), ("imagefs.inodesFree", "5%")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            api_version: None,
            kind: None,
            cgroup_root: String::new(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroups_per_qos: true,
            cpu_cfs_quota: true,
            cpu_cfs_quota_period: "100ms".into(),
            cpu_manager_policy: "none".into(),
            reserved_system_cpus: String::new(),
            max_pods: 110,
            pod_pids_limit: -1,
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            enforce_node_allocatable: vec!["pods".into()],
            eviction_hard: default_eviction_hard(),
            eviction_soft: BTreeMap::new(),
            eviction_soft_grace_period: BTreeMap::new(),
            eviction_minimum_reclaim: BTreeMap::new(),
            eviction_pressure_transition_period: "5m".into(),
            eviction_max_pod_grace_period: 0,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: "2m".into(),
            register_with_taints: Vec::new(),
            node_labels: BTreeMap::new(),
            housekeeping_interval: "10s".into(),
            image_gc_period: "5m".into(),
            simulated_signals: BTreeMap::new(),
            simulated_signals_file: String::new(),
        }
    }
}

/// Parses a Go duration (`100ms`, `1m30s`, `2h`, `0`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n_end == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: f64 = rest[..n_end].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        rest = &rest[u_end..];
        total += n * unit;
    }
    Ok(Duration::from_secs_f64(total))
}

/// A parsed cpuset list (`0-2,5`).
pub fn parse_cpuset(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.trim().parse().map_err(|_| format!("invalid cpu list {s:?}"))?, b.trim().parse().map_err(|_| format!("invalid cpu list {s:?}"))?);
        if b < a {
            return Err(format!("invalid cpu list {s:?}"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Formats CPUs as a cpuset list.
pub fn format_cpuset(cpus: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

/// A threshold's value: an absolute quantity or a share of capacity.
#[derive(Clone, Debug, PartialEq)]
pub enum ThresholdValue {
    Quantity(i128),
    Percentage(f64),
}

impl ThresholdValue {
    /// The amount for a capacity (both in nano-units).
    pub fn amount(&self, capacity: i128) -> i128 {
        match self {
            ThresholdValue::Quantity(q) => *q,
            ThresholdValue::Percentage(p) => ((capacity as f64) * p) as i128,
        }
    }
}

/// An eviction threshold (`signal < value`).
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: String,
    pub value: ThresholdValue,
    /// Zero for hard thresholds.
    pub grace_period: Duration,
    pub min_reclaim: Option<ThresholdValue>,
}

pub const SIGNALS: &[&str] =
    &["memory.available", "allocatableMemory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available", "imagefs.inodesFree", "pid.available"];

fn parse_threshold_value(signal: &str, v: &str) -> Result<ThresholdValue, String> {
    let v = v.trim();
    if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| format!("eviction threshold {signal}: invalid percentage {v:?}"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("eviction threshold {signal}: percentage {v:?} must be within 0% and 100%"));
        }
        return Ok(ThresholdValue::Percentage(p / 100.0));
    }
    let q = ParsedQuantity::parse(v).map_err(|e| format!("eviction threshold {signal}: {v:?}: {e}"))?;
    if q.is_negative() {
        return Err(format!("eviction threshold {signal}: {v:?} must not be negative"));
    }
    Ok(ThresholdValue::Quantity(q.nanos()))
}

fn check_signal(s: &str) -> Result<(), String> {
    if SIGNALS.contains(&s) {
        Ok(())
    } else {
        Err(format!("unknown eviction signal {s:?} (known: {})", SIGNALS.join(", ")))
    }
}

/// Splits `a=1,b=2` (flag syntax) into pairs.
pub fn parse_pairs(s: &str, sep: char) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for kv in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = kv.split_once(sep).ok_or_else(|| format!("{kv:?} is not of the form key{sep}value"))?;
        m.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(m)
}

/// Parses `key=value:Effect` taints (`--register-with-taints`).
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, String> {
    let mut out = Vec::new();
    for t in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kv, effect) = t.rsplit_once(':').ok_or_else(|| format!("taint {t:?}: expected key[=value]:Effect"))?;
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        out.push(Taint { key: k.into(), value: v, effect: effect.into(), time_added: None });
    }
    Ok(out)
}

impl NodeConfig {
    /// The simulated signals now: the fixed ones, then the file's.
    pub fn simulated(&self) -> BTreeMap<String, String> {
        let mut m = self.simulated_signals.clone();
        if !self.simulated_signals_file.is_empty() {
            if let Ok(text) = std::fs::read_to_string(&self.simulated_signals_file) {
                for l in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                    if let Some((k, v)) = l.split_once('=') {
                        if check_signal(k.trim()).is_ok() && ParsedQuantity::parse(v.trim()).is_ok() {
                            m.insert(k.trim().to_string(), v.trim().to_string());
                        } else {
                            tracing::warn!(file = %self.simulated_signals_file, line = l, "ignoring a bad simulated signal");
                        }
                    }
                }
            }
        }
        m
    }

    /// Reads a `KubeletConfiguration` file; unknown fields are errors.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading kubelet config {}: {e}", path.display()))?;
        let cfg: NodeConfig = serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("kubelet config {}: {e}", path.display()))?;
        cfg.validate().map_err(|e| anyhow::anyhow!("kubelet config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(k) = self.kind.as_deref().filter(|k| *k != "KubeletConfiguration") {
            return Err(format!("kind: expected KubeletConfiguration, got {k:?}"));
        }
        if self.cpu_manager_policy != "none" {
            return Err(format!("cpuManagerPolicy: {:?} is not supported (only \"none\")", self.cpu_manager_policy));
        }
        let period = self.cfs_period().map_err(|e| format!("cpuCFSQuotaPeriod: {e}"))?;
        if !(1000..=1_000_000).contains(&period) {
            return Err("cpuCFSQuotaPeriod: must be between 1ms and 1s".into());
        }
        parse_cpuset(&self.reserved_system_cpus).map_err(|e| format!("reservedSystemCPUs: {e}"))?;
        if self.max_pods < 1 {
            return Err("maxPods: must be at least 1".into());
        }
        for (field, m) in [("systemReserved", &self.system_reserved), ("kubeReserved", &self.kube_reserved)] {
            for (k, v) in m {
                if !["cpu", "memory", "ephemeral-storage", "pid"].contains(&k.as_str()) {
                    return Err(format!("{field}: unknown resource {k:?}"));
                }
                let q = ParsedQuantity::parse(v).map_err(|e| format!("{field}.{k}: {v:?}: {e}"))?;
                if q.is_negative() {
                    return Err(format!("{field}.{k}: must not be negative"));
                }
            }
        }
        for e in &self.enforce_node_allocatable {
            if !["pods", "none", "system-reserved", "kube-reserved"].contains(&e.as_str()) {
                return Err(format!("enforceNodeAllocatable: unknown value {e:?}"));
            }
        }
        self.thresholds()?;
        for (k, v) in &self.simulated_signals {
            check_signal(k).map_err(|e| format!("simulatedSignals: {e}"))?;
            ParsedQuantity::parse(v).map_err(|e| format!("simulatedSignals.{k}: {v:?}: {e}"))?;
        }
        for (field, v) in [
            ("evictionPressureTransitionPeriod", &self.eviction_pressure_transition_period),
            ("imageMinimumGCAge", &self.image_minimum_gc_age),
            ("housekeepingInterval", &self.housekeeping_interval),
            ("imageGCPeriod", &self.image_gc_period),
        ] {
            parse_duration(v).map_err(|e| format!("{field}: {e}"))?;
        }
        if parse_duration(&self.housekeeping_interval).unwrap_or_default().is_zero() {
            return Err("housekeepingInterval: must be positive".into());
        }
        let (hi, lo) = (self.image_gc_high_threshold_percent, self.image_gc_low_threshold_percent);
        if !(0..=100).contains(&hi) || !(0..=100).contains(&lo) {
            return Err("imageGCHighThresholdPercent and imageGCLowThresholdPercent must be within 0 and 100".into());
        }
        if lo > hi {
            return Err(format!("imageGCLowThresholdPercent ({lo}) must not exceed imageGCHighThresholdPercent ({hi})"));
        }
        for t in &self.register_with_taints {
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
                return Err(format!("registerWithTaints: taint {:?}: unknown effect {:?}", t.key, t.effect));
            }
        }
        Ok(())
    }

    /// The CFS period in µs.
    pub fn cfs_period(&self) -> Result<i64, String> {
        parse_duration(&self.cpu_cfs_quota_period).map(|d| d.as_micros() as i64)
    }

    pub fn duration(&self, v: &str, default: Duration) -> Duration {
        parse_duration(v).unwrap_or(default)
    }

    /// The eviction thresholds: hard, then soft (with their grace periods).
    pub fn thresholds(&self) -> Result<Vec<Threshold>, String> {
        let mut out = Vec::new();
        for (k, v) in &self.eviction_hard {
            check_signal(k).map_err(|e| format!("evictionHard: {e}"))?;
            out.push(Threshold { signal: k.clone(), value: parse_threshold_value(k, v)?, grace_period: Duration::ZERO, min_reclaim: None });
        }
        for (k, v) in &self.eviction_soft {
            check_signal(k).map_err(|e| format!("evictionSoft: {e}"))?;
            let g = self.eviction_soft_grace_period.get(k).ok_or_else(|| format!("evictionSoftGracePeriod: grace period must be specified for the soft eviction threshold {k}"))?;
            let g = parse_duration(g).map_err(|e| format!("evictionSoftGracePeriod.{k}: {e}"))?;
            out.push(Threshold { signal: k.clone(), value: parse_threshold_value(k, v)?, grace_period: g, min_reclaim: None });
        }
        for (k, v) in &self.eviction_minimum_reclaim {
            check_signal(k).map_err(|e| format!("evictionMinimumReclaim: {e}"))?;
            let m = parse_threshold_value(k, v)?;
            for t in out.iter_mut().filter(|t| &t.signal == k) {
                t.min_reclaim = Some(m.clone());
            }
        }
        Ok(out)
    }
}

/// What the node has: capacity in nano-units (`cpu`, `memory`, `pods`,
/// `ephemeral-storage`, `pid`), usable CPUs.
#[derive(Clone, Debug)]
pub struct Machine {
    pub capacity: List,
    pub cpus: Vec<u32>,
}

/// CPUs this process may run on.
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.effective_cpus")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cpuset.cpus.effective"))
        .or_else(|_| std::fs::read_to_string("/sys/devices/system/cpu/online"))
        .ok()
        .and_then(|s| parse_cpuset(s.trim()).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| (0..std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)).collect())
}

/// The largest pid (kubelet's `MaxPID`: min of pid_max and threads-max).
pub fn max_pid() -> i64 {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<i64>().ok());
    match (read("/proc/sys/kernel/pid_max"), read("/proc/sys/kernel/threads-max")) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        _ => 32768,
    }
}

/// Bytes of the filesystem holding `path`: (capacity, available, inodes, inodes free).
pub fn fs_stats(path: &Path) -> Option<(u64, u64, u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let f = s.fragment_size() as u64;
    Some((s.blocks() as u64 * f, s.blocks_available() as u64 * f, s.files() as u64, s.files_available() as u64))
}

impl Machine {
    /// This machine, with `state` the node's root (its filesystem is nodefs).
    pub fn detect(cfg: &NodeConfig, state: &Path) -> Machine {
        let cpus = online_cpus();
        let mut capacity = List::new();
        capacity.insert("cpu".into(), cpus.len() as i128 * NANO);
        capacity.insert("memory".into(), super::env::node_memory() as i128 * NANO);
        capacity.insert("pods".into(), cfg.max_pods as i128 * NANO);
        capacity.insert("pid".into(), max_pid() as i128 * NANO);
        let probe = std::iter::successors(Some(state), |p| p.parent()).find(|p| p.exists()).unwrap_or(Path::new("/"));
        if let Some((cap, ..)) = fs_stats(probe) {
            capacity.insert("ephemeral-storage".into(), cap as i128 * NANO);
        }
        Machine { capacity, cpus }
    }
}

/// The node as admission, eviction and the cgroup tree see it.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub cfg: NodeConfig,
    pub capacity: List,
    /// Capacity minus reserved and hard eviction thresholds (what pods may request).
    pub allocatable: List,
    /// Capacity minus reserved only: the kubepods cgroup's limits.
    pub pods_cgroup: List,
    /// CPUs pods may run on (all but `reservedSystemCPUs`).
    pub pod_cpus: Vec<u32>,
    pub all_cpus: Vec<u32>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

fn reserved(cfg: &NodeConfig) -> List {
    let mut r = List::new();
    for m in [&cfg.system_reserved, &cfg.kube_reserved] {
        for (k, v) in m {
            if let Ok(q) = ParsedQuantity::parse(v) {
                *r.entry(k.clone()).or_default() += q.nanos();
            }
        }
    }
    r
}

impl Node {
    pub fn new(name: &str, cfg: NodeConfig, machine: Machine) -> Node {
        let mut res = reserved(&cfg);
        let reserved_cpus = parse_cpuset(&cfg.reserved_system_cpus).unwrap_or_default();
        if !reserved_cpus.is_empty() {
            // reservedSystemCPUs replaces the reserved cpu amount.
            res.insert("cpu".into(), reserved_cpus.len() as i128 * NANO);
        }
        let capacity = machine.capacity.clone();
        let mut pods_cgroup = capacity.clone();
        for (k, v) in &res {
            if let Some(c) = pods_cgroup.get_mut(k) {
                *c = (*c - v).max(0);
            }
        }
        let mut allocatable = pods_cgroup.clone();
        // Hard eviction thresholds are kept from pods too.
        if let Ok(ts) = cfg.thresholds() {
            for t in ts.iter().filter(|t| t.grace_period.is_zero()) {
                let res = match t.signal.as_str() {
                    "memory.available" => "memory",
                    "nodefs.available" => "ephemeral-storage",
                    _ => continue,
                };
                if let (Some(a), Some(c)) = (allocatable.get(res).copied(), capacity.get(res).copied()) {
                    allocatable.insert(res.into(), (a - t.value.amount(c)).max(0));
                }
            }
        }
        allocatable.remove("pid");
        let pod_cpus: Vec<u32> = machine.cpus.iter().copied().filter(|c| !reserved_cpus.contains(c)).collect();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        let mut labels: BTreeMap<String, String> =
            [("kubernetes.io/hostname", name), ("kubernetes.io/os", "linux"), ("kubernetes.io/arch", arch), ("beta.kubernetes.io/os", "linux"), ("beta.kubernetes.io/arch", arch)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        labels.extend(cfg.node_labels.clone());
        Node { name: name.to_string(), taints: cfg.register_with_taints.clone(), cfg, capacity, allocatable, pods_cgroup, pod_cpus: if pod_cpus.is_empty() { machine.cpus.clone() } else { pod_cpus }, all_cpus: machine.cpus, labels }
    }

    /// An allocatable amount in Kubernetes' integer units (millicores for cpu).
    pub fn allocatable_units(&self, resource: &str) -> i64 {
        let n = self.allocatable.get(resource).copied().unwrap_or(0);
        if resource == "cpu" {
            qos::milli(n)
        } else {
            qos::value(n)
        }
    }
}

fn quantities(l: &List) -> BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    l.iter()
        .filter(|(k, _)| k.as_str() != "pid")
        .map(|(k, v)| {
            let q = match k.as_str() {
                "cpu" | "pods" => qos::format_decimal(*v),
                _ => qos::format_bytes(qos::value(*v)),
            };
            (k.clone(), Quantity(q))
        })
        .collect()
}

impl Node {
    /// The node as a Kubernetes Node object, with the pressure conditions.
    pub fn to_api(&self, pressure: &[String], host_ip: &str) -> k8s_openapi::api::core::v1::Node {
        use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let cond = |kind: &str, on: bool, yes: (&str, &str), no: (&str, &str)| {
            let (reason, message) = if on { yes } else { no };
            NodeCondition {
                type_: kind.into(),
                status: if on { "True" } else { "False" }.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now.clone()),
            }
        };
        let has = |c: &str| pressure.iter().any(|p| p == c);
        let conditions = vec![
            cond("MemoryPressure", has("MemoryPressure"), ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"), ("KubeletHasSufficientMemory", "kubelet has sufficient memory available")),
            cond("DiskPressure", has("DiskPressure"), ("KubeletHasDiskPressure", "kubelet has disk pressure"), ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")),
            cond("PIDPressure", has("PIDPressure"), ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"), ("KubeletHasSufficientPID", "kubelet has sufficient PID available")),
            cond("Ready", true, ("KubeletReady", "kubelet is posting ready status"), ("", "")),
        ];
        let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
        k8s_openapi::api::core::v1::Node {
            metadata: ObjectMeta { name: Some(self.name.clone()), labels: Some(self.labels.clone()), ..Default::default() },
            spec: Some(NodeSpec { taints: (!self.taints.is_empty()).then(|| self.taints.clone()), ..Default::default() }),
            status: Some(NodeStatus {
                capacity: Some(quantities(&self.capacity)),
                allocatable: Some(quantities(&self.allocatable)),
                conditions: Some(conditions),
                addresses: Some(vec![
                    NodeAddress { type_: "InternalIP".into(), address: host_ip.into() },
                    NodeAddress { type_: "Hostname".into(), address: self.name.clone() },
                ]),
                node_info: Some(NodeSystemInfo {
                    architecture: self.labels.get("kubernetes.io/arch").cloned().unwrap_or_default(),
                    operating_system: "linux".into(),
                    kernel_version: kernel,
                    kubelet_version: format!("berth {}", env!("CARGO_PKG_VERSION")),
                    container_runtime_version: String::new(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cpusets() {
        assert_eq!(parse_cpuset("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(format_cpuset(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert!(parse_cpuset("3-1").is_err());
        assert_eq!(parse_cpuset("").unwrap(), Vec::<u32>::new());
    }

    fn machine() -> Machine {
        let mut capacity = List::new();
        capacity.insert("cpu".into(), 4 * NANO);
        capacity.insert("memory".into(), (8i128 << 30) * NANO);
        capacity.insert("pods".into(), 110 * NANO);
        capacity.insert("ephemeral-storage".into(), (100i128 << 30) * NANO);
        capacity.insert("pid".into(), 32768 * NANO);
        Machine { capacity, cpus: vec![0, 1, 2, 3] }
    }

    #[test]
    fn allocatable_is_capacity_minus_reserved_and_hard_thresholds() {
        let cfg: NodeConfig = serde_yaml::from_str(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nsystemReserved: {cpu: 500m, memory: 1Gi}\nkubeReserved: {memory: 512Mi}\nevictionHard: {memory.available: 100Mi, nodefs.available: 10%}\nmaxPods: 20\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        let mut m = machine();
        m.capacity.insert("pods".into(), 20 * NANO);
        let n = Node::new("n1", cfg, m);
        assert_eq!(n.allocatable_units("cpu"), 3500);
        assert_eq!(n.allocatable_units("memory"), (8 << 30) - (1 << 30) - (512 << 20) - (100 << 20));
        assert_eq!(n.allocatable_units("pods"), 20);
        assert_eq!(n.allocatable_units("ephemeral-storage"), (100i64 << 30) - (10i64 << 30));
        assert_eq!(qos::value(n.pods_cgroup["memory"]), (8 << 30) - (1 << 30) - (512 << 20), "the cgroup leaves out eviction thresholds");
        assert_eq!(n.labels["kubernetes.io/hostname"], "n1");
        assert_eq!(n.labels["kubernetes.io/os"], "linux");
    }

    #[test]
    fn reserved_cpus_leave_the_pod_cpuset() {
        let cfg = NodeConfig { reserved_system_cpus: "0".into(), system_reserved: [("cpu".to_string(), "2".to_string())].into(), ..Default::default() };
        let n = Node::new("n", cfg, machine());
        assert_eq!(n.pod_cpus, vec![1, 2, 3]);
        assert_eq!(n.allocatable_units("cpu"), 3000, "reservedSystemCPUs replaces the reserved cpu");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |y: &str| serde_yaml::from_str::<NodeConfig>(y).map_err(|e| e.to_string()).and_then(|c| c.validate()).unwrap_err();
        assert!(bad("evictionHard: {memory.avail: 1Mi}").contains("unknown eviction signal"));
        assert!(bad("evictionHard: {memory.available: lots}").contains("memory.available"));
        assert!(bad("evictionSoft: {memory.available: 1Gi}").contains("grace period must be specified"));
        assert!(bad("cpuManagerPolicy: static").contains("cpuManagerPolicy"));
        assert!(bad("maxPodz: 3").contains("maxPodz"));
        assert!(bad("imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 60").contains("imageGCLowThresholdPercent"));
        assert!(bad("systemReserved: {cpu: x}").contains("systemReserved.cpu"));
        let t = parse_taints("dedicated=gpu:NoExecute,spot:NoSchedule").unwrap();
        assert_eq!(t[0].key, "dedicated");
        assert_eq!(t[0].value.as_deref(), Some("gpu"));
        assert_eq!(t[1].effect, "NoSchedule");
        assert_eq!(parse_pairs("memory.available<100Mi,nodefs.available<5%", '<').unwrap()["nodefs.available"], "5%");
    }
}
