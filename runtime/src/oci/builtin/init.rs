//! The container init, run in a fresh single-threaded re-exec of the Berth
//! binary (`berth oci init`), or forked from the single-threaded `berth oci`
//! command line.
//!
//! Stage 0 applies rlimits/oom_score_adj, joins or creates namespaces and
//! forks stage 1 (PID 1 of a new PID namespace); stage 1 prepares the rootfs,
//! switches user and capabilities, reports readiness, waits on exec.fifo and
//! executes the user process. Every failure is sent back as a message.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process, Spec};

use super::{read_all, send, Bootstrap, Mode as InitMode, Msg, CONSOLE_FD, INIT_FD};
use crate::linux::namespaces::{self, NamespacePlan};
use crate::linux::{caps, cgroups, console, mounts, process, seccomp, Context, SysError, SysResult};

/// True when this process was started as the container init
/// (`<berth> oci init`); the binary's `main` must then call [`init_main`]
/// before doing anything else (in particular before starting threads).
pub fn is_init_invocation() -> bool {
    let args: Vec<String> = std::env::args().skip(1).take(2).collect();
    args == ["oci", "init"] && std::env::var_os("_BERTH_INIT_FD").is_none_or(|v| v == "3")
}

/// Entry point of the container init. Never returns: it either execs the
/// container process or exits after reporting an error to the parent.
pub fn init_main() -> ! {
    // Nothing we inherited may leak into the container.
    let _ = process::cloexec_from(INIT_FD);
    let Some(fd) = process::take_inherited_fd(INIT_FD) else {
        eprintln!("berth oci init: must be started by the berth executor");
        process::exit_now(2);
    };
    let mut chan = UnixStream::from(fd);
    let boot: Bootstrap = match read_all(&mut chan).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => fail(&mut chan, &format!("bad bootstrap: {e}")),
        Err(e) => fail(&mut chan, &format!("read bootstrap: {e}")),
    };
    run(&boot, chan)
}

/// The init in a forked (not re-executed) child that already holds its
/// bootstrap, with its fds placed as [`init_main`] expects them.
pub(crate) fn init_forked(boot: &Bootstrap) -> ! {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = process::cloexec_from(INIT_FD);
    let Some(fd) = process::take_inherited_fd(INIT_FD) else { process::exit_now(2) };
    run(boot, UnixStream::from(fd))
}

fn run(boot: &Bootstrap, mut chan: UnixStream) -> ! {
    let console = if boot.console { process::take_inherited_fd(CONSOLE_FD) } else { None };
    if let Err(e) = stage0(boot, &mut chan, console) {
        fail(&mut chan, &e.to_string());
    }
    process::exit_now(0)
}

fn fail(chan: &mut UnixStream, msg: &str) -> ! {
    send(chan, &Msg::Error(msg.to_string()));
    process::exit_now(1)
}

fn stage0(boot: &Bootstrap, chan: &mut UnixStream, console: Option<OwnedFd>) -> SysResult<()> {
    // Join the container's cgroup first: before any namespace is entered
    // (a new cgroup namespace is rooted at the cgroup we are in) and before
    // forking, so every container process starts inside it. The init does
    // it rather than the parent because moving the (single-threaded)
    // caller is much cheaper than a cgroup.procs write (see join_self).
    let cgroup = cgroups::for_host(&boot.cgroup_path).map_err(|e| SysError::msg(e.to_string()))?;
    cgroup.join_self().map_err(|e| SysError::msg(e.to_string()))?;
    set_oom_score_adj(&boot.process, chan)?;
    set_rlimits(&boot.process)?;
    let linux = boot.spec.linux().clone().unwrap_or_default();
    let types: Vec<LinuxNamespaceType> = linux.namespaces().iter().flatten().map(|n| n.typ()).collect();
    let plan = match boot.mode {
        InitMode::Create => {
            let mut plan = NamespacePlan::default();
            for ns in linux.namespaces().iter().flatten() {
                match (ns.typ(), ns.path()) {
                    (t, Some(p)) => plan.join.push((t, p.clone())),
                    (LinuxNamespaceType::User, None) => {
                        return Err(SysError::msg("new user namespaces are not supported by the builtin executor"))
                    }
                    (t, None) => plan.create.push(t),
                }
            }
            if !plan.create.contains(&LinuxNamespaceType::Mount) {
                return Err(SysError::msg("the builtin executor needs a new mount namespace"));
            }
            plan
        }
        InitMode::Exec => namespaces::join_process(boot.target_pid, &types),
    };
    plan.enter()?;
    let mut child_chan = chan.try_clone().ctx(|| "dup init channel")?;
    let pid = process::fork_child(move || {
        let r = match boot.mode {
            InitMode::Create => stage1_create(boot, &plan, cgroup.mount_sources(), &mut child_chan, console),
            InitMode::Exec => stage1_exec(boot, &mut child_chan, console),
        };
        match r {
            Ok(never) => match never {},
            Err(e) => {
                send(&mut child_chan, &Msg::Error(e.to_string()));
                1
            }
        }
    })?;
    send(chan, &Msg::Pid(pid.as_raw()));
    Ok(())
}

enum Never {}

fn stage1_create(
    boot: &Bootstrap,
    plan: &NamespacePlan,
    cgroup_sources: Vec<(String, PathBuf)>,
    chan: &mut UnixStream,
    console: Option<OwnedFd>,
) -> SysResult<Never> {
    nix::unistd::setsid().ctx(|| "setsid")?;
    let spec = &boot.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(h) = spec.hostname() {
        if !plan.has(LinuxNamespaceType::Uts) {
            return Err(SysError::msg("setting the hostname needs a UTS namespace"));
        }
        nix::unistd::sethostname(h).ctx(|| format!("sethostname {h}"))?;
    }
    let seccomp = compile_seccomp(spec, chan)?;
    // Opened before pivot_root: the fifo is reopened relative to it later.
    let state_dir = nix::fcntl::open(&boot.state_dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| format!("open {}", boot.state_dir.display()))?;

    let mounts = spec.mounts().clone().unwrap_or_default();
    mounts::prepare_rootfs(&mounts::RootfsConfig {
        rootfs: &boot.rootfs,
        mounts: &mounts,
        propagation: linux.rootfs_propagation().as_deref(),
        devices: linux.devices().as_deref().unwrap_or(&[]),
        cgroup_sources,
        cgroup_ns: plan.has(LinuxNamespaceType::Cgroup),
    })?;
    mounts::pivot_root(&boot.rootfs)?;
    // Like runc, a missing cwd is created (as root, before the rootfs may
    // turn read-only).
    let cwd = boot.process.cwd();
    if !cwd.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(cwd)
            .ctx(|| format!("mkdir cwd {:?}", cwd.display()))?;
    }
    if let Some(sock) = console {
        console::setup_console(&sock)?;
    }
    for (k, v) in linux.sysctl().iter().flatten() {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v).ctx(|| format!("sysctl {k}={v}"))?;
    }
    for p in linux.readonly_paths().iter().flatten() {
        mounts::readonly_path(Path::new(p))?;
    }
    for p in linux.masked_paths().iter().flatten() {
        mounts::mask_path(Path::new(p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        mounts::remount_root_readonly()?;
    }
    let prepared = prepare_exec(&boot.process, seccomp.as_ref(), chan)?;

    send(chan, &Msg::Ready);
    // Close every copy of the channel so the parent sees EOF: this one and
    // init_main's (fd 3), both owned by frames we never return to. From
    // here on failures go to the container's stderr.
    process::close_inherited_fd(chan.as_raw_fd());
    process::close_inherited_fd(INIT_FD);
    let fail = |e: SysError| -> ! {
        eprintln!("berth: {e}");
        process::exit_now(127)
    };
    // Block until `start` opens the fifo for reading.
    let fifo = nix::fcntl::openat(&state_dir, super::state::FIFO, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| "open exec.fifo")
        .unwrap_or_else(|e| fail(e));
    if let Err(e) = nix::unistd::write(&fifo, b"0").ctx(|| "write exec.fifo") {
        fail(e);
    }
    drop(fifo);
    drop(state_dir);
    fail(prepared.exec(seccomp.as_ref()))
}

fn stage1_exec(boot: &Bootstrap, chan: &mut UnixStream, console: Option<OwnedFd>) -> SysResult<Never> {
    if let Some(sock) = console {
        nix::unistd::setsid().ctx(|| "setsid")?;
        console::setup_console(&sock)?;
    }
    let seccomp = compile_seccomp(&boot.spec, chan)?;
    let prepared = prepare_exec(&boot.process, seccomp.as_ref(), chan)?;
    // On success the channel closes with exec (close-on-exec).
    Err(prepared.exec(seccomp.as_ref()))
}

fn compile_seccomp(spec: &Spec, chan: &mut UnixStream) -> SysResult<Option<seccomp::CompiledSeccomp>> {
    let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else { return Ok(None) };
    let c = seccomp::compile(&profile)?;
    if !c.unknown.is_empty() {
        send(chan, &Msg::Warn(format!("seccomp: unknown syscalls ignored: {}", c.unknown.join(" "))));
    }
    Ok(Some(c))
}

/// A process ready to exec: user, capabilities and cwd already applied.
struct Prepared {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    no_new_privs: bool,
}

impl Prepared {
    /// Loads seccomp (when no_new_privs defers it) and execs. Returns only on failure.
    fn exec(self, seccomp: Option<&seccomp::CompiledSeccomp>) -> SysError {
        // Start the process with default signal handling, as runc does: this
        // init is a Rust program (which ignores SIGPIPE, and an ignored
        // signal stays ignored through exec) and may have inherited a mask.
        // Done before seccomp, which could deny these calls.
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) };
        let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
        if self.no_new_privs {
            if let Some(s) = seccomp {
                if let Err(e) = s.load() {
                    return e;
                }
            }
        }
        let e = nix::unistd::execve(&self.path, &self.args, &self.env).unwrap_err();
        SysError::new(format!("exec {:?}", self.path), std::io::Error::from(e))
    }
}

fn cstring(s: &str) -> SysResult<CString> {
    CString::new(s).map_err(|_| SysError::msg(format!("NUL byte in {s:?}")))
}

/// Applies no_new_privs, user, capabilities and cwd, and resolves the
/// executable (failures here are reported before `create` returns).
fn prepare_exec(p: &Process, seccomp: Option<&seccomp::CompiledSeccomp>, chan: &mut UnixStream) -> SysResult<Prepared> {
    let args = p.args().clone().unwrap_or_default();
    let Some(arg0) = args.first() else { return Err(SysError::msg("process.args is empty")) };
    let mut env: Vec<String> = p.env().clone().unwrap_or_default();
    // Like runc: HOME from the container's /etc/passwd (else /) when unset.
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_dir(p.user().uid())));
    }
    let no_new_privs = p.no_new_privileges() == Some(true);
    if no_new_privs {
        process::set_no_new_privs()?;
    } else if let Some(s) = seccomp {
        // Without no_new_privs the filter needs CAP_SYS_ADMIN: load it now.
        s.load()?;
    }

    let plan = caps::plan(p.capabilities().as_ref())?;
    if !plan.skipped.is_empty() {
        send(chan, &Msg::Warn(format!("capabilities not available, skipped: {}", plan.skipped.join(" "))));
    }
    caps::drop_bounding(&plan)?;
    let user = p.user();
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    let groups: Vec<Gid> = user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    caps::set_keep_caps(true)?;
    nix::unistd::setgroups(&groups).ctx(|| format!("setgroups {groups:?}"))?;
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {uid}"))?;
    caps::set_keep_caps(false)?;
    caps::apply(&plan)?;

    let cwd = p.cwd();
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to cwd {:?}", cwd.display()))?;
    let path = lookup(arg0, &env)?;
    Ok(Prepared {
        path: CString::new(path.as_os_str().as_bytes()).map_err(|_| SysError::msg("NUL in path"))?,
        args: args.iter().map(|a| cstring(a)).collect::<SysResult<_>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<SysResult<_>>()?,
        no_new_privs,
    })
}

/// The home directory of `uid` in the container's /etc/passwd, else `/`.
fn home_dir(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid) && !f[5].is_empty()).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".into())
}

/// Finds `arg0` like execvp would, in the container's PATH.
fn lookup(arg0: &str, env: &[String]) -> SysResult<PathBuf> {
    let check = |p: &Path| -> SysResult<()> {
        let meta = std::fs::metadata(p).ctx(|| format!("exec {:?}", p.display().to_string()))?;
        if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
            return Err(SysError::new(
                format!("exec {:?}", p.display().to_string()),
                std::io::Error::from_raw_os_error(libc::EACCES),
            ));
        }
        nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).ctx(|| format!("exec {:?}", p.display().to_string()))
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        check(&p)?;
        return Ok(p);
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut first_err = None;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(arg0);
        if cand.exists() {
            match check(&cand) {
                Ok(()) => return Ok(cand),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| SysError::msg(format!("exec {arg0:?}: executable file not found in $PATH"))))
}

fn set_oom_score_adj(p: &Process, chan: &mut UnixStream) -> SysResult<()> {
    let Some(adj) = p.oom_score_adj() else { return Ok(()) };
    let clamped = adj.clamp(-1000, 1000);
    if clamped != adj {
        send(chan, &Msg::Warn(format!("oom_score_adj {adj} clamped to {clamped}")));
    }
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", clamped.to_string()) {
        // Lowering it needs CAP_SYS_RESOURCE, which may be missing.
        send(chan, &Msg::Warn(format!("cannot set oom_score_adj {clamped}: {e}")));
    }
    Ok(())
}

fn set_rlimits(p: &Process) -> SysResult<()> {
    for r in p.rlimits().iter().flatten() {
        let res = match r.typ() {
            PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
            PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
            PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
            PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
            PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
            PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
            PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
            PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
            PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
            PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
            PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
            PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
            PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
            PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
            PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
            PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
        };
        setrlimit(res, r.soft(), r.hard()).ctx(|| format!("setrlimit {:?} {}/{}", r.typ(), r.soft(), r.hard()))?;
    }
    Ok(())
}
