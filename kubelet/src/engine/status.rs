//! Pod status the way kubelet computes it: phase, conditions, container
//! states with reasons, IPs, QoS class.

use super::spec;
use super::worker::{is_sidecar, Observed, Worker};
use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0).then(|| Timestamp::from_nanosecond(nanos as i128).ok().map(Time)).flatten()
}

fn terminated(w: &Worker, o: &Observed) -> ContainerStateTerminated {
    let s = &o.status;
    let reason = if !s.reason.is_empty() {
        s.reason.clone()
    } else if s.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(reason),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        started_at: time(s.started_at),
        finished_at: time(s.finished_at),
        container_id: Some(w.shared.cri.status_id(&o.id)),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState { waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }), ..Default::default() }
}

/// Whether the container will be started again after it exited.
fn will_restart(pod: &Pod, c: &Container, exit_code: i32, init: bool) -> bool {
    if is_sidecar(c) {
        return true;
    }
    match spec::spec(pod).restart_policy.as_deref().unwrap_or("Always") {
        "Always" => !init || exit_code != 0,
        "OnFailure" => exit_code != 0,
        _ => false,
    }
}

fn container_status(w: &Worker, c: &Container, init: bool, initialized: bool) -> ContainerStatus {
    let (cur, prev) = w.current(&c.name);
    let track = w.tracks.get(&c.name);
    let probes = w.probes.get(&c.name);
    let mut st = ContainerStatus { name: c.name.clone(), image: c.image.clone().unwrap_or_default(), ..Default::default() };
    st.restart_count = cur.map(|o| o.attempt as i32).unwrap_or(0);
    if let Some(o) = cur {
        st.container_id = Some(w.shared.cri.status_id(&o.id));
        st.image_id = o.status.image_ref.clone();
        if let Some(img) = o.status.image.as_ref().filter(|i| !i.user_specified_image.is_empty()) {
            st.image = img.user_specified_image.clone();
        }
    }
    let track_waiting = track.and_then(|t| t.waiting.clone());
    let post_starting = cur.is_some_and(|o| track.and_then(|t| t.post_starting.as_deref()) == Some(o.id.as_str()));
    match cur {
        None => {
            st.state = Some(match track_waiting {
                Some(wt) => waiting(&wt.reason, Some(wt.message)),
                None if !init && !initialized => waiting("PodInitializing", None),
                None => waiting("ContainerCreating", None),
            });
            st.started = Some(false);
        }
        Some(o) if o.running() && post_starting => {
            st.state = Some(waiting("ContainerCreating", None));
            st.started = Some(false);
            st.last_state = prev.filter(|p| p.exited()).map(|p| ContainerState { terminated: Some(terminated(w, p)), ..Default::default() });
        }
        Some(o) if o.running() => {
            st.state = Some(ContainerState { running: Some(ContainerStateRunning { started_at: time(o.status.started_at) }), ..Default::default() });
            let (started, ready) = match probes.filter(|p| p.container_id == o.id) {
                Some(p) => (p.started, p.started && p.ready),
                None => (true, true),
            };
            st.started = Some(started);
            st.ready = ready;
            st.last_state = prev.filter(|p| p.exited()).map(|p| ContainerState { terminated: Some(terminated(w, p)), ..Default::default() });
        }
        Some(o) if o.exited() => {
            let restart = !w.terminating && will_restart(&w.pod, c, o.status.exit_code, init) && !w.terminal();
            match track_waiting.filter(|_| restart) {
                Some(wt) => {
                    st.state = Some(waiting(&wt.reason, Some(wt.message)));
                    st.last_state = Some(ContainerState { terminated: Some(terminated(w, o)), ..Default::default() });
                }
                None => {
                    st.state = Some(ContainerState { terminated: Some(terminated(w, o)), ..Default::default() });
                    st.last_state = prev.filter(|p| p.exited()).map(|p| ContainerState { terminated: Some(terminated(w, p)), ..Default::default() });
                }
            }
            st.started = Some(false);
        }
        Some(_) => {
            st.state = Some(match track_waiting {
                Some(wt) => waiting(&wt.reason, Some(wt.message)),
                None => waiting("ContainerCreating", None),
            });
            st.started = Some(false);
        }
    }
    if st.last_state.is_none() {
        st.last_state = Some(ContainerState::default());
    }
    super::resize::container_resources(&mut st, c);
    st
}

/// Whether every init container is done (sidecars: started).
fn initialized(w: &Worker) -> bool {
    spec::spec(&w.pod).init_containers.iter().flatten().all(|c| {
        let (cur, _) = w.current(&c.name);
        match cur {
            Some(o) if is_sidecar(c) => o.running() && w.probes.get(&c.name).is_none_or(|p| p.container_id != o.id || p.started),
            Some(o) => o.exited() && o.status.exit_code == 0,
            None => false,
        }
    })
}

/// The pod phase by kubelet's rules.
pub fn phase(w: &Worker) -> &'static str {
    let s = spec::spec(&w.pod);
    let policy = s.restart_policy.as_deref().unwrap_or("Always");
    if w.init_failed || w.eviction_message().is_some() {
        return "Failed";
    }
    if !initialized(w) {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &s.containers {
        match w.current(&c.name).0 {
            Some(o) if o.running() => running += 1,
            Some(o) if o.exited() => {
                stopped += 1;
                if o.status.exit_code == 0 {
                    succeeded += 1;
                }
            }
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if policy == "Always" && !w.terminating {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" || w.terminating {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, message: Option<String>, now: &Time) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.filter(|_| !ok).map(str::to_string),
        message: message.filter(|_| !ok),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
}

/// The pod's status now.
pub fn compute(w: &Worker) -> PodStatus {
    let s = spec::spec(&w.pod);
    let is_init = initialized(w);
    let init_statuses: Vec<ContainerStatus> = s.init_containers.iter().flatten().map(|c| container_status(w, c, true, is_init)).collect();
    let statuses: Vec<ContainerStatus> = s.containers.iter().map(|c| container_status(w, c, false, is_init)).collect();
    let phase = phase(w).to_string();
    let now = Time(Timestamp::now());
    let sandbox_ready = w.sandbox.as_ref().is_some_and(|sb| sb.state == cri::PodSandboxState::SandboxReady as i32);
    let unready: Vec<&str> = statuses.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
    let unready_sidecars = init_statuses.iter().zip(s.init_containers.iter().flatten()).filter(|(st, c)| is_sidecar(c) && !st.ready).map(|(st, _)| st.name.as_str());
    let unready_all: Vec<&str> = unready.iter().copied().chain(unready_sidecars).collect();
    let incomplete: Vec<&str> = init_statuses
        .iter()
        .filter(|c| c.state.as_ref().and_then(|s| s.terminated.as_ref()).is_none_or(|t| t.exit_code != 0))
        .map(|c| c.name.as_str())
        .collect();
    let completed = phase == "Succeeded" || phase == "Failed";
    let ready = unready_all.is_empty() && !completed;
    let not_ready_reason = if completed { "PodCompleted" } else { "ContainersNotReady" };
    let msg = format!("containers with unready status: [{}]", unready_all.join(" "));
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None, &now),
        condition(
            "Initialized",
            is_init || completed && !w.init_failed,
            Some(if completed { "PodCompleted" } else { "ContainersNotInitialized" }),
            Some(format!("containers with incomplete status: [{}]", incomplete.join(" "))),
            &now,
        ),
        condition("Ready", ready, Some(not_ready_reason), Some(msg.clone()), &now),
        condition("ContainersReady", ready, Some(not_ready_reason), Some(msg), &now),
        condition("PodScheduled", true, None, None, &now),
    ];
    let evicted = w.eviction_message();
    let mut conditions = conditions;
    if let Some(msg) = &evicted {
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("TerminationByKubelet".into()),
            message: Some(msg.clone()),
            last_transition_time: Some(now.clone()),
            ..Default::default()
        });
    }
    conditions.extend(super::resize::conditions(w, &now));
    let ips = w.pod_ips();
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        host_ip: Some(w.shared.cfg.host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: w.shared.cfg.host_ip.clone() }]),
        start_time: Some(Time(w.start_time)),
        qos_class: Some(super::qos::qos_class(&w.pod).to_string()),
        reason: evicted.as_ref().map(|_| "Evicted".to_string()),
        message: evicted.clone(),
        ..Default::default()
    }
}
