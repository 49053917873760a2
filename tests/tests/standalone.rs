//! Standalone mode end to end: `berth run` with real pods from manifests,
//! read back through the kubectl-like commands.

use berth_tests::standalone::{condition, container, phase, running, waiting_reason, Standalone};

const IMG: &str = berth_tests::standalone::IMAGE;

#[test]
fn init_containers_hooks_probes_and_kubectl_commands() {
    let mut s = Standalone::new();
    let m = s.write(
        "web.yaml",
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: first
    image: {IMG}
    command: ["sh", "-c", "echo first >> /data/order; sleep 1"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  - name: second
    image: {IMG}
    command: ["sh", "-c", "echo second >> /data/order"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: app
    image: {IMG}
    command: ["sh", "-c", "echo app >> /data/order; echo app says $(GREETING); exec httpd -f -p 8080 -h /data"]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}
    - {{name: COMBINED, value: "$(POD_NAME)-$(GREETING)-$$(POD_NAME)"}}
    volumeMounts: [{{name: data, mountPath: /data}}]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo poststart >> /data/order"]}}}}
    readinessProbe:
      exec: {{command: ["test", "-f", "/data/ready"]}}
      periodSeconds: 1
  volumes:
  - name: data
    emptyDir: {{}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let pod = s.wait_pod("web", "app running", 60, |p| running(p, "app"));
    assert_eq!(phase(&pod), "Running");
    assert_eq!(condition(&pod, "Initialized")["status"], "True");
    // The readiness probe fails until the file exists.
    assert_eq!(condition(&pod, "Ready")["status"], "False", "{pod}");
    assert_eq!(container(&pod, "app")["ready"], false);
    assert_eq!(container(&pod, "first")["state"]["terminated"]["reason"], "Completed");
    assert_eq!(container(&pod, "second")["state"]["terminated"]["exitCode"], 0);

    let order = s.berth_ok(&["exec", "web", "--", "cat", "/data/order"]);
    assert_eq!(order, "first\nsecond\napp\npoststart\n", "init containers in order, postStart after start");
    s.berth_ok(&["exec", "web", "-c", "app", "--", "touch", "/data/ready"]);
    let pod = s.wait_pod("web", "ready", 30, |p| condition(p, "Ready")["status"] == "True");
    assert_eq!(condition(&pod, "ContainersReady")["status"], "True");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");

    // Environment: ConfigMap, Secret, downward API and $(VAR) expansion.
    let env = s.berth_ok(&["exec", "web", "--", "env"]);
    assert!(env.contains("GREETING=hello\n"), "{env}");
    assert!(env.contains("PASSWORD=s3cret\n"), "{env}");
    assert!(env.contains("POD_NAME=web\n"), "{env}");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    assert!(env.contains(&format!("POD_UID={uid}\n")), "{env}");
    assert!(env.contains("COMBINED=web-hello-$(POD_NAME)\n"), "{env}");

    // Exit codes pass through exec.
    let out = s.berth(&["exec", "web", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));

    // logs
    s.wait_logs(&["web"], "app says hello\n", 30);
    let logs = s.berth_ok(&["logs", "web", "-c", "app", "--timestamps"]);
    assert!(logs.ends_with(" app says hello\n") && logs.starts_with("20"), "{logs}");
    let out = s.berth(&["logs", "web", "-c", "nope"]);
    assert!(!out.status.success());

    // get, describe
    let table = s.berth_ok(&["get", "pods"]);
    let row = table.lines().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("1/1") && row.contains("Running"), "{table}");
    let wide = s.berth_ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("IP") && wide.contains("NODE"), "{wide}");
    let yaml = s.berth_ok(&["get", "pods", "web", "-o", "yaml"]);
    assert!(yaml.contains("kind: Pod") && yaml.contains("name: web"), "{yaml}");
    let d = s.berth_ok(&["describe", "pod", "web"]);
    for want in ["Name:", "web", "Init Containers:", "first", "Conditions:", "Events:", "Started", "Pulled"] {
        assert!(d.contains(want), "describe lacks {want}:\n{d}");
    }
    let missing = s.berth(&["get", "pods", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    // Ctrl-C terminates the pod and leaves nothing behind.
    let st = s.interrupt();
    assert!(st.success(), "{st}\n{}", s.output());
    s.assert_clean();
}

#[test]
fn failing_init_container_blocks_the_app() {
    let mut s = Standalone::new();
    let m = s.write(
        "pods.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: init, image: {IMG}, command: ["sh", "-c", "exit 2"]}}
  containers:
  - {{name: app, image: {IMG}, command: ["sleep", "100"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: retry}}
spec:
  initContainers:
  - {{name: init, image: {IMG}, command: ["sh", "-c", "exit 1"]}}
  containers:
  - {{name: app, image: {IMG}, command: ["sleep", "100"]}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let pod = s.wait_pod("never", "Failed", 60, |p| phase(p) == "Failed");
    assert_eq!(container(&pod, "init")["state"]["terminated"]["exitCode"], 2);
    assert!(container(&pod, "app")["state"]["waiting"].is_object(), "{pod}");
    assert_eq!(condition(&pod, "Initialized")["status"], "False");

    let pod = s.wait_pod("retry", "init restarted twice", 60, |p| container(p, "init")["restartCount"].as_i64().unwrap_or(0) >= 2);
    assert_eq!(phase(&pod), "Pending");
    assert!(waiting_reason(&pod, "app") == "PodInitializing", "{pod}");
    let table = s.berth_ok(&["get", "pods", "retry"]);
    assert!(table.contains("Init:"), "{table}");
    // The app container was never created.
    assert!(container(&pod, "app")["containerID"].is_null(), "{pod}");
}

#[test]
fn restart_policies_and_crash_loop_back_off() {
    let mut s = Standalone::new();
    let m = s.write(
        "pods.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: once}}
spec:
  restartPolicy: Never
  containers: [{{name: c, image: {IMG}, command: ["sh", "-c", "exit 3"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: done}}
spec:
  restartPolicy: OnFailure
  containers: [{{name: c, image: {IMG}, command: ["sh", "-c", "echo ok"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: flaky}}
spec:
  restartPolicy: OnFailure
  containers: [{{name: c, image: {IMG}, command: ["sh", "-c", "echo run >> /tmp/x; exit 1"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: always}}
spec:
  containers: [{{name: c, image: {IMG}, command: ["sh", "-c", "echo tick; exit 0"]}}]
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("once", "Failed", 60, |p| phase(p) == "Failed");
    assert_eq!(container(&p, "c")["state"]["terminated"]["exitCode"], 3);
    assert_eq!(container(&p, "c")["state"]["terminated"]["reason"], "Error");
    assert_eq!(container(&p, "c")["restartCount"], 0);

    let p = s.wait_pod("done", "Succeeded", 60, |p| phase(p) == "Succeeded");
    assert_eq!(container(&p, "c")["state"]["terminated"]["reason"], "Completed");
    assert_eq!(condition(&p, "Ready")["status"], "False");

    let p = s.wait_pod("flaky", "restarted 3 times", 60, |p| container(p, "c")["restartCount"].as_i64().unwrap_or(0) >= 3);
    assert_eq!(phase(&p), "Running");
    assert_eq!(container(&p, "c")["lastState"]["terminated"]["exitCode"], 1, "{p}");

    // Always restarts even successful exits, with back-off.
    let p = s.wait_pod("always", "CrashLoopBackOff", 60, |p| waiting_reason(p, "c") == "CrashLoopBackOff");
    let msg = container(&p, "c")["state"]["waiting"]["message"].as_str().unwrap_or("").to_string();
    assert!(msg.contains("back-off") && msg.contains("restarting failed container=c"), "{msg}");
    assert_eq!(container(&p, "c")["lastState"]["terminated"]["reason"], "Completed");
    let p = s.wait_pod("always", "restarted 3 times", 60, |p| container(p, "c")["restartCount"].as_i64().unwrap_or(0) >= 3);
    let d = s.berth_ok(&["describe", "pod", "always"]);
    assert!(d.contains("BackOff"), "{d}");
    // --previous shows the last run's log.
    let prev = s.berth_ok(&["logs", "always", "--previous"]);
    assert_eq!(prev, "tick\n");
    drop(p);
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn liveness_failure_restarts_and_delete_runs_pre_stop() {
    let mut s = Standalone::new();
    let host = tempfile::tempdir().unwrap();
    let m = s.write(
        "live.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: {IMG}
    command: ["sh", "-c", "touch /tmp/healthy; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    livenessProbe:
      exec: {{command: ["test", "-f", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 2
    lifecycle:
      preStop: {{exec: {{command: ["sh", "-c", "echo bye > /host/prestop"]}}}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  volumes:
  - name: host
    hostPath: {{path: {}, type: Directory}}
"#,
            host.path().display()
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    s.wait_pod("live", "running", 60, |p| running(p, "c"));
    s.berth_ok(&["exec", "live", "--", "rm", "/tmp/healthy"]);
    let p = s.wait_pod("live", "restarted by liveness", 60, |p| {
        container(p, "c")["restartCount"].as_i64().unwrap_or(0) >= 1 && running(p, "c")
    });
    assert_eq!(container(&p, "c")["lastState"]["terminated"]["exitCode"], 0, "{p}");
    let d = s.berth_ok(&["describe", "pod", "live"]);
    assert!(d.contains("Unhealthy") && d.contains("Liveness probe failed"), "{d}");
    assert!(d.contains("failed liveness probe, will be restarted"), "{d}");
    // preStop ran on the liveness kill too.
    assert_eq!(std::fs::read_to_string(host.path().join("prestop")).unwrap(), "bye\n");
    std::fs::remove_file(host.path().join("prestop")).unwrap();

    let out = s.berth_ok(&["delete", "pod", "live"]);
    assert!(out.contains("pod \"live\" deleted"), "{out}");
    assert!(s.pod("live").is_none());
    assert_eq!(std::fs::read_to_string(host.path().join("prestop")).unwrap(), "bye\n");
    let out = s.berth(&["delete", "pod", "live"]);
    assert!(!out.status.success());
    s.assert_clean();
}

#[test]
fn post_start_has_no_time_limit_but_deletion_ends_it() {
    let mut s = Standalone::new();
    let m = s.write(
        "hooks.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: slow}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "sleep 3; echo done > /tmp/hooked"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: stuck}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sleep", "1000"]
    lifecycle:
      postStart: {{exec: {{command: ["sleep", "1000"]}}}}
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    // A hook longer than the grace period completes, as under kubelet.
    s.wait_pod("slow", "running after its hook", 60, |p| running(p, "c"));
    assert_eq!(s.berth_ok(&["exec", "slow", "--", "cat", "/tmp/hooked"]), "done\n");
    assert!(!s.berth_ok(&["describe", "pod", "slow"]).contains("FailedPostStartHook"));
    // A hook that never ends keeps the started container waiting, not failed...
    let p = s.wait_pod("stuck", "started, in its hook", 60, |p| {
        waiting_reason(p, "c") == "ContainerCreating" && container(p, "c")["containerID"].as_str().is_some_and(|id| !id.is_empty())
    });
    assert_eq!(container(&p, "c")["restartCount"], 0, "{p}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!s.berth_ok(&["describe", "pod", "stuck"]).contains("FailedPostStartHook"));
    // ... and deleting the pod ends it within the grace period.
    let t = std::time::Instant::now();
    let out = s.berth_ok(&["delete", "pod", "stuck"]);
    assert!(out.contains("pod \"stuck\" deleted"), "{out}");
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "delete took {:?}", t.elapsed());
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn adopts_running_pods_after_kill_9() {
    let mut s = Standalone::new();
    let m = s.write(
        "p.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: sleeper}}
spec:
  terminationGracePeriodSeconds: 2
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"]}}]
"#
        ),
    );
    let path = m.to_str().unwrap().to_string();
    s.start(&[&path]);
    let p = s.wait_pod("sleeper", "running", 60, |p| running(p, "c"));
    let id = container(&p, "c")["containerID"].clone();
    let started = container(&p, "c")["state"]["running"]["startedAt"].clone();
    s.kill9();
    // The container keeps running without berth.
    assert!(!s.processes().is_empty());
    s.start(&[&path]);
    let p = s.wait_pod("sleeper", "running again", 60, |p| running(p, "c"));
    assert_eq!(container(&p, "c")["containerID"], id, "adopted, not restarted");
    assert_eq!(container(&p, "c")["state"]["running"]["startedAt"], started);
    assert_eq!(container(&p, "c")["restartCount"], 0);
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn invalid_manifests_are_rejected_and_valid_pods_still_run() {
    let mut s = Standalone::new();
    let good = s.write(
        "good.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: good}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"]}}]
"#
        ),
    );
    let bad = s.write(
        "bad.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: noimage}}
spec:
  containers: [{{name: c}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: dup}}
spec:
  containers: [{{name: c, image: {IMG}}}, {{name: c, image: {IMG}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: unknown}}
spec:
  containers: [{{name: c, image: {IMG}, imagePolicy: Always}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: quantity}}
spec:
  containers: [{{name: c, image: {IMG}, resources: {{limits: {{memory: 12XB}}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: twohandlers}}
spec:
  containers:
  - name: c
    image: {IMG}
    livenessProbe: {{exec: {{command: ["true"]}}, tcpSocket: {{port: 80}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badport}}
spec:
  containers:
  - name: c
    image: {IMG}
    readinessProbe: {{httpGet: {{port: http}}}}
"#
        ),
    );
    s.start(&[good.to_str().unwrap(), bad.to_str().unwrap()]);
    s.wait_pod("good", "running", 60, |p| running(p, "c"));
    let out = s.output();
    for (doc, want) in [
        ("noimage", "spec.containers[0].image"),
        ("dup", "spec.containers[1].name"),
        ("unknown", "imagePolicy"),
        ("quantity", "spec.containers[0].resources.limits"),
        ("twohandlers", "spec.containers[0].livenessProbe"),
        ("badport", "spec.containers[0].readinessProbe.httpGet.port"),
    ] {
        let line = out.lines().find(|l| l.contains(doc) && l.contains("bad.yaml")).unwrap_or_else(|| panic!("no error for {doc}:\n{out}"));
        assert!(line.contains(want), "error for {doc} should name {want}: {line}");
    }
    let names: Vec<String> = s.pods().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, vec!["good".to_string()]);
    let st = s.interrupt();
    assert_eq!(st.code(), Some(1), "exit status reports the invalid manifests");
    s.assert_clean();
}

#[test]
fn manifest_dir_follows_edits() {
    let mut s = Standalone::new();
    let pod = |name: &str, msg: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {IMG}, command: ["sh", "-c", "echo {msg}; exec sleep 1000"]}}]
"#
        )
    };
    s.write("a.yaml", &pod("a", "one"));
    let dir = s.dir.path().to_str().unwrap().to_string();
    s.start(&["--manifest-dir", &dir]);
    s.wait_pod("a", "running", 60, |p| running(p, "c"));
    s.wait_logs(&["a"], "one\n", 30);
    let uid = s.pod("a").unwrap()["metadata"]["uid"].clone();

    // Added.
    s.write("b.yaml", &pod("b", "bee"));
    s.wait_pod("b", "running", 60, |p| running(p, "c"));
    // Changed: replaced by a new pod.
    s.write("a.yaml", &pod("a", "two"));
    s.wait_pod("a", "replaced", 60, |p| p["metadata"]["uid"] != uid && running(p, "c"));
    s.wait_logs(&["a"], "two\n", 30);
    // Removed.
    std::fs::remove_file(s.dir.path().join("b.yaml")).unwrap();
    s.wait_gone("b", 60);
    // Editor temp files are ignored.
    s.write(".a.yaml.swp", "garbage");
    s.write("notes.txt", "garbage");
    assert!(s.pod("a").is_some());
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn sidecars_start_before_app_containers() {
    let mut s = Standalone::new();
    let m = s.write(
        "side.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: side}}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: setup
    image: {IMG}
    command: ["sh", "-c", "echo setup >> /data/order"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  - name: proxy
    image: {IMG}
    restartPolicy: Always
    command: ["sh", "-c", "echo proxy >> /data/order; exec sleep 1000"]
    startupProbe:
      exec: {{command: ["sh", "-c", "grep -q proxy /data/order"]}}
      periodSeconds: 1
    volumeMounts: [{{name: data, mountPath: /data}}]
  containers:
  - name: app
    image: {IMG}
    command: ["sh", "-c", "echo app >> /data/order; exec sleep 1000"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, emptyDir: {{}}}}]
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("side", "app running", 60, |p| running(p, "app"));
    assert!(running(&p, "proxy"), "the sidecar keeps running: {p}");
    assert_eq!(container(&p, "proxy")["started"], true);
    assert_eq!(s.berth_ok(&["exec", "side", "--", "cat", "/data/order"]), "setup\nproxy\napp\n");
    let table = s.berth_ok(&["get", "pods", "side"]);
    assert!(table.contains("2/2"), "the sidecar counts in READY: {table}");
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn image_pull_errors_back_off() {
    let mut s = Standalone::new();
    let reg = berth_tests::Registry::start();
    let m = s.write(
        "pull.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: missing}}
spec:
  containers: [{{name: c, image: {}, imagePullPolicy: IfNotPresent}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  containers: [{{name: c, image: example.invalid/nothing:1, imagePullPolicy: Never}}]
"#,
            reg.reference("nothing/here:1")
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("missing", "ErrImagePull", 60, |p| waiting_reason(p, "c") == "ErrImagePull");
    assert!(container(&p, "c")["state"]["waiting"]["message"].as_str().unwrap().contains("nothing/here"), "{p}");
    assert_eq!(phase(&p), "Pending");
    s.wait_pod("missing", "ImagePullBackOff", 60, |p| waiting_reason(p, "c") == "ImagePullBackOff");
    let p = s.wait_pod("never", "ErrImageNeverPull", 60, |p| waiting_reason(p, "c") == "ErrImageNeverPull");
    assert!(container(&p, "c")["state"]["waiting"]["message"].as_str().unwrap().contains("pull policy of Never"), "{p}");
    let d = s.berth_ok(&["describe", "pod", "missing"]);
    assert!(d.contains("Failed") && d.contains("Pulling"), "{d}");
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn missing_config_map_waits_then_starts() {
    let mut s = Standalone::new();
    s.write(
        "pod.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: wants}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMG}
    command: ["sh", "-c", "echo color=$COLOR; exec sleep 1000"]
    env: [{{name: COLOR, valueFrom: {{configMapKeyRef: {{name: paint, key: color}}}}}}]
"#
        ),
    );
    let dir = s.dir.path().to_str().unwrap().to_string();
    s.start(&["--manifest-dir", &dir]);
    let p = s.wait_pod("wants", "CreateContainerConfigError", 60, |p| waiting_reason(p, "c") == "CreateContainerConfigError");
    assert_eq!(container(&p, "c")["state"]["waiting"]["message"], "configmap \"paint\" not found");
    s.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: paint}\ndata: {color: blue}\n");
    s.wait_pod("wants", "running", 60, |p| running(p, "c"));
    s.wait_logs(&["wants"], "color=blue\n", 30);
    let st = s.interrupt();
    assert!(st.success());
    s.assert_clean();
}

#[test]
fn drives_a_remote_cri_endpoint() {
    // Declared first, dropped last: the run stops its pods through the server.
    let cri = berth_tests::CriServer::start_with_busybox();
    let mut s = Standalone::new();
    let m = s.write(
        "remote.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: remote}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {}, imagePullPolicy: Never, command: ["sh", "-c", "echo via cri; exec sleep 1000"]}}]
"#,
            berth_tests::CRI_IMAGE
        ),
    );
    let ep = format!("unix://{}", cri.socket.display());
    s.start(&["--runtime-endpoint", &ep, m.to_str().unwrap()]);
    let p = s.wait_pod("remote", "running", 60, |p| running(p, "c"));
    assert!(container(&p, "c")["containerID"].as_str().unwrap().starts_with("berth://"), "{p}");
    // The pod lives in the other runtime's state, not in this root's.
    let ps = cri.root.berth_ok(&["container", "ps", "-a", "-q"]);
    let id = container(&p, "c")["containerID"].as_str().unwrap().trim_start_matches("berth://").to_string();
    assert!(String::from_utf8_lossy(&ps.stdout).contains(&id[..12]), "{}", String::from_utf8_lossy(&ps.stdout));
    s.wait_logs(&["remote"], "via cri\n", 30);
    assert_eq!(s.berth_ok(&["exec", "remote", "--", "echo", "hi"]), "hi\n");
    let st = s.interrupt();
    assert!(st.success());
    let ps = cri.root.berth_ok(&["container", "ps", "-a", "-q"]);
    assert!(String::from_utf8_lossy(&ps.stdout).trim().is_empty(), "containers left in the CRI runtime");
}

#[test]
fn logs_follow_across_restarts() {
    let mut s = Standalone::new();
    let m = s.write(
        "f.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: chatty}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {IMG}, command: ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done"]}}]
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    s.wait_pod("chatty", "running", 60, |p| running(p, "c") || container(p, "c")["restartCount"].as_i64().unwrap_or(0) > 0);
    let mut child = s.command().args(["logs", "-f", "chatty"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    // Read until the second run's lines arrive.
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut got = String::new();
        let mut buf = [0u8; 256];
        while got.matches("line 3").count() < 2 {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        got
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !reader.is_finished() {
        assert!(std::time::Instant::now() < deadline, "logs -f did not follow the restart");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let got = reader.join().unwrap();
    assert!(got.matches("line 1").count() >= 2 && got.matches("line 3").count() >= 2, "{got}");
    let st = s.interrupt();
    assert!(st.success());
}

#[test]
fn http_and_tcp_probes_and_http_hooks() {
    let mut s = Standalone::new();
    let host = tempfile::tempdir().unwrap();
    // A CGI script records each hook request in a host directory.
    let setup = r#"
      mkdir -p /www/cgi-bin && echo hi > /www/index.html
      cat > /www/cgi-bin/mark <<'EOF'
      #!/bin/sh
      echo "$QUERY_STRING" >> /host/marks
      echo Content-Type: text/plain
      echo
      echo ok
      EOF
      sed -i 's/^      //' /www/cgi-bin/mark
      chmod +x /www/cgi-bin/mark
      exec httpd -f -v -p 8081 -h /www"#;
    let m = s.write(
        "http.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: webp}}
spec:
  terminationGracePeriodSeconds: 3
  initContainers:
  # A sidecar that records hook requests; the app starts once it listens.
  - name: hooks
    image: {IMG}
    restartPolicy: Always
    command:
    - sh
    - -c
    - |{setup}
    startupProbe:
      tcpSocket: {{port: 8081}}
      periodSeconds: 1
    volumeMounts: [{{name: host, mountPath: /host}}]
  containers:
  - name: web
    image: {IMG}
    command: ["sh", "-c", "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -v -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}, {{name: hooks, containerPort: 8081}}]
    readinessProbe:
      httpGet: {{path: /ready, port: http, httpHeaders: [{{name: X-Probe, value: berth}}]}}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
    lifecycle:
      postStart: {{httpGet: {{path: "/cgi-bin/mark?poststart", port: 8081}}}}
      preStop: {{httpGet: {{path: "/cgi-bin/mark?prestop", port: hooks}}}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  volumes:
  - name: host
    hostPath: {{path: {}}}
"#,
            host.path().display()
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    let p = s.wait_pod("webp", "running", 60, |p| running(p, "web"));
    // /ready is missing: 404 keeps the pod unready, and says so.
    assert_eq!(condition(&p, "Ready")["status"], "False");
    s.wait_pod("webp", "an Unhealthy event", 30, |_| s.berth_ok(&["describe", "pod", "webp"]).contains("Readiness probe failed: HTTP probe failed with statuscode: 404"));
    s.berth_ok(&["exec", "webp", "--", "touch", "/www/ready"]);
    let p = s.wait_pod("webp", "ready", 30, |p| condition(p, "Ready")["status"] == "True");
    // The tcp liveness probe passes all along.
    assert_eq!(container(&p, "web")["restartCount"], 0);
    assert_eq!(std::fs::read_to_string(host.path().join("marks")).unwrap(), "poststart\n");
    let out = s.berth_ok(&["delete", "pod", "webp"]);
    assert!(out.contains("deleted"));
    assert_eq!(std::fs::read_to_string(host.path().join("marks")).unwrap(), "poststart\nprestop\n");
    s.assert_clean();
}

#[test]
fn detach_apply_to_the_running_daemon_and_stop() {
    let s = Standalone::new();
    let pod = |name: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: {IMG}
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.2; done"]
"#
        )
    };
    let a = s.write("a.yaml", &pod("a"));
    let b = s.write("b.yaml", &pod("b"));
    let out = s.berth_ok(&["run", "--detach", "--restart-backoff-base", "0.5", a.to_str().unwrap()]);
    assert!(out.contains("pod/a created") && out.contains("running in the background"), "{out}");
    s.wait_pod("a", "running", 60, |p| running(p, "c"));
    // A second `berth run` hands its pods to the running daemon.
    let out = s.berth_ok(&["run", b.to_str().unwrap()]);
    assert!(out.contains("pod/default/b created"), "{out}");
    s.wait_pod("b", "running", 60, |p| running(p, "c"));
    let out = s.berth_ok(&["stop"]);
    assert!(out.contains("stopped"), "{out}");
    let logs = std::fs::read_dir(s.root.path().join("logs/pods")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(logs, 0, "pod log directories are removed with the pods");
    assert!(!s.berth(&["get", "pods"]).status.success(), "the daemon is gone");
    s.assert_clean();
}

#[test]
fn drives_containerd() {
    let Some(cd) = berth_tests::containerd::Containerd::start() else {
        panic!("containerd is not installed (hack/setup.sh installs it)");
    };
    let mut s = Standalone::new();
    let m = s.write(
        "cd.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: viacd}}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - {{name: init, image: {img}, imagePullPolicy: Never, command: ["sh", "-c", "echo init > /data/order"], volumeMounts: [{{name: data, mountPath: /data}}]}}
  containers:
  - name: c
    image: {img}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo app >> /data/order; echo via containerd; exec sleep 1000"]
    readinessProbe: {{exec: {{command: ["test", "-f", "/data/order"]}}, periodSeconds: 1}}
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, emptyDir: {{}}}}]
"#,
            img = berth_tests::containerd::IMAGE
        ),
    );
    s.start(&["--runtime-endpoint", &cd.endpoint(), m.to_str().unwrap()]);
    let p = s.wait_pod("viacd", "ready", 90, |p| condition(p, "Ready")["status"] == "True");
    let id = container(&p, "c")["containerID"].as_str().unwrap_or("").to_string();
    assert!(id.starts_with("containerd://"), "{p}");
    assert_eq!(s.berth_ok(&["exec", "viacd", "--", "cat", "/data/order"]), "init\napp\n");
    s.wait_logs(&["viacd"], "via containerd\n", 30);
    let st = s.interrupt();
    assert!(st.success(), "{}", s.output());
    // containerd has no pods left.
    let out = std::process::Command::new("ctr").arg("--address").arg(&cd.socket).args(["-n", "k8s.io", "containers", "ls", "-q"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "containers left: {}", String::from_utf8_lossy(&out.stdout));
    // No cgroup left in any hierarchy (runc also uses a hybrid host's cgroup2 mount).
    let left = s.leftover_cgroups();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    drop(cd);
}

#[test]
fn exec_with_stdin_and_a_terminal() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let mut s = Standalone::new();
    let m = s.write(
        "t.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: term}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {IMG}, command: ["sleep", "1000"]}}]
"#
        ),
    );
    s.start(&[m.to_str().unwrap()]);
    s.wait_pod("term", "running", 60, |p| running(p, "c"));

    // -i: stdin streams in.
    let mut child = s.command().args(["exec", "-i", "term", "--", "sh", "-c", "tr a-z A-Z; exit 6"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert_eq!(out.status.code(), Some(6));

    // -it on a terminal: the container sees the terminal's size.
    let pty = nix::pty::openpty(Some(&nix::pty::Winsize { ws_row: 37, ws_col: 101, ws_xpixel: 0, ws_ypixel: 0 }), None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = s
        .command()
        .args(["exec", "-it", "term", "--", "sh", "-c", "stty size; tty; exit 4"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let fd = master.as_raw_fd();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // EIO once berth, the last holder of the slave, exits.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    let st = child.wait().unwrap();
    let _ = fd;
    let got = reader.join().unwrap();
    assert_eq!(st.code(), Some(4), "{got}");
    assert!(got.contains("37 101"), "terminal size inside: {got:?}");
    assert!(got.contains("/dev/pts/"), "a terminal inside: {got:?}");
    let st = s.interrupt();
    assert!(st.success());
}
