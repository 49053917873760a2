//! Handler for runc-compatible runtimes (runc, crun) driven through their
//! command line: `<bin> --root R --log L --log-format json <cmd> ...`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{check_id, CreateOpts, ExecError, ExecResult, Executor, State};
use crate::linux::{process, Context};

/// An external OCI runtime.
pub struct CliExecutor {
    name: String,
    binary: PathBuf,
    /// Arguments before the global options, e.g. `oci` for `berth oci`.
    prefix: Vec<String>,
    root: PathBuf,
}

impl CliExecutor {
    /// `name` is used in messages and to decide runtime-specific quirks
    /// (`crun` gets the hybrid-cgroup workaround).
    pub fn new(name: &str, binary: PathBuf, root: PathBuf) -> Self {
        CliExecutor { name: name.into(), binary, prefix: Vec::new(), root }
    }

    /// Like [`CliExecutor::new`], with `prefix` passed before the global
    /// options: `CliExecutor::with_prefix("builtin", berth, ["oci"], root)`
    /// drives Berth's own `berth oci` command line.
    pub fn with_prefix(name: &str, binary: PathBuf, prefix: impl IntoIterator<Item = impl Into<String>>, root: PathBuf) -> Self {
        CliExecutor { name: name.into(), binary, prefix: prefix.into_iter().map(Into::into).collect(), root }
    }

    fn is_crun(&self) -> bool {
        self.name == "crun" || self.binary.file_name().is_some_and(|n| n == "crun")
    }

    fn command(&self, log: Option<&Path>) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.prefix);
        cmd.arg("--root").arg(&self.root);
        if let Some(log) = log {
            cmd.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        // crun 1.8 aborts with "cgroups in hybrid mode not supported" when
        // a cgroup2 mount sits at /sys/fs/cgroup/unified next to the v1
        // hierarchies. Run it in a private mount namespace without that
        // mount, so it sees (and uses) a pure v1 layout. The container's
        // own mount namespace is derived from this one.
        if self.is_crun() && process::hybrid_cgroup2_mounted() {
            process::hide_hybrid_cgroup2(&mut cmd);
        }
        cmd
    }

    fn log_path(&self, id: &str, op: &str) -> PathBuf {
        self.root.join(format!(".{id}.{op}.log"))
    }

    /// Runs a command whose output we capture (no container stdio involved).
    fn run(&self, op: &'static str, id: &str, args: &[&str]) -> ExecResult<Output> {
        check_id(id)?;
        std::fs::create_dir_all(&self.root).ctx(|| format!("mkdir {}", self.root.display()))?;
        let log = self.log_path(id, op);
        let out = self
            .command(Some(&log))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ctx(|| format!("run {}", self.binary.display()))?;
        let log_msg = take_log(&log);
        if !out.status.success() {
            return Err(self.error(op, id, &out.stderr, log_msg));
        }
        Ok(out)
    }

    fn error(&self, op: &'static str, id: &str, stderr: &[u8], log_msg: Option<String>) -> ExecError {
        let stderr = String::from_utf8_lossy(stderr).trim().to_string();
        let msg = log_msg.filter(|m| !m.is_empty()).unwrap_or(stderr);
        let lower = msg.to_lowercase();
        if lower.contains("does not exist") || lower.contains("not found") && lower.contains("container") {
            return ExecError::NotFound(id.into());
        }
        ExecError::Runtime { runtime: self.name.clone(), op, msg }
    }

    /// Runs a command that hands `opts`' stdio to the container.
    fn run_with_stdio(&self, op: &'static str, id: &str, args: Vec<String>, opts: CreateOpts) -> ExecResult<()> {
        check_id(id)?;
        std::fs::create_dir_all(&self.root).ctx(|| format!("mkdir {}", self.root.display()))?;
        let log = self.log_path(id, op);
        let stdio = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::inherit, Stdio::from);
        // The container inherits the runtime's stdio, so errors are read
        // from the JSON log rather than a stderr pipe (which would stay open).
        let status = self
            .command(Some(&log))
            .args(&args)
            .stdin(stdio(opts.stdin))
            .stdout(stdio(opts.stdout))
            .stderr(stdio(opts.stderr))
            .status()
            .ctx(|| format!("run {}", self.binary.display()))?;
        let log_msg = take_log(&log);
        if !status.success() {
            let msg = log_msg.unwrap_or_else(|| format!("exited with {status}"));
            return Err(ExecError::Runtime { runtime: self.name.clone(), op, msg });
        }
        Ok(())
    }
}

/// Reads and removes a JSON log; returns the last error-level message.
fn take_log(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok();
    let _ = std::fs::remove_file(path);
    let text = text?;
    let mut last = None;
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
                if level == "error" || level == "fatal" {
                    last = v.get("msg").and_then(|m| m.as_str()).map(String::from);
                }
            }
            Err(_) if !line.trim().is_empty() => last = Some(line.trim().to_string()),
            Err(_) => {}
        }
    }
    last
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

impl Executor for CliExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn create(&self, id: &str, bundle: &Path, opts: CreateOpts) -> ExecResult<()> {
        let mut args = vec!["create".to_string(), "--bundle".into(), s(bundle)];
        if let Some(p) = &opts.pid_file {
            args.extend(["--pid-file".into(), s(p)]);
        }
        if let Some(c) = &opts.console_socket {
            args.extend(["--console-socket".into(), s(c)]);
        }
        args.push(id.into());
        self.run_with_stdio("create", id, args, opts)
    }

    fn start(&self, id: &str) -> ExecResult<()> {
        self.run("start", id, &["start", id]).map(drop)
    }

    fn state(&self, id: &str) -> ExecResult<State> {
        let out = self.run("state", id, &["state", id])?;
        serde_json::from_slice(&out.stdout).map_err(|e| ExecError::Runtime {
            runtime: self.name.clone(),
            op: "state",
            msg: format!("bad state JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)),
        })
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> ExecResult<()> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.run("kill", id, &args).map(drop)
    }

    fn delete(&self, id: &str, force: bool) -> ExecResult<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.run("delete", id, &args).map(drop)
    }

    fn exec(&self, id: &str, process: &oci_spec::runtime::Process, opts: CreateOpts) -> ExecResult<i32> {
        check_id(id)?;
        std::fs::create_dir_all(&self.root).ctx(|| format!("mkdir {}", self.root.display()))?;
        let nonce: u64 = rand::random();
        let proc_file = self.root.join(format!(".{id}.exec-{nonce:x}.json"));
        let own_pid_file = self.root.join(format!(".{id}.exec-{nonce:x}.pid"));
        let json = serde_json::to_vec(process).map_err(|e| ExecError::Spec(e.to_string()))?;
        std::fs::write(&proc_file, json).ctx(|| format!("write {}", proc_file.display()))?;
        let pid_file = opts.pid_file.clone().unwrap_or_else(|| own_pid_file.clone());
        let mut args = vec!["exec".to_string(), "--process".into(), s(&proc_file), "-d".into(), "--pid-file".into(), s(&pid_file)];
        if let Some(c) = &opts.console_socket {
            args.extend(["--console-socket".into(), s(c)]);
        }
        args.push(id.into());
        let r = self.run_with_stdio("exec", id, args, opts);
        let _ = std::fs::remove_file(&proc_file);
        r?;
        let pid = std::fs::read_to_string(&pid_file).ctx(|| format!("read {}", pid_file.display()))?;
        let _ = std::fs::remove_file(&own_pid_file);
        pid.trim().parse().map_err(|_| ExecError::Runtime {
            runtime: self.name.clone(),
            op: "exec",
            msg: format!("bad pid file content {pid:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_log_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("log");
        std::fs::write(
            &p,
            "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\n",
        )
        .unwrap();
        assert_eq!(take_log(&p).as_deref(), Some("exec: \"nope\": not found"));
        assert!(!p.exists());
    }
}
