//! Live resource updates of a pod's cgroup (CRI UpdatePodSandboxResources).

use super::{Manager, Result, SandboxError};
use crate::container::stats::{apply, to_oci};
use crate::linux::cgroups;
use cri_proto::v1::LinuxContainerResources;

impl Manager {
    /// Applies the pod's resources (its containers' sum plus overhead, as
    /// the kubelet computes them) to the pod cgroup and records them with
    /// the overhead in the sandbox config.
    pub fn update_resources(&self, id: &str, overhead: Option<&LinuxContainerResources>, resources: Option<&LinuxContainerResources>) -> Result<()> {
        let mut r = self.record(id)?;
        let invalid = |e: crate::container::ContainerError| SandboxError::Invalid { field: "resources", reason: e.to_string() };
        if let Some(o) = overhead {
            to_oci(id, o, cgroups::is_unified()).map_err(invalid)?;
        }
        if let Some(res) = resources {
            let oci = to_oci(id, res, cgroups::is_unified()).map_err(invalid)?;
            apply(&r.cgroup_path, &oci).map_err(|source| SandboxError::Cgroup { id: id.into(), source })?;
        }
        let linux = r.config.linux.get_or_insert_with(Default::default);
        if let Some(o) = overhead {
            linux.overhead = Some(o.clone());
        }
        if let Some(res) = resources {
            linux.resources = Some(res.clone());
        }
        self.save(&r)
    }
}
