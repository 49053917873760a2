//! The CRI streaming server: Exec and PortForward URLs, and the Kubernetes
//! channel protocols over WebSocket with a tokio-tungstenite client.

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
        let e = rt.exec(cri::ExecRequest { tty: true, stderr: false, ..exec(sh("true"), false) }).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
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
