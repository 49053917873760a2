use super::*;

#[tokio::test]
async fn open_port_passes_and_closed_port_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(
        probe_once(&tcp_probe(port), &local_target(), &NoExec).await,
        ProbeOutcome::Success
    );
    drop(listener);
    let outcome = probe_once(&tcp_probe(port), &local_target(), &NoExec).await;
    let msg = failure_message(&outcome);
    assert!(msg.starts_with(&format!("dial tcp 127.0.0.1:{port}: ")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

#[tokio::test]
async fn explicit_host_and_named_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // No pod IP: the explicit host is used.
    let target = Target {
        ports: [("db".to_string(), port)].into(),
        ..Default::default()
    };
    let probe = Probe {
        tcp_socket: Some(TCPSocketAction {
            host: Some("127.0.0.1".into()),
            port: IntOrString::String("db".into()),
        }),
        ..Default::default()
    };
    assert_eq!(probe_once(&probe, &target, &NoExec).await, ProbeOutcome::Success);
    // No host, no pod IP, no network namespace: nothing to connect to.
    let outcome = probe_once(&tcp_probe(port), &target, &NoExec).await;
    assert!(
        matches!(&outcome, ProbeOutcome::Unknown(m) if m.contains("no IP")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn no_handler_and_bad_ports_are_errors() {
    let outcome = probe_once(&Probe::default(), &local_target(), &NoExec).await;
    assert_eq!(outcome, ProbeOutcome::Unknown("missing probe handler".into()));
    for port in [0, 70000, -1] {
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                host: None,
                port: IntOrString::Int(port),
            }),
            ..Default::default()
        };
        let outcome = probe_once(&probe, &local_target(), &NoExec).await;
        assert_eq!(outcome, ProbeOutcome::Unknown(format!("invalid port number: {port}")));
    }
}

#[test]
fn named_ports_of_a_container() {
    use k8s_openapi::api::core::v1::{Container, ContainerPort};
    let port = |name: Option<&str>, n| ContainerPort {
        name: name.map(str::to_string),
        container_port: n,
        ..Default::default()
    };
    let c = Container {
        ports: Some(vec![
            port(Some("web"), 8080),
            port(None, 9000),
            port(Some("bad"), 70000),
        ]),
        ..Default::default()
    };
    let ports = Target::named_ports(&c);
    assert_eq!(ports, [("web".to_string(), 8080)].into());
    let target = Target {
        ports,
        ..Default::default()
    };
    assert_eq!(target.resolve_port(&IntOrString::String("web".into())), Ok(8080));
    assert_eq!(target.resolve_port(&IntOrString::Int(443)), Ok(443));
}
