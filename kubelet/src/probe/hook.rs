//! postStart and preStop handlers: `exec`, `httpGet` and `sleep`, bounded by a deadline.

use super::exec::{self, ExecError};
use super::{ExecRunner, Target};
use k8s_openapi::api::core::v1::LifecycleHandler;
use std::fmt;
use tokio::time::Instant;

/// What a lifecycle handler does, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAction {
    Exec {
        command: Vec<String>,
    },
    HttpGet {
        path: String,
    },
    Sleep {
        seconds: i64,
    },
    /// No supported action (none set, or the unsupported `tcpSocket`).
    Invalid,
}

/// A failed lifecycle hook. [`HookError::event_message`] gives kubelet's message for the
/// `FailedPostStartHook` / `FailedPreStopHook` events.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe(None))]
pub struct HookError {
    pub action: HookAction,
    /// What went wrong.
    pub error: String,
    /// The command's output (stdout then stderr), for `exec`.
    pub output: Option<String>,
    /// The deadline came before the handler finished (kubelet stops waiting for a preStop
    /// hook at the end of the grace period without an event).
    pub deadline_exceeded: bool,
}

impl HookError {
    /// Kubelet's event message, e.g. `Exec lifecycle hook ([sh -c exit 3]) for Container "app"
    /// in Pod "web_default(uid)" failed - error: command 'sh -c exit 3' exited with 3: , message: ""`.
    /// `pod` is shown as given (kubelet uses `name_namespace(uid)`).
    pub fn event_message(&self, container: &str, pod: &str) -> String {
        self.describe(Some((container, pod)))
    }

    fn describe(&self, owner: Option<(&str, &str)>) -> String {
        let whose = owner.map_or(String::new(), |(c, p)| format!(" for Container {c:?} in Pod {p:?}"));
        match &self.action {
            HookAction::Exec { command } => format!(
                "Exec lifecycle hook ([{}]){whose} failed - error: {}, message: {:?}",
                command.join(" "),
                self.error,
                self.output.as_deref().unwrap_or("")
            ),
            HookAction::HttpGet { path } => {
                format!("HTTP lifecycle hook ({path}){whose} failed - error: {}", self.error)
            }
            HookAction::Sleep { seconds } => {
                format!("Sleep lifecycle hook ({seconds}){whose} failed - error: {}", self.error)
            }
            HookAction::Invalid => format!("Cannot run handler: {}", self.error),
        }
    }
}

impl fmt::Display for HookAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookAction::Exec { command } => write!(f, "exec {command:?}"),
            HookAction::HttpGet { path } => write!(f, "httpGet {path}"),
            HookAction::Sleep { seconds } => write!(f, "sleep {seconds}s"),
            HookAction::Invalid => f.write_str("invalid handler"),
        }
    }
}

/// Runs a lifecycle handler in `target`'s container and waits for it, at most until `deadline`
/// (for preStop: the end of the grace period; the caller sends the stop signal afterwards;
/// kubelet puts no limit on postStart, so pass a distant deadline there). `deadline` is on
/// Tokio's clock (`tokio::time::Instant::now() + grace`).
/// `exec` fails on a non-zero exit code; `httpGet` succeeds on any HTTP response, like kubelet;
/// `sleep` waits its seconds, cut short by the deadline.
pub async fn run_hook(
    handler: &LifecycleHandler,
    target: &Target,
    exec: &dyn ExecRunner,
    deadline: Instant,
) -> Result<(), HookError> {
    if let Some(e) = &handler.exec {
        let command = e.command.clone().unwrap_or_default();
        let action = HookAction::Exec {
            command: command.clone(),
        };
        return exec_hook(command, target, exec, deadline)
            .await
            .map_err(|(error, output, late)| HookError {
                action,
                error,
                output,
                deadline_exceeded: late,
            });
    }
    if let Some(h) = &handler.http_get {
        let action = HookAction::HttpGet {
            path: h.path.clone().unwrap_or_default(),
        };
        let fail = |error, late| HookError {
            action: action.clone(),
            error,
            output: None,
            deadline_exceeded: late,
        };
        return match tokio::time::timeout_at(deadline, super::http::hook(h, target)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(fail(e, false)),
            Err(_) => Err(fail(LATE.into(), true)),
        };
    }
    if let Some(s) = &handler.sleep {
        let want = Instant::now() + std::time::Duration::from_secs(s.seconds.max(0).unsigned_abs());
        if want <= deadline {
            tokio::time::sleep_until(want).await;
            return Ok(());
        }
        tokio::time::sleep_until(deadline).await;
        return Err(HookError {
            action: HookAction::Sleep { seconds: s.seconds },
            error: "container terminated before sleep hook finished".into(),
            output: None,
            deadline_exceeded: true,
        });
    }
    let why = if handler.tcp_socket.is_some() {
        "invalid handler: tcpSocket is not supported as a lifecycle handler"
    } else {
        "invalid handler: no exec, httpGet or sleep action"
    };
    Err(HookError {
        action: HookAction::Invalid,
        error: why.into(),
        output: None,
        deadline_exceeded: false,
    })
}

const LATE: &str = "the deadline passed before the hook finished";

/// An exec hook; errors are (error, output, deadline exceeded).
async fn exec_hook(
    command: Vec<String>,
    target: &Target,
    exec: &dyn ExecRunner,
    deadline: Instant,
) -> Result<(), (String, Option<String>, bool)> {
    if command.is_empty() {
        return Err(("exec hook has no command".into(), None, false));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err((LATE.into(), None, true));
    }
    match exec::run(exec, &target.container_id, command.clone(), left).await {
        Ok(out) if out.exit_code == 0 => Ok(()),
        Ok(out) => Err((
            format!(
                "command '{}' exited with {}: {}",
                command.join(" "),
                out.exit_code,
                String::from_utf8_lossy(&out.stderr)
            ),
            Some(exec::combined_output(&out, usize::MAX)),
            false,
        )),
        Err(ExecError::TimedOut) => Err((exec::timed_out_message(&command), None, true)),
        Err(ExecError::Failed(e)) => Err((e, None, false)),
    }
}
