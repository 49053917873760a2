//! Pod volumes and the container mounts that use them.

use super::spec;
use super::Shared;
use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::path::PathBuf;

/// The pod's directory under the engine's state root.
pub fn pod_dir(shared: &Shared, pod: &Pod) -> PathBuf {
    shared.cfg.pods_root.join(spec::pod_uid(pod))
}

/// Sets up the volumes a container mounts and returns its CRI mounts.
pub fn mounts(shared: &Shared, pod: &Pod, c: &Container) -> anyhow::Result<Vec<cri::Mount>> {
    let volumes = spec::spec(pod).volumes.clone().unwrap_or_default();
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| anyhow::anyhow!("volumeMount {}: no volume named {} in the pod", m.mount_path, m.name))?;
        let host_path = if v.empty_dir.is_some() {
            let dir = pod_dir(shared, pod).join("volumes/kubernetes.io~empty-dir").join(&v.name);
            std::fs::create_dir_all(&dir)?;
            dir
        } else if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else {
            anyhow::bail!("volume {}: this volume type is not supported", v.name);
        };
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if std::path::Path::new(sub).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                    anyhow::bail!("volumeMount {}: subPath {sub:?} must be a relative path without '..'", m.mount_path);
                }
                let p = host_path.join(sub);
                std::fs::create_dir_all(&p)?;
                p
            }
            None => host_path,
        };
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            _ => cri::MountPropagation::PropagationPrivate,
        };
        out.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: m.read_only == Some(true),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

/// Removes what the pod's volumes left on the node.
pub fn cleanup(shared: &Shared, pod: &Pod) {
    let dir = pod_dir(shared, pod);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "removing pod directory: {e}");
        }
    }
}
