//! ConfigMaps and Secrets the pods of this node may reference. In standalone
//! mode they come from the manifests; a change wakes the pod workers so a pod
//! waiting for a missing object starts once it appears.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

#[derive(Default, Clone)]
struct Inner {
    config_maps: BTreeMap<(String, String), ConfigMap>,
    secrets: BTreeMap<(String, String), Secret>,
}

/// A snapshot-able store of ConfigMaps and Secrets.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<RwLock<Inner>>,
    changed: watch::Sender<u64>,
}

impl Default for Objects {
    fn default() -> Self {
        Objects { inner: Default::default(), changed: watch::channel(0).0 }
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_else(|| "default".into()), meta.name.clone().unwrap_or_default())
}

impl Objects {
    pub fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        self.inner.read().expect("objects lock").config_maps.get(&(ns.to_string(), name.to_string())).cloned()
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        self.inner.read().expect("objects lock").secrets.get(&(ns.to_string(), name.to_string())).cloned()
    }

    pub fn put_config_map(&self, cm: ConfigMap) {
        self.inner.write().expect("objects lock").config_maps.insert(key(&cm.metadata), cm);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn put_secret(&self, s: Secret) {
        self.inner.write().expect("objects lock").secrets.insert(key(&s.metadata), s);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn remove_config_map(&self, ns: &str, name: &str) {
        self.inner.write().expect("objects lock").config_maps.remove(&(ns.to_string(), name.to_string()));
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn remove_secret(&self, ns: &str, name: &str) {
        self.inner.write().expect("objects lock").secrets.remove(&(ns.to_string(), name.to_string()));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
