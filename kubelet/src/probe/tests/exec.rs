use super::*;

#[tokio::test]
async fn exit_codes() {
    let exec = FakeExec::default();
    assert_eq!(
        probe_once(&exec_probe(&["exit", "0"]), &local_target(), &exec).await,
        ProbeOutcome::Success
    );
    let outcome = probe_once(&exec_probe(&["exit", "1", "not ", "ready"]), &local_target(), &exec).await;
    assert_eq!(outcome, ProbeOutcome::Failure("not ready".into()));
    assert_eq!(
        outcome.event(ProbeKind::Liveness).unwrap(),
        ("Unhealthy", "Liveness probe failed: not ready".into())
    );
    let calls = exec.calls.lock().unwrap();
    assert_eq!(calls[0].0, "c1");
    assert_eq!(
        calls[0].2,
        Duration::from_secs(1),
        "the default timeoutSeconds is passed on"
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_fail() {
    let exec = FakeExec::default();
    let mut probe = exec_probe(&["hang"]);
    probe.timeout_seconds = Some(5);
    let outcome = probe_once(&probe, &local_target(), &exec).await;
    assert_eq!(outcome, ProbeOutcome::Failure("command \"hang\" timed out".into()));
    assert_eq!(exec.calls.lock().unwrap()[0].2, Duration::from_secs(5));
    // The runner reporting the timeout itself.
    let outcome = probe_once(&exec_probe(&["timedout", "x"]), &local_target(), &exec).await;
    assert_eq!(
        outcome,
        ProbeOutcome::Failure("command \"timedout x\" timed out".into())
    );
}

#[tokio::test]
async fn runner_errors_are_unknown() {
    let outcome = probe_once(&exec_probe(&["error"]), &local_target(), &FakeExec::default()).await;
    assert_eq!(outcome, ProbeOutcome::Unknown("container \"c1\" is not running".into()));
    let outcome = probe_once(&exec_probe(&[]), &local_target(), &FakeExec::default()).await;
    assert!(matches!(outcome, ProbeOutcome::Unknown(_)));
}

#[tokio::test]
async fn output_is_cut_at_10k() {
    let big = "x".repeat(20_000);
    let outcome = probe_once(
        &exec_probe(&["exit", "2", &big, "tail"]),
        &local_target(),
        &FakeExec::default(),
    )
    .await;
    assert_eq!(failure_message(&outcome).len(), 10 * 1024);
}
