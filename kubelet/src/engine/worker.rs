//! One worker per pod: reconciles the pod's spec with what runs in the
//! runtime, woken by runtime events, probe results, object changes and its
//! own timers (back-off expiry, a slow resync as a safety net).

use tokio_util::sync::CancellationToken;
use super::backoff::Backoff;
use super::env::{self, PodFacts};
use super::events::Involved;
use super::probing::{self, ProbeEvent, ProbeKind, ProbeResult};
use super::spec::{self, ContainerInputs};
use super::status;
use super::Shared;
use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Messages to a pod worker.
pub enum Msg {
    /// A new desired spec (same UID).
    Update(Box<Pod>),
    /// Something changed in the runtime: look again.
    Wake,
    /// Terminate the pod within `grace` seconds (the pod's own when `None`),
    /// then remove its sandbox when `remove`.
    Terminate { grace: Option<i64>, remove: bool, done: oneshot::Sender<()> },
    /// Evict the pod: stop it within `grace` seconds and keep it Failed
    /// with reason Evicted and this message.
    Evict { grace: i64, message: String, done: oneshot::Sender<()> },
    /// Resize containers in place (checked by the manager): apply `pod`'s
    /// resources, or record why the resize waits.
    Resize { pod: Box<Pod>, pending: Option<super::resize::Pending>, done: oneshot::Sender<Result<(), String>> },
}

/// A container as the runtime reports it.
#[derive(Clone, Debug)]
pub struct Observed {
    pub id: String,
    pub sandbox_id: String,
    pub attempt: u32,
    pub status: cri::ContainerStatus,
}

impl Observed {
    pub fn state(&self) -> cri::ContainerState {
        cri::ContainerState::try_from(self.status.state).unwrap_or(cri::ContainerState::ContainerUnknown)
    }
    pub fn running(&self) -> bool {
        self.state() == cri::ContainerState::ContainerRunning
    }
    pub fn exited(&self) -> bool {
        self.state() == cri::ContainerState::ContainerExited
    }
}

/// Why a container could not be started, shown as its waiting reason.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// Per container-name state the worker keeps between syncs.
#[derive(Default)]
pub struct ContainerTrack {
    pub backoff: Backoff,
    pub pull_backoff: Backoff,
    pub waiting: Option<Waiting>,
    /// The container whose postStart hook is still running.
    pub post_starting: Option<String>,
}

/// Probe results of the current container of each name.
pub struct ProbeState {
    pub container_id: String,
    pub started_at: std::time::SystemTime,
    pub ready: bool,
    pub started: bool,
    pub handles: Vec<probing::Handle>,
}

pub struct Worker {
    pub shared: Arc<Shared>,
    pub pod: Pod,
    pub start_time: k8s_openapi::jiff::Timestamp,
    pub sandbox: Option<cri::PodSandboxStatus>,
    pub containers: Vec<Observed>,
    pub tracks: HashMap<String, ContainerTrack>,
    pub probes: HashMap<String, ProbeState>,
    pub init_failed: bool,
    pub terminating: bool,
    /// Set once evicted: the eviction message.
    pub evicted: Option<String>,
    pub resize: super::resize::State,
    pub status_tx: watch::Sender<Pod>,
    probe_tx: mpsc::Sender<ProbeEvent>,
    /// The sandbox's network namespace, for probes and hooks.
    netns: Option<(String, Option<std::path::PathBuf>)>,
    /// The pod's volumes: set up before anything of the pod starts.
    pub volumes: super::volumes::PodVolumes,
    /// Cancelled when the pod is to stop (see `PodManager`).
    stop: CancellationToken,
}

/// The pod's restart policy.
fn restart_policy(pod: &Pod) -> &str {
    spec::spec(pod).restart_policy.as_deref().unwrap_or("Always")
}

pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn involved<'a>(pod: &'a Pod, field: Option<String>) -> Involved<'a> {
    Involved { namespace: spec::pod_namespace(pod), name: spec::pod_name(pod), uid: spec::pod_uid(pod), field_path: field }
}

fn field_path(pod: &Pod, name: &str) -> String {
    let init = spec::spec(pod).init_containers.iter().flatten().any(|c| c.name == name);
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

impl Worker {
    pub fn spawn(shared: Arc<Shared>, pod: Pod, stop: CancellationToken) -> (mpsc::UnboundedSender<Msg>, watch::Receiver<Pod>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut first = pod.clone();
        first.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Pending".into()), ..Default::default() });
        let (status_tx, status_rx) = watch::channel(first);
        let (probe_tx, probe_rx) = mpsc::channel(64);
        let w = Worker {
            shared,
            pod,
            start_time: k8s_openapi::jiff::Timestamp::now(),
            sandbox: None,
            containers: Vec::new(),
            tracks: HashMap::new(),
            probes: HashMap::new(),
            init_failed: false,
            terminating: false,
            evicted: None,
            resize: Default::default(),
            status_tx,
            probe_tx,
            netns: None,
            volumes: Default::default(),
            stop,
        };
        tokio::spawn(w.run(rx, probe_rx));
        (tx, status_rx)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, mut probe_rx: mpsc::Receiver<ProbeEvent>) {
        let mut objects = self.shared.objects.subscribe();
        loop {
            let next = match self.sync().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(pod = %self.key(), "sync failed: {e:#}");
                    Some(Duration::from_secs(2))
                }
            };
            self.publish();
            let sleep = next.unwrap_or(self.shared.cfg.resync).min(self.shared.cfg.resync);
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => return,
                    Some(Msg::Update(p)) => self.update(*p),
                    Some(Msg::Wake) => {}
                    Some(Msg::Terminate { grace, remove, done }) => {
                        self.pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
                        self.pod.metadata.deletion_grace_period_seconds = Some(grace.unwrap_or_else(|| spec::spec(&self.pod).termination_grace_period_seconds.unwrap_or(30)));
                        self.terminating = true;
                        self.publish();
                        self.terminate(grace, remove).await;
                        self.publish();
                        let _ = done.send(());
                        return;
                    }
                    Some(Msg::Evict { grace, message, done }) => {
                        self.evicted = Some(message);
                        self.publish();
                        self.terminate(Some(grace), false).await;
                        self.publish();
                        let _ = done.send(());
                    }
                    Some(Msg::Resize { pod, pending, done }) => {
                        let r = self.resize(*pod, pending).await;
                        self.publish();
                        let _ = done.send(r);
                    }
                },
                r = probe_rx.recv() => if let Some(r) = r { self.on_probe(r).await },
                _ = objects.changed() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", spec::pod_namespace(&self.pod), spec::pod_name(&self.pod))
    }

    fn update(&mut self, pod: Pod) {
        self.pod = pod;
    }

    async fn resize(&mut self, pod: Pod, pending: Option<super::resize::Pending>) -> Result<(), String> {
        if let Some(p) = pending {
            self.resize.pending = Some(p.clone());
            return Err(format!("{}: {}", p.reason, p.message));
        }
        self.resize = super::resize::State { pending: None, in_progress: Some(None) };
        self.publish();
        let r = super::resize::actuate(self, pod).await;
        self.resize.in_progress = r.as_ref().err().map(|e| Some(e.clone()));
        r
    }

    fn publish(&self) {
        let mut p = self.pod.clone();
        // What the apiserver and scheduler would have set.
        p.metadata.creation_timestamp.get_or_insert(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(self.start_time));
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name.get_or_insert_with(|| self.shared.cfg.node_name.clone());
        }
        let mut st = status::compute(self);
        // A condition's transition time changes only when its status does.
        let prev = self.status_tx.borrow().status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        for c in st.conditions.iter_mut().flatten() {
            if let Some(old) = prev.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
                c.last_transition_time = old.last_transition_time.clone();
            }
        }
        p.status = Some(st);
        self.status_tx.send_replace(p);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Refreshes the view of the pod's sandbox and containers.
    async fn observe(&mut self) -> anyhow::Result<()> {
        let uid = spec::pod_uid(&self.pod).to_string();
        let mut rt = self.shared.cri.runtime.clone();
        let mut labels = HashMap::new();
        labels.insert(spec::LABEL_POD_UID.to_string(), uid);
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter { label_selector: labels.clone(), ..Default::default() }),
            })
            .await?
            .into_inner()
            .items;
        // The newest sandbox is the pod's; older ones are leftovers.
        let newest = sandboxes.iter().max_by_key(|s| (s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0), s.created_at));
        self.sandbox = match newest {
            Some(s) => rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: s.id.clone(), verbose: false }).await?.into_inner().status,
            None => None,
        };
        if let Some(sb) = self.sandbox.as_ref().filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32) {
            if self.netns.as_ref().map(|(id, _)| id) != Some(&sb.id) {
                let ns = probing::sandbox_netns(&self.shared, &sb.id).await;
                self.netns = Some((sb.id.clone(), ns));
            }
        }
        for old in sandboxes.iter().filter(|s| Some(&s.id) != self.sandbox.as_ref().map(|s| &s.id)) {
            let _ = rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: old.id.clone() }).await;
            let _ = rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: old.id.clone() }).await;
        }
        let list = rt
            .list_containers(cri::ListContainersRequest { filter: Some(cri::ContainerFilter { label_selector: labels, ..Default::default() }) })
            .await?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            match rt.container_status(cri::ContainerStatusRequest { container_id: c.id.clone(), verbose: false }).await {
                Ok(s) => {
                    if let Some(status) = s.into_inner().status {
                        out.push(Observed { id: c.id.clone(), sandbox_id: c.pod_sandbox_id.clone(), attempt: c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0), status });
                    }
                }
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        out.sort_by_key(|o| (o.attempt, o.status.created_at));
        self.containers = out;
        Ok(())
    }

    /// The newest container of a name, and the one before it.
    pub fn current(&self, name: &str) -> (Option<&Observed>, Option<&Observed>) {
        let mut of: Vec<&Observed> = self.containers.iter().filter(|o| o.status.metadata.as_ref().map(|m| m.name.as_str()) == Some(name)).collect();
        let cur = of.pop();
        (cur, of.pop())
    }

    fn sandbox_ready(&self) -> bool {
        self.sandbox.as_ref().is_some_and(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
    }

    /// Why the pod was evicted: by the eviction manager, or an emptyDir
    /// over its sizeLimit.
    pub fn eviction_message(&self) -> Option<String> {
        self.evicted.clone().or_else(|| self.volumes.evicted().map(str::to_string))
    }

    pub fn pod_ips(&self) -> Vec<String> {
        if spec::host_network(&self.pod) {
            return vec![self.shared.cfg.host_ip.clone()];
        }
        let Some(net) = self.sandbox.as_ref().and_then(|s| s.network.as_ref()) else { return Vec::new() };
        std::iter::once(net.ip.clone()).chain(net.additional_ips.iter().map(|i| i.ip.clone())).filter(|i| !i.is_empty()).collect()
    }

    /// Whether the pod has finished for good (every container done and
    /// none to restart).
    pub fn terminal(&self) -> bool {
        let phase = status::phase(self);
        phase == "Succeeded" || phase == "Failed"
    }

    /// One reconciliation. Returns when to look again at the latest.
    async fn sync(&mut self) -> anyhow::Result<Option<Duration>> {
        self.observe().await?;
        if self.terminating || self.volumes.evicted().is_some() {
            return Ok(None);
        }
        // Volumes first: nothing of the pod starts before they are all set up.
        let mut volumes_next = None;
        if !self.terminal() {
            let v = self.volumes.sync(&self.shared, &self.pod).await;
            if v.evict {
                self.stop_running(Some(2), "evicted").await;
                return Ok(None);
            }
            if !v.ready {
                return Ok(v.next);
            }
            volumes_next = v.next;
        }
        if !self.sandbox_ready() {
            if self.terminal() {
                return Ok(None);
            }
            let attempt = match &self.sandbox {
                Some(old) => {
                    // The sandbox died: its containers go with it, as under kubelet.
                    let old_id = old.id.clone();
                    let attempt = old.metadata.as_ref().map(|m| m.attempt + 1).unwrap_or(1);
                    self.shared.events.normal(&involved(&self.pod, None), "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.");
                    let mut rt = self.shared.cri.runtime.clone();
                    let _ = rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: old_id.clone() }).await;
                    let _ = rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: old_id }).await;
                    attempt
                }
                None => 0,
            };
            self.create_sandbox(attempt).await?;
            self.observe().await?;
        }
        let now = Instant::now();
        let mut next: Option<Duration> = volumes_next;
        let mut wake = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        let spec = spec::spec(&self.pod).clone();
        let policy = restart_policy(&self.pod).to_string();

        // Init containers, strictly in order; sidecars must be started (and
        // past their startup probe) before the next one.
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let (cur, _) = self.current(&c.name);
            let cur = cur.cloned();
            if is_sidecar(c) {
                match &cur {
                    Some(o) if o.running() => {
                        if !self.probe_started(&c.name, &o.id) {
                            initialized = false;
                            break;
                        }
                        continue;
                    }
                    _ => {
                        if let Some(d) = self.start_or_backoff(c, cur.as_ref(), now).await? {
                            wake(d);
                        }
                        initialized = false;
                        break;
                    }
                }
            }
            match &cur {
                Some(o) if o.exited() && o.status.exit_code == 0 => continue,
                Some(o) if o.exited() => {
                    if policy == "Never" {
                        if !self.init_failed {
                            self.init_failed = true;
                        }
                        initialized = false;
                        break;
                    }
                    if let Some(d) = self.start_or_backoff(c, cur.as_ref(), now).await? {
                        wake(d);
                    }
                    initialized = false;
                    break;
                }
                Some(o) if o.running() => {
                    initialized = false;
                    break;
                }
                _ => {
                    if let Some(d) = self.start_or_backoff(c, cur.as_ref(), now).await? {
                        wake(d);
                    }
                    initialized = false;
                    break;
                }
            }
        }
        if self.init_failed {
            self.stop_running(None, "Init container failed").await;
            return Ok(None);
        }
        if !initialized {
            return Ok(next);
        }

        // App containers.
        for c in &spec.containers {
            let (cur, _) = self.current(&c.name);
            let cur = cur.cloned();
            match &cur {
                Some(o) if o.running() => {}
                Some(o) if o.exited() => {
                    let restart = policy == "Always" || (policy == "OnFailure" && o.status.exit_code != 0);
                    if restart {
                        if let Some(d) = self.start_or_backoff(c, cur.as_ref(), now).await? {
                            wake(d);
                        }
                    }
                }
                _ => {
                    if let Some(d) = self.start_or_backoff(c, cur.as_ref(), now).await? {
                        wake(d);
                    }
                }
            }
        }
        // Sidecars keep running until the main containers are done for good.
        if self.terminal() {
            self.stop_running(None, "Pod completed").await;
        }
        self.gc().await;
        Ok(next)
    }

    /// Starts a container unless it is backing off from a crash, a failed
    /// pull or a config error; returns when the back-off ends.
    async fn start_or_backoff(&mut self, c: &Container, prev: Option<&Observed>, now: Instant) -> anyhow::Result<Option<Duration>> {
        let track = self.tracks.entry(c.name.clone()).or_default();
        if let Some(prev) = prev.filter(|p| p.exited()) {
            // Kubelet's rule: restart at once unless the last restart's
            // back-off window is still open; each restart doubles the window.
            if let Some(d) = track.backoff.remaining(now) {
                if track.waiting.as_ref().is_none_or(|w| w.reason != "CrashLoopBackOff") {
                    track.waiting = Some(Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {} restarting failed container={} pod={}_{}({})",
                            fmt_secs(track.backoff.delay().unwrap_or(d)),
                            c.name,
                            spec::pod_name(&self.pod),
                            spec::pod_namespace(&self.pod),
                            spec::pod_uid(&self.pod)
                        ),
                    });
                    self.shared.events.warning(&involved(&self.pod, Some(field_path(&self.pod, &c.name))), "BackOff", "Back-off restarting failed container");
                }
                return Ok(Some(d));
            }
            let ran = Duration::from_nanos((prev.status.finished_at - prev.status.started_at).max(0) as u64);
            track.backoff.failed(&self.shared.cfg.backoff, now, Some(ran));
        }
        if let Some(d) = track.pull_backoff.remaining(now) {
            if let Some(w) = &mut track.waiting {
                if w.reason == "ErrImagePull" {
                    w.reason = "ImagePullBackOff".into();
                    w.message = format!("Back-off pulling image \"{}\"", c.image.clone().unwrap_or_default());
                    self.shared.events.normal(&involved(&self.pod, Some(field_path(&self.pod, &c.name))), "BackOff", w.message.clone());
                }
            }
            return Ok(Some(d));
        }
        let attempt = match prev {
            Some(p) if p.exited() => p.attempt + 1,
            // Created but never started (berth stopped in between): replace it.
            Some(p) if p.state() == cri::ContainerState::ContainerCreated => {
                let mut rt = self.shared.cri.runtime.clone();
                let _ = rt.remove_container(cri::RemoveContainerRequest { container_id: p.id.clone() }).await;
                p.attempt
            }
            Some(_) => return Ok(Some(Duration::from_secs(1))),
            None => 0,
        };
        self.start_container(c, attempt, now).await
    }

    async fn start_container(&mut self, c: &Container, attempt: u32, now: Instant) -> anyhow::Result<Option<Duration>> {
        let pod = self.pod.clone();
        let obj = involved(&pod, Some(field_path(&pod, &c.name)));
        let image = c.image.clone().unwrap_or_default();
        // Image, by the pull policy.
        let image_ref = match self.ensure_image(c, &image).await {
            Ok(r) => r,
            Err((reason, msg)) => {
                let track = self.tracks.entry(c.name.clone()).or_default();
                let d = track.pull_backoff.failed(&self.shared.cfg.backoff, now, None);
                self.shared.events.warning(&obj, "Failed", msg.clone());
                self.shared.events.warning(&obj, "Failed", format!("Error: {reason}"));
                track.waiting = Some(Waiting { reason, message: msg });
                // Look again mid-window: the status then shows ImagePullBackOff.
                return Ok(Some(d / 2));
            }
        };
        // Environment and volumes.
        let ips = self.pod_ips();
        let facts = PodFacts { pod: &self.pod, node_name: &self.shared.cfg.node_name, host_ip: &self.shared.cfg.host_ip, pod_ips: &ips };
        let envs = match env::resolve(c, &facts, &self.shared.objects) {
            Ok(e) => e,
            Err(e) => {
                self.config_error(c, &e.0);
                return Ok(None);
            }
        };
        let mounts = match self.volumes.mounts(&self.shared, &self.pod, c, &envs) {
            Ok(m) => m,
            Err(e) => {
                self.config_error(c, &format!("{e:#}"));
                return Ok(None);
            }
        };
        let Some(sandbox) = self.sandbox.clone() else { return Ok(None) };
        let sandbox_config = spec::sandbox_config(&self.pod, sandbox.metadata.as_ref().map(|m| m.attempt).unwrap_or(0), &self.shared.cfg.log_root, &self.cgroup_parent());
        let resources = spec::container_resources(&self.shared.node, &self.pod, c);
        let config = spec::container_config(&self.pod, c, ContainerInputs { attempt, image: image_ref, envs, mounts, resources });
        let mut rt = self.shared.cri.runtime.clone();
        let created = rt
            .create_container(cri::CreateContainerRequest { pod_sandbox_id: sandbox.id.clone(), config: Some(config), sandbox_config: Some(sandbox_config) })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                let track = self.tracks.entry(c.name.clone()).or_default();
                track.waiting = Some(Waiting { reason: "CreateContainerError".into(), message: e.message().to_string() });
                self.shared.events.warning(&obj, "Failed", format!("Error: {}", e.message()));
                let d = track.backoff.failed(&self.shared.cfg.backoff, now, None);
                return Ok(Some(d));
            }
        };
        self.shared.events.normal(&obj, "Created", format!("Created container: {}", c.name));
        if let Err(e) = rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await {
            let track = self.tracks.entry(c.name.clone()).or_default();
            track.waiting = Some(Waiting { reason: "RunContainerError".into(), message: e.message().to_string() });
            self.shared.events.warning(&obj, "Failed", format!("Error: {}", e.message()));
            let d = track.backoff.failed(&self.shared.cfg.backoff, now, None);
            return Ok(Some(d));
        }
        self.shared.events.normal(&obj, "Started", format!("Started container {}", c.name));
        {
            let track = self.tracks.entry(c.name.clone()).or_default();
            track.waiting = None;
            track.post_starting = Some(id.clone());
        }
        self.observe().await?;
        self.start_probes(c, &id);
        // postStart: the container is not Running until it completes. As in
        // kubelet it has no time limit; the pod's termination ends it.
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            self.publish();
            let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
            let stop = self.stop.clone();
            let target = self.target(c, &id);
            let hook = tokio::select! {
                r = probing::run_hook(&self.shared, h, &target, c, &self.pod, forever) => Some(r),
                _ = stop.cancelled() => None,
            };
            let Some(hook) = hook else {
                self.tracks.entry(c.name.clone()).or_default().post_starting = None;
                return Ok(None);
            };
            if let Err(msg) = hook {
                self.shared.events.warning(&obj, "FailedPostStartHook", msg.clone());
                self.tracks.entry(c.name.clone()).or_default().post_starting = None;
                self.kill_container(c, &id, None, &format!("FailedPostStartHook: {msg}")).await;
                return Ok(Some(Duration::ZERO));
            }
        }
        self.tracks.entry(c.name.clone()).or_default().post_starting = None;
        Ok(None)
    }

    fn config_error(&mut self, c: &Container, msg: &str) {
        let obj = involved(&self.pod, Some(field_path(&self.pod, &c.name)));
        let track = self.tracks.entry(c.name.clone()).or_default();
        let fresh = track.waiting.as_ref().is_none_or(|w| w.message != msg);
        track.waiting = Some(Waiting { reason: "CreateContainerConfigError".into(), message: msg.to_string() });
        if fresh {
            self.shared.events.warning(&obj, "Failed", format!("Error: {msg}"));
        }
    }

    /// Pulls the image as the policy says; returns the reference to create
    /// the container from, or the waiting reason and message.
    async fn ensure_image(&self, c: &Container, image: &str) -> Result<String, (String, String)> {
        let obj = involved(&self.pod, Some(field_path(&self.pod, &c.name)));
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image.rsplit('/').next().is_some_and(|last| last.contains(':') && !last.ends_with(":latest")) || image.contains('@');
            if tagged { "IfNotPresent" } else { "Always" }.to_string()
        });
        let spec_ = cri::ImageSpec { image: image.to_string(), ..Default::default() };
        let mut images = self.shared.cri.images.clone();
        let present = images
            .image_status(cri::ImageStatusRequest { image: Some(spec_.clone()), verbose: false })
            .await
            .ok()
            .and_then(|r| r.into_inner().image)
            .map(|i| i.id);
        match (policy.as_str(), present) {
            ("Never", Some(id)) | ("IfNotPresent", Some(id)) => {
                self.shared.events.normal(&obj, "Pulled", format!("Container image \"{image}\" already present on machine"));
                Ok(id)
            }
            ("Never", None) => {
                let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
                Err(("ErrImageNeverPull".into(), msg))
            }
            _ => {
                self.shared.events.normal(&obj, "Pulling", format!("Pulling image \"{image}\""));
                let t = Instant::now();
                match images.pull_image(cri::PullImageRequest { image: Some(spec_), auth: None, sandbox_config: None }).await {
                    Ok(r) => {
                        self.shared.events.normal(&obj, "Pulled", format!("Successfully pulled image \"{image}\" in {:.3}s", t.elapsed().as_secs_f64()));
                        Ok(r.into_inner().image_ref)
                    }
                    Err(e) => Err(("ErrImagePull".into(), format!("Failed to pull image \"{image}\": {}", e.message()))),
                }
            }
        }
    }

    /// The sandbox's cgroup parent: the pod cgroup, or the configured parent.
    fn cgroup_parent(&self) -> String {
        match &self.shared.cgroups {
            Some(cg) => cg.pod_path(&self.pod),
            None => self.shared.cfg.cgroup_parent.clone(),
        }
    }

    async fn create_sandbox(&mut self, attempt: u32) -> anyhow::Result<()> {
        if let Some(cg) = &self.shared.cgroups {
            if let Err(e) = cg.ensure_pod(&self.pod) {
                self.shared.events.warning(&involved(&self.pod, None), "FailedCreatePodSandBox", format!("Failed to create the pod cgroup: {e:#}"));
                return Err(e);
            }
        }
        let mut config = spec::sandbox_config(&self.pod, attempt, &self.shared.cfg.log_root, &self.cgroup_parent());
        if let Some(l) = config.linux.as_mut() {
            (l.resources, l.overhead) = {
                let (r, o) = spec::sandbox_resources(&self.shared.node, &self.pod);
                (Some(r), o)
            };
        }
        std::fs::create_dir_all(&config.log_directory)?;
        let mut rt = self.shared.cri.runtime.clone();
        match rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: self.shared.cfg.runtime_handler.clone() }).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.shared.events.warning(&involved(&self.pod, None), "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {}", e.message()));
                Err(anyhow::anyhow!("RunPodSandbox: {}", e.message()))
            }
        }
    }

    pub fn target(&self, c: &Container, container_id: &str) -> probing::Target {
        let netns = self.netns.as_ref().and_then(|(_, n)| n.clone());
        probing::target(&self.pod, c, container_id, self.pod_ips().first().map(String::as_str), netns)
    }

    fn start_probes(&mut self, c: &Container, id: &str) {
        self.probes.remove(&c.name);
        let target = self.target(c, id);
        let started_at = self.current(&c.name).0.filter(|o| o.id == id).map(|o| std::time::UNIX_EPOCH + Duration::from_nanos(o.status.started_at.max(0) as u64)).unwrap_or_else(std::time::SystemTime::now);
        let mut st = ProbeState { container_id: id.to_string(), ready: c.readiness_probe.is_none(), started: c.startup_probe.is_none(), started_at, handles: Vec::new() };
        if let Some(p) = &c.startup_probe {
            st.handles.push(probing::spawn(&self.shared, ProbeKind::Startup, p.clone(), target, started_at, self.probe_tx.clone()));
        } else {
            self.spawn_after_startup(c, target, &mut st);
        }
        self.probes.insert(c.name.clone(), st);
    }

    /// Liveness and readiness run once the startup probe passed.
    fn spawn_after_startup(&self, c: &Container, target: probing::Target, st: &mut ProbeState) {
        if let Some(p) = &c.liveness_probe {
            st.handles.push(probing::spawn(&self.shared, ProbeKind::Liveness, p.clone(), target.clone(), st.started_at, self.probe_tx.clone()));
        }
        if let Some(p) = &c.readiness_probe {
            st.handles.push(probing::spawn(&self.shared, ProbeKind::Readiness, p.clone(), target, st.started_at, self.probe_tx.clone()));
        }
    }

    fn probe_started(&self, name: &str, id: &str) -> bool {
        self.probes.get(name).is_none_or(|p| p.container_id != id || p.started)
    }

    async fn on_probe(&mut self, ev: ProbeEvent) {
        let id = match &ev {
            ProbeEvent::Changed { container_id, .. } | ProbeEvent::Attempt { container_id, .. } => container_id.clone(),
        };
        let Some(name) = self.probes.iter().find(|(_, p)| p.container_id == id).map(|(n, _)| n.clone()) else { return };
        let Some(c) = self.find_container(&name).cloned() else { return };
        let pod = self.pod.clone();
        let obj = involved(&pod, Some(field_path(&pod, &c.name)));
        match ev {
            ProbeEvent::Attempt { kind, outcome, .. } => {
                if let Some((reason, msg)) = outcome.event(kind) {
                    self.shared.events.warning(&obj, reason, msg);
                }
            }
            ProbeEvent::Changed { kind: ProbeKind::Startup, result: ProbeResult::Success, .. } => {
                let target = self.target(&c, &id);
                let mut st = self.probes.remove(&name).expect("present");
                st.started = true;
                st.handles.clear();
                self.spawn_after_startup(&c, target, &mut st);
                self.probes.insert(name, st);
            }
            ProbeEvent::Changed { kind: ProbeKind::Readiness, result, .. } => {
                if let Some(st) = self.probes.get_mut(&name) {
                    st.ready = result == ProbeResult::Success;
                }
            }
            ProbeEvent::Changed { kind: kind @ (ProbeKind::Startup | ProbeKind::Liveness), result: ProbeResult::Failure, termination_grace_period_seconds, .. } => {
                let what = if kind == ProbeKind::Startup { "startup" } else { "liveness" };
                self.shared.events.normal(&obj, "Killing", format!("Container {} failed {what} probe, will be restarted", c.name));
                self.probes.remove(&name);
                self.kill_container(&c, &id, termination_grace_period_seconds, "probe").await;
            }
            ProbeEvent::Changed { .. } => {}
        }
    }

    fn find_container(&self, name: &str) -> Option<&Container> {
        let s = spec::spec(&self.pod);
        s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == name)
    }

    /// Stops one container: preStop hook, then the stop signal, SIGKILL after
    /// the grace period (the pod's, or `grace`).
    pub(super) async fn kill_container(&self, c: &Container, id: &str, grace: Option<i64>, message: &str) {
        let grace = grace.unwrap_or_else(|| spec::spec(&self.pod).termination_grace_period_seconds.unwrap_or(30)).max(0);
        let deadline = Instant::now() + Duration::from_secs(grace as u64);
        let obj = involved(&self.pod, Some(field_path(&self.pod, &c.name)));
        if message.is_empty() || !message.starts_with("FailedPostStartHook") {
            self.shared.events.normal(&obj, "Killing", format!("Stopping container {}", c.name));
        }
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            if let Err(msg) = probing::run_hook(&self.shared, h, &self.target(c, id), c, &self.pod, deadline).await {
                self.shared.events.warning(&obj, "FailedPreStopHook", msg);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now()).as_secs() as i64;
        let mut rt = self.shared.cri.runtime.clone();
        if let Err(e) = rt.stop_container(cri::StopContainerRequest { container_id: id.to_string(), timeout: left }).await {
            tracing::warn!(pod = %self.key(), container = %c.name, "StopContainer: {}", e.message());
        }
    }

    /// Stops every running container: app containers first, then sidecars in
    /// reverse order, as Kubernetes terminates pods.
    async fn stop_running(&mut self, grace: Option<i64>, why: &str) {
        let s = spec::spec(&self.pod).clone();
        let running = |w: &Worker, c: &Container| w.current(&c.name).0.filter(|o| o.running()).map(|o| o.id.clone());
        let mut app = Vec::new();
        for c in &s.containers {
            if let Some(id) = running(self, c) {
                app.push((c.clone(), id));
            }
        }
        tracing::debug!(pod = %self.key(), why, "stopping containers");
        futures::future::join_all(app.iter().map(|(c, id)| self.kill_container(c, id, grace, ""))).await;
        let mut init: Vec<Container> = s.init_containers.clone().unwrap_or_default();
        init.reverse();
        for c in init {
            if let Some(id) = running(self, &c) {
                self.kill_container(&c, &id, grace, "").await;
            }
        }
        self.probes.clear();
        let _ = self.observe().await;
    }

    /// Graceful termination of the whole pod.
    async fn terminate(&mut self, grace: Option<i64>, remove: bool) {
        self.terminating = true;
        let _ = self.observe().await;
        self.stop_running(grace, "pod terminated").await;
        let mut rt = self.shared.cri.runtime.clone();
        if let Some(sb) = self.sandbox.clone() {
            if let Err(e) = rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sb.id.clone() }).await {
                tracing::warn!(pod = %self.key(), "StopPodSandbox: {}", e.message());
            }
            if remove {
                for o in &self.containers {
                    let _ = rt.remove_container(cri::RemoveContainerRequest { container_id: o.id.clone() }).await;
                }
                if let Err(e) = rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb.id.clone() }).await {
                    tracing::warn!(pod = %self.key(), "RemovePodSandbox: {}", e.message());
                }
            }
        }
        let _ = self.observe().await;
        if remove {
            super::volumes::cleanup(&self.shared, &self.pod);
            // Kubelet removes a deleted pod's logs with it.
            let logs = spec::log_directory(&self.shared.cfg.log_root, &self.pod);
            if let Err(e) = std::fs::remove_dir_all(&logs) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(pod = %self.key(), "removing {logs}: {e}");
                }
            }
            if let Some(cg) = &self.shared.cgroups {
                cg.remove_pod(&self.pod);
            }
        }
    }

    /// Removes dead containers beyond the newest two of each name (kubelet
    /// keeps the previous one for `--previous` logs and lastState).
    async fn gc(&mut self) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut doomed = Vec::new();
        let current_sandbox = self.sandbox.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        for o in self.containers.iter().rev() {
            let name = o.status.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let n = seen.entry(name).or_default();
            *n += 1;
            if (*n > 2 || o.sandbox_id != current_sandbox) && !o.running() {
                doomed.push(o.id.clone());
            }
        }
        if doomed.is_empty() {
            return;
        }
        let mut rt = self.shared.cri.runtime.clone();
        let gone: HashSet<String> = doomed.iter().cloned().collect();
        for id in doomed {
            let _ = rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await;
        }
        self.containers.retain(|o| !gone.contains(&o.id));
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if d.subsec_millis() != 0 && s == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}
