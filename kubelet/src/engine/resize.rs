//! In-place pod resize: a container's cpu and memory requests and limits
//! change on a running pod (`berth resize pod`, or a same-UID update whose
//! only change is container resources). Checked like the apiserver (cpu and
//! memory only, QoS class unchanged), then like kubelet (Infeasible beyond
//! the node's allocatable capacity, Deferred while other pods hold the
//! room), then applied to the live cgroups: the pod cgroup grows before
//! and shrinks after its containers (UpdateContainerResources; a container
//! whose `resizePolicy` says RestartContainer for a changed resource is
//! restarted instead). Conditions PodResizePending and
//! PodResizeInProgress and the containers' `allocatedResources` and
//! `resources` report it, as Kubernetes does.

use super::node::Node;
use super::qos;
use super::spec;
use super::worker::Worker;
use crate::manifest::quantity::ParsedQuantity;
use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// New requests and limits for one container (`cpu`, `memory`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResizeRequest {
    pub container: String,
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// A resize that cannot be applied now: PodResizePending's reason
/// (Infeasible or Deferred) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub reason: String,
    pub message: String,
}

fn resizable(pod: &Pod, name: &str) -> Option<(bool, usize)> {
    let s = spec::spec(pod);
    if let Some(i) = s.containers.iter().position(|c| c.name == name) {
        return Some((false, i));
    }
    s.init_containers.iter().flatten().position(|c| c.name == name && c.restart_policy.as_deref() == Some("Always")).map(|i| (true, i))
}

/// The pod with the container's resources changed, checked the way the
/// apiserver checks a resize.
pub fn resized(pod: &Pod, req: &ResizeRequest) -> Result<Pod, String> {
    let mut new = pod.clone();
    let Some((init, i)) = resizable(pod, &req.container) else {
        return Err(format!("container {:?} not found among the pod's containers and sidecars", req.container));
    };
    let s = new.spec.as_mut().ok_or("the pod has no spec")?;
    let c: &mut Container = if init { &mut s.init_containers.as_mut().expect("found")[i] } else { &mut s.containers[i] };
    let r = c.resources.get_or_insert_with(ResourceRequirements::default);
    for (which, changes) in [("requests", &req.requests), ("limits", &req.limits)] {
        for (k, v) in changes {
            if k != "cpu" && k != "memory" {
                return Err(format!("spec.containers[{}].resources.{which}[{k}]: only cpu and memory can be resized", req.container));
            }
            let q = ParsedQuantity::parse(v).map_err(|e| format!("spec.containers[{}].resources.{which}[{k}]: {v:?}: {e}", req.container))?;
            if q.is_negative() {
                return Err(format!("spec.containers[{}].resources.{which}[{k}]: must not be negative", req.container));
            }
            let m = if which == "requests" { r.requests.get_or_insert_with(BTreeMap::new) } else { r.limits.get_or_insert_with(BTreeMap::new) };
            m.insert(k.clone(), Quantity(v.clone()));
        }
    }
    for (k, l) in r.limits.clone().unwrap_or_default() {
        if let Some(q) = r.requests.as_ref().and_then(|m| m.get(&k)) {
            if crate::manifest::quantity::compare(&q.0, &l.0) == Some(std::cmp::Ordering::Greater) {
                return Err(format!("spec.containers[{}].resources.requests[{k}]: Invalid value: {:?}: must be less than or equal to {k} limit of {}", req.container, q.0, l.0));
            }
        }
    }
    let (old, now) = (qos::class_of(pod), qos::qos_class(&new));
    if old != now {
        return Err(format!("Pod QOS Class may not change as a result of resizing (from {old} to {now})"));
    }
    Ok(new)
}

/// Whether the node can hold the resized pod: beyond its allocatable
/// capacity it is Infeasible; beyond what the other pods leave, Deferred.
pub fn feasibility(new: &Pod, node: &Node, others: &[Pod]) -> Option<Pending> {
    let req = qos::pod_requests(new);
    let cpu = qos::milli(req.get("cpu").copied().unwrap_or(0));
    let mem = qos::value(req.get("memory").copied().unwrap_or(0));
    let cap_cpu = qos::milli(node.pods_cgroup.get("cpu").copied().unwrap_or(0));
    let cap_mem = qos::value(node.pods_cgroup.get("memory").copied().unwrap_or(0));
    if cpu > cap_cpu || mem > cap_mem {
        let what = if mem > cap_mem { format!("memory, requested: {mem}, capacity: {cap_mem}") } else { format!("cpu, requested: {cpu}, capacity: {cap_cpu}") };
        return Some(Pending { reason: "Infeasible".into(), message: format!("Node didn't have enough capacity: {what}") });
    }
    let attrs = super::admission::Attributes { node, others, conditions: &[], static_pod: true };
    super::admission::admit(new, &attrs).err().map(|r| Pending { reason: "Deferred".into(), message: r.message })
}

fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let s = spec::spec(pod);
    s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == name)
}

/// The names of containers whose resources differ between two specs.
pub fn changed(old: &Pod, new: &Pod) -> Vec<String> {
    let s = spec::spec(new);
    s.containers
        .iter()
        .chain(s.init_containers.iter().flatten())
        .filter(|c| container(old, &c.name).is_some_and(|o| o.resources != c.resources))
        .map(|c| c.name.clone())
        .collect()
}

/// Whether two specs differ only in container resources.
pub fn only_resources_changed(old: &Pod, new: &Pod) -> bool {
    let strip = |p: &Pod| {
        let mut s = spec::spec(p).clone();
        s.node_name = None;
        for c in s.containers.iter_mut().chain(s.init_containers.iter_mut().flatten()) {
            c.resources = None;
        }
        s
    };
    !changed(old, new).is_empty() && strip(old) == strip(new)
}

fn restart_needed(c: &Container, old: &Container) -> bool {
    let policy = |res: &str| {
        c.resize_policy.iter().flatten().find(|p| p.resource_name == res).map(|p| p.restart_policy.as_str()).unwrap_or("NotRequired") == "RestartContainer"
    };
    let (o, n) = (old.resources.clone().unwrap_or_default(), c.resources.clone().unwrap_or_default());
    ["cpu", "memory"].iter().any(|r| {
        let get = |x: &Option<BTreeMap<String, Quantity>>| x.as_ref().and_then(|m| m.get(*r)).map(|q| q.0.clone());
        (get(&o.requests) != get(&n.requests) || get(&o.limits) != get(&n.limits)) && policy(r)
    })
}

/// Applies a resize to the running pod. Errors leave PodResizeInProgress
/// with reason Error.
pub async fn actuate(w: &mut Worker, new: Pod) -> Result<(), String> {
    let old = w.pod.clone();
    let names = changed(&old, &new);
    let cg = w.shared.cgroups.as_ref();
    let (old_v, new_v) = match cg {
        Some(cg) => (Some(cg.pod_values(&old)), Some(cg.pod_values(&new))),
        None => (None, None),
    };
    let pod_path = cg.map(|c| c.pod_path(&new));
    // Grow the pod cgroup first: the larger of old and new for now.
    if let (Some(cg), Some(o), Some(n), Some(path)) = (cg, &old_v, &new_v, &pod_path) {
        let grow = super::cgroups::Values {
            cpu_shares: n.cpu_shares,
            cpu_period: n.cpu_period,
            cpu_quota: match (o.cpu_quota, n.cpu_quota) {
                (Some(a), Some(b)) if a > 0 && b > 0 => Some(a.max(b)),
                (_, Some(b)) if b <= 0 => Some(-1),
                // A new limit on an unlimited pod waits for the containers.
                _ => None,
            },
            memory: match (o.memory, n.memory) {
                (Some(a), Some(b)) if a > 0 && b > 0 => Some(a.max(b)),
                (_, Some(b)) if b <= 0 => Some(-1),
                _ => None,
            },
            ..Default::default()
        };
        cg.apply(path, &grow).map_err(|e| format!("{e:#}"))?;
    }
    let mut rt = w.shared.cri.runtime.clone();
    let mem_cap = qos::value(w.shared.node.capacity.get("memory").copied().unwrap_or(0));
    for name in &names {
        let (Some(nc), Some(oc)) = (container(&new, name).cloned(), container(&old, name).cloned()) else { continue };
        let Some(cur) = w.current(name).0.filter(|o| o.running()).cloned() else { continue };
        if restart_needed(&nc, &oc) {
            w.pod = new.clone();
            w.kill_container(&nc, &cur.id, None, "resize").await;
            continue;
        }
        let res = super::spec::resources(&w.shared.node, &nc, qos::oom_score_adj(&new, &nc, mem_cap));
        if let Err(e) = rt.update_container_resources(cri::UpdateContainerResourcesRequest { container_id: cur.id.clone(), linux: Some(res), ..Default::default() }).await {
            return Err(format!("UpdateContainerResources of container {name}: {}", e.message()));
        }
    }
    // Then the pod cgroup's final values.
    if let (Some(cg), Some(n), Some(path)) = (cg, &new_v, &pod_path) {
        cg.apply(path, n).map_err(|e| format!("{e:#}"))?;
    }
    w.pod = new;
    if let Some(cg) = w.shared.cgroups.as_ref() {
        cg.update_qos(std::slice::from_ref(&w.pod));
    }
    Ok(())
}

/// Resize state of a pod worker.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// A resize that waits (Infeasible, Deferred).
    pub pending: Option<Pending>,
    /// A resize being applied: `Some(None)`, or that failed: `Some(Some(msg))`.
    pub in_progress: Option<Option<String>>,
}

/// PodResizePending and PodResizeInProgress, when they apply.
pub fn conditions(w: &Worker, now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Vec<k8s_openapi::api::core::v1::PodCondition> {
    use k8s_openapi::api::core::v1::PodCondition;
    let mut out = Vec::new();
    if let Some(p) = &w.resize.pending {
        out.push(PodCondition {
            type_: "PodResizePending".into(),
            status: "True".into(),
            reason: Some(p.reason.clone()),
            message: Some(p.message.clone()),
            last_transition_time: Some(now.clone()),
            ..Default::default()
        });
    }
    if let Some(err) = &w.resize.in_progress {
        out.push(PodCondition {
            type_: "PodResizeInProgress".into(),
            status: "True".into(),
            reason: err.as_ref().map(|_| "Error".to_string()),
            message: err.clone(),
            last_transition_time: Some(now.clone()),
            ..Default::default()
        });
    }
    out
}

/// A container's `allocatedResources` (its requests) and, while it runs,
/// `resources` (what its cgroup holds: the allocated requests and limits).
pub fn container_resources(st: &mut k8s_openapi::api::core::v1::ContainerStatus, c: &Container) {
    let pick = |m: Option<&BTreeMap<String, Quantity>>| -> Option<BTreeMap<String, Quantity>> {
        let m: BTreeMap<String, Quantity> = m.into_iter().flatten().filter(|(k, _)| *k == "cpu" || *k == "memory").map(|(k, v)| (k.clone(), v.clone())).collect();
        (!m.is_empty()).then_some(m)
    };
    let r = c.resources.as_ref();
    let mut requests = pick(r.and_then(|r| r.requests.as_ref())).unwrap_or_default();
    // Requests default to limits.
    for (k, v) in pick(r.and_then(|r| r.limits.as_ref())).unwrap_or_default() {
        requests.entry(k).or_insert(v);
    }
    let requests = (!requests.is_empty()).then_some(requests);
    st.allocated_resources = requests.clone();
    if st.state.as_ref().is_some_and(|s| s.running.is_some()) {
        st.resources = Some(ResourceRequirements { requests, limits: pick(r.and_then(|r| r.limits.as_ref())), claims: None });
    }
}

#[cfg(test)]
mod tests {
    use super::super::node::{Machine, NodeConfig};
    use super::super::qos::NANO;
    use super::*;

    fn pod(res: &str) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: p, uid: u}}\nspec: {{containers: [{{name: c, image: i, resources: {res}}}]}}\n")).unwrap()
    }

    fn req(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResizeRequest {
        let m = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ResizeRequest { container: "c".into(), requests: m(requests), limits: m(limits) }
    }

    #[test]
    fn apiserver_checks() {
        let g = pod("{limits: {cpu: 100m, memory: 32Mi}, requests: {cpu: 100m, memory: 32Mi}}");
        let n = resized(&g, &req(&[("cpu", "200m")], &[("cpu", "200m")])).unwrap();
        assert_eq!(changed(&g, &n), vec!["c".to_string()]);
        assert!(only_resources_changed(&g, &n));
        let e = resized(&g, &req(&[("cpu", "50m")], &[])).unwrap_err();
        assert!(e.contains("Pod QOS Class may not change"), "{e}");
        let e = resized(&g, &req(&[], &[("ephemeral-storage", "1Gi")])).unwrap_err();
        assert!(e.contains("only cpu and memory"), "{e}");
        let b = pod("{requests: {cpu: 100m}}");
        let e = resized(&b, &req(&[("cpu", "1")], &[("cpu", "500m")])).unwrap_err();
        assert!(e.contains("must be less than or equal to cpu limit"), "{e}");
        assert!(resized(&b, &req(&[], &[("cpu", "x")])).is_err());
        let e = ResizeRequest { container: "nope".into(), ..Default::default() };
        assert!(resized(&b, &e).unwrap_err().contains("not found"));
    }

    #[test]
    fn infeasible_and_deferred() {
        let mut capacity = qos::List::new();
        capacity.insert("cpu".into(), 2 * NANO);
        capacity.insert("memory".into(), (1i128 << 30) * NANO);
        capacity.insert("pods".into(), 110 * NANO);
        let n = Node::new("n", NodeConfig { eviction_hard: Default::default(), ..Default::default() }, Machine { capacity, cpus: vec![0, 1] });
        let p = pod("{requests: {cpu: 3}}");
        let r = feasibility(&p, &n, &[]).unwrap();
        assert_eq!((r.reason.as_str(), r.message.as_str()), ("Infeasible", "Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000"));
        let other = pod("{requests: {cpu: 1500m}}");
        let r = feasibility(&pod("{requests: {cpu: 1}}"), &n, &[other]).unwrap();
        assert_eq!(r.reason, "Deferred");
        assert_eq!(r.message, "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000");
        assert!(feasibility(&pod("{requests: {cpu: 1}}"), &n, &[]).is_none());
    }
}
