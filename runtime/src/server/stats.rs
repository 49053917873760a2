//! CRI stats and metrics RPCs (container and pod sandbox usage from their
//! cgroups, writable layers and network namespaces) and live resource
//! updates.

use super::error;
use crate::container::stats::{disk_usage, mountpoint_of};
use crate::container::{ContainerRecord, Manager as Containers, State as CState};
use crate::linux::cgroups::stats::{CgroupStats, Layout};
use crate::sandbox::{Manager as Sandboxes, SandboxRecord, SandboxState};
use cri_proto::v1 as cri;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tonic::Status;

/// A stream answering with one item, then ending.
pub type OneShot<T> = tonic::codegen::BoxStream<T>;

fn once<T: Send + 'static>(item: T) -> OneShot<T> {
    Box::pin(tokio_stream::once(Ok(item)))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

fn u64v(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// Runs blocking work (file reads, cgroup writes) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Status> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(e.to_string()))?
}

/// Previous CPU sample (timestamp ns, cumulative usage ns) per container
/// id or `pod/<id>`, for `usage_nano_cores`.
fn samples() -> &'static Mutex<HashMap<String, (i64, u64)>> {
    static S: OnceLock<Mutex<HashMap<String, (i64, u64)>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// CPU rate in nanocores between the previous sample of `key` and this
/// one; `None` on the first sample. Records this one.
pub fn rate(key: &str, ts: i64, usage: u64) -> Option<u64> {
    let mut m = samples().lock().unwrap_or_else(|e| e.into_inner());
    let prev = m.insert(key.to_string(), (ts, usage));
    let (pts, pusage) = prev?;
    if ts <= pts || usage < pusage {
        return None;
    }
    Some(((usage - pusage) as u128 * 1_000_000_000 / (ts - pts) as u128) as u64)
}

fn forget(key: &str) {
    samples().lock().unwrap_or_else(|e| e.into_inner()).remove(key);
}

fn cpu_usage(key: &str, ts: i64, s: &CgroupStats) -> Option<cri::CpuUsage> {
    let usage = s.cpu_usage_ns?;
    Some(cri::CpuUsage { timestamp: ts, usage_core_nano_seconds: u64v(usage), usage_nano_cores: rate(key, ts, usage).and_then(u64v), ..Default::default() })
}

fn memory_usage(ts: i64, s: &CgroupStats) -> Option<cri::MemoryUsage> {
    let m = s.memory.as_ref()?;
    Some(cri::MemoryUsage {
        timestamp: ts,
        working_set_bytes: u64v(m.working_set),
        available_bytes: m.limit.and_then(|l| u64v(l.saturating_sub(m.working_set))),
        usage_bytes: u64v(m.usage),
        rss_bytes: u64v(m.rss),
        page_faults: u64v(m.page_faults),
        major_page_faults: u64v(m.major_page_faults),
        ..Default::default()
    })
}

fn swap_usage(ts: i64, s: &CgroupStats) -> Option<cri::SwapUsage> {
    let m = s.memory.as_ref()?;
    let used = m.swap_usage?;
    Some(cri::SwapUsage { timestamp: ts, swap_usage_bytes: u64v(used), swap_available_bytes: m.swap_limit.and_then(|l| u64v(l.saturating_sub(used))) })
}

/// One container's stats (cgroup usage, writable layer).
fn container_stats_of(c: &Containers, layout: &Layout, r: &ContainerRecord) -> cri::ContainerStats {
    let ts = now_ns();
    let s = layout.stats(&r.cgroups_path);
    let upper = c.upper_dir(&r.id);
    let du = disk_usage(&upper);
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
        }),
        cpu: cpu_usage(&r.id, ts, &s),
        memory: memory_usage(ts, &s),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: mountpoint_of(&upper).display().to_string() }),
            used_bytes: u64v(du.bytes),
            inodes_used: u64v(du.inodes),
        }),
        swap: swap_usage(ts, &s),
        io: None,
    }
}

fn layout() -> Result<Layout, Status> {
    Layout::host().map_err(|e| Status::internal(e.to_string()))
}

fn live(c: &Containers, r: &ContainerRecord) -> bool {
    c.status(&r.id).is_ok_and(|s| matches!(s.state, CState::Running | CState::Created))
}

pub async fn container_stats(c: Arc<Containers>, key: String) -> Result<cri::ContainerStatsResponse, Status> {
    if key.is_empty() {
        return Err(error::missing("container_id"));
    }
    blocking(move || {
        let id = c.resolve(&key).map_err(error::container)?;
        let r = c.status(&id).map_err(error::container)?.record;
        Ok(cri::ContainerStatsResponse { stats: Some(container_stats_of(&c, &layout()?, &r)) })
    })
    .await
}

fn list_containers_sync(c: &Containers, filter: Option<&cri::ContainerStatsFilter>) -> Result<Vec<cri::ContainerStats>, Status> {
    let layout = layout()?;
    let records = c.records().map_err(error::container)?;
    let mut out = Vec::new();
    for r in &records {
        let keep = filter.is_none_or(|f| {
            (f.id.is_empty() || r.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
                && f.label_selector.iter().all(|(k, v)| r.config.labels.get(k) == Some(v))
        });
        if keep && live(c, r) {
            out.push(container_stats_of(c, &layout, r));
        }
    }
    // Forget samples of containers that are gone.
    if filter.is_none() {
        let ids: std::collections::HashSet<_> = records.iter().map(|r| r.id.as_str()).collect();
        samples().lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| k.starts_with("pod/") || ids.contains(k.as_str()));
    }
    Ok(out)
}

pub async fn list_container_stats(c: Arc<Containers>, filter: Option<cri::ContainerStatsFilter>) -> Result<Vec<cri::ContainerStats>, Status> {
    blocking(move || list_containers_sync(&c, filter.as_ref())).await
}

pub async fn stream_container_stats(c: Arc<Containers>, filter: Option<cri::ContainerStatsFilter>) -> Result<OneShot<cri::StreamContainerStatsResponse>, Status> {
    let container_stats = list_container_stats(c, filter).await?;
    Ok(once(cri::StreamContainerStatsResponse { container_stats }))
}

/// Per-interface counters from /proc/<pid>/net/dev text.
pub fn parse_net_dev(text: &str) -> Vec<cri::NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if v.len() < 16 {
                return None;
            }
            Some(cri::NetworkInterfaceUsage { name: name.trim().into(), rx_bytes: u64v(v[0]), rx_errors: u64v(v[2]), tx_bytes: u64v(v[8]), tx_errors: u64v(v[10]) })
        })
        .collect()
}

fn network_usage(r: &SandboxRecord, ts: i64) -> Option<cri::NetworkUsage> {
    // Host-network pods have no network of their own to report.
    r.namespaces.net.as_ref()?;
    if r.pid <= 0 {
        return None;
    }
    let interfaces = parse_net_dev(&std::fs::read_to_string(format!("/proc/{}/net/dev", r.pid)).ok()?);
    let default_interface =
        interfaces.iter().find(|i| i.name == "eth0").or_else(|| interfaces.iter().find(|i| i.name == "lo")).cloned();
    Some(cri::NetworkUsage { timestamp: ts, default_interface, interfaces })
}

fn pod_stats_of(c: &Containers, layout: &Layout, records: &[ContainerRecord], r: &SandboxRecord, ready: bool) -> cri::PodSandboxStats {
    let ts = now_ns();
    let s = layout.stats(&r.cgroup_path);
    let containers = records.iter().filter(|cr| cr.sandbox_id == r.id && live(c, cr)).map(|cr| container_stats_of(c, layout, cr)).collect();
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: cpu_usage(&format!("pod/{}", r.id), ts, &s),
            memory: memory_usage(ts, &s),
            network: if ready { network_usage(r, ts) } else { None },
            process: s.processes.map(|n| cri::ProcessUsage { timestamp: ts, process_count: u64v(n) }),
            containers,
            io: None,
        }),
        windows: None,
    }
}

pub async fn pod_sandbox_stats(sb: Arc<Sandboxes>, c: Arc<Containers>, key: String) -> Result<cri::PodSandboxStatsResponse, Status> {
    if key.is_empty() {
        return Err(error::missing("pod_sandbox_id"));
    }
    blocking(move || {
        let id = sb.resolve(&key).map_err(error::sandbox)?;
        let st = sb.status(&id).map_err(error::sandbox)?;
        let records = c.records().map_err(error::container)?;
        Ok(cri::PodSandboxStatsResponse { stats: Some(pod_stats_of(&c, &layout()?, &records, &st.record, st.state == SandboxState::Ready)) })
    })
    .await
}

fn list_pods_sync(sb: &Sandboxes, c: &Containers, filter: Option<&cri::PodSandboxStatsFilter>) -> Result<Vec<cri::PodSandboxStats>, Status> {
    let layout = layout()?;
    let records = c.records().map_err(error::container)?;
    let pods = sb.list().map_err(error::sandbox)?;
    let mut out = Vec::new();
    for st in &pods {
        let r = &st.record;
        let keep = filter.is_none_or(|f| (f.id.is_empty() || r.id.starts_with(&f.id)) && f.label_selector.iter().all(|(k, v)| r.config.labels.get(k) == Some(v)));
        // Stats of stopped pods are not asked for (kubelet lists ready ones).
        if keep && st.state == SandboxState::Ready {
            out.push(pod_stats_of(c, &layout, &records, r, true));
        }
    }
    if filter.is_none() {
        let ids: std::collections::HashSet<_> = pods.iter().filter(|p| p.state == SandboxState::Ready).map(|p| format!("pod/{}", p.record.id)).collect();
        let stale: Vec<String> = samples().lock().unwrap_or_else(|e| e.into_inner()).keys().filter(|k| k.starts_with("pod/") && !ids.contains(*k)).cloned().collect();
        stale.iter().for_each(|k| forget(k));
    }
    Ok(out)
}

pub async fn list_pod_sandbox_stats(sb: Arc<Sandboxes>, c: Arc<Containers>, filter: Option<cri::PodSandboxStatsFilter>) -> Result<Vec<cri::PodSandboxStats>, Status> {
    blocking(move || list_pods_sync(&sb, &c, filter.as_ref())).await
}

pub async fn stream_pod_sandbox_stats(
    sb: Arc<Sandboxes>,
    c: Arc<Containers>,
    filter: Option<cri::PodSandboxStatsFilter>,
) -> Result<OneShot<cri::StreamPodSandboxStatsResponse>, Status> {
    let pod_sandbox_stats = list_pod_sandbox_stats(sb, c, filter).await?;
    Ok(once(cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }))
}

fn check_resources(r: &cri::LinuxContainerResources) -> Result<(), Status> {
    for (field, v) in [
        ("cpu_shares", r.cpu_shares),
        ("cpu_period", r.cpu_period),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
        ("oom_score_adj", r.oom_score_adj.max(-1000) + 1000),
    ] {
        if v < 0 {
            return Err(Status::invalid_argument(format!("resources.{field}: {v} is negative")));
        }
    }
    if r.cpu_quota < -1 || r.memory_swap_limit_in_bytes < -1 {
        return Err(Status::invalid_argument("resources: cpu_quota and memory_swap_limit_in_bytes must be -1 (unlimited) or non-negative"));
    }
    Ok(())
}

pub async fn update_container_resources(c: Arc<Containers>, req: cri::UpdateContainerResourcesRequest) -> Result<(), Status> {
    if req.container_id.is_empty() {
        return Err(error::missing("container_id"));
    }
    let res = req.linux.ok_or_else(|| error::missing("linux"))?;
    check_resources(&res)?;
    blocking(move || {
        let id = c.resolve(&req.container_id).map_err(error::container)?;
        c.update_resources(&id, &res).map_err(error::container)
    })
    .await
}

pub async fn update_pod_sandbox_resources(sb: Arc<Sandboxes>, req: cri::UpdatePodSandboxResourcesRequest) -> Result<(), Status> {
    if req.pod_sandbox_id.is_empty() {
        return Err(error::missing("pod_sandbox_id"));
    }
    for r in req.overhead.iter().chain(req.resources.iter()) {
        check_resources(r)?;
    }
    blocking(move || {
        let id = sb.resolve(&req.pod_sandbox_id).map_err(error::sandbox)?;
        sb.update_resources(&id, req.overhead.as_ref(), req.resources.as_ref()).map_err(error::sandbox)
    })
    .await
}

/// Metrics exposed by ListPodSandboxMetrics: (name, help, type, label keys).
const CONTAINER_LABELS: &[&str] = &["container", "id", "pod", "namespace"];
const NETWORK_LABELS: &[&str] = &["container", "id", "pod", "namespace", "interface"];
const METRICS: &[(&str, &str, cri::MetricType, &[&str])] = &[
    ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds (whole seconds).", cri::MetricType::Counter, CONTAINER_LABELS),
    ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", cri::MetricType::Gauge, CONTAINER_LABELS),
    ("container_memory_working_set_bytes", "Current working set in bytes.", cri::MetricType::Gauge, CONTAINER_LABELS),
    ("container_memory_rss", "Size of RSS in bytes.", cri::MetricType::Gauge, CONTAINER_LABELS),
    ("container_memory_failures_total", "Cumulative count of memory page faults.", cri::MetricType::Counter, CONTAINER_LABELS),
    ("container_fs_usage_bytes", "Number of bytes consumed by the container's writable layer.", cri::MetricType::Gauge, CONTAINER_LABELS),
    ("container_fs_inodes_total", "Number of inodes used by the container's writable layer.", cri::MetricType::Gauge, CONTAINER_LABELS),
    ("container_processes", "Number of processes running inside the pod.", cri::MetricType::Gauge, CONTAINER_LABELS),
    ("container_network_receive_bytes_total", "Cumulative count of bytes received.", cri::MetricType::Counter, NETWORK_LABELS),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", cri::MetricType::Counter, NETWORK_LABELS),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", cri::MetricType::Counter, NETWORK_LABELS),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", cri::MetricType::Counter, NETWORK_LABELS),
];

pub fn metric_descriptors() -> Vec<cri::MetricDescriptor> {
    METRICS
        .iter()
        .map(|(name, help, _, labels)| cri::MetricDescriptor { name: name.to_string(), help: help.to_string(), label_keys: labels.iter().map(|s| s.to_string()).collect() })
        .collect()
}

struct MetricSink<'a> {
    ts: i64,
    labels: Vec<String>,
    out: &'a mut Vec<cri::Metric>,
}

impl MetricSink<'_> {
    fn push(&mut self, name: &str, value: Option<u64>, extra: &[&str]) {
        let Some(value) = value else { return };
        let Some((_, _, typ, _)) = METRICS.iter().find(|m| m.0 == name) else { return };
        let mut label_values = self.labels.clone();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(cri::Metric { name: name.into(), timestamp: self.ts, metric_type: *typ as i32, label_values, value: u64v(value) });
    }
}

fn container_metrics(s: &cri::ContainerStats, pod: &str, ns: &str) -> cri::ContainerMetrics {
    let a = s.attributes.clone().unwrap_or_default();
    let name = a.metadata.map(|m| m.name).unwrap_or_default();
    let mut metrics = Vec::new();
    let ts = s.cpu.as_ref().map(|c| c.timestamp).unwrap_or_else(now_ns);
    let mut sink = MetricSink { ts, labels: vec![name, a.id.clone(), pod.into(), ns.into()], out: &mut metrics };
    let v = |x: &Option<cri::UInt64Value>| x.as_ref().map(|v| v.value);
    if let Some(c) = &s.cpu {
        sink.push("container_cpu_usage_seconds_total", v(&c.usage_core_nano_seconds).map(|n| n / 1_000_000_000), &[]);
    }
    if let Some(m) = &s.memory {
        sink.push("container_memory_usage_bytes", v(&m.usage_bytes), &[]);
        sink.push("container_memory_working_set_bytes", v(&m.working_set_bytes), &[]);
        sink.push("container_memory_rss", v(&m.rss_bytes), &[]);
        sink.push("container_memory_failures_total", v(&m.page_faults), &[]);
    }
    if let Some(f) = &s.writable_layer {
        sink.push("container_fs_usage_bytes", v(&f.used_bytes), &[]);
        sink.push("container_fs_inodes_total", v(&f.inodes_used), &[]);
    }
    cri::ContainerMetrics { container_id: a.id, metrics }
}

fn pod_metrics(p: &cri::PodSandboxStats) -> cri::PodSandboxMetrics {
    let a = p.attributes.clone().unwrap_or_default();
    let meta = a.metadata.unwrap_or_default();
    let linux = p.linux.clone().unwrap_or_default();
    let mut metrics = Vec::new();
    // Pod-level series carry the container label "POD", as cadvisor does
    // for the sandbox.
    let mut sink = MetricSink { ts: now_ns(), labels: vec!["POD".into(), a.id.clone(), meta.name.clone(), meta.namespace.clone()], out: &mut metrics };
    let v = |x: &Option<cri::UInt64Value>| x.as_ref().map(|v| v.value);
    if let Some(pr) = &linux.process {
        sink.push("container_processes", v(&pr.process_count), &[]);
    }
    if let Some(n) = &linux.network {
        for i in &n.interfaces {
            sink.push("container_network_receive_bytes_total", v(&i.rx_bytes), &[&i.name]);
            sink.push("container_network_receive_errors_total", v(&i.rx_errors), &[&i.name]);
            sink.push("container_network_transmit_bytes_total", v(&i.tx_bytes), &[&i.name]);
            sink.push("container_network_transmit_errors_total", v(&i.tx_errors), &[&i.name]);
        }
    }
    let container_metrics = linux.containers.iter().map(|c| container_metrics(c, &meta.name, &meta.namespace)).collect();
    cri::PodSandboxMetrics { pod_sandbox_id: a.id, metrics, container_metrics }
}

pub async fn list_pod_sandbox_metrics(sb: Arc<Sandboxes>, c: Arc<Containers>) -> Result<Vec<cri::PodSandboxMetrics>, Status> {
    Ok(list_pod_sandbox_stats(sb, c, None).await?.iter().map(pod_metrics).collect())
}

pub async fn stream_pod_sandbox_metrics(sb: Arc<Sandboxes>, c: Arc<Containers>) -> Result<OneShot<cri::StreamPodSandboxMetricsResponse>, Status> {
    let pod_sandbox_metrics = list_pod_sandbox_metrics(sb, c).await?;
    Ok(once(cri::StreamPodSandboxMetricsResponse { pod_sandbox_metrics }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     168       2    0    0    0     0          0         0      168       2    0    0    0     0       0          0\n  \
eth0: 1000 10 1 0 0 0 0 0 2000 20 3 0 0 0 0 0\n";
        let v = parse_net_dev(text);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].name.as_str(), v[0].rx_bytes.unwrap().value, v[0].tx_bytes.unwrap().value), ("lo", 168, 168));
        assert_eq!((v[1].rx_errors.unwrap().value, v[1].tx_bytes.unwrap().value, v[1].tx_errors.unwrap().value), (1, 2000, 3));
    }

    #[test]
    fn cpu_rate() {
        assert_eq!(rate("t-rate", 1_000_000_000, 5), None);
        assert_eq!(rate("t-rate", 2_000_000_000, 500_000_005), Some(500_000_000), "half a core");
        assert_eq!(rate("t-rate", 2_000_000_000, 600_000_000), None, "no time elapsed");
    }

    #[test]
    fn descriptors_cover_metrics() {
        let names: Vec<_> = metric_descriptors().into_iter().map(|d| d.name).collect();
        assert!(names.contains(&"container_cpu_usage_seconds_total".to_string()));
        assert!(names.contains(&"container_memory_working_set_bytes".to_string()));
        let s = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes { id: "c1".into(), ..Default::default() }),
            memory: Some(cri::MemoryUsage { working_set_bytes: u64v(7), ..Default::default() }),
            ..Default::default()
        };
        let m = container_metrics(&s, "p", "ns");
        let ws = m.metrics.iter().find(|m| m.name == "container_memory_working_set_bytes").unwrap();
        assert_eq!(ws.value.as_ref().unwrap().value, 7);
        assert_eq!(ws.metric_type, cri::MetricType::Gauge as i32);
        assert_eq!(ws.label_values, vec!["", "c1", "p", "ns"]);
    }
}
