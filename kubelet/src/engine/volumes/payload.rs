//! The files of API-data volumes (configMap, secret, downwardAPI, projected),
//! computed as kubelet's volume plugins compute them.

use super::atomic::{FileProjection, Payload};
use crate::engine::env::{self, PodFacts};
use crate::engine::tokens::Token;
use crate::engine::{spec, Shared};
use anyhow::bail;
use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};
use std::collections::{BTreeMap, HashMap};

/// The ConfigMap every namespace has with the cluster's CA.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// What the payload of a pod's volume depends on besides the objects.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub pod: &'a Pod,
    /// Owner of token files (one runAsUser for every container).
    pub fs_user: Option<u32>,
    pub fs_group: Option<u32>,
    /// Current tokens by (volume, source index).
    pub tokens: &'a HashMap<(String, usize), Token>,
}

impl Ctx<'_> {
    fn ns(&self) -> &str {
        spec::pod_namespace(self.pod)
    }

    /// A ConfigMap of the pod's namespace. `kube-root-ca.crt` is there even
    /// when no manifest defines it: it holds the issuer's CA.
    fn config_map(&self, name: &str) -> anyhow::Result<Option<ConfigMap>> {
        if let Some(cm) = self.shared.objects.config_map(self.ns(), name) {
            return Ok(Some(cm));
        }
        if name == ROOT_CA_CONFIG_MAP {
            let ca = self.shared.tokens.root_ca()?;
            return Ok(Some(ConfigMap { data: Some(BTreeMap::from([("ca.crt".to_string(), ca)])), ..Default::default() }));
        }
        Ok(None)
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.shared.objects.secret(self.ns(), name)
    }
}

/// A volume's defaultMode and defaultUser.
#[derive(Clone, Copy)]
pub struct Defaults {
    mode: i32,
    user: Option<i64>,
}

impl Defaults {
    pub fn new(mode: Option<i32>, user: Option<i64>) -> Defaults {
        Defaults { mode: mode.unwrap_or(0o644), user }
    }
}

/// A file with the item's mode and owner, else the volume's.
fn projection(data: Vec<u8>, d: Defaults, mode: Option<i32>, user: Option<i64>) -> FileProjection {
    FileProjection { data, mode: mode.unwrap_or(d.mode) as u32 & 0o7777, fs_user: user.or(d.user).and_then(|u| u32::try_from(u).ok()) }
}

/// A ConfigMap's keys (all, or the listed items).
pub fn config_map(ctx: &Ctx, name: &str, items: Option<&[KeyToPath]>, d: Defaults, optional: bool) -> anyhow::Result<Payload> {
    let cm = match ctx.config_map(name)? {
        Some(cm) => cm,
        None if optional => return Ok(Payload::new()),
        None => bail!("configmap {name:?} not found"),
    };
    let data = cm.data.unwrap_or_default();
    let binary = cm.binary_data.unwrap_or_default();
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k, projection(v.into_bytes(), d, None, None));
            }
            for (k, v) in binary {
                out.insert(k, projection(v.0, d, None, None));
            }
        }
        Some(items) => {
            for it in items {
                let bytes = match (data.get(&it.key), binary.get(&it.key)) {
                    (Some(s), _) => s.clone().into_bytes(),
                    (None, Some(b)) => b.0.clone(),
                    (None, None) if optional => continue,
                    (None, None) => bail!("configmap references non-existent config key: {}", it.key),
                };
                out.insert(it.path.clone(), projection(bytes, d, it.mode, it.user));
            }
        }
    }
    Ok(out)
}

/// A Secret's keys (all, or the listed items).
pub fn secret(ctx: &Ctx, name: &str, items: Option<&[KeyToPath]>, d: Defaults, optional: bool) -> anyhow::Result<Payload> {
    let s = match ctx.secret(name) {
        Some(s) => s,
        None if optional => return Ok(Payload::new()),
        None => bail!("secret {name:?} not found"),
    };
    let mut data: BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k, projection(v, d, None, None));
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(it.path.clone(), projection(v.clone(), d, it.mode, it.user));
                    }
                    None if optional => {}
                    None => bail!("references non-existent secret key: {}", it.key),
                }
            }
        }
    }
    Ok(out)
}

/// Downward API files: pod fields and container resources.
pub fn downward(ctx: &Ctx, items: &[DownwardAPIVolumeFile], d: Defaults) -> anyhow::Result<Payload> {
    let facts = PodFacts { pod: ctx.pod, node_name: &ctx.shared.cfg.node_name, host_ip: &ctx.shared.cfg.host_ip, pod_ips: &[] };
    let mut out = Payload::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            match env::field(&f.field_path, &facts) {
                Some(v) => v,
                None => bail!("unsupported fieldPath: {}", f.field_path),
            }
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or("");
            let s = spec::spec(ctx.pod);
            let Some(c) = s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == name) else {
                bail!("container {name:?} not found in the pod");
            };
            match env::resource_field(c, &r.resource, r.divisor.as_ref()) {
                Some(v) => v,
                None => bail!("unsupported container resource: {}", r.resource),
            }
        } else {
            bail!("{}: one of fieldRef and resourceFieldRef is required", it.path);
        };
        out.insert(it.path.clone(), projection(value.into_bytes(), d, it.mode, it.user));
    }
    Ok(out)
}

/// A projected volume: its sources merged, in order.
pub fn projected(ctx: &Ctx, volume: &str, p: &k8s_openapi::api::core::v1::ProjectedVolumeSource) -> anyhow::Result<Payload> {
    let d = Defaults::new(p.default_mode, p.default_user);
    let mut out = Payload::new();
    let mut errors = Vec::new();
    for (i, s) in p.sources.iter().flatten().enumerate() {
        let part = if let Some(c) = &s.config_map {
            config_map(ctx, &c.name, c.items.as_deref(), d, c.optional == Some(true))
        } else if let Some(c) = &s.secret {
            secret(ctx, &c.name, c.items.as_deref(), d, c.optional == Some(true))
        } else if let Some(dw) = &s.downward_api {
            downward(ctx, dw.items.as_deref().unwrap_or(&[]), d)
        } else if let Some(t) = &s.service_account_token {
            match ctx.tokens.get(&(volume.to_string(), i)) {
                Some(tok) => {
                    // Readable by the owner only when the pod sets an owner
                    // or group (fsGroup then adds group read).
                    let mode = if ctx.fs_user.is_some() || ctx.fs_group.is_some() { 0o600 } else { d.mode as u32 & 0o7777 };
                    let user = t.user.or(d.user).and_then(|u| u32::try_from(u).ok()).or(ctx.fs_user);
                    Ok(Payload::from([(t.path.clone(), FileProjection { data: tok.token.clone().into_bytes(), mode, fs_user: user })]))
                }
                None => Err(anyhow::anyhow!("no token for {}", t.path)),
            }
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(p) => out.extend(p),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join(", "));
    }
    Ok(out)
}
