//! The defaults the apiserver (and kubelet, for static pods) fill in.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe, Volume};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Annotation kubelet puts on static pods: the hash that became the UID.
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation kubelet puts on static pods: where they came from (`file`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// The UID kubelet gives a static pod: a hash of the pod as written and of its source, so the
/// same file gives the same UID after a restart and an edited file a new one. 32 hex digits.
pub fn static_pod_uid(pod: &Pod, source: &str) -> String {
    let mut h = Sha256::new();
    // serde_json with k8s-openapi types is deterministic (struct field order, BTreeMaps).
    h.update(serde_json::to_vec(pod).unwrap_or_default());
    h.update(b"file:");
    h.update(source.as_bytes());
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills in the UID (when absent), the static-pod annotations and the API defaults.
pub fn apply_pod_defaults(pod: &mut Pod, source: &str) {
    pod.status = None;
    if pod.metadata.uid.as_deref().unwrap_or("").is_empty() {
        pod.metadata.uid = Some(static_pod_uid(pod, source));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.entry(CONFIG_HASH_ANNOTATION.into()).or_insert(uid);
    ann.entry(CONFIG_SOURCE_ANNOTATION.into()).or_insert_with(|| "file".into());
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".into());
    }
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec_defaults(spec);
}

fn set<T>(field: &mut Option<T>, value: T) {
    if field.is_none() {
        *field = Some(value);
    }
}

fn set_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().unwrap_or("").is_empty() {
        *field = Some(value.into());
    }
}

fn spec_defaults(spec: &mut PodSpec) {
    set_str(&mut spec.restart_policy, "Always");
    set(&mut spec.termination_grace_period_seconds, 30);
    set_str(&mut spec.dns_policy, "ClusterFirst");
    set_str(&mut spec.scheduler_name, "default-scheduler");
    set(&mut spec.security_context, Default::default());
    set(&mut spec.enable_service_links, true);
    set_str(&mut spec.service_account_name, "default");
    // the deprecated alias mirrors serviceAccountName
    set_str(&mut spec.service_account, &spec.service_account_name.clone().unwrap_or_default());
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec.init_containers.iter_mut().flatten() {
        container_defaults(c, host_network);
    }
    for c in spec.containers.iter_mut() {
        container_defaults(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume_defaults(v);
    }
}

/// `Always` for `:latest` or no tag (and no digest), else `IfNotPresent` — as the apiserver does.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn container_defaults(c: &mut Container, host_network: bool) {
    set_str(&mut c.termination_message_path, "/dev/termination-log");
    set_str(&mut c.termination_message_policy, "File");
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        let policy = default_pull_policy(c.image.as_deref().unwrap_or(""));
        c.image_pull_policy = Some(policy.into());
    }
    for p in c.ports.iter_mut().flatten() {
        set_str(&mut p.protocol, "TCP");
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
        probe_defaults(probe);
    }
    if let Some(l) = &mut c.lifecycle {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = &mut h.http_get {
                set_str(&mut g.path, "/");
                set_str(&mut g.scheme, "HTTP");
            }
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_str(&mut f.api_version, "v1");
        }
    }
    // Limits without requests: the requests default to the limits.
    if let Some(res) = &mut c.resources {
        if let Some(limits) = &res.limits {
            let requests = res.requests.get_or_insert_with(BTreeMap::new);
            // (a bad limit is reported once, as a limit)
            for (k, v) in limits.iter().filter(|(k, v)| super::validate::resource_name_ok(k) && super::quantity::ParsedQuantity::parse(&v.0).is_ok()) {
                requests.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// Probe numbers are plain ints in the Go API: 0 means unset there, so 0 gets the default too.
fn probe_defaults(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(g) = &mut p.http_get {
        set_str(&mut g.path, "/");
        set_str(&mut g.scheme, "HTTP");
    }
    if let Some(g) = &mut p.grpc {
        set(&mut g.service, String::new());
    }
}

fn volume_defaults(v: &mut Volume) {
    let has_source = v.host_path.is_some()
        || v.empty_dir.is_some()
        || v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
        || v.persistent_volume_claim.is_some()
        || v.ephemeral.is_some()
        || v.image.is_some()
        || v.csi.is_some()
        || v.nfs.is_some()
        || v.iscsi.is_some()
        || v.git_repo.is_some()
        || v.cephfs.is_some()
        || v.rbd.is_some()
        || v.fc.is_some()
        || v.flex_volume.is_some()
        || v.glusterfs.is_some();
    if !has_source {
        v.empty_dir = Some(Default::default());
    }
    if let Some(h) = &mut v.host_path {
        set(&mut h.type_, String::new());
    }
    if let Some(c) = &mut v.config_map {
        set(&mut c.default_mode, 0o644);
    }
    if let Some(s) = &mut v.secret {
        set(&mut s.default_mode, 0o644);
    }
    if let Some(d) = &mut v.downward_api {
        set(&mut d.default_mode, 0o644);
        for i in d.items.iter_mut().flatten() {
            if let Some(f) = &mut i.field_ref {
                set_str(&mut f.api_version, "v1");
            }
        }
    }
    if let Some(p) = &mut v.projected {
        set(&mut p.default_mode, 0o644);
        for s in p.sources.iter_mut().flatten() {
            if let Some(t) = &mut s.service_account_token {
                set(&mut t.expiration_seconds, 3600);
            }
            if let Some(d) = &mut s.downward_api {
                for i in d.items.iter_mut().flatten() {
                    if let Some(f) = &mut i.field_ref {
                        set_str(&mut f.api_version, "v1");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abcd"), "IfNotPresent");
    }
}
