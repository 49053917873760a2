//! CRI pod sandbox RPCs, and container creation inside a sandbox.

use super::error;
use crate::container::{CreateOptions, Manager as Containers, State as CState};
use crate::sandbox::{self, Manager as Sandboxes, SandboxError, SandboxState};
use cri_proto::v1 as cri;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Runs a blocking sandbox call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(e.to_string()))?.map_err(error::sandbox)
}

fn id(s: &str) -> Result<&str, Status> {
    if s.is_empty() {
        Err(error::missing("pod_sandbox_id"))
    } else {
        Ok(s)
    }
}

pub async fn run(sb: &Arc<Sandboxes>, config: Option<cri::PodSandboxConfig>, handler: String) -> Result<String, Status> {
    let config = config.ok_or_else(|| error::missing("config"))?;
    let sb = sb.clone();
    blocking(move || sb.run(&config, &handler)).await
}

/// Containers of a sandbox.
fn members(c: &Containers, sandbox_id: &str) -> Result<Vec<String>, Status> {
    Ok(c.records().map_err(error::container)?.into_iter().filter(|r| r.sandbox_id == sandbox_id).map(|r| r.id).collect())
}

/// Stops the sandbox's containers, then its pause process. Unknown IDs succeed.
pub async fn stop(sb: &Arc<Sandboxes>, c: &Containers, key: &str) -> Result<(), Status> {
    let Some(sid) = resolve(sb, id(key)?)? else { return Ok(()) };
    for cid in members(c, &sid)? {
        c.stop(&cid, Duration::ZERO).await.map_err(error::container)?;
    }
    let sb = sb.clone();
    blocking(move || sb.stop(&sid)).await
}

/// Removes the sandbox's containers, then the sandbox. Unknown IDs succeed.
pub async fn remove(sb: &Arc<Sandboxes>, c: &Containers, key: &str) -> Result<(), Status> {
    let Some(sid) = resolve(sb, id(key)?)? else { return Ok(()) };
    for cid in members(c, &sid)? {
        c.remove(&cid).await.map_err(error::container)?;
    }
    let sb = sb.clone();
    blocking(move || sb.remove(&sid)).await
}

fn resolve(sb: &Sandboxes, key: &str) -> Result<Option<String>, Status> {
    match sb.resolve(key) {
        Ok(id) => Ok(Some(id)),
        Err(SandboxError::NotFound(_)) => Ok(None),
        Err(e) => Err(error::sandbox(e)),
    }
}

pub fn status(sb: &Sandboxes, key: &str, verbose: bool) -> Result<cri::PodSandboxStatusResponse, Status> {
    let sid = sb.resolve(id(key)?).map_err(error::sandbox)?;
    let st = sb.status(&sid).map_err(error::sandbox)?;
    let r = &st.record;
    let ips = r.network.as_ref().map(|n| n.ips.clone()).unwrap_or_default();
    let network = cri::PodSandboxNetworkStatus {
        ip: ips.first().cloned().unwrap_or_default(),
        additional_ips: ips.iter().skip(1).map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
    };
    let status = cri::PodSandboxStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: st.state.to_cri() as i32,
        created_at: r.created_at,
        network: Some(network),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace { options: Some(sandbox::namespace_options(&r.config)) }),
        }),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        runtime_handler: r.handler.clone(),
    };
    let mut info = std::collections::HashMap::new();
    if verbose {
        // The CNI results, and a CNI CHECK of a ready sandbox's networks.
        let cni: Vec<_> = sb.network_results(&sid).into_iter().map(|(a, res)| serde_json::json!({ "network": a.network, "ifname": a.ifname, "result": res })).collect();
        let check = match (&r.network, st.state) {
            (Some(_), SandboxState::Ready) => Some(sb.check_network(&sid).map_or_else(|e| e.to_string(), |()| "ok".into())),
            _ => None,
        };
        info.insert("info".to_string(), serde_json::json!({ "pid": r.pid, "record": r, "cniResults": cni, "networkCheck": check }).to_string());
    }
    Ok(cri::PodSandboxStatusResponse { status: Some(status), info, ..Default::default() })
}

pub fn list(sb: &Sandboxes, filter: Option<&cri::PodSandboxFilter>) -> Result<Vec<cri::PodSandbox>, Status> {
    let mut out = Vec::new();
    for st in sb.list().map_err(error::sandbox)? {
        let r = &st.record;
        if let Some(f) = filter {
            let state_ok = f.state.as_ref().is_none_or(|s| s.state == st.state.to_cri() as i32);
            let labels_ok = f.label_selector.iter().all(|(k, v)| r.config.labels.get(k) == Some(v));
            if !(f.id.is_empty() || r.id.starts_with(&f.id)) || !state_ok || !labels_ok {
                continue;
            }
        }
        out.push(cri::PodSandbox {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            state: st.state.to_cri() as i32,
            created_at: r.created_at,
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
            runtime_handler: r.handler.clone(),
        });
    }
    Ok(out)
}

/// CreateContainer: the container joins its sandbox's namespaces, files and
/// cgroup; its log goes to the sandbox's log directory.
pub async fn create_container(sb: &Sandboxes, c: &Containers, req: cri::CreateContainerRequest) -> Result<String, Status> {
    let sid = sb.resolve(id(&req.pod_sandbox_id)?).map_err(error::sandbox)?;
    let st = sb.status(&sid).map_err(error::sandbox)?;
    if st.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!("pod sandbox {sid} is not ready")));
    }
    let config = req.config.ok_or_else(|| error::missing("config"))?;
    let sandbox_config = req.sandbox_config.unwrap_or_else(|| st.record.config.clone());
    let log_dir = &sandbox_config.log_directory;
    let log_path = (!log_dir.is_empty() && !config.log_path.is_empty()).then(|| std::path::Path::new(log_dir).join(&config.log_path));
    let opts = CreateOptions {
        sandbox_id: sid.clone(),
        namespaces: Some(sb.namespaces(&sid).map_err(error::sandbox)?),
        files: Some(sb.files(&sid).map_err(error::sandbox)?),
        handler: st.record.handler.clone(),
        log_path,
        cgroup_parent: Some(st.record.cgroup_path.clone()),
        sandbox_config,
    };
    c.create(&config, opts).await.map_err(error::container)
}

/// Whether a container may start: its sandbox must be ready.
pub fn check_startable(sb: &Sandboxes, c: &Containers, container_id: &str) -> Result<(), Status> {
    if container_id.is_empty() {
        return Err(error::missing("container_id"));
    }
    let cid = c.resolve(container_id).map_err(error::container)?;
    let st = c.status(&cid).map_err(error::container)?;
    if st.record.sandbox_id.is_empty() || st.state != CState::Created {
        return Ok(());
    }
    match sb.status(&st.record.sandbox_id) {
        Ok(s) if s.state == SandboxState::Ready => Ok(()),
        _ => Err(Status::failed_precondition(format!("pod sandbox {} of container {cid} is not ready", st.record.sandbox_id))),
    }
}
