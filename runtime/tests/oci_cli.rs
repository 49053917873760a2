//! The runc and crun handlers through the same lifecycle (needs root and
//! the binaries; skipped when missing).

mod oci_support;

use std::time::{Duration, Instant};

use berth_runtime::oci::{CliExecutor, CreateOpts, Executor, Status};
use oci_support::Fixture;

fn find(bin: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.exists())
}

fn devnull() -> Option<std::os::fd::OwnedFd> {
    Some(std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap().into())
}

fn lifecycle(name: &str) {
    require_root!();
    let Some(bin) = find(name) else {
        eprintln!("skipping: {name} not installed");
        return;
    };
    berth_runtime::linux::process::set_child_subreaper().unwrap();
    let f = Fixture::new(&["sleep", "30"]);
    let e = CliExecutor::new(name, bin, f.dir.path().join(name));
    let id = format!("{name}-lc");
    let opts = CreateOpts { stdin: None, stdout: devnull(), stderr: devnull(), ..Default::default() };
    e.create(&id, &f.bundle, opts).unwrap();
    let st = e.state(&id).unwrap();
    assert_eq!(st.status, Status::Created);
    assert!(st.pid > 0);
    e.start(&id).unwrap();
    assert_eq!(e.state(&id).unwrap().status, Status::Running);
    e.kill(&id, libc::SIGKILL, false).unwrap();
    oci_support::reap(st.pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while e.state(&id).unwrap().status != Status::Stopped {
        assert!(Instant::now() < deadline, "not stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    e.delete(&id, false).unwrap();
    assert!(e.state(&id).is_err());
    assert!(f.cgroup_dirs().is_empty(), "{:?}", f.cgroup_dirs());
    assert!(f.leftover_mounts().is_empty());

    // Errors carry the runtime's message.
    let bad = Fixture::new(&["/bin/nope"]);
    let err = e.create("bad", &bad.bundle, CreateOpts { stdout: devnull(), stderr: devnull(), ..Default::default() });
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("nope"), "{msg}");
    let _ = e.delete("bad", true);
}

#[test]
fn runc_lifecycle() {
    lifecycle("runc");
}

#[test]
fn crun_lifecycle() {
    lifecycle("crun");
}
