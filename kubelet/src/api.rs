//! The local API of a running `berth run`: HTTP/JSON on a unix socket that
//! `berth get/describe/logs/exec/delete` talk to.
//!
//! - `GET /info` → [`Info`]
//! - `GET /pods` → `v1 PodList`
//! - `GET /pods/{ns}/{name}` → `Pod`
//! - `GET /events/{ns}/{name}` → `[Event]`
//! - `DELETE /pods/{ns}/{name}?gracePeriodSeconds=N` → waits until gone
//! - `POST /apply` with a manifest bundle → the pods started
//! - `POST /shutdown` → terminates every pod, then the daemon exits
//! - `GET /node` → the `Node` (capacity, allocatable, conditions, taints)
//! - `GET /stats` → the latest usage sample of the node and its pods
//! - `POST /pods/{ns}/{name}/resize` with a `ResizeRequest` → the `Pod`

use crate::engine::PodManager;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Facts about the running daemon.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub pid: u32,
    /// The CRI socket the daemon's runtime serves (for exec).
    pub cri_socket: String,
    /// Where pod log directories are.
    pub log_root: String,
    pub node_name: String,
}

/// Manifests sent to a running daemon.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ApplyRequest {
    pub pods: Vec<k8s_openapi::api::core::v1::Pod>,
    pub config_maps: Vec<k8s_openapi::api::core::v1::ConfigMap>,
    pub secrets: Vec<k8s_openapi::api::core::v1::Secret>,
}

pub type Apply = Arc<dyn Fn(ApplyRequest) -> futures::future::BoxFuture<'static, Vec<String>> + Send + Sync>;

/// What the API can ask of the daemon besides pods.
#[derive(Clone)]
pub struct Hooks {
    pub apply: Apply,
    /// Notified by `POST /shutdown`.
    pub shutdown: Arc<tokio::sync::Notify>,
}

fn json(code: StatusCode, v: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder().status(code).header("content-type", "application/json").body(Full::new(Bytes::from(body))).expect("valid response")
}

fn error(code: StatusCode, msg: String) -> Response<Full<Bytes>> {
    json(code, &serde_json::json!({ "kind": "Status", "status": "Failure", "message": msg, "code": code.as_u16() }))
}

/// Serves the API on `socket` until the task is dropped.
pub async fn serve(socket: &Path, pods: Arc<PodManager>, info: Info, hooks: Hooks) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(d) = socket.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).map_err(|e| anyhow::anyhow!("binding {}: {e}", socket.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let info = Arc::new(info);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let pods = pods.clone();
            let info = info.clone();
            let hooks = hooks.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, pods.clone(), info.clone(), hooks.clone()));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            });
        }
    }))
}

async fn handle(req: Request<Incoming>, pods: Arc<PodManager>, info: Arc<Info>, hooks: Hooks) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path: Vec<String> = req.uri().path().trim_matches('/').split('/').map(str::to_string).collect();
    let query = req.uri().query().unwrap_or("").to_string();
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    Ok(match (req.method().clone(), p.as_slice()) {
        (Method::GET, ["info"]) => json(StatusCode::OK, &*info),
        (Method::GET, ["pods"]) => {
            let mut items = pods.list();
            items.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
            json(StatusCode::OK, &serde_json::json!({ "apiVersion": "v1", "kind": "PodList", "items": items }))
        }
        (Method::GET, ["pods", ns, name]) => match pods.get(ns, name) {
            Some(p) => json(StatusCode::OK, &p),
            None => error(StatusCode::NOT_FOUND, format!("pods \"{name}\" not found in namespace \"{ns}\"")),
        },
        (Method::GET, ["events", ns, name]) => json(StatusCode::OK, &pods.shared.events.of_pod(ns, name)),
        (Method::GET, ["events"]) => json(StatusCode::OK, &pods.shared.events.all()),
        (Method::DELETE, ["pods", ns, name]) => {
            let grace = query.split('&').find_map(|kv| kv.strip_prefix("gracePeriodSeconds=")).and_then(|v| v.parse::<i64>().ok());
            if pods.delete(ns, name, grace).await {
                json(StatusCode::OK, &serde_json::json!({ "deleted": format!("{ns}/{name}") }))
            } else {
                error(StatusCode::NOT_FOUND, format!("pods \"{name}\" not found in namespace \"{ns}\""))
            }
        }
        (Method::POST, ["apply"]) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e.to_string())),
            };
            match serde_json::from_slice::<ApplyRequest>(&body) {
                Ok(r) => json(StatusCode::OK, &(hooks.apply)(r).await),
                Err(e) => error(StatusCode::BAD_REQUEST, format!("bad apply request: {e}")),
            }
        }
        (Method::GET, ["node"]) => json(StatusCode::OK, &pods.shared.node.to_api(&pods.shared.eviction.conditions(), &pods.shared.cfg.host_ip)),
        (Method::GET, ["stats"]) => match pods.shared.stats.latest().filter(|s| s.window > 0.0) {
            Some(s) => json(StatusCode::OK, &s),
            // No rates yet (just started): two samples a second apart.
            None => {
                let mut r = pods.shared.stats.sample(&pods.shared).await;
                if r.as_ref().is_ok_and(|s| s.window == 0.0) {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    r = pods.shared.stats.sample(&pods.shared).await;
                }
                match r {
                    Ok(s) => json(StatusCode::OK, &s),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("collecting usage: {e:#}")),
                }
            }
        },
        (Method::POST, ["pods", ns, name, "resize"]) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e.to_string())),
            };
            match serde_json::from_slice::<crate::engine::resize::ResizeRequest>(&body) {
                Ok(r) => match pods.resize(ns, name, &r).await {
                    Ok(p) => json(StatusCode::OK, &p),
                    Err(e) if e.contains("not found in namespace") => error(StatusCode::NOT_FOUND, e),
                    Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
                },
                Err(e) => error(StatusCode::BAD_REQUEST, format!("bad resize request: {e}")),
            }
        }
        (Method::POST, ["shutdown"]) => {
            hooks.shutdown.notify_one();
            json(StatusCode::OK, &serde_json::json!({ "shuttingDown": true }))
        }
        _ => error(StatusCode::NOT_FOUND, format!("no such API path: {}", req.uri().path())),
    })
}

/// A client of a running daemon's API.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client { socket: socket.to_path_buf() }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<(StatusCode, Bytes)> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow::anyhow!("cannot reach berth at {}: {e} (is `berth run` running with the same --root?)", self.socket.display())
        })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::builder().method(method).uri(path).header("host", "berth").body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<T> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            anyhow::bail!("{msg}");
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub async fn info(&self) -> anyhow::Result<Info> {
        self.get_json(Method::GET, "/info", None).await
    }

    pub async fn pods(&self) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Pod>> {
        let v: serde_json::Value = self.get_json(Method::GET, "/pods", None).await?;
        Ok(serde_json::from_value(v.get("items").cloned().unwrap_or_default())?)
    }

    pub async fn pod(&self, ns: &str, name: &str) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
        self.get_json(Method::GET, &format!("/pods/{ns}/{name}"), None).await
    }

    pub async fn events(&self, ns: &str, name: &str) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Event>> {
        self.get_json(Method::GET, &format!("/events/{ns}/{name}"), None).await
    }

    pub async fn delete(&self, ns: &str, name: &str, grace: Option<i64>) -> anyhow::Result<()> {
        let q = grace.map(|g| format!("?gracePeriodSeconds={g}")).unwrap_or_default();
        let _: serde_json::Value = self.get_json(Method::DELETE, &format!("/pods/{ns}/{name}{q}"), None).await?;
        Ok(())
    }

    /// Asks the daemon to terminate its pods and exit; returns once it is gone.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let _: serde_json::Value = self.get_json(Method::POST, "/shutdown", None).await?;
        while tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub async fn node(&self) -> anyhow::Result<k8s_openapi::api::core::v1::Node> {
        self.get_json(Method::GET, "/node", None).await
    }

    pub async fn stats(&self) -> anyhow::Result<crate::engine::stats::Snapshot> {
        self.get_json(Method::GET, "/stats", None).await
    }

    pub async fn resize(&self, ns: &str, name: &str, req: &crate::engine::resize::ResizeRequest) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
        self.get_json(Method::POST, &format!("/pods/{ns}/{name}/resize"), Some(serde_json::to_vec(req)?)).await
    }

    pub async fn apply(&self, req: &ApplyRequest) -> anyhow::Result<Vec<String>> {
        self.get_json(Method::POST, "/apply", Some(serde_json::to_vec(req)?)).await
    }
}
