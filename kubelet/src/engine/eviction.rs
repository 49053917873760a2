//! The eviction manager, after kubelet's: signals observed from usage
//! samples (memory.available, allocatableMemory.available,
//! nodefs/imagefs available and inodesFree, pid.available; any of them
//! replaceable by `simulatedSignals`), hard and soft thresholds with grace
//! periods and minimum reclaim, node conditions held for the pressure
//! transition period, reclaim of unused containers and images before pods,
//! and pods ranked by kubelet's rules (usage above requests, priority,
//! usage relative to requests), one eviction per round.

use super::node::{Node, Threshold};
use super::qos::{self, NANO};
use super::stats::{PodUsage, Snapshot};
use super::spec;
use crate::manifest::quantity::ParsedQuantity;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// An observed signal (nano-units, like quantities).
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub available: i128,
    pub capacity: i128,
}

pub type Observations = BTreeMap<String, Observation>;

/// Signals from a usage snapshot, then the simulated values.
pub fn observe(s: &Snapshot, node: &Node) -> Observations {
    let mut o = Observations::new();
    let n = &s.node;
    let b = |v: u64| v as i128 * NANO;
    o.insert("memory.available".into(), Observation { available: b(n.memory_capacity_bytes.saturating_sub(n.memory_working_set_bytes)), capacity: b(n.memory_capacity_bytes) });
    if let Some(limit) = node.pods_cgroup.get("memory").copied().filter(|_| node.cfg.enforce_node_allocatable.iter().any(|e| e == "pods")) {
        let used: u64 = s.pods.iter().filter_map(|p| p.memory_working_set_bytes).sum();
        o.insert("allocatableMemory.available".into(), Observation { available: (limit - b(used)).max(0), capacity: limit });
    }
    for (prefix, fs) in [("nodefs", &n.nodefs), ("imagefs", &n.imagefs)] {
        if let Some(fs) = fs {
            o.insert(format!("{prefix}.available"), Observation { available: b(fs.available_bytes), capacity: b(fs.capacity_bytes) });
            o.insert(format!("{prefix}.inodesFree"), Observation { available: b(fs.inodes_free), capacity: b(fs.inodes) });
        }
    }
    o.insert("pid.available".into(), Observation { available: (n.max_pid - n.processes).max(0) as i128 * NANO, capacity: n.max_pid as i128 * NANO });
    for (k, v) in &node.cfg.simulated() {
        if let Ok(q) = ParsedQuantity::parse(v) {
            let cap = o.get(k).map(|x| x.capacity).unwrap_or(q.nanos());
            o.insert(k.clone(), Observation { available: q.nanos(), capacity: cap });
        }
    }
    o
}

/// The resource a signal reclaims.
pub fn resource_of(signal: &str) -> &'static str {
    match signal {
        "memory.available" | "allocatableMemory.available" => "memory",
        "nodefs.available" | "imagefs.available" => "ephemeral-storage",
        "nodefs.inodesFree" | "imagefs.inodesFree" => "inodes",
        "pid.available" => "pids",
        _ => "",
    }
}

/// The node condition a signal reports.
pub fn condition_of(signal: &str) -> &'static str {
    match resource_of(signal) {
        "memory" => "MemoryPressure",
        "pids" => "PIDPressure",
        _ => "DiskPressure",
    }
}

/// Thresholds met by the observations; with `min_reclaim`, relative to
/// value + minimum reclaim.
pub fn thresholds_met(ts: &[Threshold], o: &Observations, min_reclaim: bool) -> Vec<Threshold> {
    ts.iter()
        .filter(|t| {
            let Some(obs) = o.get(&t.signal) else { return false };
            let mut q = t.value.amount(obs.capacity);
            if min_reclaim {
                if let Some(m) = &t.min_reclaim {
                    q += m.amount(obs.capacity);
                }
            }
            q > obs.available
        })
        .cloned()
        .collect()
}

/// Eviction manager state between rounds.
#[derive(Default)]
struct State {
    thresholds_met: Vec<Threshold>,
    first_observed: HashMap<String, Instant>,
    conditions_seen: HashMap<String, Instant>,
}

pub struct Manager {
    thresholds: Vec<Threshold>,
    transition: Duration,
    state: std::sync::Mutex<State>,
    /// The node conditions now (MemoryPressure, DiskPressure, PIDPressure).
    conditions: std::sync::Mutex<Vec<String>>,
}

/// What a round decided: the threshold to reclaim for, if any.
#[derive(Clone, Debug)]
pub struct Decision {
    pub threshold: Threshold,
    pub resource: &'static str,
    /// Every threshold met this round (for the message).
    pub met: Vec<Threshold>,
}

fn threshold_key(t: &Threshold) -> String {
    format!("{}/{:?}/{:?}", t.signal, t.value, t.grace_period)
}

impl Manager {
    pub fn new(node: &Node) -> Manager {
        let mut thresholds = node.cfg.thresholds().unwrap_or_default();
        // With node allocatable enforced, memory is also watched in kubepods.
        if node.cfg.enforce_node_allocatable.iter().any(|e| e == "pods") {
            let extra: Vec<Threshold> = thresholds
                .iter()
                .filter(|t| t.signal == "memory.available" && t.grace_period.is_zero())
                .map(|t| Threshold { signal: "allocatableMemory.available".into(), ..t.clone() })
                .collect();
            thresholds.extend(extra);
        }
        Manager {
            thresholds,
            transition: node.cfg.duration(&node.cfg.eviction_pressure_transition_period, Duration::from_secs(300)),
            state: Default::default(),
            conditions: Default::default(),
        }
    }

    /// The thresholds met at the last round.
    pub fn met(&self) -> Vec<Threshold> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).thresholds_met.clone()
    }

    pub fn conditions(&self) -> Vec<String> {
        self.conditions.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One round of kubelet's `synchronize` up to picking what to reclaim.
    pub fn decide(&self, o: &Observations, now: Instant) -> Option<Decision> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut met = thresholds_met(&self.thresholds, o, false);
        // Thresholds met before stay until their minimum reclaim is done.
        for t in thresholds_met(&st.thresholds_met, o, true) {
            if !met.iter().any(|m| threshold_key(m) == threshold_key(&t)) {
                met.push(t);
            }
        }
        let first: HashMap<String, Instant> = met.iter().map(|t| (threshold_key(t), st.first_observed.get(&threshold_key(t)).copied().unwrap_or(now))).collect();
        for t in &met {
            st.conditions_seen.insert(condition_of(&t.signal).to_string(), now);
        }
        let mut conds: Vec<String> = st.conditions_seen.iter().filter(|(_, at)| now.duration_since(**at) < self.transition || **at == now).map(|(c, _)| c.clone()).collect();
        conds.sort();
        st.conditions_seen.retain(|_, at| now.duration_since(*at) < self.transition || *at == now);
        *self.conditions.lock().unwrap_or_else(|e| e.into_inner()) = conds;
        let ready: Vec<Threshold> = met.iter().filter(|t| now.duration_since(first[&threshold_key(t)]) >= t.grace_period).cloned().collect();
        st.first_observed = first;
        st.thresholds_met = met;
        if ready.is_empty() {
            return None;
        }
        // Memory first, then the rest in order.
        let mut order = ready.clone();
        order.sort_by_key(|t| !(t.signal == "memory.available" || t.signal == "allocatableMemory.available"));
        let t = order.into_iter().find(|t| !resource_of(&t.signal).is_empty())?;
        Some(Decision { resource: resource_of(&t.signal), threshold: t, met: ready })
    }
}

fn working_set(u: Option<&PodUsage>) -> Option<i128> {
    u.and_then(|u| u.memory_working_set_bytes).map(|b| b as i128 * NANO)
}

fn disk_usage(u: Option<&PodUsage>) -> Option<i128> {
    u.map(|u| u.containers.iter().filter_map(|c| c.rootfs_bytes).sum::<u64>() as i128 * NANO)
}

/// Orders pods for eviction for a resource, most evictable first (kubelet's
/// rankMemoryPressure, rankPIDPressure, rankDiskPressure).
pub fn rank(pods: &mut [Pod], resource: &str, usage: &BTreeMap<String, PodUsage>) {
    let u = |p: &Pod| usage.get(spec::pod_uid(p));
    // Pods without stats go first.
    let found = |p: &Pod| u(p).is_some();
    match resource {
        "pids" => pods.sort_by(|a, b| {
            found(a).cmp(&found(b)).then(qos::priority(a).cmp(&qos::priority(b))).then_with(|| {
                let n = |p: &Pod| u(p).and_then(|u| u.processes).unwrap_or(0);
                n(b).cmp(&n(a))
            })
        }),
        _ => {
            type Usage = fn(Option<&PodUsage>) -> Option<i128>;
            let (used, request): (Usage, &str) = if resource == "memory" { (working_set, "memory") } else { (disk_usage, "ephemeral-storage") };
            let exceeds = |p: &Pod| used(u(p)).unwrap_or(0) > qos::pod_request(p, request);
            let over = |p: &Pod| used(u(p)).unwrap_or(0) - qos::pod_request(p, request);
            pods.sort_by(|a, b| {
                found(a)
                    .cmp(&found(b))
                    .then(exceeds(b).cmp(&exceeds(a)))
                    .then(qos::priority(a).cmp(&qos::priority(b)))
                    .then(over(b).cmp(&over(a)))
            });
        }
    }
}

/// Kubelet's eviction message for a pod.
pub fn message(resource: &str, pod: &Pod, usage: Option<&PodUsage>, d: &Decision, o: &Observations) -> String {
    let mut m = format!("The node was low on resource: {resource}. ");
    if let Some(t) = d.met.iter().find(|t| resource_of(&t.signal) == resource) {
        if let Some(obs) = o.get(&t.signal) {
            let fmt = |n: i128| if resource == "memory" || resource == "ephemeral-storage" { qos::format_bytes(qos::value(n)) } else { qos::value(n).to_string() };
            m += &format!("Threshold quantity: {}, available: {}. ", fmt(t.value.amount(obs.capacity)), fmt(obs.available));
        }
    }
    let Some(u) = usage else { return m };
    let s = spec::spec(pod);
    for c in &u.containers {
        let Some(spec_c) = s.containers.iter().chain(s.init_containers.iter().flatten()).find(|x| x.name == c.name) else { continue };
        let req = qos::container_requests(spec_c).get(resource).copied().unwrap_or(0);
        let used = match resource {
            "memory" => c.memory_working_set_bytes,
            "ephemeral-storage" => c.rootfs_bytes,
            _ => None,
        };
        if let Some(used) = used {
            if used as i128 * NANO > req {
                let fmt_req = if req == 0 { "0".to_string() } else { qos::format_bytes(qos::value(req)) };
                m += &format!("Container {} was using {}, request is {}, has larger consumption of {resource}. ", c.name, qos::format_bytes(used as i64), fmt_req);
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::super::node::{Machine, NodeConfig};
    use super::super::stats::{ContainerUsage, NodeUsage};
    use super::*;

    fn node(cfg: NodeConfig) -> Node {
        let mut capacity = qos::List::new();
        capacity.insert("memory".into(), (1i128 << 30) * NANO);
        capacity.insert("cpu".into(), 2 * NANO);
        Node::new("n", cfg, Machine { capacity, cpus: vec![0, 1] })
    }

    fn snap(ws: u64) -> Snapshot {
        Snapshot { node: NodeUsage { memory_capacity_bytes: 1 << 30, memory_working_set_bytes: ws, max_pid: 1000, processes: 100, ..Default::default() }, ..Default::default() }
    }

    #[test]
    fn hard_threshold_and_transition_period() {
        let n = node(NodeConfig { enforce_node_allocatable: vec![], eviction_pressure_transition_period: "30s".into(), ..Default::default() });
        let m = Manager::new(&n);
        let t0 = Instant::now();
        assert!(m.decide(&observe(&snap(100 << 20), &n), t0).is_none());
        assert!(m.conditions().is_empty());
        let o = observe(&snap((1 << 30) - (50 << 20)), &n);
        assert_eq!(o["memory.available"].available, (50i128 << 20) * NANO);
        let d = m.decide(&o, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((d.threshold.signal.as_str(), d.resource), ("memory.available", "memory"));
        assert_eq!(m.conditions(), vec!["MemoryPressure".to_string()]);
        // Relieved: no eviction, but the condition stays for the transition period.
        assert!(m.decide(&observe(&snap(100 << 20), &n), t0 + Duration::from_secs(2)).is_none());
        assert_eq!(m.conditions(), vec!["MemoryPressure".to_string()]);
        assert!(m.decide(&observe(&snap(100 << 20), &n), t0 + Duration::from_secs(40)).is_none());
        assert!(m.conditions().is_empty());
    }

    #[test]
    fn soft_thresholds_wait_their_grace_period_and_signals_can_be_simulated() {
        let cfg = NodeConfig {
            eviction_hard: Default::default(),
            eviction_soft: [("memory.available".to_string(), "500Mi".to_string())].into(),
            eviction_soft_grace_period: [("memory.available".to_string(), "1m".to_string())].into(),
            simulated_signals: [("memory.available".to_string(), "200Mi".to_string())].into(),
            ..Default::default()
        };
        let n = node(cfg);
        let m = Manager::new(&n);
        let t0 = Instant::now();
        let o = observe(&snap(0), &n);
        assert_eq!(o["memory.available"].available, (200i128 << 20) * NANO, "the simulated value wins");
        assert!(m.decide(&o, t0).is_none());
        assert_eq!(m.conditions(), vec!["MemoryPressure".to_string()], "the condition shows at once");
        assert!(m.decide(&o, t0 + Duration::from_secs(30)).is_none());
        assert!(m.decide(&o, t0 + Duration::from_secs(61)).is_some());
    }

    fn pod(name: &str, res: &str, priority: i32) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: {name}, uid: {name}}}\nspec: {{priority: {priority}, containers: [{{name: c, image: i, resources: {res}}}]}}\n")).unwrap()
    }

    fn usage(name: &str, mib: u64) -> (String, PodUsage) {
        let c = ContainerUsage { name: "c".into(), memory_working_set_bytes: Some(mib << 20), ..Default::default() };
        (name.to_string(), PodUsage { uid: name.into(), name: name.into(), memory_working_set_bytes: Some(mib << 20), containers: vec![c], processes: Some(mib), ..Default::default() })
    }

    #[test]
    fn memory_ranking_like_kubelet() {
        let mut pods = vec![
            pod("guaranteed", "{limits: {cpu: 100m, memory: 100Mi}}", 0),
            pod("under", "{requests: {memory: 50Mi}}", 0),
            pod("over-small", "{requests: {memory: 10Mi}}", 0),
            pod("besteffort", "{}", 0),
            pod("important", "{}", 1000),
            pod("nostats", "{}", 0),
        ];
        let u: BTreeMap<String, PodUsage> =
            [usage("guaranteed", 60), usage("under", 40), usage("over-small", 20), usage("besteffort", 30), usage("important", 500)].into_iter().collect();
        rank(&mut pods, "memory", &u);
        let names: Vec<&str> = pods.iter().map(spec::pod_name).collect();
        // No stats first; then pods above their requests (by priority, then by
        // how far above); pods within their requests last.
        assert_eq!(names, vec!["nostats", "besteffort", "over-small", "important", "under", "guaranteed"]);
        rank(&mut pods, "pids", &u);
        let names: Vec<&str> = pods.iter().map(spec::pod_name).collect();
        assert_eq!(names, vec!["nostats", "guaranteed", "under", "besteffort", "over-small", "important"]);
    }

    #[test]
    fn eviction_message() {
        let n = node(NodeConfig { enforce_node_allocatable: vec![], ..Default::default() });
        let m = Manager::new(&n);
        let o = observe(&snap((1 << 30) - (60 << 20)), &n);
        let d = m.decide(&o, Instant::now()).unwrap();
        let p = pod("be", "{}", 0);
        let u = usage("be", 30).1;
        assert_eq!(
            message("memory", &p, Some(&u), &d, &o),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 60Mi. Container c was using 30Mi, request is 0, has larger consumption of memory. "
        );
    }
}
