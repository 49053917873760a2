//! Quality of service and pod-level resource accounting, computed the way
//! Kubernetes does: the QoS class, a pod's effective requests and limits
//! (init containers, sidecars, pod-level resources, RuntimeClass overhead),
//! priority, criticality and the containers' oom_score_adj.

use super::spec;
use crate::manifest::quantity::ParsedQuantity;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// Resource amounts by name, exactly, in nano-units (`cpu: 1` is 1e9).
pub type List = BTreeMap<String, i128>;

pub const NANO: i128 = 1_000_000_000;

/// Kubernetes' QoS classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    pub fn parse(s: &str) -> Option<QosClass> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn nanos(q: &Quantity) -> i128 {
    ParsedQuantity::parse(&q.0).map(|p| p.nanos()).unwrap_or(0)
}

fn to_list(m: Option<&BTreeMap<String, Quantity>>) -> List {
    m.into_iter().flatten().map(|(k, v)| (k.clone(), nanos(v))).collect()
}

/// Whole units rounded up (Kubernetes' `Value()`), e.g. bytes.
pub fn value(n: i128) -> i64 {
    ParsedQuantity::parse(&format!("{}n", n.max(0))).map(|p| p.value()).unwrap_or(0)
}

/// Thousandths rounded up (Kubernetes' `MilliValue()`), e.g. millicores.
pub fn milli(n: i128) -> i64 {
    let d = NANO / 1000;
    let q = n.div_euclid(d) + if n.rem_euclid(d) != 0 { 1 } else { 0 };
    q.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// A container's requests as the apiserver defaults them (a limit without
/// a request is also the request).
pub fn container_requests(c: &Container) -> List {
    let r = c.resources.as_ref();
    let mut req = to_list(r.and_then(|r| r.requests.as_ref()));
    for (k, v) in to_list(r.and_then(|r| r.limits.as_ref())) {
        req.entry(k).or_insert(v);
    }
    req
}

pub fn container_limits(c: &Container) -> List {
    to_list(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
}

fn add(to: &mut List, from: &List) {
    for (k, v) in from {
        *to.entry(k.clone()).or_default() += v;
    }
}

fn max_into(to: &mut List, from: &List) {
    for (k, v) in from {
        let e = to.entry(k.clone()).or_default();
        if *v > *e {
            *e = *v;
        }
    }
}

fn is_restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Kubernetes' aggregation over a pod's containers: regular containers and
/// sidecars add up; each init container needs its own amount plus the
/// sidecars started before it; the pod needs the larger of the two.
/// `regular` sees every regular container's list.
fn aggregate(pod: &Pod, of: fn(&Container) -> List, mut regular: impl FnMut(&List)) -> List {
    let s = spec::spec(pod);
    let mut sum = List::new();
    for c in &s.containers {
        let l = of(c);
        regular(&l);
        add(&mut sum, &l);
    }
    let mut sidecars = List::new();
    let mut init_max = List::new();
    for c in s.init_containers.iter().flatten() {
        let own = of(c);
        let used = if is_restartable(c) {
            add(&mut sum, &own);
            add(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut t = own.clone();
            add(&mut t, &sidecars);
            t
        };
        max_into(&mut init_max, &used);
    }
    max_into(&mut sum, &init_max);
    sum
}

fn pod_level(pod: &Pod, limits: bool) -> List {
    let r = spec::spec(pod).resources.as_ref();
    let m = if limits { r.and_then(|r| r.limits.as_ref()) } else { r.and_then(|r| r.requests.as_ref()) };
    to_list(m).into_iter().filter(|(k, _)| k == "cpu" || k == "memory").collect()
}

/// The pod's effective requests: the containers' aggregate (pod-level cpu
/// and memory requests take precedence), plus the RuntimeClass overhead.
pub fn pod_requests(pod: &Pod) -> List {
    let mut r = aggregate(pod, container_requests, |_| {});
    for (k, v) in pod_level(pod, false) {
        r.insert(k, v);
    }
    if let Some(o) = spec::spec(pod).overhead.as_ref() {
        add(&mut r, &to_list(Some(o)));
    }
    r
}

/// The pod's effective limits, and whether every regular container limits
/// cpu and memory. Overhead is added to the limits that are set.
pub struct PodLimits {
    pub limits: List,
    pub cpu_declared: bool,
    pub memory_declared: bool,
}

pub fn pod_limits(pod: &Pod) -> PodLimits {
    let (mut cpu, mut mem) = (true, true);
    let mut limits = aggregate(pod, container_limits, |l| {
        cpu &= l.get("cpu").is_some_and(|v| *v != 0);
        mem &= l.get("memory").is_some_and(|v| *v != 0);
    });
    let level = pod_level(pod, true);
    if level.get("cpu").is_some_and(|v| *v != 0) {
        cpu = true;
    }
    if level.get("memory").is_some_and(|v| *v != 0) {
        mem = true;
    }
    for (k, v) in level {
        limits.insert(k, v);
    }
    if let Some(o) = spec::spec(pod).overhead.as_ref() {
        for (k, v) in to_list(Some(o)) {
            if let Some(l) = limits.get_mut(&k) {
                *l += v;
            }
        }
    }
    PodLimits { limits, cpu_declared: cpu, memory_declared: mem }
}

/// One pod-wide request (`GetResourceRequestQuantity`), 0 when unset.
pub fn pod_request(pod: &Pod, resource: &str) -> i128 {
    pod_requests(pod).get(resource).copied().unwrap_or(0)
}

/// The QoS class exactly as Kubernetes' `ComputePodQOS` derives it (cpu
/// and memory; requests defaulted from limits as the apiserver does).
pub fn qos_class(pod: &Pod) -> QosClass {
    let supported = |k: &str| k == "cpu" || k == "memory";
    let mut requests = List::new();
    let mut limits = List::new();
    let mut guaranteed = true;
    let s = spec::spec(pod);
    let level = s.resources.as_ref().filter(|r| r.requests.as_ref().is_some_and(|m| !m.is_empty()) || r.limits.as_ref().is_some_and(|m| !m.is_empty()));
    let sum = |into: &mut List, l: &List| {
        for (k, v) in l.iter().filter(|(k, v)| supported(k) && **v > 0) {
            *into.entry(k.clone()).or_default() += v;
        }
    };
    if let Some(r) = level {
        let (req, lim) = (to_list(r.requests.as_ref()), to_list(r.limits.as_ref()));
        let mut req = req;
        for (k, v) in &lim {
            req.entry(k.clone()).or_insert(*v);
        }
        sum(&mut requests, &req);
        if lim.is_empty() {
            guaranteed = false;
        } else {
            sum(&mut limits, &lim);
            let found = |k: &str| lim.get(k).is_some_and(|v| *v > 0);
            if !(found("cpu") && found("memory")) {
                guaranteed = false;
            }
        }
    } else {
        for c in s.containers.iter().chain(s.init_containers.iter().flatten()) {
            let (req, lim) = (container_requests(c), container_limits(c));
            sum(&mut requests, &req);
            sum(&mut limits, &lim);
            let found = |k: &str| lim.get(k).is_some_and(|v| *v > 0);
            if !(found("cpu") && found("memory")) {
                guaranteed = false;
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed && requests.iter().all(|(k, v)| limits.get(k) == Some(v)) && requests.len() == limits.len() {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// The class the pod was admitted with (its status'), else computed.
pub fn class_of(pod: &Pod) -> QosClass {
    pod.status.as_ref().and_then(|s| s.qos_class.as_deref()).and_then(QosClass::parse).unwrap_or_else(|| qos_class(pod))
}

/// Priority of the built-in critical classes (`system-cluster-critical`
/// and above).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The pod's priority: `spec.priority`, else that of the built-in classes.
pub fn priority(pod: &Pod) -> i32 {
    let s = spec::spec(pod);
    s.priority.unwrap_or(match s.priority_class_name.as_deref() {
        Some("system-node-critical") => SYSTEM_CRITICAL_PRIORITY + 1000,
        Some("system-cluster-critical") => SYSTEM_CRITICAL_PRIORITY,
        _ => 0,
    })
}

/// Critical pods are admitted under pressure and never evicted. Kubelet
/// also counts every static pod as critical; Berth's standalone pods are
/// static pods, so that rule would switch eviction off entirely there:
/// Berth goes by priority alone.
pub fn is_critical(pod: &Pod) -> bool {
    priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn is_node_critical(pod: &Pod) -> bool {
    is_critical(pod) && spec::spec(pod).priority_class_name.as_deref() == Some("system-node-critical")
}

const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// oom_score_adj of a container, by kubelet's policy: -997 for Guaranteed
/// (and node-critical) pods, 1000 for BestEffort, and for Burstable
/// `1000 - 1000 * memory request / capacity`, kept within [3, 999]
/// (sidecars no higher than the regular container requesting least).
pub fn oom_score_adj(pod: &Pod, c: &Container, memory_capacity: i64) -> i64 {
    if is_node_critical(pod) {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match class_of(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let cap = memory_capacity.max(1) as i128;
    let mem = |c: &Container| container_requests(c).get("memory").map(|n| value(*n) as i128).unwrap_or(0);
    let s = spec::spec(pod);
    // Pod-level memory requests not given to containers are shared out.
    let level = pod_level(pod, false).get("memory").map(|n| value(*n) as i128);
    let all: Vec<&Container> = s.containers.iter().chain(s.init_containers.iter().flatten()).collect();
    let remaining = level.map(|l| (l - all.iter().map(|c| mem(c)).sum::<i128>()).max(0) / (all.len().max(1) as i128)).unwrap_or(0);
    let mut adj = 1000 - (1000 * (mem(c) + remaining)) / cap;
    let sidecar = is_restartable(c) && s.init_containers.iter().flatten().any(|i| i.name == c.name);
    if sidecar {
        let min_regular = s.containers.iter().map(mem).min().unwrap_or(0) + remaining;
        adj = adj.min(1000 - (1000 * min_regular) / cap);
    }
    let adj = adj as i64;
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return 1000 + GUARANTEED_OOM_SCORE_ADJ;
    }
    if adj == BEST_EFFORT_OOM_SCORE_ADJ {
        return adj - 1;
    }
    adj
}

/// Kubernetes' `MinShares`, `MaxShares` and shares per CPU.
pub const MIN_SHARES: i64 = 2;
pub const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
/// The smallest CFS quota kubelet sets (1 ms).
pub const MIN_QUOTA: i64 = 1000;

/// CPU shares of a request in millicores (`MilliCPUToShares`).
pub fn shares(milli: i64) -> i64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli * SHARES_PER_CPU / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota of a limit in millicores for `period` µs (`MilliCPUToQuota`);
/// 0 for no limit.
pub fn quota(milli: i64, period: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli * period / 1000).max(MIN_QUOTA)
}

/// Formats bytes the way Kubernetes prints a binary quantity: the largest
/// binary suffix that keeps an integer (`100Mi`, `1536Ki`, `1500`).
pub fn format_bytes(v: i64) -> String {
    if v.abs() < 1024 {
        return v.to_string();
    }
    let mut n = v;
    let mut i = 0;
    let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    while n % 1024 == 0 && i < 6 && n != 0 {
        n /= 1024;
        i += 1;
    }
    format!("{n}{}", suffixes[i])
}

/// Formats a value in nano-units the way Kubernetes prints a decimal
/// quantity (`500m`, `2`, `1500m`).
pub fn format_decimal(n: i128) -> String {
    if n % NANO == 0 {
        return (n / NANO).to_string();
    }
    let m = milli(n);
    format!("{m}m")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn one(res: &str) -> Pod {
        pod(&format!("metadata: {{name: p}}\nspec: {{containers: [{{name: c, image: i, resources: {res}}}]}}\n"))
    }

    #[test]
    fn qos_classes_like_kubernetes() {
        assert_eq!(qos_class(&one("{}")), QosClass::BestEffort);
        assert_eq!(qos_class(&one("{requests: {cpu: 100m}}")), QosClass::Burstable);
        assert_eq!(qos_class(&one("{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 1000m, memory: 1Gi}}")), QosClass::Guaranteed);
        // Requests default to limits.
        assert_eq!(qos_class(&one("{limits: {cpu: 1, memory: 1Gi}}")), QosClass::Guaranteed);
        assert_eq!(qos_class(&one("{limits: {cpu: 1, memory: 1Gi}, requests: {cpu: 500m}}")), QosClass::Burstable);
        assert_eq!(qos_class(&one("{limits: {cpu: 1}}")), QosClass::Burstable);
        // Only cpu and memory count; zero amounts are ignored.
        assert_eq!(qos_class(&one("{limits: {ephemeral-storage: 1Gi}}")), QosClass::BestEffort);
        assert_eq!(qos_class(&one("{requests: {cpu: '0'}}")), QosClass::BestEffort);
        // Init containers count too: an unlimited one makes the pod Burstable.
        let p = pod(
            "metadata: {name: p}\nspec:\n  initContainers: [{name: i, image: i, resources: {requests: {cpu: 10m}}}]\n  containers: [{name: c, image: i, resources: {limits: {cpu: 1, memory: 1Gi}}}]\n",
        );
        assert_eq!(qos_class(&p), QosClass::Burstable);
        // Sums are compared: two containers, each guaranteed.
        let p = pod("metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: i, resources: {limits: {cpu: 1, memory: 1Gi}}}\n  - {name: b, image: i, resources: {limits: {cpu: 2, memory: 1Mi}}}\n");
        assert_eq!(qos_class(&p), QosClass::Guaranteed);
        // Pod-level resources decide when set.
        let p = pod("metadata: {name: p}\nspec:\n  resources: {limits: {cpu: 1, memory: 1Gi}}\n  containers: [{name: a, image: i}]\n");
        assert_eq!(qos_class(&p), QosClass::Guaranteed);
    }

    #[test]
    fn pod_requests_with_init_containers_sidecars_and_overhead() {
        let p = pod(
            r#"
metadata: {name: p}
spec:
  overhead: {cpu: 250m, memory: 120Mi}
  initContainers:
  - {name: init1, image: i, resources: {requests: {cpu: '2', memory: 1Gi}}}
  - {name: side, image: i, restartPolicy: Always, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 200m, memory: 100Mi}}}
  - {name: init2, image: i, resources: {requests: {cpu: 500m, memory: 2Gi}}}
  containers:
  - {name: a, image: i, resources: {requests: {cpu: 300m, memory: 200Mi}, limits: {cpu: 1, memory: 300Mi}}}
  - {name: b, image: i, resources: {limits: {cpu: 400m, memory: 100Mi}}}
"#,
        );
        let r = pod_requests(&p);
        // cpu: max(0.3 + 0.4 + 0.1 sidecar, 2, 0.1 + 0.5) = 2, + 0.25 overhead.
        assert_eq!(milli(r["cpu"]), 2250);
        // memory: max(200Mi + 100Mi + 100Mi, 1Gi, 100Mi + 2Gi) + 120Mi.
        assert_eq!(value(r["memory"]), (2048 + 100 + 120) << 20);
        let l = pod_limits(&p);
        assert!(l.cpu_declared && l.memory_declared);
        // cpu limits: regular 1.4 + sidecar 0.2; init containers set none.
        assert_eq!(milli(l.limits["cpu"]), 1600 + 250);
        assert_eq!(value(l.limits["memory"]), (300 + 100 + 100 + 120) << 20);
        let b = one("{requests: {cpu: 100m}, limits: {memory: 10Mi}}");
        let l = pod_limits(&b);
        assert!(!l.cpu_declared && l.memory_declared);
    }

    #[test]
    fn oom_score_adj_policy() {
        let cap = 10 << 30;
        let c = |p: &Pod| spec::spec(p).containers[0].clone();
        let g = one("{limits: {cpu: 1, memory: 1Gi}}");
        assert_eq!(oom_score_adj(&g, &c(&g), cap), -997);
        let be = one("{}");
        assert_eq!(oom_score_adj(&be, &c(&be), cap), 1000);
        let b = one("{requests: {memory: 1Gi}}");
        assert_eq!(oom_score_adj(&b, &c(&b), cap), 1000 - 1000 / 10);
        let tiny = one("{requests: {cpu: 10m}}");
        assert_eq!(oom_score_adj(&tiny, &c(&tiny), cap), 999, "never as high as BestEffort");
        let huge = one("{requests: {memory: 20Gi}}");
        assert_eq!(oom_score_adj(&huge, &c(&huge), cap), 3, "never as low as Guaranteed");
        let crit = pod("metadata: {name: p}\nspec: {priorityClassName: system-node-critical, containers: [{name: c, image: i}]}\n");
        assert_eq!(oom_score_adj(&crit, &c(&crit), cap), -997);
        // A sidecar is no more killable than the regular container requesting least.
        let s = pod(
            "metadata: {name: p}\nspec:\n  initContainers: [{name: s, image: i, restartPolicy: Always, resources: {requests: {memory: 10Mi}}}]\n  containers: [{name: a, image: i, resources: {requests: {memory: 2Gi}}}]\n",
        );
        let side = spec::spec(&s).init_containers.as_ref().unwrap()[0].clone();
        assert_eq!(oom_score_adj(&s, &side, cap), 1000 - 2000 / 10);
    }

    #[test]
    fn cfs_values() {
        assert_eq!(shares(0), 2);
        assert_eq!(shares(1), 2);
        assert_eq!(shares(100), 102);
        assert_eq!(shares(1000), 1024);
        assert_eq!(shares(1_000_000), 262_144);
        assert_eq!(quota(0, 100_000), 0);
        assert_eq!(quota(5, 100_000), 1000);
        assert_eq!(quota(250, 100_000), 25_000);
        assert_eq!(quota(250, 50_000), 12_500);
    }

    #[test]
    fn quantity_formats() {
        assert_eq!(format_bytes(100 << 20), "100Mi");
        assert_eq!(format_bytes(1536 << 10), "1536Ki");
        assert_eq!(format_bytes(1500), "1500");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_decimal(NANO * 2), "2");
        assert_eq!(format_decimal(NANO / 2), "500m");
    }
}
