//! Worker tests run on Tokio's paused clock: periods and delays pass instantly and exactly.

use super::*;
use std::time::SystemTime;
use tokio::sync::mpsc;

fn scripted_probe(period: i32, success: i32, failure: i32) -> Probe {
    Probe {
        period_seconds: Some(period),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        termination_grace_period_seconds: Some(7),
        ..exec_probe(&["script"])
    }
}

/// Runs a worker until it ends by itself or `max_changes` result changes were seen; returns
/// every event.
async fn run(kind: ProbeKind, probe: Probe, exec: Arc<FakeExec>, max_changes: usize) -> (Vec<ProbeEvent>, bool) {
    let (tx, mut rx) = mpsc::channel(16);
    let worker = spawn_worker(kind, probe, Arc::new(local_target()), exec, tx, SystemTime::now());
    let mut events = Vec::new();
    let mut changes = 0;
    while changes < max_changes {
        match rx.recv().await {
            Some(e) => {
                changes += matches!(e, ProbeEvent::Changed { .. }) as usize;
                events.push(e);
            }
            None => break,
        }
    }
    // The worker's sender is gone once it has ended by itself.
    let ended = changes < max_changes;
    drop(worker);
    (events, ended)
}

fn results(events: &[ProbeEvent]) -> Vec<ProbeResult> {
    events
        .iter()
        .filter_map(|e| match e {
            ProbeEvent::Changed { result, .. } => Some(*result),
            _ => None,
        })
        .collect()
}

fn failed_attempts(events: &[ProbeEvent]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ProbeEvent::Attempt {
                    outcome: ProbeOutcome::Failure(_),
                    ..
                }
            )
        })
        .count()
}

use ProbeResult::{Failure as F, Success as S, Unknown as U};
use Reply::Exit;

#[tokio::test(start_paused = true)]
async fn readiness_follows_thresholds() {
    // Success needs 2 in a row, failure 2 in a row.
    let exec = FakeExec::scripted(&[Exit(0), Exit(0), Exit(1), Exit(0), Exit(1), Exit(1), Exit(0), Exit(0)]);
    let (events, ended) = run(ProbeKind::Readiness, scripted_probe(1, 2, 2), exec.clone(), 4).await;
    assert!(!ended, "a readiness worker keeps going");
    assert_eq!(results(&events), [F, S, F, S]);
    assert_eq!(failed_attempts(&events), 3);
    assert_eq!(exec.calls(), 8);
    match &events[0] {
        ProbeEvent::Changed {
            kind,
            container_id,
            message,
            termination_grace_period_seconds,
            ..
        } => {
            assert_eq!(
                (*kind, container_id.as_str(), message.as_str()),
                (ProbeKind::Readiness, "c1", "")
            );
            assert_eq!(*termination_grace_period_seconds, Some(7));
        }
        other => panic!("first event {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn liveness_fails_after_threshold_and_stops() {
    let exec = FakeExec::scripted(&[Exit(0), Exit(1), Exit(1), Exit(0), Exit(1), Exit(1), Exit(1), Exit(0)]);
    let (events, ended) = run(ProbeKind::Liveness, scripted_probe(1, 1, 3), exec.clone(), 10).await;
    assert!(ended);
    assert_eq!(results(&events), [S, F]);
    assert_eq!(exec.calls(), 7, "no probes after the failure");
    let last = events.last().unwrap();
    assert_eq!(
        *last,
        ProbeEvent::Changed {
            kind: ProbeKind::Liveness,
            container_id: "c1".into(),
            result: F,
            message: "out".into(),
            termination_grace_period_seconds: Some(7),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn startup_ends_on_success_or_failure() {
    let exec = FakeExec::scripted(&[Exit(1), Exit(1), Exit(0)]);
    let (events, ended) = run(ProbeKind::Startup, scripted_probe(1, 1, 3), exec.clone(), 10).await;
    assert!(ended);
    assert_eq!(results(&events), [U, S]);
    assert_eq!(exec.calls(), 3);

    let exec = FakeExec::scripted(&[Exit(1)]);
    let (events, ended) = run(ProbeKind::Startup, scripted_probe(1, 1, 2), exec.clone(), 10).await;
    assert!(ended);
    assert_eq!(results(&events), [U, F]);
    assert_eq!(exec.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_then_ignored() {
    // Two errors then a success within one tick: retried, success counts.
    let exec = FakeExec::scripted(&[Reply::Error, Reply::Error, Exit(0)]);
    let (events, _) = run(ProbeKind::Readiness, scripted_probe(1, 1, 1), exec.clone(), 2).await;
    assert_eq!(results(&events), [F, S]);
    assert_eq!(exec.calls(), 3);
    assert!(!events.iter().any(|e| matches!(e, ProbeEvent::Attempt { .. })));

    // Errors neither count as failures nor break a run of failures.
    let exec = FakeExec::scripted(&[Exit(1), Reply::Error, Reply::Error, Reply::Error, Exit(1)]);
    let (events, ended) = run(ProbeKind::Liveness, scripted_probe(1, 1, 2), exec.clone(), 2).await;
    assert!(!ended);
    assert_eq!(results(&events), [S, F]);
    let unknown: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ProbeEvent::Attempt {
                outcome: o @ ProbeOutcome::Unknown(_),
                ..
            } => Some(o.event(ProbeKind::Liveness).unwrap().1),
            _ => None,
        })
        .collect();
    assert_eq!(
        unknown,
        ["Liveness probe errored and resulted in unknown state: runtime error"]
    );
    assert_eq!(exec.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn initial_delay_and_period() {
    let exec = FakeExec::scripted(&[Exit(1)]);
    let probe = Probe {
        initial_delay_seconds: Some(30),
        ..scripted_probe(10, 1, 3)
    };
    let start = Instant::now();
    let (events, ended) = run(ProbeKind::Liveness, probe, exec.clone(), 10).await;
    assert!(ended);
    assert_eq!(results(&events), [S, F]);
    let at: Vec<Duration> = exec.calls.lock().unwrap().iter().map(|c| c.3 - start).collect();
    assert_eq!(
        at,
        [
            Duration::from_secs(30),
            Duration::from_secs(40),
            Duration::from_secs(50)
        ]
    );

    // The delay counts from the container's start, not from the worker's.
    let exec = FakeExec::scripted(&[Exit(0)]);
    let probe = Probe {
        initial_delay_seconds: Some(30),
        ..scripted_probe(10, 1, 3)
    };
    let (tx, mut rx) = mpsc::channel(16);
    let started = SystemTime::now() - Duration::from_secs(3600);
    let start = Instant::now();
    let _worker = spawn_worker(
        ProbeKind::Readiness,
        probe,
        Arc::new(local_target()),
        exec.clone(),
        tx,
        started,
    );
    assert!(matches!(rx.recv().await, Some(ProbeEvent::Changed { result: F, .. })));
    assert!(matches!(rx.recv().await, Some(ProbeEvent::Changed { result: S, .. })));
    assert_eq!(exec.calls.lock().unwrap()[0].3, start);
}

#[tokio::test(start_paused = true)]
async fn exec_timeout_counts_as_failure() {
    let probe = Probe {
        timeout_seconds: Some(3),
        failure_threshold: Some(1),
        ..exec_probe(&["hang"])
    };
    let (events, ended) = run(ProbeKind::Liveness, probe, Arc::new(FakeExec::default()), 10).await;
    assert!(ended);
    assert_eq!(results(&events), [S, F]);
    assert!(events.contains(&ProbeEvent::Attempt {
        kind: ProbeKind::Liveness,
        container_id: "c1".into(),
        outcome: ProbeOutcome::Failure("command \"hang\" timed out".into()),
    }));
}

#[tokio::test(start_paused = true)]
async fn trigger_probes_now_and_drop_stops() {
    let exec = FakeExec::scripted(&[Exit(0)]);
    let probe = Probe {
        period_seconds: Some(3600),
        ..exec_probe(&["script"])
    };
    let (tx, mut rx) = mpsc::channel(16);
    let worker = spawn_worker(
        ProbeKind::Readiness,
        probe,
        Arc::new(local_target()),
        exec.clone(),
        tx,
        SystemTime::now(),
    );
    assert!(matches!(rx.recv().await, Some(ProbeEvent::Changed { result: F, .. })));
    assert!(matches!(rx.recv().await, Some(ProbeEvent::Changed { result: S, .. })));
    let start = Instant::now();
    worker.trigger();
    // A trigger probes at once; results that do not change send nothing, so wait on the call.
    while exec.calls() < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(exec.calls.lock().unwrap()[1].3, start);
    assert!(!worker.is_finished());
    worker.stop();
    assert_eq!(rx.recv().await, None, "the channel closes when the worker stops");
}
