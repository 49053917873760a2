//! CRI stats, metrics and resource updates through the socket: a pod with
//! a container burning CPU and holding ~20 MB, then ContainerStats,
//! ListContainerStats, PodSandboxStats, the metrics RPCs and
//! UpdateContainerResources / UpdatePodSandboxResources read back from the
//! cgroup files.

use berth_tests::{block_on, require_root, CriServer};
use cri_proto::v1 as cri;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

use berth_tests::cgroup::unified;

/// A cgroup file of `path` for `controller` (the unified directory on v2).
fn cg_file(controller: &str, path: &str, file: &str) -> PathBuf {
    berth_tests::cgroup::dir(controller, path).join(file)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

fn val(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().expect("value present").value
}

#[test]
fn stats_metrics_and_updates() {
    require_root();
    let server = CriServer::start_with_busybox();
    let parent = format!("/berth-stats-{}", std::process::id());
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: "stats".into(), namespace: "default".into(), uid: "uid-stats".into(), attempt: 0 }),
        hostname: "stats-pod".into(),
        labels: [("app".to_string(), "stats".to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig { cgroup_parent: parent.clone(), ..Default::default() }),
        ..Default::default()
    };
    let ctr = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "burn".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: "cri/busybox:1".into(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), "x=$(head -c 20000000 /dev/zero | tr '\\0' a); echo data > /written; while true; do :; done".into()],
        labels: [("role".to_string(), "burner".to_string())].into(),
        ..Default::default()
    };
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, cid) = berth_tests::run_pod_with_container(&mut rt, &pod, &ctr).await;

        // Wait for the memory to be allocated and the file written.
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            let s = rt.container_stats(cri::ContainerStatsRequest { container_id: cid.clone() }).await.unwrap().into_inner().stats.unwrap();
            let ws = s.memory.as_ref().map_or(0, |m| val(&m.working_set_bytes));
            let wl = s.writable_layer.as_ref().map_or(0, |w| val(&w.used_bytes));
            if ws > 10_000_000 && wl > 0 {
                break s;
            }
            assert!(Instant::now() < deadline, "working set {ws} / writable layer {wl} never grew: {s:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let a = first.attributes.as_ref().unwrap();
        assert_eq!(a.id, cid);
        assert_eq!(a.metadata.as_ref().unwrap().name, "burn");
        assert_eq!(a.labels.get("role").map(String::as_str), Some("burner"));
        let cpu1 = val(&first.cpu.as_ref().unwrap().usage_core_nano_seconds);
        assert!(cpu1 > 0);
        let mem = first.memory.as_ref().unwrap();
        assert!(val(&mem.usage_bytes) >= val(&mem.working_set_bytes));
        assert!(mem.available_bytes.is_none(), "no limit yet: {mem:?}");
        let wl = first.writable_layer.as_ref().unwrap();
        assert!(val(&wl.inodes_used) >= 2, "{wl:?}");
        assert!(!wl.fs_id.as_ref().unwrap().mountpoint.is_empty());

        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = rt.container_stats(cri::ContainerStatsRequest { container_id: cid.clone() }).await.unwrap().into_inner().stats.unwrap();
        let cpu = second.cpu.as_ref().unwrap();
        assert!(val(&cpu.usage_core_nano_seconds) > cpu1, "cpu usage increases");
        assert!(val(&cpu.usage_nano_cores) > 0, "a rate on the second sample: {cpu:?}");
        assert!(cpu.timestamp > first.cpu.as_ref().unwrap().timestamp);

        // Unknown ids.
        let e = rt.container_stats(cri::ContainerStatsRequest { container_id: "nope".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: "nope".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        // List filters.
        let list = |f: cri::ContainerStatsFilter| {
            let mut rt = rt.clone();
            async move { rt.list_container_stats(cri::ListContainerStatsRequest { filter: Some(f) }).await.unwrap().into_inner().stats }
        };
        let by_pod = list(cri::ContainerStatsFilter { pod_sandbox_id: sid.clone(), ..Default::default() }).await;
        assert_eq!(by_pod.len(), 1);
        assert_eq!(by_pod[0].attributes.as_ref().unwrap().id, cid);
        assert!(list(cri::ContainerStatsFilter { pod_sandbox_id: "ffffffff".into(), ..Default::default() }).await.is_empty());
        assert_eq!(list(cri::ContainerStatsFilter { label_selector: [("role".into(), "burner".into())].into(), ..Default::default() }).await.len(), 1);
        assert!(list(cri::ContainerStatsFilter { label_selector: [("role".into(), "other".into())].into(), ..Default::default() }).await.is_empty());
        assert_eq!(list(cri::ContainerStatsFilter { id: cid.clone(), ..Default::default() }).await.len(), 1);

        // The stream: one snapshot, then the end.
        let mut stream = rt.stream_container_stats(cri::StreamContainerStatsRequest { filter: None }).await.unwrap().into_inner();
        let msg = stream.message().await.unwrap().expect("one snapshot");
        assert!(msg.container_stats.iter().any(|s| s.attributes.as_ref().unwrap().id == cid));
        assert!(stream.message().await.unwrap().is_none(), "stream ends");

        // Pod stats: traffic on lo from a ping inside the pod (it stays there).
        let ping = rt
            .exec_sync(cri::ExecSyncRequest { container_id: cid.clone(), cmd: vec!["ping".into(), "-c1".into(), "-W1".into(), "127.0.0.1".into()], timeout: 10 })
            .await
            .unwrap()
            .into_inner();
        let ps = rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: sid.clone() }).await.unwrap().into_inner().stats.unwrap();
        assert_eq!(ps.attributes.as_ref().unwrap().id, sid);
        let linux = ps.linux.as_ref().unwrap();
        let net = linux.network.as_ref().expect("network stats");
        let lo = net.default_interface.as_ref().unwrap();
        assert_eq!(lo.name, "lo");
        if ping.exit_code == 0 {
            assert!(val(&lo.rx_bytes) > 0 && val(&lo.tx_bytes) > 0, "{lo:?}");
        }
        assert!(val(&linux.process.as_ref().unwrap().process_count) >= 2, "pause and the shell: {linux:?}");
        assert!(val(&linux.cpu.as_ref().unwrap().usage_core_nano_seconds) >= cpu1);
        assert!(val(&linux.memory.as_ref().unwrap().working_set_bytes) > 10_000_000);
        assert_eq!(linux.containers.len(), 1);
        assert_eq!(linux.containers[0].attributes.as_ref().unwrap().id, cid);
        let pods = rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: Some(cri::PodSandboxStatsFilter { id: sid.clone(), ..Default::default() }) }).await.unwrap().into_inner().stats;
        assert_eq!(pods.len(), 1);
        let mut stream = rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: None }).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().unwrap().pod_sandbox_stats.iter().any(|p| p.attributes.as_ref().unwrap().id == sid));
        assert!(stream.message().await.unwrap().is_none());

        // Metrics.
        let descs = rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {}).await.unwrap().into_inner().descriptors;
        let ws_desc = descs.iter().find(|d| d.name == "container_memory_working_set_bytes").expect("working set descriptor");
        let metrics = rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.unwrap().into_inner().pod_metrics;
        let pm = metrics.iter().find(|m| m.pod_sandbox_id == sid).expect("pod metrics");
        assert!(pm.metrics.iter().any(|m| m.name == "container_network_receive_bytes_total"));
        let cm = pm.container_metrics.iter().find(|c| c.container_id == cid).expect("container metrics");
        let ws = cm.metrics.iter().find(|m| m.name == "container_memory_working_set_bytes").unwrap();
        assert!(val(&ws.value) > 10_000_000);
        assert_eq!(ws.metric_type, cri::MetricType::Gauge as i32);
        assert_eq!(ws.label_values.len(), ws_desc.label_keys.len());
        assert!(cm.metrics.iter().any(|m| m.name == "container_cpu_usage_seconds_total" && m.metric_type == cri::MetricType::Counter as i32));
        let mut stream = rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {}).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().unwrap().pod_sandbox_metrics.iter().any(|p| p.pod_sandbox_id == sid));

        // UpdateContainerResources: the live cgroup and the status.
        let cgpath = format!("{parent}/{cid}");
        let res = cri::LinuxContainerResources { cpu_period: 100_000, cpu_quota: 50_000, cpu_shares: 512, memory_limit_in_bytes: 200 << 20, ..Default::default() };
        rt.update_container_resources(cri::UpdateContainerResourcesRequest { container_id: cid.clone(), linux: Some(res.clone()), windows: None, ..Default::default() }).await.unwrap();
        if unified() {
            assert_eq!(read(&cg_file("memory", &cgpath, "memory.max")), (200u64 << 20).to_string());
            assert_eq!(read(&cg_file("cpu", &cgpath, "cpu.max")), "50000 100000");
            // Kubernetes' conversion: 1 + (shares - 2) * 9999 / 262142.
            assert_eq!(read(&cg_file("cpu", &cgpath, "cpu.weight")), "20", "cpu.weight of 512 shares");
        } else {
            assert_eq!(read(&cg_file("memory", &cgpath, "memory.limit_in_bytes")), (200u64 << 20).to_string());
            assert_eq!(read(&cg_file("cpu", &cgpath, "cpu.cfs_quota_us")), "50000");
            assert_eq!(read(&cg_file("cpu", &cgpath, "cpu.shares")), "512");
        }
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false }).await.unwrap().into_inner().status.unwrap();
        assert_eq!(st.resources.unwrap().linux.unwrap(), res);
        let s = rt.container_stats(cri::ContainerStatsRequest { container_id: cid.clone() }).await.unwrap().into_inner().stats.unwrap();
        let avail = val(&s.memory.as_ref().unwrap().available_bytes);
        assert!(avail > 0 && avail < 200 << 20, "available below the new limit: {avail}");
        let e = rt
            .update_container_resources(cri::UpdateContainerResourcesRequest { container_id: "nope".into(), linux: Some(res.clone()), windows: None, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let bad = cri::LinuxContainerResources { memory_limit_in_bytes: -5, ..Default::default() };
        let e = rt.update_container_resources(cri::UpdateContainerResourcesRequest { container_id: cid.clone(), linux: Some(bad), windows: None, ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // UpdatePodSandboxResources: the pod cgroup.
        let pod_res = cri::LinuxContainerResources { memory_limit_in_bytes: 300 << 20, cpu_shares: 1024, ..Default::default() };
        rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest { pod_sandbox_id: sid.clone(), overhead: None, resources: Some(pod_res) })
            .await
            .unwrap();
        let f = if unified() { cg_file("memory", &parent, "memory.max") } else { cg_file("memory", &parent, "memory.limit_in_bytes") };
        assert_eq!(read(&f), (300u64 << 20).to_string());
        if unified() {
            assert_eq!(read(&cg_file("cpu", &parent, "cpu.weight")), "39", "cpu.weight of 1024 shares");
        } else {
            assert_eq!(read(&cg_file("cpu", &parent, "cpu.shares")), "1024");
        }
        let e = rt
            .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest { pod_sandbox_id: "nope".into(), overhead: None, resources: None })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
    });
    drop(server);
    for d in berth_tests::cgroup::dirs(&parent) {
        let _ = std::fs::remove_dir(d);
    }
}
