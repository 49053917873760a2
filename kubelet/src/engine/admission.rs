//! Pod admission the way kubelet decides it before a pod may start: the
//! node's allocatable resources and pod count against the requests of the
//! pods already admitted, node name, node selector and required node
//! affinity, host ports, NoExecute taints (not for static pods), and the
//! node's pressure conditions. Used by standalone mode and by node mode.

use super::node::Node;
use super::qos::{self, QosClass};
use super::spec;
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};
use std::collections::BTreeMap;

/// Why a pod was not admitted: kubelet's reason and message. The pod's
/// status message is "Pod was rejected: " + message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

/// Node pressure conditions (MemoryPressure, DiskPressure, PIDPressure).
pub type Conditions = Vec<String>;

/// What admission looks at.
pub struct Attributes<'a> {
    pub node: &'a Node,
    /// Pods admitted before and still active (not Succeeded or Failed).
    pub others: &'a [Pod],
    /// Node conditions the eviction manager reports.
    pub conditions: &'a [String],
    /// Static pods (from files) skip the taint check, as under kubelet.
    pub static_pod: bool,
}

fn reject(reason: &str, message: String) -> Rejection {
    Rejection { reason: reason.into(), message }
}

/// Decides whether `pod` may run on the node.
pub fn admit(pod: &Pod, a: &Attributes) -> Result<(), Rejection> {
    if let Some(r) = pressure(pod, a.conditions) {
        return Err(r);
    }
    let s = spec::spec(pod);
    if let Some(os) = s.os.as_ref().filter(|o| o.name != "linux") {
        return Err(reject("PodOSNotSupported", format!("Failed to admit pod as the OS field doesn't match node OS ({})", os.name)));
    }
    if pod.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/os")).is_some_and(|v| v != "linux") {
        return Err(reject("PodOSSelectorNodeLabelDoesNotMatch", "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label".into()));
    }
    if let Some(r) = fits(pod, a) {
        return Err(r);
    }
    if !matches_node(pod, a.node) {
        return Err(reject("NodeAffinity", "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into()));
    }
    if s.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != a.node.name) {
        return Err(reject("NodeName", "Predicate NodeName failed: node(s) didn't match the requested node name".into()));
    }
    if host_ports_conflict(pod, a.others) {
        return Err(reject("NodePorts", "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into()));
    }
    if !a.static_pod && untolerated(&a.node.taints, s.tolerations.as_deref().unwrap_or(&[]), |t| t.effect == "NoExecute").is_some() {
        return Err(reject("TaintToleration", "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate".into()));
    }
    Ok(())
}

/// The eviction manager's admission: under memory pressure BestEffort pods
/// are refused (unless they tolerate the memory-pressure taint); under any
/// other pressure every pod is. Critical pods always pass.
fn pressure(pod: &Pod, conditions: &[String]) -> Option<Rejection> {
    if conditions.is_empty() || qos::is_critical(pod) {
        return None;
    }
    let only_memory = conditions.len() == 1 && conditions[0] == "MemoryPressure";
    if only_memory {
        if qos::class_of(pod) != QosClass::BestEffort {
            return None;
        }
        let taint = Taint { key: "node.kubernetes.io/memory-pressure".into(), effect: "NoSchedule".into(), ..Default::default() };
        if spec::spec(pod).tolerations.iter().flatten().any(|t| tolerates(t, &taint)) {
            return None;
        }
    }
    Some(reject("Evicted", format!("The node had condition: [{}]. ", conditions.join(" "))))
}

/// The pod's requests in kubelet's integer units (cpu in millicores).
fn units(l: &qos::List, resource: &str) -> i64 {
    let n = l.get(resource).copied().unwrap_or(0);
    if resource == "cpu" {
        qos::milli(n)
    } else {
        qos::value(n)
    }
}

/// The scheduler's resource fit as kubelet runs it: pod count, then each
/// requested resource against allocatable minus what admitted pods request.
fn fits(pod: &Pod, a: &Attributes) -> Option<Rejection> {
    let allowed = a.node.allocatable_units("pods");
    if a.others.len() as i64 + 1 > allowed {
        return Some(insufficient("pods", 1, a.others.len() as i64, allowed));
    }
    let want = qos::pod_requests(pod);
    let mut used = qos::List::new();
    for p in a.others {
        for (k, v) in qos::pod_requests(p) {
            *used.entry(k).or_default() += v;
        }
    }
    for r in ["cpu", "memory", "ephemeral-storage"] {
        let req = units(&want, r);
        let (u, cap) = (units(&used, r), a.node.allocatable_units(r));
        if req > 0 && req > cap - u {
            return Some(insufficient(r, req, u, cap));
        }
    }
    // Extended resources (hugepages, devices) the node has none of.
    for (k, v) in &want {
        let standard = ["cpu", "memory", "ephemeral-storage", "pods"].contains(&k.as_str());
        if !standard && *v > 0 && k.starts_with("hugepages-") && !a.node.allocatable.contains_key(k) {
            return Some(insufficient(k, qos::value(*v), 0, 0));
        }
    }
    None
}

fn insufficient(resource: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    reject(
        &format!("OutOf{resource}"),
        format!("Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"),
    )
}

/// nodeSelector and requiredDuringSchedulingIgnoredDuringExecution terms.
pub fn matches_node(pod: &Pod, node: &Node) -> bool {
    let s = spec::spec(pod);
    if let Some(sel) = &s.node_selector {
        if !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
            return false;
        }
    }
    let terms = s
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.clone());
    match terms {
        // An empty list of terms matches nothing; terms are ORed.
        Some(terms) => terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

fn term_matches(t: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let mut node_fields = BTreeMap::new();
    node_fields.insert("metadata.name".to_string(), node.name.clone());
    exprs.iter().all(|r| requirement(r, &node.labels)) && fields.iter().all(|r| requirement(r, &node_fields))
}

fn requirement(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let v = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (v.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok())) else { return false };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a toleration tolerates a taint (Kubernetes' `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint passing `filter` that no toleration tolerates.
pub fn untolerated<'t>(taints: &'t [Taint], tolerations: &[Toleration], filter: impl Fn(&Taint) -> bool) -> Option<&'t Taint> {
    taints.iter().filter(|t| filter(t)).find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// (protocol, host IP, host port) of the pod's host ports.
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let s = spec::spec(pod);
    s.containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.host_ip.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| "0.0.0.0".into()), p.host_port.unwrap_or(0)))
        .collect()
}

fn host_ports_conflict(pod: &Pod, others: &[Pod]) -> bool {
    let mine = host_ports(pod);
    if mine.is_empty() {
        return false;
    }
    let used: Vec<(String, String, i32)> = others.iter().flat_map(host_ports).collect();
    mine.iter().any(|(proto, ip, port)| used.iter().any(|(p, i, n)| p == proto && n == port && (i == ip || i == "0.0.0.0" || ip == "0.0.0.0")))
}

#[cfg(test)]
mod tests {
    use super::super::node::{Machine, NodeConfig};
    use super::super::qos::NANO;
    use super::*;

    fn node(cfg: NodeConfig) -> Node {
        let mut capacity = qos::List::new();
        capacity.insert("cpu".into(), 2 * NANO);
        capacity.insert("memory".into(), (4i128 << 30) * NANO);
        capacity.insert("pods".into(), cfg.max_pods as i128 * NANO);
        capacity.insert("ephemeral-storage".into(), (100i128 << 30) * NANO);
        Node::new("n1", NodeConfig { eviction_hard: Default::default(), ..cfg }, Machine { capacity, cpus: vec![0, 1] })
    }

    fn pod(name: &str, extra: &str) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: i{extra}}}]\n")).unwrap()
    }

    fn attrs<'a>(n: &'a Node, others: &'a [Pod]) -> Attributes<'a> {
        Attributes { node: n, others, conditions: &[], static_pod: true }
    }

    #[test]
    fn resources_and_pod_count() {
        let n = node(NodeConfig { max_pods: 2, ..Default::default() });
        let a = pod("a", ", resources: {requests: {cpu: 1500m, memory: 1Gi}}");
        assert_eq!(admit(&a, &attrs(&n, &[])), Ok(()));
        let b = pod("b", ", resources: {requests: {cpu: 600m}}");
        let r = admit(&b, &attrs(&n, std::slice::from_ref(&a))).unwrap_err();
        assert_eq!(r.reason, "OutOfcpu");
        assert_eq!(r.message, "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000");
        let m = pod("m", ", resources: {limits: {memory: 4Gi}}");
        let r = admit(&m, &attrs(&n, std::slice::from_ref(&a))).unwrap_err();
        assert_eq!(r.reason, "OutOfmemory");
        assert_eq!(r.message, format!("Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}", 4i64 << 30, 1i64 << 30, 4i64 << 30));
        let others = [a.clone(), pod("x", "")];
        let r = admit(&pod("c", ""), &attrs(&n, &others)).unwrap_err();
        assert_eq!((r.reason.as_str(), r.message.as_str()), ("OutOfpods", "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"));
        // A BestEffort pod requests nothing.
        assert_eq!(admit(&pod("be", ""), &attrs(&n, std::slice::from_ref(&a))), Ok(()));
    }

    #[test]
    fn selectors_affinity_and_taints() {
        let mut cfg = NodeConfig { node_labels: [("disk".to_string(), "ssd".to_string()), ("gen".to_string(), "5".to_string())].into(), ..Default::default() };
        cfg.register_with_taints = vec![Taint { key: "dedicated".into(), value: Some("db".into()), effect: "NoExecute".into(), time_added: None }];
        let n = node(cfg);
        let sel = |s: &str| -> Pod { serde_yaml::from_str(&format!("metadata: {{name: p}}\nspec:\n  {s}\n  containers: [{{name: c, image: i}}]\n")).unwrap() };
        assert!(admit(&sel("nodeSelector: {disk: ssd, kubernetes.io/os: linux}"), &attrs(&n, &[])).is_ok());
        let r = admit(&sel("nodeSelector: {disk: hdd}"), &attrs(&n, &[])).unwrap_err();
        assert_eq!(r.reason, "NodeAffinity");
        assert_eq!(r.message, "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector");
        let aff = |expr: &str| sel(&format!("affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [{expr}]}}}}}}"));
        assert!(admit(&aff("{matchExpressions: [{key: gen, operator: Gt, values: ['4']}]}"), &attrs(&n, &[])).is_ok());
        assert!(admit(&aff("{matchExpressions: [{key: gen, operator: Lt, values: ['4']}]}"), &attrs(&n, &[])).is_err());
        assert!(admit(&aff("{matchExpressions: [{key: gpu, operator: DoesNotExist}]}, {matchExpressions: [{key: x, operator: Exists}]}"), &attrs(&n, &[])).is_ok());
        assert!(admit(&aff("{matchFields: [{key: metadata.name, operator: In, values: [n1]}]}"), &attrs(&n, &[])).is_ok());
        assert!(admit(&aff("{matchExpressions: [{key: disk, operator: NotIn, values: [ssd]}]}"), &attrs(&n, &[])).is_err());
        let r = admit(&sel("nodeName: other"), &attrs(&n, &[])).unwrap_err();
        assert_eq!(r.reason, "NodeName");
        // NoExecute taints: only for pods that are not static.
        let plain = sel("restartPolicy: Always");
        assert!(admit(&plain, &attrs(&n, &[])).is_ok(), "static pods ignore taints");
        let api = Attributes { static_pod: false, ..attrs(&n, &[]) };
        let r = admit(&plain, &api).unwrap_err();
        assert_eq!(r.reason, "TaintToleration");
        assert_eq!(r.message, "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate");
        assert!(admit(&sel("tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoExecute}]"), &api).is_ok());
        assert!(admit(&sel("tolerations: [{operator: Exists}]"), &api).is_ok());
        assert!(admit(&sel("tolerations: [{key: dedicated, value: web}]"), &api).is_err());
    }

    #[test]
    fn pressure_conditions() {
        let n = node(NodeConfig::default());
        let mem = vec!["MemoryPressure".to_string()];
        let a = Attributes { conditions: &mem, ..attrs(&n, &[]) };
        let r = admit(&pod("be", ""), &a).unwrap_err();
        assert_eq!((r.reason.as_str(), r.message.as_str()), ("Evicted", "The node had condition: [MemoryPressure]. "));
        assert!(admit(&pod("bu", ", resources: {requests: {memory: 1Mi}}"), &a).is_ok());
        let tol: Pod = serde_yaml::from_str("metadata: {name: t}\nspec: {tolerations: [{key: node.kubernetes.io/memory-pressure, operator: Exists, effect: NoSchedule}], containers: [{name: c, image: i}]}").unwrap();
        assert!(admit(&tol, &a).is_ok());
        let disk = vec!["DiskPressure".to_string()];
        let a = Attributes { conditions: &disk, ..attrs(&n, &[]) };
        assert_eq!(admit(&pod("bu", ", resources: {requests: {memory: 1Mi}}"), &a).unwrap_err().message, "The node had condition: [DiskPressure]. ");
        let crit: Pod = serde_yaml::from_str("metadata: {name: c}\nspec: {priorityClassName: system-node-critical, containers: [{name: c, image: i}]}").unwrap();
        assert!(admit(&crit, &a).is_ok());
    }

    #[test]
    fn host_ports() {
        let n = node(NodeConfig::default());
        let web = pod("w", ", ports: [{containerPort: 80, hostPort: 8080}]");
        let r = admit(&pod("w2", ", ports: [{containerPort: 81, hostPort: 8080}]"), &attrs(&n, std::slice::from_ref(&web))).unwrap_err();
        assert_eq!(r.reason, "NodePorts");
        assert!(admit(&pod("w3", ", ports: [{containerPort: 81, hostPort: 8080, protocol: UDP}]"), &attrs(&n, std::slice::from_ref(&web))).is_ok());
    }
}
