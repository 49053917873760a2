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
}
