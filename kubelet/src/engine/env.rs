//! Container environment: values, field and resource references, ConfigMap
//! and Secret keys, envFrom, and `$(VAR)` expansion by Kubernetes' rules.

use super::objects::Objects;
use super::quantity;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;

/// What a field reference may read beyond the pod object.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
}

/// Why a container's config cannot be built (CreateContainerConfigError).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The container's environment in order, references resolved and expanded.
pub fn resolve(c: &Container, facts: &PodFacts, objects: &Objects) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = facts.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match objects.config_map(ns, &r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut out, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match objects.secret(ns, &r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(&mut out, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                    for (k, v) in s.string_data.iter().flatten() {
                        set(&mut out, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field(&f.field_path, facts).ok_or_else(|| ConfigError(format!("env {}: unsupported fieldRef {}", e.name, f.field_path)))?
            } else if let Some(r) = &src.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(n) if !n.is_empty() => find_container(facts.pod, n).ok_or_else(|| ConfigError(format!("env {}: no container {n}", e.name)))?,
                    _ => c,
                };
                resource_field(target, &r.resource, r.divisor.as_ref()).ok_or_else(|| ConfigError(format!("env {}: unsupported resource {}", e.name, r.resource)))?
            } else if let Some(r) = &src.config_map_key_ref {
                match objects.config_map(ns, &r.name) {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => return Err(ConfigError(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name))),
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
                }
            } else if let Some(r) = &src.secret_key_ref {
                match objects.secret(ns, &r.name) {
                    Some(s) => match secret_value(&s, &r.key) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => return Err(ConfigError(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name))),
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
                }
            } else {
                return Err(ConfigError(format!("env {}: unsupported valueFrom", e.name)));
            }
        } else {
            // Kubernetes expands `$(VAR)` in values against the variables defined before.
            let defined: BTreeMap<&str, &str> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(e.value.as_deref().unwrap_or(""), &defined)
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

fn secret_value(s: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<String> {
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.clone());
    }
    s.data.as_ref().and_then(|d| d.get(key)).map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name)
}

/// The value of a downward API field path.
pub fn field(path: &str, facts: &PodFacts) -> Option<String> {
    let m = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| map.as_ref().and_then(|l| l.get(key)).cloned().unwrap_or_default();
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_else(|| facts.node_name.to_string()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into()),
        "status.hostIP" => facts.host_ip.to_string(),
        "status.hostIPs" => facts.host_ip.to_string(),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        p => {
            if let Some(k) = p.strip_prefix("metadata.labels['").and_then(|k| k.strip_suffix("']")) {
                label(&m.labels, k)
            } else if let Some(k) = p.strip_prefix("metadata.annotations['").and_then(|k| k.strip_suffix("']")) {
                label(&m.annotations, k)
            } else {
                return None;
            }
        }
    })
}

/// `key="value"` lines, sorted, as the downward API writes maps.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
}

/// A resource request or limit in units of the divisor, rounded up; a
/// missing limit falls back to node allocatable like kubelet (here: the
/// machine's CPUs and memory).
pub fn resource_field(c: &Container, resource: &str, divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<String> {
    let res = c.resources.as_ref();
    let (kind, name) = resource.split_once('.')?;
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    let v = match map.and_then(|m| m.get(name)).and_then(|q| quantity::parse(&q.0)) {
        Some(v) => v,
        None if kind == "limits" || name == "cpu" || name == "memory" => match name {
            "cpu" if kind == "limits" => std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0),
            "memory" if kind == "limits" => node_memory() as f64,
            _ => 0.0,
        },
        None => 0.0,
    };
    let div = divisor.and_then(|d| quantity::parse(&d.0)).filter(|d| *d > 0.0).unwrap_or(1.0);
    Some(format!("{}", (v / div).ceil() as i64))
}

/// Total memory of the machine in bytes.
pub fn node_memory() -> u64 {
    nix::sys::sysinfo::sysinfo().map(|s| s.ram_total()).unwrap_or(0)
}

/// Expands `$(VAR)` references by Kubernetes' rules: `$$` is an escaped `$`,
/// unknown references stay as written.
pub fn expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_rules() {
        let vars: BTreeMap<&str, &str> = [("A", "x"), ("B", "y")].into_iter().collect();
        assert_eq!(expand("$(A)-$(B)", &vars), "x-y");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(C)", &vars), "$(C)");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("a$b", &vars), "a$b");
        assert_eq!(expand("€$(A)", &vars), "€x");
    }
}
