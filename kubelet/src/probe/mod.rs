//! Container probes and lifecycle hooks, with Kubernetes' (kubelet's) semantics.
//!
//! - [`probe_once`] runs one probe attempt (`exec`, `httpGet`, `tcpSocket` or `grpc`).
//! - [`spawn_worker`] runs a probe periodically with initialDelaySeconds, periodSeconds,
//!   timeoutSeconds, successThreshold and failureThreshold, and reports result changes on a channel.
//! - [`run_hook`] runs a postStart or preStop handler (`exec`, `httpGet`, `sleep`) before a deadline.
//!
//! Commands run through the [`ExecRunner`] seam (the engine implements it over CRI ExecSync).
//! Network probes connect as [`Target`] says: into the pod's network namespace when one is given
//! (so pods without a routable IP work too), otherwise from the host (see [`connect`]).

pub mod connect;
mod exec;
mod grpc;
mod hook;
mod http;
mod worker;

#[cfg(test)]
mod tests;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use connect::{netns_tcp_socket, ProbeConnector};
pub use exec::ExecTimedOut;
pub use hook::{run_hook, HookAction, HookError};
pub use worker::{spawn_worker, ProbeEvent, ProbeKind, ProbeResult, ProbeWorker};

/// The Kubernetes minor version Berth implements (k8s-openapi's `latest`); probes send
/// `User-Agent: kube-probe/<this>` and HTTP hooks `kube-lifecycle/<this>`, like kubelet.
pub const KUBE_VERSION: &str = "1.37";

/// Output of a command run in a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs a command in a running container (CRI `ExecSync`).
///
/// `timeout` is the command's time limit (zero: none). When the command runs past it, return an
/// error that downcasts to [`ExecTimedOut`] (CRI: the `DeadlineExceeded` status); callers also
/// stop waiting at the timeout themselves. Any other error means the command could not be run.
pub trait ExecRunner: Send + Sync {
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'_, anyhow::Result<ExecOutput>>;
}

/// Where probes and hooks of one container go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The pod's IP: the default host of `httpGet`, `tcpSocket` and `grpc`.
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace (e.g. `/var/run/netns/NAME` or `/proc/PID/ns/net`). When set
    /// (and the pod is not on the host network), connections to the pod are made from inside it,
    /// to the pod IP or, without one, to 127.0.0.1.
    pub netns: Option<PathBuf>,
    /// The container that `exec` handlers run in.
    pub container_id: String,
    /// The container's named ports (`ports[].name` → `containerPort`), for named probe ports.
    pub ports: BTreeMap<String, u16>,
    /// `spec.hostNetwork`: connections are made from the host.
    pub host_network: bool,
}

impl Target {
    /// The named ports of a container spec, as [`Target::ports`] wants them.
    pub fn named_ports(container: &Container) -> BTreeMap<String, u16> {
        container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let name = p.name.as_deref().filter(|n| !n.is_empty())?;
                Some((name.to_string(), u16::try_from(p.container_port).ok()?))
            })
            .collect()
    }

    /// Resolves a probe or hook port (a number, or the name of a container port), like kubelet:
    /// a name that is not a container port is tried as a number, and it must be in 1..=65535.
    pub fn resolve_port(&self, port: &IntOrString) -> Result<u16, String> {
        let n: i64 = match port {
            IntOrString::Int(n) => (*n).into(),
            IntOrString::String(name) => match self.ports.get(name) {
                Some(p) => (*p).into(),
                None => name
                    .parse()
                    .map_err(|_| format!("port {name:?} not found in the container's ports"))?,
            },
        };
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port number: {n}"))
    }
}

/// The result of one probe attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The probe passed.
    Success,
    /// The probe passed with a remark (an HTTP redirect to another host was not followed);
    /// counts as success. Kubelet records a `ProbeWarning` event with the message.
    Warning(String),
    /// The probe failed; the message says why (an `Unhealthy` event: "<Kind> probe failed: <msg>").
    Failure(String),
    /// The probe could not be run (bad port, exec error); the worker ignores the attempt,
    /// like kubelet does with prober errors.
    Unknown(String),
}

impl ProbeOutcome {
    /// Success or Warning.
    pub fn is_success(&self) -> bool {
        matches!(self, ProbeOutcome::Success | ProbeOutcome::Warning(_))
    }

    /// The message (empty for Success).
    pub fn message(&self) -> &str {
        match self {
            ProbeOutcome::Success => "",
            ProbeOutcome::Warning(m) | ProbeOutcome::Failure(m) | ProbeOutcome::Unknown(m) => m,
        }
    }

    /// The event kubelet records for this attempt of a `kind` probe: (reason, message),
    /// or None for a plain success.
    pub fn event(&self, kind: ProbeKind) -> Option<(&'static str, String)> {
        match self {
            ProbeOutcome::Success => None,
            ProbeOutcome::Warning(m) => Some(("ProbeWarning", format!("{kind} probe warning: {m}"))),
            ProbeOutcome::Failure(m) => Some(("Unhealthy", format!("{kind} probe failed: {m}"))),
            ProbeOutcome::Unknown(m) => Some((
                "Unhealthy",
                format!("{kind} probe errored and resulted in unknown state: {m}"),
            )),
        }
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Success => f.write_str("success"),
            ProbeOutcome::Warning(m) => write!(f, "success with warning: {m}"),
            ProbeOutcome::Failure(m) => write!(f, "failure: {m}"),
            ProbeOutcome::Unknown(m) => write!(f, "unknown: {m}"),
        }
    }
}

/// A probe's settings with Kubernetes' defaults applied (zero or negative values, which
/// validation rejects, count as unset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub fn of(probe: &Probe) -> ProbeTiming {
        let pos = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        ProbeTiming {
            initial_delay: Duration::from_secs(
                probe
                    .initial_delay_seconds
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0),
            ),
            period: Duration::from_secs(pos(probe.period_seconds, 10).into()),
            timeout: Duration::from_secs(pos(probe.timeout_seconds, 1).into()),
            success_threshold: pos(probe.success_threshold, 1),
            failure_threshold: pos(probe.failure_threshold, 3),
        }
    }
}

/// Runs one attempt of `probe` against `target`, bounded by the probe's timeoutSeconds.
pub async fn probe_once(probe: &Probe, target: &Target, exec: &dyn ExecRunner) -> ProbeOutcome {
    let timeout = ProbeTiming::of(probe).timeout;
    // Kubelet's order when several handlers are set (validation allows only one).
    if let Some(action) = &probe.exec {
        exec::probe(action, target, exec, timeout).await
    } else if let Some(action) = &probe.http_get {
        http::probe(action, target, timeout).await
    } else if let Some(action) = &probe.tcp_socket {
        tcp_probe(action, target, timeout).await
    } else if let Some(action) = &probe.grpc {
        grpc::probe(action, target, timeout).await
    } else {
        ProbeOutcome::Unknown("missing probe handler".into())
    }
}

async fn tcp_probe(
    action: &k8s_openapi::api::core::v1::TCPSocketAction,
    target: &Target,
    timeout: Duration,
) -> ProbeOutcome {
    let port = match target.resolve_port(&action.port) {
        Ok(p) => p,
        Err(e) => return ProbeOutcome::Unknown(e),
    };
    let dest = match connect::Destination::new(target, action.host.as_deref(), port) {
        Ok(d) => d,
        Err(e) => return ProbeOutcome::Unknown(e),
    };
    match tokio::time::timeout(timeout, dest.connect()).await {
        Ok(Ok(stream)) => {
            drop(stream);
            ProbeOutcome::Success
        }
        Ok(Err(e)) => ProbeOutcome::Failure(format!("dial tcp {dest}: {e}")),
        Err(_) => ProbeOutcome::Failure(format!("dial tcp {dest}: i/o timeout")),
    }
}
