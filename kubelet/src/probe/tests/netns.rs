//! Probes into a real network namespace: the pod's 127.0.0.1 is not the host's.

use super::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A network namespace made with `ip netns add`, with lo up; deleted on drop.
struct TestNetns {
    name: String,
    path: PathBuf,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNetns {
    fn new() -> TestNetns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "berth-probe-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = TestNetns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A listener inside the namespace.
    async fn listen(&self, addr: SocketAddr) -> TcpListener {
        let sock = netns_tcp_socket(&self.path, addr.is_ipv6()).await.unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(addr).unwrap();
        sock.listen(16).unwrap()
    }

    fn target(&self) -> Target {
        Target {
            netns: Some(self.path.clone()),
            container_id: "c1".into(),
            ..Default::default()
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[tokio::test]
async fn probes_reach_loopback_inside_the_pod_namespace() {
    let ns = TestNetns::new();
    // A port that is free on the host, served only inside the namespace.
    let port = closed_port().await;
    let http = HttpServer::on(ns.listen(addr(port)).await, None);
    let target = ns.target();

    assert_eq!(
        probe_once(&http_probe(http_action(port, "/status/200")), &target, &NoExec).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        probe_once(&tcp_probe(port), &target, &NoExec).await,
        ProbeOutcome::Success
    );
    assert_eq!(http.seen()[0].headers["host"], format!("127.0.0.1:{port}").as_str());

    // The same probes from the host find the port closed.
    let host = Target {
        host_network: true,
        ..target.clone()
    };
    assert!(matches!(
        probe_once(&tcp_probe(port), &host, &NoExec).await,
        ProbeOutcome::Failure(_)
    ));
    let outcome = probe_once(&http_probe(http_action(port, "/")), &host, &NoExec).await;
    assert!(matches!(outcome, ProbeOutcome::Failure(_)), "{outcome:?}");
    assert!(tokio::net::TcpStream::connect(addr(port)).await.is_err());

    // Hooks go the same way.
    let hook = k8s_openapi::api::core::v1::LifecycleHandler {
        http_get: Some(http_action(port, "/poststart")),
        ..Default::default()
    };
    run_hook(&hook, &target, &NoExec, Instant::now() + Duration::from_secs(30))
        .await
        .unwrap();
    assert!(http.seen().iter().any(|s| s.uri.path() == "/poststart"));
}

#[tokio::test]
async fn grpc_reaches_the_pod_namespace() {
    let ns = TestNetns::new();
    let port = closed_port().await;
    let _grpc = GrpcServer::on(ns.listen(addr(port)).await, None).await;
    assert_eq!(
        probe_once(&grpc_probe(port, Some("berth.Up")), &ns.target(), &NoExec).await,
        ProbeOutcome::Success
    );
    let host = Target {
        host_network: true,
        ..ns.target()
    };
    assert!(matches!(
        probe_once(&grpc_probe(port, None), &host, &NoExec).await,
        ProbeOutcome::Failure(_)
    ));
}

#[tokio::test]
async fn pod_ip_inside_the_namespace() {
    let ns = TestNetns::new();
    // A documentation address that exists only inside the namespace.
    ip(&["-n", &ns.name, "addr", "add", "192.0.2.10/32", "dev", "lo"]);
    let pod_ip: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    let listener = ns.listen(SocketAddr::new(pod_ip, 8080)).await;
    let http = HttpServer::on(listener, None);
    let target = Target {
        pod_ip: Some(pod_ip),
        ..ns.target()
    };
    assert_eq!(
        probe_once(&http_probe(http_action(8080, "/")), &target, &NoExec).await,
        ProbeOutcome::Success
    );
    assert_eq!(http.seen()[0].headers["host"], "192.0.2.10:8080");
    // An explicit host equal to the pod IP also goes through the namespace.
    let mut action = http_action(8080, "/explicit");
    action.host = Some("192.0.2.10".into());
    assert_eq!(
        probe_once(&http_probe(action), &target, &NoExec).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        probe_once(&tcp_probe(8080), &target, &NoExec).await,
        ProbeOutcome::Success
    );
}

#[tokio::test]
async fn missing_namespace_is_named_in_the_failure() {
    let target = Target {
        netns: Some("/run/netns/berth-probe-missing".into()),
        ..Default::default()
    };
    let outcome = probe_once(&tcp_probe(80), &target, &NoExec).await;
    let msg = failure_message(&outcome);
    assert!(
        msg.contains("open network namespace /run/netns/berth-probe-missing"),
        "{msg}"
    );
}
