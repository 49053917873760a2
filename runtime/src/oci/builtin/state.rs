//! The saved container state (`state.json`) and status derivation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::linux::{process, Context, SysResult};
use crate::oci::{State, Status, OCI_VERSION};

pub const FIFO: &str = "exec.fifo";
const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    pub bundle: PathBuf,
    pub pid: i32,
    /// Start time of `pid` (guards against pid reuse).
    pub pid_start: Option<u64>,
    pub cgroup_path: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Device and inode of the init's executable while it waits on
    /// exec.fifo: once they differ, it has exec'd the container process.
    #[serde(default)]
    pub init_exe: Option<(u64, u64)>,
}

impl Saved {
    pub fn new(id: &str, bundle: &Path, pid: i32, cgroup_path: &Path, annotations: HashMap<String, String>) -> Self {
        Saved {
            id: id.into(),
            bundle: bundle.into(),
            pid,
            pid_start: process::proc_stat(pid).map(|(s, _)| s),
            cgroup_path: cgroup_path.into(),
            created: chrono::Utc::now().to_rfc3339(),
            annotations,
            init_exe: exe_id(pid),
        }
    }

    /// Loads `dir/state.json`; `None` if the container does not exist.
    pub fn load(dir: &Path) -> SysResult<Option<Saved>> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| crate::linux::SysError::msg(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::linux::SysError::new(format!("read {}", path.display()), e)),
        }
    }

    /// Atomically writes `dir/state.json`.
    pub fn save(&self, dir: &Path) -> SysResult<()> {
        let tmp = dir.join("state.json.tmp");
        let data = serde_json::to_vec(self).map_err(|e| crate::linux::SysError::msg(e.to_string()))?;
        std::fs::write(&tmp, data).ctx(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE)).ctx(|| "save state")
    }

    pub fn alive(&self) -> bool {
        self.pid > 0 && process::pid_alive(self.pid, self.pid_start)
    }

    /// created while the init waits on exec.fifo, running after start,
    /// stopped once the init is gone.
    pub fn status(&self, dir: &Path) -> Status {
        if !self.alive() {
            Status::Stopped
        } else if dir.join(FIFO).exists() && !self.init_exec_done() {
            // The fifo alone is not enough: `start` removes it after the
            // init's write, and a `start` killed in between would leave a
            // running container looking created forever.
            Status::Created
        } else {
            Status::Running
        }
    }

    pub fn to_state(&self, dir: &Path) -> State {
        let status = self.status(dir);
        State {
            oci_version: OCI_VERSION.into(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped { 0 } else { self.pid },
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Device and inode of a process's executable.
fn exe_id(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe")).ok().map(|m| (m.dev(), m.ino()))
}

impl Saved {
    /// Whether the container init has exec'd the container process: its
    /// executable is no longer the runtime's (states saved before
    /// `init_exe` existed: its command line is no longer `... oci init`).
    fn init_exec_done(&self) -> bool {
        if let Some(id) = self.init_exe {
            return exe_id(self.pid).is_some_and(|now| now != id);
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else { return false };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        !(args.len() >= 3 && args[1] == b"oci" && args[2] == b"init")
    }
}
