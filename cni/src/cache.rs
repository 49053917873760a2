//! The attachment cache: per (network, container, interface), the network
//! configuration and runtime arguments an ADD used, and its result, so that
//! CHECK and DEL work the same after a daemon restart or a config change.
//! The entry is written before the first plugin runs, so a half-done ADD is
//! still deleted.
//!
//! Layout: `<dir>/results/<network>-<container>-<ifname>` (as libcni).

use crate::error::CniError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const KIND: &str = "berthCniCacheV1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    pub kind: String,
    pub container_id: String,
    pub network_name: String,
    pub if_name: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub cni_args: Vec<(String, String)>,
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    /// The network configuration list the ADD ran.
    pub config: Value,
    /// The ADD result, once every plugin succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join("results").join(format!("{network}-{container_id}-{ifname}"))
    }

    pub fn get(&self, network: &str, container_id: &str, ifname: &str) -> Result<Option<CachedAttachment>, CniError> {
        let p = self.path(network, container_id, ifname);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CniError::Cache { path: p, source }),
        };
        let c: CachedAttachment = serde_json::from_slice(&bytes).map_err(|e| CniError::Cache { path: p.clone(), source: std::io::Error::other(e) })?;
        if c.kind != KIND {
            return Err(CniError::Cache { path: p, source: std::io::Error::other(format!("unknown kind {:?}", c.kind)) });
        }
        Ok(Some(c))
    }

    /// Writes an entry atomically (temp file, fsync, rename), mode 0600.
    pub fn put(&self, c: &CachedAttachment) -> Result<(), CniError> {
        let p = self.path(&c.network_name, &c.container_id, &c.if_name);
        let err = |source| CniError::Cache { path: p.clone(), source };
        let dir = p.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir).map_err(err)?;
        let tmp = p.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
        f.write_all(&serde_json::to_vec(c).expect("cache entry serializes")).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &p).map_err(err)
    }

    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let p = self.path(network, container_id, ifname);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::Cache { path: p, source: e }),
            _ => Ok(()),
        }
    }

    /// Every entry of a container (all networks and interfaces).
    pub fn list(&self, container_id: &str) -> Vec<CachedAttachment> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("results")) else { return Vec::new() };
        let part = format!("-{container_id}-");
        let mut out: Vec<CachedAttachment> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(&part))
            .filter_map(|e| serde_json::from_slice::<CachedAttachment>(&std::fs::read(e.path()).ok()?).ok())
            .filter(|c| c.kind == KIND && c.container_id == container_id)
            .collect();
        out.sort_by(|a, b| (&a.network_name, &a.if_name).cmp(&(&b.network_name, &b.if_name)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        assert_eq!(c.get("net", "abc", "eth0").unwrap(), None);
        let e = CachedAttachment {
            kind: KIND.into(),
            container_id: "abc".into(),
            network_name: "net".into(),
            if_name: "eth0".into(),
            netns: "/run/netns/abc".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "web".into())],
            capability_args: serde_json::json!({"portMappings": []}).as_object().unwrap().clone(),
            config: serde_json::json!({"name": "net"}),
            result: None,
        };
        c.put(&e).unwrap();
        assert_eq!(c.get("net", "abc", "eth0").unwrap().as_ref(), Some(&e));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(c.path("net", "abc", "eth0")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(c.list("abc"), vec![e.clone()]);
        assert!(c.list("ab").is_empty());
        c.remove("net", "abc", "eth0").unwrap();
        c.remove("net", "abc", "eth0").unwrap();
        assert_eq!(c.get("net", "abc", "eth0").unwrap(), None);
        std::fs::write(c.path("net", "abc", "eth0"), "{").unwrap();
        assert!(c.get("net", "abc", "eth0").unwrap_err().to_string().contains("net-abc-eth0"));
    }
}
