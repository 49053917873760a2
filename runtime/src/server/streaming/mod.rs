//! The CRI streaming server: `Exec`, `Attach` and `PortForward` hand out
//! single-use URLs (a random token valid for one minute, like kubelet's
//! streaming cache) on a small HTTP server (127.0.0.1 on a random port by
//! default), where the client then speaks the Kubernetes stream protocols
//! over SPDY/3.1 ([`spdy`]) or WebSocket ([`websocket`]).
//!
//! Exec runs the command through `berth exec-sync` (pipes, or a terminal
//! whose master the runtime sends back); Attach relays through the
//! container shim's attach socket ([`session`]). Port-forward connects to
//! 127.0.0.1:PORT from a thread that joined the pod's network namespace.

mod session;
mod spdy;
mod websocket;

use crate::container::Manager as Containers;
use cri_proto::v1 as cri;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use session::{Job, Stdio};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// How long a streaming URL stays valid (kubelet's cache TTL).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most pending requests kept at once (kubelet's cache limit).
const MAX_PENDING: usize = 1000;

/// A request waiting for its client.
#[derive(Debug, Clone)]
enum Pending {
    Remote(Job),
    PortForward { sandbox: String, netns: Option<PathBuf>, ports: Vec<i32> },
}

type Body = Full<Bytes>;

/// The streaming server: the token cache and the address of its listener.
pub struct Streaming {
    addr: SocketAddr,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
    containers: Arc<Containers>,
    cancel: CancellationToken,
}

impl Streaming {
    /// Binds `addr` (port 0 for a random one) and serves until `shutdown`
    /// is called.
    pub async fn start(addr: SocketAddr, containers: Arc<Containers>) -> anyhow::Result<Arc<Streaming>> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding the streaming server on {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let s = Arc::new(Streaming { addr, pending: Mutex::new(HashMap::new()), containers, cancel: CancellationToken::new() });
        tracing::info!(%addr, "serving CRI streaming");
        let srv = s.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = srv.cancel.cancelled() => break,
                    c = listener.accept() => c,
                };
                let (tcp, _) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("streaming accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let srv = srv.clone();
                tokio::spawn(async move {
                    let cancel = srv.cancel.clone();
                    let svc = hyper::service::service_fn(move |req| {
                        let srv = srv.clone();
                        async move { Ok::<_, std::convert::Infallible>(srv.handle(req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).with_upgrades();
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        r = conn => if let Err(e) = r { tracing::debug!("streaming connection: {e}") },
                    }
                });
            }
        });
        Ok(s)
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and ends every session.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    fn insert(&self, p: Pending) -> Result<String, Status> {
        let mut m = self.pending.lock().unwrap();
        let now = Instant::now();
        m.retain(|_, (t, _)| now.duration_since(*t) < TOKEN_TTL);
        if m.len() >= MAX_PENDING {
            return Err(Status::resource_exhausted("too many pending streaming requests"));
        }
        let token = hex::encode(rand::random::<[u8; 16]>());
        m.insert(token.clone(), (now, p));
        Ok(token)
    }

    fn take(&self, token: &str) -> Option<Pending> {
        let (t, p) = self.pending.lock().unwrap().remove(token)?;
        (t.elapsed() < TOKEN_TTL).then_some(p)
    }

    /// CRI `Exec`: validates and returns the URL.
    pub fn exec(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
        if req.container_id.is_empty() {
            return Err(super::error::missing("container_id"));
        }
        if req.cmd.is_empty() {
            return Err(super::error::missing("cmd"));
        }
        let stdio = check_stdio(req.stdin, req.stdout, req.stderr, req.tty)?;
        let id = self.containers.resolve(&req.container_id).map_err(super::error::container)?;
        self.containers.check_exec(&id, &req.cmd).map_err(super::error::container)?;
        let token = self.insert(Pending::Remote(Job::Exec { id, cmd: req.cmd, stdio }))?;
        Ok(cri::ExecResponse { url: format!("{}/exec/{token}", self.base_url()) })
    }

    /// CRI `Attach`: validates and returns the URL.
    pub fn attach(&self, req: cri::AttachRequest) -> Result<cri::AttachResponse, Status> {
        if req.container_id.is_empty() {
            return Err(super::error::missing("container_id"));
        }
        let stdio = check_stdio(req.stdin, req.stdout, req.stderr, req.tty)?;
        let id = self.containers.resolve(&req.container_id).map_err(super::error::container)?;
        self.containers.attach_socket(&id).map_err(super::error::container)?;
        let token = self.insert(Pending::Remote(Job::Attach { id, stdio }))?;
        Ok(cri::AttachResponse { url: format!("{}/attach/{token}", self.base_url()) })
    }

    /// CRI `PortForward`: validates and returns the URL.
    pub fn port_forward(&self, sandboxes: &crate::sandbox::Manager, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse, Status> {
        if req.pod_sandbox_id.is_empty() {
            return Err(super::error::missing("pod_sandbox_id"));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!("invalid port {p}")));
        }
        let id = sandboxes.resolve(&req.pod_sandbox_id).map_err(super::error::sandbox)?;
        let ns = sandboxes.namespaces(&id).map_err(super::error::sandbox)?;
        let token = self.insert(Pending::PortForward { sandbox: id, netns: ns.net, ports: req.port })?;
        Ok(cri::PortForwardResponse { url: format!("{}/portforward/{token}", self.base_url()) })
    }

    fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let Some((kind, token)) = path.trim_start_matches('/').split_once('/') else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        let Some(pending) = self.take(token) else {
            return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
        };
        let right_kind = match &pending {
            Pending::Remote(Job::Exec { .. }) => kind == "exec",
            Pending::Remote(Job::Attach { .. }) => kind == "attach",
            Pending::PortForward { .. } => kind == "portforward",
        };
        if !right_kind {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        if spdy::is_spdy(&req) {
            return spdy::upgrade(self, req, pending);
        }
        if header_values(&req, "upgrade").iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
            return websocket::upgrade(self, req, pending);
        }
        plain(StatusCode::BAD_REQUEST, "a SPDY/3.1 or WebSocket upgrade is required")
    }
}

/// Checks the streams a CRI `Exec` or `Attach` asks for.
fn check_stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<Stdio, Status> {
    if tty && stderr {
        // A terminal multiplexes nothing: its output is all stdout.
        return Err(Status::invalid_argument("tty and stderr cannot both be true"));
    }
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument("one of stdin, stdout, or stderr must be set"));
    }
    Ok(Stdio { stdin, stdout, stderr, tty })
}

/// Every value of header `name`, comma-separated lists split.
fn header_values<B>(req: &Request<B>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}
fn plain(code: StatusCode, msg: &str) -> Response<Body> {
    Response::builder().status(code).header("content-type", "text/plain").body(Full::new(Bytes::from(format!("{msg}\n")))).unwrap()
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}
