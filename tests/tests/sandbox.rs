//! End-to-end tests of pod sandboxes: the sandbox manager starting real
//! pause processes (`berth pause`, the built berth binary). Needs root.
//!
//! Every test owns its temp dir (state and run dirs) and cgroup parent
//! (`/berth-sbtest-<uniq>`); the fixture's Drop kills pause processes by
//! pid (checking their start time), unmounts shm tmpfs and removes the
//! cgroup tree and the dirs, so a failing test leaves nothing behind.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_runtime::linux::process::{pid_alive, proc_stat};
use berth_runtime::sandbox::{Manager, SandboxConfig, SandboxError, SandboxState};
use berth_tests::{berth_bin, require_root};
use cri_proto::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata,
};

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

struct Fx {
    dir: tempfile::TempDir,
    cgroup_parent: String,
    uniq: String,
    mgr: Manager,
}

impl Fx {
    fn new() -> Fx {
        require_root();
        let bin = berth_bin();
        assert!(bin.exists(), "{} is missing: cargo build -p berth-kubelet --bin berth", bin.display());
        let dir = tempfile::Builder::new().prefix("berth-sbtest-").tempdir().unwrap();
        let uniq = format!("{:x}{:x}", std::process::id(), nanos() & 0xff_ffff_ffff);
        let cgroup_parent = format!("/berth-sbtest-{uniq}");
        let mgr = Manager::new(Self::sb_config(dir.path(), &cgroup_parent)).unwrap();
        Fx { dir, cgroup_parent, uniq, mgr }
    }

    fn sb_config(dir: &Path, cgroup_parent: &str) -> SandboxConfig {
        SandboxConfig { state_dir: dir.join("state"), run_dir: dir.join("run"), exe: berth_bin(), cgroup_parent: cgroup_parent.into() }
    }

    /// A second manager over the same directories (a restarted daemon).
    fn reopen(&self) -> Manager {
        Manager::new(Self::sb_config(self.dir.path(), &self.cgroup_parent)).unwrap()
    }

    fn pod(&self, name: &str, net: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "sbtest".into(),
                uid: format!("uid-{}-{name}", self.uniq),
                attempt: 0,
            }),
            hostname: format!("{name}-host"),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption { network: net as i32, pid: pid as i32, ipc: ipc as i32, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pause_pid(&self, id: &str) -> i32 {
        self.mgr.status(id).unwrap().record.pid
    }
}

/// The cgroup roots a path may exist under: every v1 hierarchy, or the v2 root.
fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir() && !p.is_symlink()));
    }
    roots.into_iter().map(|r| r.join(rel.trim_start_matches('/'))).filter(|p| p.is_dir()).collect()
}

fn rmdir_tree(p: &Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    for _ in 0..100 {
        if std::fs::remove_dir(p).is_ok() || !p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mount points at or below `dir`, from this process's mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// (fstype, mount options, super options) of the mount at `p`.
fn mount_at(p: &Path) -> Option<(String, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_string_lossy();
    text.lines().rev().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        if pre.get(4) != Some(&want.as_ref()) {
            return None;
        }
        let post: Vec<&str> = post.split(' ').collect();
        Some((post[0].to_string(), pre[5].to_string(), post.get(2).unwrap_or(&"").to_string()))
    })
}

impl Drop for Fx {
    fn drop(&mut self) {
        let state = self.dir.path().join("state");
        if let Ok(rd) = std::fs::read_dir(&state) {
            for e in rd.flatten() {
                let Ok(b) = std::fs::read(e.path().join("sandbox.json")) else { continue };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) else { continue };
                let pid = v["pid"].as_i64().unwrap_or(0) as i32;
                let start = v["pid_start"].as_u64().unwrap_or(0);
                if pid > 0 && pid_alive(pid, Some(start)) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while pid_alive(pid, Some(start)) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        for d in cgroup_dirs(&self.cgroup_parent) {
            rmdir_tree(&d);
        }
    }
}

fn ns_ino(pid: &str, ns: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}")).unwrap().ino()
}

fn nsenter(pid: i32, flags: &[&str], cmd: &[&str]) -> String {
    let out = Command::new("nsenter").arg("-t").arg(pid.to_string()).args(flags).args(cmd).output().unwrap();
    assert!(out.status.success(), "nsenter {flags:?} {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_gone(pid: i32, start: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid, Some(start)) {
        assert!(Instant::now() < deadline, "pause {pid} still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_sets_up_namespaces_files_shm_and_cgroup() {
    let fx = Fx::new();
    let mut pod = fx.pod("web", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
    pod.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["sbtest.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let host_port_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let target_forward = if host_forward.trim() == "1" { "0" } else { "1" };
    pod.linux.as_mut().unwrap().sysctls = HashMap::from([
        ("net.ipv4.ip_forward".to_string(), target_forward.to_string()),
        ("net/ipv4/ip_unprivileged_port_start".to_string(), "80".to_string()),
    ]);
    let id = fx.mgr.run(&pod, "runc").unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));

    let st = fx.mgr.status(&id).unwrap();
    assert_eq!(st.state, SandboxState::Ready);
    assert_eq!(st.record.name, format!("web_sbtest_uid-{}-web_0", fx.uniq));
    assert_eq!(st.record.handler, "runc");
    assert!(st.record.created_at > 0);
    let pid = st.record.pid;
    let (start, _) = proc_stat(pid).expect("pause alive");
    assert_eq!(start, st.record.pid_start);
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "pause");

    // New net, IPC, UTS namespaces; the host's PID namespace (pid mode CONTAINER).
    let p = pid.to_string();
    for ns in ["net", "ipc", "uts"] {
        assert_ne!(ns_ino(&p, ns), ns_ino("self", ns), "{ns} namespace");
    }
    assert_eq!(ns_ino(&p, "pid"), ns_ino("self", "pid"));
    let ns = fx.mgr.namespaces(&id).unwrap();
    assert_eq!(ns.net, Some(PathBuf::from(format!("/proc/{pid}/ns/net"))));
    assert_eq!(ns.ipc, Some(PathBuf::from(format!("/proc/{pid}/ns/ipc"))));
    assert_eq!(ns.uts, Some(PathBuf::from(format!("/proc/{pid}/ns/uts"))));
    assert_eq!(ns.pid, None);
    assert!(!ns.standalone);

    // Inside: hostname, lo up, sysctls; the host's sysctls untouched.
    assert_eq!(nsenter(pid, &["-u"], &["hostname"]), "web-host");
    let lo = nsenter(pid, &["-n"], &["ip", "-o", "link", "show", "lo"]);
    let flags = lo.split('<').nth(1).and_then(|s| s.split('>').next()).unwrap_or_default();
    assert!(flags.split(',').any(|f| f == "UP"), "lo not up: {lo}");
    assert_eq!(nsenter(pid, &["-n"], &["cat", "/proc/sys/net/ipv4/ip_forward"]), target_forward);
    assert_eq!(nsenter(pid, &["-n"], &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]), "80");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), host_forward);
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(), host_port_start);

    // Files.
    let files = fx.mgr.files(&id).unwrap();
    let run = fx.dir.path().join("run").join(&id);
    assert_eq!(files.hostname, run.join("hostname"));
    assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "web-host\n");
    assert_eq!(
        std::fs::read_to_string(&files.hosts).unwrap(),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb-host\n"
    );
    assert_eq!(
        std::fs::read_to_string(&files.resolv_conf).unwrap(),
        "search sbtest.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    fx.mgr.set_pod_ip(&id, "10.244.0.7").unwrap();
    assert!(std::fs::read_to_string(&files.hosts).unwrap().ends_with("10.244.0.7\tweb-host\n"));

    // shm: a 64 MiB tmpfs, mode 1777, nosuid,nodev,noexec.
    assert_eq!(files.shm, run.join("shm"));
    let (fstype, opts, sopts) = mount_at(&files.shm).expect("shm is a mount");
    assert_eq!(fstype, "tmpfs");
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing in {opts}");
    }
    assert!(sopts.contains("size=65536k"), "{sopts}");
    assert_eq!(std::fs::metadata(&files.shm).unwrap().mode() & 0o7777, 0o1777);

    // The pause is in the pod cgroup in every hierarchy; on v2 in a leaf
    // of it (`pause`), so containers' controllers can be
    // enabled in the pod cgroup.
    let pod_cg = format!("{}/pod{}", fx.cgroup_parent, &id[..12]);
    assert_eq!(st.record.cgroup_path, pod_cg);
    let cg = if berth_tests::cgroup::unified() { format!("{pod_cg}/pause") } else { pod_cg };
    let dirs = cgroup_dirs(&cg);
    assert!(!dirs.is_empty(), "no cgroup dirs for {cg}");
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l.trim() == p), "pause {pid} not in {}: {procs:?}", d.display());
    }
    let self_cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(self_cg.lines().any(|l| l.ends_with(&cg)), "{self_cg}");
}

#[test]
fn pid_mode_pod_makes_the_pause_pid_1() {
    let fx = Fx::new();
    let id = fx.mgr.run(&fx.pod("pidpod", NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod), "").unwrap();
    let pid = fx.pause_pid(&id);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid: Vec<&str> = status.lines().find_map(|l| l.strip_prefix("NSpid:")).unwrap().split_whitespace().collect();
    assert_eq!(nspid, vec![pid.to_string().as_str(), "1"], "{status}");
    assert_ne!(ns_ino(&pid.to_string(), "pid"), ns_ino("self", "pid"));
    assert_eq!(fx.mgr.namespaces(&id).unwrap().pid, Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))));

    // As PID 1 it reaps orphans of its namespace: a process started in it
    // whose parent (nsenter) exits is reparented to the pause and reaped.
    let out = nsenter(pid, &["-p"], &["sh", "-c", "sleep 0.2 & echo $!"]);
    assert_eq!(out.parse::<i32>().map(|p| p > 1), Ok(true), "{out}");
    std::thread::sleep(Duration::from_millis(600));
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert!(children.trim().is_empty(), "pause has unreaped children: {children:?}");

    // SIGTERM ends it with status 0 (from the host's pid namespace too).
    let (start, _) = proc_stat(pid).unwrap();
    fx.mgr.stop(&id).unwrap();
    wait_gone(pid, start);
    assert_eq!(fx.mgr.status(&id).unwrap().state, SandboxState::NotReady);
}

#[test]
fn host_network_and_ipc_share_the_hosts_namespaces() {
    let fx = Fx::new();
    let id = fx.mgr.run(&fx.pod("hostnet", NamespaceMode::Node, NamespaceMode::Node, NamespaceMode::Node), "").unwrap();
    let st = fx.mgr.status(&id).unwrap();
    assert_eq!(st.state, SandboxState::Ready);
    let p = st.record.pid.to_string();
    for ns in ["net", "uts", "ipc", "pid"] {
        assert_eq!(ns_ino(&p, ns), ns_ino("self", ns), "{ns} namespace");
    }
    let ns = fx.mgr.namespaces(&id).unwrap();
    assert_eq!((ns.net, ns.ipc, ns.uts, ns.pid), (None, None, None, None));
    let files = fx.mgr.files(&id).unwrap();
    assert_eq!(files.shm, PathBuf::from("/dev/shm"));
    assert!(mounts_under(fx.dir.path()).is_empty());
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), format!("{host}\n"));
    assert_eq!(std::fs::read_to_string(&files.hosts).unwrap(), std::fs::read_to_string("/etc/hosts").unwrap());
    // No DNS config: the host's resolv.conf.
    assert_eq!(std::fs::read_to_string(&files.resolv_conf).unwrap(), std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());

    // net.* sysctls cannot be set on the host network; node-wide ones never.
    let mut pod = fx.pod("hostnet-sysctl", NamespaceMode::Node, NamespaceMode::Container, NamespaceMode::Pod);
    pod.linux.as_mut().unwrap().sysctls = HashMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]);
    let e = fx.mgr.run(&pod, "").unwrap_err();
    assert!(matches!(e, SandboxError::Invalid { field: "linux.sysctls", .. }), "{e}");
    let mut pod = fx.pod("vm-sysctl", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
    pod.linux.as_mut().unwrap().sysctls = HashMap::from([("vm.swappiness".to_string(), "1".to_string())]);
    let e = fx.mgr.run(&pod, "").unwrap_err();
    assert!(e.to_string().contains("vm.swappiness"), "{e}");
    assert_eq!(fx.mgr.list().unwrap().len(), 1);
}

#[test]
fn stop_then_remove_leaves_nothing() {
    let fx = Fx::new();
    let id = fx.mgr.run(&fx.pod("stopme", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod), "").unwrap();
    let st = fx.mgr.status(&id).unwrap();
    let (pid, start) = (st.record.pid, st.record.pid_start);
    let files = fx.mgr.files(&id).unwrap();
    assert!(mount_at(&files.shm).is_some());
    let cg = st.record.cgroup_path.clone();
    assert!(!cgroup_dirs(&cg).is_empty());

    let t = Instant::now();
    fx.mgr.stop(&id).unwrap();
    // The pause exits on SIGTERM: no need for the SIGKILL grace period.
    assert!(t.elapsed() < Duration::from_millis(1500), "stop took {:?}", t.elapsed());
    assert!(!pid_alive(pid, Some(start)), "pause still alive after stop");
    assert!(mount_at(&files.shm).is_none(), "shm still mounted");
    assert_eq!(fx.mgr.status(&id).unwrap().state, SandboxState::NotReady);
    assert_eq!(fx.mgr.status(&id).unwrap().record.state, SandboxState::NotReady);
    assert!(matches!(fx.mgr.namespaces(&id), Err(SandboxError::NotReady(_))));
    fx.mgr.stop(&id).unwrap();
    fx.mgr.stop("0000000000000000000000000000000000000000000000000000000000000000").unwrap();

    fx.mgr.remove(&id).unwrap();
    assert!(cgroup_dirs(&cg).is_empty(), "cgroup left: {:?}", cgroup_dirs(&cg));
    assert!(mounts_under(fx.dir.path()).is_empty());
    assert!(!fx.dir.path().join("run").join(&id).exists());
    assert!(!fx.dir.path().join("state").join(&id).exists());
    assert!(matches!(fx.mgr.status(&id), Err(SandboxError::NotFound(_))));
    assert!(fx.mgr.list().unwrap().is_empty());
    fx.mgr.remove(&id).unwrap();
}

#[test]
fn remove_stops_a_running_sandbox() {
    let fx = Fx::new();
    let id = fx.mgr.run(&fx.pod("rmrunning", NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod), "").unwrap();
    let st = fx.mgr.status(&id).unwrap();
    fx.mgr.remove(&id).unwrap();
    assert!(!pid_alive(st.record.pid, Some(st.record.pid_start)));
    assert!(cgroup_dirs(&st.record.cgroup_path).is_empty());
    assert!(mounts_under(fx.dir.path()).is_empty());
    assert_eq!(std::fs::read_dir(fx.dir.path().join("run")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(fx.dir.path().join("state")).unwrap().count(), 0);
}

#[test]
fn a_new_manager_recovers_sandboxes() {
    let fx = Fx::new();
    let a = fx.mgr.run(&fx.pod("rec-a", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod), "").unwrap();
    let b = fx.mgr.run(&fx.pod("rec-b", NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod), "").unwrap();
    let c = fx.mgr.run(&fx.pod("rec-c", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod), "").unwrap();
    fx.mgr.stop(&c).unwrap();

    let m2 = fx.reopen();
    let list = m2.list().unwrap();
    let state = |id: &str| list.iter().find(|s| s.record.id == id).map(|s| s.state);
    assert_eq!(list.len(), 3);
    assert_eq!(state(&a), Some(SandboxState::Ready));
    assert_eq!(state(&b), Some(SandboxState::Ready));
    assert_eq!(state(&c), Some(SandboxState::NotReady));
    assert_eq!(m2.namespaces(&a).unwrap(), fx.mgr.namespaces(&a).unwrap());
    assert_eq!(m2.resolve(&format!("rec-b_sbtest_uid-{}-rec-b_0", fx.uniq)).unwrap(), b);
    assert_eq!(m2.resolve(&a[..8]).unwrap(), a);

    // A pause killed behind the manager's back: NOTREADY.
    let sa = m2.status(&a).unwrap().record;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sa.pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_gone(sa.pid, sa.pid_start);
    assert_eq!(m2.status(&a).unwrap().state, SandboxState::NotReady);

    // A live process with the recorded pid but another start time (pid
    // reuse) is not the pause: NOTREADY, and stop does not signal it.
    let state_file = fx.dir.path().join("state").join(&b).join("sandbox.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let (pid_b, start_b) = (v["pid"].as_i64().unwrap() as i32, v["pid_start"].as_u64().unwrap());
    v["pid_start"] = (start_b + 1).into();
    std::fs::write(&state_file, serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(m2.status(&b).unwrap().state, SandboxState::NotReady);
    m2.stop(&b).unwrap();
    assert!(pid_alive(pid_b, Some(start_b)), "stop signalled a process that is not its pause");
    // Put it back so the sandbox can be stopped for real.
    v["pid_start"] = start_b.into();
    std::fs::write(&state_file, serde_json::to_vec(&v).unwrap()).unwrap();
    m2.remove(&b).unwrap();
    assert!(!pid_alive(pid_b, Some(start_b)));
    for id in [&a, &c] {
        m2.remove(id).unwrap();
    }
    assert!(m2.list().unwrap().is_empty());
    assert!(fx.mgr.list().unwrap().is_empty());
    assert!(mounts_under(fx.dir.path()).is_empty());
    assert!(cgroup_dirs(&fx.cgroup_parent).iter().all(|d| std::fs::read_dir(d).unwrap().flatten().all(|e| !e.path().is_dir())));
}

#[test]
fn duplicate_names_are_rejected() {
    let fx = Fx::new();
    let pod = fx.pod("dup", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
    let id = fx.mgr.run(&pod, "").unwrap();
    let e = fx.mgr.run(&pod, "").unwrap_err();
    let name = format!("dup_sbtest_uid-{}-dup_0", fx.uniq);
    assert!(matches!(&e, SandboxError::NameInUse { name: n, id: other } if *n == name && *other == id), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    assert_eq!(fx.mgr.list().unwrap().len(), 1);
    // Another attempt is another name.
    let mut pod2 = pod.clone();
    pod2.metadata.as_mut().unwrap().attempt = 1;
    let id2 = fx.mgr.run(&pod2, "").unwrap();
    assert_ne!(id, id2);
    // A removed sandbox frees its name.
    fx.mgr.remove(&id).unwrap();
    fx.mgr.run(&pod, "").unwrap();
}

#[test]
fn missing_metadata_is_rejected_naming_the_field() {
    let fx = Fx::new();
    for (field, clear) in [
        ("metadata.name", (|m: &mut PodSandboxMetadata| m.name.clear()) as fn(&mut PodSandboxMetadata)),
        ("metadata.namespace", |m| m.namespace.clear()),
        ("metadata.uid", |m| m.uid.clear()),
    ] {
        let mut pod = fx.pod("bad", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
        clear(pod.metadata.as_mut().unwrap());
        let e = fx.mgr.run(&pod, "").unwrap_err();
        assert!(matches!(e, SandboxError::Invalid { field: f, .. } if f == field), "{e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    let mut pod = fx.pod("bad", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
    pod.metadata = None;
    assert!(matches!(fx.mgr.run(&pod, "").unwrap_err(), SandboxError::Invalid { field: "metadata", .. }));
    assert_eq!(std::fs::read_dir(fx.dir.path().join("state")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(fx.dir.path().join("run")).unwrap().count(), 0);
    assert!(cgroup_dirs(&fx.cgroup_parent).is_empty());
}

#[test]
fn a_failed_start_leaves_nothing() {
    let fx = Fx::new();
    let mut cfg = Fx::sb_config(fx.dir.path(), &fx.cgroup_parent);
    cfg.exe = fx.dir.path().join("no-such-berth");
    let m = Manager::new(cfg).unwrap();
    let pod = fx.pod("nopause", NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
    let e = m.run(&pod, "").unwrap_err();
    assert!(e.to_string().contains("no-such-berth"), "{e}");
    assert!(m.list().unwrap().is_empty());
    assert!(mounts_under(fx.dir.path()).is_empty());
    assert_eq!(std::fs::read_dir(fx.dir.path().join("run")).unwrap().count(), 0);
    assert!(cgroup_dirs(&fx.cgroup_parent).iter().all(|d| std::fs::read_dir(d).unwrap().flatten().all(|e| !e.path().is_dir())));
    // The name is free again.
    fx.mgr.run(&pod, "").unwrap();
}

/// Argv of a process.
fn argv(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

#[test]
fn pause_is_the_small_binary_or_berth_pause_without_it() {
    let fx = Fx::new();
    // Next to the built berth: the small berth-pause.
    let pod = fx.pod("small", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
    let id = fx.mgr.run(&pod, "").unwrap();
    let pid = fx.pause_pid(&id);
    let a = argv(pid);
    assert!(a[0].ends_with("/berth-pause"), "{a:?}");
    assert!(a.iter().any(|x| x == "--cgroup"), "the pause joins its cgroup itself: {a:?}");
    fx.mgr.remove(&id).unwrap();

    // A berth with nothing beside it: `berth pause`, same namespaces and cgroup.
    let alone = fx.dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::os::unix::fs::symlink(berth_bin(), alone.join("berth")).unwrap();
    let mut cfg = Fx::sb_config(fx.dir.path(), &fx.cgroup_parent);
    cfg.exe = alone.join("berth");
    let m = Manager::new(cfg).unwrap();
    let pod = fx.pod("alone", NamespaceMode::Pod, NamespaceMode::Container, NamespaceMode::Pod);
    let id = m.run(&pod, "").unwrap();
    let st = m.status(&id).unwrap();
    let pid = st.record.pid;
    let a = argv(pid);
    assert_eq!(a.get(1).map(String::as_str), Some("pause"), "{a:?}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "pause");
    assert_ne!(ns_ino(&pid.to_string(), "net"), ns_ino("self", "net"));
    let leaf = st.record.pause_cgroup.clone().unwrap_or_else(|| st.record.cgroup_path.clone());
    for d in cgroup_dirs(&leaf) {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == pid.to_string()), "pause {pid} not in {}", d.display());
    }
    m.remove(&id).unwrap();
    assert!(!pid_alive(pid, Some(st.record.pid_start)));
    assert!(cgroup_dirs(&st.record.cgroup_path).is_empty(), "cgroup left");
    assert!(mounts_under(fx.dir.path()).is_empty());
}
