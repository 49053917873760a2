//! `berth run`: runs Pod manifests on this machine in the foreground (or as a
//! daemon with `--detach`), serving the local API the kubectl-like commands use.

use berth_kubelet::api::{self, ApplyRequest, Info};
use berth_kubelet::engine::cri::Cri;
use berth_kubelet::engine::objects::Objects;
use berth_kubelet::engine::node::{self, NodeConfig};
use berth_kubelet::engine::{EngineConfig, PodManager};
use berth_kubelet::manifest;
use berth_runtime::Config;
use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Manifest files (YAML or JSON, multi-document) with Pods, ConfigMaps and Secrets.
    files: Vec<PathBuf>,
    /// Watch a directory of manifests like kubelet's static pod path: added,
    /// changed and removed files create, replace and delete pods.
    #[arg(long)]
    manifest_dir: Option<PathBuf>,
    /// Start in the background and return once the pods are accepted.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Drive this CRI endpoint (e.g. unix:///run/containerd/containerd.sock)
    /// instead of Berth's in-process runtime.
    #[arg(long)]
    runtime_endpoint: Option<String>,
    /// First restart back-off in seconds (doubles up to --restart-backoff-max).
    #[arg(long, default_value_t = 10.0)]
    restart_backoff_base: f64,
    /// Longest restart back-off in seconds.
    #[arg(long, default_value_t = 300.0)]
    restart_backoff_max: f64,
    /// CRI runtime handler for the pods' sandboxes (runc, crun; default: built-in).
    #[arg(long, default_value = "")]
    runtime_handler: String,
    /// `iss` of the service account tokens Berth signs for pods (their
    /// default audience too).
    #[arg(long, default_value = berth_kubelet::engine::tokens::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Longest life of a service account token, in seconds (longer requests
    /// are shortened).
    #[arg(long)]
    service_account_max_token_expiration: Option<u64>,
    /// Set by --detach for the background process.
    #[arg(long, hide = true)]
    daemon_child: bool,
    #[command(flatten)]
    node: Box<NodeArgs>,
}

/// Node resource settings: a kubelet config file, and kubelet's flags that
/// override it.
#[derive(Args, Clone, Default)]
pub struct NodeArgs {
    /// KubeletConfiguration file (YAML or JSON): reserved resources,
    /// eviction, cgroups, pids, image GC, node labels and taints.
    #[arg(long)]
    kubelet_config: Option<PathBuf>,
    /// Root of the kubepods cgroup tree (default: the cgroup parent).
    #[arg(long)]
    cgroup_root: Option<String>,
    /// cgroupfs or systemd (slice names).
    #[arg(long)]
    cgroup_driver: Option<String>,
    /// Create the kubepods, burstable and besteffort cgroups and one per pod.
    #[arg(long)]
    cgroups_per_qos: Option<bool>,
    /// Enforce cpu limits with CFS quota.
    #[arg(long)]
    cpu_cfs_quota: Option<bool>,
    /// CFS period, e.g. 100ms.
    #[arg(long)]
    cpu_cfs_quota_period: Option<String>,
    /// CPUs kept from pods, e.g. 0 or 0-1.
    #[arg(long)]
    reserved_cpus: Option<String>,
    #[arg(long)]
    max_pods: Option<i64>,
    /// pids.max of each pod's cgroup (-1: no limit).
    #[arg(long)]
    pod_pids_limit: Option<i64>,
    /// e.g. cpu=200m,memory=500Mi
    #[arg(long)]
    system_reserved: Option<String>,
    /// e.g. cpu=100m,memory=200Mi
    #[arg(long)]
    kube_reserved: Option<String>,
    /// e.g. memory.available<100Mi,nodefs.available<10% (replaces the defaults)
    #[arg(long)]
    eviction_hard: Option<String>,
    /// e.g. memory.available<1Gi
    #[arg(long)]
    eviction_soft: Option<String>,
    /// e.g. memory.available=1m30s
    #[arg(long)]
    eviction_soft_grace_period: Option<String>,
    /// How long a pressure condition stays after the pressure is gone.
    #[arg(long)]
    eviction_pressure_transition_period: Option<String>,
    /// Longest grace period of pods evicted by a soft threshold.
    #[arg(long)]
    eviction_max_pod_grace_period: Option<i64>,
    /// Image GC starts above this disk usage percentage (100: never).
    #[arg(long)]
    image_gc_high_threshold: Option<i32>,
    /// Image GC frees down to this disk usage percentage.
    #[arg(long)]
    image_gc_low_threshold: Option<i32>,
    /// Unused images younger than this are kept, e.g. 2m.
    #[arg(long)]
    minimum_image_ttl_duration: Option<String>,
    /// e.g. disk=ssd,zone=a
    #[arg(long)]
    node_labels: Option<String>,
    /// e.g. dedicated=db:NoExecute
    #[arg(long)]
    register_with_taints: Option<String>,
    /// How often usage is sampled and eviction looked at, e.g. 10s.
    #[arg(long)]
    housekeeping_interval: Option<String>,
    /// Eviction signals to pretend, for tests and demos: memory.available=50Mi
    #[arg(long)]
    simulate_signal: Option<String>,
    /// A file of signal=value lines to pretend while it exists (read every round).
    #[arg(long)]
    simulate_signals_file: Option<PathBuf>,
}

impl NodeArgs {
    /// The config file's settings with the flags applied.
    pub fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.kubelet_config {
            Some(p) => NodeConfig::load(p)?,
            None => NodeConfig::default(),
        };
        let pairs = |flag: &str, v: &str, sep: char| node::parse_pairs(v, sep).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
        if let Some(v) = &self.cgroup_root {
            c.cgroup_root = v.clone();
        }
        if let Some(v) = &self.cgroup_driver {
            c.cgroup_driver = match v.as_str() {
                "cgroupfs" => node::CgroupDriver::Cgroupfs,
                "systemd" => node::CgroupDriver::Systemd,
                _ => anyhow::bail!("--cgroup-driver: {v:?} is neither cgroupfs nor systemd"),
            };
        }
        if let Some(v) = self.cgroups_per_qos {
            c.cgroups_per_qos = v;
        }
        if let Some(v) = self.cpu_cfs_quota {
            c.cpu_cfs_quota = v;
        }
        if let Some(v) = &self.cpu_cfs_quota_period {
            c.cpu_cfs_quota_period = v.clone();
        }
        if let Some(v) = &self.reserved_cpus {
            c.reserved_system_cpus = v.clone();
        }
        if let Some(v) = self.max_pods {
            c.max_pods = v;
        }
        if let Some(v) = self.pod_pids_limit {
            c.pod_pids_limit = v;
        }
        if let Some(v) = &self.system_reserved {
            c.system_reserved = pairs("system-reserved", v, '=')?;
        }
        if let Some(v) = &self.kube_reserved {
            c.kube_reserved = pairs("kube-reserved", v, '=')?;
        }
        if let Some(v) = &self.eviction_hard {
            c.eviction_hard = pairs("eviction-hard", v, '<')?;
        }
        if let Some(v) = &self.eviction_soft {
            c.eviction_soft = pairs("eviction-soft", v, '<')?;
        }
        if let Some(v) = &self.eviction_soft_grace_period {
            c.eviction_soft_grace_period = pairs("eviction-soft-grace-period", v, '=')?;
        }
        if let Some(v) = &self.eviction_pressure_transition_period {
            c.eviction_pressure_transition_period = v.clone();
        }
        if let Some(v) = self.eviction_max_pod_grace_period {
            c.eviction_max_pod_grace_period = v;
        }
        if let Some(v) = self.image_gc_high_threshold {
            c.image_gc_high_threshold_percent = v;
        }
        if let Some(v) = self.image_gc_low_threshold {
            c.image_gc_low_threshold_percent = v;
        }
        if let Some(v) = &self.minimum_image_ttl_duration {
            c.image_minimum_gc_age = v.clone();
        }
        if let Some(v) = &self.node_labels {
            c.node_labels.extend(pairs("node-labels", v, '=')?);
        }
        if let Some(v) = &self.register_with_taints {
            c.register_with_taints = node::parse_taints(v).map_err(|e| anyhow::anyhow!("--register-with-taints: {e}"))?;
        }
        if let Some(v) = &self.housekeeping_interval {
            c.housekeeping_interval = v.clone();
        }
        if let Some(v) = &self.simulate_signal {
            c.simulated_signals = pairs("simulate-signal", v, '=')?;
        }
        if let Some(v) = &self.simulate_signals_file {
            c.simulated_signals_file = std::path::absolute(v).unwrap_or_else(|_| v.clone()).display().to_string();
        }
        c.validate().map_err(|e| anyhow::anyhow!("node settings: {e}"))?;
        Ok(c)
    }
}

/// Paths of a state root's sockets.
pub fn api_socket(cfg: &Config) -> PathBuf {
    cfg.run_root.join("api.sock")
}

fn cri_socket(cfg: &Config) -> PathBuf {
    cfg.run_root.join("berth.sock")
}

/// Loads manifests; prints every error and returns what is valid.
fn load(paths: &[PathBuf]) -> (ApplyRequest, usize) {
    let loaded = manifest::load_paths(paths);
    let mut errors = 0;
    for e in loaded.all_errors() {
        eprintln!("error: {e}");
        errors += 1;
    }
    let pods = loaded.valid_pods().cloned().collect();
    (ApplyRequest { pods, config_maps: loaded.config_maps, secrets: loaded.secrets }, errors)
}

fn store_objects(objects: &Objects, req: &ApplyRequest) {
    for cm in &req.config_maps {
        objects.put_config_map(cm.clone());
    }
    for s in &req.secrets {
        objects.put_secret(s.clone());
    }
}

fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or("default"), p.metadata.name.as_deref().unwrap_or(""))
}

pub async fn run(cfg: Config, args: RunArgs, exe: PathBuf, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    if args.files.is_empty() && args.manifest_dir.is_none() {
        anyhow::bail!("nothing to run: give manifest files or --manifest-dir");
    }
    let node_cfg = args.node.node_config()?;
    let (req, errors) = load(&args.files);
    let api_sock = api_socket(&cfg);
    // A daemon already runs on this root: hand the pods to it.
    if !args.daemon_child {
        if let Ok(info) = api::Client::new(&api_sock).info().await {
            if args.manifest_dir.is_some() {
                anyhow::bail!("berth is already running on {} (pid {}); stop it before watching a manifest dir", cfg.root.display(), info.pid);
            }
            let started = api::Client::new(&api_sock).apply(&req).await?;
            for p in started {
                println!("pod/{p} created");
            }
            return Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS });
        }
    }
    if args.detach {
        return detach(&cfg, &config_path, &args, &node_cfg, &exe, &req, errors).await;
    }

    std::fs::create_dir_all(&cfg.root)?;
    let services;
    let cri = match &args.runtime_endpoint {
        Some(ep) => {
            services = None;
            Cri::connect(ep).await?
        }
        None => {
            let s = Arc::new(berth_runtime::server::Services::open(&cfg, exe.clone()).await?);
            let cri = Cri::in_process(&s).await?;
            services = Some(s);
            cri
        }
    };
    // The runtime's CRI socket, for `berth exec` and crictl.
    let (cri_stop_tx, cri_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cri_task = services.clone().map(|s| {
        let sock = cri_socket(&cfg);
        tokio::spawn(async move {
            if let Err(e) = s.serve(&sock, async { let _ = cri_stop_rx.await; }).await {
                tracing::error!("CRI socket: {e:#}");
            }
        })
    });

    let mut ecfg = EngineConfig::new(&cfg.root);
    ecfg.backoff.base = Duration::from_secs_f64(args.restart_backoff_base.max(0.001));
    ecfg.backoff.max = Duration::from_secs_f64(args.restart_backoff_max.max(args.restart_backoff_base));
    ecfg.runtime_handler = args.runtime_handler.clone();
    ecfg.token_issuer = args.service_account_issuer.clone();
    ecfg.token_max_expiration = args.service_account_max_token_expiration.map(Duration::from_secs);
    ecfg.cgroup_root = if cfg.cgroup_parent.is_empty() { "/".into() } else { cfg.cgroup_parent.clone() };
    ecfg.node = node_cfg;
    let objects = Objects::default();
    let mgr = PodManager::new(cri, ecfg.clone(), objects.clone());

    let info = Info {
        pid: std::process::id(),
        cri_socket: match &args.runtime_endpoint {
            Some(ep) => ep.strip_prefix("unix://").unwrap_or(ep).to_string(),
            None => cri_socket(&cfg).display().to_string(),
        },
        log_root: ecfg.log_root.display().to_string(),
        node_name: ecfg.node_name.clone(),
    };
    let apply: api::Apply = {
        let mgr = mgr.clone();
        let objects = objects.clone();
        Arc::new(move |req: ApplyRequest| {
            let mgr = mgr.clone();
            let objects = objects.clone();
            Box::pin(async move {
                store_objects(&objects, &req);
                let mut started = Vec::new();
                for p in req.pods {
                    started.push(pod_key(&p));
                    mgr.apply(p).await;
                }
                started
            })
        })
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let api_task = api::serve(&api_sock, mgr.clone(), info, api::Hooks { apply, shutdown: stop.clone() }).await?;

    store_objects(&objects, &req);
    for p in req.pods.clone() {
        mgr.apply(p).await;
    }
    let watcher = args.manifest_dir.as_ref().map(|dir| tokio::spawn(watch_dir(dir.clone(), mgr.clone(), objects.clone())));
    // Adopt what runs for these pods; remove what belongs to pods no longer configured.
    if args.manifest_dir.is_none() {
        if let Err(e) = mgr.remove_orphans().await {
            tracing::warn!("removing orphaned sandboxes: {e:#}");
        }
    }

    let display = if args.daemon_child { None } else { Some(tokio::spawn(show_changes(mgr.clone()))) };
    tokio::select! {
        _ = super::shutdown_signal() => {}
        _ = stop.notified() => {}
    }
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(d) = display {
        d.abort();
    }
    eprintln!("terminating pods...");
    mgr.shutdown(None).await;
    api_task.abort();
    let _ = cri_stop_tx.send(());
    if let Some(t) = cri_task {
        let _ = t.await;
    }
    if let Some(s) = services {
        s.shutdown();
    }
    // Last: `berth stop` waits for this socket to go away.
    let _ = std::fs::remove_file(&api_sock);
    Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Prints a line whenever a pod's READY, STATUS or RESTARTS changes, like
/// `kubectl get pods -w`.
async fn show_changes(mgr: Arc<PodManager>) {
    let mut rx = mgr.shared.changed.subscribe();
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    let mut header = false;
    loop {
        let pods = mgr.list();
        for p in &pods {
            let row = berth_kubelet::output::pod_row(p, berth_kubelet::output::Timestamp::now());
            let key = pod_key(p);
            let shown = format!("{}\t{}\t{}", row.ready, row.status, row.restarts);
            if last.get(&key) != Some(&shown) {
                if !header {
                    println!("{:<30} {:<7} {:<24} {:<10}", "NAME", "READY", "STATUS", "RESTARTS");
                    header = true;
                }
                println!("{:<30} {:<7} {:<24} {:<10}", row.name, row.ready, row.status, row.restarts);
                last.insert(key, shown);
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keeps the pods in line with a manifest directory.
async fn watch_dir(dir: PathBuf, mgr: Arc<PodManager>, objects: Objects) {
    let mut watcher = match manifest::ManifestWatcher::new(&dir, manifest::WatchOptions::default()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: watching {}: {e}", dir.display());
            return;
        }
    };
    // Pods by the file they came from.
    let mut by_file: std::collections::HashMap<PathBuf, Vec<Pod>> = Default::default();
    while let Some(ev) = watcher.next().await {
        match ev {
            manifest::ManifestEvent::Added { path, loaded } | manifest::ManifestEvent::Changed { path, loaded } => {
                for e in loaded.all_errors() {
                    eprintln!("error: {e}");
                }
                let new: Vec<Pod> = loaded.valid_pods().cloned().collect();
                for cm in loaded.config_maps {
                    objects.put_config_map(cm);
                }
                for s in loaded.secrets {
                    objects.put_secret(s);
                }
                let old = by_file.remove(&path).unwrap_or_default();
                for o in &old {
                    let uid = o.metadata.uid.clone().unwrap_or_default();
                    if !new.iter().any(|n| n.metadata.uid.as_deref() == Some(uid.as_str())) {
                        mgr.delete_uid(&uid, None).await;
                    }
                }
                for p in &new {
                    mgr.apply(p.clone()).await;
                }
                by_file.insert(path, new);
            }
            manifest::ManifestEvent::Removed { path } => {
                for o in by_file.remove(&path).unwrap_or_default() {
                    mgr.delete_uid(o.metadata.uid.as_deref().unwrap_or(""), None).await;
                }
            }
        }
    }
}

/// Starts `berth run` in the background and waits until it serves its API.
async fn detach(cfg: &Config, config_path: &Path, args: &RunArgs, node_cfg: &NodeConfig, exe: &Path, req: &ApplyRequest, errors: usize) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(&cfg.root)?;
    let log_path = cfg.root.join("berth-run.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut cmd = std::process::Command::new(exe);
    // Global flags travel through the environment clap reads them from.
    if config_path.exists() {
        cmd.env("BERTH_CONFIG", std::fs::canonicalize(config_path)?);
    }
    cmd.env("BERTH_ROOT", &cfg.root).env("BERTH_RUN_ROOT", &cfg.run_root).env("BERTH_CGROUP_PARENT", &cfg.cgroup_parent);
    cmd.arg("run").arg("--daemon-child");
    for f in &args.files {
        cmd.arg(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()));
    }
    if let Some(d) = &args.manifest_dir {
        cmd.arg("--manifest-dir").arg(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()));
    }
    if let Some(ep) = &args.runtime_endpoint {
        cmd.arg("--runtime-endpoint").arg(ep);
    }
    cmd.arg("--restart-backoff-base").arg(args.restart_backoff_base.to_string());
    cmd.arg("--restart-backoff-max").arg(args.restart_backoff_max.to_string());
    cmd.arg("--runtime-handler").arg(&args.runtime_handler);
    cmd.arg("--service-account-issuer").arg(&args.service_account_issuer);
    if let Some(s) = args.service_account_max_token_expiration {
        cmd.arg("--service-account-max-token-expiration").arg(s.to_string());
    }
    // The node settings, flags merged, travel as one config file.
    let node_file = cfg.root.join("kubelet-config.json");
    std::fs::write(&node_file, serde_json::to_vec_pretty(node_cfg)?)?;
    cmd.arg("--kubelet-config").arg(&node_file);
    cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
    cmd.current_dir("/");
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let client = api::Client::new(&api_socket(cfg));
    for _ in 0..300 {
        if client.info().await.is_ok() {
            for p in &req.pods {
                println!("pod/{} created", p.metadata.name.as_deref().unwrap_or(""));
            }
            println!("berth is running in the background (pid {}, log {})", child.id(), log_path.display());
            return Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("berth did not come up; see {}", log_path.display())
}
