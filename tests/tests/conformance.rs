//! Container conformance: the same suite against each runtime handler
//! (builtin, runc, crun), through the real `berth container` CLI. Needs root
//! and cgroups; a handler whose binary is missing is skipped.
//!
//! Every test has its own state root and cgroup parent (`/berth-conf-<rand>`);
//! the fixture's Drop removes every container, rmdirs the cgroup parent in
//! every hierarchy and checks that nothing of the root is still mounted.

use berth_tests::builder::{self, Built, ImageBuilder};
use berth_tests::{require_root, TestRoot};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// containerd's default capability set.
const DEFAULT_CAPS: u64 = 0xa80425fb;
const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;
const CMD_TIMEOUT: Duration = Duration::from_secs(90);

fn find_bin(name: &str) -> Option<PathBuf> {
    ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Runs a command with a deadline (killing it when it passes); stdout and
/// stderr go through files so nothing blocks on a full pipe.
fn run_with_timeout(mut cmd: Command, timeout: Duration, what: &str) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output { status, stdout: read(out), stderr: read(err) }
}

/// Host mounts at or below `dir` (mountinfo field 5), innermost last.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == d || m.starts_with(&format!("{d}/")))
        .map(str::to_string)
        .collect()
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    berth_tests::cgroup::roots()
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_string()
}

fn host_bounding_set() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    u64::from_str_radix(&status_field(&s, "CapBnd"), 16).unwrap()
}

/// Whether `pid` is a live process (not a zombie waiting for its parent).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether `pid` is still alive after up to 2 s (an exited process may be a
/// zombie until init reaps it).
fn still_alive(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) {
        if Instant::now() > deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A finished container: its ID, exit code and logs.
#[derive(Debug)]
struct Done {
    id: String,
    exit: i32,
    out: String,
    err: String,
}

struct Fx {
    handler: &'static str,
    /// `/berth-conf-<rand>`.
    cg: String,
    work: PathBuf,
    root: TestRoot,
}

impl Fx {
    /// A fixture with the busybox image imported as `busybox:latest`; None
    /// when the handler's binary is not installed.
    fn new(handler: &'static str) -> Option<Fx> {
        require_root();
        if handler != "builtin" && find_bin(handler).is_none() {
            eprintln!("skipping: {handler} is not installed");
            return None;
        }
        let root = TestRoot::new();
        let work = root.path().join("work");
        std::fs::create_dir_all(work.join("logs")).unwrap();
        let cg = format!("/berth-conf-{:x}{:x}", std::process::id(), nanos() & 0xff_ffff_ffff);
        let fx = Fx { handler, cg, work, root };
        fx.import("busybox:latest", builder::busybox_image_builder().unwrap());
        Some(fx)
    }

    fn import(&self, name: &str, b: ImageBuilder) {
        let img = b.build().unwrap();
        let dir = self.work.join(format!("layout-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        builder::write_oci_layout(&dir, &[(name, Built::Image(&img))]).unwrap();
        self.ok(&["images", "import", dir.to_str().unwrap(), "--name", name]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn command(&self) -> Command {
        let mut c = self.root.command();
        c.arg("--cgroup-parent").arg(&self.cg);
        c
    }

    fn berth(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args);
        run_with_timeout(c, CMD_TIMEOUT, &format!("[{}] berth {args:?}", self.handler))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "[{}] berth {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.handler,
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs berth expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            !out.status.success(),
            "[{}] berth {args:?} should have failed\nstdout:\n{}\nstderr:\n{}",
            self.handler,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.work.join("logs").join(format!("{name}.log"))
    }

    /// A CRI config running `cmd` in busybox, with a fresh name.
    fn cri(&self, cmd: &[&str]) -> Value {
        let name = format!("c{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let mut v = json!({"metadata": {"name": name}, "image": {"image": "busybox:latest"}});
        if !cmd.is_empty() {
            v["command"] = json!(cmd);
        }
        v
    }

    fn write_cri(&self, cri: &Value) -> (String, PathBuf) {
        let name = cri["metadata"]["name"].as_str().unwrap().to_string();
        let path = self.work.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(cri).unwrap()).unwrap();
        (name, path)
    }

    /// `container <verb> --runtime H --cri-config F --log L <extra>` args.
    fn create_args(&self, verb: &str, cri: &Value, extra: &[&str]) -> (String, Vec<String>) {
        let (name, path) = self.write_cri(cri);
        let mut args: Vec<String> = ["container", verb, "--runtime", self.handler, "--cri-config"].map(String::from).to_vec();
        args.push(path.to_string_lossy().into());
        args.push("--log".into());
        args.push(self.log_path(&name).to_string_lossy().into());
        args.extend(extra.iter().map(|s| s.to_string()));
        (name, args)
    }

    fn create(&self, cri: &Value, extra: &[&str]) -> String {
        let (_, args) = self.create_args("create", cri, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.ok(&args).trim().to_string();
        assert_eq!(id.len(), 64, "create printed {id:?}");
        id
    }

    /// Create fails: returns stderr.
    fn create_fails(&self, cri: &Value, extra: &[&str]) -> String {
        let (_, args) = self.create_args("create", cri, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.fails(&args)
    }

    /// `run --detach`: returns the ID.
    fn run_detached(&self, cri: &Value, extra: &[&str]) -> String {
        let (_, mut args) = self.create_args("run", cri, extra);
        args.insert(2, "--detach".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.ok(&args).trim().to_string();
        assert_eq!(id.len(), 64, "run -d printed {id:?}");
        id
    }

    /// Creates, starts and waits for a container; returns its exit code and logs.
    fn run(&self, cri: &Value, extra: &[&str]) -> Done {
        let id = self.create(cri, extra);
        self.ok(&["container", "start", &id]);
        let exit = self.wait(&id);
        let st = self.inspect(&id);
        assert_eq!(st["state"], "EXITED", "[{}] {st}", self.handler);
        assert_eq!(st["exit_code"].as_i64(), Some(exit as i64));
        let (out, err) = self.logs(&id);
        Done { id, exit, out, err }
    }

    fn wait(&self, id: &str) -> i32 {
        let out = self.ok(&["container", "wait", id]);
        out.trim().parse().unwrap_or_else(|_| panic!("wait printed {out:?}"))
    }

    fn logs(&self, id: &str) -> (String, String) {
        let out = self.berth(&["container", "logs", id]);
        assert!(out.status.success(), "logs: {}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    }

    fn inspect(&self, id: &str) -> Value {
        let out = self.ok(&["container", "inspect", id]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect: {e}: {out}"))
    }

    fn ps_ids(&self) -> Vec<String> {
        self.ok(&["container", "ps", "-a", "-q"]).lines().map(str::to_string).collect()
    }

    /// The container's cgroup in the v1 hierarchy of `controller` (or the
    /// unified directory on v2).
    fn cgroup_dir(&self, controller: &str, id: &str) -> PathBuf {
        let st = self.inspect(id);
        let path = st["record"]["cgroups_path"].as_str().unwrap().to_string();
        assert!(path.starts_with(&format!("{}/", self.cg)), "cgroups_path {path} not under {}", self.cg);
        berth_tests::cgroup::dir(controller, &path)
    }

    fn cgroup_parent_dirs(&self) -> Vec<PathBuf> {
        cgroup_hierarchies().into_iter().map(|h| h.join(self.cg.trim_start_matches('/'))).filter(|p| p.exists()).collect()
    }

    /// No containers, no container cgroups, no mounts, no state left.
    fn assert_clean(&self) {
        assert_eq!(self.ps_ids(), Vec::<String>::new(), "[{}] containers left", self.handler);
        for d in self.cgroup_parent_dirs() {
            let children: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().filter(|e| e.path().is_dir()).map(|e| e.path()).collect();
            assert!(children.is_empty(), "[{}] cgroups left: {children:?}", self.handler);
        }
        assert_eq!(mounts_under(self.root.path()), Vec::<String>::new(), "[{}] mounts left", self.handler);
        for d in [self.root.path().join("containers"), self.root.path().join("run/containers")] {
            let left: Vec<_> = std::fs::read_dir(&d)
                .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n != "oci").collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "[{}] state left in {}: {left:?}", self.handler, d.display());
        }
        // The executor's root (one dir per handler) holds no container state.
        let oci = self.root.path().join("run/containers/oci");
        for handler in std::fs::read_dir(&oci).into_iter().flatten().flatten() {
            let left: Vec<_> = std::fs::read_dir(handler.path()).map(|rd| rd.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
            assert!(left.is_empty(), "[{}] executor state left in {}: {left:?}", self.handler, handler.path().display());
        }
    }

    /// Polls `f` until true or `secs` pass.
    fn until(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "[{}] timed out waiting for {what}", self.handler);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        let out = self.berth(&["container", "ps", "-a", "-q"]);
        for id in text(&out.stdout).lines() {
            let o = self.berth(&["container", "rm", id]);
            if !o.status.success() {
                problems.push(format!("rm {id}: {}", text(&o.stderr)));
            }
        }
        // Shims of containers rm could not remove (started by this test).
        if let Ok(rd) = std::fs::read_dir(self.root.path().join("run/containers")) {
            for e in rd.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path().join("shim.pid")).ok().and_then(|s| s.trim().parse().ok()) {
                    if still_alive(pid) {
                        problems.push(format!("shim {pid} still running"));
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
        for d in self.cgroup_parent_dirs() {
            // Leftover container cgroups: kill their processes, then rmdir.
            for child in std::fs::read_dir(&d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
                problems.push(format!("cgroup left: {}", child.display()));
                for p in std::fs::read_to_string(child.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = p.trim().parse() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                for _ in 0..50 {
                    if std::fs::remove_dir(&child).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if let Err(e) = std::fs::remove_dir(&d) {
                problems.push(format!("rmdir {}: {e}", d.display()));
            }
        }
        let mut mounts = mounts_under(self.root.path());
        if !mounts.is_empty() {
            problems.push(format!("still mounted: {mounts:?}"));
            mounts.reverse();
            for m in mounts {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if !problems.is_empty() {
            let msg = format!("[{}] cleanup: {problems:#?}", self.handler);
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn builtin() {
                if let Some(fx) = super::Fx::new("builtin") { super::$name(&fx) }
            }
            #[test]
            fn runc() {
                if let Some(fx) = super::Fx::new("runc") { super::$name(&fx) }
            }
            #[test]
            fn crun() {
                if let Some(fx) = super::Fx::new("crun") { super::$name(&fx) }
            }
        }
    )*};
}

conformance!(
    exit_codes,
    logs,
    entrypoint_cmd_args_env,
    user_and_groups,
    working_dir,
    capabilities,
    seccomp,
    readonly_rootfs_and_masked_paths,
    mounts,
    missing_mount_source,
    mount_propagation,
    hostname_and_uts,
    pid_namespace,
    cgroup_values,
    memory_limit_oom,
    pids_limit,
    stop,
    crash_recovery,
    remove_leaves_nothing,
    bad_input,
);

fn exit_codes(fx: &Fx) {
    let h = fx.handler;
    let out = fx.berth(&["container", "run", "--runtime", h, "--image", "busybox:latest", "--name", "e3", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "[{h}] run: {}", text(&out.stderr));
    let st = fx.inspect("e3");
    assert_eq!(st["state"], "EXITED", "[{h}] {st}");
    assert_eq!(st["exit_code"], 3, "[{h}] {st}");
    assert_eq!(st["reason"], "Error", "[{h}] {st}");
    assert!(st["finished_at"].as_i64().unwrap() > st["record"]["created_at"].as_i64().unwrap(), "[{h}] {st}");

    let out = fx.berth(&["container", "run", "--runtime", h, "--image", "busybox:latest", "--name", "e0", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "[{h}] run: {}", text(&out.stderr));
    let st = fx.inspect("e0");
    assert_eq!((st["state"].as_str(), st["exit_code"].as_i64(), st["reason"].as_str()), (Some("EXITED"), Some(0), Some("Completed")), "[{h}] {st}");

    // --rm removes it after it exits; the exit code still comes through.
    let out = fx.berth(&["container", "run", "--rm", "--runtime", h, "--image", "busybox:latest", "--name", "e7", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "[{h}] run --rm: {}", text(&out.stderr));
    assert_eq!(fx.ps_ids().len(), 2, "[{h}] --rm left its container");
}

/// `<RFC3339Nano> <stream> F|P <line>` → (stream, tag, line), checking the format.
fn parse_cri_line(l: &str) -> (String, String, String) {
    let mut parts = l.splitn(4, ' ');
    let (ts, stream, tag, msg) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
    let b = ts.as_bytes();
    let ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (ts.ends_with('Z') || ts[ts.len() - 6..].starts_with(['+', '-']))
        && ts[..4].parse::<u32>().is_ok_and(|y| y >= 2024);
    assert!(ok, "bad timestamp {ts:?} in {l:?}");
    assert!(stream == "stdout" || stream == "stderr", "bad stream in {l:?}");
    assert!(tag == "F" || tag == "P", "bad tag in {l:?}");
    (stream.into(), tag.into(), msg.into())
}

fn logs(fx: &Fx) {
    let h = fx.handler;
    let cri = fx.cri(&["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo 'two  spaces ' >&2"]);
    let d = fx.run(&cri, &[]);
    assert_eq!(d.exit, 0, "[{h}] {d:?}");
    let file = std::fs::read_to_string(fx.log_path(cri["metadata"]["name"].as_str().unwrap())).unwrap();
    let lines: Vec<_> = file.lines().map(parse_cri_line).collect();
    assert!(lines.iter().all(|(_, t, _)| t == "F"), "[{h}] short lines are full lines:\n{file}");
    let out: Vec<_> = lines.iter().filter(|(s, _, _)| s == "stdout").map(|(_, _, m)| m.as_str()).collect();
    let err: Vec<_> = lines.iter().filter(|(s, _, _)| s == "stderr").map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(out, ["out1", "out2"], "[{h}] log file:\n{file}");
    assert_eq!(err, ["err1", "two  spaces "], "[{h}] log file:\n{file}");
    assert_eq!(d.out, "out1\nout2\n", "[{h}]");
    assert_eq!(d.err, "err1\ntwo  spaces \n", "[{h}]");

    // A long line is split into partial (P) entries and joined again; a
    // last line without a newline still ends up in the log.
    let cri = fx.cri(&["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' x; echo; printf tail"]);
    let d = fx.run(&cri, &[]);
    let file = std::fs::read_to_string(fx.log_path(cri["metadata"]["name"].as_str().unwrap())).unwrap();
    let lines: Vec<_> = file.lines().map(parse_cri_line).collect();
    let mut joined = Vec::new();
    let mut cur = String::new();
    for (stream, tag, msg) in &lines {
        assert_eq!(stream, "stdout", "[{h}]");
        cur.push_str(msg);
        if tag == "F" {
            joined.push(std::mem::take(&mut cur));
        }
    }
    assert_eq!(joined.len(), 2, "[{h}] {} log lines", lines.len());
    assert_eq!(joined[0], "x".repeat(40000), "[{h}]");
    assert_eq!(joined[1], "tail", "[{h}]");
    assert_eq!(d.out, format!("{}\ntail\n", "x".repeat(40000)), "[{h}] berth container logs");
}

fn entrypoint_cmd_args_env(fx: &Fx) {
    let h = fx.handler;
    fx.import(
        "ep:latest",
        builder::busybox_image_builder().unwrap().entrypoint(&["/bin/echo", "ep"]).cmd(&["cmd"]).env(&[builder::BUSYBOX_PATH, "A=img", "B=img"]),
    );
    let base = |fx: &Fx| {
        let mut c = fx.cri(&[]);
        c["image"]["image"] = json!("ep:latest");
        c
    };
    let d = fx.run(&base(fx), &[]);
    assert_eq!((d.exit, d.out.as_str()), (0, "ep cmd\n"), "[{h}] entrypoint + cmd: {d:?}");

    let mut c = base(fx);
    c["args"] = json!(["x", "y"]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "ep x y\n", "[{h}] args replace cmd: {d:?}");

    let mut c = base(fx);
    c["command"] = json!(["/bin/echo", "cmdonly"]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "cmdonly\n", "[{h}] command replaces entrypoint and cmd: {d:?}");

    let mut c = base(fx);
    c["command"] = json!(["/bin/echo"]);
    c["args"] = json!(["a", "b"]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "a b\n", "[{h}] command + args: {d:?}");

    let mut c = base(fx);
    c["command"] = json!(["sh", "-c", "echo $A $B $C $D"]);
    c["envs"] = json!([{"key": "A", "value": "cri"}, {"key": "C", "value": "c"}]);
    let d = fx.run(&c, &["-e", "D=flag"]);
    assert_eq!(d.out, "cri img c flag\n", "[{h}] image env + CRI envs: {d:?}");
}

/// `id` output → (uid, gid, groups).
fn parse_id(s: &str) -> (u32, u32, Vec<u32>) {
    let num = |f: &str| f.split('(').next().unwrap().parse::<u32>().unwrap();
    let (mut uid, mut gid, mut groups) = (None, None, Vec::new());
    for f in s.split_whitespace() {
        if let Some(v) = f.strip_prefix("uid=") {
            uid = Some(num(v));
        } else if let Some(v) = f.strip_prefix("gid=") {
            gid = Some(num(v));
        } else if let Some(v) = f.strip_prefix("groups=") {
            groups = v.split(',').map(num).collect();
        }
    }
    groups.sort();
    (uid.unwrap_or_else(|| panic!("id: {s}")), gid.unwrap(), groups)
}

fn user_and_groups(fx: &Fx) {
    let h = fx.handler;
    let mut c = fx.cri(&["id"]);
    c["linux"] = json!({"security_context": {"run_as_user": {"value": 1000}, "run_as_group": {"value": 1000}, "supplemental_groups": [2000]}});
    let d = fx.run(&c, &[]);
    assert_eq!(d.exit, 0, "[{h}] {d:?}");
    let (uid, gid, groups) = parse_id(&d.out);
    assert_eq!((uid, gid), (1000, 1000), "[{h}] {}", d.out);
    // The primary group, the supplemental one, and app's groups in /etc/group.
    assert_eq!(groups, [10, 1000, 2000], "[{h}] {}", d.out);

    let mut c = fx.cri(&["id"]);
    c["linux"] = json!({"security_context": {"run_as_user": {"value": 65534}}});
    let d = fx.run(&c, &[]);
    let (uid, gid, groups) = parse_id(&d.out);
    assert_eq!((uid, gid, groups), (65534, 65534, vec![65534]), "[{h}] nobody: {}", d.out);

    fx.import("userimg:latest", builder::busybox_image_builder().unwrap().user("app"));
    let mut c = fx.cri(&["id"]);
    c["image"]["image"] = json!("userimg:latest");
    let d = fx.run(&c, &[]);
    let (uid, gid, groups) = parse_id(&d.out);
    assert_eq!((uid, gid, groups), (1000, 1000, vec![10, 1000, 2000]), "[{h}] image User app: {}", d.out);

    // HOME follows the user.
    let mut c = fx.cri(&["sh", "-c", "echo $HOME"]);
    c["image"]["image"] = json!("userimg:latest");
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "/home/app\n", "[{h}] HOME: {d:?}");
}

fn working_dir(fx: &Fx) {
    let h = fx.handler;
    fx.import("wd:latest", builder::busybox_image_builder().unwrap().working_dir("/home/app"));
    let mut c = fx.cri(&["pwd"]);
    c["image"]["image"] = json!("wd:latest");
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "/home/app\n", "[{h}] image WorkingDir: {d:?}");

    let mut c = fx.cri(&["pwd"]);
    c["image"]["image"] = json!("wd:latest");
    c["working_dir"] = json!("/tmp");
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "/tmp\n", "[{h}] CRI working_dir: {d:?}");

    let d = fx.run(&fx.cri(&["pwd"]), &[]);
    assert_eq!(d.out, "/\n", "[{h}] default: {d:?}");

    // A working dir that does not exist is created.
    let mut c = fx.cri(&["pwd"]);
    c["working_dir"] = json!("/new/dir");
    let d = fx.run(&c, &[]);
    assert_eq!((d.exit, d.out.as_str()), (0, "/new/dir\n"), "[{h}] missing working_dir: {d:?}");
}

fn cap_eff(fx: &Fx, caps: Option<Value>) -> u64 {
    let mut c = fx.cri(&["cat", "/proc/self/status"]);
    if let Some(caps) = caps {
        c["linux"] = json!({"security_context": {"capabilities": caps}});
    }
    let d = fx.run(&c, &[]);
    assert_eq!(d.exit, 0, "[{}] {d:?}", fx.handler);
    u64::from_str_radix(&status_field(&d.out, "CapEff"), 16).unwrap()
}

fn capabilities(fx: &Fx) {
    let h = fx.handler;
    let bnd = host_bounding_set();
    let want = DEFAULT_CAPS & bnd;
    assert_eq!(cap_eff(fx, None), want, "[{h}] default caps (host bounding set {bnd:#x})");
    let got = cap_eff(fx, Some(json!({"add_capabilities": ["NET_ADMIN"]})));
    assert_eq!(got, (want | 1 << CAP_NET_ADMIN) & bnd, "[{h}] +NET_ADMIN");
    let got = cap_eff(fx, Some(json!({"drop_capabilities": ["CHOWN"]})));
    assert_eq!(got, want & !(1 << CAP_CHOWN), "[{h}] -CHOWN");
    let got = cap_eff(fx, Some(json!({"add_capabilities": ["CAP_NET_ADMIN"], "drop_capabilities": ["CAP_CHOWN"]})));
    assert_eq!(got, (want | 1 << CAP_NET_ADMIN) & !(1 << CAP_CHOWN), "[{h}] CAP_ prefixes");
    let got = cap_eff(fx, Some(json!({"drop_capabilities": ["ALL"]})));
    assert_eq!(got, 0, "[{h}] drop ALL");

    // A non-root user has no effective capabilities.
    let mut c = fx.cri(&["cat", "/proc/self/status"]);
    c["linux"] = json!({"security_context": {"run_as_user": {"value": 1000}}});
    let d = fx.run(&c, &[]);
    assert_eq!(status_field(&d.out, "CapEff"), "0000000000000000", "[{h}] uid 1000");
}

fn seccomp(fx: &Fx) {
    let h = fx.handler;
    let sc = |profile: i32, caps: &[&str]| {
        json!({"security_context": {"seccomp": {"profile_type": profile}, "capabilities": {"add_capabilities": caps}}})
    };
    let mut c = fx.cri(&["grep", "Seccomp:", "/proc/self/status"]);
    c["linux"] = sc(0, &[]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.out.trim(), "Seccomp:\t2", "[{h}] RuntimeDefault: {d:?}");

    let mut c = fx.cri(&["grep", "Seccomp:", "/proc/self/status"]);
    c["linux"] = sc(1, &[]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.out.trim(), "Seccomp:\t0", "[{h}] Unconfined: {d:?}");

    let mut c = fx.cri(&["unshare", "-m", "true"]);
    c["linux"] = sc(0, &[]);
    let d = fx.run(&c, &[]);
    assert_ne!(d.exit, 0, "[{h}] unshare under RuntimeDefault: {d:?}");
    assert!(d.err.contains("Operation not permitted"), "[{h}] {d:?}");

    let mut c = fx.cri(&["unshare", "-m", "true"]);
    c["linux"] = sc(1, &["SYS_ADMIN"]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.exit, 0, "[{h}] unshare, Unconfined + SYS_ADMIN: {d:?}");
}

fn readonly_rootfs_and_masked_paths(fx: &Fx) {
    let h = fx.handler;
    let script = "touch /x 2>/dev/null && echo ROOT_W || echo ROOT_RO; \
                  touch /tmp/x 2>/dev/null && echo TMP_W || echo TMP_RO; \
                  echo TL=$(cat /proc/timer_list 2>/dev/null | wc -c); \
                  echo KEYS=$(cat /proc/keys 2>/dev/null | wc -c); \
                  echo FW=$(ls -A /sys/firmware | wc -l); \
                  (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null && echo PS_W || echo PS_RO";
    let mut c = fx.cri(&["sh", "-c", script]);
    c["linux"] = json!({"security_context": {"readonly_rootfs": true}});
    let d = fx.run(&c, &[]);
    let want = "ROOT_RO\nTMP_RO\nTL=0\nKEYS=0\nFW=0\nPS_RO\n";
    assert_eq!(d.out, want, "[{h}] read-only rootfs: {d:?}");

    // With /tmp mounted, /tmp is writable; the rootfs still is not.
    let tmp = fx.work.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut c = fx.cri(&["sh", "-c", script]);
    c["linux"] = json!({"security_context": {"readonly_rootfs": true}});
    c["mounts"] = json!([{"container_path": "/tmp", "host_path": tmp}]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "ROOT_RO\nTMP_W\nTL=0\nKEYS=0\nFW=0\nPS_RO\n", "[{h}] read-only rootfs + /tmp: {d:?}");
    assert!(tmp.join("x").exists(), "[{h}] the write to /tmp did not reach the host dir");

    // A writable rootfs keeps the masks and the read-only /proc/sys.
    let d = fx.run(&fx.cri(&["sh", "-c", script]), &[]);
    assert_eq!(d.out, "ROOT_W\nTMP_W\nTL=0\nKEYS=0\nFW=0\nPS_RO\n", "[{h}] writable rootfs: {d:?}");
}

fn mounts(fx: &Fx) {
    let h = fx.handler;
    let rw = fx.work.join("rw");
    let ro = fx.work.join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("data"), "from host\n").unwrap();
    let mut c = fx.cri(&["sh", "-c", "echo hi > /data/f && cat /ro/data && touch /ro/f; echo ro=$?"]);
    c["mounts"] = json!([
        {"container_path": "/data", "host_path": rw},
        {"container_path": "/ro", "host_path": ro, "readonly": true},
    ]);
    let d = fx.run(&c, &[]);
    assert_eq!(std::fs::read_to_string(rw.join("f")).ok().as_deref(), Some("hi\n"), "[{h}] rw mount: {d:?}");
    assert_eq!(d.out, "from host\nro=1\n", "[{h}] {d:?}");
    assert!(d.err.contains("Read-only file system"), "[{h}] {d:?}");
    assert!(!ro.join("f").exists(), "[{h}] wrote through a read-only mount");

    // A single file can be mounted too.
    let file = fx.work.join("file.txt");
    std::fs::write(&file, "a file\n").unwrap();
    let mut c = fx.cri(&["cat", "/etc/mounted.txt"]);
    c["mounts"] = json!([{"container_path": "/etc/mounted.txt", "host_path": file, "readonly": true}]);
    let d = fx.run(&c, &[]);
    assert_eq!(d.out, "a file\n", "[{h}] file mount: {d:?}");
}

fn missing_mount_source(fx: &Fx) {
    let h = fx.handler;
    let missing = fx.work.join("does-not-exist");
    let mut c = fx.cri(&["true"]);
    c["mounts"] = json!([{"container_path": "/data", "host_path": missing}]);
    let err = fx.create_fails(&c, &[]);
    assert!(err.contains(missing.to_str().unwrap()), "[{h}] error does not name the path: {err}");
    fx.assert_clean();
}

/// Undoes the host mounts of the propagation test.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn mount_propagation(fx: &Fx) {
    use nix::mount::{mount, MsFlags};
    let h = fx.handler;
    let src = fx.work.join("prop");
    std::fs::create_dir_all(&src).unwrap();
    let mut guard = Unmount(Vec::new());
    // rslave needs a shared (or slave) source: make it its own shared mount.
    mount(Some(&src), &src, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    guard.0.push(src.clone());
    mount(None::<&str>, &src, None::<&str>, MsFlags::MS_SHARED, None::<&str>).unwrap();
    std::fs::create_dir_all(src.join("sub")).unwrap();

    let mut c = fx.cri(&["sh", "-c", "echo ready; for i in $(seq 200); do [ -e /data/sub/marker ] && echo FOUND && exit 0; sleep 0.1; done; exit 1"]);
    c["mounts"] = json!([{"container_path": "/data", "host_path": src, "propagation": 1}]);
    let name = c["metadata"]["name"].as_str().unwrap().to_string();
    let id = fx.run_detached(&c, &[]);
    let log = fx.log_path(&name);
    fx.until(20, "ready", || std::fs::read_to_string(&log).unwrap_or_default().contains("ready"));
    mount(Some("tmpfs"), &src.join("sub"), Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
    guard.0.push(src.join("sub"));
    std::fs::write(src.join("sub/marker"), "x").unwrap();
    let exit = fx.wait(&id);
    let (out, err) = fx.logs(&id);
    assert_eq!((exit, out.as_str()), (0, "ready\nFOUND\n"), "[{h}] host mount did not propagate into the container: {err}");
    // And nothing propagates back: the container's mounts are not the host's.
    drop(guard);
    fx.ok(&["container", "rm", &id]);
    fx.assert_clean();
}

fn hostname_and_uts(fx: &Fx) {
    let h = fx.handler;
    let d = fx.run(&fx.cri(&["sh", "-c", "hostname; readlink /proc/self/ns/uts; echo $HOSTNAME"]), &[]);
    let lines: Vec<&str> = d.out.lines().collect();
    assert_eq!(lines.len(), 3, "[{h}] {d:?}");
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let host_uts = std::fs::read_link("/proc/self/ns/uts").unwrap();
    assert!(!lines[0].is_empty(), "[{h}] empty hostname");
    assert_ne!(lines[1], host_uts.to_str().unwrap(), "[{h}] shares the host's UTS namespace");
    assert_ne!(lines[0], host_name, "[{h}] kept the host's hostname");
    assert_eq!(lines[0], &d.id[..12], "[{h}] hostname is not the short ID");
    assert_eq!(lines[2], lines[0], "[{h}] HOSTNAME env");
}

fn pid_namespace(fx: &Fx) {
    let h = fx.handler;
    let d = fx.run(&fx.cri(&["sh", "-c", "echo $$; ps -o pid= 2>/dev/null | wc -l; readlink /proc/self/ns/pid"]), &[]);
    let lines: Vec<&str> = d.out.lines().collect();
    assert_eq!(lines[0], "1", "[{h}] {d:?}");
    assert_ne!(lines[2], std::fs::read_link("/proc/self/ns/pid").unwrap().to_str().unwrap(), "[{h}] host PID namespace");
}

fn cgroup_values(fx: &Fx) {
    let h = fx.handler;
    let mut c = fx.cri(&["sleep", "1000"]);
    c["linux"] = json!({"resources": {"memory_limit_in_bytes": 33554432, "cpu_shares": 512, "cpu_quota": 50000, "cpu_period": 100000}});
    let id = fx.run_detached(&c, &[]);
    let read = |ctl: &str, file: &str| -> String {
        let p = fx.cgroup_dir(ctl, &id).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("[{h}] {}: {e}", p.display())).trim().to_string()
    };
    if berth_tests::cgroup::unified() {
        assert_eq!(read("memory", "memory.max"), "33554432", "[{h}]");
        if fx.cgroup_dir("memory", &id).join("memory.swap.max").exists() {
            assert_eq!(read("memory", "memory.swap.max"), "0", "[{h}] swap = limit: none at all");
        }
        // Kubernetes' conversion: 1 + (shares - 2) * 9999 / 262142.
        assert_eq!(read("cpu", "cpu.weight"), "20", "[{h}] cpu.weight of 512 shares");
        assert_eq!(read("cpu", "cpu.max"), "50000 100000", "[{h}]");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "33554432", "[{h}]");
        if fx.cgroup_dir("memory", &id).join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), "33554432", "[{h}] swap = limit");
        }
        assert_eq!(read("cpu", "cpu.shares"), "512", "[{h}]");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000", "[{h}]");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000", "[{h}]");
    }
    // The container's process is in that cgroup.
    let pid = fx.inspect(&id)["pid"].as_i64().unwrap();
    assert!(pid > 0, "[{h}] no pid");
    let procs = read("memory", "cgroup.procs");
    assert!(procs.lines().any(|p| p == pid.to_string()), "[{h}] pid {pid} not in {procs:?}");
    fx.ok(&["container", "stop", "-t", "0", &id]);
    assert_eq!(fx.inspect(&id)["exit_code"], 137, "[{h}]");
}

fn memory_limit_oom(fx: &Fx) {
    let h = fx.handler;
    let mut c = fx.cri(&["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]);
    c["linux"] = json!({"resources": {"memory_limit_in_bytes": 33554432}});
    let d = fx.run(&c, &[]);
    let st = fx.inspect(&d.id);
    assert_eq!(d.exit, 137, "[{h}] {d:?} {st}");
    assert_eq!(st["reason"], "OOMKilled", "[{h}] {st}");
    assert!(!d.out.contains("survived"), "[{h}] {d:?}");
}

fn pids_limit(fx: &Fx) {
    let h = fx.handler;
    let c = fx.cri(&["sh", "-c", "for i in $(seq 100); do sleep 3 & done; wait; echo done"]);
    let id = fx.run_detached(&c, &["--pids-limit", "10"]);
    let max = std::fs::read_to_string(fx.cgroup_dir("pids", &id).join("pids.max")).unwrap();
    assert_eq!(max.trim(), "10", "[{h}] pids.max");
    fx.wait(&id);
    let (out, err) = fx.logs(&id);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "[{h}] the fork loop did not hit the limit:\nstdout: {out}\nstderr: {err}"
    );
    let err = fx.fails(&["container", "create", "--runtime", h, "--image", "busybox:latest", "--pids-limit", "0", "--", "true"]);
    assert!(err.contains("pids-limit"), "[{h}] {err}");
}

fn stop(fx: &Fx) {
    let h = fx.handler;
    // PID 1 without a SIGTERM handler ignores it: SIGKILL after the timeout.
    let id = fx.run_detached(&fx.cri(&["sleep", "1000"]), &[]);
    assert_eq!(fx.inspect(&id)["state"], "RUNNING", "[{h}]");
    let t = Instant::now();
    fx.ok(&["container", "stop", "-t", "2", &id]);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(10), "[{h}] stop took {took:?}");
    let st = fx.inspect(&id);
    assert_eq!((st["state"].as_str(), st["exit_code"].as_i64()), (Some("EXITED"), Some(137)), "[{h}] {st}");

    // A shell that traps TERM exits promptly with its own code.
    let c = fx.cri(&["sh", "-c", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"]);
    let log = fx.log_path(c["metadata"]["name"].as_str().unwrap());
    let id = fx.run_detached(&c, &[]);
    fx.until(20, "ready", || std::fs::read_to_string(&log).unwrap_or_default().contains("ready"));
    let t = Instant::now();
    fx.ok(&["container", "stop", "-t", "10", &id]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "[{h}] trapping stop took {took:?}");
    let st = fx.inspect(&id);
    assert_eq!((st["exit_code"].as_i64(), st["reason"].as_str()), (Some(0), Some("Completed")), "[{h}] {st}");

    // Stopping an exited container is fine.
    fx.ok(&["container", "stop", &id]);
}

fn crash_recovery(fx: &Fx) {
    let h = fx.handler;
    let log = fx.log_path("crash");
    let mut cmd = fx.command();
    cmd.args(["container", "run", "--runtime", h, "--image", "busybox:latest", "--name", "crash", "--log"])
        .arg(&log)
        .args(["--", "sh", "-c", "echo start; sleep 3; echo end; exit 5"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("start") {
        if started.elapsed() > Duration::from_secs(20) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("[{h}] the container did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let ps: Value = serde_json::from_str(&fx.ok(&["container", "ps", "-o", "json"])).unwrap();
    let list = ps.as_array().unwrap();
    assert_eq!(list.len(), 1, "[{h}] {ps}");
    assert_eq!(list[0]["state"], "RUNNING", "[{h}] {ps}");
    assert_eq!(fx.ok(&["container", "wait", "crash"]).trim(), "5", "[{h}]");
    let st = fx.inspect("crash");
    assert_eq!((st["state"].as_str(), st["exit_code"].as_i64(), st["reason"].as_str()), (Some("EXITED"), Some(5), Some("Error")), "[{h}] {st}");
    let (out, _) = fx.logs("crash");
    assert_eq!(out, "start\nend\n", "[{h}]");
}

fn remove_leaves_nothing(fx: &Fx) {
    let h = fx.handler;
    // A created, never started container.
    let id = fx.create(&fx.cri(&["sleep", "1000"]), &[]);
    assert_eq!(fx.inspect(&id)["state"], "CREATED", "[{h}]");
    fx.ok(&["container", "rm", &id]);
    fx.assert_clean();

    let id = fx.run_detached(&fx.cri(&["sleep", "1000"]), &[]);
    let st = fx.inspect(&id);
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert!(pid > 0, "[{h}] {st}");
    let run_dir = fx.root.path().join("run/containers").join(&id);
    let shim_pid: i32 = std::fs::read_to_string(run_dir.join("shim.pid")).unwrap().trim().parse().unwrap();
    let cgroups: Vec<PathBuf> = cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(st["record"]["cgroups_path"].as_str().unwrap().trim_start_matches('/')))
        .collect();
    assert!(cgroups.iter().any(|p| p.exists()), "[{h}] no cgroup while running");
    assert!(!mounts_under(fx.root.path()).is_empty(), "[{h}] no rootfs mount while running");
    fx.ok(&["container", "rm", &id]);
    let live: Vec<_> = cgroups.iter().filter(|p| p.exists()).collect();
    assert!(live.is_empty(), "[{h}] cgroups left: {live:?}");
    assert!(!still_alive(shim_pid), "[{h}] shim {shim_pid} still running");
    assert!(!still_alive(pid), "[{h}] container process {pid} still running");
    assert!(!run_dir.exists(), "[{h}] {} left", run_dir.display());
    fx.assert_clean();
    let err = fx.fails(&["container", "inspect", &id]);
    assert!(err.contains("not found"), "[{h}] {err}");
}

fn bad_input(fx: &Fx) {
    let h = fx.handler;
    let err = fx.fails(&["container", "create", "--runtime", h, "--image", "nope:latest", "--", "true"]);
    assert!(err.contains("nope:latest"), "[{h}] {err}");
    fx.assert_clean();

    let err = fx.create_fails(&fx.cri(&["/bin/nope"]), &[]);
    assert!(err.contains("/bin/nope"), "[{h}] missing executable: {err}");
    fx.assert_clean();

    let err = fx.create_fails(&fx.cri(&["nope-not-on-path"]), &[]);
    assert!(err.contains("nope-not-on-path"), "[{h}] missing executable: {err}");
    fx.assert_clean();

    let bad = fx.work.join("bad-seccomp.json");
    std::fs::write(&bad, "{not json").unwrap();
    let mut c = fx.cri(&["true"]);
    c["linux"] = json!({"security_context": {"seccomp": {"profile_type": 2, "localhost_ref": bad}}});
    let err = fx.create_fails(&c, &[]);
    assert!(err.contains(bad.to_str().unwrap()), "[{h}] bad seccomp profile: {err}");
    fx.assert_clean();

    let err = fx.fails(&["container", "create", "--runtime", "nosuchruntime", "--image", "busybox:latest", "--", "true"]);
    assert!(err.contains("nosuchruntime"), "[{h}] {err}");
    fx.assert_clean();
}
