use super::*;

async fn get(server_port: u16, path: &str) -> ProbeOutcome {
    probe_once(&http_probe(http_action(server_port, path)), &local_target(), &NoExec).await
}

#[tokio::test]
async fn success_codes_pass_and_others_fail() {
    let server = HttpServer::local().await;
    for code in [200, 204, 299] {
        assert_eq!(
            get(server.port, &format!("/status/{code}")).await,
            ProbeOutcome::Success,
            "status {code}"
        );
    }
    for code in [400, 404, 500, 503] {
        let outcome = get(server.port, &format!("/status/{code}")).await;
        assert_eq!(
            failure_message(&outcome),
            format!("HTTP probe failed with statuscode: {code}")
        );
    }
    // A 3xx without a Location is not a redirect to follow: it passes with a warning.
    assert!(matches!(
        get(server.port, "/status/304").await,
        ProbeOutcome::Warning(_)
    ));
}

#[tokio::test]
async fn request_carries_kubelet_headers() {
    let server = HttpServer::local().await;
    let mut action = http_action(server.port, "healthz?full=1");
    action.http_headers = Some(vec![
        header("X-Custom", "a"),
        header("X-Custom", "b"),
        header("Host", "web.example"),
    ]);
    assert_eq!(
        probe_once(&http_probe(action), &local_target(), &NoExec).await,
        ProbeOutcome::Success
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.uri.path(), "/healthz");
    assert_eq!(req.uri.query(), Some("full=1"));
    assert_eq!(req.headers["user-agent"], format!("kube-probe/{KUBE_VERSION}").as_str());
    assert_eq!(req.headers["accept"], "*/*");
    assert_eq!(req.headers["host"], "web.example");
    let custom: Vec<_> = req
        .headers
        .get_all("x-custom")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(custom, ["a", "b"]);
    assert_eq!(req.version, ::http::Version::HTTP_11);

    // Without a Host header, Host is the pod IP and port; a User-Agent header replaces kubelet's.
    let mut action = http_action(server.port, "/");
    action.http_headers = Some(vec![header("User-Agent", "mine")]);
    assert_eq!(
        probe_once(&http_probe(action), &local_target(), &NoExec).await,
        ProbeOutcome::Success
    );
    let req = server.seen().pop().unwrap();
    assert_eq!(req.headers["host"], format!("127.0.0.1:{}", server.port).as_str());
    assert_eq!(req.headers["user-agent"], "mine");
}

#[tokio::test]
async fn named_ports_resolve() {
    let server = HttpServer::local().await;
    let mut target = local_target();
    target.ports.insert("web".into(), server.port);
    let mut action = http_action(0, "/");
    action.port = IntOrString::String("web".into());
    assert_eq!(
        probe_once(&http_probe(action.clone()), &target, &NoExec).await,
        ProbeOutcome::Success
    );
    // A number in a string works too; an unknown name is a prober error, not a failure.
    action.port = IntOrString::String(server.port.to_string());
    assert_eq!(
        probe_once(&http_probe(action.clone()), &target, &NoExec).await,
        ProbeOutcome::Success
    );
    action.port = IntOrString::String("metrics".into());
    let outcome = probe_once(&http_probe(action), &target, &NoExec).await;
    assert!(
        matches!(&outcome, ProbeOutcome::Unknown(m) if m.contains("\"metrics\"")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn redirects_are_followed_only_to_the_same_host() {
    let first = HttpServer::local().await;
    let second = HttpServer::local().await;
    // Same host name, another port: followed.
    let to = format!("http://127.0.0.1:{}/status/200", second.port);
    assert_eq!(
        get(first.port, &format!("/redirect?to={to}")).await,
        ProbeOutcome::Success
    );
    assert_eq!(second.seen().len(), 1);
    // Followed to a failing page: fails.
    let to = format!("http://127.0.0.1:{}/status/500", second.port);
    assert_eq!(
        failure_message(&get(first.port, &format!("/redirect?to={to}")).await),
        "HTTP probe failed with statuscode: 500"
    );
    // A relative redirect stays on the same server.
    assert_eq!(get(first.port, "/redirect?to=/status/201").await, ProbeOutcome::Success);
    // Another host name: not followed; the 302 passes with kubelet's warning.
    let to = format!("http://localhost:{}/status/200", second.port);
    let before = second.seen().len();
    let outcome = get(first.port, &format!("/redirect?to={to}")).await;
    assert_eq!(
        outcome,
        ProbeOutcome::Warning("Probe terminated redirects, Response body: moved".into())
    );
    assert_eq!(second.seen().len(), before);
    // A loop stops after 10 requests.
    let outcome = get(first.port, "/loop").await;
    assert!(
        failure_message(&outcome).ends_with("stopped after 10 redirects"),
        "{outcome:?}"
    );
    assert_eq!(first.seen().iter().filter(|s| s.uri.path() == "/loop").count(), 10);
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = HttpServer::local().await;
    let mut probe = http_probe(http_action(server.port, "/slow"));
    probe.timeout_seconds = Some(1);
    let outcome = probe_once(&probe, &local_target(), &NoExec).await;
    let msg = failure_message(&outcome);
    assert!(
        msg.contains("context deadline exceeded") && msg.contains("/slow"),
        "{msg}"
    );
}

#[tokio::test]
async fn closed_port_fails() {
    let port = closed_port().await;
    let outcome = get(port, "/").await;
    let msg = failure_message(&outcome);
    assert!(
        msg.starts_with(&format!("Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}:")),
        "{msg}"
    );
}

#[tokio::test]
async fn https_skips_certificate_verification() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = HttpServer::on(listener, Some(tls_acceptor(&[b"http/1.1"])));
    let mut action = http_action(server.port, "/status/200");
    action.scheme = Some("HTTPS".into());
    assert_eq!(
        probe_once(&http_probe(action.clone()), &local_target(), &NoExec).await,
        ProbeOutcome::Success
    );
    action.path = Some("/status/500".into());
    assert!(matches!(
        probe_once(&http_probe(action), &local_target(), &NoExec).await,
        ProbeOutcome::Failure(_)
    ));
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn https_probe_of_a_plain_http_server_fails() {
    let server = HttpServer::local().await;
    let mut action = http_action(server.port, "/");
    action.scheme = Some("HTTPS".into());
    let outcome = probe_once(&http_probe(action), &local_target(), &NoExec).await;
    assert!(
        failure_message(&outcome).ends_with("http: server gave HTTP response to HTTPS client"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn h2c_with_protocol_http2() {
    let server = HttpServer::local().await;
    let mut action = http_action(server.port, "/status/200");
    action.protocol = Some("HTTP2".into());
    assert_eq!(
        probe_once(&http_probe(action.clone()), &local_target(), &NoExec).await,
        ProbeOutcome::Success
    );
    let req = server.seen().pop().unwrap();
    assert_eq!(req.version, ::http::Version::HTTP_2);
    assert_eq!(req.headers["user-agent"], format!("kube-probe/{KUBE_VERSION}").as_str());
    action.protocol = Some("SPDY".into());
    assert!(matches!(
        probe_once(&http_probe(action), &local_target(), &NoExec).await,
        ProbeOutcome::Unknown(_)
    ));
}
