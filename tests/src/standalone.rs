//! A `berth run` under test: its own state root, cgroup parent and manifest
//! directory, the busybox image imported, pods read back with
//! `berth get pods -o json`. Dropping it interrupts berth, waits for the pods
//! to terminate and checks nothing is left behind.

use crate::{berth_bin, require_root, TestRoot};
use berth_runtime::image::builder;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The busybox image's name in every standalone test.
pub const IMAGE: &str = "test/busybox:1";

/// A container's status by name, from containerStatuses or initContainerStatuses; Null when absent.
pub fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    for key in ["containerStatuses", "initContainerStatuses"] {
        if let Some(c) = pod["status"][key].as_array().and_then(|l| l.iter().find(|c| c["name"] == name)) {
            return c;
        }
    }
    &Value::Null
}

/// Whether the named container's state is running.
pub fn running(pod: &Value, name: &str) -> bool {
    container(pod, name)["state"]["running"].is_object()
}

/// Why the named container is waiting; "" when it is not.
pub fn waiting_reason(pod: &Value, name: &str) -> String {
    container(pod, name)["state"]["waiting"]["reason"].as_str().unwrap_or("").to_string()
}

/// The pod's phase; "" when absent.
pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// The condition of type `kind` in a pod's or node's status; Null when absent.
pub fn condition<'a>(object: &'a Value, kind: &str) -> &'a Value {
    object["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

pub struct Standalone {
    pub root: TestRoot,
    /// Manifests go here.
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    child: Option<Child>,
    runs: usize,
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Default for Standalone {
    fn default() -> Self {
        Self::new()
    }
}

impl Standalone {
    pub fn new() -> Standalone {
        require_root();
        let root = TestRoot::new();
        let layout = tempfile::tempdir().expect("temp dir");
        let img = builder::busybox_image().expect("busybox image");
        builder::write_oci_layout(layout.path(), &[(IMAGE, (&img).into())]).expect("oci layout");
        root.berth_ok(&["images", "import", layout.path().to_str().expect("utf-8"), "--name", IMAGE]);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Pods get a loopback-only network: parallel tests share no bridge.
        let net = root.path().join("net.d");
        std::fs::create_dir_all(&net).expect("create net.d");
        std::fs::write(net.join("10-loopback.conflist"), crate::LOOPBACK_CONFLIST).expect("write loopback conflist");
        std::fs::write(root.path().join("config.toml"), format!("[cni]\nconf_dir = {:?}\n", net.display().to_string())).expect("write config");
        Standalone {
            root,
            dir: tempfile::tempdir().expect("manifest dir"),
            cgroup_parent: format!("/berth-sa-{}-{n}", std::process::id()),
            child: None,
            runs: 0,
        }
    }

    /// Writes a manifest file into the manifest directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p
    }

    /// `berth` with this test's root and cgroup parent.
    pub fn command(&self) -> Command {
        let mut c = Command::new(berth_bin());
        c.arg("--config").arg(self.root.path().join("config.toml"));
        c.arg("--root").arg(self.root.path()).arg("--cgroup-parent").arg(&self.cgroup_parent);
        c
    }

    /// Runs a berth command to completion.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.command().args(args).stdin(Stdio::null()).output().expect("run berth")
    }

    pub fn berth_ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}\nrun output:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.output()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn out_path(&self) -> PathBuf {
        self.root.path().join(format!("run-{}.out", self.runs))
    }

    /// Starts `berth run ARGS` (fast back-off) and waits for its API.
    /// Unless ARGS say otherwise, only memory pressure evicts (test machines'
    /// disks may be fuller than kubelet's default disk thresholds) and image
    /// garbage collection is off.
    pub fn start(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "berth run is already running");
        self.runs += 1;
        let out = std::fs::File::create(self.out_path()).expect("output file");
        let mut defaults: Vec<&str> = Vec::new();
        for (flag, value) in [("--eviction-hard", "memory.available<100Mi"), ("--image-gc-high-threshold", "100")] {
            if !args.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}="))) {
                defaults.extend([flag, value]);
            }
        }
        let child = self
            .command()
            .args(["--log-level", "info", "run", "--restart-backoff-base", "0.5", "--restart-backoff-max", "4"])
            .args(&defaults)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("fd"))
            .stderr(out)
            .spawn()
            .expect("start berth run");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.berth(&["get", "pods", "-A", "-o", "json"]).status.success() {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("berth run exited with {st}:\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "berth run did not come up:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `berth run` printed (stdout and stderr) in its latest run.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.out_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Every pod as JSON.
    pub fn pods(&self) -> Vec<Value> {
        let out = self.berth_ok(&["get", "pods", "-A", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from get pods: {e}\n{out}"));
        match v.get("items") {
            Some(Value::Array(items)) => items.clone(),
            _ => match v {
                Value::Array(a) => a,
                Value::Null => Vec::new(),
                one => vec![one],
            },
        }
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.pods().into_iter().find(|p| p["metadata"]["name"] == name)
    }

    /// Polls the pod until `ok` holds; panics with the pod after `secs`.
    pub fn wait_pod(&self, name: &str, what: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.pod(name);
            if let Some(p) = &p {
                if ok(p) {
                    return p.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name}: {what} did not happen in {secs}s\npod: {}\nrun output:\n{}",
                    serde_json::to_string_pretty(&p).unwrap_or_default(),
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `berth logs ARGS` once it equals `want` (a container's output reaches
    /// its log file a moment after the container runs).
    pub fn wait_logs(&self, args: &[&str], want: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut cmd = vec!["logs"];
        cmd.extend_from_slice(args);
        loop {
            let out = self.berth(&cmd);
            let got = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && got == want {
                return;
            }
            if Instant::now() > deadline {
                panic!("berth {cmd:?}: got {got:?}, want {want:?}\nstderr: {}\nrun output:\n{}", String::from_utf8_lossy(&out.stderr), self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the pod is gone from `get pods`.
    pub fn wait_gone(&self, name: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.pod(name).is_some() {
            assert!(Instant::now() < deadline, "pod {name} still there after {secs}s\n{}", self.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGINT, as Ctrl-C; waits for berth to finish terminating the pods.
    pub fn interrupt(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("berth run is running");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("berth run did not stop after SIGINT:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash: containers keep running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Cgroup directories left under this test's parent, in every hierarchy.
    /// While `berth run` runs, its (empty) QoS cgroups `kubepods`,
    /// `kubepods/burstable` and `kubepods/besteffort` belong there.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        fn walk(d: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    out.push(e.path());
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        for d in crate::cgroup::dirs(&self.cgroup_parent) {
            let mut found = Vec::new();
            walk(&d, &mut found);
            let qos = [d.join("kubepods"), d.join("kubepods/burstable"), d.join("kubepods/besteffort")];
            out.extend(found.into_iter().filter(|p| self.child.is_none() || !qos.contains(p)));
        }
        out
    }

    /// Mounts under this test's root; while `berth run` runs, not the pods
    /// root itself (rshared for the daemon's lifetime, as kubelet's root).
    pub fn leftover_mounts(&self) -> Vec<String> {
        let root = self.root.path().display().to_string();
        let pods_root = self.root.path().join("pods").display().to_string();
        let running = self.child.is_some();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root) && !(running && *m == pods_root))
            .collect()
    }

    /// Asserts that nothing of the pods is left: no mounts, no cgroups, no
    /// processes started from this root.
    pub fn assert_clean(&self) {
        let mounts = self.leftover_mounts();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        let cgroups = self.leftover_cgroups();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        let procs = self.processes();
        assert!(procs.is_empty(), "processes left: {procs:?}");
    }

    /// Shims and pause processes of this root.
    pub fn processes(&self) -> Vec<String> {
        let root = self.root.path().display().to_string();
        let me = self.pid().map(|p| p.to_string());
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            if me.as_deref() == Some(&*e.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
            if cmd.contains(&root) && !zombie {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
        out
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if self.child.is_none() && !self.leftover_mounts().is_empty() {
            // Killed earlier: start again so the pods are adopted and stopped.
            self.runs += 1;
            if let Ok(c) = self.command().args(["run", "--restart-backoff-base", "0.5", "--eviction-hard", "memory.available<100Mi"]).arg("--manifest-dir").arg(self.dir.path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
                self.child = Some(c);
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        if self.child.is_some() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.interrupt()));
        }
        for d in crate::cgroup::dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(&d);
        }
    }
}
