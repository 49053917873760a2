//! Pod volumes and the container mounts that use them.
//!
//! Layout, as kubelet's: `<pods_root>/<uid>/volumes/kubernetes.io~<kind>/<name>`
//! for emptyDir (on disk, or a tmpfs for `medium: Memory`), configMap and
//! downwardAPI (on disk), secret and projected (always a tmpfs: their bytes
//! never reach a disk); subPath binds under `<uid>/volume-subpaths/`.
//! hostPath volumes are the host's paths, checked by type first.
//!
//! [`PodVolumes::sync`] runs on every pass of the pod's worker: it sets up
//! what is missing (nothing of the pod starts before every volume is there;
//! failures are `FailedMount` events), rewrites API-data volumes whose
//! content changed (atomically, see [`atomic`]), refreshes tokens at 80% of
//! their life and checks emptyDir size limits.

pub mod atomic;
pub mod fsutil;
pub mod hostpath;
mod payload;
pub mod shared_root;
pub mod subpath;

use super::events::Involved;
use super::spec;
use super::tokens::{Token, TokenRequest};
use super::Shared;
use anyhow::Context;
use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Where pods find their service account token, CA and namespace.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The life of the default service account token (the admission plugin's).
const DEFAULT_TOKEN_SECONDS: i64 = 3607;
/// How often emptyDir size limits are checked (kubelet's eviction interval).
const SIZE_CHECK: Duration = Duration::from_secs(10);
/// Longest wait between attempts to set up a failing volume.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The pod's directory under the engine's state root.
pub fn pod_dir(shared: &Shared, pod: &Pod) -> PathBuf {
    shared.cfg.pods_root.join(spec::pod_uid(pod))
}

fn plugin_dir(v: &Volume) -> &'static str {
    if v.empty_dir.is_some() {
        "kubernetes.io~empty-dir"
    } else if v.config_map.is_some() {
        "kubernetes.io~configmap"
    } else if v.secret.is_some() {
        "kubernetes.io~secret"
    } else if v.downward_api.is_some() {
        "kubernetes.io~downward-api"
    } else if v.projected.is_some() {
        "kubernetes.io~projected"
    } else {
        "kubernetes.io~host-path"
    }
}

/// The host directory of a volume Berth manages (not hostPath).
pub fn volume_dir(shared: &Shared, pod: &Pod, v: &Volume) -> PathBuf {
    pod_dir(shared, pod).join("volumes").join(plugin_dir(v)).join(&v.name)
}

/// Volumes whose files come from the API: mounted read-only, always.
fn api_data(v: &Volume) -> bool {
    v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()
}

fn automount(pod: &Pod) -> bool {
    spec::spec(pod).automount_service_account_token != Some(false)
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let s = spec::spec(pod);
    s.init_containers.iter().flatten().chain(s.containers.iter())
}

fn mounts_sa_path(c: &Container) -> bool {
    c.volume_mounts.iter().flatten().any(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT_PATH)
}

/// Name of the default service account volume: `kube-api-access-` and five
/// characters from the pod's UID.
fn sa_volume_name(pod: &Pod) -> String {
    use sha2::Digest;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let d = sha2::Sha256::digest(spec::pod_uid(pod).as_bytes());
    let suffix: String = d.iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    format!("kube-api-access-{suffix}")
}

/// The projected volume the ServiceAccount admission plugin adds: a token,
/// the cluster CA and the namespace.
fn sa_volume(pod: &Pod) -> Volume {
    Volume {
        name: sa_volume_name(pod),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection { path: "token".into(), expiration_seconds: Some(DEFAULT_TOKEN_SECONDS), ..Default::default() }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: payload::ROOT_CA_CONFIG_MAP.into(),
                        items: Some(vec![KeyToPath { key: "ca.crt".into(), path: "ca.crt".into(), ..Default::default() }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector { api_version: Some("v1".into()), field_path: "metadata.namespace".into() }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's volumes, with the default service account volume when some
/// container gets it.
pub fn pod_volumes(pod: &Pod) -> Vec<Volume> {
    let mut v = spec::spec(pod).volumes.clone().unwrap_or_default();
    if automount(pod) && all_containers(pod).any(|c| !mounts_sa_path(c)) {
        v.push(sa_volume(pod));
    }
    v
}

/// A container's volume mounts, with the default service account mount.
pub fn container_mounts(pod: &Pod, c: &Container) -> Vec<VolumeMount> {
    let mut m = c.volume_mounts.clone().unwrap_or_default();
    if automount(pod) && !mounts_sa_path(c) {
        m.push(VolumeMount { name: sa_volume_name(pod), mount_path: SERVICE_ACCOUNT_MOUNT_PATH.into(), read_only: Some(true), ..Default::default() });
    }
    m
}

/// Kubelet's FsUser: the runAsUser every container runs with, if they
/// all have the same one.
fn fs_user(pod: &Pod) -> Option<u32> {
    let psc = spec::spec(pod).security_context.as_ref();
    let mut user = None;
    for c in all_containers(pod) {
        let u = c.security_context.as_ref().and_then(|s| s.run_as_user).or(psc.and_then(|p| p.run_as_user))?;
        if user.is_some_and(|x| x != u) {
            return None;
        }
        user = Some(u);
    }
    user.and_then(|u| u32::try_from(u).ok())
}

fn fs_group(pod: &Pod) -> Option<u32> {
    spec::spec(pod).security_context.as_ref().and_then(|s| s.fs_group).and_then(|g| u32::try_from(g).ok())
}

fn memory_limit(c: &Container) -> Option<i64> {
    c.resources.as_ref().and_then(|r| r.limits.as_ref()).and_then(|l| l.get("memory")).and_then(super::quantity::value)
}

/// The pod's memory limit, when every container has one (what its cgroup
/// gets): app containers and sidecars add up, init containers run alone.
fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let s = spec::spec(pod);
    let mut sum = 0i64;
    let mut init_max = 0i64;
    for c in &s.containers {
        sum += memory_limit(c)?;
    }
    for c in s.init_containers.iter().flatten() {
        let l = memory_limit(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sum += l;
        } else {
            init_max = init_max.max(l);
        }
    }
    u64::try_from(sum.max(init_max)).ok()
}

/// The size of a memory-backed volume: the size limit, else the pod's
/// memory limit, else the node's memory (what the pod could use at most).
fn memory_size(pod: &Pod, size_limit: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> u64 {
    let mut size = super::env::node_memory();
    if let Some(l) = pod_memory_limit(pod).filter(|l| *l > 0 && (size == 0 || *l <= size)) {
        size = l;
    }
    if let Some(l) = size_limit.and_then(super::quantity::value).and_then(|l| u64::try_from(l).ok()).filter(|l| *l > 0 && (size == 0 || *l <= size)) {
        size = l;
    }
    size
}

fn involved(pod: &Pod) -> Involved<'_> {
    Involved { namespace: spec::pod_namespace(pod), name: spec::pod_name(pod), uid: spec::pod_uid(pod), field_path: None }
}

fn payload_hash(p: &atomic::Payload) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (k, f) in p {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((f.data.len() as u64).to_le_bytes());
        h.update(&f.data);
        h.update(f.mode.to_le_bytes());
        h.update(f.fs_user.map(|u| u as i64).unwrap_or(-1).to_le_bytes());
    }
    h.finalize().into()
}

/// The outcome of a [`PodVolumes::sync`].
pub struct Synced {
    /// Every volume is set up: the pod may start.
    pub ready: bool,
    /// When to sync again at the latest (token refresh, size check, retry).
    pub next: Option<Duration>,
    /// The pod exceeded an emptyDir size limit and must be evicted.
    pub evict: bool,
}

/// The volume state of one pod.
#[derive(Default)]
pub struct PodVolumes {
    /// Volumes set up at least once.
    ready: HashSet<String>,
    /// Hash of the payload last written, per API-data volume.
    written: HashMap<String, [u8; 32]>,
    tokens: HashMap<(String, usize), Token>,
    failures: u32,
    next_size_check: Option<Instant>,
    evicted: Option<String>,
}

impl PodVolumes {
    /// Why the pod was evicted, if it was.
    pub fn evicted(&self) -> Option<&str> {
        self.evicted.as_deref()
    }

    /// Sets up, updates and checks the pod's volumes.
    pub async fn sync(&mut self, shared: &Shared, pod: &Pod) -> Synced {
        if self.evicted.is_some() {
            return Synced { ready: false, next: None, evict: false };
        }
        let vols = pod_volumes(pod);
        let mut errors: Vec<(String, String)> = Vec::new();
        self.refresh_tokens(shared, pod, &vols, &mut errors).await;
        let failed_tokens: HashSet<String> = errors.iter().map(|(v, _)| v.clone()).collect();
        for v in &vols {
            if failed_tokens.contains(&v.name) && !self.ready.contains(&v.name) {
                continue;
            }
            match self.set_up(shared, pod, v) {
                Ok(()) => {
                    self.ready.insert(v.name.clone());
                }
                Err(e) => {
                    // An API-data volume written before (by an earlier run of
                    // Berth too) keeps its content; the pod goes on.
                    if api_data(v) && atomic::current(&volume_dir(shared, pod, v)).is_some() {
                        self.ready.insert(v.name.clone());
                    }
                    errors.push((v.name.clone(), format!("{e:#}")));
                }
            }
        }
        for (name, e) in &errors {
            shared.events.warning(&involved(pod), "FailedMount", format!("MountVolume.SetUp failed for volume {name:?} : {e}"));
        }
        let ready = vols.iter().all(|v| self.ready.contains(&v.name));
        let mut next: Option<Duration> = None;
        let mut wake = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        if errors.is_empty() {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            wake((Duration::from_millis(500) * 2u32.saturating_pow(self.failures.min(8))).min(MAX_RETRY));
        }
        let now = SystemTime::now();
        for t in self.tokens.values() {
            wake(t.refresh_at().duration_since(now).unwrap_or_default());
        }
        if ready {
            if let Some(msg) = self.check_sizes(shared, pod, &vols).await {
                shared.events.warning(&involved(pod), "Evicted", msg.clone());
                self.evicted = Some(msg);
                return Synced { ready: false, next: None, evict: true };
            }
            if let Some(at) = self.next_size_check {
                wake(at.saturating_duration_since(Instant::now()));
            }
        }
        Synced { ready, next, evict: false }
    }

    async fn refresh_tokens(&mut self, shared: &Shared, pod: &Pod, vols: &[Volume], errors: &mut Vec<(String, String)>) {
        let now = SystemTime::now();
        let mut live = HashSet::new();
        for v in vols {
            let Some(p) = &v.projected else { continue };
            for (i, s) in p.sources.iter().flatten().enumerate() {
                let Some(t) = &s.service_account_token else { continue };
                let key = (v.name.clone(), i);
                live.insert(key.clone());
                if self.tokens.get(&key).is_some_and(|t| now < t.refresh_at()) {
                    continue;
                }
                let req = TokenRequest {
                    namespace: spec::pod_namespace(pod).to_string(),
                    service_account: spec::spec(pod).service_account_name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "default".into()),
                    audiences: t.audience.clone().filter(|a| !a.is_empty()).into_iter().collect(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                    pod_name: spec::pod_name(pod).to_string(),
                    pod_uid: spec::pod_uid(pod).to_string(),
                    node_name: shared.cfg.node_name.clone(),
                };
                match shared.tokens.request(req).await {
                    Ok(tok) => {
                        self.tokens.insert(key, tok);
                    }
                    Err(e) => {
                        // A token that is still valid stays in use.
                        if self.tokens.get(&key).is_none_or(|t| now >= t.expires_at) {
                            self.tokens.remove(&key);
                        }
                        errors.push((v.name.clone(), format!("failed to fetch token: {e:#}")));
                    }
                }
            }
        }
        self.tokens.retain(|k, _| live.contains(k));
    }

    fn set_up(&mut self, shared: &Shared, pod: &Pod, v: &Volume) -> anyhow::Result<()> {
        let dir = volume_dir(shared, pod, v);
        if let Some(h) = &v.host_path {
            if !self.ready.contains(&v.name) {
                hostpath::check(Path::new(&h.path), h.type_.as_deref().unwrap_or(""))?;
            }
            return Ok(());
        }
        if let Some(e) = &v.empty_dir {
            if !self.ready.contains(&v.name) {
                if e.medium.as_deref() == Some("Memory") {
                    fsutil::ensure_tmpfs(&dir, memory_size(pod, e.size_limit.as_ref()))?;
                } else {
                    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                let m = std::fs::metadata(&dir)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m.mode() & 0o7000 | 0o777))?;
                if let Some(g) = fs_group(pod) {
                    let policy = spec::spec(pod).security_context.as_ref().and_then(|s| s.fs_group_change_policy.clone());
                    fsutil::set_ownership(&dir, g, false, policy.as_deref())?;
                }
            }
            return Ok(());
        }
        let ctx = payload::Ctx { shared, pod, fs_user: fs_user(pod), fs_group: fs_group(pod), tokens: &self.tokens };
        let (files, memory) = if let Some(c) = &v.config_map {
            (payload::config_map(&ctx, &c.name, c.items.as_deref(), payload::Defaults::new(c.default_mode, c.default_user), c.optional == Some(true))?, false)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            (payload::secret(&ctx, &name, s.items.as_deref(), payload::Defaults::new(s.default_mode, s.default_user), s.optional == Some(true))?, true)
        } else if let Some(d) = &v.downward_api {
            (payload::downward(&ctx, d.items.as_deref().unwrap_or(&[]), payload::Defaults::new(d.default_mode, d.default_user))?, false)
        } else if let Some(p) = &v.projected {
            (payload::projected(&ctx, &v.name, p)?, true)
        } else {
            anyhow::bail!("this volume type is not supported");
        };
        let hash = payload_hash(&files);
        if self.written.get(&v.name) == Some(&hash) && atomic::current(&dir).is_some() {
            return Ok(());
        }
        if memory {
            // Secrets and tokens: a tmpfs or nothing.
            fsutil::ensure_tmpfs(&dir, memory_size(pod, None))?;
        } else {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let gid = ctx.fs_group;
        let wrote = atomic::write(&dir, &files, &mut |d: &Path| match gid {
            Some(g) => fsutil::set_ownership(d, g, true, None),
            None => Ok(()),
        })?;
        if wrote && self.ready.contains(&v.name) {
            tracing::info!(pod = %format!("{}/{}", spec::pod_namespace(pod), spec::pod_name(pod)), volume = %v.name, "volume updated");
        }
        self.written.insert(v.name.clone(), hash);
        Ok(())
    }

    /// Checks disk-backed emptyDirs against their size limits every
    /// [`SIZE_CHECK`]; returns the eviction message when one is over.
    async fn check_sizes(&mut self, shared: &Shared, pod: &Pod, vols: &[Volume]) -> Option<String> {
        let limited: Vec<(String, PathBuf, u64, String)> = vols
            .iter()
            .filter_map(|v| {
                let e = v.empty_dir.as_ref().filter(|e| e.medium.as_deref() != Some("Memory"))?;
                let q = e.size_limit.as_ref()?;
                let limit = super::quantity::value(q).and_then(|l| u64::try_from(l).ok())?;
                Some((v.name.clone(), volume_dir(shared, pod, v), limit, q.0.clone()))
            })
            .collect();
        if limited.is_empty() {
            self.next_size_check = None;
            return None;
        }
        let now = Instant::now();
        if self.next_size_check.is_some_and(|at| now < at) {
            return None;
        }
        self.next_size_check = Some(now + SIZE_CHECK);
        let usage = tokio::task::spawn_blocking(move || limited.into_iter().map(|(n, d, l, q)| (n, fsutil::disk_usage(&d), l, q)).collect::<Vec<_>>()).await.ok()?;
        usage.into_iter().find(|(_, used, limit, _)| used > limit).map(|(name, _, _, q)| format!("Usage of EmptyDir volume {name:?} exceeds the limit {q:?}. "))
    }

    /// The CRI mounts of a container; `envs` expand `subPathExpr`.
    pub fn mounts(&self, shared: &Shared, pod: &Pod, c: &Container, envs: &[(String, String)]) -> anyhow::Result<Vec<cri::Mount>> {
        let volumes = pod_volumes(pod);
        let vars: std::collections::BTreeMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut out = Vec::new();
        for (i, m) in container_mounts(pod, c).iter().enumerate() {
            let v = volumes.iter().find(|v| v.name == m.name).ok_or_else(|| anyhow::anyhow!("volumeMount {}: no volume named {} in the pod", m.mount_path, m.name))?;
            let root = match &v.host_path {
                Some(h) => PathBuf::from(&h.path),
                None => volume_dir(shared, pod, v),
            };
            if v.host_path.is_none() && !self.ready.contains(&v.name) {
                anyhow::bail!("volume {:?} is not set up", v.name);
            }
            let sub = match (m.sub_path.as_deref().filter(|s| !s.is_empty()), m.sub_path_expr.as_deref().filter(|s| !s.is_empty())) {
                (Some(s), _) => Some(s.to_string()),
                (None, Some(e)) => Some(super::env::expand(e, &vars)),
                (None, None) => None,
            };
            let host_path = match sub {
                Some(sub) => {
                    let prepare = || -> anyhow::Result<PathBuf> {
                        let mode = std::fs::metadata(&root).with_context(|| format!("volume {}", root.display()))?.mode() & 0o7777;
                        let fd = subpath::open_beneath(&root, &sub, mode)?;
                        let target = pod_dir(shared, pod).join("volume-subpaths").join(&v.name).join(&c.name).join(i.to_string());
                        subpath::bind_fd(&fd, &target)?;
                        Ok(target)
                    };
                    prepare().map_err(|e| anyhow::anyhow!("failed to prepare subPath for volumeMount {:?} of container {:?}: {e:#}", m.name, c.name))?
                }
                None => root,
            };
            let propagation = match m.mount_propagation.as_deref() {
                Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
                _ => cri::MountPropagation::PropagationPrivate,
            };
            out.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host_path.display().to_string(),
                readonly: m.read_only == Some(true) || api_data(v),
                propagation: propagation as i32,
                ..Default::default()
            });
        }
        Ok(out)
    }
}

/// Unmounts and removes a pod directory; leaves it when a mount stays.
fn remove_pod_dir(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Err(e) = fsutil::unmount_all(dir).and_then(|_| fsutil::remove_tree(dir)) {
        tracing::warn!(dir = %dir.display(), "removing pod directory: {e:#}");
    }
}

/// Removes what the pod's volumes left on the node: its tmpfs mounts and
/// subPath binds are detached, then its directory goes.
pub fn cleanup(shared: &Shared, pod: &Pod) {
    remove_pod_dir(&pod_dir(shared, pod));
}

/// UIDs of the pod directories under the pods root.
fn pod_dirs(shared: &Shared) -> Vec<String> {
    std::fs::read_dir(&shared.cfg.pods_root).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// Removes the directories of pods not in `keep` (left by a Berth that was
/// killed).
pub fn remove_orphan_dirs(shared: &Shared, keep: &HashSet<String>) {
    for uid in pod_dirs(shared) {
        if !keep.contains(&uid) {
            tracing::info!(uid, "removing the volumes of a pod that no longer exists");
            remove_pod_dir(&shared.cfg.pods_root.join(&uid));
        }
    }
}

/// Every minute: directories of pods the engine does not run and the
/// runtime has no sandbox of, seen twice in a row, are removed.
pub async fn housekeeping(m: std::sync::Weak<super::PodManager>) {
    let mut suspects: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let Some(mgr) = m.upgrade() else { return };
        let dirs = pod_dirs(&mgr.shared);
        if dirs.is_empty() {
            suspects.clear();
            continue;
        }
        let mut keep: HashSet<String> = mgr.uids().into_iter().collect();
        let mut rt = mgr.shared.cri.runtime.clone();
        match rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await {
            Ok(r) => keep.extend(r.into_inner().items.into_iter().filter_map(|s| s.labels.get(spec::LABEL_POD_UID).cloned())),
            Err(_) => continue,
        }
        let orphans: HashSet<String> = dirs.into_iter().filter(|d| !keep.contains(d)).collect();
        for uid in orphans.intersection(&suspects) {
            tracing::info!(uid, "removing the volumes of a pod that no longer exists");
            remove_pod_dir(&mgr.shared.cfg.pods_root.join(uid));
        }
        suspects = orphans.difference(&suspects).cloned().collect();
    }
}
