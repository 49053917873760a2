//! `get pods`: kubectl's table (its printPod, exactly), `-o wide`, `-o yaml` and `-o json`.

use super::duration::since;
use super::tabwriter::TabWriter;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;

/// One row of `get pods`, each cell as kubectl prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    /// `ready/total`; restartable init containers (sidecars) count.
    pub ready: String,
    /// The STATUS column: `Running`, `Init:1/2`, `CrashLoopBackOff`, `Completed`, `Terminating`, ...
    pub status: String,
    /// `3 (5m ago)`, or `0`.
    pub restarts: String,
    pub age: String,
    pub ip: String,
    pub node: String,
    pub nominated_node: String,
    pub readiness_gates: String,
}

fn is_restartable(c: Option<&Container>) -> bool {
    c.is_some_and(|c| c.restart_policy.as_deref() == Some("Always"))
}

fn later(a: Option<Time>, b: Option<&Time>) -> Option<Time> {
    match (a, b) {
        (Some(a), Some(b)) if b.0 > a.0 => Some(b.clone()),
        (None, Some(b)) => Some(b.clone()),
        (a, _) => a,
    }
}

fn last_finished(s: &ContainerStatus) -> Option<&Time> {
    s.last_state.as_ref()?.terminated.as_ref()?.finished_at.as_ref()
}

fn condition_true(pod: &Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Computes a row the way kubectl's `printPod` does.
pub fn pod_row(pod: &Pod, now: Timestamp) -> PodRow {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut total = spec.containers.len();
    let mut ready = 0;
    let mut last_restart: Option<Time> = None;
    let mut last_restartable_restart: Option<Time> = None;

    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = status.reason.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| phase.clone());
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated") {
            reason = "SchedulingGated".into();
        }
    }

    let init_specs: HashMap<&str, &Container> = spec.init_containers.iter().flatten().map(|c| (c.name.as_str(), c)).collect();
    total += spec.init_containers.iter().flatten().filter(|c| is_restartable(Some(c))).count();
    let n_init = spec.init_containers.as_ref().map_or(0, Vec::len);

    let mut initializing = false;
    for (i, c) in status.init_container_statuses.iter().flatten().enumerate() {
        restarts += c.restart_count as i64;
        last_restart = later(last_restart, last_finished(c));
        let restartable = is_restartable(init_specs.get(c.name.as_str()).copied());
        if restartable {
            restartable_restarts += c.restart_count as i64;
            last_restartable_restart = later(last_restartable_restart, last_finished(c));
        }
        let state = c.state.clone().unwrap_or_default();
        if let Some(t) = state.terminated.as_ref().filter(|t| t.exit_code == 0) {
            let _ = t;
            continue;
        }
        if restartable && c.started == Some(true) {
            if c.ready {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = &state.terminated {
            reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if t.signal.unwrap_or(0) != 0 => format!("Init:Signal:{}", t.signal.unwrap_or(0)),
                None => format!("Init:ExitCode:{}", t.exit_code),
            };
        } else if let Some(r) = state.waiting.as_ref().and_then(|w| w.reason.as_deref()).filter(|r| !r.is_empty() && *r != "PodInitializing") {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{n_init}");
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += c.restart_count as i64;
            last_restart = later(last_restart, last_finished(c));
            let state = c.state.clone().unwrap_or_default();
            let waiting = state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty());
            if let Some(r) = waiting {
                reason = r;
            } else if let Some(t) = &state.terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None if t.signal.unwrap_or(0) != 0 => format!("Signal:{}", t.signal.unwrap_or(0)),
                    None => format!("ExitCode:{}", t.exit_code),
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        // Back to Running if a container still runs after another completed.
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") { "Running".into() } else { "NotReady".into() };
        }
    }

    if pod.metadata.deletion_timestamp.is_some() && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_str = match (&last_restart, restarts) {
        (Some(t), r) if r != 0 => format!("{r} ({} ago)", since(Some(t), now)),
        (_, r) => r.to_string(),
    };

    let ip = status.pod_ips.as_ref().and_then(|ips| ips.first()).map(|p| p.ip.clone()).filter(|s| !s.is_empty());
    let gates = match spec.readiness_gates.as_deref() {
        Some(g) if !g.is_empty() => {
            let n = g.iter().filter(|g| condition_true(pod, &g.condition_type)).count();
            format!("{n}/{}", g.len())
        }
        _ => "<none>".into(),
    };
    PodRow {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        ready: format!("{ready}/{total}"),
        status: reason,
        restarts: restarts_str,
        age: since(pod.metadata.creation_timestamp.as_ref(), now),
        ip: ip.unwrap_or_else(|| "<none>".into()),
        node: spec.node_name.filter(|s| !s.is_empty()).unwrap_or_else(|| "<none>".into()),
        nominated_node: status.nominated_node_name.filter(|s| !s.is_empty()).unwrap_or_else(|| "<none>".into()),
        readiness_gates: gates,
    }
}

/// How to print the table.
#[derive(Clone, Debug, Default)]
pub struct TableOptions {
    /// `-o wide`: IP, NODE, NOMINATED NODE, READINESS GATES.
    pub wide: bool,
    /// The NAMESPACE column: `Some(true)` as with `-A`; `None` shows it when the pods span
    /// more than one namespace.
    pub show_namespace: Option<bool>,
    /// Leave out the header line (`--no-headers`, or rows after the first in `-w`).
    pub no_headers: bool,
}

/// The `get pods` table, lines ending in `\n`; empty for no pods (kubectl then says
/// `No resources found in NS namespace.` on stderr).
pub fn pods_table(pods: &[Pod], opts: &TableOptions, now: Timestamp) -> String {
    if pods.is_empty() {
        return String::new();
    }
    let rows: Vec<PodRow> = pods.iter().map(|p| pod_row(p, now)).collect();
    let show_ns = opts.show_namespace.unwrap_or_else(|| rows.iter().any(|r| r.namespace != rows[0].namespace));
    let mut w = TabWriter::for_table();
    if !opts.no_headers {
        let mut h = String::new();
        if show_ns {
            h.push_str("NAMESPACE\t");
        }
        h.push_str("NAME\tREADY\tSTATUS\tRESTARTS\tAGE");
        if opts.wide {
            h.push_str("\tIP\tNODE\tNOMINATED NODE\tREADINESS GATES");
        }
        w.write(&h);
        w.write("\n");
    }
    for r in &rows {
        let mut cells: Vec<&str> = Vec::new();
        if show_ns {
            cells.push(&r.namespace);
        }
        cells.extend([r.name.as_str(), &r.ready, &r.status, &r.restarts, &r.age]);
        if opts.wide {
            cells.extend([r.ip.as_str(), &r.node, &r.nominated_node, &r.readiness_gates]);
        }
        w.write(&cells.join("\t"));
        w.write("\n");
    }
    w.finish()
}

/// `-o json` / `-o yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// Pods as kubectl prints them with `-o json|yaml`: the object itself when `single` (a get by
/// name), else a `v1 List` (as for `get pods`, even with one item). JSON is indented by 4.
pub fn pods_document(pods: &[Pod], format: Format, single: bool) -> String {
    let value = if single && pods.len() == 1 {
        serde_json::to_value(&pods[0]).unwrap_or_default()
    } else {
        serde_json::json!({
            "apiVersion": "v1",
            "items": pods,
            "kind": "List",
            "metadata": {"resourceVersion": ""},
        })
    };
    match format {
        Format::Json => {
            use serde::Serialize;
            let mut buf = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"    "));
            let _ = value.serialize(&mut ser);
            let mut s = String::from_utf8(buf).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Yaml => serde_yaml::to_string(&value).unwrap_or_default(),
    }
}
