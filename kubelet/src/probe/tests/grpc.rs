use super::*;

#[tokio::test]
async fn health_check_statuses() {
    let server = GrpcServer::local().await;
    let check = |service: Option<&'static str>| {
        let port = server.port;
        async move { probe_once(&grpc_probe(port, service), &local_target(), &NoExec).await }
    };
    assert_eq!(check(None).await, ProbeOutcome::Success);
    assert_eq!(check(Some("berth.Up")).await, ProbeOutcome::Success);
    assert_eq!(
        failure_message(&check(Some("berth.Down")).await),
        "service unhealthy (responded with \"NOT_SERVING\")"
    );
    let unknown = check(Some("berth.Nope")).await;
    let msg = failure_message(&unknown);
    assert!(
        msg.starts_with("error: health rpc probe failed: rpc error: code = NotFound"),
        "{msg}"
    );
}

#[tokio::test]
async fn closed_port_fails_to_connect() {
    let port = closed_port().await;
    let outcome = probe_once(&grpc_probe(port, None), &local_target(), &NoExec).await;
    let msg = failure_message(&outcome);
    assert!(
        msg.starts_with(&format!("error: failed to connect service at \"127.0.0.1:{port}\"")),
        "{msg}"
    );
}

#[tokio::test]
async fn tls_mode() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = GrpcServer::on(listener, Some(tls_acceptor(&[b"h2"]))).await;
    let mut probe = grpc_probe(server.port, Some("berth.Up"));
    probe.grpc.as_mut().unwrap().mode = Some("TLS".into());
    assert_eq!(
        probe_once(&probe, &local_target(), &NoExec).await,
        ProbeOutcome::Success
    );
    // Plaintext against a TLS server fails.
    probe.grpc.as_mut().unwrap().mode = Some("Plaintext".into());
    probe.timeout_seconds = Some(1);
    assert!(matches!(
        probe_once(&probe, &local_target(), &NoExec).await,
        ProbeOutcome::Failure(_)
    ));
}
