//! The engine's side of probes and lifecycle hooks.

use super::Shared;
use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// A probe result change for the pod worker.
#[derive(Debug)]
pub struct ProbeResult {
    pub container: String,
    pub container_id: String,
    pub kind: ProbeKind,
    pub success: bool,
    /// The result after thresholds: `Some(false)` once failureThreshold
    /// failures in a row were seen, `Some(true)` after successThreshold
    /// successes.
    pub state: Option<bool>,
    pub message: String,
    /// The probe's own terminationGracePeriodSeconds.
    pub grace: Option<i64>,
}

/// Where probes and hooks reach the container.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: String,
    pub pod_ip: Option<String>,
    pub ports: Vec<(String, i32)>,
}

impl Target {
    pub fn new(_pod: &Pod, c: &Container, container_id: &str, pod_ip: Option<String>, _sandbox: Option<&cri::PodSandboxStatus>) -> Target {
        let ports = c.ports.iter().flatten().filter_map(|p| p.name.clone().map(|n| (n, p.container_port))).collect();
        Target { container_id: container_id.to_string(), pod_ip, ports }
    }
}

/// A running probe worker; dropping it stops the probe.
pub struct Handle(tokio::task::JoinHandle<()>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exec(shared: &Shared, id: &str, cmd: Vec<String>, timeout: Duration) -> Result<(i32, String), String> {
    let mut rt = shared.cri.runtime.clone();
    let r = rt
        .exec_sync(cri::ExecSyncRequest { container_id: id.to_string(), cmd, timeout: timeout.as_secs().max(1) as i64 })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    Ok((r.exit_code, out))
}

/// Runs a lifecycle hook to completion or the deadline.
pub async fn run_hook(shared: &Shared, h: &LifecycleHandler, t: &Target, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some(e) = &h.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match tokio::time::timeout(left, exec(shared, &t.container_id, cmd.clone(), left)).await {
            Err(_) => Err(format!("Exec lifecycle hook ({cmd:?}) for Container \"{}\" timed out", t.container_id)),
            Ok(Err(e)) => Err(format!("Exec lifecycle hook ({cmd:?}) failed: {e}")),
            Ok(Ok((0, _))) => Ok(()),
            Ok(Ok((code, out))) => Err(format!("Exec lifecycle hook ({cmd:?}) failed - error: command '{}' exited with {code}: {out}", cmd.join(" "))),
        };
    }
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(left)).await;
        return Ok(());
    }
    Err("unsupported lifecycle handler".into())
}

/// Starts a probe worker.
pub fn spawn(shared: Arc<Shared>, kind: ProbeKind, name: &str, p: Probe, t: Target, tx: mpsc::UnboundedSender<ProbeResult>) -> Handle {
    let name = name.to_string();
    Handle(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)).await;
        let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        let (succ_th, fail_th) = (p.success_threshold.unwrap_or(1).max(1), p.failure_threshold.unwrap_or(3).max(1));
        let (mut succ, mut fail) = (0, 0);
        let mut last: Option<bool> = None;
        loop {
            let (ok, msg) = match &p.exec {
                Some(e) => match exec(&shared, &t.container_id, e.command.clone().unwrap_or_default(), timeout).await {
                    Ok((0, _)) => (true, String::new()),
                    Ok((_, out)) => (false, out),
                    Err(e) => (false, e),
                },
                None => (false, "unsupported probe handler".into()),
            };
            if ok {
                succ += 1;
                fail = 0;
            } else {
                fail += 1;
                succ = 0;
            }
            let state = if succ >= succ_th { Some(true) } else if fail >= fail_th { Some(false) } else { last };
            if !ok || state != last {
                let _ = tx.send(ProbeResult {
                    container: name.clone(),
                    container_id: t.container_id.clone(),
                    kind,
                    success: ok,
                    state,
                    message: msg,
                    grace: p.termination_grace_period_seconds,
                });
            }
            last = state;
            if kind == ProbeKind::Startup && state == Some(true) {
                return;
            }
            tokio::time::sleep(period).await;
        }
    }))
}
