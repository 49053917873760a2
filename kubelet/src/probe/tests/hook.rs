use super::*;
use k8s_openapi::api::core::v1::{LifecycleHandler, SleepAction};

fn exec_hook(cmd: &[&str]) -> LifecycleHandler {
    LifecycleHandler {
        exec: exec_probe(cmd).exec,
        ..Default::default()
    }
}

fn in_secs(s: u64) -> Instant {
    Instant::now() + Duration::from_secs(s)
}

#[tokio::test]
async fn exec_hook_passes_and_fails_with_kubelet_message() {
    let exec = FakeExec::default();
    run_hook(&exec_hook(&["exit", "0"]), &local_target(), &exec, in_secs(30))
        .await
        .unwrap();
    let err = run_hook(
        &exec_hook(&["exit", "3", "so", "bad"]),
        &local_target(),
        &exec,
        in_secs(30),
    )
    .await
    .unwrap_err();
    assert!(!err.deadline_exceeded);
    assert_eq!(
        err.event_message("app", "web_default(1234)"),
        "Exec lifecycle hook ([exit 3 so bad]) for Container \"app\" in Pod \"web_default(1234)\" failed - \
         error: command 'exit 3 so bad' exited with 3: bad, message: \"sobad\""
    );
    let err = run_hook(&exec_hook(&["error"]), &local_target(), &exec, in_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err.error, "container \"c1\" is not running");
}

#[tokio::test(start_paused = true)]
async fn exec_hook_is_cut_at_the_deadline() {
    let exec = FakeExec::default();
    let err = run_hook(&exec_hook(&["hang"]), &local_target(), &exec, in_secs(30))
        .await
        .unwrap_err();
    assert!(err.deadline_exceeded);
    assert_eq!(
        exec.calls.lock().unwrap()[0].2,
        Duration::from_secs(30),
        "the time left is the exec timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn sleep_hook_honours_the_deadline() {
    let sleep = |seconds| LifecycleHandler {
        sleep: Some(SleepAction { seconds }),
        ..Default::default()
    };
    let start = Instant::now();
    run_hook(&sleep(5), &local_target(), &NoExec, in_secs(30))
        .await
        .unwrap();
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
    let start = Instant::now();
    let err = run_hook(&sleep(60), &local_target(), &NoExec, in_secs(30))
        .await
        .unwrap_err();
    assert_eq!(Instant::now() - start, Duration::from_secs(30));
    assert!(err.deadline_exceeded);
    assert_eq!(
        err.event_message("app", "p"),
        "Sleep lifecycle hook (60) for Container \"app\" in Pod \"p\" failed - error: container terminated before sleep hook finished"
    );
}

#[tokio::test]
async fn http_hook_sends_lifecycle_user_agent_and_ignores_status() {
    let server = HttpServer::local().await;
    let hook = |path: &str| LifecycleHandler {
        http_get: Some(http_action(server.port, path)),
        ..Default::default()
    };
    run_hook(&hook("/prestop"), &local_target(), &NoExec, in_secs(30))
        .await
        .unwrap();
    run_hook(&hook("/status/500"), &local_target(), &NoExec, in_secs(30))
        .await
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].uri.path(), "/prestop");
    assert_eq!(
        seen[0].headers["user-agent"],
        format!("kube-lifecycle/{KUBE_VERSION}").as_str()
    );
    assert_eq!(seen.len(), 2);

    let port = closed_port().await;
    let closed = LifecycleHandler {
        http_get: Some(http_action(port, "/x")),
        ..Default::default()
    };
    let err = run_hook(&closed, &local_target(), &NoExec, in_secs(30))
        .await
        .unwrap_err();
    let msg = err.event_message("app", "p");
    assert!(
        msg.starts_with("HTTP lifecycle hook (/x) for Container \"app\" in Pod \"p\" failed - error: Get "),
        "{msg}"
    );
}

#[tokio::test]
async fn https_hook_falls_back_to_http_without_authorization() {
    let server = HttpServer::local().await;
    let mut action = http_action(server.port, "/hook");
    action.scheme = Some("HTTPS".into());
    action.http_headers = Some(vec![header("Authorization", "Bearer secret"), header("X-Keep", "1")]);
    let hook = LifecycleHandler {
        http_get: Some(action),
        ..Default::default()
    };
    run_hook(&hook, &local_target(), &NoExec, in_secs(30)).await.unwrap();
    let seen: Vec<_> = server.seen().into_iter().filter(|s| s.uri.path() == "/hook").collect();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(seen[0].headers["x-keep"], "1");
}

#[tokio::test]
async fn invalid_handlers() {
    let tcp = LifecycleHandler {
        tcp_socket: tcp_probe(80).tcp_socket,
        ..Default::default()
    };
    let err = run_hook(&tcp, &local_target(), &NoExec, in_secs(1)).await.unwrap_err();
    assert_eq!(err.action, HookAction::Invalid);
    assert!(err
        .event_message("a", "p")
        .starts_with("Cannot run handler: invalid handler: tcpSocket"));
    let err = run_hook(&LifecycleHandler::default(), &local_target(), &NoExec, in_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.action, HookAction::Invalid);
}
