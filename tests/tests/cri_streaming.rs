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
    // The streaming server's address is a flag (and a config setting);
    // an unspecified IP is refused, since the URLs carry the address.
    let bad = berth_tests::TestRoot::new();
    let out = bad.berth(&["cri", "--socket", bad.path().join("s.sock").to_str().unwrap(), "--stream-address", "0.0.0.0:10010"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream_address 0.0.0.0:10010"), "{}", String::from_utf8_lossy(&out.stderr));
    let port = berth_tests::free_port().unwrap();
    let server = CriServer::start_with_busybox_and(&["--stream-address", &format!("127.0.0.1:{port}")]);
    let pod = Pod::new("spdy");
    let ctr = container("main", vec!["sleep".into(), "100000".into()]);
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, cid) = berth_tests::run_pod_with_container(&mut rt, &pod.config, &ctr).await;

        // exec -s: stdin, stdout, stderr and a non-zero exit, every SPDY version.
        for proto in SPDY_VERSIONS {
            let url = rt.exec(exec_req(&cid, sh("read x; echo got $x; echo err >&2; exit 3"), PIPES)).await.unwrap().into_inner().url;
            assert!(url.starts_with(&format!("http://127.0.0.1:{port}/exec/")), "{url}");
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

/// `a%20b+c` → `a b c` (query string decoding).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A container as the fake API server shows it.
#[derive(Clone)]
struct ApiContainer {
    name: String,
    id: String,
    stdin: bool,
    tty: bool,
}

/// A stand-in for the API server in front of berth, as far as kubectl
/// exec, attach and port-forward need one: it answers GETs of the pod and
/// turns `pods/exec`, `pods/attach` and `pods/portforward` into CRI calls,
/// then relays the upgraded connection to the streaming URL unchanged (as
/// the API server and kubelet do), so kubectl talks to berth's streaming
/// server with its own SPDY and WebSocket code.
async fn fake_api(rt: Rt, pod: String, sid: String, containers: Vec<ApiContainer>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else { return };
            let (mut rt, pod, sid, containers) = (rt.clone(), pod.clone(), sid.clone(), containers.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = Vec::new();
                let end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    match c.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let first = head.lines().next().unwrap_or_default().to_string();
                let target = first.split_whitespace().nth(1).unwrap_or_default().to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let q: Vec<(String, String)> = query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_string(), unescape(v))).collect();
                let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or_default();
                let flag = |k: &str| matches!(get(k), "true" | "1");
                let base = format!("/api/v1/namespaces/default/pods/{pod}");
                let json = |v: serde_json::Value| {
                    let b = v.to_string();
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len())
                };
                let ctr = || containers.iter().find(|x| x.name == get("container")).or(containers.first()).unwrap().clone();
                let discovery = match path {
                    "/version" => Some(serde_json::json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"})),
                    "/api" => Some(serde_json::json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
                    "/apis" => Some(serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})),
                    "/api/v1" => Some(serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"], "shortNames": ["po"]},
                        {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                        {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
                        {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
                    ]})),
                    _ => None,
                };
                if let Some(d) = discovery {
                    let _ = c.write_all(json(d).as_bytes()).await;
                    return;
                }
                let url = if path == base {
                    let specs: Vec<_> = containers.iter().map(|x| serde_json::json!({"name": x.name, "image": "busybox", "stdin": x.stdin, "tty": x.tty})).collect();
                    let statuses: Vec<_> = containers.iter().map(|x| serde_json::json!({"name": x.name, "ready": true, "restartCount": 0, "image": "busybox", "imageID": "", "state": {"running": {}}})).collect();
                    let p = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": "default"},
                        "spec": {"containers": specs}, "status": {"phase": "Running", "containerStatuses": statuses}});
                    let _ = c.write_all(json(p).as_bytes()).await;
                    return;
                } else if path == format!("{base}/exec") {
                    let cmd = q.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
                    let r = cri::ExecRequest { container_id: ctr().id, cmd, stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty") };
                    rt.exec(r).await.map(|r| r.into_inner().url)
                } else if path == format!("{base}/attach") {
                    let r = cri::AttachRequest { container_id: ctr().id, stdin: flag("stdin"), stdout: flag("stdout"), stderr: flag("stderr"), tty: flag("tty") };
                    rt.attach(r).await.map(|r| r.into_inner().url)
                } else if path == format!("{base}/portforward") {
                    rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: sid, port: vec![] }).await.map(|r| r.into_inner().url)
                } else {
                    let _ = c.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
                    eprintln!("fake API server: no {first}");
                    return;
                };
                let url = match url {
                    Ok(u) => u,
                    Err(e) => {
                        let m = e.message().to_string();
                        let _ = c.write_all(format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{m}", m.len()).as_bytes()).await;
                        return;
                    }
                };
                // Relay the request, its path replaced by the streaming URL's.
                let rest = url.strip_prefix("http://").unwrap();
                let (host, upath) = rest.split_once('/').unwrap();
                let mut up = tokio::net::TcpStream::connect(host).await.unwrap();
                let method = first.split_whitespace().next().unwrap();
                let mut req = format!("{method} /{upath} HTTP/1.1\r\n");
                for l in head.lines().skip(1).filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("host:")) {
                    req.push_str(l);
                    req.push_str("\r\n");
                }
                req.push_str(&format!("Host: {host}\r\n\r\n"));
                up.write_all(req.as_bytes()).await.unwrap();
                up.write_all(&buf[end..]).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    addr
}

/// `kubectl` pointed at `api`, with no kubeconfig of the machine.
fn kubectl(api: &str, kubeconfig: &std::path::Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("kubectl");
    c.env("KUBECONFIG", kubeconfig).arg(format!("--server=http://{api}")).arg("--namespace=default").kill_on_drop(true);
    c
}

#[test]
fn kubectl_exec_attach_and_port_forward() {
    require_root();
    // kubectl is the reference client (client-go's SPDY and WebSocket
    // code); hack/setup.sh installs Debian's when there is none. Clients
    // before 1.29 ignore KUBECTL_REMOTE_COMMAND_WEBSOCKETS and use SPDY.
    assert!(
        std::process::Command::new("kubectl").arg("version").arg("--client").output().is_ok(),
        "kubectl is not installed (hack/setup.sh installs it)"
    );
    let server = CriServer::start_with_busybox();
    let pod = Pod::new("kubectl");
    let web = container("web", sh("mkdir -p /www && echo hello-kubectl > /www/index.html && exec httpd -f -p 8080 -h /www"));
    let cat = cri::ContainerConfig { stdin: true, ..container("cat", vec!["cat".into()]) };
    let kcfg = tempfile::tempdir().unwrap();
    let kubeconfig = kcfg.path().join("config");
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, web_id) = berth_tests::run_pod_with_container(&mut rt, &pod.config, &web).await;
        let cat_id = start_container(&mut rt, &sid, &pod, &cat).await;
        let api = fake_api(
            rt.clone(),
            "kubectl".into(),
            sid.clone(),
            vec![
                ApiContainer { name: "web".into(), id: web_id.clone(), stdin: false, tty: false },
                ApiContainer { name: "cat".into(), id: cat_id.clone(), stdin: true, tty: false },
            ],
        )
        .await;

        // exec with stdin, over SPDY and over WebSocket.
        for ws in ["false", "true"] {
            eprintln!("kubectl exec -i, websockets={ws}");
            let mut k = kubectl(&api, &kubeconfig);
            k.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", ws).args(["exec", "-i", "kubectl", "-c", "web", "--", "sh", "-c", "read x; echo got $x; echo err >&2; exit 3"]);
            k.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            let mut child = k.spawn().unwrap();
            use tokio::io::AsyncWriteExt;
            child.stdin.take().unwrap().write_all(b"hi\n").await.unwrap();
            let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output()).await.expect("kubectl exec hung").unwrap();
            let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.status.code(), Some(3), "websockets={ws}: {o} / {e}");
            assert_eq!(o, "got hi\n", "websockets={ws}: {e}");
            assert!(e.starts_with("err\n"), "websockets={ws}: {e}");
        }

        // exec -it on a terminal over both: kubectl sends its terminal's size.
        for ws in ["false", "true"] {
            eprintln!("kubectl exec -it, websockets={ws}");
            let pty = nix::pty::openpty(Some(&nix::pty::Winsize { ws_row: 33, ws_col: 111, ws_xpixel: 0, ws_ypixel: 0 }), None).unwrap();
            let slave = std::fs::File::from(pty.slave);
            let mut k = kubectl(&api, &kubeconfig);
            k.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", ws).args(["exec", "-it", "kubectl", "-c", "web", "--", "sh", "-c", "sleep 1; stty size; exit 4"]);
            k.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave);
            let child = k.spawn().unwrap();
            // kubectl holds the only slave fds now.
            drop(k);
            let master = std::fs::File::from(pty.master);
            let reader = std::thread::spawn(move || {
                use std::io::Read;
                let mut out = Vec::new();
                let mut m = master;
                let mut b = [0u8; 4096];
                // EIO once kubectl (the last slave holder) exits.
                while let Ok(n) = m.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&b[..n]);
                }
                String::from_utf8_lossy(&out).into_owned()
            });
            let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output()).await.expect("kubectl exec -it hung").unwrap();
            let screen = tokio::time::timeout(std::time::Duration::from_secs(30), tokio::task::spawn_blocking(move || reader.join().unwrap()))
                .await
                .expect("the terminal stayed open after kubectl exited")
                .unwrap();
            assert_eq!(out.status.code(), Some(4), "websockets={ws}: {screen}");
            assert!(screen.contains("33 111"), "websockets={ws}: {screen:?}");
        }

        // attach to `cat` with stdin.
        for ws in ["false", "true"] {
            eprintln!("kubectl attach -i, websockets={ws}");
            let mut k = kubectl(&api, &kubeconfig);
            k.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", ws).args(["attach", "-i", "kubectl", "-c", "cat", "-q"]);
            k.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            let mut child = k.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let line = format!("attached-{ws}\n");
            let mut got = Vec::new();
            // Input sent before the session is up is lost with it: resend.
            let fut = async {
                while !String::from_utf8_lossy(&got).contains(&line) {
                    stdin.write_all(line.as_bytes()).await.unwrap();
                    let mut b = [0u8; 4096];
                    if let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_millis(500), stdout.read(&mut b)).await {
                        got.extend_from_slice(&b[..n]);
                    }
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(60), fut).await.expect("no echo through kubectl attach");
            drop(child);
        }
        assert!(pod.log(&cat).contains("attached-false"), "{}", pod.log(&cat));

        // port-forward over SPDY.
        eprintln!("kubectl port-forward");
        let port = berth_tests::free_port().unwrap();
        let mut k = kubectl(&api, &kubeconfig);
        k.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false").args(["port-forward", "pod/kubectl", &format!("{port}:8080"), "--address=127.0.0.1"]);
        k.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut pf = k.spawn().unwrap();
        let mut page = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            // Blocking, so off the runtime that relays kubectl's connection.
            match tokio::task::spawn_blocking(move || berth_tests::http_get(&format!("127.0.0.1:{port}"), "/index.html")).await.unwrap() {
                Ok(p) if p.contains("hello-kubectl") => {
                    page = p;
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        let pf_out = if page.is_empty() {
            let _ = pf.start_kill();
            let o = pf.wait_with_output().await.unwrap();
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        } else {
            drop(pf);
            String::new()
        };
        assert!(page.starts_with("HTTP/1.") && page.contains("hello-kubectl"), "{page}\nkubectl port-forward: {pf_out}");

        for id in [&web_id, &cat_id] {
            rt.remove_container(cri::RemoveContainerRequest { container_id: id.to_string() }).await.unwrap();
        }
        remove_pod(&mut rt, &sid).await;
    });
    drop(server);
    pod.check_cgroups();
}

async fn container_state(rt: &mut Rt, cid: &str) -> (i32, i32) {
    let s = rt.container_status(cri::ContainerStatusRequest { container_id: cid.into(), verbose: false }).await.unwrap().into_inner().status.unwrap();
    (s.state, s.exit_code)
}

/// Waits for a container to exit; its exit code.
async fn wait_exit(rt: &mut Rt, cid: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = rt.container_status(cri::ContainerStatusRequest { container_id: cid.into(), verbose: false }).await.unwrap().into_inner().status.unwrap();
        if s.state == cri::ContainerState::ContainerExited as i32 {
            if s.exit_code == 255 {
                eprintln!("container {cid} exited 255: {} {}", s.reason, s.message);
            }
            return s.exit_code;
        }
        assert!(std::time::Instant::now() < deadline, "container {cid} did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn attach_and_port_forward_over_spdy() {
    require_root();
    let server = CriServer::start_with_busybox();
    let pod = Pod::new("attach");
    let web = container("web", sh("mkdir -p /www && echo hello-over-spdy > /www/index.html && exec httpd -f -p 8080 -h /www"));
    let cat = cri::ContainerConfig { stdin: true, ..container("cat", vec!["cat".into()]) };
    let once = cri::ContainerConfig { stdin: true, stdin_once: true, ..container("once", vec!["cat".into()]) };
    let term = cri::ContainerConfig { stdin: true, tty: true, ..container("term", vec!["sh".into()]) };
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        let (sid, web_id) = berth_tests::run_pod_with_container(&mut rt, &pod.config, &web).await;
        let cat_id = start_container(&mut rt, &sid, &pod, &cat).await;
        let once_id = start_container(&mut rt, &sid, &pod, &once).await;
        let term_id = start_container(&mut rt, &sid, &pod, &term).await;
        let attach = |cid: &str, s: Streams| cri::AttachRequest { container_id: cid.into(), stdin: s.stdin, stdout: s.stdout, stderr: s.stderr, tty: s.tty };

        // Validation.
        let e = rt.attach(attach("nope", PIPES)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = rt.attach(attach(&cat_id, Streams { stderr: true, ..TTY })).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // Attach to `cat` over SPDY: input in, output out, and into the log.
        let url = rt.attach(attach(&cat_id, PIPES)).await.unwrap().into_inner().url;
        assert!(url.contains("/attach/"), "{url}");
        let mut c = SpdyCommand::start(&url, &["v4.channel.k8s.io"], PIPES).await.unwrap();
        c.stdin("hello\n").await;
        c.wait_stdout("hello\n").await;
        assert!(pod.log(&cat).contains("stdout F hello"), "{}", pod.log(&cat));
        // Detach; without stdin_once the container's stdin stays open.
        drop(c);
        let url = rt.attach(attach(&cat_id, PIPES)).await.unwrap().into_inner().url;
        let (mut ws, _) = connect(&url, "v5.channel.k8s.io").await.unwrap();
        ws.send(Message::Binary([&[0u8][..], b"again\n"].concat().into())).await.unwrap();
        let mut got = Default::default();
        ws_wait_for(&mut ws, &mut got, 1, "again\n").await;
        ws.close(None).await.unwrap();
        drop(ws);
        assert_eq!(container_state(&mut rt, &cat_id).await.0, cri::ContainerState::ContainerRunning as i32);

        // stdin_once: the end of the session's stdin is the container's EOF.
        let url = rt.attach(attach(&once_id, PIPES)).await.unwrap().into_inner().url;
        let mut c = SpdyCommand::start(&url, &["v4.channel.k8s.io"], PIPES).await.unwrap();
        c.stdin("last words\n").await;
        c.wait_stdout("last words\n").await;
        c.close_stdin().await;
        let (out, _, status) = c.finish().await;
        assert_eq!(out, "last words\n");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&status).unwrap()["status"], "Success", "{status}");
        assert_eq!(wait_exit(&mut rt, &once_id).await, 0);
        let e = rt.attach(attach(&once_id, PIPES)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

        // A container on a terminal: resize, then the shell exits.
        let url = rt.attach(attach(&term_id, TTY)).await.unwrap().into_inner().url;
        let mut c = SpdyCommand::start(&url, &["v4.channel.k8s.io"], TTY).await.unwrap();
        c.resize(100, 30).await;
        c.stdin("stty size\n").await;
        c.wait_stdout("30 100").await;
        c.stdin("exit 5\n").await;
        let (_, _, status) = c.finish().await;
        assert!(status.contains("Success"), "{status}");
        assert_eq!(wait_exit(&mut rt, &term_id).await, 5);
        assert!(pod.log(&term).contains("30 100"), "{}", pod.log(&term));

        // Port-forward over SPDY: two requests on one connection.
        let url = rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: sid.clone(), port: vec![8080] }).await.unwrap().into_inner().url;
        let (mut conn, proto) = SpdyClient::connect(&url, &["portforward.k8s.io"]).await.unwrap();
        assert_eq!(proto, "portforward.k8s.io");
        // A stream without a port is refused.
        let bad = conn.open(&[("streamType", "data")]).await;
        assert!(conn.reset.contains(&bad));
        let mut page = String::new();
        for request in 0..50 {
            let rid = request.to_string();
            let error = conn.open(&[("streamType", "error"), ("port", "8080"), ("requestID", &rid)]).await;
            conn.fin(error).await;
            let data = conn.open(&[("streamType", "data"), ("port", "8080"), ("requestID", &rid)]).await;
            conn.write(data, b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n").await;
            conn.wait_fin(error).await;
            conn.wait_fin(data).await;
            if !conn.text(error).is_empty() {
                // httpd not listening yet.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            page = conn.text(data);
            if request > 0 && !page.is_empty() {
                break;
            }
        }
        assert!(page.starts_with("HTTP/1.") && page.contains("200") && page.contains("hello-over-spdy"), "{page}");
        // Nothing listens on 9: the error stream says so.
        let error = conn.open(&[("streamType", "error"), ("port", "9"), ("requestID", "x")]).await;
        let data = conn.open(&[("streamType", "data"), ("port", "9"), ("requestID", "x")]).await;
        conn.wait_fin(error).await;
        assert!(conn.text(error).contains("error forwarding port 9"), "{}", conn.text(error));
        assert!(conn.finished.contains(&data) || { conn.wait_fin(data).await; true });
        drop(conn);

        for id in [&web_id, &cat_id, &once_id, &term_id] {
            rt.remove_container(cri::RemoveContainerRequest { container_id: id.to_string() }).await.unwrap();
        }
        remove_pod(&mut rt, &sid).await;
    });
    drop(server);
    pod.check_cgroups();
}

#[test]
fn terminals_on_runc_and_crun() {
    require_root();
    let server = CriServer::start_with_busybox();
    let pods: Vec<Pod> = ["runc", "crun"].iter().map(|h| Pod::new(&format!("tty-{h}"))).collect();
    let term = cri::ContainerConfig { stdin: true, tty: true, ..container("term", vec!["sh".into()]) };
    block_on(async {
        let mut rt = RuntimeServiceClient::new(server.channel().await);
        for (handler, pod) in ["runc", "crun"].iter().zip(&pods) {
            let sid = rt
                .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod.config.clone()), runtime_handler: handler.to_string() })
                .await
                .unwrap()
                .into_inner()
                .pod_sandbox_id;
            let cid = start_container(&mut rt, &sid, pod, &term).await;

            // exec -it: the runtime's console socket brings the terminal.
            let url = rt.exec(exec_req(&cid, vec!["sh".into()], TTY)).await.unwrap().into_inner().url;
            let mut c = SpdyCommand::start(&url, &["v4.channel.k8s.io"], TTY).await.unwrap();
            c.resize(77, 22).await;
            c.stdin("stty size; exit 0\n").await;
            c.wait_stdout("22 77").await;
            let (_, _, status) = c.finish().await;
            assert!(status.contains("Success"), "{handler}: {status}");

            // The container's own terminal, through attach.
            let url = rt.attach(cri::AttachRequest { container_id: cid.clone(), stdin: true, stdout: true, stderr: false, tty: true }).await.unwrap().into_inner().url;
            let mut c = SpdyCommand::start(&url, &["v4.channel.k8s.io"], TTY).await.unwrap();
            c.resize(88, 11).await;
            c.stdin("stty size\n").await;
            c.wait_stdout("11 88").await;
            c.stdin("exit 3\n").await;
            let (_, _, status) = c.finish().await;
            assert!(status.contains("Success"), "{handler}: {status}");
            assert_eq!(wait_exit(&mut rt, &cid).await, 3, "{handler}");

            rt.remove_container(cri::RemoveContainerRequest { container_id: cid }).await.unwrap();
            remove_pod(&mut rt, &sid).await;
        }
    });
    drop(server);
    for p in &pods {
        p.check_cgroups();
    }
}
