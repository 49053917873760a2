//! Kubernetes Pod spec → CRI sandbox and container configs, the way kubelet
//! builds them (labels, annotations, log paths, namespaces, resources,
//! security context).

use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use std::collections::HashMap;

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const ANN_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const ANN_HASH: &str = "io.kubernetes.container.hash";
pub const ANN_TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
pub const ANN_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";

pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

pub fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

pub fn host_network(pod: &Pod) -> bool {
    spec(pod).host_network == Some(true)
}

/// Kubelet's log directory of a pod: `<root>/<ns>_<name>_<uid>`.
pub fn log_directory(log_root: &std::path::Path, pod: &Pod) -> String {
    log_root.join(format!("{}_{}_{}", pod_namespace(pod), pod_name(pod), pod_uid(pod))).display().to_string()
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    l.insert(LABEL_POD_NAME.into(), pod_name(pod).into());
    l.insert(LABEL_POD_NAMESPACE.into(), pod_namespace(pod).into());
    l.insert(LABEL_POD_UID.into(), pod_uid(pod).into());
    l
}

/// The sandbox config of attempt `attempt` of the pod.
pub fn sandbox_config(pod: &Pod, attempt: u32, log_root: &std::path::Path, cgroup_parent: &str) -> cri::PodSandboxConfig {
    let s = spec(pod);
    let hostname = if host_network(pod) {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        s.hostname.clone().unwrap_or_else(|| pod_name(pod).chars().take(63).collect())
    };
    let dns_config = match s.dns_policy.as_deref() {
        Some("None") => s.dns_config.as_ref().map(|d| cri::DnsConfig {
            servers: d.nameservers.clone().unwrap_or_default(),
            searches: d.searches.clone().unwrap_or_default(),
            options: d.options.iter().flatten().map(|o| match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            }).collect(),
        }),
        // No cluster DNS in standalone mode: the host's resolv.conf (kubelet's fallback).
        _ => None,
    };
    let port_mappings = s
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let psc = s.security_context.as_ref();
    let ns_mode = |host: Option<bool>, pod_level: cri::NamespaceMode| if host == Some(true) { cri::NamespaceMode::Node as i32 } else { pod_level as i32 };
    let namespace_options = cri::NamespaceOption {
        network: ns_mode(s.host_network, cri::NamespaceMode::Pod),
        pid: if s.host_pid == Some(true) {
            cri::NamespaceMode::Node as i32
        } else if s.share_process_namespace == Some(true) {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Container as i32
        },
        ipc: ns_mode(s.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    };
    let sysctls = psc.and_then(|p| p.sysctls.as_ref()).into_iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect();
    let mut annotations: HashMap<String, String> = pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect();
    annotations.insert("kubernetes.io/config.source".into(), "file".into());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: pod_name(pod).into(), uid: pod_uid(pod).into(), namespace: pod_namespace(pod).into(), attempt }),
        hostname,
        log_directory: log_directory(log_root, pod),
        dns_config,
        port_mappings,
        labels: pod_labels(pod),
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options),
                run_as_user: psc.and_then(|p| p.run_as_user).map(|v| cri::Int64Value { value: v }),
                run_as_group: psc.and_then(|p| p.run_as_group).map(|v| cri::Int64Value { value: v }),
                supplemental_groups: supplemental_groups(pod),
                seccomp: Some(seccomp(psc.and_then(|p| p.seccomp_profile.as_ref()))),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

/// The pod's supplemental groups, then its fsGroup (as kubelet adds it).
fn supplemental_groups(pod: &Pod) -> Vec<i64> {
    let psc = spec(pod).security_context.as_ref();
    let mut g = psc.and_then(|p| p.supplemental_groups.clone()).unwrap_or_default();
    g.extend(psc.and_then(|p| p.fs_group));
    g
}

/// Seccomp from the Kubernetes profile; RuntimeDefault when unset (kubelet's
/// `seccompDefault: true`).
fn seccomp(p: Option<&k8s_openapi::api::core::v1::SeccompProfile>) -> cri::SecurityProfile {
    use cri::security_profile::ProfileType;
    match p.map(|p| p.type_.as_str()) {
        Some("Unconfined") => cri::SecurityProfile { profile_type: ProfileType::Unconfined as i32, localhost_ref: String::new() },
        Some("Localhost") => cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: p.and_then(|p| p.localhost_profile.clone()).unwrap_or_default(),
        },
        _ => cri::SecurityProfile { profile_type: ProfileType::RuntimeDefault as i32, localhost_ref: String::new() },
    }
}

/// Linux resources of a container, as kubelet computes them: cpu shares
/// from the request (a limit alone counts as the request; at least 2), CFS
/// quota from the limit over the node's period, the memory limit (swap
/// stays off: the runtime sets memory+swap to the limit), hugepages, and on
/// cgroup v2 `memory.oom.group` so an OOM kill takes the whole container.
pub fn resources(node: &super::node::Node, c: &Container, oom_score_adj: i64) -> cri::LinuxContainerResources {
    use super::qos;
    let req = qos::container_requests(c);
    let lim = qos::container_limits(c);
    let cpu_req = qos::milli(req.get("cpu").copied().unwrap_or(0));
    let cpu_lim = qos::milli(lim.get("cpu").copied().unwrap_or(0));
    let mem_lim = qos::value(lim.get("memory").copied().unwrap_or(0));
    let shares = if cpu_req == 0 && cpu_lim != 0 { qos::shares(cpu_lim) } else { qos::shares(cpu_req) };
    let mut r = cri::LinuxContainerResources { cpu_shares: shares, memory_limit_in_bytes: mem_lim.max(0), oom_score_adj, ..Default::default() };
    if node.cfg.cpu_cfs_quota {
        let period = node.cfg.cfs_period().unwrap_or(100_000);
        r.cpu_period = period;
        r.cpu_quota = qos::quota(cpu_lim, period);
    }
    for (k, v) in lim.iter().chain(req.iter()) {
        if let Some(size) = k.strip_prefix("hugepages-") {
            let page = size.replace("Ki", "KB").replace("Mi", "MB").replace("Gi", "GB");
            if !r.hugepage_limits.iter().any(|h| h.page_size == page) {
                r.hugepage_limits.push(cri::HugepageLimit { page_size: page, limit: qos::value(*v).max(0) as u64 });
            }
        }
    }
    if berth_runtime::linux::cgroups::is_unified() {
        r.unified.insert("memory.oom.group".into(), "1".into());
    }
    r
}

/// A container's resources in a pod on this node, oom_score_adj included.
pub fn container_resources(node: &super::node::Node, pod: &Pod, c: &Container) -> cri::LinuxContainerResources {
    let mem = super::qos::value(node.capacity.get("memory").copied().unwrap_or(0));
    resources(node, c, super::qos::oom_score_adj(pod, c, mem))
}

/// The pod-level resources and RuntimeClass overhead kubelet hands the
/// runtime with the sandbox (for runtimes that size a VM or account pods).
pub fn sandbox_resources(node: &super::node::Node, pod: &Pod) -> (cri::LinuxContainerResources, Option<cri::LinuxContainerResources>) {
    use super::qos;
    let mut no_overhead = pod.clone();
    if let Some(s) = no_overhead.spec.as_mut() {
        s.overhead = None;
    }
    let req = qos::pod_requests(&no_overhead);
    let lim = qos::pod_limits(&no_overhead).limits;
    let as_container = |req_cpu: Option<i128>, lim_cpu: i128, lim_mem: i128| {
        let mut c = Container::default();
        let mut r = k8s_openapi::api::core::v1::ResourceRequirements::default();
        let q = |n: i128| k8s_openapi::apimachinery::pkg::api::resource::Quantity(format!("{n}n"));
        let mut limits = std::collections::BTreeMap::new();
        if lim_cpu > 0 {
            limits.insert("cpu".to_string(), q(lim_cpu));
        }
        if lim_mem > 0 {
            limits.insert("memory".to_string(), q(lim_mem));
        }
        r.limits = Some(limits);
        r.requests = req_cpu.map(|n| [("cpu".to_string(), q(n))].into());
        c.resources = Some(r);
        let mut out = resources(node, &c, 0);
        out.unified.clear();
        out
    };
    let res = as_container(req.get("cpu").copied(), lim.get("cpu").copied().unwrap_or(0), lim.get("memory").copied().unwrap_or(0));
    let overhead = spec(pod).overhead.as_ref().map(|o| {
        let get = |k: &str| o.get(k).and_then(|q| crate::manifest::quantity::ParsedQuantity::parse(&q.0).ok()).map(|p| p.nanos()).unwrap_or(0);
        as_container(Some(get("cpu")), get("cpu"), get("memory"))
    });
    (res, overhead)
}

/// Inputs of a container config that come from outside the spec.
pub struct ContainerInputs {
    pub attempt: u32,
    pub image: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<cri::Mount>,
    pub resources: cri::LinuxContainerResources,
}

/// The CRI config of one container of the pod.
pub fn container_config(pod: &Pod, c: &Container, inp: ContainerInputs) -> cri::ContainerConfig {
    let vars: std::collections::BTreeMap<&str, &str> = inp.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |v: &Option<Vec<String>>| v.iter().flatten().map(|s| super::env::expand(s, &vars)).collect::<Vec<_>>();
    let mut labels = HashMap::new();
    labels.insert(LABEL_POD_NAME.to_string(), pod_name(pod).to_string());
    labels.insert(LABEL_POD_NAMESPACE.to_string(), pod_namespace(pod).to_string());
    labels.insert(LABEL_POD_UID.to_string(), pod_uid(pod).to_string());
    labels.insert(LABEL_CONTAINER_NAME.to_string(), c.name.clone());
    let mut annotations = HashMap::new();
    annotations.insert(ANN_RESTART_COUNT.to_string(), inp.attempt.to_string());
    annotations.insert(ANN_HASH.to_string(), container_hash(c));
    annotations.insert(ANN_TERMINATION_MESSAGE_PATH.to_string(), c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into()));
    annotations.insert(ANN_GRACE.to_string(), spec(pod).termination_grace_period_seconds.unwrap_or(30).to_string());
    let sc = c.security_context.as_ref();
    let psc = spec(pod).security_context.as_ref();
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    let security_context = cri::LinuxContainerSecurityContext {
        capabilities: caps.map(|c| cri::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            ..Default::default()
        }),
        privileged,
        namespace_options: None,
        run_as_user: sc.and_then(|s| s.run_as_user).or(psc.and_then(|p| p.run_as_user)).map(|v| cri::Int64Value { value: v }),
        run_as_group: sc.and_then(|s| s.run_as_group).or(psc.and_then(|p| p.run_as_group)).map(|v| cri::Int64Value { value: v }),
        readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        supplemental_groups: supplemental_groups(pod),
        no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        seccomp: Some(seccomp(sc.and_then(|s| s.seccomp_profile.as_ref()).or(psc.and_then(|p| p.seccomp_profile.as_ref())))),
        ..Default::default()
    };
    let mut sec = security_context;
    sec.namespace_options = Some(cri::NamespaceOption {
        network: if host_network(pod) { cri::NamespaceMode::Node as i32 } else { cri::NamespaceMode::Pod as i32 },
        pid: if spec(pod).host_pid == Some(true) {
            cri::NamespaceMode::Node as i32
        } else if spec(pod).share_process_namespace == Some(true) {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Container as i32
        },
        ipc: if spec(pod).host_ipc == Some(true) { cri::NamespaceMode::Node as i32 } else { cri::NamespaceMode::Pod as i32 },
        ..Default::default()
    });
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: inp.attempt }),
        image: Some(cri::ImageSpec { image: inp.image, ..Default::default() }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: inp.envs.iter().map(|(k, v)| cri::KeyValue { key: k.clone(), value: v.clone().into() }).collect(),
        mounts: inp.mounts,
        labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, inp.attempt),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(cri::LinuxContainerConfig { resources: Some(inp.resources), security_context: Some(sec) }),
        ..Default::default()
    }
}

/// A hash of the container spec: a change means the container is replaced.
pub fn container_hash(c: &Container) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(serde_json::to_vec(c).unwrap_or_default());
    hex::encode(&d[..8])
}

#[cfg(test)]
mod tests {
    use super::super::node::{Machine, Node, NodeConfig};
    use super::super::qos::{List, NANO};
    use super::*;

    fn node() -> Node {
        let mut capacity = List::new();
        capacity.insert("cpu".into(), 2 * NANO);
        capacity.insert("memory".into(), (1i128 << 30) * NANO);
        Node::new("n", NodeConfig::default(), Machine { capacity, cpus: vec![0, 1] })
    }

    #[test]
    fn container_and_sandbox_resources() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nspec:\n  overhead: {cpu: 100m, memory: 10Mi}\n  containers:\n  - {name: a, image: i, resources: {requests: {cpu: 250m}, limits: {cpu: 500m, memory: 64Mi}}}\n  - {name: b, image: i, resources: {limits: {cpu: 100m, memory: 16Mi, hugepages-2Mi: 4Mi}}}\n",
        )
        .unwrap();
        let n = node();
        let a = resources(&n, &spec(&pod).containers[0], 5);
        assert_eq!((a.cpu_shares, a.cpu_quota, a.cpu_period, a.memory_limit_in_bytes, a.oom_score_adj), (256, 50_000, 100_000, 64 << 20, 5));
        let b = resources(&n, &spec(&pod).containers[1], 0);
        assert_eq!(b.cpu_shares, 102, "the limit is the request");
        assert_eq!(b.hugepage_limits, vec![cri::HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 }]);
        let none: Pod = serde_yaml::from_str("metadata: {name: p}\nspec: {containers: [{name: c, image: i}]}").unwrap();
        let c = resources(&n, &spec(&none).containers[0], 1000);
        assert_eq!((c.cpu_shares, c.cpu_quota, c.memory_limit_in_bytes), (2, 0, 0));
        let (sb, overhead) = sandbox_resources(&n, &pod);
        assert_eq!((sb.cpu_shares, sb.cpu_quota, sb.memory_limit_in_bytes), (358, 60_000, 80 << 20));
        let o = overhead.unwrap();
        assert_eq!((o.cpu_shares, o.cpu_quota, o.memory_limit_in_bytes), (102, 10_000, 10 << 20));
    }
}
