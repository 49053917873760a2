//! The engine's side of probes and lifecycle hooks: targets built from the
//! pod and its sandbox, and command execution over CRI `ExecSync`.

use super::Shared;
use crate::probe::{self, ExecOutput, ExecRunner, ExecTimedOut};
use cri_proto::v1 as cri;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

pub use crate::probe::{ProbeEvent, ProbeKind, ProbeResult, ProbeWorker as Handle, Target};

/// Runs commands in containers through the CRI.
pub struct CriExec(pub super::cri::Cri);

impl ExecRunner for CriExec {
    fn exec_sync(&self, container_id: &str, cmd: Vec<String>, timeout: Duration) -> BoxFuture<'_, anyhow::Result<ExecOutput>> {
        let mut rt = self.0.runtime.clone();
        let req = cri::ExecSyncRequest { container_id: container_id.to_string(), cmd, timeout: timeout.as_secs_f64().ceil() as i64 };
        Box::pin(async move {
            match rt.exec_sync(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    Ok(ExecOutput { exit_code: r.exit_code, stdout: r.stdout, stderr: r.stderr })
                }
                Err(e) if e.code() == tonic::Code::DeadlineExceeded => Err(anyhow::Error::new(ExecTimedOut)),
                Err(e) => Err(anyhow::anyhow!("{}", e.message())),
            }
        })
    }
}

/// Where a container's probes and hooks go.
pub fn target(pod: &Pod, c: &Container, container_id: &str, pod_ip: Option<&str>, netns: Option<PathBuf>) -> Target {
    Target {
        pod_ip: pod_ip.and_then(|ip| ip.parse().ok()),
        netns,
        container_id: container_id.to_string(),
        ports: Target::named_ports(c),
        host_network: super::spec::host_network(pod),
    }
}

/// Runs a lifecycle hook to completion or the deadline; the error is the
/// event message kubelet would record.
pub async fn run_hook(shared: &Shared, h: &LifecycleHandler, t: &Target, c: &Container, pod: &Pod, deadline: Instant) -> Result<(), String> {
    let exec = CriExec(shared.cri.clone());
    let deadline = tokio::time::Instant::from_std(deadline);
    probe::run_hook(h, t, &exec, deadline).await.map_err(|e| e.event_message(&c.name, super::spec::pod_name(pod)))
}

/// Starts a probe worker for a container that started at `started_at`.
pub fn spawn(shared: &Shared, kind: ProbeKind, p: Probe, t: Target, started_at: SystemTime, tx: mpsc::Sender<ProbeEvent>) -> Handle {
    let exec: Arc<dyn ExecRunner> = Arc::new(CriExec(shared.cri.clone()));
    probe::spawn_worker(kind, p, Arc::new(t), exec, tx, started_at)
}

/// The network namespace of a sandbox, from its verbose status (`pid` of
/// the pause process, as Berth and containerd report it).
pub async fn sandbox_netns(shared: &Shared, sandbox_id: &str) -> Option<PathBuf> {
    let mut rt = shared.cri.runtime.clone();
    let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sandbox_id.to_string(), verbose: true }).await.ok()?.into_inner();
    let info: serde_json::Value = serde_json::from_str(st.info.get("info")?).ok()?;
    if let Some(p) = info.pointer("/record/netns").and_then(|v| v.as_str()).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let pid = info.get("pid")?.as_u64().filter(|p| *p > 0)?;
    Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
}
