//! The engine's one seam to a container runtime: CRI v1 clients, either over
//! a unix socket (any CRI runtime) or bound in-process to Berth's own CRI
//! services. Both paths run the same generated gRPC code.

use cri_proto::v1::image_service_client::ImageServiceClient;
use cri_proto::v1::image_service_server::ImageServiceServer;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::runtime_service_server::RuntimeServiceServer;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// CRI clients of one runtime.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// Prefix of container IDs in Kubernetes status (`berth://`, `containerd://`).
    pub id_scheme: String,
}

/// Largest message the engine accepts (list responses of big nodes).
const MAX_MESSAGE: usize = 64 << 20;

impl Cri {
    /// Binds to in-process CRI services: a gRPC server on in-memory pipes,
    /// so the engine runs exactly the code a socket client would.
    pub async fn in_process(services: &berth_runtime::server::Services) -> anyhow::Result<Cri> {
        let (conn_tx, conn_rx) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
        let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(conn_rx).map(Ok::<_, std::io::Error>);
        let server = tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::from_arc(services.runtime.clone()))
            .add_service(ImageServiceServer::from_arc(services.image.clone()))
            .serve_with_incoming(incoming);
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("in-process CRI server: {e}");
            }
        });
        let channel = tonic::transport::Endpoint::try_from("http://[::1]:50051")?
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let conn_tx = conn_tx.clone();
                async move {
                    let (client, server) = tokio::io::duplex(1 << 20);
                    conn_tx.send(server).map_err(|_| std::io::Error::other("in-process CRI server is gone"))?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
                }
            }))
            .await?;
        Ok(Cri::from_channel(channel, "berth"))
    }

    /// Connects to a CRI endpoint: `unix:///path`, or a plain socket path.
    pub async fn connect(endpoint: &str) -> anyhow::Result<Cri> {
        let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
        let channel = unix_channel(&path).await?;
        let mut cri = Cri::from_channel(channel, "");
        let v = cri
            .runtime
            .version(cri_proto::v1::VersionRequest::default())
            .await
            .map_err(|e| anyhow::anyhow!("CRI endpoint {endpoint}: Version: {}", e.message()))?
            .into_inner();
        cri.id_scheme = v.runtime_name;
        Ok(cri)
    }

    fn from_channel(ch: Channel, scheme: &str) -> Cri {
        Cri {
            runtime: RuntimeServiceClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE),
            images: ImageServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE),
            id_scheme: scheme.to_string(),
        }
    }

    /// A container ID as Kubernetes shows it.
    pub fn status_id(&self, id: &str) -> String {
        format!("{}://{id}", self.id_scheme)
    }
}

async fn unix_channel(path: &Path) -> anyhow::Result<tonic::transport::Channel> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    tonic::transport::Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to CRI socket {shown}: {e}"))
}
