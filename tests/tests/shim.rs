//! End-to-end tests of the per-container shim, started as the daemon does
//! (`shim::spawn`: the small `berth-shim --config ...` next to the `berth`
//! binary) with each executor handler (builtin, runc, crun), and for builtin
//! also as the whole `berth` binary (`berth shim --config ...`, module
//! `builtin_full`). Needs root, cgroup v1 memory controller, and
//! runc/crun installed (a handler whose binary is missing is skipped).
//!
//! Every test owns its temp dir (bundle, state dirs, log), container id and
//! cgroup path; the fixture's Drop kills what is left (by pid), deletes the
//! container through the executor and removes cgroups, mounts and dirs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::logs::{read_lines, Stream};
use berth_runtime::oci::{executor_by_name, ExecutorConfig, Executor, InitCommand};
use berth_runtime::shim::{self, ExitRecord, ShimConfig};
use berth_tests::{berth_bin, require_root};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const APPLETS: &[&str] = &["sh", "true", "echo", "sleep", "cat", "head", "dd", "yes", "tr"];

fn find_bin(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

struct Fx {
    handler: String,
    /// Spawn `berth shim` rather than `berth-shim`.
    full: bool,
    id: String,
    dir: tempfile::TempDir,
    bundle: PathBuf,
    state_dir: PathBuf,
    exec_root: PathBuf,
    log: PathBuf,
    cgroup: String,
    config: Value,
    binaries: std::collections::HashMap<String, PathBuf>,
}

impl Fx {
    /// None when the handler's binary is not installed.
    /// `handler` may end in `+full`: the shim is then `berth shim`.
    fn new(handler: &str, args: &[&str]) -> Option<Fx> {
        require_root();
        let (handler, full) = match handler.strip_suffix("+full") {
            Some(h) => (h, true),
            None => (handler, false),
        };
        let bin = berth_bin();
        assert!(bin.exists(), "{} is missing: cargo build -p berth-kubelet --bin berth", bin.display());
        let mut binaries = std::collections::HashMap::new();
        if handler != "builtin" {
            match find_bin(handler) {
                Some(b) => {
                    binaries.insert(handler.to_string(), b);
                }
                None => {
                    eprintln!("skipping: {handler} not installed");
                    return None;
                }
            }
        }
        let dir = tempfile::Builder::new().prefix("berth-shimtest-").tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(a)).unwrap();
        }
        let uniq = format!("{:x}{:x}", std::process::id(), nanos() & 0xff_ffff_ffff);
        let cgroup = format!("/berth-shimtest-{uniq}");
        let fx = Fx {
            handler: handler.into(),
            full,
            id: format!("shimtest-{handler}{}-{uniq}", if full { "-full" } else { "" }),
            state_dir: dir.path().join("shim-state"),
            exec_root: dir.path().join("exec-root"),
            log: dir.path().join("logs/c.log"),
            config: config(args, &cgroup),
            bundle,
            cgroup,
            dir,
            binaries,
        };
        std::fs::create_dir_all(fx.log.parent().unwrap()).unwrap();
        fx.save();
        Some(fx)
    }

    fn save(&self) {
        std::fs::write(self.bundle.join("config.json"), serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
    }

    fn edit(&mut self, f: impl FnOnce(&mut Value)) {
        f(&mut self.config);
        self.save();
    }

    fn executor(&self) -> Box<dyn Executor> {
        let cfg = ExecutorConfig {
            root: self.exec_root.clone(),
            binaries: self.binaries.clone(),
            init: InitCommand { exe: berth_bin(), args: vec!["oci".into(), "init".into()], fork: false },
        };
        executor_by_name(&self.handler, &cfg).unwrap()
    }

    fn memory_cgroup(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup/memory").join(self.cgroup.trim_start_matches('/'))
    }

    fn shim_config(&self) -> ShimConfig {
        ShimConfig {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            state_dir: self.state_dir.clone(),
            log_path: Some(self.log.clone()),
            memory_cgroups: vec![self.memory_cgroup()],
            handler: self.handler.clone(),
            executor_root: self.exec_root.clone(),
            binaries: self.binaries.clone(),
            berth: berth_bin(),
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    /// Starts the shim (which creates the container); returns the container pid.
    fn spawn(&self) -> Result<i32, String> {
        let t = Instant::now();
        let bin = berth_bin();
        let small = !self.full;
        assert!(!small || bin.with_file_name(shim::SHIM_BINARY).exists(), "berth-shim is missing: cargo build -p berth-kubelet --bins");
        let r = shim::spawn_with(&bin, small, &self.shim_config()).expect("spawn shim");
        eprintln!("[{}] spawn took {:?}: {r:?}", self.handler, t.elapsed());
        r
    }

    fn spawn_and_start(&self) -> i32 {
        let pid = self.spawn().unwrap_or_else(|e| panic!("[{}] create failed: {e}", self.handler));
        self.executor().start(&self.id).unwrap();
        pid
    }

    fn shim_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state_dir.join(shim::PID_FILE)).ok()?.trim().parse().ok()
    }

    /// The shim's pid, if that process is alive and is our shim.
    fn live_shim(&self) -> Option<i32> {
        let pid = self.shim_pid()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let needle = self.state_dir.to_str().unwrap().as_bytes();
        (cmdline.windows(needle.len()).any(|w| w == needle) && !is_zombie(pid)).then_some(pid)
    }

    fn wait_exit(&self, timeout: Duration) -> ExitRecord {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = shim::read_exit(&self.state_dir) {
                return r;
            }
            assert!(Instant::now() < deadline, "[{}] no exit.json after {timeout:?}; log:\n{}", self.handler, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_shim_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.live_shim().is_some() {
            assert!(Instant::now() < deadline, "[{}] shim still running", self.handler);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn lines(&self, path: &Path) -> Vec<(Stream, String)> {
        read_lines(&std::fs::read(path).unwrap_or_default())
            .into_iter()
            .map(|(s, l)| (s, String::from_utf8_lossy(&l).into_owned()))
            .collect()
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(self.cgroup.trim_start_matches('/')))
            .filter(|d| d.exists())
            .collect()
    }

    fn mounts(&self) -> Vec<String> {
        let needle = self.dir.path().to_str().unwrap().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(String::from)
            .collect()
    }

    /// Deletes the container and checks nothing is left: no shim, no
    /// executor state, no mounts under the bundle, no cgroup dirs.
    fn delete_and_check_clean(&self) {
        let e = self.executor();
        e.delete(&self.id, false).unwrap_or_else(|err| panic!("[{}] delete: {err}", self.handler));
        self.check_clean();
    }

    fn check_clean(&self) {
        self.wait_shim_gone();
        assert!(self.executor().state(&self.id).is_err(), "[{}] executor still knows the container", self.handler);
        let state = self.exec_root.join(&self.handler).join(&self.id);
        assert!(!state.exists(), "[{}] executor state left: {}", self.handler, state.display());
        assert_eq!(self.mounts(), Vec::<String>::new(), "[{}] mounts left", self.handler);
        // Cgroup removal can trail the last process's exit a little.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.cgroup_dirs().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(self.cgroup_dirs(), Vec::<PathBuf>::new(), "[{}] cgroup dirs left", self.handler);
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        if let Some(pid) = self.live_shim() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.executor().delete(&self.id, true);
        for _ in 0..100 {
            let mut any = false;
            for d in self.cgroup_dirs() {
                for p in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = p.trim().parse::<i32>() {
                        any = true;
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..50 {
            let dirs = self.cgroup_dirs();
            if dirs.is_empty() {
                break;
            }
            for d in dirs {
                let _ = std::fs::remove_dir(&d);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut mounts = self.mounts();
        mounts.reverse();
        for m in mounts {
            if let Some(target) = m.split_whitespace().nth(4) {
                let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')))
        .unwrap_or(true)
}

fn status_field(pid: i32, key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
}

fn config(args: &[&str], cgroup: &str) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "shimtest",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ],
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// 1 + 6: stdout/stderr in CRI format, a long line split into P records,
/// the exit code; after delete nothing is left.
fn logs_and_exit_code(handler: &str) {
    let script = "echo hello; echo oops >&2; head -c 40000 /dev/zero | tr '\\0' x; echo; exit 3";
    let Some(fx) = Fx::new(handler, &["sh", "-c", script]) else { return };
    fx.spawn_and_start();
    let rec = fx.wait_exit(Duration::from_secs(30));
    assert_eq!((rec.exit_code, rec.signal, rec.oom_killed), (3, None, false), "[{handler}] {rec:?}");
    assert!(chrono_like(&rec.finished_at), "{rec:?}");

    let text = fx.log_text();
    let raw: Vec<&str> = text.lines().collect();
    let hello = raw.iter().find(|l| l.ends_with(" stdout F hello")).unwrap_or_else(|| panic!("no hello record:\n{}", &text[..text.len().min(2000)]));
    let ts = hello.split(' ').next().unwrap();
    assert!(chrono_like(ts), "timestamp {ts:?}");
    assert!(raw.iter().any(|l| l.ends_with(" stderr F oops")), "no oops record");
    let partial = raw.iter().filter(|l| l.contains(" stdout P ")).count();
    assert!(partial >= 2, "40000-byte line should be split into P records, got {partial}");
    assert!(raw.iter().all(|l| l.len() <= 16 * 1024 + 64), "a record exceeds the line limit");

    let lines = fx.lines(&fx.log);
    assert!(lines.contains(&(Stream::Stdout, "hello".into())), "{handler}: {:?}", &lines.iter().map(|(s, l)| (s, l.len())).collect::<Vec<_>>());
    assert!(lines.contains(&(Stream::Stderr, "oops".into())));
    assert!(lines.contains(&(Stream::Stdout, "x".repeat(40000))), "long line not joined back");

    fx.delete_and_check_clean();
}

/// RFC 3339 with nanoseconds and Z: 2024-01-02T03:04:05.123456789Z
fn chrono_like(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 30 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && s.ends_with('Z') && s[20..29].bytes().all(|c| c.is_ascii_digit())
}

/// 2: allocation past a 32 MiB limit → 137 and oom_killed.
fn oom(handler: &str) {
    let script = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}";
    let Some(mut fx) = Fx::new(handler, &["sh", "-c", script]) else { return };
    let limit = 32 * 1024 * 1024;
    fx.edit(|c| {
        c["linux"]["resources"]["memory"] = json!({"limit": limit, "swap": limit});
    });
    fx.spawn_and_start();
    let rec = fx.wait_exit(Duration::from_secs(60));
    assert_eq!((rec.exit_code, rec.signal, rec.oom_killed), (137, Some(9), true), "[{handler}] {rec:?} log:\n{}", fx.log_text());
    fx.delete_and_check_clean();
}

/// 3: the shim is detached and outlives the spawn; SIGTERM → 143. Also
/// measures the shim's RSS.
fn detached_and_sigterm(handler: &str) {
    let Some(mut fx) = Fx::new(handler, &["sleep", "60"]) else { return };
    // Without a PID namespace, so `sleep` is not a namespace init (which
    // ignores signals it has no handler for) and SIGTERM kills it.
    fx.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let pid = fx.spawn_and_start();
    let shim_pid = fx.live_shim().expect("shim running");
    let exe = std::fs::read_link(format!("/proc/{shim_pid}/exe")).unwrap();
    let want = if fx.full { "berth" } else { shim::SHIM_BINARY };
    assert_eq!(exe.file_name().and_then(|n| n.to_str()), Some(want), "[{handler}] shim runs {}", exe.display());
    let ppid: i32 = status_field(shim_pid, "PPid").unwrap().parse().unwrap();
    assert_ne!(ppid, std::process::id() as i32, "shim is a child of the test");
    let sid = nix::unistd::getsid(Some(Pid::from_raw(shim_pid))).unwrap();
    assert_eq!(sid, Pid::from_raw(shim_pid), "shim is not a session leader");
    let cppid: i32 = status_field(pid, "PPid").unwrap().parse().unwrap();
    assert_eq!(cppid, shim_pid, "container init is not the shim's child");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fx.live_shim(), Some(shim_pid), "shim died while the container runs");
    assert!(shim::read_exit(&fx.state_dir).is_none());
    let kb = |key: &str| -> u64 { status_field(shim_pid, key).unwrap().trim_end_matches("kB").trim().parse().unwrap() };
    let (rss, anon, file) = (kb("VmRSS"), kb("RssAnon"), kb("RssFile"));
    eprintln!("[{handler}] shim VmRSS: {rss} kB (RssAnon {anon} kB, RssFile {file} kB)");
    // The debug binary is large, so its mapped text dominates; the shim's
    // own (anonymous) memory is what grows per container.
    assert!(anon < 8 * 1024, "[{handler}] shim anonymous RSS {anon} kB is over 8 MiB");
    assert!(rss < 32 * 1024, "[{handler}] shim RSS {rss} kB is over 32 MiB");

    // The shim blocks signals for its signalfd: the container must not inherit that.
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ");
    let shim_signals = [libc::SIGHUP, libc::SIGINT, libc::SIGUSR1, libc::SIGPIPE, libc::SIGTERM, libc::SIGCHLD]
        .iter()
        .fold(0u64, |m, s| m | 1 << (s - 1));
    for key in ["SigBlk", "SigIgn"] {
        let v = status_field(pid, key).unwrap();
        let bits = u64::from_str_radix(&v, 16).unwrap();
        assert!(bits & shim_signals == 0, "[{handler}] container ({cmdline}) {key} = {v}");
    }
    fx.executor().kill(&fx.id, libc::SIGTERM, false).unwrap();
    let rec = fx.wait_exit(Duration::from_secs(20));
    assert_eq!((rec.exit_code, rec.signal, rec.oom_killed), (143, Some(15), false), "[{handler}] {rec:?}");
    fx.delete_and_check_clean();
}

/// 4: SIGUSR1 reopens the log path after rotation.
fn log_reopen(handler: &str) {
    let script = "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.2; done";
    let Some(fx) = Fx::new(handler, &["sh", "-c", script]) else { return };
    fx.spawn_and_start();
    let deadline = Instant::now() + Duration::from_secs(15);
    while fx.lines(&fx.log).len() < 3 {
        assert!(Instant::now() < deadline, "[{handler}] no output: {}", fx.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let rotated = fx.log.with_extension("log.1");
    std::fs::rename(&fx.log, &rotated).unwrap();
    let shim_pid = fx.live_shim().expect("shim running");
    kill(Pid::from_raw(shim_pid), Signal::SIGUSR1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.lines(&fx.log).len() < 3 {
        assert!(Instant::now() < deadline, "[{handler}] nothing in the reopened log");
        std::thread::sleep(Duration::from_millis(50));
    }
    let old: Vec<u64> = fx.lines(&rotated).iter().map(|(_, l)| l.trim_start_matches("line").parse().unwrap()).collect();
    let new: Vec<u64> = fx.lines(&fx.log).iter().map(|(_, l)| l.trim_start_matches("line").parse().unwrap()).collect();
    assert!(!old.is_empty() && !new.is_empty());
    assert!(new[0] > *old.last().unwrap() && new[0] <= old.last().unwrap() + 2, "[{handler}] old {old:?} new {new:?}");
    assert_eq!(fx.live_shim(), Some(shim_pid), "shim died on SIGUSR1");

    fx.executor().kill(&fx.id, libc::SIGKILL, false).unwrap();
    let rec = fx.wait_exit(Duration::from_secs(20));
    assert_eq!((rec.exit_code, rec.signal), (137, Some(9)), "[{handler}] {rec:?}");
    assert!(!rec.oom_killed);
    fx.delete_and_check_clean();
}

/// 5: a missing executable fails the spawn with a message naming it, and
/// leaves nothing behind.
fn missing_executable(handler: &str) {
    let Some(fx) = Fx::new(handler, &["/bin/no-such-program-xyz"]) else { return };
    let err = fx.spawn().expect_err("spawn should fail");
    assert!(err.contains("no-such-program-xyz"), "[{handler}] {err}");
    assert!(shim::read_exit(&fx.state_dir).is_none(), "exit.json written for a container that never ran");
    fx.check_clean();
}

macro_rules! per_handler {
    ($($scenario:ident),* $(,)?) => {
        mod builtin { $( #[test] fn $scenario() { super::$scenario("builtin") } )* }
        mod runc { $( #[test] fn $scenario() { super::$scenario("runc") } )* }
        mod crun { $( #[test] fn $scenario() { super::$scenario("crun") } )* }
        mod builtin_full { $( #[test] fn $scenario() { super::$scenario("builtin+full") } )* }
    };
}

per_handler!(logs_and_exit_code, oom, detached_and_sigterm, log_reopen, missing_executable);
