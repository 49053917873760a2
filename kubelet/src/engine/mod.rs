//! The pod lifecycle engine: one worker per pod reconciling its spec with a
//! CRI runtime, woken by the runtime's container events.

pub mod admission;
pub mod backoff;
pub mod cgroups;
pub mod cri;
pub mod env;
pub mod events;
pub mod eviction;
pub mod gc;
pub mod housekeeping;
pub mod node;
pub mod objects;
pub mod probing;
pub mod qos;
pub mod quantity;
pub mod resize;
pub mod spec;
pub mod stats;
pub mod status;
pub mod tokens;
pub mod volumes;
pub mod worker;

use tokio_util::sync::CancellationToken;
use self::cri::Cri;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use worker::{Msg, Worker};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Pod log directories (`<ns>_<name>_<uid>`) go here.
    pub log_root: PathBuf,
    /// Per-pod state (volumes) goes here.
    pub pods_root: PathBuf,
    /// cgroup parent of pod sandboxes ("" for the runtime's default).
    pub cgroup_parent: String,
    pub node_name: String,
    pub host_ip: String,
    pub backoff: backoff::BackoffPolicy,
    /// A full look at every pod at least this often (events do the rest).
    pub resync: Duration,
    /// CRI runtime handler for sandboxes ("" for the default).
    pub runtime_handler: String,
    /// The service account token issuer's keys and published documents.
    pub issuer_dir: PathBuf,
    /// `iss` of service account tokens (and their default audience).
    pub token_issuer: String,
    /// Longest life of a service account token.
    pub token_max_expiration: Option<Duration>,
    /// Node resources: reserved, eviction, cgroups, pids (kubelet's config).
    pub node: node::NodeConfig,
    /// Root of the kubepods cgroup tree (the node config's `cgroupRoot`,
    /// else this).
    pub cgroup_root: String,
}

impl EngineConfig {
    pub fn new(state: &std::path::Path) -> EngineConfig {
        let node_name = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into());
        EngineConfig {
            log_root: state.join("logs/pods"),
            pods_root: state.join("pods"),
            cgroup_parent: String::new(),
            node_name,
            host_ip: host_ip(),
            backoff: backoff::BackoffPolicy::default(),
            resync: Duration::from_secs(30),
            runtime_handler: String::new(),
            issuer_dir: state.join("issuer"),
            token_issuer: tokens::DEFAULT_ISSUER.into(),
            token_max_expiration: None,
            node: node::NodeConfig::default(),
            cgroup_root: "/".into(),
        }
    }
}

/// The address of the host's default-route interface, else loopback.
fn host_ip() -> String {
    // A UDP "connect" sends nothing; it only picks the source address.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("10.255.255.255:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

/// What every pod worker shares.
pub struct Shared {
    pub cri: Cri,
    pub cfg: EngineConfig,
    pub objects: objects::Objects,
    pub events: events::Recorder,
    /// Service account tokens for projected volumes.
    pub tokens: Arc<dyn tokens::TokenIssuer>,
    /// Bumped whenever any pod's status is published.
    pub changed: watch::Sender<u64>,
    /// The node: capacity, allocatable, labels, taints.
    pub node: node::Node,
    /// The kubepods cgroup tree (`None` with `cgroupsPerQOS: false`).
    pub cgroups: Option<cgroups::PodCgroups>,
    pub stats: stats::Stats,
    pub eviction: eviction::Manager,
    pub image_gc: gc::ImageGc,
}

struct Entry {
    tx: mpsc::UnboundedSender<Msg>,
    status: watch::Receiver<Pod>,
    /// Cancelled when the pod is to stop: ends a postStart hook in flight.
    stop: CancellationToken,
}

/// Runs the pods it is given.
pub struct PodManager {
    pub shared: Arc<Shared>,
    pods: Mutex<BTreeMap<String, Entry>>,
}

fn key_of(pod: &Pod) -> (String, String) {
    (spec::pod_namespace(pod).to_string(), spec::pod_name(pod).to_string())
}

impl PodManager {
    /// A manager whose pods get tokens from Berth's own issuer.
    pub fn new(cri: Cri, cfg: EngineConfig, objects: objects::Objects) -> Arc<PodManager> {
        let issuer = tokens::LocalIssuer::new(cfg.issuer_dir.clone(), &cfg.token_issuer, cfg.token_max_expiration);
        Self::with_issuer(cri, cfg, objects, Arc::new(issuer))
    }

    pub fn with_issuer(cri: Cri, cfg: EngineConfig, objects: objects::Objects, tokens: Arc<dyn tokens::TokenIssuer>) -> Arc<PodManager> {
        let events = events::Recorder::new(&cfg.node_name);
        if let Err(e) = volumes::shared_root::make_rshared(&cfg.pods_root) {
            tracing::warn!("mount propagation into pod volumes is off: {e:#}");
        }
        let machine = node::Machine::detect(&cfg.node, &cfg.pods_root);
        let node = node::Node::new(&cfg.node_name, cfg.node.clone(), machine);
        let cgroups = if cfg.node.cgroups_per_qos {
            let root = if cfg.node.cgroup_root.is_empty() { cfg.cgroup_root.clone() } else { cfg.node.cgroup_root.clone() };
            match cgroups::PodCgroups::host(&node, &root).and_then(|c| c.ensure_qos().map(|_| c)) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("no kubepods cgroup tree, pods go under the runtime's cgroup parent: {e:#}");
                    None
                }
            }
        } else {
            None
        };
        let eviction = eviction::Manager::new(&node);
        let shared = Arc::new(Shared { cri, cfg, objects, events, tokens, changed: watch::channel(0).0, node, cgroups, stats: Default::default(), eviction, image_gc: Default::default() });
        let m = Arc::new(PodManager { shared, pods: Mutex::new(BTreeMap::new()) });
        tokio::spawn(listen(Arc::downgrade(&m)));
        tokio::spawn(housekeeping::run(Arc::downgrade(&m)));
        tokio::spawn(volumes::housekeeping(Arc::downgrade(&m)));
        m
    }

    /// Pods admitted and not finished (phase neither Succeeded nor Failed).
    pub fn active(&self) -> Vec<Pod> {
        self.list().into_iter().filter(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))).collect()
    }

    /// Kubelet's admission of a new pod against the node and the active pods.
    pub fn admit(&self, pod: &Pod) -> Result<(), admission::Rejection> {
        let uid = spec::pod_uid(pod);
        let others: Vec<Pod> = self.active().into_iter().filter(|p| spec::pod_uid(p) != uid).collect();
        let conditions = self.shared.eviction.conditions();
        let static_pod = pod.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/config.source")).is_some_and(|s| s != "api");
        admission::admit(pod, &admission::Attributes { node: &self.shared.node, others: &others, conditions: &conditions, static_pod })
    }

    /// Resizes a container of a running pod in place.
    pub async fn resize(&self, namespace: &str, name: &str, req: &resize::ResizeRequest) -> Result<Pod, String> {
        let Some(cur) = self.get(namespace, name) else { return Err(format!("pods \"{name}\" not found in namespace \"{namespace}\"")) };
        let new = resize::resized(&cur, req)?;
        self.resize_to(cur, new).await?;
        self.get(namespace, name).ok_or_else(|| format!("pods \"{name}\" not found"))
    }

    async fn resize_to(&self, cur: Pod, mut new: Pod) -> Result<(), String> {
        let phase = cur.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return Err(format!("pod {} is {phase}: it cannot be resized", spec::pod_name(&cur)));
        }
        let uid = spec::pod_uid(&cur).to_string();
        let others: Vec<Pod> = self.active().into_iter().filter(|p| spec::pod_uid(p) != uid).collect();
        let pending = resize::feasibility(&new, &self.shared.node, &others);
        new.status = None;
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self.pods.lock().expect("pods lock").get(&uid).map(|e| e.tx.send(Msg::Resize { pod: Box::new(new), pending, done: done_tx }).is_ok());
        if sent != Some(true) {
            return Err("the pod is gone".into());
        }
        let r = done_rx.await.unwrap_or_else(|_| Err("the pod is gone".into()));
        self.after_change();
        r
    }

    /// Evicts a pod: it is stopped within `grace` seconds and stays Failed
    /// (reason Evicted); returns once its containers are stopped.
    pub async fn evict(&self, uid: &str, grace: i64, message: String) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self.pods.lock().expect("pods lock").get(uid).map(|e| {
            e.stop.cancel();
            e.tx.send(Msg::Evict { grace, message, done: done_tx }).is_ok()
        });
        if sent != Some(true) {
            return false;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30).max(Duration::from_secs(grace.max(0) as u64 + 5)), done_rx).await;
        self.after_change();
        true
    }

    /// Keeps the burstable cgroup's cpu shares in line with its pods.
    pub fn after_change(&self) {
        if let Some(cg) = &self.shared.cgroups {
            cg.update_qos(&self.active());
        }
    }

    /// Starts or updates a pod. A pod with the same namespace and name but
    /// another UID is replaced (terminated first).
    pub async fn apply(&self, pod: Pod) {
        let uid = spec::pod_uid(&pod).to_string();
        let key = key_of(&pod);
        let current = self.pods.lock().expect("pods lock").get(&uid).map(|e| e.status.borrow().clone());
        if let Some(cur) = current.filter(|c| resize::only_resources_changed(c, &pod)) {
            // Same pod, new container resources: an in-place resize.
            let name = spec::pod_name(&pod).to_string();
            if let Err(e) = self.resize_to(cur, pod).await {
                tracing::warn!(pod = %name, "resize: {e}");
            }
            return;
        }
        let replaced = {
            let pods = self.pods.lock().expect("pods lock");
            if let Some(e) = pods.get(&uid) {
                let _ = e.tx.send(Msg::Update(Box::new(pod.clone())));
                return;
            }
            pods.iter().find(|(u, e)| **u != uid && key_of(&e.status.borrow()) == key).map(|(u, _)| u.clone())
        };
        if let Some(old) = replaced {
            self.terminate_uid(&old, None).await;
        }
        let stop = CancellationToken::new();
        let (tx, status) = match self.admit(&pod) {
            Ok(()) => Worker::spawn(self.shared.clone(), pod, stop.clone()),
            Err(r) => {
                let inv = events::Involved { namespace: spec::pod_namespace(&pod), name: spec::pod_name(&pod), uid: &uid, field_path: None };
                self.shared.events.warning(&inv, &r.reason, r.message.clone());
                rejected(&self.shared, pod, r)
            }
        };
        self.pods.lock().expect("pods lock").insert(uid, Entry { tx, status, stop });
        self.after_change();
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Terminates and removes a pod; false when there is no such pod.
    pub async fn delete(&self, namespace: &str, name: &str, grace: Option<i64>) -> bool {
        let uid = self.pods.lock().expect("pods lock").iter().find(|(_, e)| key_of(&e.status.borrow()) == (namespace.to_string(), name.to_string())).map(|(u, _)| u.clone());
        match uid {
            Some(uid) => {
                self.terminate_uid(&uid, grace).await;
                true
            }
            None => false,
        }
    }

    /// Terminates and removes the pod with this UID.
    pub async fn delete_uid(&self, uid: &str, grace: Option<i64>) {
        self.terminate_uid(uid, grace).await;
    }

    async fn terminate_uid(&self, uid: &str, grace: Option<i64>) {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = {
            let pods = self.pods.lock().expect("pods lock");
            pods.get(uid).map(|e| {
                e.stop.cancel();
                e.tx.send(Msg::Terminate { grace, remove: true, done: done_tx }).is_ok()
            })
        };
        if sent == Some(true) {
            let _ = done_rx.await;
        }
        let removed = self.pods.lock().expect("pods lock").remove(uid);
        if let Some(e) = removed {
            let p = e.status.borrow().clone();
            self.shared.events.forget(spec::pod_namespace(&p), spec::pod_name(&p));
        }
        self.after_change();
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Every pod with its current status.
    pub fn list(&self) -> Vec<Pod> {
        self.pods.lock().expect("pods lock").values().map(|e| e.status.borrow().clone()).collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.list().into_iter().find(|p| spec::pod_namespace(p) == namespace && spec::pod_name(p) == name)
    }

    pub fn uids(&self) -> Vec<String> {
        self.pods.lock().expect("pods lock").keys().cloned().collect()
    }

    /// Terminates every pod gracefully and removes them, then the kubepods
    /// cgroup tree and the pods root's mount.
    pub async fn shutdown(&self, grace: Option<i64>) {
        let uids = self.uids();
        futures::future::join_all(uids.iter().map(|u| self.terminate_uid(u, grace))).await;
        if let Some(cg) = &self.shared.cgroups {
            cg.cleanup();
        }
        volumes::shared_root::undo(&self.shared.cfg.pods_root);
    }

    /// Stops and removes sandboxes of pods this engine does not run (left
    /// by an earlier run whose manifests are gone).
    pub async fn remove_orphans(&self) -> anyhow::Result<()> {
        let known = self.uids();
        let mut rt = self.shared.cri.runtime.clone();
        let list = rt.list_pod_sandbox(cri_proto::v1::ListPodSandboxRequest::default()).await?.into_inner().items;
        for sb in list {
            let Some(uid) = sb.labels.get(spec::LABEL_POD_UID) else { continue };
            if sb.annotations.get("kubernetes.io/config.source").map(String::as_str) != Some("file") || known.contains(uid) {
                continue;
            }
            tracing::info!(sandbox = %sb.id, uid, "removing the sandbox of a pod that is no longer configured");
            let mut crt = self.shared.cri.runtime.clone();
            let containers = crt
                .list_containers(cri_proto::v1::ListContainersRequest {
                    filter: Some(cri_proto::v1::ContainerFilter { pod_sandbox_id: sb.id.clone(), ..Default::default() }),
                })
                .await?
                .into_inner()
                .containers;
            for c in containers {
                let _ = crt.stop_container(cri_proto::v1::StopContainerRequest { container_id: c.id.clone(), timeout: 10 }).await;
                let _ = crt.remove_container(cri_proto::v1::RemoveContainerRequest { container_id: c.id }).await;
            }
            let _ = rt.stop_pod_sandbox(cri_proto::v1::StopPodSandboxRequest { pod_sandbox_id: sb.id.clone() }).await;
            let _ = rt.remove_pod_sandbox(cri_proto::v1::RemovePodSandboxRequest { pod_sandbox_id: sb.id.clone() }).await;
        }
        volumes::remove_orphan_dirs(&self.shared, &known.iter().cloned().collect());
        if let Some(cg) = &self.shared.cgroups {
            cg.remove_orphans(&known.into_iter().collect());
        }
        Ok(())
    }

    fn wake(&self, uid: &str) {
        if let Some(e) = self.pods.lock().expect("pods lock").get(uid) {
            let _ = e.tx.send(Msg::Wake);
        }
    }
}

/// A pod admission refused: it stays Failed with kubelet's reason and
/// message and never starts. Answers Terminate at once.
fn rejected(shared: &Shared, mut pod: Pod, r: admission::Rejection) -> (mpsc::UnboundedSender<Msg>, watch::Receiver<Pod>) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    pod.metadata.creation_timestamp.get_or_insert(now.clone());
    if let Some(s) = pod.spec.as_mut() {
        s.node_name.get_or_insert_with(|| shared.cfg.node_name.clone());
    }
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Failed".into()),
        reason: Some(r.reason),
        message: Some(format!("Pod was rejected: {}", r.message)),
        qos_class: Some(qos::qos_class(&pod).to_string()),
        start_time: Some(now),
        ..Default::default()
    });
    let (status_tx, status_rx) = watch::channel(pod);
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    tokio::spawn(async move {
        let _keep = status_tx;
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Terminate { done, .. } => {
                    let _ = done.send(());
                    return;
                }
                Msg::Evict { done, .. } => {
                    let _ = done.send(());
                }
                Msg::Resize { done, .. } => {
                    let _ = done.send(Err("the pod was rejected at admission".into()));
                }
                Msg::Update(_) | Msg::Wake => {}
            }
        }
    });
    (tx, status_rx)
}

/// Follows the runtime's container events and wakes the pod they concern.
async fn listen(m: std::sync::Weak<PodManager>) {
    loop {
        let Some(mgr) = m.upgrade() else { return };
        let mut rt = mgr.shared.cri.runtime.clone();
        drop(mgr);
        match rt.get_container_events(cri_proto::v1::GetEventsRequest::default()).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Ok(Some(ev)) = stream.message().await {
                    let Some(mgr) = m.upgrade() else { return };
                    let uid = ev
                        .pod_sandbox_status
                        .as_ref()
                        .and_then(|s| s.metadata.as_ref().map(|m| m.uid.clone()))
                        .or_else(|| ev.containers_statuses.first().and_then(|c| c.labels.get(spec::LABEL_POD_UID).cloned()));
                    match uid {
                        Some(uid) => mgr.wake(&uid),
                        None => {
                            for u in mgr.uids() {
                                mgr.wake(&u);
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("GetContainerEvents: {}", e.message()),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
