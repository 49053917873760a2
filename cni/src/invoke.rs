//! Running one plugin binary: the CNI_* environment, the config on stdin,
//! the result or error on stdout, and a timeout after which the plugin (and
//! its process group) is killed.

use crate::error::{CniError, PluginError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// PATH for plugins when the daemon has none (they run iptables, ip, ...).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Stderr kept for error messages.
const STDERR_MAX: usize = 64 * 1024;
/// How long output is awaited after the plugin exited (a daemon it left
/// behind may hold the pipes).
const DRAIN: Duration = Duration::from_secs(1);

/// The CNI_* variables of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    /// Empty when there is no namespace (DEL of a namespace that is gone).
    pub netns: &'a str,
    pub ifname: &'a str,
    /// CNI_ARGS, `K=V` pairs.
    pub args: &'a [(String, String)],
}

/// Finds and runs plugins.
#[derive(Debug, Clone)]
pub struct Invoker {
    pub plugin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// `K1=V1;K2=V2`.
pub fn cni_args(args: &[(String, String)]) -> String {
    args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: fd was just returned by pidfd_open and is owned here.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `pidfd` exits; false on timeout.
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(60_000) as i32;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
            Ok(_) if left.is_zero() => return false,
            Ok(_) => {}
        }
    }
}

/// Reads a pipe into a shared buffer (up to `max` bytes kept) and reports
/// EOF on `done`.
fn reader(mut r: impl Read + Send + 'static, max: usize) -> (Arc<Mutex<Vec<u8>>>, mpsc::Receiver<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                    let room = max.saturating_sub(b.len());
                    b.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    (buf, rx)
}

fn take(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()))
}

impl Invoker {
    pub fn new(plugin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        Self { plugin_dirs, timeout }
    }

    /// CNI_PATH: the plugin dirs.
    pub fn cni_path(&self) -> String {
        self.plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    }

    /// The executable of plugin `plugin` in the first plugin dir that has it.
    pub fn find(&self, plugin: &str, network: &str) -> Result<PathBuf, CniError> {
        if !plugin.is_empty() && !plugin.contains('/') && plugin != "." && plugin != ".." {
            for d in &self.plugin_dirs {
                let p = d.join(plugin);
                if std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0) {
                    return Ok(p);
                }
            }
        }
        let dirs = if self.plugin_dirs.is_empty() { "(no plugin dirs)".to_string() } else { self.plugin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ") };
        Err(CniError::PluginNotFound { plugin: plugin.into(), network: network.into(), dirs })
    }

    /// Runs `path` with the invocation's environment and `stdin`; returns
    /// its stdout when it exits 0. `plugin` and `network` name it in errors.
    pub fn exec(&self, path: &Path, plugin: &str, network: &str, inv: &Invocation, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let command = inv.command.to_string();
        let exec_err = |source: std::io::Error| CniError::Exec { plugin: plugin.into(), network: network.into(), command: command.clone(), path: path.to_path_buf(), source };
        let mut cmd = Command::new(path);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", DEFAULT_PATH);
        }
        cmd.env("CNI_COMMAND", inv.command).env("CNI_PATH", self.cni_path());
        if inv.command != "VERSION" {
            cmd.env("CNI_CONTAINERID", inv.container_id)
                .env("CNI_NETNS", inv.netns)
                .env("CNI_IFNAME", inv.ifname)
                .env("CNI_ARGS", cni_args(inv.args));
        }
        cmd.current_dir("/").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group: a timeout kills whatever it started too.
        cmd.process_group(0);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(exec_err)?;
        let pid = child.id();
        let pidfd = pidfd_open(pid);
        let input = stdin.to_vec();
        let mut w = child.stdin.take().expect("stdin is piped");
        // A plugin need not read all of stdin: write from a thread.
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
        let (out, out_done) = reader(child.stdout.take().expect("stdout is piped"), usize::MAX);
        let (err, err_done) = reader(child.stderr.take().expect("stderr is piped"), STDERR_MAX);
        let exited = match &pidfd {
            Some(fd) => wait_exit(fd, self.timeout),
            None => true,
        };
        if !exited {
            // The child is not reaped yet, so its pid (and group id) are still its own.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        let status = child.wait().map_err(exec_err)?;
        let grace = if exited { DRAIN } else { Duration::from_millis(100) };
        let _ = out_done.recv_timeout(grace);
        let _ = err_done.recv_timeout(grace);
        let (stdout, stderr) = (take(&out), take(&err));
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        tracing::debug!(plugin, network, command = inv.command, container = inv.container_id, ms = started.elapsed().as_millis() as u64, status = %status, "CNI plugin ran");
        if !stderr.is_empty() {
            tracing::debug!(plugin, command = inv.command, stderr = %stderr, "CNI plugin stderr");
        }
        if !exited {
            return Err(CniError::Timeout { plugin: plugin.into(), network: network.into(), command, secs: self.timeout.as_secs().max(1) });
        }
        if status.success() {
            return Ok(stdout);
        }
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => status.to_string(),
        };
        let error = match serde_json::from_slice::<PluginError>(&stdout) {
            Ok(e) if e.code.is_some() || !e.msg.is_empty() => e,
            _ => {
                let text = if stderr.is_empty() { String::from_utf8_lossy(&stdout).trim().to_string() } else { stderr };
                PluginError { code: None, msg: if text.is_empty() { how.clone() } else { text }, details: how }
            }
        };
        Err(CniError::Plugin { plugin: plugin.into(), network: network.into(), command, error: Box::new(error) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn inv(command: &'static str) -> Invocation<'static> {
        static ARGS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
        let args = ARGS.get_or_init(|| vec![("IgnoreUnknown".into(), "1".into()), ("K8S_POD_NAME".into(), "web".into())]);
        Invocation { command, container_id: "c1", netns: "/run/netns/x", ifname: "eth0", args }
    }

    #[test]
    fn finds_plugins_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        script(b.path(), "p", "true");
        script(a.path(), "p", "true");
        std::fs::write(a.path().join("noexec"), "").unwrap();
        let i = Invoker::new(vec![a.path().into(), b.path().into()], Duration::from_secs(5));
        assert_eq!(i.find("p", "n").unwrap(), a.path().join("p"));
        for bad in ["noexec", "missing", "../p", ""] {
            let e = i.find(bad, "n").unwrap_err();
            assert!(matches!(e, CniError::PluginNotFound { .. }), "{e}");
            assert!(e.to_string().contains(&a.path().display().to_string()), "{e}");
        }
    }

    #[test]
    fn passes_env_and_stdin() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "echoenv", r#"printf '%s|%s|%s|%s|%s|%s|' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH"; cat"#);
        let i = Invoker::new(vec![d.path().into()], Duration::from_secs(5));
        let out = i.exec(&d.path().join("echoenv"), "echoenv", "n", &inv("ADD"), b"{\"x\":1}").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("ADD|c1|/run/netns/x|eth0|IgnoreUnknown=1;K8S_POD_NAME=web|{}|{{\"x\":1}}", d.path().display()));
        // VERSION gets no container variables.
        let out = i.exec(&d.path().join("echoenv"), "echoenv", "n", &inv("VERSION"), b"").unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("VERSION||||"));
    }

    #[test]
    fn plugin_errors_are_surfaced() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "fails", r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"subnet"}'; echo oops >&2; exit 1"#);
        script(d.path(), "crashes", "echo 'panic: boom' >&2; exit 2");
        let i = Invoker::new(vec![d.path().into()], Duration::from_secs(5));
        let e = i.exec(&d.path().join("fails"), "fails", "net1", &inv("ADD"), b"{}").unwrap_err();
        match &e {
            CniError::Plugin { plugin, network, command, error } => {
                assert_eq!((plugin.as_str(), network.as_str(), command.as_str()), ("fails", "net1", "ADD"));
                assert_eq!(**error, PluginError { code: Some(7), msg: "bad config".into(), details: "subnet".into() });
            }
            e => panic!("{e}"),
        }
        assert_eq!(e.to_string(), "CNI plugin fails (ADD) of network \"net1\" failed: bad config (code 7: invalid network config); details: subnet");
        let e = i.exec(&d.path().join("crashes"), "crashes", "net1", &inv("DEL"), b"{}").unwrap_err();
        assert!(e.to_string().contains("panic: boom") && e.to_string().contains("exit status 2"), "{e}");
        let e = i.exec(&d.path().join("missing"), "missing", "net1", &inv("DEL"), b"{}").unwrap_err();
        assert!(matches!(e, CniError::Exec { .. }), "{e}");
    }

    #[test]
    fn a_hung_plugin_times_out_and_is_killed() {
        // Orphans of the plugin come back to this process, to be reaped here.
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an int flag.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("child.pid");
        // The plugin and a child it started: both are killed.
        script(d.path(), "hangs", &format!("sleep 1000 & echo $! > {}; wait", pidfile.display()));
        let i = Invoker::new(vec![d.path().into()], Duration::from_millis(300));
        let e = i.exec(&d.path().join("hangs"), "hangs", "n", &inv("ADD"), b"{}").unwrap_err();
        assert!(matches!(e, CniError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("did not finish"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // Killed by SIGKILL (a `sleep 1000` does not end by itself).
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Signaled(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL, false));
    }
}
