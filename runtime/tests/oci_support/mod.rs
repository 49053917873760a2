//! Shared fixtures for the OCI executor integration tests (run as root).
//! Every fixture owns a temp dir (bundle + state root) and a cgroup path,
//! and its Drop removes containers, processes, cgroups and mounts.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-oci-dev");

/// Reaps children (this test process is a subreaper) until `pid` is gone.
/// Reaps everything: a dying PID namespace waits for all its processes,
/// including exec'd ones parented to us, to be reaped.
pub fn reap(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(_) => {}
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skip (return early) unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !oci_support::is_root() {
            eprintln!("skipping: needs root");
            return;
        }
    };
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub cgroup: String,
    pub config: Value,
}

const APPLETS: &[&str] = &["sh", "true", "cat", "echo", "sleep", "id", "ls", "mount", "unshare", "touch", "hostname", "grep"];

impl Fixture {
    pub fn new(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("berth-oci-").tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(a)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n").unwrap();
        let cgroup = format!("/berth-test-{:x}", rand::random::<u64>());
        let config = default_config(args, &cgroup);
        let f = Fixture { root: dir.path().join("state"), dir, bundle, cgroup, config };
        f.save();
        f
    }

    pub fn save(&self) {
        std::fs::write(self.bundle.join("config.json"), serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
    }

    /// Edits config.json.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) {
        f(&mut self.config);
        self.save();
    }

    /// Runs `berth-oci-dev oci --root R <args>`.
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("oci").arg("--root").arg(&self.root).args(args).current_dir(&self.bundle).output().unwrap()
    }

    /// Like [`Fixture::berth`] for commands that leave a container running:
    /// its stdio goes to files (pipes would stay open), returns (ok, stderr).
    pub fn berth_detached(&self, args: &[&str]) -> (bool, String) {
        let out = self.dir.path().join("detached.out");
        let err = self.dir.path().join("detached.err");
        let status = Command::new(BIN)
            .arg("oci")
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.bundle)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        (status.success(), std::fs::read_to_string(&err).unwrap_or_default())
    }

    /// `run` with the given id; returns (exit code, stdout, stderr).
    pub fn run(&self, id: &str) -> (i32, String, String) {
        let bundle = self.bundle.to_str().unwrap().to_string();
        let out = self.berth(&["run", "--bundle", &bundle, id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Cgroup directory of this fixture in a v1 controller (the unified
    /// directory on v2).
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let rel = self.cgroup.trim_start_matches('/');
        if berth_runtime::linux::cgroups::is_unified() {
            Path::new("/sys/fs/cgroup").join(rel)
        } else {
            Path::new("/sys/fs/cgroup").join(controller).join(rel)
        }
    }

    /// All existing cgroup dirs of this fixture (one per v1 hierarchy, or
    /// the unified one).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let rel = self.cgroup.trim_start_matches('/');
        if berth_runtime::linux::cgroups::is_unified() {
            let d = Path::new("/sys/fs/cgroup").join(rel);
            return if d.exists() { vec![d] } else { Vec::new() };
        }
        let mut out = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let d = e.path().join(rel);
            if d.exists() {
                out.push(d);
            }
        }
        out
    }

    /// The memory limit file: `memory.limit_in_bytes` on v1, `memory.max` on v2.
    pub fn memory_limit_file(&self) -> PathBuf {
        let name = if berth_runtime::linux::cgroups::is_unified() { "memory.max" } else { "memory.limit_in_bytes" };
        self.cgroup_dir("memory").join(name)
    }

    /// Mounts whose source or target mentions our temp dir.
    pub fn leftover_mounts(&self) -> Vec<String> {
        let needle = self.dir.path().to_str().unwrap().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(String::from)
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Kill whatever is left in our cgroups (by pid), then remove them.
        for _ in 0..50 {
            let mut any = false;
            for d in self.cgroup_dirs() {
                for p in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = p.trim().parse::<i32>() {
                        any = true;
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(&d);
        }
        for m in self.leftover_mounts() {
            if let Some(target) = m.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn default_config(args: &[&str], cgroup: &str) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ],
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}
