//! CRI container RPCs other than creation: start, stop, remove, status,
//! list, log reopening.

use super::error;
use crate::container::{ContainerError, Manager, State, Status as CStatus};
use cri_proto::v1 as cri;
use std::time::Duration;
use tonic::Status;

pub fn cri_state(s: State) -> cri::ContainerState {
    match s {
        State::Created => cri::ContainerState::ContainerCreated,
        State::Running => cri::ContainerState::ContainerRunning,
        State::Exited => cri::ContainerState::ContainerExited,
        State::Unknown => cri::ContainerState::ContainerUnknown,
    }
}

pub fn to_container(s: &CStatus) -> cri::Container {
    let c = &s.record.config;
    cri::Container {
        id: s.record.id.clone(),
        pod_sandbox_id: s.record.sandbox_id.clone(),
        metadata: c.metadata.clone(),
        image: c.image.clone(),
        image_ref: s.record.image_id.clone(),
        state: cri_state(s.state) as i32,
        created_at: s.record.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        image_id: s.record.image_id.clone(),
    }
}

pub fn to_status(s: &CStatus) -> cri::ContainerStatus {
    let c = &s.record.config;
    cri::ContainerStatus {
        id: s.record.id.clone(),
        metadata: c.metadata.clone(),
        state: cri_state(s.state) as i32,
        created_at: s.record.created_at,
        started_at: s.record.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        image: c.image.clone(),
        image_ref: s.record.image_id.clone(),
        reason: s.reason.clone(),
        message: s.message.clone(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        mounts: c.mounts.clone(),
        log_path: s.record.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        resources: c.linux.as_ref().and_then(|l| l.resources.clone()).map(|r| cri::ContainerResources { linux: Some(r), ..Default::default() }),
        image_id: s.record.image_id.clone(),
        ..Default::default()
    }
}

fn matches(f: &cri::ContainerFilter, s: &CStatus) -> bool {
    (f.id.is_empty() || s.record.id == f.id || s.record.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || s.record.sandbox_id.starts_with(&f.pod_sandbox_id))
        && f.state.as_ref().is_none_or(|st| st.state == cri_state(s.state) as i32)
        && f.label_selector.iter().all(|(k, v)| s.record.config.labels.get(k) == Some(v))
}

pub fn list(m: &Manager, filter: Option<&cri::ContainerFilter>) -> Result<Vec<cri::Container>, Status> {
    let mut out = Vec::new();
    for r in m.records().map_err(error::container)? {
        let Ok(st) = m.status(&r.id) else { continue };
        if filter.is_none_or(|f| matches(f, &st)) {
            out.push(to_container(&st));
        }
    }
    Ok(out)
}

fn id(s: &str) -> Result<&str, Status> {
    if s.is_empty() {
        Err(error::missing("container_id"))
    } else {
        Ok(s)
    }
}

pub fn status(m: &Manager, container_id: &str, verbose: bool) -> Result<cri::ContainerStatusResponse, Status> {
    let id = m.resolve(id(container_id)?).map_err(error::container)?;
    let st = m.status(&id).map_err(error::container)?;
    let mut info = std::collections::HashMap::new();
    if verbose {
        info.insert("info".to_string(), serde_json::json!({ "pid": st.pid, "record": st.record }).to_string());
    }
    Ok(cri::ContainerStatusResponse { status: Some(to_status(&st)), info })
}

pub fn start(m: &Manager, container_id: &str) -> Result<(), Status> {
    let id = m.resolve(id(container_id)?).map_err(error::container)?;
    m.start(&id).map_err(error::container)
}

/// Stopping an unknown container succeeds: kubelet retries stops.
pub async fn stop(m: &Manager, container_id: &str, timeout_secs: i64) -> Result<(), Status> {
    let id = match m.resolve(id(container_id)?) {
        Ok(id) => id,
        Err(ContainerError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(error::container(e)),
    };
    m.stop(&id, Duration::from_secs(timeout_secs.max(0) as u64)).await.map_err(error::container)
}

/// Removing an unknown container succeeds, as with stop.
pub async fn remove(m: &Manager, container_id: &str) -> Result<(), Status> {
    let id = match m.resolve(id(container_id)?) {
        Ok(id) => id,
        Err(ContainerError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(error::container(e)),
    };
    m.remove(&id).await.map_err(error::container)
}

pub fn reopen_log(m: &Manager, container_id: &str) -> Result<(), Status> {
    let id = m.resolve(id(container_id)?).map_err(error::container)?;
    m.reopen_log(&id).map_err(error::container)
}
