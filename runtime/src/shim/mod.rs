//! The per-container shim: a small monitor process (the berth binary
//! re-executed) that outlives the daemon. It holds the container's stdio,
//! writes its logs in the CRI format, reaps it as a child subreaper, and
//! records how it ended in `exit.json` (atomically) for the daemon to find,
//! even after a daemon restart.
//!
//! Signals to the shim: SIGUSR1 reopens the log file (rotation).
//!
//! Two shim binaries run the same monitor: the small `berth-shim` (see
//! [`run_cli`]), which creates the container by running the OCI runtime's
//! command line (`berth oci`, runc, crun) as a child, as conmon does, and
//! `berth shim` ([`run`]), which links the executors. [`spawn`] prefers
//! `berth-shim` when it is installed next to the berth binary.

pub mod attach;

use crate::logs::{LogWriter, Stream, DEFAULT_MAX_LINE};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything a shim needs, written by the daemon as `shim.json` in the
/// container's state dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    pub bundle: PathBuf,
    /// Where `exit.json` and `shim.pid` go.
    pub state_dir: PathBuf,
    pub log_path: Option<PathBuf>,
    /// Memory cgroup directories of the container, to tell an OOM kill.
    #[serde(default)]
    pub memory_cgroups: Vec<PathBuf>,
    /// The executor handler name (`builtin`, `runc`, `crun`).
    pub handler: String,
    /// The executor's state root.
    #[serde(default)]
    pub executor_root: PathBuf,
    /// Binaries of external handlers by name, when not on PATH.
    #[serde(default)]
    pub binaries: std::collections::HashMap<String, PathBuf>,
    /// The berth binary, which the small `berth-shim` runs as `berth oci`
    /// for the builtin handler. Empty: the daemon's exe given to [`spawn`]
    /// (or, in `berth-shim`, the `berth` next to it).
    #[serde(default)]
    pub berth: PathBuf,
    /// Keep the container's stdin open for attach sessions.
    #[serde(default)]
    pub stdin: bool,
    /// Close the container's stdin when the first attach session's stdin ends.
    #[serde(default)]
    pub stdin_once: bool,
    /// Run the container on a terminal.
    #[serde(default)]
    pub tty: bool,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// RFC 3339, nanoseconds.
    pub finished_at: String,
}

pub const EXIT_FILE: &str = "exit.json";
pub const PID_FILE: &str = "shim.pid";
/// The attach socket in the shim's state dir (see [`attach`]).
pub const ATTACH_SOCKET: &str = "attach";

pub fn read_exit(state_dir: &Path) -> Option<ExitRecord> {
    serde_json::from_slice(&fs::read(state_dir.join(EXIT_FILE)).ok()?).ok()
}

/// Replaces a file in one rename; with `durable`, its data reaches the disk first.
fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// The container's side of its stdio: pipes (or /dev/null), and with a
/// terminal the socket on which the runtime sends the pty master.
pub struct ContainerStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub console_socket: Option<PathBuf>,
}

/// Counts OOM kills recorded by the kernel for a memory cgroup (v1
/// `memory.oom_control`, v2 `memory.events`).
pub fn oom_kills(dir: &Path) -> u64 {
    ["memory.events", "memory.oom_control"]
        .iter()
        .filter_map(|f| fs::read_to_string(dir.join(f)).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Exit code as a shell reports it: 128+N for a signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, c) => Some((c, None)),
        WaitStatus::Signaled(_, s, _) => Some((128 + s as i32, Some(s as i32))),
        _ => None,
    }
}

/// Runs the shim's monitor loop once the container exists: `create` is
/// given the container's stdio and returns the container's init pid (the
/// shim is a child subreaper, so that pid becomes its child).
/// `ready` gets `ok <pid>\n` or `err <message>\n` for the daemon.
pub fn monitor(cfg: &ShimConfig, ready: fs::File, create: impl FnOnce(ContainerStdio) -> Result<i32, String>) -> io::Result<ExitRecord> {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGUSR1);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGHUP);
    mask.add(Signal::SIGPIPE);
    // The signals are blocked (for the signalfd) only once the container
    // exists: a blocked mask is inherited through fork and exec, and the
    // executor's processes (and so the container) would start with these
    // signals blocked, e.g. deaf to SIGTERM. Until then, no-op handlers keep
    // them from killing the shim; handlers, unlike a mask or SIG_IGN, are
    // reset by exec.
    extern "C" fn ignore(_: libc::c_int) {}
    let noop = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(ignore),
        nix::sys::signal::SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(sig, &noop)? };
    }

    let mut ready = ready;
    let fail = |ready: &mut fs::File, msg: String| -> io::Error {
        let _ = writeln!(ready, "err {}", msg.replace('\n', " "));
        io::Error::other(msg)
    };
    let devnull = || -> io::Result<OwnedFd> { Ok(fs::OpenOptions::new().read(true).write(true).open("/dev/null")?.into()) };
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let attach_path = cfg.state_dir.join(ATTACH_SOCKET);
    let listener = attach::bind(&attach_path).map_err(|e| fail(&mut ready, format!("attach socket {}: {e}", attach_path.display())))?;
    // The runtime connects to the console socket and sends the pty master.
    let console = if cfg.tty {
        let dir = tempfile::Builder::new().prefix("berth-console-").tempdir()?;
        let path = dir.path().join("console.sock");
        let l = std::os::unix::net::UnixListener::bind(&path)?;
        Some((dir, path, l))
    } else {
        None
    };
    let (stdin_r, stdin_w) = if cfg.stdin && !cfg.tty {
        let (r, w) = nix::unistd::pipe2(cloexec)?;
        (r, Some(w))
    } else {
        (devnull()?, None)
    };
    // Output: two pipes, or the terminal.
    let (outputs, stdout, stderr) = if cfg.tty {
        (Vec::new(), devnull()?, devnull()?)
    } else {
        let (out_r, out_w) = nix::unistd::pipe2(cloexec)?;
        let (err_r, err_w) = nix::unistd::pipe2(cloexec)?;
        (vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)], out_w, err_w)
    };
    let stdio = ContainerStdio { stdin: Some(stdin_r), stdout, stderr, console_socket: console.as_ref().map(|c| c.1.clone()) };
    let pid = match create(stdio) {
        Ok(pid) => pid,
        Err(msg) => return Err(fail(&mut ready, msg)),
    };
    let mut outputs: Vec<Option<(OwnedFd, Stream)>> = outputs.into_iter().map(Some).collect();
    let mut master: Option<OwnedFd> = None;
    if let Some((dir, _, l)) = console {
        let m = receive_master(&l).map_err(|e| fail(&mut ready, format!("container terminal: {e}")))?;
        drop(l);
        drop(dir);
        let out = m.try_clone()?;
        attach::set_nonblocking(&out)?;
        outputs.push(Some((out, Stream::Stdout)));
        master = Some(m);
    }
    let mut stdin = attach::StdinSink::new(if cfg.tty { master.as_ref().map(|m| m.try_clone()).transpose()? } else { stdin_w }, cfg.tty)?;
    let mut clients = attach::Clients::new(listener)?;
    mask.thread_block()?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let _ = writeln!(ready, "ok {pid}");
    drop(ready);

    let mut log = match &cfg.log_path {
        Some(p) => Some(LogWriter::open(p, DEFAULT_MAX_LINE)?),
        None => None,
    };
    let mut status: Option<(i32, Option<i32>)> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    // Reap at once on the first pass: a SIGCHLD that came before the
    // signalfd existed went to the no-op handler.
    let mut first = true;
    loop {
        if status.is_some() && outputs.iter().all(Option::is_none) {
            break;
        }
        let timeout = match drain_deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
            None if first => PollTimeout::ZERO,
            // A periodic reap as well, in case a SIGCHLD was consumed elsewhere.
            None => PollTimeout::from(5000u16),
        };
        first = false;
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let slots: Vec<usize> = (0..outputs.len()).filter(|i| outputs[*i].is_some()).collect();
        for i in &slots {
            fds.push(PollFd::new(outputs[*i].as_ref().unwrap().0.as_fd(), PollFlags::POLLIN));
        }
        let stdin_at = fds.len();
        if let Some(fd) = stdin.poll_fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        let clients_at = fds.len();
        for (fd, ev) in clients.poll_fds(!stdin.backed_up()) {
            fds.push(PollFd::new(fd, ev));
        }
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let ready_fds: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        // Always drain the signalfd: a pending signal left unread (e.g. a
        // SIGCHLD from another reparented process while draining the pipes)
        // keeps it readable and would turn the poll into a busy loop.
        while let Ok(Some(si)) = sfd.read_signal() {
            if si.ssi_signo == Signal::SIGUSR1 as u32 {
                if let Some(l) = log.as_mut() {
                    let _ = l.reopen();
                }
            }
        }
        if status.is_none() {
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(ws) => {
                        if ws.pid() == Some(Pid::from_raw(pid)) {
                            status = exit_code(ws);
                            drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                            clients.stop_listening();
                        }
                    }
                }
            }
        }
        for (k, i) in slots.iter().enumerate() {
            if !ready_fds[k + 1] {
                continue;
            }
            let (fd, stream) = outputs[*i].as_ref().unwrap();
            let stream = *stream;
            match nix::unistd::read(fd, &mut buf) {
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                // EIO: the terminal's last slave fd closed.
                Ok(0) | Err(_) => {
                    if let Some(l) = log.as_mut() {
                        let _ = l.close_stream(stream);
                    }
                    outputs[*i] = None;
                }
                Ok(n) => {
                    if let Some(l) = log.as_mut() {
                        let _ = l.write(stream, &buf[..n]);
                    }
                    clients.broadcast(if stream == Stream::Stdout { attach::STDOUT } else { attach::STDERR }, &buf[..n]);
                }
            }
        }
        if ready_fds.get(stdin_at).copied().unwrap_or(false) && stdin_at < clients_at {
            stdin.flush();
        }
        for req in clients.handle(&ready_fds[clients_at..]) {
            match req {
                attach::Request::Stdin(data) => stdin.push(&data),
                attach::Request::CloseStdin if cfg.stdin_once => stdin.close(),
                attach::Request::CloseStdin => {}
                attach::Request::Resize { width, height } => {
                    if let Some(m) = &master {
                        let _ = crate::linux::console::set_winsize(m, height, width);
                    }
                }
            }
        }
    }
    clients.close();
    drop(stdin);
    drop(master);
    if let Some(l) = log.as_mut() {
        let _ = l.close_stream(Stream::Stdout);
        let _ = l.close_stream(Stream::Stderr);
    }
    let (exit_code, signal) = status.unwrap_or((255, None));
    let oom_killed = cfg.memory_cgroups.iter().any(|d| oom_kills(d) > 0);
    let rec = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    };
    // Exit codes outlive a power loss.
    write_atomic(&cfg.state_dir.join(EXIT_FILE), &serde_json::to_vec(&rec).expect("exit record serializes"), true)?;
    Ok(rec)
}

/// Takes the pty master that the runtime sent to the console socket during
/// `create` (its connection waits in the listen backlog).
fn receive_master(l: &std::os::unix::net::UnixListener) -> io::Result<OwnedFd> {
    let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(10_000u16))? == 0 {
        return Err(io::Error::other("the runtime sent no terminal to the console socket"));
    }
    let (conn, _) = l.accept()?;
    crate::linux::console::recv_console(&conn).map_err(|e| io::Error::other(e.to_string()))
}

/// The shim's config file inside its state dir.
pub const CONFIG_FILE: &str = "shim.json";
/// How long [`spawn`] waits for the shim to create the container.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(120);

/// The small shim binary's name, looked for next to the berth binary.
pub const SHIM_BINARY: &str = "berth-shim";

/// Starts a detached shim and waits until it has created the container:
/// `<dir of exe>/berth-shim --config <state_dir>/shim.json` when that
/// binary exists, else `<exe> shim --config ...`. Returns the container's
/// init pid, or the executor's error message.
pub fn spawn(exe: &Path, cfg: &ShimConfig) -> io::Result<Result<i32, String>> {
    let small = exe.with_file_name(SHIM_BINARY);
    spawn_with(exe, small.is_file(), cfg)
}

/// [`spawn`] with the choice made: the small `berth-shim` next to `exe`
/// when `small`, else `<exe> shim`.
pub fn spawn_with(exe: &Path, small: bool, cfg: &ShimConfig) -> io::Result<Result<i32, String>> {
    use crate::linux::ready::{self, Report};
    fs::create_dir_all(&cfg.state_dir)?;
    let config_path = cfg.state_dir.join(CONFIG_FILE);
    let mut cfg = cfg.clone();
    if cfg.berth.as_os_str().is_empty() {
        cfg.berth = exe.to_path_buf();
    }
    let cfg = &cfg;
    write_atomic(&config_path, &serde_json::to_vec_pretty(cfg).expect("shim config serializes"), false)?;
    let mut cmd = if small {
        std::process::Command::new(exe.with_file_name(SHIM_BINARY))
    } else {
        let mut c = std::process::Command::new(exe);
        c.arg("shim");
        c
    };
    cmd.arg("--config").arg(&config_path);
    Ok(match ready::spawn(cmd, false, SPAWN_TIMEOUT)? {
        Report::Ready(pid) => Ok(pid),
        Report::Failed(msg) => Err(msg),
        Report::TimedOut(_) => {
            // The monitor is detached: stop it by the pid it recorded.
            if let Some(pid) = fs::read_to_string(cfg.state_dir.join(PID_FILE)).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Err(format!("shim did not create the container within {}s", SPAWN_TIMEOUT.as_secs()))
        }
    })
}

/// Entry point of `berth shim --config FILE`: detaches, then monitors the
/// container that `create` makes. Never returns.
pub fn shim_main(config_path: &Path, create: impl FnOnce(&ShimConfig, ContainerStdio) -> Result<i32, String>) -> ! {
    // Kept out of the executor and the container, or the daemon would not
    // see EOF until they exit.
    let Some(mut ready) = crate::linux::ready::take() else {
        eprintln!("berth shim: no readiness pipe on fd 3; the shim is started by the daemon");
        std::process::exit(2);
    };
    let cfg: ShimConfig = match fs::read(config_path).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(ready, "err reading shim config {}: {e}", config_path.display());
            std::process::exit(1);
        }
    };
    // SAFETY: the shim is single-threaded here.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            let _ = writeln!(ready, "err fork: {e}");
            std::process::exit(1);
        }
    }
    let _ = nix::unistd::setsid();
    let _ = fs::write(cfg.state_dir.join(PID_FILE), std::process::id().to_string());
    match monitor(&cfg, ready, |stdio| create(&cfg, stdio)) {
        Ok(_) => std::process::exit(0),
        Err(_) => std::process::exit(1),
    }
}

/// `berth shim --config FILE`: creates the container with its executor and
/// monitors it. Never returns.
pub fn run(config_path: &Path) -> ! {
    shim_main(config_path, |cfg, stdio| {
        use crate::oci::{executor_by_name, CreateOpts, ExecutorConfig, InitCommand};
        let ecfg = ExecutorConfig { root: cfg.executor_root.clone(), binaries: cfg.binaries.clone(), init: InitCommand::default() };
        let exec = executor_by_name(&cfg.handler, &ecfg).map_err(|e| e.to_string())?;
        let pid_file = cfg.state_dir.join("init.pid");
        let opts = CreateOpts { pid_file: Some(pid_file.clone()), console_socket: stdio.console_socket, stdin: stdio.stdin, stdout: Some(stdio.stdout), stderr: Some(stdio.stderr) };
        exec.create(&cfg.id, &cfg.bundle, opts).map_err(|e| e.to_string())?;
        let pid = fs::read_to_string(&pid_file).map_err(|e| format!("reading {}: {e}", pid_file.display()))?;
        pid.trim().parse::<i32>().map_err(|_| format!("bad pid {pid:?} in {}", pid_file.display()))
    })
}

/// The built-in OCI runtime's own small binary, installed next to `berth`.
pub const OCI_BINARY: &str = "berth-oci";

/// The small `berth-shim --config FILE`: creates the container by running
/// the handler's OCI command line as a child (`berth-oci`, or `<berth> oci`, for builtin,
/// runc, crun) and monitors it. Links no executor, spec or image code.
/// Never returns.
pub fn run_cli(config_path: &Path) -> ! {
    shim_main(config_path, |cfg, stdio| {
        use crate::oci::{CliExecutor, CreateOpts, Executor};
        let exec = match cfg.handler.as_str() {
            "" | "builtin" => {
                let berth = if cfg.berth.as_os_str().is_empty() {
                    std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("berth")
                } else {
                    cfg.berth.clone()
                };
                let small = berth.with_file_name(OCI_BINARY);
                if small.is_file() {
                    CliExecutor::new("builtin", small, cfg.executor_root.join("builtin"))
                } else {
                    CliExecutor::with_prefix("builtin", berth, ["oci"], cfg.executor_root.join("builtin"))
                }
            }
            other => {
                let bin = match cfg.binaries.get(other) {
                    Some(b) => b.clone(),
                    None if other == "runc" || other == "crun" => PathBuf::from(other),
                    None => return Err(format!("unknown executor {other:?}")),
                };
                CliExecutor::new(other, bin, cfg.executor_root.join(other))
            }
        };
        let pid_file = cfg.state_dir.join("init.pid");
        let opts = CreateOpts { pid_file: Some(pid_file.clone()), console_socket: stdio.console_socket, stdin: stdio.stdin, stdout: Some(stdio.stdout), stderr: Some(stdio.stderr) };
        exec.create(&cfg.id, &cfg.bundle, opts).map_err(|e| e.to_string())?;
        let pid = fs::read_to_string(&pid_file).map_err(|e| format!("reading {}: {e}", pid_file.display()))?;
        pid.trim().parse::<i32>().map_err(|_| format!("bad pid {pid:?} in {}", pid_file.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn oom_counters() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(oom_kills(d.path()), 0);
        fs::write(d.path().join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(oom_kills(d.path()), 2);
        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(v2.path()), 1);
    }

    #[test]
    fn monitors_a_child() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ShimConfig {
            id: "t".into(),
            bundle: d.path().into(),
            state_dir: d.path().into(),
            log_path: Some(d.path().join("c.log")),
            memory_cgroups: vec![],
            handler: "test".into(),
            executor_root: d.path().into(),
            binaries: Default::default(),
            berth: PathBuf::new(),
            stdin: false,
            stdin_once: false,
            tty: false,
        };
        let (r, w) = nix::unistd::pipe().unwrap();
        // The monitor owns signals and reaping for its process: run it in a
        // forked child so the test runner's threads are not involved.
        // SAFETY: the child only runs the monitor and exits.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                drop(r);
                let ok = monitor(&cfg, fs::File::from(w), |stdio| {
                    let child = std::process::Command::new("/bin/sh")
                        .args(["-c", "echo out; echo err >&2; exit 7"])
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::from(stdio.stdout))
                        .stderr(std::process::Stdio::from(stdio.stderr))
                        .spawn()
                        .map_err(|e| e.to_string())?;
                    Ok(child.id() as i32)
                })
                .is_ok();
                // SAFETY: leave the forked test process without running its destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(w);
        let mut msg = String::new();
        fs::File::from(r).read_to_string(&mut msg).unwrap();
        assert!(msg.starts_with("ok "), "{msg}");
        assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        let rec = read_exit(d.path()).expect("exit record written");
        assert_eq!((rec.exit_code, rec.signal, rec.oom_killed), (7, None, false));
        let lines = crate::logs::read_lines(&fs::read(d.path().join("c.log")).unwrap());
        assert!(lines.contains(&(Stream::Stdout, b"out".to_vec())), "{lines:?}");
        assert!(lines.contains(&(Stream::Stderr, b"err".to_vec())), "{lines:?}");
    }

    #[test]
    fn attach_relays_stdin_and_output() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ShimConfig {
            id: "t".into(),
            bundle: d.path().into(),
            state_dir: d.path().into(),
            log_path: Some(d.path().join("c.log")),
            memory_cgroups: vec![],
            handler: "test".into(),
            executor_root: d.path().into(),
            binaries: Default::default(),
            berth: PathBuf::new(),
            stdin: true,
            stdin_once: true,
            tty: false,
        };
        // Close-on-exec, or cat would hold the readiness pipe open.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // SAFETY: the child only runs the monitor and exits.
        let child = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                drop(r);
                let ok = monitor(&cfg, fs::File::from(w), |stdio| {
                    let child = std::process::Command::new("/bin/cat")
                        .stdin(std::process::Stdio::from(stdio.stdin.unwrap()))
                        .stdout(std::process::Stdio::from(stdio.stdout))
                        .stderr(std::process::Stdio::from(stdio.stderr))
                        .spawn()
                        .map_err(|e| e.to_string())?;
                    Ok(child.id() as i32)
                })
                .is_ok();
                // SAFETY: leave the forked test process without running its destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        drop(w);
        let mut msg = String::new();
        fs::File::from(r).read_to_string(&mut msg).unwrap();
        assert!(msg.starts_with("ok "), "{msg}");
        let mut sock = attach::connect(&d.path().join(ATTACH_SOCKET)).unwrap();
        sock.write_all(&attach::frame(attach::STDIN, b"ping\n")).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        let got = loop {
            if let Some(f) = attach::parse(&mut buf).unwrap() {
                break f;
            }
            let n = sock.read(&mut chunk).unwrap();
            assert!(n > 0, "attach socket closed early");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(got, (attach::STDOUT, b"ping\n".to_vec()));
        // stdin_once: closing the session's stdin ends cat.
        sock.write_all(&attach::frame(attach::STDIN_CLOSE, &[])).unwrap();
        let mut rest = Vec::new();
        sock.read_to_end(&mut rest).unwrap();
        assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
        assert_eq!(read_exit(d.path()).unwrap().exit_code, 0);
        let lines = crate::logs::read_lines(&fs::read(d.path().join("c.log")).unwrap());
        assert!(lines.contains(&(Stream::Stdout, b"ping".to_vec())), "{lines:?}");
    }
}

