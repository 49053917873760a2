//! Berth's configuration file (TOML).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default state root.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Default run root (sockets, mounts, pid files).
pub const DEFAULT_RUN_ROOT: &str = "/run/berth";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Config {
    /// Persistent state: content store, snapshots, image records.
    pub root: PathBuf,
    /// Volatile state: sockets, mounts.
    pub run_root: PathBuf,
    /// cgroupfs parent of container cgroups.
    pub cgroup_parent: String,
    /// Binaries of runtime handlers other than the built-in one, by name
    /// (`runc`, `crun` are found on PATH when not listed).
    pub runtimes: BTreeMap<String, PathBuf>,
    /// Registries that may be reached over plain http (host or host:port).
    pub insecure_registries: Vec<String>,
    /// Per-registry settings, keyed by registry host (`docker.io`, `registry.k8s.io`, ...).
    pub registry: BTreeMap<String, RegistryConfig>,
    /// Address of the CRI streaming server (exec, attach, port-forward
    /// URLs); port 0 picks a free port.
    pub stream_address: std::net::SocketAddr,
    /// Pod networking.
    pub cni: CniConfig,
}

/// CNI networking. Berth's own CNI state (the attachment cache, the default
/// network's address leases) lives under `<root>/cni`, pod network
/// namespaces under `<run_root>/netns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct CniConfig {
    /// Network configurations; the first `.conflist`/`.conf`/`.json` by name is used.
    pub conf_dir: PathBuf,
    /// Plugin binaries, searched in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Subnets of the default network (used when `conf_dir` has no
    /// configuration), comma-separated IPv4 and/or IPv6. The kubelet's
    /// UpdateRuntimeConfig replaces it.
    pub pod_cidr: String,
    /// The default network's bridge.
    pub bridge: String,
    /// Seconds a plugin may run before it is killed.
    pub plugin_timeout: u64,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            pod_cidr: berth_cni::pod::DEFAULT_POD_CIDR.into(),
            bridge: berth_cni::pod::DEFAULT_BRIDGE.into(),
            plugin_timeout: berth_cni::pod::DEFAULT_TIMEOUT.as_secs(),
        }
    }
}

/// Where and how to pull images of one registry, like containerd's `hosts.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct RegistryConfig {
    /// Endpoints tried in order before the registry itself, e.g.
    /// `http://127.0.0.1:5000` or `http://127.0.0.1:5000/prefix` (the path is
    /// prepended to repository names). The image keeps its original name.
    pub mirrors: Vec<String>,
    /// Replaces the registry's own endpoint (same form as a mirror).
    pub endpoint: Option<String>,
    /// Do not fall back to the registry itself when every mirror fails.
    pub mirrors_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
            run_root: PathBuf::from(DEFAULT_RUN_ROOT),
            cgroup_parent: "/berth".into(),
            runtimes: BTreeMap::new(),
            insecure_registries: vec!["127.0.0.1".into(), "localhost".into()],
            registry: BTreeMap::new(),
            cni: CniConfig::default(),
            stream_address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl Config {
    /// Reads a config file; a missing file at the default path gives the defaults.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let c: Self = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.stream_address.ip().is_unspecified() {
            anyhow::bail!(
                "stream_address {}: give the IP address clients reach the streaming server at (its URLs carry it), not an unspecified one",
                self.stream_address
            );
        }
        Ok(())
    }

    /// The CNI settings with Berth's state and run dirs.
    pub fn cni_options(&self) -> berth_cni::Options {
        berth_cni::Options {
            conf_dir: self.cni.conf_dir.clone(),
            plugin_dirs: self.cni.plugin_dirs.clone(),
            state_dir: self.root.join("cni"),
            netns_dir: self.run_root.join("netns"),
            bridge: self.cni.bridge.clone(),
            pod_cidr: self.cni.pod_cidr.clone(),
            plugin_timeout: std::time::Duration::from_secs(self.cni.plugin_timeout.max(1)),
        }
    }

    /// Whether `host` (a registry host, maybe with a port) may use plain http.
    pub fn is_insecure(&self, host: &str) -> bool {
        let bare = strip_port(host);
        self.insecure_registries.iter().any(|r| r == host || r == bare)
    }
}

/// `host:port` → `host`, keeping bracketed IPv6 literals whole.
pub fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registries() {
        let c = Config::parse(
            r#"
root = "/tmp/b"
insecure_registries = ["10.0.0.1:5000"]
[registry."docker.io"]
mirrors = ["http://127.0.0.1:5000"]
[registry."registry.k8s.io"]
endpoint = "http://127.0.0.1:5001/k8s"
"#,
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/b"));
        assert_eq!(c.registry["docker.io"].mirrors, vec!["http://127.0.0.1:5000"]);
        assert!(c.is_insecure("10.0.0.1:5000"));
        assert!(!c.is_insecure("10.0.0.1:5001"));
        assert!(Config::default().is_insecure("127.0.0.1:41234"));
        assert!(Config::parse("bogus = 1").unwrap_err().to_string().contains("bogus"));
        assert_eq!(Config::default().stream_address.to_string(), "127.0.0.1:0");
        assert_eq!(Config::parse("stream_address = \"127.0.0.2:10010\"").unwrap().stream_address.port(), 10010);
        assert!(Config::parse("stream_address = \"0.0.0.0:10010\"").unwrap_err().to_string().contains("stream_address"));
        assert!(Config::parse("stream_address = \"nope\"").is_err());
    }

    #[test]
    fn parses_cni() {
        let c = Config::default();
        assert_eq!(c.cni.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(c.cni.plugin_dirs, vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
        assert_eq!((c.cni.pod_cidr.as_str(), c.cni.bridge.as_str()), ("10.88.0.0/16", "berth0"));
        let c = Config::parse("root = \"/r\"\nrun_root = \"/run/b\"\n[cni]\nconf_dir = \"/c\"\npod_cidr = \"10.201.1.0/24\"\nbridge = \"bt1\"\n").unwrap();
        let o = c.cni_options();
        assert_eq!((o.conf_dir, o.state_dir, o.netns_dir), (PathBuf::from("/c"), PathBuf::from("/r/cni"), PathBuf::from("/run/b/netns")));
        assert_eq!((o.pod_cidr.as_str(), o.bridge.as_str()), ("10.201.1.0/24", "bt1"));
        assert!(Config::parse("[cni]\nbrige = \"x\"").unwrap_err().to_string().contains("brige"));
    }
}
