//! Containers: CRI container configs turned into running containers — the
//! image's snapshot mounted as the rootfs, an OCI spec from [`crate::spec`],
//! and a detached [`crate::shim`] that creates the container through the
//! chosen executor. Records live on disk, so a restarted (or killed) daemon
//! finds every container, running or exited, as it was.
//!
//! Layout: `<state>/<id>/{container.json,upper,work}` (persistent),
//! `<run>/<id>/{bundle/config.json,rootfs,exit.json,shim.pid}` (volatile).

pub mod exec;
pub mod stats;

use crate::image::{ImageError, ImageService};
use crate::oci::{self, ExecError, Executor, ExecutorConfig, InitCommand};
use crate::shim::{self, ExitRecord, ShimConfig};
use crate::spec::{self, SandboxNamespaces, SeccompDefault, SpecContext};
use cri_proto::v1::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container name {name:?} is already in use by {id}")]
    NameInUse { name: String, id: String },
    #[error("container {id}: {field}: {reason}")]
    Invalid { id: String, field: &'static str, reason: String },
    #[error("container {id} is {state}: cannot {op}")]
    BadState { id: String, state: &'static str, op: &'static str },
    #[error("image {0:?} not found: pull it first")]
    ImageNotFound(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("container {id}: spec: {source}")]
    Spec { id: String, source: spec::SpecError },
    #[error("container {id}: {source}")]
    Exec { id: String, source: ExecError },
    #[error("container {id}: creating: {msg}")]
    Create { id: String, msg: String },
    #[error("container {id}: {path}: {source}")]
    Io { id: String, path: PathBuf, source: std::io::Error },
}

type Result<T, E = ContainerError> = std::result::Result<T, E>;

fn io_err(id: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let (id, path) = (id.to_string(), path.to_path_buf());
    move |source| ContainerError::Io { id, path, source }
}

/// Where containers live and how they run.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The berth binary (shims and the built-in executor's init re-execute it).
    pub exe: PathBuf,
    /// cgroupfs parent of container cgroups, e.g. `/berth`.
    pub cgroup_parent: String,
    /// Binaries of external runtime handlers.
    pub binaries: HashMap<String, PathBuf>,
    pub default_seccomp: SeccompDefault,
    /// Pids limit of every container's cgroup (kubelet's `podPidsLimit`); `None` for none.
    pub pids_limit: Option<i64>,
}

impl ManagerConfig {
    pub fn from_config(cfg: &crate::Config, exe: PathBuf) -> Self {
        Self {
            state_dir: cfg.root.join("containers"),
            run_dir: cfg.run_root.join("containers"),
            exe,
            cgroup_parent: cfg.cgroup_parent.clone(),
            binaries: cfg.runtimes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            default_seccomp: SeccompDefault::RuntimeDefault,
            pids_limit: None,
        }
    }
}

/// What is kept on disk of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    pub image_ref: String,
    pub image_id: String,
    pub handler: String,
    pub log_path: Option<PathBuf>,
    pub cgroups_path: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Created,
    Running,
    Exited,
    Unknown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
            State::Unknown => "unknown",
        }
    }
}

/// A container as the CRI reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub record: ContainerRecord,
    pub state: State,
    pub pid: i32,
    pub finished_at: i64,
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, or empty while running.
    pub reason: String,
    pub message: String,
}

/// Where a new container belongs.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Empty for a standalone container.
    pub sandbox_id: String,
    pub sandbox_config: PodSandboxConfig,
    /// The sandbox's namespaces; `None` gives a standalone container its own.
    pub namespaces: Option<SandboxNamespaces>,
    pub files: Option<crate::sandbox::SandboxFiles>,
    pub handler: String,
    pub log_path: Option<PathBuf>,
    /// The pod's cgroup; the manager's parent when `None`.
    pub cgroup_parent: Option<String>,
}

pub struct Manager {
    cfg: ManagerConfig,
    images: ImageService,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

fn parse_time_ns(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).ok().and_then(|t| t.timestamp_nanos_opt()).unwrap_or_default()
}

/// Whether /sys/fs/cgroup is the unified (v2) hierarchy.
pub fn cgroup_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup").is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

impl Manager {
    pub fn new(cfg: ManagerConfig, images: ImageService) -> Result<Self> {
        for d in [&cfg.state_dir, &cfg.run_dir] {
            fs::create_dir_all(d).map_err(io_err("", d))?;
        }
        Ok(Self { cfg, images })
    }

    fn executor_config(&self) -> ExecutorConfig {
        ExecutorConfig {
            root: self.cfg.run_dir.join("oci"),
            binaries: self.cfg.binaries.clone(),
            init: InitCommand { exe: self.cfg.exe.clone(), args: vec!["oci".into(), "init".into()], fork: false },
        }
    }

    fn executor(&self, id: &str, handler: &str) -> Result<Box<dyn Executor>> {
        oci::executor_by_name(handler, &self.executor_config()).map_err(|source| ContainerError::Exec { id: id.into(), source })
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join(id)
    }

    fn run_path(&self, id: &str) -> PathBuf {
        self.cfg.run_dir.join(id)
    }

    /// Resolves a full ID, a unique ID prefix, a full name, or a unique
    /// metadata name.
    pub fn resolve(&self, key: &str) -> Result<String> {
        let all = self.records()?;
        if let Some(r) = all.iter().find(|r| r.id == key || r.name == key) {
            return Ok(r.id.clone());
        }
        // Standalone containers are also known by their metadata name
        // (`berth container run --name N` then `inspect N`).
        let named: Vec<_> = all
            .iter()
            .filter(|r| r.sandbox_id.is_empty() && r.config.metadata.as_ref().is_some_and(|m| m.name == key))
            .collect();
        if let [one] = named.as_slice() {
            return Ok(one.id.clone());
        }
        let hits: Vec<_> = all.iter().filter(|r| key.len() >= 4 && r.id.starts_with(key)).collect();
        match hits.as_slice() {
            [one] => Ok(one.id.clone()),
            _ => Err(ContainerError::NotFound(key.into())),
        }
    }

    pub fn records(&self) -> Result<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.cfg.state_dir).map_err(io_err("", &self.cfg.state_dir))?;
        for e in rd.flatten() {
            if let Ok(b) = fs::read(e.path().join("container.json")) {
                if let Ok(r) = serde_json::from_slice::<ContainerRecord>(&b) {
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    fn record(&self, id: &str) -> Result<ContainerRecord> {
        let p = self.state_path(id).join("container.json");
        let b = fs::read(&p).map_err(|_| ContainerError::NotFound(id.into()))?;
        serde_json::from_slice(&b).map_err(|e| ContainerError::Io { id: id.into(), path: p, source: std::io::Error::other(e) })
    }

    fn save(&self, r: &ContainerRecord) -> Result<()> {
        let p = self.state_path(&r.id).join("container.json");
        let tmp = p.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(r).expect("record serializes")).map_err(io_err(&r.id, &tmp))?;
        fs::rename(&tmp, &p).map_err(io_err(&r.id, &p))
    }

    /// Creates a container (not started).
    pub async fn create(&self, config: &ContainerConfig, opts: CreateOptions) -> Result<String> {
        let sandbox_id = opts.sandbox_id.as_str();
        let meta = config.metadata.clone().unwrap_or_default();
        let id = hex::encode(rand::random::<[u8; 32]>());
        if meta.name.is_empty() {
            return Err(ContainerError::Invalid { id, field: "metadata.name", reason: "must not be empty".into() });
        }
        let name = format!("{}_{}_{}", meta.name, if sandbox_id.is_empty() { "standalone" } else { sandbox_id }, meta.attempt);
        if let Some(other) = self.records()?.into_iter().find(|r| r.name == name) {
            return Err(ContainerError::NameInUse { name, id: other.id });
        }
        let image_ref = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if image_ref.is_empty() {
            return Err(ContainerError::Invalid { id, field: "image.image", reason: "must name an image".into() });
        }
        let image = self.images.status(&image_ref)?.ok_or_else(|| ContainerError::ImageNotFound(image_ref.clone()))?;
        let image_config = self.images.config(&image)?;

        let state = self.state_path(&id);
        let run = self.run_path(&id);
        let handler = opts.handler.clone();
        let res = self.create_inner(&id, &name, config, &opts, (&image_ref, &image, &image_config)).await;
        if res.is_err() {
            let _ = self.executor(&id, &handler).and_then(|e| e.delete(&id, true).map_err(|source| ContainerError::Exec { id: id.clone(), source }));
            let _ = crate::image::snapshot::unmount(&run.join("rootfs"));
            let _ = fs::remove_dir_all(&run);
            let _ = fs::remove_dir_all(&state);
        }
        res.map(|()| id)
    }

    async fn create_inner(
        &self,
        id: &str,
        name: &str,
        config: &ContainerConfig,
        opts: &CreateOptions,
        (image_ref, image, image_config): (&str, &crate::image::ImageRecord, &oci_spec::image::ImageConfiguration),
    ) -> Result<()> {
        let (sandbox_id, sandbox_config, handler) = (opts.sandbox_id.as_str(), &opts.sandbox_config, opts.handler.as_str());
        let state = self.state_path(id);
        let run = self.run_path(id);
        let rootfs = run.join("rootfs");
        let bundle = run.join("bundle");
        for d in [state.join("upper"), state.join("work"), rootfs.clone(), bundle.clone()] {
            fs::create_dir_all(&d).map_err(io_err(id, &d))?;
        }
        let top = image.top_chain_id().ok_or_else(|| ContainerError::Invalid { id: id.into(), field: "image", reason: "image has no layers".into() })?;
        self.images
            .snapshots()
            .mount(top, Some((&state.join("upper"), &state.join("work"))), &rootfs)
            .map_err(io_err(id, &rootfs))?;

        let cgroups_path = spec::cgroups_path(opts.cgroup_parent.as_deref().unwrap_or(&self.cfg.cgroup_parent), id, false, "");
        let log_path = opts.log_path.clone().or_else(|| Some(state.join("container.log")));
        let min_oom = fs::read_to_string("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mut namespaces = opts.namespaces.clone().unwrap_or_default();
        if sandbox_id.is_empty() {
            namespaces.standalone = true;
        }
        let ctx = SpecContext {
            container_id: id.into(),
            sandbox_id: sandbox_id.into(),
            rootfs: rootfs.clone(),
            sandbox_namespaces: namespaces,
            // A standalone container has its own UTS namespace: without a
            // hostname it would keep the host's, so it gets its short ID.
            sandbox_hostname: if sandbox_id.is_empty() && sandbox_config.hostname.is_empty() {
                id[..12].to_string()
            } else {
                sandbox_config.hostname.clone()
            },
            cgroups_path: cgroups_path.clone(),
            bounding_set: spec::host_bounding_set().ok(),
            min_oom_score_adj: min_oom,
            cgroup_v2: cgroup_v2(),
            default_seccomp: self.cfg.default_seccomp,
            image_name: image_ref.into(),
            sandbox_shm: opts.files.as_ref().map(|f| f.shm.clone()),
            sandbox_hostname_file: opts.files.as_ref().map(|f| f.hostname.clone()),
            sandbox_hosts_file: opts.files.as_ref().map(|f| f.hosts.clone()),
            sandbox_resolv_conf: opts.files.as_ref().map(|f| f.resolv_conf.clone()),
            pids_limit: self.cfg.pids_limit,
            ..Default::default()
        };
        let built = spec::build(config, sandbox_config, image_config, &ctx, &spec::HostFs).map_err(|source| ContainerError::Spec { id: id.into(), source })?;
        for w in &built.warnings {
            tracing::warn!(container = %id, "{w}");
        }
        let mut oci_spec = built.spec;
        if let Some(root) = oci_spec.root_mut() {
            root.set_path(rootfs.clone());
        }
        let cfg_path = bundle.join("config.json");
        oci_spec.save(&cfg_path).map_err(|e| ContainerError::Io { id: id.into(), path: cfg_path.clone(), source: std::io::Error::other(e) })?;

        let record = ContainerRecord {
            id: id.into(),
            name: name.into(),
            sandbox_id: sandbox_id.into(),
            config: config.clone(),
            image_ref: image_ref.into(),
            image_id: image.id.clone(),
            handler: handler.into(),
            log_path: log_path.clone(),
            cgroups_path: cgroups_path.clone(),
            created_at: now_ns(),
            started_at: 0,
            warnings: built.warnings.iter().map(|w| w.0.clone()).collect(),
        };
        self.save(&record)?;
        if let Some(p) = &log_path {
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).map_err(io_err(id, parent))?;
            }
        }
        let memory_cgroups = if cgroup_v2() {
            vec![Path::new("/sys/fs/cgroup").join(cgroups_path.trim_start_matches('/'))]
        } else {
            vec![Path::new("/sys/fs/cgroup/memory").join(cgroups_path.trim_start_matches('/'))]
        };
        let shim_cfg = ShimConfig {
            id: id.into(),
            bundle,
            state_dir: run.clone(),
            log_path,
            memory_cgroups,
            handler: handler.into(),
            executor_root: self.executor_config().root,
            binaries: self.cfg.binaries.clone(),
            berth: self.cfg.exe.clone(),
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
        };
        let exe = self.cfg.exe.clone();
        let res = tokio::task::spawn_blocking(move || shim::spawn(&exe, &shim_cfg)).await.expect("shim spawn task");
        match res {
            Ok(Ok(_pid)) => Ok(()),
            Ok(Err(msg)) => Err(ContainerError::Create { id: id.into(), msg }),
            Err(e) => Err(ContainerError::Io { id: id.into(), path: self.cfg.exe.clone(), source: e }),
        }
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let mut r = self.record(id)?;
        let st = self.status(id)?;
        if st.state != State::Created {
            return Err(ContainerError::BadState { id: id.into(), state: st.state.as_str(), op: "start" });
        }
        self.executor(id, &r.handler)?.start(id).map_err(|source| ContainerError::Exec { id: id.into(), source })?;
        r.started_at = now_ns();
        self.save(&r)
    }

    pub fn status(&self, id: &str) -> Result<Status> {
        let record = self.record(id)?;
        let run = self.run_path(id);
        let mut st = Status { record, state: State::Unknown, pid: 0, finished_at: 0, exit_code: 0, reason: String::new(), message: String::new() };
        let exited = |st: &mut Status, rec: ExitRecord| {
            st.state = State::Exited;
            st.exit_code = rec.exit_code;
            st.finished_at = parse_time_ns(&rec.finished_at);
            st.reason = if rec.oom_killed {
                "OOMKilled"
            } else if rec.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into();
        };
        if let Some(rec) = shim::read_exit(&run) {
            exited(&mut st, rec);
            return Ok(st);
        }
        match self.executor(id, &st.record.handler)?.state(id) {
            Ok(s) => {
                st.pid = s.pid;
                st.state = match s.status {
                    oci::Status::Created | oci::Status::Creating => State::Created,
                    oci::Status::Running | oci::Status::Paused => State::Running,
                    oci::Status::Stopped => State::Exited,
                };
            }
            Err(e) => st.message = e.to_string(),
        }
        if st.state == State::Exited || st.state == State::Unknown {
            if st.state == State::Exited && shim_alive(&run) {
                // The shim has yet to drain the output and record the
                // exit: still running until then.
                st.state = State::Running;
                return Ok(st);
            }
            // The shim may have recorded the exit and gone since the first look.
            if let Some(rec) = shim::read_exit(&run) {
                exited(&mut st, rec);
                return Ok(st);
            }
            if st.state == State::Exited || !shim_alive(&run) {
                // The shim is gone without an exit record: it was killed.
                st.state = State::Exited;
                st.exit_code = 255;
                st.reason = "Error".into();
                st.message = "the container's shim exited without recording an exit status".into();
            }
        }
        Ok(st)
    }

    /// Waits for the container to exit, at most `timeout`; true if it did.
    pub async fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<bool> {
        let run = self.run_path(id);
        let fut = wait_shim(&run);
        match timeout {
            Some(t) => Ok(tokio::time::timeout(t, fut).await.is_ok()),
            None => {
                fut.await;
                Ok(true)
            }
        }
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout`.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let st = self.status(id)?;
        if st.state == State::Exited {
            return Ok(());
        }
        let exec = self.executor(id, &st.record.handler)?;
        let signal = self
            .images
            .status(&st.record.image_id)
            .ok()
            .flatten()
            .and_then(|img| self.images.config(&img).ok())
            .and_then(|c| c.config().as_ref().and_then(|c| c.stop_signal().clone()))
            .and_then(|s| parse_signal(&s))
            .unwrap_or(libc::SIGTERM);
        if !timeout.is_zero() && st.state == State::Running {
            let _ = exec.kill(id, signal, false);
            if self.wait(id, Some(timeout)).await? {
                return Ok(());
            }
        }
        let _ = exec.kill(id, libc::SIGKILL, true);
        self.wait(id, Some(Duration::from_secs(10))).await?;
        Ok(())
    }

    /// Removes a container, stopping it first; leaves no mounts, cgroups or files.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let r = self.record(id)?;
        self.stop(id, Duration::ZERO).await?;
        match self.executor(id, &r.handler)?.delete(id, true) {
            Ok(()) | Err(ExecError::NotFound(_)) => {}
            Err(source) => return Err(ContainerError::Exec { id: id.into(), source }),
        }
        let run = self.run_path(id);
        let rootfs = run.join("rootfs");
        if is_mountpoint(&rootfs) {
            crate::image::snapshot::unmount(&rootfs).map_err(io_err(id, &rootfs))?;
        }
        fs::remove_dir_all(&run).or_else(ignore_missing).map_err(io_err(id, &run))?;
        let state = self.state_path(id);
        fs::remove_dir_all(&state).or_else(ignore_missing).map_err(io_err(id, &state))?;
        Ok(())
    }
}

/// What a command run to completion printed, and how it ended.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

impl Manager {
    /// Runs `cmd` in a running container and waits for it (CRI ExecSync).
    pub async fn exec_sync(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(ContainerError::Invalid { id: id.into(), field: "cmd", reason: "must not be empty".into() });
        }
        let st = self.status(id)?;
        if st.state != State::Running {
            return Err(ContainerError::BadState { id: id.into(), state: st.state.as_str(), op: "exec" });
        }
        let out = tokio::process::Command::new(&self.cfg.exe)
            .arg("exec-sync")
            .arg("--executor-root")
            .arg(self.executor_config().root)
            .args(["--handler", &st.record.handler, "--id", id, "--timeout", &timeout.as_secs().to_string(), "--"])
            .args(cmd)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(io_err(id, &self.cfg.exe))?;
        let exit_code = out.status.code().unwrap_or(255);
        Ok(ExecOutput { stdout: out.stdout, stderr: out.stderr, exit_code, timed_out: !timeout.is_zero() && exit_code == exec::TIMEOUT_EXIT })
    }

    /// Checks that `id` names a running container and `cmd` is not empty
    /// (CRI `Exec` before it hands out a streaming URL).
    pub fn check_exec(&self, id: &str, cmd: &[String]) -> Result<()> {
        if cmd.is_empty() {
            return Err(ContainerError::Invalid { id: id.into(), field: "cmd", reason: "must not be empty".into() });
        }
        let st = self.status(id)?;
        if st.state != State::Running {
            return Err(ContainerError::BadState { id: id.into(), state: st.state.as_str(), op: "exec" });
        }
        Ok(())
    }

    /// The `berth exec-sync` command that runs `cmd` in a running container
    /// with no timeout (streaming `Exec`): its stdio is the caller's to set.
    /// With `console_socket`, the process runs on a terminal whose master is
    /// sent to that socket.
    pub fn exec_command(&self, id: &str, cmd: &[String], console_socket: Option<&Path>) -> Result<tokio::process::Command> {
        self.check_exec(id, cmd)?;
        let st = self.status(id)?;
        let mut c = tokio::process::Command::new(&self.cfg.exe);
        c.arg("exec-sync").arg("--executor-root").arg(self.executor_config().root);
        if let Some(p) = console_socket {
            c.arg("--console-socket").arg(p);
        }
        c.args(["--handler", &st.record.handler, "--id", id, "--timeout", "0", "--"]).args(cmd).kill_on_drop(true);
        Ok(c)
    }

    /// The attach socket of a running container's shim (CRI `Attach`), and
    /// whether the container has a terminal.
    pub fn attach_socket(&self, id: &str) -> Result<(PathBuf, bool)> {
        let st = self.status(id)?;
        if st.state != State::Running {
            return Err(ContainerError::BadState { id: id.into(), state: st.state.as_str(), op: "attach" });
        }
        let sock = self.run_path(id).join(shim::ATTACH_SOCKET);
        if !sock.exists() {
            return Err(ContainerError::BadState { id: id.into(), state: "running without an attach socket (started by an older shim)", op: "attach" });
        }
        Ok((sock, st.record.config.tty))
    }

    /// Asks the container's shim to reopen its log file (after rotation).
    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let st = self.status(id)?;
        if st.state != State::Running {
            return Err(ContainerError::BadState { id: id.into(), state: st.state.as_str(), op: "reopen its log" });
        }
        let run = self.run_path(id);
        let pid = shim_pid(&run).ok_or_else(|| ContainerError::BadState { id: id.into(), state: "without a shim", op: "reopen its log" })?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGUSR1)
            .map_err(|e| ContainerError::Io { id: id.into(), path: run.join(shim::PID_FILE), source: e.into() })
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(&want))
}

fn shim_pid(run: &Path) -> Option<i32> {
    fs::read_to_string(run.join(shim::PID_FILE)).ok()?.trim().parse().ok()
}

/// Whether the shim runs (a zombie does not: PID 1 may never reap it).
fn shim_alive(run: &Path) -> bool {
    shim_pid(run).is_some_and(|pid| crate::linux::process::pid_alive(pid, None))
}

/// Resolves when the shim exits (it writes the exit record first), through
/// a pidfd: no polling.
async fn wait_shim(run: &Path) {
    let Some(pid) = shim_pid(run) else { return };
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd was just returned by pidfd_open and is owned here.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the only copy of the pidfd.
    if let Ok(afd) = unsafe { tokio::io::unix::AsyncFd::register(fd) } {
        let _ = afd.readable().await;
    }
}

/// `SIGTERM`, `TERM`, `15` → signal number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    name.parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}
