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
        } else if dir.join(FIFO).exists() && !init_exec_done(self.pid) {
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

/// Whether the container init has exec'd the container process: until then
/// its command line is the runtime's `... oci init`.
fn init_exec_done(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    !(args.len() >= 3 && args[1] == b"oci" && args[2] == b"init")
}
