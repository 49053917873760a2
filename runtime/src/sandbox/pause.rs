//! The pause process: the berth binary re-executed as `berth pause ...`,
//! holding a pod sandbox's namespaces. No image, no tokio, no threads.
//!
//! The process started by [`spawn`] joins the pod's network namespace when
//! one is given (`--netns`), unshares the requested namespaces, sets
//! the hostname, brings `lo` up and writes the sysctls, then forks: the
//! child (PID 1 of the new PID namespace when `--pid` is given) detaches and
//! waits in `pause()`; the parent reports `ok <child host pid>` (or
//! `err <message>`) on fd 3 and exits, so the daemon never has to reap the
//! pause. SIGTERM and SIGINT make the pause exit 0; as PID 1 it also reaps
//! every orphan of its PID namespace.

use nix::sched::CloneFlags;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::time::Duration;

/// How long [`spawn`] waits for the pause process's report.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(20);

/// `berth pause` options: which namespaces to create and what to set up in them.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseArgs {
    /// Create a network namespace (and bring `lo` up in it).
    #[arg(long, conflicts_with = "netns")]
    pub net: bool,
    /// Join this network namespace (a bind-mounted nsfs file) and bring `lo` up in it.
    #[arg(long, value_name = "PATH")]
    pub netns: Option<std::path::PathBuf>,
    /// Create an IPC namespace.
    #[arg(long)]
    pub ipc: bool,
    /// Create a UTS namespace.
    #[arg(long)]
    pub uts: bool,
    /// Create a PID namespace; the pause becomes its PID 1.
    #[arg(long)]
    pub pid: bool,
    /// Hostname to set (needs --uts).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Namespaced sysctl to write, `key=value` (normalized dotted key).
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctls: Vec<String>,
    /// Join this cgroup (cgroupfs path, already created) before anything
    /// else, so the pause starts in it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<std::path::PathBuf>,
}

impl PauseArgs {
    /// The command line after the `pause` subcommand.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        for (on, flag) in [(self.net, "--net"), (self.ipc, "--ipc"), (self.uts, "--uts"), (self.pid, "--pid")] {
            if on {
                a.push(flag.into());
            }
        }
        if let Some(p) = &self.netns {
            a.push("--netns".into());
            a.push(p.into());
        }
        if let Some(h) = &self.hostname {
            a.push("--hostname".into());
            a.push(h.into());
        }
        for s in &self.sysctls {
            a.push("--sysctl".into());
            a.push(s.into());
        }
        if let Some(c) = &self.cgroup {
            a.push("--cgroup".into());
            a.push(c.into());
        }
        a
    }

    fn clone_flags(&self) -> CloneFlags {
        let mut f = CloneFlags::empty();
        for (on, flag) in [
            (self.net, CloneFlags::CLONE_NEWNET),
            (self.ipc, CloneFlags::CLONE_NEWIPC),
            (self.uts, CloneFlags::CLONE_NEWUTS),
            (self.pid, CloneFlags::CLONE_NEWPID),
        ] {
            if on {
                f |= flag;
            }
        }
        f
    }
}

/// `/proc/sys` path of a normalized sysctl key: dots separate components,
/// slashes stand for dots inside one ("net.ipv4.conf.eth0/100.rp_filter").
pub fn sysctl_path(key: &str) -> std::path::PathBuf {
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    Path::new("/proc/sys").join(rel)
}

/// Reads an interface's flags in the current network namespace and, when
/// `add` is not empty, sets those flags too. Returns the flags before.
fn if_flags(name: &str, add: libc::c_short) -> io::Result<libc::c_short> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned here.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq-sized struct.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        let before = req.flags;
        if add != 0 && before & add != add {
            req.flags |= add;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(before)
    }
}

/// Sets IFF_UP on an interface of the current network namespace.
pub fn interface_up(name: &str) -> io::Result<()> {
    if_flags(name, libc::IFF_UP as libc::c_short).map(drop)
}

/// Whether IFF_UP is set on an interface of the current network namespace.
pub fn interface_is_up(name: &str) -> io::Result<bool> {
    Ok(if_flags(name, 0)? & libc::IFF_UP as libc::c_short != 0)
}

/// Everything done in the new namespaces before the pause forks.
fn setup(args: &PauseArgs) -> Result<(), String> {
    if let Some(path) = &args.cgroup {
        // Joined by the (single-threaded) pause itself: on v1 through each
        // hierarchy's `tasks`, far cheaper than moving it from outside.
        let cg = crate::linux::cgroups::for_host(path).map_err(|e| format!("cgroup {}: {e}", path.display()))?;
        cg.join_self().map_err(|e| format!("joining cgroup {}: {e}", path.display()))?;
    }
    if let Some(p) = &args.netns {
        let f = fs::File::open(p).map_err(|e| format!("opening network namespace {}: {e}", p.display()))?;
        nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining network namespace {}: {e}", p.display()))?;
    }
    nix::sched::unshare(args.clone_flags()).map_err(|e| format!("unshare {:?}: {e}", args.clone_flags()))?;
    if let Some(h) = args.hostname.as_deref().filter(|h| !h.is_empty()) {
        if !args.uts {
            return Err("--hostname needs --uts: the host's hostname is not changed".into());
        }
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    if args.net || args.netns.is_some() {
        interface_up("lo").map_err(|e| format!("bringing lo up: {e}"))?;
    }
    for kv in &args.sysctls {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("sysctl {kv:?}: want key=value"))?;
        let path = sysctl_path(k);
        fs::write(&path, v).map_err(|e| format!("sysctl {k}={v}: writing {}: {e}", path.display()))?;
    }
    Ok(())
}

extern "C" fn on_term(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

extern "C" fn on_chld(_: libc::c_int) {
    let saved = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: waitpid is async-signal-safe; reap every exited child.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    // SAFETY: restores errno for the interrupted code.
    unsafe { *libc::__errno_location() = saved };
}

/// The long-lived pause: waits for signals forever.
fn pause_forever() -> ! {
    let _ = nix::unistd::setsid();
    let _ = nix::unistd::chdir("/");
    // SAFETY: PR_SET_NAME with a NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"pause".as_ptr(), 0, 0, 0) };
    use nix::sys::signal::{sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let term = SigAction::new(SigHandler::Handler(on_term), SaFlags::empty(), SigSet::empty());
    let chld = SigAction::new(SigHandler::Handler(on_chld), SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP, SigSet::empty());
    // SAFETY: both handlers only call async-signal-safe functions.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &term);
        let _ = sigaction(Signal::SIGINT, &term);
        let _ = sigaction(Signal::SIGCHLD, &chld);
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // Children that exited before the handler was installed.
    on_chld(0);
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// Entry point of `berth pause ...`. Must run before any other thread
/// exists (unshare of the PID and user-visible namespaces, fork). Never returns.
pub fn pause_main(args: &PauseArgs) -> ! {
    // fd 3 was set up by `spawn`; without it (run by hand) the report goes nowhere.
    let ready = crate::linux::ready::take();
    let mut ready = ready.map_or_else(|| fs::OpenOptions::new().write(true).open("/dev/null").ok(), Some);
    let mut report = |msg: &str| {
        if let Some(f) = ready.as_mut() {
            let _ = writeln!(f, "{msg}");
        }
    };
    if let Err(e) = setup(args) {
        report(&format!("err {}", e.replace('\n', " ")));
        std::process::exit(1);
    }
    // SAFETY: single-threaded; the child only sets up signals and pauses.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            report(&format!("ok {child}"));
            std::process::exit(0);
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ready);
            pause_forever()
        }
        Err(e) => {
            report(&format!("err fork: {e}"));
            std::process::exit(1);
        }
    }
}

/// The small pause binary, installed next to `berth`.
pub const PAUSE_BINARY: &str = "berth-pause";

/// Starts a detached pause process and waits for its report: the pause's
/// host pid, or its error message. It runs `berth-pause ARGS` when that is
/// installed next to `exe` (a small binary starts faster and holds less
/// memory for the pod's lifetime), else `<exe> pause ARGS`.
pub fn spawn(exe: &Path, args: &PauseArgs) -> io::Result<Result<i32, String>> {
    use crate::linux::ready::{self, Report};
    let small = exe.with_file_name(PAUSE_BINARY);
    let mut cmd = if small.is_file() {
        std::process::Command::new(small)
    } else {
        let mut c = std::process::Command::new(exe);
        c.arg("pause");
        c
    };
    cmd.args(args.to_args());
    // Its own session from the start: no terminal signals from the daemon's.
    Ok(match ready::spawn(cmd, true, SPAWN_TIMEOUT)? {
        Report::Ready(pid) => Ok(pid),
        Report::Failed(msg) => Err(msg),
        Report::TimedOut(partial) => {
            if let Some(pid) = partial.strip_prefix("ok ").and_then(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            Err(format!("pause process did not report within {}s", SPAWN_TIMEOUT.as_secs()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: PauseArgs,
        }
        use clap::Parser;
        let a = PauseArgs {
            net: false,
            netns: Some("/run/berth/netns/abc".into()),
            ipc: false,
            uts: true,
            pid: true,
            hostname: Some("web-0".into()),
            sysctls: vec!["net.ipv4.ip_forward=1".into(), "kernel.shmmax=100".into()],
            cgroup: Some("/berth/podabc/pause".into()),
        };
        let mut argv = vec![OsString::from("pause")];
        argv.extend(a.to_args());
        assert_eq!(P::parse_from(argv).a, a);
        assert_eq!(PauseArgs::default().to_args(), Vec::<OsString>::new());
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(sysctl_path("net.ipv4.ip_forward"), Path::new("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(sysctl_path("net.ipv4.conf.eth0/100.rp_filter"), Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter"));
    }

    #[test]
    fn clone_flags() {
        let a = PauseArgs { net: true, pid: true, ..Default::default() };
        assert_eq!(a.clone_flags(), CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWPID);
        assert!(PauseArgs::default().clone_flags().is_empty());
    }
}
