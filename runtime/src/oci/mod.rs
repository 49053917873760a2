//! OCI executors: the seam between Berth and whatever turns a bundle into a
//! running container. Handlers are chosen by name: `builtin` (default, in
//! this crate), `runc` and `crun` (their command lines, see [`cli`]).
//!
//! The calls are synchronous: they are made from a shim process, not from
//! the async daemon.

pub mod builtin;
pub mod cli;
pub mod cmd;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use builtin::{init_main, is_init_invocation, BuiltinExecutor, InitCommand};
pub use cli::CliExecutor;
pub use cmd::{run_oci_command, OciCommand};

/// OCI runtime spec version reported in states.
pub const OCI_VERSION: &str = "1.2.0";

/// Options for `create` and `exec`.
#[derive(Debug, Default)]
pub struct CreateOpts {
    /// Where to write the container (or exec'd process) pid.
    pub pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master for `terminal: true`.
    pub console_socket: Option<PathBuf>,
    /// Stdio for the container process; `None` inherits the caller's.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Container status as in the OCI state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// The OCI runtime state of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    /// Init pid on the host; 0 once stopped (as runc reports).
    #[serde(default)]
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// Executor failures.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("container {id:?} is {status}: cannot {op}")]
    BadState { id: String, status: Status, op: &'static str },
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    #[error("invalid bundle: {0}")]
    Spec(String),
    /// The container init failed; the message comes from inside the container setup.
    #[error("{0}")]
    Init(String),
    /// An external runtime (runc, crun) failed.
    #[error("{runtime} {op}: {msg}")]
    Runtime { runtime: String, op: &'static str, msg: String },
    #[error(transparent)]
    Sys(#[from] crate::linux::SysError),
    #[error(transparent)]
    Cgroup(#[from] crate::linux::cgroups::CgroupError),
}

pub type ExecResult<T> = Result<T, ExecError>;

/// A container lifecycle backend.
pub trait Executor: Send + Sync {
    fn name(&self) -> &str;
    /// Sets up the container from `bundle`, leaving its process waiting
    /// before exec until [`Executor::start`].
    fn create(&self, id: &str, bundle: &Path, opts: CreateOpts) -> ExecResult<()>;
    fn start(&self, id: &str) -> ExecResult<()>;
    fn state(&self, id: &str) -> ExecResult<State>;
    /// Signals the init process, or every process of the container with `all`.
    fn kill(&self, id: &str, signal: i32, all: bool) -> ExecResult<()>;
    /// Removes the container; `force` kills it first if it is still running.
    fn delete(&self, id: &str, force: bool) -> ExecResult<()>;
    /// Starts an additional process in the running container; returns its pid.
    fn exec(&self, id: &str, process: &oci_spec::runtime::Process, opts: CreateOpts) -> ExecResult<i32>;
}

/// How to build executors, e.g. from the daemon configuration.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// State directory root (per handler subdirectories are used).
    pub root: PathBuf,
    /// Binary paths for external handlers by name (`runc`, `crun`, ...).
    pub binaries: HashMap<String, PathBuf>,
    /// How the built-in executor re-executes itself for container init.
    pub init: InitCommand,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig { root: PathBuf::from("/run/berth/oci"), binaries: HashMap::new(), init: InitCommand::default() }
    }
}

/// Builds the executor called `name` (`builtin`, `runc`, `crun`, or any
/// name with a binary configured, treated as runc-compatible).
pub fn executor_by_name(name: &str, cfg: &ExecutorConfig) -> ExecResult<Box<dyn Executor>> {
    match name {
        "" | "builtin" => Ok(Box::new(BuiltinExecutor::new(cfg.root.join("builtin"), cfg.init.clone()))),
        other => {
            let bin = match cfg.binaries.get(other) {
                Some(b) => b.clone(),
                None if other == "runc" || other == "crun" => PathBuf::from(other),
                None => return Err(ExecError::Spec(format!("unknown executor {other:?}"))),
            };
            Ok(Box::new(CliExecutor::new(other, bin, cfg.root.join(other))))
        }
    }
}

/// Validates a container id (used as a directory name).
pub fn check_id(id: &str) -> ExecResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ExecError::InvalidId(id.to_string()))
    }
}

/// Loads `config.json` from a bundle.
pub fn load_spec(bundle: &Path) -> ExecResult<oci_spec::runtime::Spec> {
    let path = bundle.join("config.json");
    oci_spec::runtime::Spec::load(&path).map_err(|e| ExecError::Spec(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("abc-1_2.3").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("").is_err());
    }

    #[test]
    fn state_json() {
        let s = State {
            oci_version: OCI_VERSION.into(),
            id: "c".into(),
            status: Status::Running,
            pid: 7,
            bundle: "/b".into(),
            annotations: HashMap::new(),
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"ociVersion":"1.2.0","id":"c","status":"running","pid":7,"bundle":"/b"}"#);
    }
}
