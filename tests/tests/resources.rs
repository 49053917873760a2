//! Resource management end to end with `berth run`: QoS classes and the
//! kubepods cgroup tree with the values kubelet computes, OOM kills, CPU
//! throttling, the pod pids limit, admission, eviction under simulated
//! memory pressure, in-place resize, `berth top`, image garbage collection.
//! Real cgroups (v1 here; v2 file names where the host has them).

use berth_tests::standalone::{condition, container, phase, running, Standalone, IMAGE};
use serde_json::Value;
use std::time::{Duration, Instant};

use berth_tests::cgroup::{dir as cg_dir, read, unified};

/// CFS quota in µs, -1 for none.
fn quota(path: &str) -> i64 {
    if unified() {
        let v = read("cpu", path, "cpu.max");
        let q = v.split_whitespace().next().unwrap_or("max");
        return if q == "max" { -1 } else { q.parse().unwrap() };
    }
    read("cpu", path, "cpu.cfs_quota_us").parse().unwrap()
}

/// cpu shares (v1), or the v2 weight they convert to.
fn shares(path: &str) -> i64 {
    if unified() {
        return read("cpu", path, "cpu.weight").parse().unwrap();
    }
    read("cpu", path, "cpu.shares").parse().unwrap()
}

fn expect_shares(s: i64) -> i64 {
    if unified() {
        1 + ((s - 2) * 9999) / 262142
    } else {
        s
    }
}

/// Memory limit in bytes, None when unlimited.
fn memory_limit(path: &str) -> Option<i64> {
    let v = if unified() { read("memory", path, "memory.max") } else { read("memory", path, "memory.limit_in_bytes") };
    if v == "max" {
        return None;
    }
    let n: i64 = v.parse().unwrap();
    (n < 1 << 62).then_some(n)
}

fn pids_max(path: &str) -> String {
    read("pids", path, "pids.max")
}

fn node(s: &Standalone) -> Value {
    serde_json::from_str(&s.berth_ok(&["get", "nodes", "-o", "json"])).unwrap()
}

fn container_id(p: &Value, c: &str) -> String {
    container(p, c)["containerID"].as_str().unwrap_or("").rsplit('/').next().unwrap().to_string()
}

/// Total memory as the node reports it (sysinfo: MemTotal in bytes).
fn mem_total() -> i64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: i64 = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen in {secs}s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// No cgroup below the test's parent in any hierarchy.
fn assert_no_cgroups(s: &Standalone) {
    let left = s.leftover_cgroups();
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

#[test]
fn qos_classes_and_the_cgroup_values_kubelet_computes() {
    let mut s = Standalone::new();
    let m = s.write(
        "qos.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: guaranteed}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, command: ["sleep", "1000"], resources: {{limits: {{cpu: 250m, memory: 64Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: burstable}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - {{name: init, image: {IMAGE}, command: ["true"], resources: {{requests: {{cpu: 300m}}}}}}
  containers:
  - {{name: c, image: {IMAGE}, command: ["sleep", "1000"], resources: {{requests: {{cpu: 100m, memory: 32Mi}}, limits: {{memory: 64Mi}}}}}}
  - {{name: d, image: {IMAGE}, command: ["sleep", "1000"], resources: {{requests: {{cpu: 50m}}, limits: {{memory: 16Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: besteffort}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, command: ["sleep", "1000"]}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap(), "--pod-pids-limit", "50"]);
    let root = s.cgroup_parent.clone();
    let mut uid = std::collections::HashMap::new();
    for (name, class) in [("guaranteed", "Guaranteed"), ("burstable", "Burstable"), ("besteffort", "BestEffort")] {
        let p = s.wait_pod(name, "running", 60, |p| running(p, "c"));
        assert_eq!(p["status"]["qosClass"], class, "{p}");
        uid.insert(name, p["metadata"]["uid"].as_str().unwrap().to_string());
    }

    // The QoS cgroups.
    let kubepods = format!("{root}/kubepods");
    assert_eq!(shares(&format!("{kubepods}/besteffort")), expect_shares(2));
    // Burstable shares follow its pods' cpu requests: max(100m + 50m, 300m init).
    assert_eq!(shares(&format!("{kubepods}/burstable")), expect_shares(307));
    let cpus = std::thread::available_parallelism().unwrap().get() as i64;
    assert_eq!(shares(&kubepods), expect_shares(cpus * 1024));

    // Guaranteed: directly under kubepods, quota, shares, memory, pids.
    let g = format!("{kubepods}/pod{}", uid["guaranteed"]);
    assert_eq!(quota(&g), 25_000);
    assert_eq!(shares(&g), expect_shares(256));
    assert_eq!(memory_limit(&g), Some(64 << 20));
    assert_eq!(pids_max(&g), "50");
    // Burstable: shares from the effective request, memory limit (both
    // containers declare one), no cpu quota (not every container has a limit).
    let b = format!("{kubepods}/burstable/pod{}", uid["burstable"]);
    assert_eq!(shares(&b), expect_shares(307));
    assert_eq!(memory_limit(&b), Some(80 << 20));
    assert_eq!(quota(&b), -1);
    // BestEffort: the minimum shares, nothing else.
    let e = format!("{kubepods}/besteffort/pod{}", uid["besteffort"]);
    assert_eq!(shares(&e), expect_shares(2));
    assert_eq!(memory_limit(&e), None);

    // Containers beneath their pod cgroup, with their own values.
    let gp = s.pod("guaranteed").unwrap();
    let gc = format!("{g}/{}", container_id(&gp, "c"));
    assert_eq!(quota(&gc), 25_000);
    assert_eq!(memory_limit(&gc), Some(64 << 20));
    if !unified() && cg_dir("memory", &gc).join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(read("memory", &gc, "memory.memsw.limit_in_bytes"), (64i64 << 20).to_string(), "no swap");
    }
    let bp = s.pod("burstable").unwrap();
    let bc = format!("{b}/{}", container_id(&bp, "c"));
    assert_eq!(shares(&bc), expect_shares(102));
    assert_eq!(quota(&bc), -1);

    // oom_score_adj per class; Berth cannot go below its own value (no
    // CAP_SYS_RESOURCE here), so Guaranteed gets the higher of the two.
    let pid_of = |path: &str| -> i32 { read("memory", path, "cgroup.procs").lines().next().unwrap().parse().unwrap() };
    let adj = |pid: i32| -> i64 { std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap().trim().parse().unwrap() };
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap().trim().parse().unwrap();
    assert_eq!(adj(pid_of(&gc)), (-997i64).max(own));
    let expect = (1000 - (1000 * (32i64 << 20)) / mem_total()).clamp(3, 999);
    assert_eq!(adj(pid_of(&bc)), expect);
    let ep = s.pod("besteffort").unwrap();
    assert_eq!(adj(pid_of(&format!("{e}/{}", container_id(&ep, "c")))), 1000);

    // The node's allocatable shows in `get nodes`.
    let n = node(&s);
    assert_eq!(n["status"]["capacity"]["pods"], "110");
    assert_eq!(condition(&n, "MemoryPressure")["status"], "False");

    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
    assert_no_cgroups(&s);
}

#[test]
fn systemd_driver_names_the_slices() {
    let mut s = Standalone::new();
    let m = s.write(
        "p.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: sd}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: {IMAGE}, command: [sleep, '1000'], resources: {{requests: {{cpu: 10m}}}}}}]\n"),
    );
    s.start(&[m.to_str().unwrap(), "--cgroup-driver", "systemd"]);
    let p = s.wait_pod("sd", "running", 60, |p| running(p, "c"));
    let slice = s.cgroup_parent.trim_start_matches('/').replace('-', "_");
    let uid = p["metadata"]["uid"].as_str().unwrap().replace('-', "_");
    let path = format!("/{slice}.slice/{slice}-kubepods.slice/{slice}-kubepods-burstable.slice/{slice}-kubepods-burstable-pod{uid}.slice");
    assert_eq!(shares(&path), expect_shares(10));
    let cid = container_id(&p, "c");
    assert!(cg_dir("memory", &format!("{path}/{cid}")).is_dir(), "the container's cgroup is below the pod slice");
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    for root in berth_tests::cgroup::roots() {
        let d = root.join(format!("{slice}.slice"));
        assert!(!d.join(format!("{slice}-kubepods.slice")).exists(), "left: {}", d.display());
        let _ = std::fs::remove_dir(&d);
    }
}

#[test]
fn memory_hog_is_oom_killed_and_restarted_per_policy() {
    let mut s = Standalone::new();
    // The shell keeps the whole output of the pipe in memory.
    let hog = r#"["sh", "-c", "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived"]"#;
    let m = s.write(
        "hog.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog-always}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {IMAGE}, command: {hog}, resources: {{limits: {{memory: 24Mi}}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: hog-never}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {IMAGE}, command: {hog}, resources: {{limits: {{memory: 24Mi}}}}}}]
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("hog-never", "Failed", 90, |p| phase(p) == "Failed");
    let t = &container(&p, "c")["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{p}");
    assert_eq!(t["exitCode"], 137);
    assert_eq!(container(&p, "c")["restartCount"], 0);
    let p = s.wait_pod("hog-always", "restarted after an OOM kill", 90, |p| {
        container(p, "c")["restartCount"].as_i64().unwrap_or(0) >= 1 && container(p, "c")["lastState"]["terminated"].is_object()
    });
    let last = &container(&p, "c")["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{p}");
    assert_eq!(last["exitCode"], 137);
    assert!(s.berth_ok(&["logs", "hog-always", "--previous"]).starts_with("start"));
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}

#[test]
fn cpu_limit_throttles_a_busy_container() {
    let mut s = Standalone::new();
    let m = s.write(
        "busy.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: busy}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, command: ["sh", "-c", "while :; do :; done"], resources: {{limits: {{cpu: 100m, memory: 32Mi}}}}}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("busy", "running", 60, |p| running(p, "c"));
    let path = format!("{}/kubepods/pod{}/{}", s.cgroup_parent, p["metadata"]["uid"].as_str().unwrap(), container_id(&p, "c"));
    assert_eq!(quota(&path), 10_000);
    let throttled = || -> u64 {
        read("cpu", &path, "cpu.stat").lines().find_map(|l| l.strip_prefix("nr_throttled ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    wait_until("throttling", 60, || throttled() > 0);
    let first = throttled();
    wait_until("more throttling", 60, || throttled() > first);
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}

#[test]
fn a_fork_loop_stops_at_the_pod_pids_limit() {
    let mut s = Standalone::new();
    // The shell counts the processes it started; it gives up at the first
    // fork that fails.
    let m = s.write(
        "fork.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: forker}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "i=0; while [ $i -lt 60 ]; do sleep 1000 & i=$((i+1)); echo $i; done; echo all forked"]
"#
        ),
    );
    s.start(&[m.to_str().unwrap(), "--pod-pids-limit", "16"]);
    let p = s.wait_pod("forker", "the loop to stop", 60, |p| phase(p) == "Failed");
    let pod = format!("{}/kubepods/besteffort/pod{}", s.cgroup_parent, p["metadata"]["uid"].as_str().unwrap());
    assert_eq!(pids_max(&pod), "16");
    let logs = s.berth_ok(&["logs", "forker"]);
    assert!(!logs.contains("all forked"), "{logs}");
    assert!(logs.contains("can't fork") || logs.contains("Resource temporarily unavailable"), "{logs}");
    let started: u32 = logs.lines().filter_map(|l| l.trim().parse().ok()).max().unwrap_or(0);
    assert!((1..16).contains(&started), "{started} processes started under a limit of 16:\n{logs}");
    // The refused forks are counted (v1: where the fork happened; v2: where
    // the limit is).
    let max = |path: &str| -> u64 { read("pids", path, "pids.events").lines().find_map(|l| l.strip_prefix("max ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0) };
    let c = format!("{pod}/{}", container_id(&p, "c"));
    assert!(max(&pod) + max(&c) > 0, "no pids.events");
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}

#[test]
fn oversized_pods_are_rejected_and_the_rest_keep_running() {
    let mut s = Standalone::new();
    let small = |name: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: {IMAGE}, command: [sleep, '1000']}}]\n");
    let docs = [
        small("small-a"),
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: cpu-hog}}\nspec:\n  containers: [{{name: c, image: {IMAGE}, resources: {{requests: {{cpu: '1000'}}}}}}]\n"),
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: mem-hog}}\nspec:\n  containers: [{{name: c, image: {IMAGE}, resources: {{requests: {{memory: 1000Ti}}}}}}]\n"),
        small("small-b"),
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: elsewhere}}\nspec:\n  nodeSelector: {{disk: ssd}}\n  containers: [{{name: c, image: {IMAGE}}}]\n"),
        small("small-c"),
        small("one-too-many"),
    ];
    let m = s.write("pods.yaml", &docs.join("---\n"));
    s.start(&[m.to_str().unwrap(), "--max-pods", "3", "--system-reserved", "cpu=500m,memory=100Mi", "--node-labels", "disk=hdd"]);
    for n in ["small-a", "small-b", "small-c"] {
        s.wait_pod(n, "running", 60, |p| running(p, "c"));
    }
    let cpus = std::thread::available_parallelism().unwrap().get() as i64;
    let rejected = |name: &str| {
        let p = s.wait_pod(name, "rejected", 30, |p| phase(p) == "Failed");
        assert!(p["status"]["containerStatuses"].is_null() || container(&p, "c")["state"]["running"].is_null(), "{p}");
        (p["status"]["reason"].as_str().unwrap_or("").to_string(), p["status"]["message"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        rejected("cpu-hog"),
        ("OutOfcpu".to_string(), format!("Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: 0, capacity: {}", cpus * 1000 - 500))
    );
    let alloc_mem = mem_total() - (100 << 20) - (100 << 20);
    assert_eq!(
        rejected("mem-hog"),
        ("OutOfmemory".to_string(), format!("Pod was rejected: Node didn't have enough resource: memory, requested: {}, used: 0, capacity: {alloc_mem}", 1000i64 << 40))
    );
    assert_eq!(rejected("elsewhere"), ("NodeAffinity".to_string(), "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".to_string()));
    assert_eq!(rejected("one-too-many"), ("OutOfpods".to_string(), "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3".to_string()));
    let table = s.berth_ok(&["get", "pods"]);
    let row = table.lines().find(|l| l.starts_with("cpu-hog ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("OutOfcpu"), "{table}");
    let d = s.berth_ok(&["describe", "pod", "mem-hog"]);
    assert!(d.contains("OutOfmemory"), "{d}");
    let n = node(&s);
    assert_eq!(n["status"]["allocatable"]["cpu"], format!("{}m", cpus * 1000 - 500));
    assert_eq!(n["metadata"]["labels"]["disk"], "hdd");
    for name in ["small-a", "small-b", "small-c"] {
        assert_eq!(phase(&s.pod(name).unwrap()), "Running");
    }
    // Deleting a running pod makes room.
    s.berth_ok(&["delete", "pod", "small-a"]);
    let st = s.interrupt();
    assert_eq!(st.code(), Some(0), "{}", s.output());
    s.assert_clean();
}

#[test]
fn eviction_order_under_simulated_memory_pressure() {
    let mut s = Standalone::new();
    // Each pod keeps a known amount in its /dev/shm (charged to its cgroup).
    let pod = |name: &str, mib: u32, res: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: c\n    image: {IMAGE}\n    command: [sh, -c, 'dd if=/dev/zero of=/dev/shm/fill bs=1M count={mib} 2>/dev/null; echo filled; exec sleep 1000']\n    resources: {res}\n"
        )
    };
    let docs = [
        pod("guaranteed", 1, "{limits: {cpu: 100m, memory: 200Mi}}"),
        pod("burst-under", 1, "{requests: {memory: 100Mi}}"),
        pod("burst-over", 20, "{requests: {memory: 10Mi}}"),
        pod("besteffort", 30, "{}"),
    ];
    let m = s.write("pods.yaml", &docs.join("---\n"));
    let signals = s.root.path().join("signals");
    s.start(&[
        m.to_str().unwrap(),
        "--housekeeping-interval",
        "1s",
        "--eviction-pressure-transition-period",
        "3s",
        "--simulate-signals-file",
        signals.to_str().unwrap(),
    ]);
    let order = ["besteffort", "burst-over", "burst-under", "guaranteed"];
    for n in order {
        s.wait_pod(n, "filled", 60, |p| running(p, "c"));
        wait_until("the fill", 60, || s.berth_ok(&["logs", n]).contains("filled"));
    }
    // Usage samples that include the fills, then pressure.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&signals, "memory.available=50Mi\n").unwrap();
    let evicted = |p: &Value| phase(p) == "Failed" && p["status"]["reason"] == "Evicted";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pods = s.pods();
        let gone: Vec<bool> = order.iter().map(|n| pods.iter().find(|p| p["metadata"]["name"] == *n).is_some_and(evicted)).collect();
        // Whatever is evicted so far is a prefix of the expected order.
        let n = gone.iter().take_while(|g| **g).count();
        assert!(gone[n..].iter().all(|g| !g), "evicted out of order: {:?}\n{}", order.iter().zip(&gone).collect::<Vec<_>>(), s.output());
        if n == order.len() {
            break;
        }
        assert!(Instant::now() < deadline, "evicted so far: {:?}\n{}", &order[..n], s.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = s.pod("besteffort").unwrap();
    let msg = p["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. Container c was using "), "{msg}");
    assert!(msg.ends_with(", request is 0, has larger consumption of memory. "), "{msg}");
    assert_eq!(condition(&p, "DisruptionTarget")["reason"], "TerminationByKubelet");
    assert!(container(&p, "c")["state"]["terminated"].is_object(), "{p}");
    let d = s.berth_ok(&["describe", "pod", "burst-over"]);
    assert!(d.contains("Evicted"), "{d}");
    assert_eq!(condition(&node(&s), "MemoryPressure")["status"], "True");
    // Under memory pressure a new BestEffort pod is refused.
    let late = s.write("late.yaml", &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: late-be}}\nspec:\n  containers: [{{name: c, image: {IMAGE}}}]\n"));
    s.berth_ok(&["run", late.to_str().unwrap()]);
    let p = s.wait_pod("late-be", "rejected", 30, |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "Evicted");
    assert_eq!(p["status"]["message"], "Pod was rejected: The node had condition: [MemoryPressure]. ");
    // Pressure gone: the condition clears after the transition period.
    std::fs::remove_file(&signals).unwrap();
    wait_until("MemoryPressure to clear", 60, || condition(&node(&s), "MemoryPressure")["status"] == "False");
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}

#[test]
fn in_place_resize_changes_the_live_limits() {
    let mut s = Standalone::new();
    let m = s.write(
        "r.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: r}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    command: ["sleep", "1000"]
    resources: {{requests: {{cpu: 100m, memory: 32Mi}}, limits: {{cpu: 200m, memory: 64Mi}}}}
  - name: restarts
    image: {IMAGE}
    command: ["sleep", "1000"]
    resources: {{requests: {{cpu: 50m, memory: 16Mi}}, limits: {{cpu: 100m, memory: 32Mi}}}}
    resizePolicy: [{{resourceName: memory, restartPolicy: RestartContainer}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: g}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, command: ["sleep", "1000"], resources: {{limits: {{cpu: 100m, memory: 32Mi}}}}}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("r", "running", 60, |p| running(p, "c") && running(p, "restarts"));
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let pod = format!("{}/kubepods/burstable/pod{uid}", s.cgroup_parent);
    let cid = container_id(&p, "c");
    let c = format!("{pod}/{cid}");
    assert_eq!((quota(&c), memory_limit(&c)), (20_000, Some(64 << 20)));
    assert_eq!((quota(&pod), memory_limit(&pod)), (30_000, Some(96 << 20)));

    let out = s.berth_ok(&["resize", "pod", "r", "-c", "c", "--requests", "cpu=200m", "--limits", "cpu=400m,memory=128Mi"]);
    assert!(out.contains("pod/r resized"), "{out}");
    assert_eq!(quota(&c), 40_000);
    assert_eq!(memory_limit(&c), Some(128 << 20));
    assert_eq!(shares(&c), expect_shares(204));
    assert_eq!(quota(&pod), 50_000);
    assert_eq!(memory_limit(&pod), Some(160 << 20));
    assert_eq!(shares(&pod), expect_shares(256));
    let p = s.pod("r").unwrap();
    assert_eq!(container_id(&p, "c"), cid, "resized in place");
    assert_eq!(container(&p, "c")["restartCount"], 0);
    assert_eq!(container(&p, "c")["resources"]["limits"]["cpu"], "400m", "{p}");
    assert_eq!(container(&p, "c")["allocatedResources"]["cpu"], "200m");
    assert!(condition(&p, "PodResizeInProgress").is_null() && condition(&p, "PodResizePending").is_null(), "{p}");
    // Shrinking works too (--cpu sets the limit; the request differs, so it stays).
    s.berth_ok(&["resize", "pod", "r", "-c", "c", "--cpu", "300m", "--memory", "96Mi"]);
    assert_eq!((quota(&c), memory_limit(&c)), (30_000, Some(96 << 20)));
    assert_eq!(memory_limit(&pod), Some(128 << 20));

    // RestartContainer for memory: the container restarts with the new limit.
    let rid = container_id(&p, "restarts");
    s.berth_ok(&["resize", "pod", "r", "-c", "restarts", "--limits", "memory=48Mi"]);
    let p = s.wait_pod("r", "restarted", 60, |p| container(p, "restarts")["restartCount"].as_i64().unwrap_or(0) >= 1 && running(p, "restarts"));
    let rid2 = container_id(&p, "restarts");
    assert_ne!(rid, rid2);
    assert_eq!(memory_limit(&format!("{pod}/{rid2}")), Some(48 << 20));

    // Too big for the node: Infeasible, nothing changes.
    let out = s.berth(&["resize", "pod", "r", "-c", "c", "--requests", "cpu=1000", "--limits", "cpu=1000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Infeasible") && err.contains("Node didn't have enough capacity: cpu, requested: "), "{err}");
    let p = s.pod("r").unwrap();
    assert_eq!(condition(&p, "PodResizePending")["reason"], "Infeasible", "{p}");
    assert_eq!(quota(&c), 30_000);
    // A Guaranteed pod stays Guaranteed: --cpu moves request and limit.
    let g = s.wait_pod("g", "running", 60, |p| running(p, "c"));
    let gc = format!("{}/kubepods/pod{}/{}", s.cgroup_parent, g["metadata"]["uid"].as_str().unwrap(), container_id(&g, "c"));
    s.berth_ok(&["resize", "pod", "g", "--cpu", "250m"]);
    assert_eq!((quota(&gc), shares(&gc)), (25_000, expect_shares(256)));
    assert_eq!(s.pod("g").unwrap()["status"]["qosClass"], "Guaranteed");
    // The QoS class cannot change.
    let out = s.berth(&["resize", "pod", "g", "--requests", "cpu=50m"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Pod QOS Class may not change"), "{err}");
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}

#[test]
fn top_tracks_a_known_load() {
    let mut s = Standalone::new();
    let m = s.write(
        "load.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: busy}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: spin, image: {IMAGE}, command: ["sh", "-c", "while :; do :; done"], resources: {{limits: {{cpu: 500m, memory: 32Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: idle}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, command: ["sleep", "1000"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: fat}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, command: ["sh", "-c", "dd if=/dev/zero of=/dev/shm/f bs=1M count=40 2>/dev/null; exec sleep 1000"]}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap(), "--housekeeping-interval", "1s"]);
    for n in ["busy", "idle", "fat"] {
        s.wait_pod(n, "running", 60, |p| p["status"]["phase"] == "Running");
    }
    // (cpu millicores, memory MiB) per pod from `berth top pods`.
    let top = |s: &Standalone| -> Option<std::collections::HashMap<String, (i64, i64)>> {
        let out = s.berth(&["top", "pods"]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut m = std::collections::HashMap::new();
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            m.insert(f[0].to_string(), (f[1].trim_end_matches('m').parse().ok()?, f[2].trim_end_matches("Mi").parse().ok()?));
        }
        Some(m)
    };
    let mut last = None;
    wait_until("top to show the busy pod at its limit", 90, || {
        last = top(&s);
        last.as_ref().is_some_and(|m| m.get("busy").is_some_and(|b| b.0 >= 200) && m.get("fat").is_some_and(|f| f.1 >= 35))
    });
    let m = last.unwrap();
    let (busy, idle, fat) = (m["busy"], m["idle"], m["fat"]);
    assert!((200..=650).contains(&busy.0), "busy {busy:?}");
    assert!(idle.0 < 100, "idle {idle:?}");
    assert!((35..=120).contains(&fat.1), "fat {fat:?}");
    let out = s.berth_ok(&["top", "pods", "--containers", "busy"]);
    assert!(out.starts_with("POD") && out.contains("busy") && out.contains("spin"), "{out}");
    let out = s.berth_ok(&["top", "node"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    let cpu: i64 = row[1].trim_end_matches('m').parse().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as i64;
    assert!((150..=cpus * 1000 + 100).contains(&cpu), "{out}");
    assert!(row[2].ends_with('%') && row[3].ends_with("Mi") && row[4].ends_with('%'), "{out}");
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}

#[test]
fn image_gc_removes_unused_images_only() {
    let mut s = Standalone::new();
    // A second image (another ID) that no pod uses.
    let layout = tempfile::tempdir().unwrap();
    let img = berth_tests::builder::busybox_image_builder().unwrap().label("unused", "yes").build().unwrap();
    berth_tests::builder::write_oci_layout(layout.path(), &[("test/unused:1", (&img).into())]).unwrap();
    s.berth_ok(&["images", "import", layout.path().to_str().unwrap(), "--name", "test/unused:1"]);
    assert!(s.berth_ok(&["images", "ls"]).contains("test/unused"));
    let m = s.write("p.yaml", &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: user}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: {IMAGE}, command: [sleep, '1000']}}]\n"));
    s.start(&[
        m.to_str().unwrap(),
        "--housekeeping-interval",
        "1s",
        "--image-gc-high-threshold",
        "0",
        "--image-gc-low-threshold",
        "0",
        "--minimum-image-ttl-duration",
        "0s",
    ]);
    s.wait_pod("user", "running", 60, |p| running(p, "c"));
    wait_until("the unused image to go", 60, || !s.berth_ok(&["images", "ls"]).contains("test/unused"));
    let ls = s.berth_ok(&["images", "ls"]);
    assert!(ls.contains("test/busybox"), "the image in use stays: {ls}");
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}

#[test]
fn bad_node_settings_are_errors() {
    let s = Standalone::new();
    let m = s.write("p.yaml", &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: c, image: {IMAGE}}}]\n"));
    for (args, want) in [
        (vec!["--eviction-hard", "memory.avail<1Mi"], "unknown eviction signal"),
        (vec!["--system-reserved", "cpu=lots"], "systemReserved.cpu"),
        (vec!["--cgroup-driver", "upstart"], "--cgroup-driver"),
    ] {
        let mut a = vec!["run", m.to_str().unwrap()];
        a.extend(args);
        let out = s.berth(&a);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
    let cfg = s.root.path().join("kubelet.yaml");
    std::fs::write(&cfg, "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPod: 3\n").unwrap();
    let out = s.berth(&["run", m.to_str().unwrap(), "--kubelet-config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("kubelet.yaml") && err.contains("maxPod"), "{err}");
}

#[test]
fn detached_runs_keep_the_node_settings() {
    let s = Standalone::new();
    let pod = |name: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: {IMAGE}, command: [sleep, '1000']}}]\n");
    let m = s.write("two.yaml", &[pod("first"), pod("second")].join("---\n"));
    let out = s.berth_ok(&["run", "--detach", "--max-pods", "1", "--eviction-hard", "memory.available<100Mi", m.to_str().unwrap()]);
    assert!(out.contains("running in the background"), "{out}");
    let p = s.wait_pod("second", "rejected", 60, |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "OutOfpods", "{p}");
    s.wait_pod("first", "running", 60, |p| running(p, "c"));
    s.berth_ok(&["stop"]);
    s.assert_clean();
}

#[test]
fn disk_and_pid_pressure_evict_and_refuse_pods() {
    let mut s = Standalone::new();
    let pod = |name: &str, res: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 30\n  containers: [{{name: c, image: {IMAGE}, command: [sleep, '1000'], resources: {res}}}]\n");
    let m = s.write("pods.yaml", &[pod("a", "{}"), pod("b", "{requests: {memory: 10Mi}}")].join("---\n"));
    let signals = s.root.path().join("signals");
    s.start(&[
        m.to_str().unwrap(),
        "--eviction-hard",
        "memory.available<100Mi,nodefs.available<1Mi,pid.available<100",
        "--housekeeping-interval",
        "1s",
        "--eviction-pressure-transition-period",
        "2s",
        "--simulate-signals-file",
        signals.to_str().unwrap(),
    ]);
    for n in ["a", "b"] {
        s.wait_pod(n, "running", 60, |p| running(p, "c"));
    }
    std::fs::write(&signals, "nodefs.available=100Ki\n").unwrap();
    for n in ["a", "b"] {
        let p = s.wait_pod(n, "evicted", 90, |p| p["status"]["reason"] == "Evicted");
        let msg = p["status"]["message"].as_str().unwrap();
        assert!(msg.starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: 1Mi, available: 100Ki. "), "{msg}");
    }
    assert_eq!(condition(&node(&s), "DiskPressure")["status"], "True");
    let late = |name: &str| {
        let f = s.write(&format!("{name}.yaml"), &pod(name, "{requests: {memory: 10Mi}}"));
        s.berth_ok(&["run", f.to_str().unwrap()]);
        s.wait_pod(name, "rejected", 30, |p| phase(p) == "Failed")["status"]["message"].as_str().unwrap().to_string()
    };
    // Disk pressure refuses every pod, not only BestEffort ones.
    assert_eq!(late("late-disk"), "Pod was rejected: The node had condition: [DiskPressure]. ");
    std::fs::write(&signals, "pid.available=50\n").unwrap();
    wait_until("PIDPressure", 60, || condition(&node(&s), "PIDPressure")["status"] == "True");
    wait_until("DiskPressure to clear", 60, || condition(&node(&s), "DiskPressure")["status"] == "False");
    assert_eq!(late("late-pid"), "Pod was rejected: The node had condition: [PIDPressure]. ");
    std::fs::remove_file(&signals).unwrap();
    wait_until("PIDPressure to clear", 60, || condition(&node(&s), "PIDPressure")["status"] == "False");
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    s.assert_clean();
}
