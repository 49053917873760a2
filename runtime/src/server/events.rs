//! CRI container events (`GetContainerEvents`) and the list streams
//! (`StreamPodSandboxes`, `StreamContainers`, `StreamImages`).
//!
//! The [`Events`] hub is a bounded broadcast channel. The RuntimeService
//! handlers of the pod and container lifecycle RPCs go through the wrappers
//! here, which publish an event after each successful call. Containers that
//! exit on their own are noticed by a watcher task per running container
//! that awaits the shim's pidfd ([`Containers::wait`]): no polling. Pod
//! sandboxes whose pause process dies on its own are noticed the same way,
//! through a pidfd of the pause: their STOPPED event carries the sandbox's
//! status, NOTREADY from then on (as containerd's sandbox exit events). The
//! watchers live in a [`JoinSet`] owned by the hub and end on shutdown.

use super::{container, sandbox};
use crate::container::{ContainerError, Manager as Containers, State as CState};
use crate::linux::process;
use crate::sandbox::{Manager as Sandboxes, SandboxState};
use cri_proto::v1 as cri;
use cri_proto::v1::ContainerEventType as Kind;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::Status;

/// Events kept for slow subscribers; one that lags further skips ahead.
const CAPACITY: usize = 1024;
/// Items per message of the list streams.
const PAGE: usize = 100;

pub struct Events {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
    containers: Arc<Containers>,
    sandboxes: Arc<Sandboxes>,
    /// Containers and sandboxes whose STOPPED event went out (sent once);
    /// also serialises STOPPED against DELETED.
    stopped: Mutex<HashSet<String>>,
    /// Containers and sandboxes with a watcher task.
    watched: Mutex<HashSet<String>>,
    tasks: Mutex<JoinSet<()>>,
    cancel: CancellationToken,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

impl Events {
    pub fn new(containers: Arc<Containers>, sandboxes: Arc<Sandboxes>) -> Arc<Events> {
        let (tx, _) = broadcast::channel(CAPACITY);
        Arc::new(Events {
            tx,
            containers,
            sandboxes,
            stopped: Mutex::default(),
            watched: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
            cancel: CancellationToken::new(),
        })
    }

    /// Watches every running container and every ready sandbox (after a
    /// daemon restart), so that their exits produce STOPPED events. Must run
    /// inside the runtime.
    pub fn recover(self: &Arc<Self>) {
        for r in self.containers.records().unwrap_or_default() {
            if self.containers.status(&r.id).is_ok_and(|s| s.state == CState::Running) {
                self.watch(&r.id);
            }
        }
        for r in self.sandboxes.records().unwrap_or_default() {
            if r.state == SandboxState::Ready {
                self.watch_sandbox(&r.id);
            }
        }
    }

    /// Ends the watchers and the event streams (at server shutdown).
    pub fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.lock().unwrap().abort_all();
    }

    /// A task that publishes STOPPED when the container's shim exits.
    fn watch(self: &Arc<Self>, id: &str) {
        if !self.watched.lock().unwrap().insert(id.to_string()) {
            return;
        }
        let this = self.clone();
        let id = id.to_string();
        let mut tasks = self.tasks.lock().unwrap();
        // Reap finished watchers.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            tokio::select! {
                _ = this.cancel.cancelled() => {}
                r = this.containers.wait(&id, None) => {
                    if let Err(e) = r {
                        tracing::warn!(container = %id, error = %e, "waiting for the container failed");
                    }
                    this.stopped(&id);
                }
            }
            this.watched.lock().unwrap().remove(&id);
        });
    }

    /// A task that publishes the sandbox's STOPPED when its pause process
    /// exits, whoever ended it (StopPodSandbox publishes it too; it goes out once).
    fn watch_sandbox(self: &Arc<Self>, sid: &str) {
        let Ok(r) = self.sandboxes.record(sid) else { return };
        if r.state != SandboxState::Ready || r.pid <= 0 {
            return;
        }
        // Checked after opening the pidfd, which pins the pid: a pid reused
        // by another process is not taken for the pause.
        let pidfd = process::pidfd_open(r.pid).filter(|_| process::pid_alive(r.pid, Some(r.pid_start)));
        if !self.watched.lock().unwrap().insert(sid.to_string()) {
            return;
        }
        let this = self.clone();
        let sid = sid.to_string();
        let mut tasks = self.tasks.lock().unwrap();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let exited = async {
                // No pidfd: the pause is gone already.
                if let Some(fd) = pidfd {
                    // SAFETY: the AsyncFd owns the only copy of the pidfd.
                    match unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
                        Ok(afd) => drop(afd.readable().await),
                        Err(e) => {
                            tracing::warn!(sandbox = %sid, error = %e, "cannot watch the pause process");
                            return false;
                        }
                    }
                }
                true
            };
            tokio::select! {
                _ = this.cancel.cancelled() => {}
                exited = exited => if exited { this.sandbox_exited(&sid) },
            }
            this.watched.lock().unwrap().remove(&sid);
        });
    }

    fn send(&self, ev: cri::ContainerEventResponse) {
        tracing::debug!(id = %ev.container_id, kind = ?Kind::try_from(ev.container_event_type), "container event");
        // No subscribers is not an error.
        let _ = self.tx.send(ev);
    }

    fn sandbox_status(&self, sid: &str) -> Option<cri::PodSandboxStatus> {
        sandbox::status(&self.sandboxes, sid, false).ok().and_then(|r| r.status)
    }

    fn container_status(&self, id: &str) -> Option<(String, cri::ContainerStatus)> {
        let st = self.containers.status(id).ok()?;
        Some((st.record.sandbox_id.clone(), container::to_status(&st)))
    }

    fn container_event(&self, kind: Kind, id: &str, sandbox_id: &str, status: cri::ContainerStatus) -> cri::ContainerEventResponse {
        cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: self.sandbox_status(sandbox_id),
            containers_statuses: vec![status],
        }
    }

    /// A sandbox event: its status and the statuses of its containers.
    fn sandbox_event(&self, kind: Kind, sid: &str) -> cri::ContainerEventResponse {
        let containers_statuses = self
            .containers
            .records()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.sandbox_id == sid)
            .filter_map(|r| self.container_status(&r.id).map(|(_, s)| s))
            .collect();
        cri::ContainerEventResponse {
            container_id: sid.to_string(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            pod_sandbox_status: self.sandbox_status(sid),
            containers_statuses,
        }
    }

    fn container_changed(&self, kind: Kind, id: &str) {
        if let Some((sid, st)) = self.container_status(id) {
            self.send(self.container_event(kind, id, &sid, st));
        }
    }

    /// STOPPED for an exited container, once.
    fn stopped(&self, id: &str) {
        let mut sent = self.stopped.lock().unwrap();
        if sent.contains(id) {
            return;
        }
        let Some((sid, st)) = self.container_status(id) else { return };
        if st.state != cri::ContainerState::ContainerExited as i32 {
            return;
        }
        self.send(self.container_event(Kind::ContainerStoppedEvent, id, &sid, st));
        sent.insert(id.to_string());
    }

    /// STOPPED for a sandbox whose pause exited, unless it went out already
    /// or the sandbox is being removed.
    fn sandbox_exited(&self, sid: &str) {
        let mut sent = self.stopped.lock().unwrap();
        // RemovePodSandbox marks the sandbox stopped before removing it, so a
        // missing record here means its DELETED went out: nothing to report.
        if sent.contains(sid) || self.sandboxes.record(sid).is_err() {
            return;
        }
        let ev = self.sandbox_event(Kind::ContainerStoppedEvent, sid);
        if ev.pod_sandbox_status.as_ref().is_some_and(|s| s.state == cri::PodSandboxState::SandboxNotready as i32) {
            tracing::info!(sandbox = %sid, "the pause process exited: sandbox not ready");
            self.send(ev);
            sent.insert(sid.to_string());
        }
    }

    fn sandbox_stopped(&self, sid: &str) {
        let mut sent = self.stopped.lock().unwrap();
        if sent.insert(sid.to_string()) {
            self.send(self.sandbox_event(Kind::ContainerStoppedEvent, sid));
        }
    }

    fn deleted(&self, ev: cri::ContainerEventResponse) {
        let mut sent = self.stopped.lock().unwrap();
        sent.remove(&ev.container_id);
        self.send(ev);
    }

    fn members(&self, sid: &str) -> Vec<String> {
        self.containers.records().unwrap_or_default().into_iter().filter(|r| r.sandbox_id == sid).map(|r| r.id).collect()
    }

    fn resolve_sandbox(&self, key: &str) -> Option<String> {
        self.sandboxes.resolve(key).ok()
    }

    fn resolve_container(&self, key: &str) -> Result<Option<String>, Status> {
        match self.containers.resolve(key) {
            Ok(id) => Ok(Some(id)),
            Err(ContainerError::NotFound(_)) => Ok(None),
            Err(e) => Err(super::error::container(e)),
        }
    }

    /// The GetContainerEvents stream: events from now on, until the client
    /// goes away or the server shuts down. A lagging subscriber skips to the
    /// newest events.
    pub fn subscribe(&self) -> BoxStream<cri::ContainerEventResponse> {
        let rx = self.tx.subscribe();
        let cancel = self.cancel.clone();
        Box::pin(futures::stream::unfold((rx, cancel), |(mut rx, cancel)| async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    r = rx.recv() => match r {
                        Ok(ev) => return Some((Ok(ev), (rx, cancel))),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "container event subscriber lagged");
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        }))
    }
}

// RPC wrappers: the call, then its events.

pub async fn run_pod_sandbox(ev: &Arc<Events>, config: Option<cri::PodSandboxConfig>, handler: String) -> Result<String, Status> {
    let sid = sandbox::run(&ev.sandboxes, config, handler).await?;
    ev.send(ev.sandbox_event(Kind::ContainerCreatedEvent, &sid));
    ev.send(ev.sandbox_event(Kind::ContainerStartedEvent, &sid));
    ev.watch_sandbox(&sid);
    Ok(sid)
}

pub async fn stop_pod_sandbox(ev: &Arc<Events>, key: &str) -> Result<(), Status> {
    sandbox::stop(&ev.sandboxes, &ev.containers, key).await?;
    if let Some(sid) = ev.resolve_sandbox(key) {
        for cid in ev.members(&sid) {
            ev.stopped(&cid);
        }
        ev.sandbox_stopped(&sid);
    }
    Ok(())
}

pub async fn remove_pod_sandbox(ev: &Arc<Events>, key: &str) -> Result<(), Status> {
    let Some(sid) = ev.resolve_sandbox(key) else {
        // Unknown IDs succeed; let the sandbox code validate the key.
        return sandbox::remove(&ev.sandboxes, &ev.containers, key).await;
    };
    // Stop first, so that STOPPED precedes DELETED for everything.
    stop_pod_sandbox(ev, &sid).await?;
    for cid in ev.members(&sid) {
        remove_container(ev, &cid).await?;
    }
    let deleted = ev.sandbox_event(Kind::ContainerDeletedEvent, &sid);
    sandbox::remove(&ev.sandboxes, &ev.containers, &sid).await?;
    ev.deleted(deleted);
    Ok(())
}

pub async fn create_container(ev: &Arc<Events>, req: cri::CreateContainerRequest) -> Result<String, Status> {
    let id = sandbox::create_container(&ev.sandboxes, &ev.containers, req).await?;
    ev.container_changed(Kind::ContainerCreatedEvent, &id);
    Ok(id)
}

pub fn start_container(ev: &Arc<Events>, key: &str) -> Result<(), Status> {
    sandbox::check_startable(&ev.sandboxes, &ev.containers, key)?;
    container::start(&ev.containers, key)?;
    if let Some(id) = ev.resolve_container(key)? {
        ev.container_changed(Kind::ContainerStartedEvent, &id);
        ev.watch(&id);
    }
    Ok(())
}

pub async fn stop_container(ev: &Arc<Events>, key: &str, timeout_secs: i64) -> Result<(), Status> {
    container::stop(&ev.containers, key, timeout_secs).await?;
    if let Some(id) = ev.resolve_container(key)? {
        ev.stopped(&id);
    }
    Ok(())
}

pub async fn remove_container(ev: &Arc<Events>, key: &str) -> Result<(), Status> {
    let id = match ev.resolve_container(key) {
        Ok(Some(id)) => id,
        // Unknown IDs succeed; let the container code validate the key.
        _ => return container::remove(&ev.containers, key).await,
    };
    container::stop(&ev.containers, &id, 0).await?;
    ev.stopped(&id);
    let deleted = ev.container_status(&id).map(|(sid, st)| ev.container_event(Kind::ContainerDeletedEvent, &id, &sid, st));
    container::remove(&ev.containers, &id).await?;
    if let Some(d) = deleted {
        ev.deleted(d);
    }
    Ok(())
}

// The list streams: the List RPCs' items with the same filters, in pages.

fn pages<T: Send + 'static, R: Send + 'static>(items: Vec<T>, wrap: fn(Vec<T>) -> R) -> BoxStream<R> {
    let mut msgs = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        msgs.push(Ok(wrap(items.by_ref().take(PAGE).collect())));
    }
    Box::pin(futures::stream::iter(msgs))
}

pub fn stream_pod_sandboxes(sb: &Sandboxes, filter: Option<&cri::PodSandboxFilter>) -> Result<BoxStream<cri::StreamPodSandboxesResponse>, Status> {
    Ok(pages(sandbox::list(sb, filter)?, |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes }))
}

pub fn stream_containers(c: &Containers, filter: Option<&cri::ContainerFilter>) -> Result<BoxStream<cri::StreamContainersResponse>, Status> {
    Ok(pages(container::list(c, filter)?, |containers| cri::StreamContainersResponse { containers }))
}

pub async fn stream_images(server: &super::image::ImageServer, filter: Option<cri::ImageFilter>) -> Result<BoxStream<cri::StreamImagesResponse>, Status> {
    use cri_proto::v1::image_service_server::ImageService as _;
    let images = server.list_images(tonic::Request::new(cri::ListImagesRequest { filter })).await?.into_inner().images;
    Ok(pages(images, |images| cri::StreamImagesResponse { images }))
}
