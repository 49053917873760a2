//! Probe and hook tests against real local servers (hyper, tonic-health, TCP listeners) and a
//! real network namespace; commands go through a fake [`ExecRunner`].

mod exec;
mod grpc;
mod hook;
mod http;
mod netns;
mod tcp;
mod worker;

use super::*;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::time::Instant;

// ---- fake exec ----

/// Answers by command: `exit N [stdout [stderr]]`, `hang`, `timedout` (the runner reports a
/// timeout), `error` (the command could not run), `script` (the next of the scripted replies;
/// the last one repeats).
#[derive(Default)]
pub(super) struct FakeExec {
    script: Mutex<VecDeque<Reply>>,
    pub calls: Mutex<Vec<Call>>,
}

/// (container ID, command, timeout, when).
pub(super) type Call = (String, Vec<String>, Duration, Instant);

#[derive(Clone, Debug)]
pub(super) enum Reply {
    Exit(i32),
    Error,
}

impl FakeExec {
    pub fn scripted(replies: &[Reply]) -> Arc<FakeExec> {
        Arc::new(FakeExec {
            script: Mutex::new(replies.iter().cloned().collect()),
            ..Default::default()
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl ExecRunner for FakeExec {
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'_, anyhow::Result<ExecOutput>> {
        self.calls
            .lock()
            .unwrap()
            .push((container_id.to_string(), cmd.clone(), timeout, Instant::now()));
        let container_id = container_id.to_string();
        Box::pin(async move {
            let arg = |i: usize| cmd.get(i).cloned().unwrap_or_default();
            match cmd[0].as_str() {
                "exit" => Ok(ExecOutput {
                    exit_code: arg(1).parse()?,
                    stdout: arg(2).into_bytes(),
                    stderr: arg(3).into_bytes(),
                }),
                "hang" => futures::future::pending().await,
                "timedout" => Err(ExecTimedOut.into()),
                "error" => anyhow::bail!("container \"{container_id}\" is not running"),
                "script" => {
                    let reply = {
                        let mut script = self.script.lock().unwrap();
                        if script.len() > 1 {
                            script.pop_front()
                        } else {
                            script.front().cloned()
                        }
                    };
                    match reply.unwrap_or(Reply::Exit(0)) {
                        Reply::Exit(code) => Ok(ExecOutput {
                            exit_code: code,
                            stdout: b"out".to_vec(),
                            stderr: vec![],
                        }),
                        Reply::Error => anyhow::bail!("runtime error"),
                    }
                }
                other => anyhow::bail!("fake exec: unknown command {other}"),
            }
        })
    }
}

/// An [`ExecRunner`] that must not be called.
pub(super) struct NoExec;

impl ExecRunner for NoExec {
    fn exec_sync(
        &self,
        _: &str,
        cmd: Vec<String>,
        _: Duration,
    ) -> futures::future::BoxFuture<'_, anyhow::Result<ExecOutput>> {
        Box::pin(async move { anyhow::bail!("unexpected exec of {cmd:?}") })
    }
}

// ---- probes ----

pub(super) fn exec_probe(cmd: &[&str]) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
        }),
        ..Default::default()
    }
}

pub(super) fn http_action(port: u16, path: &str) -> HTTPGetAction {
    HTTPGetAction {
        port: IntOrString::Int(port.into()),
        path: Some(path.into()),
        ..Default::default()
    }
}

pub(super) fn http_probe(action: HTTPGetAction) -> Probe {
    Probe {
        http_get: Some(action),
        ..Default::default()
    }
}

pub(super) fn tcp_probe(port: u16) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port.into()),
            host: None,
        }),
        ..Default::default()
    }
}

pub(super) fn grpc_probe(port: u16, service: Option<&str>) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: port.into(),
            service: service.map(str::to_string),
            mode: None,
        }),
        ..Default::default()
    }
}

pub(super) fn header(name: &str, value: &str) -> HTTPHeader {
    HTTPHeader {
        name: name.into(),
        value: value.into(),
    }
}

/// A target whose pod IP is 127.0.0.1 (probed from the host).
pub(super) fn local_target() -> Target {
    Target {
        pod_ip: Some("127.0.0.1".parse().unwrap()),
        container_id: "c1".into(),
        ..Default::default()
    }
}

pub(super) fn failure_message(outcome: &ProbeOutcome) -> &str {
    match outcome {
        ProbeOutcome::Failure(m) => m,
        other => panic!("want a failure, got {other:?}"),
    }
}

// ---- HTTP server ----

/// A request the test server saw.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub version: ::http::Version,
    pub uri: ::http::Uri,
    pub headers: ::http::HeaderMap,
}

/// A hyper server (HTTP/1.1 and h2c) on a given listener, with fixed routes:
/// `/status/N` answers N; `/redirect?to=URL` answers 302 to URL; `/loop` redirects to itself;
/// `/slow` answers after a minute; anything else answers 200 "ok".
pub(super) struct HttpServer {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    pub async fn local() -> HttpServer {
        HttpServer::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), None)
    }

    /// Serves on `listener`, over TLS when `tls` is given.
    pub fn on(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> HttpServer {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move { Ok::<_, std::convert::Infallible>(route(req, &seen).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), service).await;
                            }
                        }
                    }
                });
            }
        });
        HttpServer { port, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn route(req: hyper::Request<hyper::body::Incoming>, seen: &Mutex<Vec<Seen>>) -> hyper::Response<Full<Bytes>> {
    seen.lock().unwrap().push(Seen {
        version: req.version(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let reply = |status: u16, location: Option<&str>, body: &str| {
        let mut b = hyper::Response::builder().status(status);
        if let Some(l) = location {
            b = b.header("location", l);
        }
        b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    };
    if let Some(code) = path.strip_prefix("/status/") {
        return reply(code.parse().unwrap(), None, "status");
    }
    match path.as_str() {
        "/redirect" => reply(302, query.strip_prefix("to="), "moved"),
        "/loop" => reply(302, Some("/loop"), "again"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            reply(200, None, "late")
        }
        _ => reply(200, None, "ok"),
    }
}

/// A self-signed certificate made with the openssl command, as a TLS acceptor.
pub(super) fn tls_acceptor(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=berth-probe-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (package openssl)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

// ---- gRPC health server ----

/// A tonic server with grpc.health.v1: "" and "berth.Up" SERVING, "berth.Down" NOT_SERVING.
pub(super) struct GrpcServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    pub async fn local() -> GrpcServer {
        GrpcServer::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), None).await
    }

    pub async fn on(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> GrpcServer {
        use tonic_health::ServingStatus;
        let port = listener.local_addr().unwrap().port();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("berth.Up", ServingStatus::Serving).await;
        reporter
            .set_service_status("berth.Down", ServingStatus::NotServing)
            .await;
        let router = tonic::transport::Server::builder().add_service(service);
        let task = match tls {
            None => tokio::spawn(async move {
                let _ = router
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            }),
            Some(acceptor) => {
                let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(4);
                tokio::spawn(async move {
                    let accept = async move {
                        loop {
                            let Ok((s, _)) = listener.accept().await else { return };
                            if let Ok(s) = acceptor.accept(s).await {
                                if tx.send(Ok(TlsConn(s))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    let serve = router.serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx));
                    tokio::join!(accept, async {
                        let _ = serve.await;
                    });
                })
            }
        };
        GrpcServer { port, task }
    }
}

/// A server-side TLS stream tonic can serve.
pub(super) struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A local port with nothing listening (bound, then released).
pub(super) async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
