//! Pod, ConfigMap and Secret validation with Kubernetes' field paths and messages.

use super::error::FieldError;
use super::quantity::{ParsedQuantity, QuantityError};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, HTTPGetAction, KeyToPath, LifecycleHandler, Pod, PodSpec, Probe,
    Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap, HashSet};

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const ENV_NAME_MSG: &str = "a valid environment variable name must consist only of printable ASCII characters other than '='";
const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const NON_NEGATIVE_MSG: &str = "must be greater than or equal to 0";

// ---- name checks (Kubernetes' apimachinery validation) ----

fn is_label_body(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !b.iter().any(|c| c.is_ascii_uppercase())
}

/// Problems of a DNS-1123 label (container, volume and namespace names); empty when valid.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".into());
    }
    if !is_label_body(s) {
        errs.push(DNS1123_LABEL_MSG.into());
    }
    errs
}

/// Problems of a DNS-1123 subdomain (pod, ConfigMap and Secret names); empty when valid.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".into());
    }
    if s.is_empty() || !s.split('.').all(is_label_body) {
        errs.push(DNS1123_SUBDOMAIN_MSG.into());
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Problems of a qualified name (`prefix/name`, label and annotation keys).
pub fn qualified_name(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".into());
        }
        if !is_qualified_name_part(name) {
            errs.push(QUALIFIED_NAME_MSG.into());
        }
    }
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".into());
        } else {
            errs.extend(dns1123_subdomain(p).into_iter().map(|m| format!("prefix part {m}")));
        }
    }
    errs
}

fn label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".into());
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(LABEL_VALUE_MSG.into());
    }
    errs
}

/// Problems of a ConfigMap/Secret key.
pub fn config_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".into());
    }
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) {
        errs.push(CONFIG_KEY_MSG.into());
    }
    if s == "." {
        errs.push("must not be '.'".into());
    } else if s == ".." {
        errs.push("must not be '..'".into());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

fn env_name(s: &str) -> Vec<String> {
    if s.bytes().all(|c| (b' '..=b'~').contains(&c) && c != b'=') {
        Vec::new()
    } else {
        vec![ENV_NAME_MSG.into()]
    }
}

/// Problems of an IANA service name (port names).
fn port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push("must be no more than 15 characters".into());
    }
    if !s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_alphabetic()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

// ---- the validator ----

struct V {
    errs: Vec<FieldError>,
}

impl V {
    fn push(&mut self, e: FieldError) {
        self.errs.push(e);
    }
    fn each(&mut self, field: &str, value: &str, problems: Vec<String>) {
        for p in problems {
            self.push(FieldError::invalid(field, value, p));
        }
    }
    fn non_negative(&mut self, field: &str, v: Option<i64>) {
        if let Some(v) = v.filter(|v| *v < 0) {
            self.push(FieldError::invalid(field, v, NON_NEGATIVE_MSG));
        }
    }
    fn quantity(&mut self, field: &str, q: &Quantity) -> Option<ParsedQuantity> {
        match ParsedQuantity::parse(&q.0) {
            Ok(p) => Some(p),
            Err(QuantityError) => {
                self.push(FieldError::invalid(field, &q.0, QuantityError.to_string()));
                None
            }
        }
    }
    fn relative_path(&mut self, field: &str, p: &str) {
        if p.starts_with('/') {
            self.push(FieldError::invalid(field, p, "must be a relative path"));
        }
        if p.split('/').any(|c| c == "..") {
            self.push(FieldError::invalid(field, p, "must not contain '..'"));
        }
    }
    fn mode(&mut self, field: &str, m: Option<i32>) {
        if let Some(m) = m.filter(|m| !(0..=0o777).contains(m)) {
            self.push(FieldError::invalid(field, m, MODE_MSG));
        }
    }
}

/// Validates a pod after defaulting; every problem, in field order.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut v = V { errs: Vec::new() };
    object_meta(&mut v, &pod.metadata, true);
    match &pod.spec {
        None => v.push(FieldError::required("spec", "")),
        Some(spec) => pod_spec(&mut v, spec),
    }
    v.errs
}

fn object_meta(v: &mut V, meta: &ObjectMeta, namespaced: bool) {
    match meta.name.as_deref().unwrap_or("") {
        "" => v.push(FieldError::required("metadata.name", "name or generateName is required")),
        name => v.each("metadata.name", name, dns1123_subdomain(name)),
    }
    if namespaced {
        let ns = meta.namespace.as_deref().unwrap_or("default");
        v.each("metadata.namespace", ns, dns1123_label(ns));
    }
    for (k, val) in meta.labels.iter().flatten() {
        v.each("metadata.labels", k, qualified_name(k));
        v.each(&format!("metadata.labels[{k}]"), val, label_value(val));
    }
    let mut total = 0;
    for (k, val) in meta.annotations.iter().flatten() {
        v.each("metadata.annotations", k, qualified_name(&k.to_lowercase()));
        total += k.len() + val.len();
    }
    if total > 256 * 1024 {
        v.push(FieldError::too_long("metadata.annotations", 256 * 1024));
    }
}

fn is_restartable_init(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn pod_spec(v: &mut V, spec: &PodSpec) {
    let volumes = volumes(v, spec.volumes.as_deref().unwrap_or(&[]), spec);
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    let mut names = HashSet::new();
    let all_names: HashSet<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| c.name.as_str())
        .collect();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        container(v, &format!("spec.initContainers[{i}]"), c, true, &volumes, &mut names, &all_names, spec, grace);
    }
    if spec.containers.is_empty() {
        v.push(FieldError::required("spec.containers", ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        container(v, &format!("spec.containers[{i}]"), c, false, &volumes, &mut names, &all_names, spec, grace);
    }
    host_ports(v, spec);
    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        v.push(FieldError::forbidden("spec.ephemeralContainers", "cannot be set on create"));
    }
    if let Some(p) = spec.restart_policy.as_deref() {
        if !matches!(p, "Always" | "OnFailure" | "Never") {
            v.push(FieldError::not_supported("spec.restartPolicy", p, &["Always", "OnFailure", "Never"]));
        }
    }
    if let Some(p) = spec.dns_policy.as_deref() {
        if !matches!(p, "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None") {
            v.push(FieldError::not_supported(
                "spec.dnsPolicy",
                p,
                &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
            ));
        } else if p == "None" && spec.dns_config.as_ref().is_none_or(|c| c.nameservers.as_ref().is_none_or(|n| n.is_empty())) {
            v.push(FieldError::required("spec.dnsConfig.nameservers", "must provide at least one DNS nameserver when `dnsPolicy` is None"));
        }
    }
    v.non_negative("spec.terminationGracePeriodSeconds", spec.termination_grace_period_seconds);
    if let Some(d) = spec.active_deadline_seconds.filter(|d| *d < 1 || *d > i32::MAX as i64) {
        v.push(FieldError::invalid("spec.activeDeadlineSeconds", d, "must be between 1 and 2147483647, inclusive"));
    }
    if let Some(h) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        v.each("spec.hostname", h, dns1123_label(h));
    }
    if let Some(h) = spec.subdomain.as_deref().filter(|h| !h.is_empty()) {
        v.each("spec.subdomain", h, dns1123_label(h));
    }
    if let Some(sa) = spec.service_account_name.as_deref().filter(|s| !s.is_empty()) {
        v.each("spec.serviceAccountName", sa, dns1123_subdomain(sa));
    }
}

#[allow(clippy::too_many_arguments)]
fn container(
    v: &mut V,
    path: &str,
    c: &Container,
    init: bool,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    all_names: &HashSet<&str>,
    spec: &PodSpec,
    grace: i64,
) {
    let f = |s: &str| format!("{path}.{s}");
    if c.name.is_empty() {
        v.push(FieldError::required(f("name"), ""));
    } else {
        v.each(&f("name"), &c.name, dns1123_label(&c.name));
        if !names.insert(c.name.clone()) {
            v.push(FieldError::duplicate(f("name"), &c.name));
        }
    }
    match c.image.as_deref().unwrap_or("") {
        "" => v.push(FieldError::required(f("image"), "")),
        img if img.trim() != img => v.push(FieldError::invalid(f("image"), img, "must not have leading or trailing whitespace")),
        _ => {}
    }
    if let Some(p) = c.image_pull_policy.as_deref() {
        if !matches!(p, "Always" | "IfNotPresent" | "Never") {
            v.push(FieldError::not_supported(f("imagePullPolicy"), p, &["Always", "IfNotPresent", "Never"]));
        }
    }
    if let Some(p) = c.termination_message_policy.as_deref() {
        if !matches!(p, "File" | "FallbackToLogsOnError") {
            v.push(FieldError::not_supported(f("terminationMessagePolicy"), p, &["File", "FallbackToLogsOnError"]));
        }
    }
    match (init, c.restart_policy.as_deref()) {
        (_, None) => {}
        (true, Some("Always")) => {}
        (true, Some(p)) => v.push(FieldError::not_supported(f("restartPolicy"), p, &["Always"])),
        (false, Some(_)) => v.push(FieldError::forbidden(f("restartPolicy"), "may not be set for non-init containers")),
    }
    let ports = c.ports.as_deref().unwrap_or(&[]);
    container_ports(v, path, ports, spec.host_network.unwrap_or(false));
    env(v, path, c, all_names);
    resources(v, path, c);

    let plain_init = init && !is_restartable_init(c);
    let probes = [("livenessProbe", &c.liveness_probe), ("readinessProbe", &c.readiness_probe), ("startupProbe", &c.startup_probe)];
    for (name, probe) in probes {
        let Some(probe) = probe else { continue };
        let pp = f(name);
        if plain_init {
            v.push(FieldError::forbidden(pp, "may not be set for init containers without restartPolicy=Always"));
            continue;
        }
        if init && name == "readinessProbe" {
            v.push(FieldError::forbidden(pp, "may not be set for init containers"));
            continue;
        }
        self::probe(v, &pp, probe, name, ports);
    }
    if let Some(l) = &c.lifecycle {
        if plain_init {
            v.push(FieldError::forbidden(f("lifecycle"), "may not be set for init containers without restartPolicy=Always"));
        } else {
            for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
                if let Some(h) = h {
                    lifecycle_handler(v, &f(&format!("lifecycle.{name}")), h, ports, grace);
                }
            }
        }
    }
    let mut mount_paths = HashSet::new();
    let privileged = c.security_context.as_ref().and_then(|s| s.privileged).unwrap_or(false);
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            v.push(FieldError::required(format!("{mp}.name"), ""));
        } else if !volumes.contains(&m.name) {
            v.push(FieldError::not_found(format!("{mp}.name"), &m.name, ""));
        }
        if m.mount_path.is_empty() {
            v.push(FieldError::required(format!("{mp}.mountPath"), ""));
        } else if !mount_paths.insert(m.mount_path.trim_end_matches('/').to_string()) {
            v.push(FieldError::invalid(format!("{mp}.mountPath"), &m.mount_path, "must be unique"));
        }
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            v.relative_path(&format!("{mp}.subPath"), sp);
        }
        if let Some(se) = m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
            if m.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
                v.push(FieldError::invalid(format!("{mp}.subPathExpr"), se, "subPathExpr and subPath are mutually exclusive"));
            }
            v.relative_path(&format!("{mp}.subPathExpr"), se);
        }
        match m.mount_propagation.as_deref() {
            None | Some("None") | Some("HostToContainer") => {}
            Some("Bidirectional") if privileged => {}
            Some("Bidirectional") => v.push(FieldError::forbidden(
                format!("{mp}.mountPropagation"),
                "Bidirectional mount propagation is available only to privileged containers",
            )),
            Some(p) => v.push(FieldError::not_supported(
                format!("{mp}.mountPropagation"),
                p,
                &["Bidirectional", "HostToContainer", "None"],
            )),
        }
    }
}

fn container_ports(v: &mut V, path: &str, ports: &[ContainerPort], host_network: bool) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            v.each(&format!("{pp}.name"), n, port_name(n));
            if !names.insert(n) {
                v.push(FieldError::duplicate(format!("{pp}.name"), n));
            }
        }
        if p.container_port == 0 {
            v.push(FieldError::required(format!("{pp}.containerPort"), ""));
        } else if !(1..=65535).contains(&p.container_port) {
            v.push(FieldError::invalid(format!("{pp}.containerPort"), p.container_port, PORT_RANGE_MSG));
        }
        if let Some(h) = p.host_port.filter(|h| *h != 0) {
            if !(1..=65535).contains(&h) {
                v.push(FieldError::invalid(format!("{pp}.hostPort"), h, PORT_RANGE_MSG));
            } else if host_network && h != p.container_port {
                v.push(FieldError::invalid(
                    format!("{pp}.hostPort"),
                    h,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        if let Some(proto) = p.protocol.as_deref() {
            if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                v.push(FieldError::not_supported(format!("{pp}.protocol"), proto, &["SCTP", "TCP", "UDP"]));
            }
        }
    }
}

/// A host port (with its protocol and host IP) may be used once in a pod.
fn host_ports(v: &mut V, spec: &PodSpec) {
    let mut seen = HashSet::new();
    let all = spec.init_containers.iter().flatten().map(|c| ("spec.initContainers", c)).chain(spec.containers.iter().map(|c| ("spec.containers", c)));
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (list, c) in all {
        let i = index.entry(list).or_default();
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let Some(h) = p.host_port.filter(|h| *h != 0) else { continue };
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let ip = p.host_ip.as_deref().unwrap_or("");
            if !seen.insert((ip.to_string(), h, proto.to_string())) {
                v.push(FieldError::duplicate(format!("{list}[{i}].ports[{j}].hostPort"), format!("{h}/{proto}")));
            }
        }
        *i += 1;
    }
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const VOLUME_FIELD_PATHS: &[&str] = &["metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid"];
const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn subscripted(path: &str) -> bool {
    ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|p| path.strip_prefix(p).and_then(|r| r.strip_suffix("']")).is_some_and(|k| !k.is_empty() && qualified_name(k).is_empty()))
}

fn field_path(v: &mut V, field: &str, path: &str, api_version: Option<&str>, supported: &[&str]) {
    if let Some(a) = api_version.filter(|a| *a != "v1") {
        v.push(FieldError::not_supported(field.replace("fieldPath", "apiVersion"), a, &["v1"]));
    }
    if path.is_empty() {
        v.push(FieldError::required(field, ""));
    } else if !supported.contains(&path) && !subscripted(path) {
        v.push(FieldError::not_supported(field, path, supported));
    }
}

fn resource_field(v: &mut V, field: &str, resource: &str, divisor: Option<&Quantity>) {
    if resource.is_empty() {
        v.push(FieldError::required(format!("{field}.resource"), ""));
    } else if !RESOURCE_FIELDS.contains(&resource) && !resource.starts_with("limits.hugepages-") && !resource.starts_with("requests.hugepages-") {
        v.push(FieldError::not_supported(format!("{field}.resource"), resource, RESOURCE_FIELDS));
    }
    if let Some(d) = divisor {
        if let Some(q) = v.quantity(&format!("{field}.divisor"), d) {
            if q.nanos() <= 0 {
                v.push(FieldError::invalid(format!("{field}.divisor"), &d.0, "must be greater than 0"));
            }
        }
    }
}

fn env(v: &mut V, path: &str, c: &Container, all_names: &HashSet<&str>) {
    for (i, e) in c.env.iter().flatten().enumerate() {
        let ep = format!("{path}.env[{i}]");
        env_var(v, &ep, e, all_names);
    }
    for (i, e) in c.env_from.iter().flatten().enumerate() {
        let ep = format!("{path}.envFrom[{i}]");
        let n = e.config_map_ref.is_some() as usize + e.secret_ref.is_some() as usize;
        if n == 0 {
            v.push(FieldError::invalid(&ep, "", "must specify one of: `configMapRef` or `secretRef`"));
        } else if n > 1 {
            v.push(FieldError::invalid(&ep, "", "may not have more than one field specified at a time"));
        }
        if let Some(r) = &e.config_map_ref {
            named_ref(v, &format!("{ep}.configMapRef.name"), &r.name);
        }
        if let Some(r) = &e.secret_ref {
            named_ref(v, &format!("{ep}.secretRef.name"), &r.name);
        }
        if let Some(p) = e.prefix.as_deref().filter(|p| !p.is_empty()) {
            v.each(&format!("{ep}.prefix"), p, env_name(p));
        }
    }
}

fn named_ref(v: &mut V, field: &str, name: &str) {
    if name.is_empty() {
        v.push(FieldError::required(field, ""));
    } else {
        v.each(field, name, dns1123_subdomain(name));
    }
}

fn env_var(v: &mut V, ep: &str, e: &EnvVar, all_names: &HashSet<&str>) {
    if e.name.is_empty() {
        v.push(FieldError::required(format!("{ep}.name"), ""));
    } else {
        v.each(&format!("{ep}.name"), &e.name, env_name(&e.name));
    }
    let Some(from) = &e.value_from else { return };
    let vf = format!("{ep}.valueFrom");
    if e.value.as_deref().is_some_and(|s| !s.is_empty()) {
        v.push(FieldError::invalid(&vf, "", "may not be specified when `value` is not empty"));
    }
    let n = [from.field_ref.is_some(), from.resource_field_ref.is_some(), from.config_map_key_ref.is_some(), from.secret_key_ref.is_some(), from.file_key_ref.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n == 0 {
        v.push(FieldError::invalid(&vf, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"));
    } else if n > 1 {
        v.push(FieldError::invalid(&vf, "", "may not have more than one field specified at a time"));
    }
    if let Some(r) = &from.field_ref {
        field_path(v, &format!("{vf}.fieldRef.fieldPath"), &r.field_path, r.api_version.as_deref(), ENV_FIELD_PATHS);
    }
    if let Some(r) = &from.resource_field_ref {
        let rp = format!("{vf}.resourceFieldRef");
        resource_field(v, &rp, &r.resource, r.divisor.as_ref());
        if let Some(cn) = r.container_name.as_deref().filter(|n| !n.is_empty()) {
            if !all_names.contains(cn) {
                v.push(FieldError::not_found(format!("{rp}.containerName"), cn, "must be the name of a container of this pod"));
            }
        }
    }
    for (name, key, which) in [
        from.config_map_key_ref.as_ref().map(|r| (&r.name, &r.key, "configMapKeyRef")),
        from.secret_key_ref.as_ref().map(|r| (&r.name, &r.key, "secretKeyRef")),
    ]
    .into_iter()
    .flatten()
    {
        let rp = format!("{vf}.{which}");
        named_ref(v, &format!("{rp}.name"), name);
        if key.is_empty() {
            v.push(FieldError::required(format!("{rp}.key"), ""));
        } else {
            v.each(&format!("{rp}.key"), key, config_key(key));
        }
    }
}

pub(crate) fn resource_name_ok(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name.strip_prefix("hugepages-").is_some_and(|q| ParsedQuantity::parse(q).is_ok())
        || (name.contains('/') && qualified_name(name).is_empty())
}

fn resources(v: &mut V, path: &str, c: &Container) {
    let Some(r) = &c.resources else { return };
    let mut parsed: [BTreeMap<&str, ParsedQuantity>; 2] = Default::default();
    for (idx, (which, list)) in [("limits", &r.limits), ("requests", &r.requests)].into_iter().enumerate() {
        for (k, q) in list.iter().flatten() {
            let field = format!("{path}.resources.{which}[{k}]");
            if !resource_name_ok(k) {
                v.push(FieldError::invalid(&field, k, "must be a standard resource for containers"));
                continue;
            }
            if let Some(p) = v.quantity(&field, q) {
                if p.is_negative() {
                    v.push(FieldError::invalid(&field, &q.0, NON_NEGATIVE_MSG));
                } else {
                    parsed[idx].insert(k.as_str(), p);
                }
            }
        }
    }
    for (k, req) in &parsed[1] {
        if let Some(lim) = parsed[0].get(k) {
            if req > lim {
                let raw = &r.requests.as_ref().unwrap()[*k].0;
                let lraw = &r.limits.as_ref().unwrap()[*k].0;
                v.push(FieldError::invalid(
                    format!("{path}.resources.requests"),
                    raw,
                    format!("must be less than or equal to {k} limit of {lraw}"),
                ));
            }
        }
    }
}

fn check_port(v: &mut V, field: &str, port: &IntOrString, ports: &[ContainerPort]) {
    match port {
        IntOrString::Int(p) => {
            if !(1..=65535).contains(p) {
                v.push(FieldError::invalid(field, p, PORT_RANGE_MSG));
            }
        }
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<i32>() {
                if !(1..=65535).contains(&n) {
                    v.push(FieldError::invalid(field, name, PORT_RANGE_MSG));
                }
                return;
            }
            let problems = port_name(name);
            if !problems.is_empty() {
                v.each(field, name, problems);
            } else if !ports.iter().any(|p| p.name.as_deref() == Some(name)) {
                v.push(FieldError::not_found(field, name, "no port of this container has this name"));
            }
        }
    }
}

fn http_get(v: &mut V, field: &str, g: &HTTPGetAction, ports: &[ContainerPort]) {
    check_port(v, &format!("{field}.port"), &g.port, ports);
    if let Some(s) = g.scheme.as_deref() {
        if !matches!(s, "HTTP" | "HTTPS") {
            v.push(FieldError::not_supported(format!("{field}.scheme"), s, &["HTTP", "HTTPS"]));
        }
    }
    for (i, h) in g.http_headers.iter().flatten().enumerate() {
        let ok = !h.name.is_empty() && h.name.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
        if !ok {
            v.push(FieldError::invalid(format!("{field}.httpHeaders[{i}].name"), &h.name, "a valid HTTP header must consist of alphanumeric characters or '-'"));
        }
    }
}

/// Counts handlers in Kubernetes' order; the second and later are reported as Forbidden.
fn handlers(v: &mut V, field: &str, present: &[(&str, bool)]) -> bool {
    let mut n = 0;
    for (name, is) in present {
        if *is {
            if n > 0 {
                v.push(FieldError::forbidden(format!("{field}.{name}"), "may not specify more than 1 handler type"));
            }
            n += 1;
        }
    }
    if n == 0 {
        v.push(FieldError::required(field, "must specify a handler type"));
    }
    n == 1
}

fn probe(v: &mut V, field: &str, p: &Probe, kind: &str, ports: &[ContainerPort]) {
    let present = [("exec", p.exec.is_some()), ("httpGet", p.http_get.is_some()), ("tcpSocket", p.tcp_socket.is_some()), ("grpc", p.grpc.is_some())];
    handlers(v, field, &present);
    if let Some(e) = &p.exec {
        if e.command.as_ref().is_none_or(|c| c.is_empty()) {
            v.push(FieldError::required(format!("{field}.exec.command"), ""));
        }
    }
    if let Some(g) = &p.http_get {
        http_get(v, &format!("{field}.httpGet"), g, ports);
    }
    if let Some(t) = &p.tcp_socket {
        check_port(v, &format!("{field}.tcpSocket.port"), &t.port, ports);
    }
    if let Some(g) = &p.grpc {
        if !(1..=65535).contains(&g.port) {
            v.push(FieldError::invalid(format!("{field}.grpc.port"), g.port, PORT_RANGE_MSG));
        }
    }
    for (name, val) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        v.non_negative(&format!("{field}.{name}"), val.map(i64::from));
    }
    if kind != "readinessProbe" {
        if let Some(s) = p.success_threshold.filter(|s| *s != 1) {
            v.push(FieldError::invalid(format!("{field}.successThreshold"), s, "must be 1"));
        }
    }
    if let Some(t) = p.termination_grace_period_seconds {
        if kind == "readinessProbe" {
            v.push(FieldError::invalid(format!("{field}.terminationGracePeriodSeconds"), t, "must not be set for readinessProbes"));
        } else if t <= 0 {
            v.push(FieldError::invalid(format!("{field}.terminationGracePeriodSeconds"), t, "must be greater than 0"));
        }
    }
}

fn lifecycle_handler(v: &mut V, field: &str, h: &LifecycleHandler, ports: &[ContainerPort], grace: i64) {
    let present = [("exec", h.exec.is_some()), ("httpGet", h.http_get.is_some()), ("tcpSocket", h.tcp_socket.is_some()), ("sleep", h.sleep.is_some())];
    handlers(v, field, &present);
    if let Some(e) = &h.exec {
        if e.command.as_ref().is_none_or(|c| c.is_empty()) {
            v.push(FieldError::required(format!("{field}.exec.command"), ""));
        }
    }
    if let Some(g) = &h.http_get {
        http_get(v, &format!("{field}.httpGet"), g, ports);
    }
    if let Some(t) = &h.tcp_socket {
        check_port(v, &format!("{field}.tcpSocket.port"), &t.port, ports);
    }
    if let Some(s) = &h.sleep {
        if s.seconds < 0 || s.seconds > grace {
            v.push(FieldError::invalid(
                format!("{field}.sleep.seconds"),
                s.seconds,
                format!("must be non-negative and less than terminationGracePeriodSeconds ({grace})"),
            ));
        }
    }
}

fn key_to_paths(v: &mut V, field: &str, items: &[KeyToPath]) {
    for (i, it) in items.iter().enumerate() {
        let ip = format!("{field}.items[{i}]");
        if it.key.is_empty() {
            v.push(FieldError::required(format!("{ip}.key"), ""));
        } else {
            v.each(&format!("{ip}.key"), &it.key, config_key(&it.key));
        }
        if it.path.is_empty() {
            v.push(FieldError::required(format!("{ip}.path"), ""));
        } else {
            v.relative_path(&format!("{ip}.path"), &it.path);
        }
        v.mode(&format!("{ip}.mode"), it.mode);
    }
}

fn downward_items(v: &mut V, field: &str, items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile]) {
    for (i, it) in items.iter().enumerate() {
        let ip = format!("{field}.items[{i}]");
        if it.path.is_empty() {
            v.push(FieldError::required(format!("{ip}.path"), ""));
        } else {
            v.relative_path(&format!("{ip}.path"), &it.path);
        }
        v.mode(&format!("{ip}.mode"), it.mode);
        match (&it.field_ref, &it.resource_field_ref) {
            (Some(_), Some(_)) => v.push(FieldError::invalid(&ip, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously")),
            (None, None) => v.push(FieldError::required(&ip, "one of fieldRef and resourceFieldRef is required")),
            (Some(f), None) => field_path(v, &format!("{ip}.fieldRef.fieldPath"), &f.field_path, f.api_version.as_deref(), VOLUME_FIELD_PATHS),
            (None, Some(r)) => {
                resource_field(v, &format!("{ip}.resourceFieldRef"), &r.resource, r.divisor.as_ref());
                if r.container_name.as_deref().unwrap_or("").is_empty() {
                    v.push(FieldError::required(format!("{ip}.resourceFieldRef.containerName"), ""));
                }
            }
        }
    }
}

/// Volume sources Berth serves; the rest need a cluster.
fn volume_sources(vol: &Volume) -> Vec<(&'static str, bool)> {
    vec![
        ("hostPath", vol.host_path.is_some()),
        ("emptyDir", vol.empty_dir.is_some()),
        ("secret", vol.secret.is_some()),
        ("configMap", vol.config_map.is_some()),
        ("downwardAPI", vol.downward_api.is_some()),
        ("projected", vol.projected.is_some()),
        ("persistentVolumeClaim", vol.persistent_volume_claim.is_some()),
        ("ephemeral", vol.ephemeral.is_some()),
        ("image", vol.image.is_some()),
        ("csi", vol.csi.is_some()),
        ("nfs", vol.nfs.is_some()),
        ("iscsi", vol.iscsi.is_some()),
        ("gitRepo", vol.git_repo.is_some()),
        ("cephfs", vol.cephfs.is_some()),
        ("rbd", vol.rbd.is_some()),
        ("fc", vol.fc.is_some()),
        ("flexVolume", vol.flex_volume.is_some()),
        ("glusterfs", vol.glusterfs.is_some()),
        ("awsElasticBlockStore", vol.aws_elastic_block_store.is_some()),
        ("azureDisk", vol.azure_disk.is_some()),
        ("azureFile", vol.azure_file.is_some()),
        ("cinder", vol.cinder.is_some()),
        ("flocker", vol.flocker.is_some()),
        ("gcePersistentDisk", vol.gce_persistent_disk.is_some()),
        ("photonPersistentDisk", vol.photon_persistent_disk.is_some()),
        ("portworxVolume", vol.portworx_volume.is_some()),
        ("quobyte", vol.quobyte.is_some()),
        ("scaleIO", vol.scale_io.is_some()),
        ("storageos", vol.storageos.is_some()),
        ("vsphereVolume", vol.vsphere_volume.is_some()),
    ]
}

const SERVED: &[&str] = &["hostPath", "emptyDir", "secret", "configMap", "downwardAPI", "projected"];

fn volumes(v: &mut V, vols: &[Volume], _spec: &PodSpec) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, vol) in vols.iter().enumerate() {
        let vp = format!("spec.volumes[{i}]");
        if vol.name.is_empty() {
            v.push(FieldError::required(format!("{vp}.name"), ""));
        } else {
            v.each(&format!("{vp}.name"), &vol.name, dns1123_label(&vol.name));
            if !names.insert(vol.name.clone()) {
                v.push(FieldError::duplicate(format!("{vp}.name"), &vol.name));
            }
        }
        let mut n = 0;
        for (src, is) in volume_sources(vol) {
            if !is {
                continue;
            }
            if n > 0 {
                v.push(FieldError::forbidden(format!("{vp}.{src}"), "may not specify more than 1 volume type"));
            } else if !SERVED.contains(&src) {
                v.push(FieldError::forbidden(
                    format!("{vp}.{src}"),
                    "not supported by Berth: a single node serves emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes",
                ));
            }
            n += 1;
        }
        if n == 0 {
            v.push(FieldError::required(&vp, "must specify a volume type"));
        }
        if let Some(e) = &vol.empty_dir {
            if let Some(m) = e.medium.as_deref().filter(|m| !m.is_empty()) {
                if m != "Memory" {
                    v.push(FieldError::not_supported(format!("{vp}.emptyDir.medium"), m, &["", "Memory"]));
                }
            }
            if let Some(q) = &e.size_limit {
                let field = format!("{vp}.emptyDir.sizeLimit");
                if let Some(p) = v.quantity(&field, q) {
                    if p.is_negative() {
                        v.push(FieldError::invalid(&field, &q.0, NON_NEGATIVE_MSG));
                    }
                }
            }
        }
        if let Some(h) = &vol.host_path {
            let hp = format!("{vp}.hostPath");
            if h.path.is_empty() {
                v.push(FieldError::required(format!("{hp}.path"), ""));
            } else if h.path.split('/').any(|c| c == "..") {
                v.push(FieldError::invalid(format!("{hp}.path"), &h.path, "must not contain '..'"));
            }
            let types = ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"];
            if let Some(t) = h.type_.as_deref().filter(|t| !types.contains(t)) {
                v.push(FieldError::not_supported(format!("{hp}.type"), t, &types));
            }
        }
        if let Some(c) = &vol.config_map {
            let cp = format!("{vp}.configMap");
            named_ref(v, &format!("{cp}.name"), &c.name);
            v.mode(&format!("{cp}.defaultMode"), c.default_mode);
            key_to_paths(v, &cp, c.items.as_deref().unwrap_or(&[]));
        }
        if let Some(s) = &vol.secret {
            let sp = format!("{vp}.secret");
            named_ref(v, &format!("{sp}.secretName"), s.secret_name.as_deref().unwrap_or(""));
            v.mode(&format!("{sp}.defaultMode"), s.default_mode);
            key_to_paths(v, &sp, s.items.as_deref().unwrap_or(&[]));
        }
        if let Some(d) = &vol.downward_api {
            let dp = format!("{vp}.downwardAPI");
            v.mode(&format!("{dp}.defaultMode"), d.default_mode);
            downward_items(v, &dp, d.items.as_deref().unwrap_or(&[]));
        }
        if let Some(p) = &vol.projected {
            let pp = format!("{vp}.projected");
            v.mode(&format!("{pp}.defaultMode"), p.default_mode);
            for (j, s) in p.sources.iter().flatten().enumerate() {
                let sp = format!("{pp}.sources[{j}]");
                let kinds = [
                    ("configMap", s.config_map.is_some()),
                    ("secret", s.secret.is_some()),
                    ("downwardAPI", s.downward_api.is_some()),
                    ("serviceAccountToken", s.service_account_token.is_some()),
                    ("clusterTrustBundle", s.cluster_trust_bundle.is_some()),
                    ("podCertificate", s.pod_certificate.is_some()),
                ];
                let mut n = 0;
                for (k, is) in kinds {
                    if is {
                        if n > 0 {
                            v.push(FieldError::forbidden(format!("{sp}.{k}"), "may not specify more than 1 volume type per source"));
                        } else if matches!(k, "clusterTrustBundle" | "podCertificate") {
                            v.push(FieldError::forbidden(format!("{sp}.{k}"), "not supported by Berth"));
                        }
                        n += 1;
                    }
                }
                if n == 0 {
                    v.push(FieldError::required(&sp, "must specify exactly 1 of: configMap, secret, downwardAPI, serviceAccountToken"));
                }
                if let Some(c) = &s.config_map {
                    named_ref(v, &format!("{sp}.configMap.name"), &c.name);
                    key_to_paths(v, &format!("{sp}.configMap"), c.items.as_deref().unwrap_or(&[]));
                }
                if let Some(c) = &s.secret {
                    named_ref(v, &format!("{sp}.secret.name"), &c.name);
                    key_to_paths(v, &format!("{sp}.secret"), c.items.as_deref().unwrap_or(&[]));
                }
                if let Some(d) = &s.downward_api {
                    downward_items(v, &format!("{sp}.downwardAPI"), d.items.as_deref().unwrap_or(&[]));
                }
                if let Some(t) = &s.service_account_token {
                    let tp = format!("{sp}.serviceAccountToken");
                    if t.path.is_empty() {
                        v.push(FieldError::required(format!("{tp}.path"), ""));
                    } else {
                        v.relative_path(&format!("{tp}.path"), &t.path);
                    }
                    match t.expiration_seconds {
                        Some(e) if e < 600 => v.push(FieldError::invalid(format!("{tp}.expirationSeconds"), e, "may not specify a duration less than 10 minutes")),
                        Some(e) if e > 1 << 32 => v.push(FieldError::invalid(format!("{tp}.expirationSeconds"), e, "may not specify a duration larger than 2^32 seconds")),
                        _ => {}
                    }
                }
            }
        }
    }
    names
}

/// Validates a ConfigMap (name, namespace, keys; no key in both data and binaryData).
pub fn validate_config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut v = V { errs: Vec::new() };
    object_meta(&mut v, &cm.metadata, true);
    let mut seen = HashSet::new();
    for k in cm.data.iter().flatten().map(|(k, _)| k) {
        v.each(&format!("data[{k}]"), k, config_key(k));
        seen.insert(k.clone());
    }
    for k in cm.binary_data.iter().flatten().map(|(k, _)| k) {
        v.each(&format!("binaryData[{k}]"), k, config_key(k));
        if seen.contains(k) {
            v.push(FieldError::invalid(format!("binaryData[{k}]"), k, "duplicate of key present in data"));
        }
    }
    v.errs
}

/// Validates a Secret (name, namespace, keys).
pub fn validate_secret(s: &Secret) -> Vec<FieldError> {
    let mut v = V { errs: Vec::new() };
    object_meta(&mut v, &s.metadata, true);
    for k in s.data.iter().flatten().map(|(k, _)| k) {
        v.each(&format!("data[{k}]"), k, config_key(k));
    }
    v.errs
}
