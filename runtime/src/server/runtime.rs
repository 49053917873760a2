//! The CRI RuntimeService.

use super::events::{self, Events};
use super::{container, sandbox, stats};
use crate::container::Manager as Containers;
use cri_proto::v1 as cri;
use cri_proto::v1::runtime_service_server::RuntimeService;
use std::sync::Arc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

pub const RUNTIME_NAME: &str = "berth";
pub const CRI_API_VERSION: &str = "v1";

pub struct RuntimeServer {
    pub containers: Arc<Containers>,
    pub sandboxes: Arc<crate::sandbox::Manager>,
    pub events: Arc<Events>,
    pub streaming: Arc<super::streaming::Streaming>,
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    cri::RuntimeCondition { r#type: kind.into(), status, reason: reason.into(), message: message.into() }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeServer {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        let verbose = req.into_inner().verbose;
        let sb = self.sandboxes.clone();
        let network = tokio::task::spawn_blocking(move || sb.network_status()).await.map_err(|e| Status::internal(e.to_string()))?;
        let conditions = vec![
            condition("RuntimeReady", true, "", ""),
            match &network {
                Ok(()) => condition("NetworkReady", true, "", ""),
                Err(e) => condition("NetworkReady", false, "NetworkPluginNotReady", &format!("Network plugin returns error: {e}")),
            },
        ];
        let mut info = std::collections::HashMap::new();
        if verbose {
            let cni = self.sandboxes.network().map(|n| {
                let o = n.options();
                serde_json::json!({ "confDir": o.conf_dir, "pluginDirs": o.plugin_dirs, "bridge": o.bridge, "podCIDR": n.pod_cidr() })
            });
            info.insert("config".to_string(), serde_json::json!({ "runtimeName": RUNTIME_NAME, "cgroupDriver": "cgroupfs", "cni": cni }).to_string());
        }
        let handlers = ["builtin", "runc", "crun"]
            .iter()
            .map(|h| cri::RuntimeHandler {
                name: if *h == "builtin" { String::new() } else { h.to_string() },
                features: Some(cri::RuntimeHandlerFeatures { recursive_read_only_mounts: false, user_namespaces: false }),
            })
            .collect();
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: handlers,
            features: Some(cri::RuntimeFeatures { supplemental_groups_policy: false, ..Default::default() }),
        }))
    }

    async fn runtime_config(&self, _req: Request<cri::RuntimeConfigRequest>) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration { cgroup_driver: cri::CgroupDriver::Cgroupfs as i32 }),
        }))
    }

    async fn update_runtime_config(&self, req: Request<cri::UpdateRuntimeConfigRequest>) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req.into_inner().runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
        if let Some(net) = self.sandboxes.network() {
            net.set_pod_cidr(&cidr).map_err(|e| Status::invalid_argument(format!("runtime_config.network_config.pod_cidr: {e}")))?;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(&self, req: Request<cri::RunPodSandboxRequest>) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let pod_sandbox_id = events::run_pod_sandbox(&self.events, req.config, req.runtime_handler).await?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(&self, req: Request<cri::StopPodSandboxRequest>) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        events::stop_pod_sandbox(&self.events, &req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(&self, req: Request<cri::RemovePodSandboxRequest>) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        events::remove_pod_sandbox(&self.events, &req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(&self, req: Request<cri::PodSandboxStatusRequest>) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        // Verbose status runs CNI CHECK: off the async workers.
        let sb = self.sandboxes.clone();
        let res = tokio::task::spawn_blocking(move || sandbox::status(&sb, &req.pod_sandbox_id, req.verbose)).await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(res?))
    }

    async fn list_pod_sandbox(&self, req: Request<cri::ListPodSandboxRequest>) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = sandbox::list(&self.sandboxes, req.into_inner().filter.as_ref())?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn stream_pod_sandboxes(&self, req: Request<cri::StreamPodSandboxesRequest>) -> Result<Response<BoxStream<cri::StreamPodSandboxesResponse>>, Status> {
        Ok(Response::new(events::stream_pod_sandboxes(&self.sandboxes, req.into_inner().filter.as_ref())?))
    }

    async fn create_container(&self, req: Request<cri::CreateContainerRequest>) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let container_id = events::create_container(&self.events, req.into_inner()).await?;
        Ok(Response::new(cri::CreateContainerResponse { container_id }))
    }

    async fn start_container(&self, req: Request<cri::StartContainerRequest>) -> Result<Response<cri::StartContainerResponse>, Status> {
        events::start_container(&self.events, &req.into_inner().container_id)?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(&self, req: Request<cri::StopContainerRequest>) -> Result<Response<cri::StopContainerResponse>, Status> {
        let req = req.into_inner();
        events::stop_container(&self.events, &req.container_id, req.timeout).await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(&self, req: Request<cri::RemoveContainerRequest>) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        events::remove_container(&self.events, &req.into_inner().container_id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(&self, req: Request<cri::ListContainersRequest>) -> Result<Response<cri::ListContainersResponse>, Status> {
        let containers = container::list(&self.containers, req.into_inner().filter.as_ref())?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn stream_containers(&self, req: Request<cri::StreamContainersRequest>) -> Result<Response<BoxStream<cri::StreamContainersResponse>>, Status> {
        Ok(Response::new(events::stream_containers(&self.containers, req.into_inner().filter.as_ref())?))
    }

    async fn container_status(&self, req: Request<cri::ContainerStatusRequest>) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(container::status(&self.containers, &req.container_id, req.verbose)?))
    }

    async fn reopen_container_log(&self, req: Request<cri::ReopenContainerLogRequest>) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        container::reopen_log(&self.containers, &req.into_inner().container_id)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let req = req.into_inner();
        if req.container_id.is_empty() {
            return Err(super::error::missing("container_id"));
        }
        if req.cmd.is_empty() {
            return Err(super::error::missing("cmd"));
        }
        let id = self.containers.resolve(&req.container_id).map_err(super::error::container)?;
        let timeout = std::time::Duration::from_secs(req.timeout.max(0) as u64);
        let out = self.containers.exec_sync(&id, &req.cmd, timeout).await.map_err(super::error::container)?;
        if out.timed_out {
            return Err(Status::deadline_exceeded(format!("command {:?} timed out after {}s", req.cmd, req.timeout)));
        }
        Ok(Response::new(cri::ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
        Ok(Response::new(self.streaming.exec(req.into_inner())?))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> Result<Response<cri::AttachResponse>, Status> {
        Ok(Response::new(self.streaming.attach(req.into_inner())?))
    }

    async fn port_forward(&self, req: Request<cri::PortForwardRequest>) -> Result<Response<cri::PortForwardResponse>, Status> {
        Ok(Response::new(self.streaming.port_forward(&self.sandboxes, req.into_inner())?))
    }

    async fn get_container_events(&self, _req: Request<cri::GetEventsRequest>) -> Result<Response<BoxStream<cri::ContainerEventResponse>>, Status> {
        Ok(Response::new(self.events.subscribe()))
    }

    async fn checkpoint_container(&self, _req: Request<cri::CheckpointContainerRequest>) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented("CheckpointContainer is not supported by berth"))
    }

    async fn update_container_resources(&self, req: Request<cri::UpdateContainerResourcesRequest>) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        stats::update_container_resources(self.containers.clone(), req.into_inner()).await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn update_pod_sandbox_resources(&self, req: Request<cri::UpdatePodSandboxResourcesRequest>) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        stats::update_pod_sandbox_resources(self.sandboxes.clone(), req.into_inner()).await?;
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
    }

    async fn container_stats(&self, req: Request<cri::ContainerStatsRequest>) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        Ok(Response::new(stats::container_stats(self.containers.clone(), req.into_inner().container_id).await?))
    }

    async fn list_container_stats(&self, req: Request<cri::ListContainerStatsRequest>) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let stats = stats::list_container_stats(self.containers.clone(), req.into_inner().filter).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn stream_container_stats(&self, req: Request<cri::StreamContainerStatsRequest>) -> Result<Response<stats::OneShot<cri::StreamContainerStatsResponse>>, Status> {
        Ok(Response::new(stats::stream_container_stats(self.containers.clone(), req.into_inner().filter).await?))
    }

    async fn pod_sandbox_stats(&self, req: Request<cri::PodSandboxStatsRequest>) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        Ok(Response::new(stats::pod_sandbox_stats(self.sandboxes.clone(), self.containers.clone(), req.into_inner().pod_sandbox_id).await?))
    }

    async fn list_pod_sandbox_stats(&self, req: Request<cri::ListPodSandboxStatsRequest>) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let stats = stats::list_pod_sandbox_stats(self.sandboxes.clone(), self.containers.clone(), req.into_inner().filter).await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn stream_pod_sandbox_stats(&self, req: Request<cri::StreamPodSandboxStatsRequest>) -> Result<Response<stats::OneShot<cri::StreamPodSandboxStatsResponse>>, Status> {
        Ok(Response::new(stats::stream_pod_sandbox_stats(self.sandboxes.clone(), self.containers.clone(), req.into_inner().filter).await?))
    }

    async fn list_metric_descriptors(&self, _req: Request<cri::ListMetricDescriptorsRequest>) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse { descriptors: stats::metric_descriptors() }))
    }

    async fn list_pod_sandbox_metrics(&self, _req: Request<cri::ListPodSandboxMetricsRequest>) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = stats::list_pod_sandbox_metrics(self.sandboxes.clone(), self.containers.clone()).await?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse { pod_metrics }))
    }

    async fn stream_pod_sandbox_metrics(&self, _req: Request<cri::StreamPodSandboxMetricsRequest>) -> Result<Response<stats::OneShot<cri::StreamPodSandboxMetricsResponse>>, Status> {
        Ok(Response::new(stats::stream_pod_sandbox_metrics(self.sandboxes.clone(), self.containers.clone()).await?))
    }
}
