//! The CRI streaming server: Exec, Attach and PortForward URLs, and the
//! Kubernetes stream protocols over WebSocket (a tokio-tungstenite client)
//! and SPDY/3.1 (the harness's client).

use berth_tests::streaming::{SpdyClient, SpdyCommand, Streams};
use berth_tests::{block_on, image_spec, require_root, CriServer};
use cri_proto::v1 as cri;
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

async fn connect(url: &str, protocol: &str) -> Result<(Ws, String), tokio_tungstenite::tungstenite::Error> {
    let mut req = url.replace("http://", "ws://").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let proto = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    Ok((ws, proto))
}

/// Reads until the server closes: the bytes of each channel, in order.
async fn drain(ws: &mut Ws) -> std::collections::BTreeMap<u8, Vec<u8>> {
    let mut out = std::collections::BTreeMap::<u8, Vec<u8>>::new();
    let fut = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Binary(b)) if !b.is_empty() => out.entry(b[0]).or_default().extend_from_slice(&b[1..]),
                Ok(Message::Close(_)) | Err(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), fut).await.expect("stream never closed");
    out
}

fn text(m: &std::collections::BTreeMap<u8, Vec<u8>>, ch: u8) -> String {
    String::from_utf8_lossy(m.get(&ch).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

#[test]
fn exec_and_port_forward_over_websocket() {
    require_root();
    let server = CriServer::start_with_busybox();
    let logs = tempfile::tempdir().unwrap();
    let parent = format!("/berth-stream-{}", std::process::id());
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: "stream".into(), namespace: "default".into(), uid: "uid-s".into(), attempt: 0 }),
        hostname: "stream-pod".into(),
        log_directory: logs.path().display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig { cgroup_parent: parent.clone(), ..Default::default() }),
        ..Default::default()
    };
    let ctr = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }),
        image: image_spec("cri/busybox:1"),
        command: sh("mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www"),
        log_path: "main/0.log".into(),
        ..Default::default()
    };
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, cid) = berth_tests::run_pod_with_container(&mut rt, &pod, &ctr).await;

        let exec = |cmd: Vec<String>, stdin: bool| cri::ExecRequest { container_id: cid.clone(), cmd, stdin, stdout: true, stderr: true, tty: false };

        // Validation.
        let e = rt.exec(exec(vec![], false)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = rt.exec(cri::ExecRequest { container_id: "nope".into(), ..exec(sh("true"), false) }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = rt.exec(cri::ExecRequest { tty: true, ..exec(sh("true"), false) }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("tty and stderr"), "{e:?}");
        let e = rt.exec(cri::ExecRequest { stdout: false, stderr: false, ..exec(sh("true"), false) }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: "nope".into(), port: vec![8080] }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        // Exec v5: stdin, stdout, stderr, stdin close and a non-zero exit.
        let url = rt.exec(exec(sh("read x; echo got $x; echo err >&2; exit 3"), true)).await.unwrap().into_inner().url;
        assert!(url.starts_with("http://127.0.0.1:") && url.contains("/exec/"), "{url}");
        let (mut ws, proto) = connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await.unwrap();
        assert_eq!(proto, "v5.channel.k8s.io");
        ws.send(Message::Binary([&[0u8][..], b"hello\n"].concat().into())).await.unwrap();
        ws.send(Message::Binary(vec![255u8, 0].into())).await.unwrap();
        let got = drain(&mut ws).await;
        assert_eq!(text(&got, 1), "got hello\n");
        assert_eq!(text(&got, 2), "err\n");
        let status: serde_json::Value = serde_json::from_str(&text(&got, 3)).unwrap();
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
        assert!(status["message"].as_str().unwrap().contains("exit code 3"), "{status}");

        // The token is single-use.
        let e = connect(&url, "v5.channel.k8s.io").await.unwrap_err();
        match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 404),
            e => panic!("token reuse: {e:?}"),
        }

        // Exec v4, exit 0: Success.
        let url = rt.exec(exec(sh("hostname"), false)).await.unwrap().into_inner().url;
        let (mut ws, proto) = connect(&url, "v4.channel.k8s.io").await.unwrap();
        assert_eq!(proto, "v4.channel.k8s.io");
        let got = drain(&mut ws).await;
        assert_eq!(text(&got, 1), "stream-pod\n");
        let status: serde_json::Value = serde_json::from_str(&text(&got, 3)).unwrap();
        assert_eq!(status, serde_json::json!({"metadata": {}, "status": "Success"}));

        // A client that goes away: the exec'd process is killed.
        let url = rt.exec(exec(vec!["sleep".into(), "1234".into()], true)).await.unwrap().into_inner().url;
        let (mut ws, _) = connect(&url, "v5.channel.k8s.io").await.unwrap();
        let running = |rt: &mut RuntimeServiceClient<tonic::transport::Channel>| {
            let req = cri::ExecSyncRequest { container_id: cid.clone(), cmd: sh("ps | grep '[s]leep 1234'"), timeout: 10 };
            let mut rt = rt.clone();
            async move { rt.exec_sync(req).await.unwrap().into_inner().exit_code == 0 }
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !running(&mut rt).await {
            assert!(std::time::Instant::now() < deadline, "the exec'd sleep never ran");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ws.close(None).await.unwrap();
        drop(ws);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while running(&mut rt).await {
            assert!(std::time::Instant::now() < deadline, "the exec'd sleep outlived its client");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }

        // Port-forward to the pod's httpd on 127.0.0.1:8080 in its netns.
        let mut page = String::new();
        for _ in 0..50 {
            let url = rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: sid.clone(), port: vec![8080] }).await.unwrap().into_inner().url;
            assert!(url.contains("/portforward/"), "{url}");
            let (mut ws, proto) = connect(&format!("{url}?port=8080"), "v4.channel.k8s.io").await.unwrap();
            assert_eq!(proto, "v4.channel.k8s.io");
            // Each channel opens with the port number.
            for ch in [0u8, 1] {
                match ws.next().await.unwrap().unwrap() {
                    Message::Binary(b) => assert_eq!(&b[..], &[ch, 0x90, 0x1f][..], "port prefix on channel {ch}"),
                    m => panic!("unexpected {m:?}"),
                }
            }
            ws.send(Message::Binary([&[0u8][..], b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n"].concat().into())).await.unwrap();
            let got = drain(&mut ws).await;
            if got.contains_key(&1) {
                // httpd not listening yet.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            page = text(&got, 0);
            break;
        }
        assert!(page.starts_with("HTTP/1.") && page.contains("200"), "{page}");
        assert!(page.contains("hello-from-the-pod"), "{page}");

        // Nothing listens on 9: the error channel says so.
        let url = rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: sid.clone(), port: vec![9] }).await.unwrap().into_inner().url;
        let (mut ws, _) = connect(&format!("{url}?port=9"), "v4.channel.k8s.io").await.unwrap();
        let got = drain(&mut ws).await;
        assert!(text(&got, 1).contains("error forwarding port 9"), "{got:?}");

        rt.stop_container(cri::StopContainerRequest { container_id: cid.clone(), timeout: 1 }).await.unwrap();
        // A stopped container cannot exec.
        let e = rt.exec(exec(sh("true"), false)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
        let e = rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: sid.clone(), port: vec![8080] }).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.clone() }).await.unwrap();
    });
    drop(server);
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = ctl.path().join(parent.trim_start_matches('/'));
        if d.exists() {
            let children: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
            assert!(children.is_empty(), "cgroups left under {}: {children:?}", d.display());
            let _ = std::fs::remove_dir(&d);
        }
    }
}

type Rt = RuntimeServiceClient<tonic::transport::Channel>;

/// A pod config with its own log dir and cgroup parent.
struct Pod {
    config: cri::PodSandboxConfig,
    parent: String,
    _logs: tempfile::TempDir,
}

impl Pod {
    fn new(name: &str) -> Pod {
        let logs = tempfile::tempdir().unwrap();
        let parent = format!("/berth-stream-{name}-{}", std::process::id());
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata { name: name.into(), namespace: "default".into(), uid: format!("uid-{name}"), attempt: 0 }),
            hostname: format!("{name}-pod"),
            log_directory: logs.path().display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig { cgroup_parent: parent.clone(), ..Default::default() }),
            ..Default::default()
        };
        Pod { config, parent, _logs: logs }
    }

    fn log(&self, ctr: &cri::ContainerConfig) -> String {
        std::fs::read_to_string(std::path::Path::new(&self.config.log_directory).join(&ctr.log_path)).unwrap_or_default()
    }

    /// No cgroups left behind (call after the server is gone).
    fn check_cgroups(&self) {
        for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let d = ctl.path().join(self.parent.trim_start_matches('/'));
            if d.exists() {
                let children: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
                assert!(children.is_empty(), "cgroups left under {}: {children:?}", d.display());
                let _ = std::fs::remove_dir(&d);
            }
        }
    }
}

fn container(name: &str, command: Vec<String>) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: image_spec("cri/busybox:1"),
        command,
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

/// Starts a container in an existing sandbox.
async fn start_container(rt: &mut Rt, sid: &str, pod: &Pod, ctr: &cri::ContainerConfig) -> String {
    let cid = rt
        .create_container(cri::CreateContainerRequest { pod_sandbox_id: sid.into(), config: Some(ctr.clone()), sandbox_config: Some(pod.config.clone()) })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.expect("StartContainer");
    cid
}

async fn remove_pod(rt: &mut Rt, sid: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.into() }).await.unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid.into() }).await.unwrap();
}

fn exec_req(cid: &str, cmd: Vec<String>, s: Streams) -> cri::ExecRequest {
    cri::ExecRequest { container_id: cid.into(), cmd, stdin: s.stdin, stdout: s.stdout, stderr: s.stderr, tty: s.tty }
}

const PIPES: Streams = Streams { stdin: true, stdout: true, stderr: true, tty: false };
const TTY: Streams = Streams { stdin: true, stdout: true, stderr: false, tty: true };
const SPDY_VERSIONS: &[&str] = &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];

/// Reads WebSocket messages (binary, or base64 text) until channel `ch`
/// has received `needle`; returns everything per channel so far.
async fn ws_wait_for(ws: &mut Ws, got: &mut std::collections::BTreeMap<u8, Vec<u8>>, ch: u8, needle: &str) {
    use base64::Engine as _;
    let fut = async {
        while !String::from_utf8_lossy(got.get(&ch).map(Vec::as_slice).unwrap_or_default()).contains(needle) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => got.entry(b[0]).or_default().extend_from_slice(&b[1..]),
                Some(Ok(Message::Text(t))) if !t.is_empty() => {
                    let t = t.as_bytes();
                    let d = base64::engine::general_purpose::STANDARD.decode(&t[1..]).unwrap();
                    got.entry(t[0] - b'0').or_default().extend_from_slice(&d);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => panic!("closed before {needle:?} on channel {ch}: {got:?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), fut).await.expect("timed out waiting for output");
}

#[test]
fn exec_over_spdy_with_and_without_a_terminal() {
    require_root();
    let server = CriServer::start_with_busybox();
    let pod = Pod::new("spdy");
    let ctr = container("main", vec!["sleep".into(), "100000".into()]);
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, cid) = berth_tests::run_pod_with_container(&mut rt, &pod.config, &ctr).await;

        // exec -s: stdin, stdout, stderr and a non-zero exit, every SPDY version.
        for proto in SPDY_VERSIONS {
            let url = rt.exec(exec_req(&cid, sh("read x; echo got $x; echo err >&2; exit 3"), PIPES)).await.unwrap().into_inner().url;
            let mut c = SpdyCommand::start(&url, &[proto], PIPES).await.unwrap();
            assert_eq!(&c.protocol, proto);
            c.stdin("hello\n").await;
            c.close_stdin().await;
            let (out, err, status) = c.finish().await;
            assert_eq!(out, "got hello\n", "{proto}");
            assert_eq!(err, "err\n", "{proto}");
            if *proto == "v4.channel.k8s.io" {
                let status: serde_json::Value = serde_json::from_str(&status).unwrap();
                assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
                assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
            } else {
                assert!(status.contains("exit code 3"), "{proto}: {status}");
            }
        }

        // Exit 0: v4 says Success; older versions say nothing.
        let url = rt.exec(exec_req(&cid, vec!["hostname".into()], Streams { stdout: true, ..Default::default() })).await.unwrap().into_inner().url;
        let c = SpdyCommand::start(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"], Streams { stdout: true, ..Default::default() }).await.unwrap();
        assert_eq!(c.protocol, "v4.channel.k8s.io");
        let (out, _, status) = c.finish().await;
        assert_eq!(out, "spdy-pod\n");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&status).unwrap(), serde_json::json!({"metadata": {}, "status": "Success"}));

        // Protocol negotiation: none offered, or none in common.
        let url = rt.exec(exec_req(&cid, sh("true"), PIPES)).await.unwrap().into_inner().url;
        let e = SpdyClient::connect(&url, &[]).await.err().expect("refused");
        assert_eq!(e.status, 400, "{e:?}");
        assert!(e.body.contains("X-Stream-Protocol-Version"), "{e:?}");
        let url = rt.exec(exec_req(&cid, sh("true"), PIPES)).await.unwrap().into_inner().url;
        let e = SpdyClient::connect(&url, &["v9.channel.k8s.io"]).await.err().expect("refused");
        assert_eq!(e.status, 403, "{e:?}");
        assert!(e.headers.iter().any(|(k, v)| k == "x-accepted-stream-protocol-versions" && v == "v4.channel.k8s.io"), "{e:?}");

        // exec -it over SPDY: a terminal that takes the client's size; PINGs answered.
        let url = rt.exec(exec_req(&cid, vec!["sh".into()], TTY)).await.unwrap().into_inner().url;
        let mut c = SpdyCommand::start(&url, &["v4.channel.k8s.io"], TTY).await.unwrap();
        assert!(c.stderr.is_none() && c.resize.is_some());
        c.conn.ping(1).await;
        c.conn.wait_ping(1).await;
        c.resize(100, 30).await;
        c.stdin("stty size; tty; echo $TERM\n").await;
        c.wait_stdout("30 100").await;
        c.wait_stdout("/dev/pts/").await;
        c.wait_stdout("xterm").await;
        c.resize(123, 45).await;
        c.stdin("stty size; exit 7\n").await;
        c.wait_stdout("45 123").await;
        let (_, _, status) = c.finish().await;
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "7", "{status}");

        // exec -it over WebSocket (v5), the resize on channel 4.
        let url = rt.exec(exec_req(&cid, vec!["sh".into()], TTY)).await.unwrap().into_inner().url;
        let (mut ws, proto) = connect(&url, "v5.channel.k8s.io").await.unwrap();
        assert_eq!(proto, "v5.channel.k8s.io");
        ws.send(Message::Binary([&[4u8][..], br#"{"Width":90,"Height":20}"#].concat().into())).await.unwrap();
        ws.send(Message::Binary([&[0u8][..], b"stty size; exit 0\n"].concat().into())).await.unwrap();
        let mut got = Default::default();
        ws_wait_for(&mut ws, &mut got, 1, "20 90").await;
        let rest = drain(&mut ws).await;
        let status: serde_json::Value = serde_json::from_str(&text(&rest, 3)).unwrap();
        assert_eq!(status["status"], "Success", "{status}");

        // base64 WebSocket protocols: text messages.
        let url = rt.exec(exec_req(&cid, sh("read x; echo b64 $x"), Streams { stdin: true, stdout: true, ..Default::default() })).await.unwrap().into_inner().url;
        let (mut ws, proto) = connect(&url, "v4.base64.channel.k8s.io").await.unwrap();
        assert_eq!(proto, "v4.base64.channel.k8s.io");
        ws.send(Message::Text("0aGkK".into())).await.unwrap(); // "hi\n"
        let mut got = Default::default();
        ws_wait_for(&mut ws, &mut got, 1, "b64 hi").await;
        ws_wait_for(&mut ws, &mut got, 3, "Success").await;

        rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
        remove_pod(&mut rt, &sid).await;
    });
    drop(server);
    pod.check_cgroups();
}
