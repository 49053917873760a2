//! Running a command in a container to completion (CRI `ExecSync`).
//!
//! The exec'd process is not a child of whoever asks the executor for it
//! (the container init re-forks into the PID namespace), so the daemon runs
//! `berth exec-sync`: a short-lived child subreaper that asks the executor
//! for the process with its own stdio, reaps until that process exits, and
//! exits with its status. A timeout, SIGTERM or SIGHUP kills the process.
//! With `--console-socket` the process gets a terminal, whose master the
//! runtime sends to that socket (streaming `Exec` with `tty`).

use crate::oci::{executor_by_name, CreateOpts, ExecutorConfig, InitCommand};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `berth exec-sync`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecSyncArgs {
    #[arg(long)]
    pub executor_root: PathBuf,
    #[arg(long)]
    pub handler: String,
    #[arg(long)]
    pub id: String,
    /// Seconds before the process is killed; 0 for none.
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Run the process on a terminal: the runtime sends the pty master to
    /// this unix socket (stdio is then unused).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// The command; the rest of the process comes from the container's spec.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

/// Exit status of `exec-sync` when the command timed out.
pub const TIMEOUT_EXIT: i32 = 124;

pub fn exec_sync_main(a: &ExecSyncArgs) -> ! {
    let fail = |msg: String| -> ! {
        eprintln!("berth exec-sync: {msg}");
        std::process::exit(126)
    };
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let cfg = ExecutorConfig { root: a.executor_root.clone(), binaries: Default::default(), init: InitCommand::forking() };
    let exec = executor_by_name(&a.handler, &cfg).unwrap_or_else(|e| fail(e.to_string()));
    let state = exec.state(&a.id).unwrap_or_else(|e| fail(e.to_string()));
    let spec = crate::oci::load_spec(&state.bundle).unwrap_or_else(|e| fail(e.to_string()));
    let mut process = spec.process().clone().unwrap_or_else(|| fail("the container spec has no process".into()));
    process.set_args(Some(a.cmd.clone()));
    process.set_terminal(Some(a.console_socket.is_some()));
    if a.console_socket.is_some() {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        process.set_env(Some(env));
    }
    let opts = CreateOpts { console_socket: a.console_socket.clone(), ..Default::default() };
    let pid = exec.exec(&a.id, &process, opts).unwrap_or_else(|e| fail(e.to_string()));
    // SIGTERM or SIGHUP (the streaming client went away) kills the process.
    // Blocked only now, so the exec'd process does not inherit the mask.
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGHUP);
    if set.thread_block().is_ok() {
        std::thread::spawn(move || {
            if set.wait().is_ok() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        });
    }
    if a.timeout > 0 {
        let t = Duration::from_secs(a.timeout);
        std::thread::spawn(move || {
            std::thread::sleep(t);
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            std::process::exit(TIMEOUT_EXIT);
        });
    }
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => std::process::exit(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => std::process::exit(128 + sig as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => fail(format!("waiting for the exec'd process: {e}")),
        }
    }
}
