//! The built-in OCI executor, runc-like: `create` re-executes the Berth
//! binary as a container init (`berth oci init`), which enters namespaces,
//! forks the container's PID 1, prepares the rootfs and blocks on
//! `exec.fifo` in the state directory until `start` opens it.
//!
//! Parent ↔ init talk over a socketpair passed as fd 3 (fd 4 carries the
//! console socket): the parent sends a JSON [`Bootstrap`] and reads JSON
//! [`Msg`] lines back until EOF.

mod init;
mod state;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use init::{init_main, is_init_invocation};
use state::Saved;

use super::{check_id, load_spec, CreateOpts, ExecError, ExecResult, Executor, State, Status};
use crate::linux::cgroups::{self, CgroupManager};
use crate::linux::{process, Context, SysError};

/// Fd numbers of the init channel and console socket in the init process.
const INIT_FD: i32 = 3;
const CONSOLE_FD: i32 = 4;

/// How to start a container init: re-execute the Berth binary, or, in a
/// single-threaded caller (the `berth oci` command line), fork and run it
/// without the exec.
#[derive(Debug, Clone)]
pub struct InitCommand {
    pub exe: PathBuf,
    pub args: Vec<String>,
    /// Fork without exec when the process is single-threaded.
    pub fork: bool,
}

impl Default for InitCommand {
    /// `/proc/self/exe oci init`: the running Berth binary.
    fn default() -> Self {
        InitCommand { exe: PathBuf::from("/proc/self/exe"), args: vec!["oci".into(), "init".into()], fork: false }
    }
}

impl InitCommand {
    /// Forks the init when the caller is single-threaded, else re-executes.
    pub fn forking() -> Self {
        InitCommand { fork: true, ..Default::default() }
    }
}

/// The running init: a re-executed child, or a forked one.
enum InitChild {
    Spawned(std::process::Child),
    Forked(Pid),
}

impl InitChild {
    fn wait(&mut self) -> String {
        match self {
            InitChild::Spawned(c) => c.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            InitChild::Forked(p) => match nix::sys::wait::waitpid(*p, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => format!("exit status: {c}"),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => format!("signal: {s}"),
                Ok(other) => format!("{other:?}"),
                Err(e) => e.to_string(),
            },
        }
    }

    fn kill(&mut self) {
        match self {
            InitChild::Spawned(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            InitChild::Forked(p) => {
                let _ = kill(*p, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(*p, None);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Mode {
    Create,
    Exec,
}

/// What the init process is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    pub mode: Mode,
    pub spec: oci_spec::runtime::Spec,
    pub process: oci_spec::runtime::Process,
    pub rootfs: PathBuf,
    pub state_dir: PathBuf,
    pub cgroup_path: PathBuf,
    pub console: bool,
    /// Exec: the container init whose namespaces to join.
    pub target_pid: i32,
}

/// Messages from the init process.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// Host pid of the container (or exec'd) process.
    Pid(i32),
    /// Setup done; the process waits on exec.fifo.
    Ready,
    Warn(String),
    Error(String),
}

/// The built-in executor; state lives under `root/<id>/`.
pub struct BuiltinExecutor {
    root: PathBuf,
    init: InitCommand,
}

impl BuiltinExecutor {
    pub fn new(root: impl Into<PathBuf>, init: InitCommand) -> Self {
        BuiltinExecutor { root: root.into(), init }
    }

    /// Pids of the container's processes (from its cgroup).
    pub fn pids(&self, id: &str) -> ExecResult<Vec<i32>> {
        let (_, saved) = self.load(id)?;
        Ok(cgroups::for_host(&saved.cgroup_path)?.pids()?)
    }

    fn state_dir(&self, id: &str) -> ExecResult<PathBuf> {
        check_id(id)?;
        Ok(self.root.join(id))
    }

    fn load(&self, id: &str) -> ExecResult<(PathBuf, Saved)> {
        let dir = self.state_dir(id)?;
        match Saved::load(&dir) {
            Ok(Some(s)) => Ok((dir, s)),
            Ok(None) => Err(ExecError::NotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Spawns the init (which joins the bootstrap's cgroup itself), sends
    /// the bootstrap and collects its reply. Returns the container pid.
    fn run_init(
        &self,
        boot: &Bootstrap,
        bundle: &Path,
        opts: CreateOpts,
    ) -> ExecResult<i32> {
        let (parent_sock, child_sock) = UnixStream::pair().ctx(|| "socketpair")?;
        let console = match &opts.console_socket {
            Some(p) => Some(UnixStream::connect(p).ctx(|| format!("connect console socket {}", p.display()))?),
            None => None,
        };
        let forked = self.init.fork && process::single_threaded();
        let mut child = if forked {
            self.fork_init(boot, bundle, child_sock, console, opts.stdin, opts.stdout, opts.stderr)?
        } else {
            let mut cmd = Command::new(&self.init.exe);
            cmd.args(&self.init.args).current_dir(bundle).env_clear();
            cmd.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
            let stdio = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::inherit, Stdio::from);
            cmd.stdin(stdio(opts.stdin)).stdout(stdio(opts.stdout)).stderr(stdio(opts.stderr));
            let mut fds = vec![(child_sock.as_raw_fd(), INIT_FD)];
            if let Some(c) = &console {
                fds.push((c.as_raw_fd(), CONSOLE_FD));
            }
            let child = process::spawn_with_fds(&mut cmd, &fds)
                .ctx(|| format!("spawn container init {}", self.init.exe.display()))?;
            drop(child_sock);
            drop(console);
            InitChild::Spawned(child)
        };

        let result = (|| -> ExecResult<i32> {
            let mut sock = parent_sock;
            sock.set_read_timeout(Some(Duration::from_secs(120))).ctx(|| "socket timeout")?;
            // One write: serde_json::to_writer on the bare socket sends
            // every JSON token separately (~900 syscalls for a default spec,
            // each waking the init that reads them).
            if !forked {
                let data = serde_json::to_vec(boot).map_err(|e| SysError::msg(format!("send bootstrap: {e}")))?;
                sock.write_all(&data).ctx(|| "send bootstrap")?;
            }
            sock.shutdown(std::net::Shutdown::Write).ctx(|| "send bootstrap")?;
            let (mut pid, mut ready, mut error) = (None, false, None);
            for line in BufReader::new(&sock).lines() {
                let line = line.ctx(|| "read from container init")?;
                match serde_json::from_str::<Msg>(&line) {
                    Ok(Msg::Pid(p)) => pid = Some(p),
                    Ok(Msg::Ready) => ready = true,
                    Ok(Msg::Warn(w)) => tracing::warn!("container init: {w}"),
                    Ok(Msg::Error(e)) => {
                        error.get_or_insert(e);
                    }
                    Err(e) => tracing::warn!("bad message from container init: {e}: {line}"),
                }
            }
            let status = child.wait();
            if let Some(e) = error {
                if let Some(p) = pid {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
                return Err(ExecError::Init(e));
            }
            match pid {
                Some(p) if ready || boot.mode == Mode::Exec => Ok(p),
                Some(p) => {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                    Err(ExecError::Init(format!("container init exited before it was ready ({status})")))
                }
                None => Err(ExecError::Init(format!("container init failed ({status})"))),
            }
        })();
        if result.is_err() {
            child.kill();
        }
        result
    }

    /// Forks the init: the child gets the same fds, working directory and
    /// bootstrap as a re-executed `berth oci init`, without the exec and the
    /// JSON round trip. The caller is single-threaded.
    #[allow(clippy::too_many_arguments)]
    fn fork_init(
        &self,
        boot: &Bootstrap,
        bundle: &Path,
        chan: UnixStream,
        console: Option<UnixStream>,
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    ) -> ExecResult<InitChild> {
        let mut fds: Vec<(i32, i32)> = Vec::with_capacity(5);
        for (fd, dst) in [(&stdin, 0), (&stdout, 1), (&stderr, 2)] {
            if let Some(f) = fd {
                fds.push((f.as_raw_fd(), dst));
            }
        }
        fds.push((chan.as_raw_fd(), INIT_FD));
        if let Some(c) = &console {
            fds.push((c.as_raw_fd(), CONSOLE_FD));
        }
        let mut tmp = vec![-1; fds.len()];
        let bundle = std::ffi::CString::new(bundle.as_os_str().as_encoded_bytes()).map_err(|e| SysError::msg(format!("bundle path: {e}")))?;
        // SAFETY: the caller is single-threaded (checked), so the child may
        // go on running ordinary Rust code; it never returns.
        match unsafe { nix::unistd::fork() }.ctx(|| "fork container init")? {
            nix::unistd::ForkResult::Child => {
                // The originals stay open until the init execs (close-on-exec):
                // dropping them here could close a remapped number.
                std::mem::forget((chan, console, stdin, stdout, stderr));
                if let Err(e) = remap_and_chdir(&fds, &mut tmp, &bundle) {
                    eprintln!("berth: container init: {e}");
                    process::exit_now(1);
                }
                init::init_forked(boot)
            }
            nix::unistd::ForkResult::Parent { child } => Ok(InitChild::Forked(child)),
        }
    }
}

/// In the forked init: fds as a re-executed init gets them (stdio, the
/// channel, the console) and nothing else, so no copy of the parent's end
/// of the channel keeps it from seeing EOF.
fn remap_and_chdir(fds: &[(i32, i32)], tmp: &mut [i32], dir: &std::ffi::CStr) -> std::io::Result<()> {
    process::remap_fds(fds, tmp)?;
    process::close_from(fds.iter().map(|&(_, dst)| dst + 1).max().unwrap_or(0).max(INIT_FD + 1));
    nix::unistd::chdir(dir).map_err(std::io::Error::from)
}

impl BuiltinExecutor {
}

fn write_pid_file(path: &Path, pid: i32) -> ExecResult<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).ctx(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Kills every process of the container and waits (up to `timeout`) for
/// them to die, blocking on pidfds rather than polling.
fn kill_all(saved: &Saved, cgroup: &dyn CgroupManager, sig: Signal, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    // On v2 one write kills the whole cgroup, so a fork loop cannot outrun
    // the kills below (which then only find what is already dying).
    if sig == Signal::SIGKILL {
        cgroup.kill_all();
    }
    loop {
        let mut pids = cgroup.pids().unwrap_or_default();
        if saved.alive() && !pids.contains(&saved.pid) {
            pids.push(saved.pid);
        }
        if pids.is_empty() {
            return;
        }
        let wait = sig == Signal::SIGKILL && Instant::now() <= deadline;
        // Taken before the kill, the pidfds refer to exactly these
        // processes: a reused pid cannot fool the wait.
        let pidfds: Vec<OwnedFd> =
            if wait { pids.iter().filter_map(|p| process::pidfd_open(*p)).collect() } else { Vec::new() };
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), sig);
        }
        if !wait {
            return;
        }
        if pidfds.len() == pids.len() {
            process::wait_pidfds_exit(&pidfds, deadline.saturating_duration_since(Instant::now()));
        } else {
            // No pidfd_open (Linux < 5.3), or a process already gone: look
            // again shortly.
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = cgroup.pids().unwrap_or_default();
        if !saved.alive() && left.iter().all(|p| !process::pid_alive(*p, None)) {
            return;
        }
    }
}

impl Executor for BuiltinExecutor {
    fn name(&self) -> &str {
        "builtin"
    }

    fn create(&self, id: &str, bundle: &Path, opts: CreateOpts) -> ExecResult<()> {
        let dir = self.state_dir(id)?;
        let bundle = bundle.canonicalize().ctx(|| format!("bundle {}", bundle.display()))?;
        let spec = load_spec(&bundle)?;
        let process = spec.process().clone().ok_or_else(|| ExecError::Spec("no process in config.json".into()))?;
        let root = spec.root().as_ref().ok_or_else(|| ExecError::Spec("no root in config.json".into()))?;
        let rootfs = bundle.join(root.path()).canonicalize().ctx(|| format!("rootfs {}", root.path().display()))?;
        let linux = spec.linux().clone().unwrap_or_default();
        let cgroup_path = linux.cgroups_path().clone().unwrap_or_else(|| PathBuf::from(format!("/berth/{id}")));
        if process.terminal() == Some(true) && opts.console_socket.is_none() {
            return Err(ExecError::Spec("terminal: true needs a console socket".into()));
        }

        crate::linux::mounts::ensure_dir(&self.root, 0o711)?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(ExecError::AlreadyExists(id.into())),
            Err(e) => return Err(SysError::new(format!("mkdir {}", dir.display()), e).into()),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).ctx(|| "chmod state dir")?;
        let cgroup = cgroups::for_host(&cgroup_path)?;
        let result = (|| -> ExecResult<i32> {
            let fifo = dir.join(state::FIFO);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622)).ctx(|| "mkfifo exec.fifo")?;
            std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622)).ctx(|| "chmod exec.fifo")?;
            cgroup.create()?;
            if let Some(res) = linux.resources() {
                cgroup.set(res)?;
            }
            let boot = Bootstrap {
                mode: Mode::Create,
                console: opts.console_socket.is_some(),
                spec: spec.clone(),
                process,
                rootfs,
                state_dir: dir.clone(),
                cgroup_path: cgroup_path.clone(),
                target_pid: 0,
            };
            let pid_file = opts.pid_file.clone();
            let pid = self.run_init(&boot, &bundle, opts)?;
            let saved = Saved::new(id, &bundle, pid, &cgroup_path, spec.annotations().clone().unwrap_or_default());
            saved.save(&dir)?;
            if let Some(pf) = pid_file {
                write_pid_file(&pf, pid)?;
            }
            Ok(pid)
        })();
        if let Err(e) = result {
            // Leave nothing behind: the init (if any) is killed by run_init.
            let _ = cgroup.destroy();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(())
    }

    fn start(&self, id: &str) -> ExecResult<()> {
        let (dir, saved) = self.load(id)?;
        let status = saved.status(&dir);
        if status != Status::Created {
            return Err(ExecError::BadState { id: id.into(), status, op: "start" });
        }
        let fifo_path = dir.join(state::FIFO);
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo_path)
            .ctx(|| "open exec.fifo")?;
        // Opening the fifo releases the init (blocked opening it for
        // writing); it then writes one byte and execs. Block on the fifo and
        // on a pidfd of the init (readable once it dies) instead of polling
        // with sleeps. A fifo that never had a writer reports no POLLHUP, so
        // this does not spin before the init's open completes.
        // Opening the fifo already let the init go: a short process may have
        // written its byte and exited by now, which is a successful start,
        // so the fifo is read before liveness is judged (in the loop).
        let pidfd = process::pidfd_open(saved.pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 1];
        // Set once the init closed the fifo without writing (it failed).
        let mut hup = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = Vec::with_capacity(2);
            if !hup {
                fds.push((fifo.as_raw_fd(), libc::POLLIN));
            }
            if let Some(p) = &pidfd {
                fds.push((p.as_raw_fd(), libc::POLLIN));
            }
            // Without a pidfd, the init's liveness is looked at every 10 ms.
            let wait = if pidfd.is_some() { left } else { left.min(Duration::from_millis(10)) };
            let revents = if fds.is_empty() {
                std::thread::sleep(wait);
                vec![]
            } else {
                process::poll_fds(&fds, Some(wait)).ctx(|| "poll exec.fifo")?
            };
            // Read only when poll says so: before the init opens its end, a
            // read would return EOF (no writer) rather than block.
            if !hup && revents.first().is_some_and(|r| r & (libc::POLLIN | libc::POLLHUP) != 0) {
                match fifo.read(&mut buf) {
                    Ok(1) => break,
                    Ok(_) => hup = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(SysError::new("read exec.fifo", e).into()),
                }
            }
            if !saved.alive() {
                return Err(ExecError::Init("container init exited before start".into()));
            }
            if Instant::now() >= deadline {
                return Err(ExecError::Init("timed out waiting for the container init".into()));
            }
        }
        match std::fs::remove_file(&fifo_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SysError::new("remove exec.fifo".to_string(), e).into()),
            _ => Ok(()),
        }
    }

    fn state(&self, id: &str) -> ExecResult<State> {
        let (dir, saved) = self.load(id)?;
        Ok(saved.to_state(&dir))
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> ExecResult<()> {
        let (dir, saved) = self.load(id)?;
        let sig = Signal::try_from(signal).map_err(|_| ExecError::Spec(format!("invalid signal {signal}")))?;
        let status = saved.status(&dir);
        if all {
            let cgroup = cgroups::for_host(&saved.cgroup_path)?;
            kill_all(&saved, cgroup.as_ref(), sig, Duration::ZERO);
            return Ok(());
        }
        if status == Status::Stopped {
            return Err(ExecError::BadState { id: id.into(), status, op: "kill" });
        }
        kill(Pid::from_raw(saved.pid), sig).ctx(|| format!("kill {}", saved.pid))?;
        Ok(())
    }

    fn delete(&self, id: &str, force: bool) -> ExecResult<()> {
        let (dir, saved) = self.load(id)?;
        let status = saved.status(&dir);
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(ExecError::BadState { id: id.into(), status, op: "delete (use force)" });
        }
        let cgroup = cgroups::for_host(&saved.cgroup_path)?;
        kill_all(&saved, cgroup.as_ref(), Signal::SIGKILL, Duration::from_secs(10));
        cgroup.destroy()?;
        std::fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
        Ok(())
    }

    fn exec(&self, id: &str, process: &oci_spec::runtime::Process, opts: CreateOpts) -> ExecResult<i32> {
        let (dir, saved) = self.load(id)?;
        let status = saved.status(&dir);
        if !matches!(status, Status::Created | Status::Running) {
            return Err(ExecError::BadState { id: id.into(), status, op: "exec" });
        }
        if process.terminal() == Some(true) && opts.console_socket.is_none() {
            return Err(ExecError::Spec("terminal: true needs a console socket".into()));
        }
        let spec = load_spec(&saved.bundle)?;
        let boot = Bootstrap {
            mode: Mode::Exec,
            console: opts.console_socket.is_some(),
            spec,
            process: process.clone(),
            rootfs: PathBuf::from("/"),
            state_dir: dir,
            cgroup_path: saved.cgroup_path.clone(),
            target_pid: saved.pid,
        };
        let pid_file = opts.pid_file.clone();
        let pid = self.run_init(&boot, &saved.bundle, opts)?;
        if let Some(pf) = pid_file {
            write_pid_file(&pf, pid)?;
        }
        Ok(pid)
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Reads a whole stream (used by the init for the bootstrap).
pub(crate) fn read_all(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

/// Writes one message line (used by the init).
pub(crate) fn send(w: &mut impl Write, m: &Msg) {
    if let Ok(mut line) = serde_json::to_vec(m) {
        line.push(b'\n');
        let _ = w.write_all(&line);
    }
}
