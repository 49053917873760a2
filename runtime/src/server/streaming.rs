//! The CRI streaming server: `Exec` and `PortForward` hand out single-use
//! URLs (a random token valid for one minute, like kubelet's streaming
//! cache) on a small HTTP server on 127.0.0.1, and the client then talks
//! the Kubernetes channel protocols over a WebSocket there.
//!
//! Exec: subprotocols `v5.channel.k8s.io`, `v4.channel.k8s.io` and
//! `channel.k8s.io`; every binary message starts with its channel (0 stdin,
//! 1 stdout, 2 stderr, 3 error, 4 resize, 255 close in v5). The command runs
//! through `berth exec-sync` with piped stdio.
//!
//! Port-forward: `v4.channel.k8s.io`, `channel.k8s.io` or
//! `portforward.k8s.io`; port i of the `port=` query gets data channel 2i and
//! error channel 2i+1, each opened by the port number (2 bytes LE). The
//! connection to 127.0.0.1:PORT is made from a thread that joined the pod's
//! network namespace.
//!
//! SPDY is not supported yet: such requests get 400.

use crate::container::Manager as Containers;
use cri_proto::v1 as cri;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// How long a streaming URL stays valid (kubelet's cache TTL).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most pending requests kept at once (kubelet's cache limit).
const MAX_PENDING: usize = 1000;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];
const PORTFORWARD_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "channel.k8s.io", "portforward.k8s.io"];

/// A request waiting for its client.
#[derive(Debug, Clone)]
enum Pending {
    Exec { id: String, cmd: Vec<String>, stdin: bool, stdout: bool, stderr: bool },
    PortForward { sandbox: String, netns: Option<PathBuf>, ports: Vec<i32> },
}

type WsStream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
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
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument("one of stdin, stdout, or stderr must be set"));
        }
        if req.tty {
            return Err(Status::unimplemented("exec with a TTY is not supported by berth yet; run without tty (crictl exec without -t)"));
        }
        let id = self.containers.resolve(&req.container_id).map_err(super::error::container)?;
        self.containers.check_exec(&id, &req.cmd).map_err(super::error::container)?;
        let token = self.insert(Pending::Exec { id, cmd: req.cmd, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr })?;
        Ok(cri::ExecResponse { url: format!("{}/exec/{token}", self.base_url()) })
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

    fn handle(self: &Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let Some((kind, token)) = path.trim_start_matches('/').split_once('/') else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        if !matches!(kind, "exec" | "portforward") {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        let Some(pending) = self.take(token) else {
            return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
        };
        let upgrade = header(&req, "upgrade").to_ascii_lowercase();
        if upgrade != "websocket" {
            let msg = if upgrade.starts_with("spdy") { "SPDY is not supported by berth yet: use the WebSocket protocol" } else { "a WebSocket upgrade is required" };
            return plain(StatusCode::BAD_REQUEST, msg);
        }
        let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let offered: Vec<String> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let supported = match pending {
            Pending::Exec { .. } => EXEC_PROTOCOLS,
            Pending::PortForward { .. } => PORTFORWARD_PROTOCOLS,
        };
        // The first protocol the client offers that we speak; none offered
        // means the plain channel protocol.
        let proto = if offered.is_empty() {
            None
        } else {
            match offered.iter().find(|p| supported.contains(&p.as_str())) {
                Some(p) => Some(p.clone()),
                None => return plain(StatusCode::BAD_REQUEST, &format!("none of the subprotocols {offered:?} is supported; want one of {supported:?}")),
            }
        };
        let query = query_pairs(req.uri().query().unwrap_or(""));
        let on_upgrade = hyper::upgrade::on(&mut req);
        let srv = self.clone();
        let p = proto.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => return tracing::debug!("streaming upgrade: {e}"),
            };
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            match pending {
                Pending::Exec { id, cmd, stdin, stdout, stderr } => srv.exec_session(ws, p.as_deref().unwrap_or("channel.k8s.io"), id, cmd, [stdin, stdout, stderr]).await,
                Pending::PortForward { sandbox, netns, ports } => {
                    let mut want: Vec<u16> = query.iter().filter(|(k, _)| k == "port").flat_map(|(_, v)| v.split(',').filter_map(|p| p.trim().parse().ok()).collect::<Vec<u16>>()).collect();
                    if want.is_empty() {
                        want = ports.iter().map(|p| *p as u16).collect();
                    }
                    srv.portforward_session(ws, sandbox, netns, want).await
                }
            }
        });
        let mut resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", key);
        if let Some(p) = proto {
            resp = resp.header("sec-websocket-protocol", p);
        }
        resp.body(Full::new(Bytes::new())).unwrap()
    }

    async fn exec_session(&self, ws: WsStream, proto: &str, id: String, cmd: Vec<String>, stdio: [bool; 3]) {
        let (sink, mut stream) = ws.split();
        let (tx, writer) = writer(sink);
        let status_v4 = proto != "channel.k8s.io";
        let v5 = proto == "v5.channel.k8s.io";
        let report = |code: Result<i32, String>| -> Option<Vec<u8>> {
            let mut m = vec![ERROR];
            match (code, status_v4) {
                (Ok(0), true) => m.extend(br#"{"metadata":{},"status":"Success"}"#),
                (Ok(0), false) => return None,
                (Ok(n), true) => m.extend(
                    serde_json::json!({
                        "metadata": {},
                        "status": "Failure",
                        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {n}", cmd.join(" ")),
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": n.to_string()}]},
                    })
                    .to_string()
                    .into_bytes(),
                ),
                (Ok(n), false) => m.extend(format!("command terminated with non-zero exit code: error executing command [{}], exit code {n}", cmd.join(" ")).into_bytes()),
                (Err(e), true) => m.extend(serde_json::json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError"}).to_string().into_bytes()),
                (Err(e), false) => m.extend(e.into_bytes()),
            }
            Some(m)
        };
        let spawned = self.containers.exec_command(&id, &cmd).map_err(|e| e.to_string()).and_then(|mut c| {
            let pipe = |on: bool| if on { std::process::Stdio::piped() } else { std::process::Stdio::null() };
            c.stdin(pipe(stdio[0])).stdout(pipe(stdio[1])).stderr(pipe(stdio[2]));
            c.spawn().map_err(|e| format!("starting exec: {e}"))
        });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(m) = report(Err(e)) {
                    let _ = tx.send(Message::Binary(m.into())).await;
                }
                let _ = tx.send(close_normal()).await;
                drop(tx);
                let _ = writer.await;
                return;
            }
        };
        let mut stdin = child.stdin.take();
        let pumps: Vec<_> = [(child.stdout.take().map(|r| Box::new(r) as Box<dyn AsyncRead + Send + Unpin>), STDOUT), (child.stderr.take().map(|r| Box::new(r) as _), STDERR)]
            .into_iter()
            .filter_map(|(r, ch)| r.map(|r| tokio::spawn(pump(r, ch, tx.clone()))))
            .collect();
        let mut client_open = true;
        let status = loop {
            tokio::select! {
                st = child.wait() => break st,
                _ = self.cancel.cancelled() => {
                    terminate(&child);
                    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                    return;
                }
                msg = stream.next(), if client_open => match msg {
                    Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                        STDIN => {
                            if let Some(s) = stdin.as_mut() {
                                if s.write_all(&b[1..]).await.is_err() {
                                    stdin = None;
                                }
                            }
                        }
                        CLOSE if v5 && b.get(1) == Some(&STDIN) => stdin = None,
                        RESIZE => {}
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        // The client is gone: nobody is left to read.
                        client_open = false;
                        terminate(&child);
                    }
                    _ => {}
                },
            }
        };
        drop(stdin);
        for p in pumps {
            tokio::select! {
                _ = p => {}
                _ = self.cancel.cancelled() => return,
            }
        }
        let code = match status {
            Ok(s) => Ok(s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0))),
            Err(e) => Err(format!("waiting for exec: {e}")),
        };
        if client_open {
            if let Some(m) = report(code) {
                let _ = tx.send(Message::Binary(m.into())).await;
            }
            let _ = tx.send(close_normal()).await;
        }
        drop(tx);
        let _ = writer.await;
    }

    async fn portforward_session(&self, ws: WsStream, sandbox: String, netns: Option<PathBuf>, ports: Vec<u16>) {
        let (sink, mut stream) = ws.split();
        let (tx, writer) = writer(sink);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(ports.len().max(1));
        let mut conns: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let (data, err) = ((2 * i) as u8, (2 * i + 1) as u8);
            let le = port.to_le_bytes();
            let _ = tx.send(Message::Binary(vec![data, le[0], le[1]].into())).await;
            let _ = tx.send(Message::Binary(vec![err, le[0], le[1]].into())).await;
            match connect_in(netns.clone(), *port).await {
                Ok(s) => {
                    let (r, w) = s.into_split();
                    conns.push(Some(w));
                    let (tx, done) = (tx.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        pump(r, data, tx).await;
                        let _ = done.send(()).await;
                    });
                }
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
                    let mut m = vec![err];
                    m.extend(msg.into_bytes());
                    let _ = tx.send(Message::Binary(m.into())).await;
                    conns.push(None);
                    let _ = done_tx.send(()).await;
                }
            }
        }
        drop(done_tx);
        let mut remaining = ports.len();
        let mut client_open = true;
        while remaining > 0 {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                d = done_rx.recv() => match d {
                    Some(()) => remaining -= 1,
                    None => break,
                },
                msg = stream.next() => match msg {
                    Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                        let ch = b[0] as usize;
                        if ch & 1 == 0 {
                            if let Some(Some(w)) = conns.get_mut(ch / 2) {
                                if w.write_all(&b[1..]).await.is_err() {
                                    conns[ch / 2] = None;
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        client_open = false;
                        break;
                    }
                    _ => {}
                },
            }
        }
        drop(conns);
        if client_open {
            let _ = tx.send(close_normal()).await;
        }
        drop(tx);
        let _ = writer.await;
    }
}

/// Asks `berth exec-sync` to kill the exec'd process (and so to exit);
/// SIGKILL would leave the process running in the container.
fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
}

fn close_normal() -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

/// A task that owns the sink and sends what arrives on the channel; it ends
/// after a Close or when every sender is gone.
fn writer(mut sink: futures::stream::SplitSink<WsStream, Message>) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let h = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.flush().await;
    });
    (tx, h)
}

/// Copies `r` to channel `ch` until EOF.
async fn pump(mut r: impl AsyncRead + Unpin, ch: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf[0] = ch;
                if tx.send(Message::Binary(Bytes::copy_from_slice(&buf[..n + 1]))).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Connects to 127.0.0.1:`port` in the network namespace `netns` (the
/// daemon's own for none) from a throwaway thread, so no daemon thread
/// changes namespace.
async fn connect_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| -> std::io::Result<std::net::TcpStream> {
            if let Some(ns) = &netns {
                let f = std::fs::File::open(ns)?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            }
            let s = std::net::TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })();
        let _ = tx.send(r);
    });
    let s = rx.await.map_err(|_| std::io::Error::other("the connecting thread died"))??;
    tokio::net::TcpStream::from_std(s)
}

fn header<'a, B>(req: &'a Request<B>, name: &str) -> &'a str {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
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
