//! Periodic probing with kubelet's timing and threshold rules.
//!
//! One worker probes one container instance (one container ID) with one probe. The engine:
//! - starts a startup worker when the container starts; liveness and readiness workers when
//!   startup succeeds, or right at start when there is no startup probe (kubelet instead runs
//!   them all from the start and skips liveness/readiness until the container is started — the
//!   observable behaviour is the same). Pass the container's start time: initialDelaySeconds
//!   counts from it, however late the worker is spawned.
//! - starts new workers for a restarted container (new ID), and drops or [`ProbeWorker::stop`]s
//!   the old ones; dropping a [`ProbeWorker`] stops it.
//! - stops liveness and startup workers when the pod is being deleted (kubelet then treats
//!   them as passing).
//!
//! What a worker sends ([`ProbeEvent`]):
//! - `Changed` whenever its cached result changes, starting with the initial value kubelet's
//!   results managers use: readiness Failure (not ready until a probe passes), liveness Success,
//!   startup Unknown.
//! - `Attempt` for every attempt that did not plainly succeed, for the `Unhealthy` /
//!   `ProbeWarning` events ([`ProbeOutcome::event`]).
//!
//! Rules: the first probe runs once initialDelaySeconds have passed since the container started
//! (kubelet rounds this up to its next tick; Berth probes on time), then every periodSeconds
//! (ticks missed while a probe runs long are skipped). An attempt that could not be run
//! (Unknown) is retried at once up to 3 times, then ignored: it neither counts toward a threshold
//! nor breaks a run. The result changes after successThreshold consecutive successes or
//! failureThreshold consecutive failures. A liveness or startup worker ends after reporting
//! Failure (the container is restarted: a new container gets new workers); a startup worker
//! ends after reporting Success.

use super::{probe_once, ExecRunner, ProbeOutcome, ProbeTiming, Target};
use k8s_openapi::api::core::v1::Probe;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, MissedTickBehavior};

/// Kubelet retries a probe that could not be run this many times per tick.
const MAX_ATTEMPTS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        })
    }
}

/// A worker's cached result (kubelet's `results.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// Not known yet (startup, before its threshold is reached).
    Unknown,
    Success,
    Failure,
}

impl ProbeResult {
    /// The value a worker starts with, like kubelet's results managers.
    pub fn initial(kind: ProbeKind) -> ProbeResult {
        match kind {
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }
}

/// What a worker reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The result changed.
    Changed {
        kind: ProbeKind,
        container_id: String,
        result: ProbeResult,
        /// The message of the attempt that changed it (empty for the initial value and success).
        message: String,
        /// The probe's own terminationGracePeriodSeconds: when a liveness or startup Failure
        /// kills the container, this overrides the pod's grace period.
        termination_grace_period_seconds: Option<i64>,
    },
    /// An attempt that failed, errored or passed with a warning.
    Attempt {
        kind: ProbeKind,
        container_id: String,
        outcome: ProbeOutcome,
    },
}

impl ProbeEvent {
    pub fn kind(&self) -> ProbeKind {
        match self {
            ProbeEvent::Changed { kind, .. } | ProbeEvent::Attempt { kind, .. } => *kind,
        }
    }
}

/// A running probe worker. Dropping it stops the worker.
#[derive(Debug)]
pub struct ProbeWorker {
    kind: ProbeKind,
    task: tokio::task::JoinHandle<()>,
    trigger: Arc<Notify>,
}

impl ProbeWorker {
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Probes now instead of at the next tick (not before the initial delay), like kubelet's
    /// manual trigger.
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// True when the worker has ended by itself or was stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the worker; an attempt in flight is abandoned.
    pub fn stop(self) {}
}

impl Drop for ProbeWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a worker that probes `target`'s container with `probe` and sends [`ProbeEvent`]s to
/// `tx`. `started_at` is when the container started. The worker ends when `tx`'s receiver is
/// gone. Must be called inside a Tokio runtime.
pub fn spawn_worker(
    kind: ProbeKind,
    probe: Probe,
    target: Arc<Target>,
    exec: Arc<dyn ExecRunner>,
    tx: mpsc::Sender<ProbeEvent>,
    started_at: SystemTime,
) -> ProbeWorker {
    let trigger = Arc::new(Notify::new());
    let worker = Worker {
        kind,
        probe,
        target,
        exec,
        tx,
        trigger: trigger.clone(),
    };
    let task = tokio::spawn(worker.run(started_at));
    ProbeWorker { kind, task, trigger }
}

struct Worker {
    kind: ProbeKind,
    probe: Probe,
    target: Arc<Target>,
    exec: Arc<dyn ExecRunner>,
    tx: mpsc::Sender<ProbeEvent>,
    trigger: Arc<Notify>,
}

impl Worker {
    async fn changed(&self, result: ProbeResult, message: &str) -> bool {
        let event = ProbeEvent::Changed {
            kind: self.kind,
            container_id: self.target.container_id.clone(),
            result,
            message: message.to_string(),
            termination_grace_period_seconds: self.probe.termination_grace_period_seconds,
        };
        self.tx.send(event).await.is_ok()
    }

    async fn attempt(&self) -> ProbeOutcome {
        let mut outcome = ProbeOutcome::Unknown(String::new());
        for _ in 0..MAX_ATTEMPTS {
            outcome = probe_once(&self.probe, &self.target, self.exec.as_ref()).await;
            if !matches!(outcome, ProbeOutcome::Unknown(_)) {
                break;
            }
        }
        outcome
    }

    async fn run(self, started_at: SystemTime) {
        let timing = ProbeTiming::of(&self.probe);
        let mut current = ProbeResult::initial(self.kind);
        if !self.changed(current, "").await {
            return;
        }
        let since_start = SystemTime::now().duration_since(started_at).unwrap_or_default();
        let first = Instant::now() + timing.initial_delay.saturating_sub(since_start);
        let mut ticker = tokio::time::interval_at(first, timing.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last: Option<ProbeResult> = None;
        let mut run = 0u32;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.trigger.notified() => {
                    if Instant::now() < first {
                        continue;
                    }
                }
            }
            let outcome = self.attempt().await;
            if outcome != ProbeOutcome::Success {
                let event = ProbeEvent::Attempt {
                    kind: self.kind,
                    container_id: self.target.container_id.clone(),
                    outcome: outcome.clone(),
                };
                if self.tx.send(event).await.is_err() {
                    return;
                }
            }
            let result = match &outcome {
                ProbeOutcome::Unknown(_) => continue,
                o if o.is_success() => ProbeResult::Success,
                _ => ProbeResult::Failure,
            };
            if last == Some(result) {
                run = run.saturating_add(1);
            } else {
                last = Some(result);
                run = 1;
            }
            let threshold = match result {
                ProbeResult::Success => timing.success_threshold,
                _ => timing.failure_threshold,
            };
            if run < threshold {
                continue;
            }
            if result != current {
                current = result;
                if !self.changed(result, outcome.message()).await {
                    return;
                }
            }
            match (self.kind, result) {
                (ProbeKind::Liveness | ProbeKind::Startup, ProbeResult::Failure) => return,
                (ProbeKind::Startup, ProbeResult::Success) => return,
                _ => {}
            }
        }
    }
}
