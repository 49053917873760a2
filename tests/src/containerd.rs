//! Debian's containerd with its CRI plugin, on a private root, state and
//! socket, with the busybox test image and a busybox pause image imported.
//! Its pods get the loopback plugin and a stub that reports 127.0.0.1 on
//! eth0 (containerd refuses a sandbox without an eth0 address), so no
//! bridge, veth or route is made. Stopped by PID and cleaned up on drop.

use crate::{berth_bin, TestRoot};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The busybox image's name inside containerd.
pub const IMAGE: &str = "berth.local/busybox:1";
const PAUSE: &str = "berth.local/pause:1";
/// containerd's config, shared with hack/bench.sh and hack/bench-pods.sh.
const TEMPLATE: &str = include_str!("../../hack/containerd.toml.in");

pub struct Containerd {
    pub dir: TestRoot,
    pub socket: PathBuf,
    child: Option<Child>,
    made_run_dir: bool,
}

fn testimage() -> PathBuf {
    berth_bin().with_file_name("berth-testimage")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

impl Containerd {
    /// Starts containerd, or returns None when it is not installed.
    pub fn start() -> Option<Containerd> {
        let bin = which("containerd")?;
        let dir = TestRoot::new();
        let d = dir.path();
        for sub in ["cni-bin", "cni-conf", "root", "state", "opt"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        std::os::unix::fs::symlink("/usr/lib/cni/loopback", d.join("cni-bin/loopback")).expect("symlink loopback");
        std::fs::write(
            d.join("cni-bin/test-stub"),
            "#!/bin/sh\ncase \"$CNI_COMMAND\" in\nADD) printf '{\"cniVersion\":\"0.4.0\",\"interfaces\":[{\"name\":\"eth0\",\"sandbox\":\"%s\"}],\"ips\":[{\"version\":\"4\",\"interface\":0,\"address\":\"127.0.0.1/32\"}]}\\n' \"$CNI_NETNS\" ;;\nVERSION) echo '{\"cniVersion\":\"0.4.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\"]}' ;;\nesac\n",
        )
        .expect("write stub");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("cni-bin/test-stub"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(d.join("cni-conf/10-test.conflist"), r#"{"cniVersion":"0.4.0","name":"test","plugins":[{"type":"test-stub"}]}"#).expect("conflist");
        let socket = d.join("containerd.sock");
        let runc = which("runc").expect("runc");
        let values = [
            ("ROOT", d.join("root")),
            ("STATE", d.join("state")),
            ("SOCKET", socket.clone()),
            ("OPT", d.join("opt")),
            ("SANDBOX_IMAGE", PAUSE.into()),
            ("RUNC", runc),
            ("RUNC_ROOT", d.join("state/runc")),
            ("CNI_BIN", d.join("cni-bin")),
            ("CNI_CONF", d.join("cni-conf")),
        ];
        for name in TEMPLATE.split('@').skip(1).step_by(2) {
            assert!(values.iter().any(|(k, _)| *k == name), "no value for @{name}@ of hack/containerd.toml.in");
        }
        let mut config = TEMPLATE.to_string();
        for (key, value) in &values {
            config = config.replace(&format!("@{key}@"), &value.display().to_string());
        }
        std::fs::write(d.join("containerd.toml"), config).expect("write config");
        let made_run_dir = !Path::new("/run/containerd").exists();
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("fd"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd { dir, socket, child: Some(child), made_run_dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not start:\n{}", c.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        for (name, args) in [("busybox", vec![]), ("pause", vec!["--cmd", "sleep", "--cmd", "2147483647"])] {
            let tar = c.dir.path().join(format!("{name}.tar"));
            let tag = if name == "pause" { PAUSE } else { IMAGE };
            run(Command::new(testimage()).arg("busybox").args(&args).arg("--docker-archive").arg(&tar).args(["--tag", tag]));
            run(Command::new("ctr").arg("--address").arg(&c.socket).args(["-n", "k8s.io", "images", "import"]).arg(&tar));
        }
        Some(c)
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.exists()))
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Mounts containerd left under its root (snapshots, shm, netns).
        let root = self.dir.path().display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        if self.made_run_dir {
            let _ = std::fs::remove_dir("/run/containerd/s");
            let _ = std::fs::remove_dir("/run/containerd");
        }
    }
}
