//! `exec` probes and hooks through the [`ExecRunner`] seam.

use super::{ExecOutput, ExecRunner, ProbeOutcome, Target};
use k8s_openapi::api::core::v1::ExecAction;
use std::time::Duration;

/// Kubelet keeps at most this much of a probe command's output.
const MAX_OUTPUT: usize = 10 * 1024;

/// The error an [`ExecRunner`] returns when a command ran past its timeout
/// (CRI: `ExecSync` failed with `DeadlineExceeded`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("command timed out")]
pub struct ExecTimedOut;

#[derive(Debug)]
pub(crate) enum ExecError {
    TimedOut,
    /// The command could not be run.
    Failed(String),
}

/// Runs `cmd`, giving up after `timeout` when it is not zero.
pub(crate) async fn run(
    runner: &dyn ExecRunner,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    let fut = runner.exec_sync(container_id, cmd, timeout);
    let res = if timeout.is_zero() {
        fut.await
    } else {
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ExecError::TimedOut)?
    };
    res.map_err(|e| {
        if e.downcast_ref::<ExecTimedOut>().is_some() {
            ExecError::TimedOut
        } else {
            ExecError::Failed(format!("{e:#}"))
        }
    })
}

/// stdout then stderr, as kubelet combines them, cut at `limit` bytes.
pub(crate) fn combined_output(out: &ExecOutput, limit: usize) -> String {
    let mut data = Vec::with_capacity((out.stdout.len() + out.stderr.len()).min(limit));
    data.extend_from_slice(&out.stdout[..out.stdout.len().min(limit)]);
    let room = limit - data.len();
    data.extend_from_slice(&out.stderr[..out.stderr.len().min(room)]);
    String::from_utf8_lossy(&data).into_owned()
}

/// Kubelet's text for a command that ran too long: `command "sh -c sleep 9" timed out`.
pub(crate) fn timed_out_message(cmd: &[String]) -> String {
    format!("command {:?} timed out", cmd.join(" "))
}

/// One `exec` probe attempt: exit code 0 passes; the output is the failure message.
pub(crate) async fn probe(
    action: &ExecAction,
    target: &Target,
    runner: &dyn ExecRunner,
    timeout: Duration,
) -> ProbeOutcome {
    let cmd = action.command.clone().unwrap_or_default();
    if cmd.is_empty() {
        return ProbeOutcome::Unknown("exec probe has no command".into());
    }
    match run(runner, &target.container_id, cmd.clone(), timeout).await {
        Ok(out) if out.exit_code == 0 => ProbeOutcome::Success,
        Ok(out) => ProbeOutcome::Failure(combined_output(&out, MAX_OUTPUT)),
        Err(ExecError::TimedOut) => ProbeOutcome::Failure(timed_out_message(&cmd)),
        Err(ExecError::Failed(e)) => ProbeOutcome::Unknown(e),
    }
}
