//! Built-in executor end to end (needs root): `run` via the dev binary and
//! the create/start/state/kill/delete lifecycle via the library API.

mod oci_support;

use std::time::{Duration, Instant};

use berth_runtime::oci::{BuiltinExecutor, CreateOpts, ExecError, Executor, InitCommand, Status};
use oci_support::{Fixture, BIN};
use serde_json::json;

fn sh(script: &str) -> Fixture {
    Fixture::new(&["sh", "-c", script])
}

#[test]
fn run_true_and_exit_codes() {
    require_root!();
    let f = Fixture::new(&["/bin/true"]);
    let (code, _, err) = f.run("t1");
    assert_eq!(code, 0, "stderr: {err}");
    let f = sh("exit 3");
    assert_eq!(f.run("t2").0, 3);
}

#[test]
fn pid1_hostname_caps_nnp_stdout() {
    require_root!();
    let f = sh("echo pid=$$; hostname; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status");
    let (code, out, err) = f.run("p1");
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("berth-test\n"), "{out}");
    // CAP_AUDIT_WRITE(29) | CAP_KILL(5) | CAP_NET_BIND_SERVICE(10)
    assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn readonly_rootfs_and_masked_paths() {
    require_root!();
    let f = sh("touch /x && echo wrote; echo keys=$(cat /proc/keys | wc -c); echo > /proc/sys/kernel/hostname || echo rosys");
    let (_, out, err) = f.run("ro1");
    assert!(!out.contains("wrote"), "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(out.contains("keys=0"), "{out}");
    assert!(out.contains("rosys"), "{out}");
}

#[test]
fn seccomp_denies_unshare() {
    require_root!();
    let mut f = sh("unshare -m true && echo unshared; unshare -r true || echo denied");
    let caps = json!(["CAP_SYS_ADMIN", "CAP_KILL"]);
    f.edit(|c| c["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps}));
    // Without a profile CAP_SYS_ADMIN allows unshare -m.
    let (_, out, err) = f.run("sc0");
    assert!(out.contains("unshared"), "{out} {err}");
    f.edit(|c| {
        c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]})
    });
    let (_, out, err) = f.run("sc1");
    assert!(!out.contains("unshared"), "{out}");
    assert!(out.contains("denied"), "{out}");
    assert!(err.contains("Function not implemented"), "{err}");
}

#[test]
fn pids_limit_holds() {
    require_root!();
    let mut f = sh("for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 3 & done; echo end");
    f.edit(|c| c["linux"]["resources"]["pids"] = json!({"limit": 5}));
    let (code, _, err) = f.run("pl");
    assert_ne!(code, 0);
    assert!(err.contains("can't fork"), "expected fork failures: {err}");
    // Without the limit the same loop completes.
    let mut f = sh("for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 3 & done; echo end");
    f.edit(|c| c["linux"]["resources"]["pids"] = json!({"limit": 100}));
    let (code, out, err) = f.run("pl2");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("end"));
}

#[test]
fn missing_executable_is_reported_by_create() {
    require_root!();
    let f = Fixture::new(&["/bin/nope"]);
    let bundle = f.bundle.to_str().unwrap().to_string();
    let out = f.berth(&["create", "--bundle", &bundle, "m1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exec \"/bin/nope\": No such file or directory"), "{err}");
    assert!(!f.root.join("m1").exists());
    assert!(f.cgroup_dirs().is_empty());
    let f = Fixture::new(&["nope"]);
    let out = f.berth(&["create", "--bundle", &bundle_of(&f), "m2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("executable file not found in $PATH"));
}

fn bundle_of(f: &Fixture) -> String {
    f.bundle.to_str().unwrap().to_string()
}

fn executor(f: &Fixture) -> BuiltinExecutor {
    BuiltinExecutor::new(&f.root, InitCommand { exe: BIN.into(), args: vec!["oci".into(), "init".into()], fork: false })
}

fn wait_status(e: &dyn Executor, id: &str, want: Status) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = e.state(id).unwrap().status;
        if s == want {
            return;
        }
        assert!(Instant::now() < deadline, "status {s}, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lifecycle_and_memory_limit() {
    require_root!();
    // Orphaned container inits are reparented to us; reap them.
    berth_runtime::linux::process::set_child_subreaper().unwrap();
    let mut f = Fixture::new(&["sleep", "30"]);
    f.edit(|c| c["linux"]["resources"]["memory"] = json!({"limit": 67108864}));
    let e = executor(&f);
    let pid_file = f.dir.path().join("pid");
    e.create("lc", &f.bundle, CreateOpts { pid_file: Some(pid_file.clone()), ..Default::default() }).unwrap();
    assert!(matches!(e.create("lc", &f.bundle, CreateOpts::default()), Err(ExecError::AlreadyExists(_))));
    let st = e.state("lc").unwrap();
    assert_eq!(st.status, Status::Created);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), st.pid.to_string());
    let limit = std::fs::read_to_string(f.memory_limit_file()).unwrap();
    assert_eq!(limit.trim(), "67108864");
    let procs = std::fs::read_to_string(f.cgroup_dir("memory").join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|p| p == st.pid.to_string()), "{procs}");

    e.start("lc").unwrap();
    assert_eq!(e.state("lc").unwrap().status, Status::Running);
    assert!(matches!(e.delete("lc", false), Err(ExecError::BadState { .. })));

    // exec a second process into the running container.
    let mut p = oci_spec::runtime::Process::default();
    p.set_args(Some(vec!["sleep".into(), "20".into()]));
    p.set_env(Some(vec!["PATH=/bin".into()]));
    let xpid = e.exec("lc", &p, CreateOpts::default()).unwrap();
    assert!(xpid > 0);
    let procs = std::fs::read_to_string(f.cgroup_dir("pids").join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|p| p == xpid.to_string()), "{procs}");
    let mut bad = p.clone();
    bad.set_args(Some(vec!["/bin/nope".into()]));
    let err = e.exec("lc", &bad, CreateOpts::default()).unwrap_err().to_string();
    assert!(err.contains("exec \"/bin/nope\": No such file or directory"), "{err}");

    e.kill("lc", libc::SIGKILL, false).unwrap();
    oci_support::reap(st.pid);
    wait_status(&e, "lc", Status::Stopped);
    assert_eq!(e.state("lc").unwrap().pid, 0);

    e.delete("lc", false).unwrap();
    assert!(matches!(e.state("lc"), Err(ExecError::NotFound(_))));
    assert!(!f.root.join("lc").exists());
    assert!(f.cgroup_dirs().is_empty(), "{:?}", f.cgroup_dirs());
    assert!(f.leftover_mounts().is_empty(), "{:?}", f.leftover_mounts());
}

#[test]
fn force_delete_running_and_kill_all() {
    require_root!();
    berth_runtime::linux::process::set_child_subreaper().unwrap();
    let f = sh("sleep 30 & sleep 30");
    let e = executor(&f);
    e.create("fd", &f.bundle, CreateOpts::default()).unwrap();
    e.start("fd").unwrap();
    let pid = e.state("fd").unwrap().pid;
    let deadline = Instant::now() + Duration::from_secs(5);
    // busybox sh execs the last command: init + one background sleep.
    while e.pids("fd").unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(e.pids("fd").unwrap().len() >= 2);
    e.delete("fd", true).unwrap();
    oci_support::reap(pid);
    assert!(f.cgroup_dirs().is_empty());
    assert!(!f.root.join("fd").exists());
}

#[test]
fn state_and_features_commands() {
    require_root!();
    let f = Fixture::new(&["sleep", "30"]);
    let (ok, err) = f.berth_detached(&["create", "--bundle", &bundle_of(&f), "sf"]);
    assert!(ok, "{err}");
    let out = f.berth(&["state", "sf"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "created");
    assert_eq!(v["id"], "sf");
    let out = f.berth(&["delete", "sf"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(f.cgroup_dirs().is_empty());
    let out = f.berth(&["features"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["linux"]["seccomp"]["enabled"], true);
}
