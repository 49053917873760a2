//! The CRI v1 gRPC server on a unix socket: thin adapters over the image
//! service and the sandbox and container managers.

pub mod container;
pub mod error;
pub mod events;
pub mod image;
pub mod runtime;
pub mod sandbox;
pub mod spdy;
pub mod stats;
pub mod streaming;

use crate::container::{Manager as Containers, ManagerConfig};
use crate::image::ImageService;
use crate::Config;
use cri_proto::v1::image_service_server::ImageServiceServer;
use cri_proto::v1::runtime_service_server::RuntimeServiceServer;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default CRI socket.
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";

/// The CRI services of one runtime instance: what `berth cri` serves on its
/// socket and what standalone mode drives in-process.
pub struct Services {
    pub runtime: Arc<runtime::RuntimeServer>,
    pub image: Arc<image::ImageServer>,
    events: Arc<events::Events>,
    streaming: Arc<streaming::Streaming>,
}

impl Services {
    /// Opens the stores and managers and recovers state left by an earlier run.
    pub async fn open(cfg: &Config, exe: PathBuf) -> anyhow::Result<Services> {
        let images = ImageService::open(cfg)?;
        let containers = Arc::new(Containers::new(ManagerConfig::from_config(cfg, exe.clone()), images.clone())?);
        let network = Arc::new(berth_cni::PodNetworks::new(cfg.cni_options())?);
        if let Err(e) = network.status() {
            tracing::warn!(error = %e, "pod network is not ready");
        }
        let sandboxes = Arc::new(crate::sandbox::Manager::new(crate::sandbox::SandboxConfig::from_config(cfg, exe))?.with_network(network));
        let events = events::Events::new(containers.clone(), sandboxes.clone());
        events.recover();
        let streaming = streaming::Streaming::start(cfg.stream_address, containers.clone()).await?;
        let runtime = Arc::new(runtime::RuntimeServer { containers, sandboxes, events: events.clone(), streaming: streaming.clone() });
        Ok(Services { runtime, image: Arc::new(image::ImageServer { images }), events, streaming })
    }

    /// Ends event streams and the streaming server.
    pub fn shutdown(&self) {
        self.events.shutdown();
        self.streaming.shutdown();
    }

    /// Serves both services on `socket` until `shutdown` resolves.
    pub async fn serve(&self, socket: &Path, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(anyhow::anyhow!("removing stale socket {}: {e}", socket.display())),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(socket).map_err(|e| anyhow::anyhow!("binding {}: {e}", socket.display()))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
        tracing::info!(socket = %socket.display(), "serving CRI");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::from_arc(self.runtime.clone()))
            .add_service(ImageServiceServer::from_arc(self.image.clone()))
            // Event streams never end on their own: end them at shutdown, or the
            // graceful shutdown would wait for their clients forever.
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                self.shutdown();
            })
            .await?;
        self.shutdown();
        let _ = std::fs::remove_file(socket);
        Ok(())
    }
}

/// Serves the CRI on `socket` until `shutdown` resolves.
pub async fn serve(cfg: &Config, socket: &Path, exe: PathBuf, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    Services::open(cfg, exe).await?.serve(socket, shutdown).await
}
