//! Pod sandboxes: a detached [`pause`] process holding the pod's network,
//! IPC, UTS (and, for pid mode POD, PID) namespaces, the files every
//! container of the pod bind-mounts (`hostname`, `hosts`, `resolv.conf`),
//! the pod's `/dev/shm` tmpfs, and the pod cgroup. Records live on disk, so
//! a restarted daemon finds every sandbox as it was; a sandbox is READY
//! while its pause process (checked by pid and start time) is alive.
//!
//! Networking (when the manager has [`PodNetworks`]): a pod that does not
//! use the host network gets a network namespace bind-mounted at
//! `<run_root>/netns/<id>`, attached by CNI ADD before the pause joins it;
//! stop runs CNI DEL and removes the namespace, from what is on disk, so it
//! works after a daemon crash and after a half-done ADD. Without
//! `PodNetworks` the pause makes a namespace with only `lo`.
//!
//! Layout: `<state>/<id>/sandbox.json` (persistent),
//! `<run>/<id>/{hostname,hosts,resolv.conf,shm/}` (volatile).
//!
//! The calls block (spawning the pause, up to [`STOP_GRACE`] in `stop`):
//! async callers use `spawn_blocking`.

pub mod pause;
pub mod update;

use crate::linux::cgroups::{self, CgroupError};
use crate::linux::process::{pid_alive, proc_stat};
use crate::spec::SandboxNamespaces;
use berth_cni::pod::{Attachment, Bandwidth, DnsCapability, Plan, PortMapping};
use berth_cni::{CniError, PodNetworks, PodSpec};
use cri_proto::v1::{NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxState};
use pause::PauseArgs;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Only from calls that need the sandbox (`status`, `namespaces`, ...);
    /// `stop` and `remove` of an unknown id succeed, as the CRI wants.
    #[error("pod sandbox {0:?} not found")]
    NotFound(String),
    #[error("pod sandbox name {name:?} is already in use by {id}")]
    NameInUse { name: String, id: String },
    #[error("pod sandbox config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("pod sandbox {0} is not ready: its pause process is gone")]
    NotReady(String),
    #[error("pod sandbox {id}: starting the pause process: {msg}")]
    Pause { id: String, msg: String },
    #[error("pod sandbox {id}: {source}")]
    Cgroup { id: String, source: CgroupError },
    #[error("pod sandbox {id}: {path}: {source}")]
    Io { id: String, path: PathBuf, source: std::io::Error },
    /// No usable network configuration or plugin: nothing was created.
    #[error("pod network is not ready: {0}")]
    NetworkNotReady(Box<CniError>),
    #[error("pod sandbox {id}: {source}")]
    Network { id: String, source: Box<CniError> },
}

type Result<T, E = SandboxError> = std::result::Result<T, E>;

fn io_err(id: &str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let (id, path) = (id.to_string(), path.to_path_buf());
    move |source| SandboxError::Io { id, path, source }
}

/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Size of a pod's `/dev/shm` tmpfs (containerd's and Docker's default).
pub const SHM_SIZE: &str = "65536k";

/// Where sandboxes live.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The berth binary, re-executed as `berth pause`.
    pub exe: PathBuf,
    /// cgroupfs parent of pod cgroups (`<parent>/pod<id prefix>`), unless
    /// the sandbox config names its own `linux.cgroup_parent`.
    pub cgroup_parent: String,
}

impl SandboxConfig {
    pub fn from_config(cfg: &crate::Config, exe: PathBuf) -> Self {
        Self {
            state_dir: cfg.root.join("sandboxes"),
            run_dir: cfg.run_root.join("sandboxes"),
            exe,
            cgroup_parent: cfg.cgroup_parent.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SandboxState {
    Ready,
    NotReady,
}

impl SandboxState {
    pub fn to_cri(self) -> PodSandboxState {
        match self {
            SandboxState::Ready => PodSandboxState::SandboxReady,
            SandboxState::NotReady => PodSandboxState::SandboxNotready,
        }
    }
}

/// Namespace files of the pause process; `None` for a host namespace (and
/// for pid unless pid mode is POD).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePaths {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
}

/// A sandbox's CNI networking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The bind-mounted network namespace; `None` once removed.
    pub netns: Option<PathBuf>,
    /// Networks attached (or being attached), in ADD order; emptied by DEL.
    pub attachments: Vec<Attachment>,
    /// The pod's IPs, the primary (IPv4 if any) first.
    pub ips: Vec<String>,
}

/// What is kept on disk of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// `<name>_<namespace>_<uid>_<attempt>`, unique among sandboxes.
    pub name: String,
    pub config: PodSandboxConfig,
    pub handler: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// Host pid of the pause process (PID 1 of the pod's PID namespace for
    /// pid mode POD); 0 before it started.
    pub pid: i32,
    /// Its start time (field 22 of /proc/PID/stat), so a reused pid is not
    /// taken for the pause.
    pub pid_start: u64,
    pub namespaces: NamespacePaths,
    /// The pod cgroup (cgroupfs path).
    pub cgroup_path: String,
    /// Berth created the cgroup (and removes it with the sandbox).
    pub cgroup_created: bool,
    /// On cgroup v2 the pause runs in a leaf of its own below the pod
    /// cgroup (`<pod>/pause`): a cgroup that hands controllers to its
    /// children (the containers) may hold no processes itself.
    #[serde(default)]
    pub pause_cgroup: Option<String>,
    /// The pod's /dev/shm on the host.
    pub shm: PathBuf,
    /// `shm` is a tmpfs berth mounted (not the host's /dev/shm).
    pub shm_mounted: bool,
    /// The hostname written to the sandbox's `hostname` file.
    pub hostname: String,
    /// READY until stopped; [`Manager::status`] also checks the pause.
    pub state: SandboxState,
    /// CNI networking; `None` for host-network pods (and without CNI).
    #[serde(default)]
    pub network: Option<NetworkRecord>,
}

/// A sandbox as the CRI reports it.
#[derive(Debug, Clone)]
pub struct Status {
    pub record: SandboxRecord,
    pub state: SandboxState,
}

/// The sandbox's files for the containers of the pod (see `SpecContext`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub shm: PathBuf,
}

pub struct Manager {
    cfg: SandboxConfig,
    network: Option<Arc<PodNetworks>>,
    /// Serialises network setup and teardown per sandbox.
    net_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// The pod's namespace options (`linux.security_context.namespace_options`).
pub fn namespace_options(config: &PodSandboxConfig) -> NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// Which namespaces the pause creates: network and IPC unless NODE, UTS
/// with the network (as containerd), PID only for pid mode POD.
pub fn pause_args(config: &PodSandboxConfig, sysctls: Vec<String>) -> PauseArgs {
    let o = namespace_options(config);
    let host_net = o.network == NamespaceMode::Node as i32;
    PauseArgs {
        net: !host_net,
        netns: None,
        ipc: o.ipc != NamespaceMode::Node as i32,
        uts: !host_net,
        pid: o.pid == NamespaceMode::Pod as i32,
        hostname: (!host_net && !config.hostname.is_empty()).then(|| config.hostname.clone()),
        sysctls,
        cgroup: None,
    }
}

/// `resolv.conf` from the CRI DNS config; `None` when it is empty (the
/// host's file is used then).
pub fn resolv_conf(dns: Option<&cri_proto::v1::DnsConfig>) -> Option<String> {
    let dns = dns?;
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return None;
    }
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Some(out)
}

/// The pod's `/etc/hosts`: loopback names and the hostname on `ip`.
pub fn hosts_file(hostname: &str, ip: Option<&str>) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !hostname.is_empty() {
        out.push_str(&format!("{}\t{hostname}\n", ip.filter(|i| !i.is_empty()).unwrap_or("127.0.1.1")));
    }
    out
}

fn validate(config: &PodSandboxConfig) -> Result<()> {
    let invalid = |field, reason: &str| Err(SandboxError::Invalid { field, reason: reason.into() });
    let Some(m) = &config.metadata else { return invalid("metadata", "must be set") };
    if m.name.is_empty() {
        return invalid("metadata.name", "must not be empty");
    }
    if m.namespace.is_empty() {
        return invalid("metadata.namespace", "must not be empty");
    }
    if m.uid.is_empty() {
        return invalid("metadata.uid", "must not be empty");
    }
    if m.name.contains('_') || m.namespace.contains('_') || m.uid.contains('_') {
        // `_` separates the parts of the unique sandbox name.
        return invalid("metadata", "name, namespace and uid must not contain '_'");
    }
    for (i, p) in config.port_mappings.iter().enumerate() {
        if !(1..=65535).contains(&p.container_port) || !(0..=65535).contains(&p.host_port) {
            return invalid("port_mappings", &format!("[{i}]: container_port {} and host_port {} must be ports (1-65535; host_port 0 for none)", p.container_port, p.host_port));
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            return invalid("port_mappings", &format!("[{i}]: host_ip {:?} is not an IP address", p.host_ip));
        }
    }
    pod_spec("", config, "")?;
    Ok(())
}

/// Pod annotations that ask the network for addresses and a MAC
/// (the `ips` and `mac` CNI capabilities).
pub const IPS_ANNOTATION: &str = "berth.dev/ips";
pub const MAC_ANNOTATION: &str = "berth.dev/mac";
const INGRESS_ANNOTATION: &str = "kubernetes.io/ingress-bandwidth";
const EGRESS_ANNOTATION: &str = "kubernetes.io/egress-bandwidth";

/// What CNI plugins get to know of a pod: CNI_ARGS and the capability
/// arguments (host ports, bandwidth from the Kubernetes annotations, as
/// containerd; DNS; the pod cgroup; the annotations).
pub fn pod_spec(id: &str, c: &PodSandboxConfig, cgroup_path: &str) -> Result<PodSpec> {
    use cri_proto::v1::Protocol;
    let m = c.metadata.clone().unwrap_or_default();
    let port_mappings = c
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match Protocol::try_from(p.protocol) {
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .into(),
            host_ip: p.host_ip.clone(),
        })
        .collect();
    let rate = |key: &str| -> Result<Option<u64>> {
        match c.annotations.get(key) {
            None => Ok(None),
            Some(v) => berth_cni::pod::parse_quantity(v).filter(|r| *r > 0).map(Some).ok_or_else(|| SandboxError::Invalid {
                field: "annotations",
                reason: format!("{key}: {v:?} is not a bandwidth (a Kubernetes quantity such as 10M)"),
            }),
        }
    };
    let (ingress, egress) = (rate(INGRESS_ANNOTATION)?, rate(EGRESS_ANNOTATION)?);
    let burst = |r: Option<u64>| r.map(|_| u32::MAX as u64);
    let bandwidth = (ingress.is_some() || egress.is_some()).then(|| Bandwidth { ingress_rate: ingress, ingress_burst: burst(ingress), egress_rate: egress, egress_burst: burst(egress) });
    let ips: Vec<String> = c.annotations.get(IPS_ANNOTATION).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    for ip in &ips {
        let bare = ip.split_once('/').map_or(ip.as_str(), |(a, _)| a);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(SandboxError::Invalid { field: "annotations", reason: format!("{IPS_ANNOTATION}: {ip:?} is not an IP address") });
        }
    }
    let dns = c.dns_config.as_ref().filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty())).map(|d| DnsCapability {
        servers: d.servers.clone(),
        searches: d.searches.clone(),
        options: d.options.clone(),
    });
    Ok(PodSpec {
        id: id.into(),
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        port_mappings,
        bandwidth,
        ips,
        mac: c.annotations.get(MAC_ANNOTATION).cloned(),
        dns,
        cgroup_path: (!cgroup_path.is_empty()).then(|| cgroup_path.to_string()),
        annotations: c.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

/// Replaces a file in one rename; with `durable`, its data reaches the disk
/// first (a crash of Berth needs only the rename: its page cache survives).
fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    if durable {
        fs::File::open(&tmp)?.sync_all()?;
    }
    fs::rename(&tmp, path)
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Whether `p` is a mount point in this process's mount namespace.
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = p.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(&want))
}

fn mount_shm(path: &Path) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    fs::create_dir_all(path)?;
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
    )
    .map_err(std::io::Error::from)
}

fn unmount(path: &Path) -> std::io::Result<()> {
    while is_mountpoint(path) {
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
    }
    Ok(())
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: fd was just returned by pidfd_open and is owned here.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `pidfd` exits; true if it did in time.
fn wait_pidfd(pidfd: &OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
            Ok(_) if left.is_zero() => return false,
            Ok(_) => {}
        }
    }
}

fn pidfd_signal(pidfd: &OwnedFd, sig: i32) -> bool {
    // SAFETY: pidfd_send_signal with a valid pidfd, no siginfo, no flags.
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0) == 0 }
}

/// Ends the pause process `pid` (if it is still the one that started at
/// `start`): SIGTERM, then SIGKILL after `grace`.
fn kill_pause(pid: i32, start: u64, grace: Duration) {
    let Some(pidfd) = pidfd_open(pid) else { return };
    // Checked after opening the pidfd: from here on the pid cannot be reused.
    if !pid_alive(pid, Some(start)) {
        return;
    }
    if !grace.is_zero() && pidfd_signal(&pidfd, libc::SIGTERM) && wait_pidfd(&pidfd, grace) {
        return;
    }
    pidfd_signal(&pidfd, libc::SIGKILL);
    wait_pidfd(&pidfd, Duration::from_secs(10));
}

impl Manager {
    pub fn new(cfg: SandboxConfig) -> Result<Self> {
        for d in [&cfg.state_dir, &cfg.run_dir] {
            fs::create_dir_all(d).map_err(io_err("", d))?;
        }
        Ok(Self { cfg, network: None, net_locks: Mutex::default() })
    }

    /// Pods (other than host-network ones) get CNI networking from `network`.
    pub fn with_network(mut self, network: Arc<PodNetworks>) -> Self {
        self.network = Some(network);
        self
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    pub fn network(&self) -> Option<&Arc<PodNetworks>> {
        self.network.as_ref()
    }

    fn net_lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.net_locks.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_string()).or_default().clone()
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join(id)
    }

    fn run_path(&self, id: &str) -> PathBuf {
        self.cfg.run_dir.join(id)
    }

    /// Every sandbox record, oldest first.
    pub fn records(&self) -> Result<Vec<SandboxRecord>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.cfg.state_dir).map_err(io_err("", &self.cfg.state_dir))?;
        for e in rd.flatten() {
            if let Ok(b) = fs::read(e.path().join("sandbox.json")) {
                if let Ok(r) = serde_json::from_slice::<SandboxRecord>(&b) {
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Resolves a full ID, a unique ID prefix (4+ characters), or a name.
    pub fn resolve(&self, key: &str) -> Result<String> {
        let all = self.records()?;
        if let Some(r) = all.iter().find(|r| r.id == key || r.name == key) {
            return Ok(r.id.clone());
        }
        let hits: Vec<_> = all.iter().filter(|r| key.len() >= 4 && r.id.starts_with(key)).collect();
        match hits.as_slice() {
            [one] => Ok(one.id.clone()),
            _ => Err(SandboxError::NotFound(key.into())),
        }
    }

    pub fn record(&self, id: &str) -> Result<SandboxRecord> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(SandboxError::NotFound(id.into()));
        }
        let p = self.state_path(id).join("sandbox.json");
        let b = fs::read(&p).map_err(|_| SandboxError::NotFound(id.into()))?;
        serde_json::from_slice(&b).map_err(|e| SandboxError::Io { id: id.into(), path: p, source: std::io::Error::other(e) })
    }

    fn save(&self, r: &SandboxRecord) -> Result<()> {
        self.write_record(r, true)
    }

    /// Records a step of `run`: enough for a crashed daemon to find and undo
    /// it; the final state is saved durably.
    fn save_step(&self, r: &SandboxRecord) -> Result<()> {
        self.write_record(r, false)
    }

    fn write_record(&self, r: &SandboxRecord, durable: bool) -> Result<()> {
        let p = self.state_path(&r.id).join("sandbox.json");
        write_atomic(&p, &serde_json::to_vec(r).expect("record serializes"), durable).map_err(io_err(&r.id, &p))
    }

    /// Creates and starts a pod sandbox; returns its id.
    pub fn run(&self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        validate(config)?;
        let m = config.metadata.clone().unwrap_or_default();
        let name = format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt);
        let opts = namespace_options(config);
        let sysctls = crate::spec::build_sysctls(config, &opts).map_err(|e| SandboxError::Invalid { field: "linux.sysctls", reason: e.to_string() })?;
        let mut sysctls: Vec<String> = sysctls.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        sysctls.sort();
        let args = pause_args(config, sysctls);
        // The network's configuration and plugins first: if they are not
        // usable, nothing is created.
        let plan = match &self.network {
            Some(n) if args.net => Some(n.plan().map_err(|e| SandboxError::NetworkNotReady(Box::new(e)))?),
            _ => None,
        };

        let id = hex::encode(rand::random::<[u8; 32]>());
        let host_net = !args.net;
        let hostname = match (host_net, config.hostname.is_empty()) {
            (false, false) => config.hostname.clone(),
            _ => nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
        };
        let cgroup_path = match config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).filter(|p| !p.is_empty()) {
            Some(p) => p.to_string(),
            None => format!("{}/pod{}", self.cfg.cgroup_parent.trim_end_matches('/'), &id[..12]),
        };
        let run = self.run_path(&id);
        let mut record = SandboxRecord {
            id: id.clone(),
            name: name.clone(),
            config: config.clone(),
            handler: handler.into(),
            created_at: now_ns(),
            pid: 0,
            pid_start: 0,
            namespaces: NamespacePaths::default(),
            cgroup_path,
            cgroup_created: false,
            pause_cgroup: None,
            shm: if args.ipc { run.join("shm") } else { PathBuf::from("/dev/shm") },
            shm_mounted: args.ipc,
            hostname,
            state: SandboxState::NotReady,
            network: None,
        };
        // The record (NOTREADY, no pause yet) reserves the name.
        {
            let _guard = NAME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = self.records()?.into_iter().find(|r| r.name == name) {
                return Err(SandboxError::NameInUse { name, id: other.id });
            }
            let state = self.state_path(&id);
            fs::create_dir_all(&state).map_err(io_err(&id, &state))?;
            self.save_step(&record)?;
        }
        match self.run_inner(&mut record, &args, plan.as_ref()) {
            Ok(()) => Ok(id),
            Err(e) => {
                if record.pid > 0 {
                    kill_pause(record.pid, record.pid_start, Duration::ZERO);
                }
                // A cleanup that fails (say, CNI DEL) keeps the record, so
                // that a later remove tries again.
                if let Err(ce) = self.cleanup(&record) {
                    tracing::warn!(sandbox = %id, error = %ce, "cleaning up a sandbox that failed to start");
                }
                Err(e)
            }
        }
    }

    /// Creates the pod's network namespace and attaches its networks;
    /// returns the pod IPs. Each step is recorded before it is taken.
    fn setup_network(&self, r: &mut SandboxRecord, net: &PodNetworks, plan: &Plan) -> Result<Vec<String>> {
        let id = r.id.clone();
        let path = net.netns_path(&id);
        r.network = Some(NetworkRecord { netns: Some(path.clone()), attachments: plan.attachments(), ips: Vec::new() });
        self.save_step(r)?;
        berth_cni::netns::create(&path).map_err(|source| SandboxError::Network { id: id.clone(), source: Box::new(CniError::Netns { path: path.clone(), source }) })?;
        let spec = pod_spec(&id, &r.config, &r.cgroup_path)?;
        let res = net.setup(&spec, &path, plan).map_err(|source| SandboxError::Network { id: id.clone(), source: Box::new(source) })?;
        let ips: Vec<String> = res.ips.iter().map(|i| i.to_string()).collect();
        if let Some(n) = r.network.as_mut() {
            n.ips = ips.clone();
        }
        self.save_step(r)?;
        Ok(ips)
    }

    /// CNI DEL of the sandbox's networks and removal of its namespace,
    /// from the record on disk; a no-op once done.
    fn teardown_network(&self, id: &str) -> Result<()> {
        let lock = self.net_lock(id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = match self.record(id) {
            Ok(r) => r,
            Err(SandboxError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(n) = r.network.clone() else { return Ok(()) };
        if !n.attachments.is_empty() {
            if let Some(net) = &self.network {
                net.teardown(id, n.netns.as_deref(), &n.attachments).map_err(|source| SandboxError::Network { id: id.into(), source: Box::new(source) })?;
            } else {
                tracing::warn!(sandbox = %id, "no CNI configured: the sandbox's network attachments are not deleted");
            }
            r.network.as_mut().expect("checked").attachments.clear();
            self.save(&r)?;
        }
        if let Some(p) = &n.netns {
            berth_cni::netns::remove(p).map_err(|source| SandboxError::Network { id: id.into(), source: Box::new(CniError::Netns { path: p.clone(), source }) })?;
            r.network.as_mut().expect("checked").netns = None;
            self.save(&r)?;
        }
        Ok(())
    }

    fn run_inner(&self, r: &mut SandboxRecord, args: &PauseArgs, plan: Option<&Plan>) -> Result<()> {
        let id = r.id.clone();
        let run = self.run_path(&id);
        fs::create_dir_all(&run).map_err(io_err(&id, &run))?;
        let files = self.files_of(&id, r);
        fs::write(&files.hostname, format!("{}\n", r.hostname)).map_err(io_err(&id, &files.hostname))?;
        let hosts = if args.net {
            hosts_file(&r.hostname, None)
        } else {
            // Host network: the host's own hosts file, as containerd does.
            fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts_file(&r.hostname, None))
        };
        fs::write(&files.hosts, hosts).map_err(io_err(&id, &files.hosts))?;
        let resolv = match resolv_conf(r.config.dns_config.as_ref()) {
            Some(s) => s,
            None => fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        };
        fs::write(&files.resolv_conf, resolv).map_err(io_err(&id, &files.resolv_conf))?;
        if r.shm_mounted {
            mount_shm(&r.shm).map_err(io_err(&id, &r.shm))?;
        }

        let cg = cgroups::for_host(Path::new(&r.cgroup_path)).map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
        let existed = cg.mount_sources().iter().any(|(_, d)| d.exists());
        cg.create().map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
        r.cgroup_created = !existed;
        let pause_cg = if cgroups::is_unified() {
            let leaf = format!("{}/pause", r.cgroup_path.trim_end_matches('/'));
            r.pause_cgroup = Some(leaf.clone());
            self.save_step(r)?;
            let pc = cgroups::for_host(Path::new(&leaf)).map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
            pc.create().map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
            leaf
        } else {
            r.cgroup_path.clone()
        };
        self.save_step(r)?;

        let mut args = args.clone();
        if let (Some(net), Some(plan)) = (&self.network, plan) {
            let ips = self.setup_network(r, net, plan)?;
            if let Some(ip) = ips.first() {
                fs::write(&files.hosts, hosts_file(&r.hostname, Some(ip))).map_err(io_err(&id, &files.hosts))?;
            }
            args.net = false;
            args.netns = r.network.as_ref().and_then(|n| n.netns.clone());
        }
        // The pause joins its cgroup itself before it forks.
        args.cgroup = Some(PathBuf::from(pause_cg));
        let args = &args;

        let pid = match pause::spawn(&self.cfg.exe, args) {
            Ok(Ok(pid)) => pid,
            Ok(Err(msg)) => return Err(SandboxError::Pause { id, msg }),
            Err(e) => return Err(io_err(&id, &self.cfg.exe)(e)),
        };
        r.pid = pid;
        r.pid_start = proc_stat(pid).map(|(s, _)| s).unwrap_or_default();
        // Saved at once: a failure below must still find and kill the pause.
        self.save_step(r)?;
        if r.pid_start == 0 {
            return Err(SandboxError::Pause { id, msg: format!("the pause process {pid} exited at once") });
        }
        let ns = |on: bool, name: &str| on.then(|| PathBuf::from(format!("/proc/{pid}/ns/{name}")));
        r.namespaces = NamespacePaths { net: args.netns.clone().or_else(|| ns(args.net, "net")), ipc: ns(args.ipc, "ipc"), uts: ns(args.uts, "uts"), pid: ns(args.pid, "pid") };
        r.state = SandboxState::Ready;
        self.save(r)
    }

    /// Removes what `run` made, once the pause is gone.
    fn cleanup(&self, r: &SandboxRecord) -> Result<()> {
        let id = &r.id;
        self.teardown_network(id)?;
        if r.shm_mounted {
            unmount(&r.shm).map_err(io_err(id, &r.shm))?;
        }
        if let Some(leaf) = &r.pause_cgroup {
            let pc = cgroups::for_host(Path::new(leaf)).map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
            pc.destroy().map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
        }
        if r.cgroup_created {
            let cg = cgroups::for_host(Path::new(&r.cgroup_path)).map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
            cg.destroy().map_err(|source| SandboxError::Cgroup { id: id.clone(), source })?;
        }
        let run = self.run_path(id);
        if r.shm_mounted && is_mountpoint(&r.shm) {
            return Err(SandboxError::Io { id: id.clone(), path: r.shm.clone(), source: std::io::Error::other("still mounted") });
        }
        fs::remove_dir_all(&run).or_else(ignore_missing).map_err(io_err(id, &run))?;
        let state = self.state_path(id);
        fs::remove_dir_all(&state).or_else(ignore_missing).map_err(io_err(id, &state))?;
        Ok(())
    }

    fn pause_alive(r: &SandboxRecord) -> bool {
        r.pid > 0 && r.pid_start > 0 && pid_alive(r.pid, Some(r.pid_start))
    }

    /// The sandbox and whether it is READY (recorded so and its pause alive).
    pub fn status(&self, id: &str) -> Result<Status> {
        let record = self.record(id)?;
        let state = if record.state == SandboxState::Ready && Self::pause_alive(&record) { SandboxState::Ready } else { SandboxState::NotReady };
        Ok(Status { record, state })
    }

    /// Every sandbox with its state, oldest first.
    pub fn list(&self) -> Result<Vec<Status>> {
        Ok(self
            .records()?
            .into_iter()
            .map(|record| {
                let state = if record.state == SandboxState::Ready && Self::pause_alive(&record) { SandboxState::Ready } else { SandboxState::NotReady };
                Status { record, state }
            })
            .collect())
    }

    /// Stops a sandbox: ends the pause (SIGTERM, SIGKILL after
    /// [`STOP_GRACE`]), unmounts its shm, marks it NOTREADY, then deletes
    /// its network (CNI DEL, the namespace removed), as containerd does. An
    /// unknown or already stopped sandbox is fine; a failed DEL is retried
    /// by the next stop or remove.
    pub fn stop(&self, id: &str) -> Result<()> {
        let mut r = match self.record(id) {
            Ok(r) => r,
            Err(SandboxError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if r.pid > 0 && r.pid_start > 0 {
            kill_pause(r.pid, r.pid_start, STOP_GRACE);
        }
        if r.shm_mounted {
            unmount(&r.shm).map_err(io_err(id, &r.shm))?;
        }
        if r.state != SandboxState::NotReady {
            // Under the network lock: teardown saves the record too.
            let lock = self.net_lock(id);
            let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
            r = self.record(id)?;
            r.state = SandboxState::NotReady;
            self.save(&r)?;
        }
        self.teardown_network(id)
    }

    /// Removes a sandbox, stopping it first: no pause, mount, cgroup or
    /// files remain. An unknown sandbox is fine.
    pub fn remove(&self, id: &str) -> Result<()> {
        let r = match self.record(id) {
            Ok(r) => r,
            Err(SandboxError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop(id)?;
        self.cleanup(&r)?;
        self.net_locks.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        Ok(())
    }

    /// Whether pods can get networking now (CRI NetworkReady).
    pub fn network_status(&self) -> std::result::Result<(), CniError> {
        match &self.network {
            Some(n) => n.status(),
            None => Ok(()),
        }
    }

    /// CNI CHECK of a ready sandbox's networks.
    pub fn check_network(&self, id: &str) -> Result<()> {
        let st = self.status(id)?;
        let (Some(net), Some(n)) = (&self.network, &st.record.network) else { return Ok(()) };
        let Some(netns) = &n.netns else { return Err(SandboxError::NotReady(id.into())) };
        let lock = self.net_lock(id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        net.check(id, netns, &n.attachments).map_err(|source| SandboxError::Network { id: id.into(), source: Box::new(source) })
    }

    /// The cached CNI ADD results of a sandbox's networks.
    pub fn network_results(&self, id: &str) -> Vec<(Attachment, Option<serde_json::Value>)> {
        match (&self.network, self.record(id).ok().and_then(|r| r.network)) {
            (Some(net), Some(n)) => net.results(id, &n.attachments),
            _ => Vec::new(),
        }
    }

    /// The namespaces containers of the sandbox join. Fails unless READY:
    /// the paths name the pause's `/proc/<pid>/ns/*`.
    pub fn namespaces(&self, id: &str) -> Result<SandboxNamespaces> {
        let st = self.status(id)?;
        if st.state != SandboxState::Ready {
            return Err(SandboxError::NotReady(id.into()));
        }
        let n = st.record.namespaces;
        Ok(SandboxNamespaces { net: n.net, ipc: n.ipc, uts: n.uts, pid: n.pid, standalone: false })
    }

    fn files_of(&self, id: &str, r: &SandboxRecord) -> SandboxFiles {
        let run = self.run_path(id);
        SandboxFiles { hostname: run.join("hostname"), hosts: run.join("hosts"), resolv_conf: run.join("resolv.conf"), shm: r.shm.clone() }
    }

    /// The sandbox's hostname, hosts, resolv.conf and shm paths.
    pub fn files(&self, id: &str) -> Result<SandboxFiles> {
        let r = self.record(id)?;
        Ok(self.files_of(id, &r))
    }

    /// Rewrites the sandbox's hosts file with the pod IP (once the network
    /// is set up); a no-op for host-network sandboxes.
    pub fn set_pod_ip(&self, id: &str, ip: &str) -> Result<()> {
        let r = self.record(id)?;
        if r.namespaces.net.is_none() {
            return Ok(());
        }
        let p = self.files_of(id, &r).hosts;
        write_atomic(&p, hosts_file(&r.hostname, Some(ip)).as_bytes(), false).map_err(io_err(id, &p))
    }
}

/// Serializes name checks within this process (the record reserves the name).
static NAME_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::v1::{DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, PodSandboxMetadata};

    fn config(net: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: "web".into(), namespace: "default".into(), uid: "u1".into(), attempt: 0 }),
            hostname: "web-0".into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption { network: net as i32, pid: pid as i32, ipc: ipc as i32, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pause_namespaces_follow_options() {
        use NamespaceMode::*;
        let a = pause_args(&config(Pod, Pod, Pod), vec![]);
        assert_eq!((a.net, a.ipc, a.uts, a.pid, a.hostname.as_deref()), (true, true, true, true, Some("web-0")));
        let a = pause_args(&config(Node, Container, Node), vec![]);
        assert_eq!((a.net, a.ipc, a.uts, a.pid, a.hostname.as_deref()), (false, false, false, false, None));
        let a = pause_args(&config(Pod, Node, Pod), vec![]);
        assert_eq!((a.net, a.ipc, a.uts, a.pid), (true, true, true, false));
        // No linux section at all: POD everywhere.
        let a = pause_args(&PodSandboxConfig::default(), vec![]);
        assert_eq!((a.net, a.ipc, a.uts, a.pid), (true, true, true, true));
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        assert_eq!(resolv_conf(None), None);
        assert_eq!(resolv_conf(Some(&DnsConfig::default())), None);
        let d = DnsConfig {
            servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(Some(&d)).unwrap(),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5 edns0\n"
        );
    }

    #[test]
    fn hosts_contents() {
        assert_eq!(hosts_file("web-0", None), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb-0\n");
        assert!(hosts_file("web-0", Some("10.0.0.5")).ends_with("10.0.0.5\tweb-0\n"));
    }

    #[test]
    fn metadata_validation_names_the_field() {
        let mut c = config(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
        assert!(validate(&c).is_ok());
        for (field, f) in [
            ("metadata.name", (|m: &mut PodSandboxMetadata| m.name.clear()) as fn(&mut PodSandboxMetadata)),
            ("metadata.namespace", |m| m.namespace.clear()),
            ("metadata.uid", |m| m.uid.clear()),
        ] {
            let mut c2 = c.clone();
            f(c2.metadata.as_mut().unwrap());
            let e = validate(&c2).unwrap_err();
            assert!(matches!(e, SandboxError::Invalid { field: f2, .. } if f2 == field), "{e}");
            assert!(e.to_string().contains(field), "{e}");
        }
        c.metadata = None;
        assert!(validate(&c).unwrap_err().to_string().contains("metadata"));
    }

    #[test]
    fn unknown_ids_stop_and_remove_fine() {
        let d = tempfile::tempdir().unwrap();
        let m = Manager::new(SandboxConfig {
            state_dir: d.path().join("state"),
            run_dir: d.path().join("run"),
            exe: "/nonexistent".into(),
            cgroup_parent: "/berth-unit".into(),
        })
        .unwrap();
        m.stop("0123abcd").unwrap();
        m.remove("0123abcd").unwrap();
        m.remove("../x").unwrap();
        assert!(matches!(m.status("0123abcd"), Err(SandboxError::NotFound(_))));
        assert!(m.list().unwrap().is_empty());
    }
}
