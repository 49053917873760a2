//! `describe pod`, following kubectl's describe.go line by line.

use super::duration::{rfc1123z, since};
use super::tabwriter::TabWriter;
use crate::manifest::quantity::ParsedQuantity;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, EnvVar, Event, Pod, Probe, ResourceRequirements, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

/// kubectl's PrefixWriter: two spaces per level.
struct W {
    tw: TabWriter,
}

impl W {
    fn w(&mut self, level: usize, s: &str) {
        for _ in 0..level {
            self.tw.write("  ");
        }
        self.tw.write(s);
    }
}

/// Annotations kubectl leaves out.
const SKIP_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];
const MAX_ANNOTATION_LEN: usize = 140;

fn labels_multiline(w: &mut W, title: &str, labels: Option<&BTreeMap<String, String>>) {
    w.w(0, &format!("{title}:\t"));
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        w.w(0, "<none>\n");
        return;
    };
    for (i, (k, v)) in labels.iter().enumerate() {
        if i != 0 {
            w.w(0, "\t");
        }
        w.w(0, &format!("{k}={v}\n"));
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    }
}

fn annotations_multiline(w: &mut W, title: &str, annotations: Option<&BTreeMap<String, String>>) {
    w.w(0, &format!("{title}:\t"));
    let keys: Vec<(&String, &String)> = annotations.into_iter().flatten().filter(|(k, _)| !SKIP_ANNOTATIONS.contains(&k.as_str())).collect();
    if keys.is_empty() {
        w.w(0, "<none>\n");
        return;
    }
    for (i, (k, v)) in keys.into_iter().enumerate() {
        if i != 0 {
            w.w(0, "\t");
        }
        let value = v.strip_suffix('\n').unwrap_or(v);
        if value.len() + k.len() + 2 > MAX_ANNOTATION_LEN || value.contains('\n') {
            w.w(0, &format!("{k}:\n"));
            for s in value.split('\n') {
                w.w(0, &format!("\t  {}\n", shorten(s, MAX_ANNOTATION_LEN - 2)));
            }
        } else {
            w.w(0, &format!("{k}: {value}\n"));
        }
    }
}

fn tolerations_multiline(w: &mut W, title: &str, tolerations: &[Toleration]) {
    w.w(0, &format!("{title}:\t"));
    if tolerations.is_empty() {
        w.w(0, "<none>\n");
        return;
    }
    let mut ts: Vec<&Toleration> = tolerations.iter().collect();
    ts.sort_by(|a, b| a.key.cmp(&b.key));
    for (i, t) in ts.into_iter().enumerate() {
        if i != 0 {
            w.w(0, "\t");
        }
        let key = t.key.as_deref().unwrap_or("");
        let value = t.value.as_deref().unwrap_or("");
        let effect = t.effect.as_deref().unwrap_or("");
        let mut s = key.to_string();
        if !value.is_empty() {
            s.push_str(&format!("={value}"));
        }
        if !effect.is_empty() {
            s.push_str(&format!(":{effect}"));
        }
        if t.operator.as_deref() == Some("Exists") && value.is_empty() {
            s.push_str(if !key.is_empty() || !effect.is_empty() { " op=Exists" } else { "op=Exists" });
        }
        if let Some(secs) = t.toleration_seconds {
            s.push_str(&format!(" for {secs}s"));
        }
        w.w(0, &format!("{s}\n"));
    }
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn int_or_string(p: &IntOrString) -> String {
    match p {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// kubectl's `DescribeProbe`: `http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`.
pub fn describe_probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(0),
        p.period_seconds.unwrap_or(0),
        p.success_threshold.unwrap_or(0),
        p.failure_threshold.unwrap_or(0)
    );
    if let Some(e) = &p.exec {
        return format!("exec [{}] {attrs}", e.command.clone().unwrap_or_default().join(" "));
    }
    if let Some(g) = &p.http_get {
        let host = g.host.as_deref().unwrap_or("");
        let port = int_or_string(&g.port);
        let host = if port.is_empty() {
            host.to_string()
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let scheme = g.scheme.as_deref().unwrap_or("").to_lowercase();
        let path = g.path.as_deref().unwrap_or("");
        let url = if scheme.is_empty() { format!("//{host}{path}") } else { format!("{scheme}://{host}{path}") };
        return format!("http-get {url} {attrs}");
    }
    if let Some(t) = &p.tcp_socket {
        return format!("tcp-socket {}:{} {attrs}", t.host.as_deref().unwrap_or(""), int_or_string(&t.port));
    }
    if let Some(g) = &p.grpc {
        return format!("grpc <pod>:{} {} {attrs}", g.port, g.service.as_deref().unwrap_or(""));
    }
    format!("unknown {attrs}")
}

fn describe_state(w: &mut W, name: &str, state: Option<&ContainerState>) {
    let state = state.cloned().unwrap_or_default();
    if let Some(r) = &state.running {
        w.w(2, &format!("{name}:\tRunning\n"));
        w.w(3, &format!("Started:\t{}\n", r.started_at.as_ref().map(rfc1123z).unwrap_or_default()));
    } else if let Some(wt) = &state.waiting {
        w.w(2, &format!("{name}:\tWaiting\n"));
        if let Some(r) = wt.reason.as_deref().filter(|r| !r.is_empty()) {
            w.w(3, &format!("Reason:\t{r}\n"));
        }
    } else if let Some(t) = &state.terminated {
        w.w(2, &format!("{name}:\tTerminated\n"));
        if let Some(r) = t.reason.as_deref().filter(|r| !r.is_empty()) {
            w.w(3, &format!("Reason:\t{r}\n"));
        }
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            w.w(3, &format!("Message:\t{m}\n"));
        }
        w.w(3, &format!("Exit Code:\t{}\n", t.exit_code));
        if let Some(s) = t.signal.filter(|s| *s > 0) {
            w.w(3, &format!("Signal:\t{s}\n"));
        }
        w.w(3, &format!("Started:\t{}\n", t.started_at.as_ref().map(rfc1123z).unwrap_or_default()));
        w.w(3, &format!("Finished:\t{}\n", t.finished_at.as_ref().map(rfc1123z).unwrap_or_default()));
    } else {
        w.w(2, &format!("{name}:\tWaiting\n"));
    }
}

fn describe_resources(w: &mut W, r: Option<&ResourceRequirements>, level: usize) {
    let Some(r) = r else { return };
    for (title, list) in [("Limits", &r.limits), ("Requests", &r.requests)] {
        let Some(list) = list.as_ref().filter(|l| !l.is_empty()) else { continue };
        w.w(level, &format!("{title}:\n"));
        for (k, q) in list {
            w.w(level + 1, &format!("{k}:\t{}\n", q.0));
        }
    }
}

/// The value a `fieldRef` env var gets from the pod (kubectl's EnvValueRetriever).
fn field_value(pod: &Pod, path: &str) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let sub = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        path.strip_prefix(prefix).and_then(|r| r.strip_suffix("']")).and_then(|k| map.and_then(|m| m.get(k)).cloned())
    };
    match path {
        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
        "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" => status.pod_ip.unwrap_or_default(),
        "status.hostIP" => status.host_ip.unwrap_or_default(),
        "status.podIPs" => status.pod_ips.unwrap_or_default().into_iter().map(|p| p.ip).collect::<Vec<_>>().join(","),
        "status.hostIPs" => status.host_ips.unwrap_or_default().into_iter().map(|p| p.ip).collect::<Vec<_>>().join(","),
        _ => sub("metadata.labels['", pod.metadata.labels.as_ref())
            .or_else(|| sub("metadata.annotations['", pod.metadata.annotations.as_ref()))
            .unwrap_or_default(),
    }
}

/// kubectl's ExtractContainerResourceValue: the quantity divided by the divisor, rounded up.
fn resource_value(c: &Container, resource: &str, divisor: Option<&str>) -> String {
    let Some((which, name)) = resource.split_once('.') else { return String::new() };
    let res = c.resources.clone().unwrap_or_default();
    let list = if which == "limits" { res.limits } else { res.requests };
    let q = list.and_then(|l| l.get(name).cloned()).and_then(|q| ParsedQuantity::parse(&q.0).ok()).unwrap_or(ParsedQuantity::ZERO);
    let div = divisor.and_then(|d| ParsedQuantity::parse(d).ok()).filter(|d| d.nanos() > 0);
    let div = div.unwrap_or_else(|| ParsedQuantity::parse("1").unwrap());
    let v = q.nanos();
    let d = div.nanos();
    let n = v / d + if v % d != 0 { 1 } else { 0 };
    n.to_string()
}

fn describe_env(w: &mut W, pod: &Pod, c: &Container) {
    let env: &[EnvVar] = c.env.as_deref().unwrap_or(&[]);
    w.w(2, if env.is_empty() { "Environment:\t<none>\n" } else { "Environment:\n" });
    for e in env {
        let Some(from) = &e.value_from else {
            for (i, s) in e.value.as_deref().unwrap_or("").split('\n').enumerate() {
                if i == 0 {
                    w.w(3, &format!("{}:\t{s}\n", e.name));
                } else {
                    w.w(3, &format!("\t{s}\n"));
                }
            }
            continue;
        };
        if let Some(f) = &from.field_ref {
            let v = field_value(pod, &f.field_path);
            w.w(3, &format!("{}:\t{v} ({}:{})\n", e.name, f.api_version.as_deref().unwrap_or(""), f.field_path));
        } else if let Some(r) = &from.resource_field_ref {
            let mut v = resource_value(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()));
            if v == "0" && (r.resource == "limits.cpu" || r.resource == "limits.memory") {
                v = "node allocatable".into();
            }
            w.w(3, &format!("{}:\t{v} ({})\n", e.name, r.resource));
        } else if let Some(s) = &from.secret_key_ref {
            w.w(3, &format!("{}:\t<set to the key '{}' in secret '{}'>\tOptional: {}\n", e.name, s.key, s.name, s.optional.unwrap_or(false)));
        } else if let Some(s) = &from.config_map_key_ref {
            w.w(3, &format!("{}:\t<set to the key '{}' of config map '{}'>\tOptional: {}\n", e.name, s.key, s.name, s.optional.unwrap_or(false)));
        }
    }
}

fn describe_env_from(w: &mut W, c: &Container) {
    let Some(list) = c.env_from.as_ref().filter(|l| !l.is_empty()) else { return };
    w.w(2, "Environment Variables from:\n");
    for e in list {
        let (from, name, optional) = if let Some(r) = &e.config_map_ref {
            ("ConfigMap", r.name.as_str(), r.optional.unwrap_or(false))
        } else if let Some(r) = &e.secret_ref {
            ("Secret", r.name.as_str(), r.optional.unwrap_or(false))
        } else {
            ("", "", false)
        };
        match e.prefix.as_deref().filter(|p| !p.is_empty()) {
            None => w.w(3, &format!("{name}\t{from}\tOptional: {optional}\n")),
            Some(p) => w.w(3, &format!("{name}\t{from} with prefix '{p}'\tOptional: {optional}\n")),
        }
    }
}

fn describe_mounts(w: &mut W, c: &Container) {
    let mut mounts = c.volume_mounts.clone().unwrap_or_default();
    w.w(2, if mounts.is_empty() { "Mounts:\t<none>\n" } else { "Mounts:\n" });
    mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
    for m in mounts {
        let mut flags = vec![if m.read_only.unwrap_or(false) { "ro".to_string() } else { "rw".to_string() }];
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            flags.push(format!("path={sp:?}"));
        }
        w.w(3, &format!("{} from {} ({})\n", m.mount_path, m.name, flags.join(",")));
    }
}

fn ports(c: &Container, host: bool) -> String {
    c.ports
        .iter()
        .flatten()
        .map(|p| format!("{}/{}", if host { p.host_port.unwrap_or(0) } else { p.container_port }, p.protocol.as_deref().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_containers(w: &mut W, pod: &Pod, label: &str, containers: &[Container], statuses: &[ContainerStatus]) {
    w.w(0, &format!("{label}:{}\n", if containers.is_empty() { " <none>" } else { "" }));
    for c in containers {
        let status = statuses.iter().find(|s| s.name == c.name);
        w.w(1, &format!("{}:\n", c.name));
        if let Some(s) = status {
            w.w(2, &format!("Container ID:\t{}\n", s.container_id.as_deref().unwrap_or("")));
        }
        w.w(2, &format!("Image:\t{}\n", c.image.as_deref().unwrap_or("")));
        if let Some(s) = status {
            w.w(2, &format!("Image ID:\t{}\n", s.image_id));
        }
        for (host, one, many) in [(false, "Port", "Ports"), (true, "Host Port", "Host Ports")] {
            let p = ports(c, host);
            if p.contains(',') {
                w.w(2, &format!("{many}:\t{p}\n"));
            } else {
                w.w(2, &format!("{one}:\t{}\n", if p.is_empty() { "<none>" } else { &p }));
            }
        }
        if let Some(sp) = c.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref()) {
            w.w(2, &format!("SeccompProfile:\t{}\n", sp.type_));
            if sp.type_ == "Localhost" {
                w.w(3, &format!("LocalhostProfile:\t{}\n", sp.localhost_profile.as_deref().unwrap_or("")));
            }
        }
        for (title, list) in [("Command", &c.command), ("Args", &c.args)] {
            if let Some(list) = list.as_ref().filter(|l| !l.is_empty()) {
                w.w(2, &format!("{title}:\n"));
                for a in list {
                    for s in a.split('\n') {
                        w.w(3, &format!("{s}\n"));
                    }
                }
            }
        }
        if let Some(s) = status {
            describe_state(w, "State", s.state.as_ref());
            if s.last_state.as_ref().is_some_and(|l| l.terminated.is_some()) {
                describe_state(w, "Last State", s.last_state.as_ref());
            }
            w.w(2, &format!("Ready:\t{}\n", bool_str(s.ready)));
            w.w(2, &format!("Restart Count:\t{}\n", s.restart_count));
        }
        describe_resources(w, c.resources.as_ref(), 2);
        for (title, p) in [("Liveness", &c.liveness_probe), ("Readiness", &c.readiness_probe), ("Startup", &c.startup_probe)] {
            if let Some(p) = p {
                w.w(2, &format!("{title}:\t{}\n", describe_probe(p)));
            }
        }
        describe_env_from(w, c);
        describe_env(w, pod, c);
        describe_mounts(w, c);
    }
}

fn describe_volumes(w: &mut W, volumes: &[Volume]) {
    if volumes.is_empty() {
        w.w(0, "Volumes:\t<none>\n");
        return;
    }
    w.w(0, "Volumes:\n");
    for v in volumes {
        w.w(1, &format!("{}:\n", v.name));
        if let Some(h) = &v.host_path {
            let t = h.type_.as_deref().unwrap_or("<none>");
            w.w(2, &format!("Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{t}\n", h.path));
        } else if let Some(e) = &v.empty_dir {
            let size = e
                .size_limit
                .as_ref()
                .filter(|q| ParsedQuantity::parse(&q.0).is_ok_and(|p| p.nanos() > 0))
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "<unset>".into());
            w.w(
                2,
                &format!(
                    "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t{size}\n",
                    e.medium.as_deref().unwrap_or("")
                ),
            );
        } else if let Some(s) = &v.secret {
            w.w(
                2,
                &format!(
                    "Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}\n",
                    s.secret_name.as_deref().unwrap_or(""),
                    s.optional.unwrap_or(false)
                ),
            );
        } else if let Some(c) = &v.config_map {
            w.w(
                2,
                &format!("Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}\n", c.name, c.optional.unwrap_or(false)),
            );
        } else if let Some(d) = &v.downward_api {
            w.w(2, "Type:\tDownwardAPI (a volume populated by information about the pod)\n    Items:\n");
            for i in d.items.iter().flatten() {
                if let Some(f) = &i.field_ref {
                    w.w(3, &format!("{} -> {}\n", f.field_path, i.path));
                }
                if let Some(r) = &i.resource_field_ref {
                    w.w(3, &format!("{} -> {}\n", r.resource, i.path));
                }
            }
        } else if let Some(p) = &v.projected {
            w.w(2, "Type:\tProjected (a volume that contains injected data from multiple sources)\n");
            for s in p.sources.iter().flatten() {
                if let Some(sec) = &s.secret {
                    w.w(2, &format!("SecretName:\t{}\n    Optional:\t{}\n", sec.name, sec.optional.unwrap_or(false)));
                } else if s.downward_api.is_some() {
                    w.w(2, "DownwardAPI:\ttrue\n");
                } else if let Some(cm) = &s.config_map {
                    w.w(2, &format!("ConfigMapName:\t{}\n    Optional:\t{}\n", cm.name, cm.optional.unwrap_or(false)));
                } else if let Some(t) = &s.service_account_token {
                    w.w(2, &format!("TokenExpirationSeconds:\t{}\n", t.expiration_seconds.unwrap_or(0)));
                }
            }
        } else if let Some(c) = &v.persistent_volume_claim {
            w.w(
                2,
                &format!(
                    "Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:\t{}\n    ReadOnly:\t{}\n",
                    c.claim_name,
                    c.read_only.unwrap_or(false)
                ),
            );
        } else if let Some(i) = &v.image {
            w.w(
                2,
                &format!(
                    "Type:\tImage (a container image or OCI artifact)\n    Reference:\t{}\n    PullPolicy:\t{}\n",
                    i.reference.as_deref().unwrap_or(""),
                    i.pull_policy.as_deref().unwrap_or("")
                ),
            );
        } else {
            w.w(1, "<unknown>\n");
        }
    }
}

/// The QoS class: the status' when set, else computed as Kubernetes does.
pub fn qos_class(pod: &Pod) -> String {
    if let Some(q) = pod.status.as_ref().and_then(|s| s.qos_class.clone()).filter(|q| !q.is_empty()) {
        return q;
    }
    crate::engine::qos::qos_class(pod).to_string()
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
}

fn describe_events(w: &mut W, events: &[Event], now: Timestamp) {
    if events.is_empty() {
        w.w(0, "Events:\t<none>\n");
        return;
    }
    let mut events: Vec<&Event> = events.iter().collect();
    events.sort_by_key(|e| event_time(e));
    w.w(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n");
    w.w(1, "----\t------\t----\t----\t-------\n");
    for e in events {
        let first = match &e.event_time {
            Some(t) => super::duration::human_duration(super::duration::seconds_between(t.0, now)),
            None => since(e.first_timestamp.as_ref(), now),
        };
        let interval = if let Some(s) = &e.series {
            let last = s.last_observed_time.as_ref().map(|t| super::duration::human_duration(super::duration::seconds_between(t.0, now)));
            format!("{} (x{} over {first})", last.unwrap_or_else(|| "<unknown>".into()), s.count.unwrap_or(0))
        } else if e.count.unwrap_or(0) > 1 {
            format!("{} (x{} over {first})", since(e.last_timestamp.as_ref(), now), e.count.unwrap_or(0))
        } else {
            first
        };
        let source = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| e.reporting_component.clone())
            .unwrap_or_default();
        w.w(
            1,
            &format!(
                "{}\t{}\t{interval}\t{source}\t{}\n",
                e.type_.as_deref().unwrap_or(""),
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("").trim()
            ),
        );
    }
}

/// `describe pod` output. `events` are the pod's (`None` leaves the Events section out, as
/// `--show-events=false`); `now` is the time ages are measured against.
pub fn describe_pod(pod: &Pod, events: Option<&[Event]>, now: Timestamp) -> String {
    let mut w = W { tw: TabWriter::for_describe() };
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let meta = &pod.metadata;
    w.w(0, &format!("Name:\t{}\n", meta.name.as_deref().unwrap_or("")));
    w.w(0, &format!("Namespace:\t{}\n", meta.namespace.as_deref().unwrap_or("")));
    if let Some(p) = spec.priority {
        w.w(0, &format!("Priority:\t{p}\n"));
    }
    if let Some(p) = spec.priority_class_name.as_deref().filter(|s| !s.is_empty()) {
        w.w(0, &format!("Priority Class Name:\t{p}\n"));
    }
    if let Some(r) = spec.runtime_class_name.as_deref().filter(|s| !s.is_empty()) {
        w.w(0, &format!("Runtime Class Name:\t{r}\n"));
    }
    if let Some(sa) = spec.service_account_name.as_deref().filter(|s| !s.is_empty()) {
        w.w(0, &format!("Service Account:\t{sa}\n"));
    }
    match spec.node_name.as_deref().filter(|s| !s.is_empty()) {
        None => w.w(0, "Node:\t<none>\n"),
        Some(n) => w.w(0, &format!("Node:\t{n}/{}\n", status.host_ip.as_deref().unwrap_or(""))),
    }
    if let Some(t) = &status.start_time {
        w.w(0, &format!("Start Time:\t{}\n", rfc1123z(t)));
    }
    labels_multiline(&mut w, "Labels", meta.labels.as_ref());
    annotations_multiline(&mut w, "Annotations", meta.annotations.as_ref());
    let phase = status.phase.clone().unwrap_or_default();
    match &meta.deletion_timestamp {
        Some(d) if phase != "Failed" && phase != "Succeeded" => {
            w.w(0, &format!("Status:\tTerminating (lasts {})\n", since(Some(d), now)));
            w.w(0, &format!("Termination Grace Period:\t{}s\n", meta.deletion_grace_period_seconds.unwrap_or(0)));
        }
        _ => w.w(0, &format!("Status:\t{phase}\n")),
    }
    if let Some(r) = status.reason.as_deref().filter(|s| !s.is_empty()) {
        w.w(0, &format!("Reason:\t{r}\n"));
    }
    if let Some(m) = status.message.as_deref().filter(|s| !s.is_empty()) {
        w.w(0, &format!("Message:\t{m}\n"));
    }
    if let Some(sp) = spec.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref()) {
        w.w(0, &format!("SeccompProfile:\t{}\n", sp.type_));
        if sp.type_ == "Localhost" {
            w.w(0, &format!("LocalhostProfile:\t{}\n", sp.localhost_profile.as_deref().unwrap_or("")));
        }
    }
    w.w(0, &format!("IP:\t{}\n", status.pod_ip.as_deref().unwrap_or("")));
    match status.pod_ips.as_deref().filter(|l| !l.is_empty()) {
        None => w.w(0, "IPs:\t<none>\n"),
        Some(ips) => {
            w.w(0, "IPs:\n");
            for ip in ips {
                w.w(1, &format!("IP:\t{}\n", ip.ip));
            }
        }
    }
    if let Some(owner) = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
        w.w(0, &format!("Controlled By:\t{}/{}\n", owner.kind, owner.name));
    }
    if let Some(n) = status.nominated_node_name.as_deref().filter(|s| !s.is_empty()) {
        w.w(0, &format!("NominatedNodeName:\t{n}\n"));
    }
    if let Some(r) = &spec.resources {
        w.w(0, "Resources:\n");
        describe_resources(&mut w, Some(r), 1);
    }
    if let Some(init) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
        describe_containers(&mut w, pod, "Init Containers", init, status.init_container_statuses.as_deref().unwrap_or(&[]));
    }
    describe_containers(&mut w, pod, "Containers", &spec.containers, status.container_statuses.as_deref().unwrap_or(&[]));
    let conditions = status.conditions.clone().unwrap_or_default();
    if let Some(gates) = spec.readiness_gates.as_ref().filter(|g| !g.is_empty()) {
        w.w(0, "Readiness Gates:\n  Type\tStatus\n");
        for g in gates {
            let s = conditions.iter().find(|c| c.type_ == g.condition_type).map(|c| c.status.clone()).unwrap_or_else(|| "<none>".into());
            w.w(1, &format!("{} \t{s} \n", g.condition_type));
        }
    }
    if !conditions.is_empty() {
        w.w(0, "Conditions:\n  Type\tStatus\n");
        for c in &conditions {
            w.w(1, &format!("{} \t{} \n", c.type_, c.status));
        }
    }
    describe_volumes(&mut w, spec.volumes.as_deref().unwrap_or(&[]));
    w.w(0, &format!("QoS Class:\t{}\n", qos_class(pod)));
    labels_multiline(&mut w, "Node-Selectors", spec.node_selector.as_ref());
    tolerations_multiline(&mut w, "Tolerations", spec.tolerations.as_deref().unwrap_or(&[]));
    if let Some(events) = events {
        describe_events(&mut w, events, now);
    }
    w.tw.finish()
}
