//! The pod lifecycle engine: one worker per pod reconciling its spec with a
//! CRI runtime, woken by the runtime's container events.

pub mod backoff;
pub mod cri;
pub mod env;
pub mod events;
pub mod objects;
pub mod probing;
pub mod quantity;
pub mod spec;
pub mod status;
pub mod tokens;
pub mod volumes;
pub mod worker;

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
}

struct Entry {
    tx: mpsc::UnboundedSender<Msg>,
    status: watch::Receiver<Pod>,
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
        let shared = Arc::new(Shared { cri, cfg, objects, events, tokens, changed: watch::channel(0).0 });
        let m = Arc::new(PodManager { shared, pods: Mutex::new(BTreeMap::new()) });
        tokio::spawn(listen(Arc::downgrade(&m)));
        tokio::spawn(volumes::housekeeping(Arc::downgrade(&m)));
        m
    }

    /// Starts or updates a pod. A pod with the same namespace and name but
    /// another UID is replaced (terminated first).
    pub async fn apply(&self, pod: Pod) {
        let uid = spec::pod_uid(&pod).to_string();
        let key = key_of(&pod);
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
        let (tx, status) = Worker::spawn(self.shared.clone(), pod);
        self.pods.lock().expect("pods lock").insert(uid, Entry { tx, status });
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
            pods.get(uid).map(|e| e.tx.send(Msg::Terminate { grace, remove: true, done: done_tx }).is_ok())
        };
        if sent == Some(true) {
            let _ = done_rx.await;
        }
        let removed = self.pods.lock().expect("pods lock").remove(uid);
        if let Some(e) = removed {
            let p = e.status.borrow().clone();
            self.shared.events.forget(spec::pod_namespace(&p), spec::pod_name(&p));
        }
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

    /// Terminates every pod gracefully and removes them.
    pub async fn shutdown(&self, grace: Option<i64>) {
        let uids = self.uids();
        futures::future::join_all(uids.iter().map(|u| self.terminate_uid(u, grace))).await;
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
        volumes::remove_orphan_dirs(&self.shared, &known.into_iter().collect());
        Ok(())
    }

    fn wake(&self, uid: &str) {
        if let Some(e) = self.pods.lock().expect("pods lock").get(uid) {
            let _ = e.tx.send(Msg::Wake);
        }
    }
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
