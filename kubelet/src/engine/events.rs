//! Pod events the way kubelet records them: reason, message, the object and
//! field they concern, with repeats folded into a count.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Events kept per pod.
const PER_POD: usize = 200;

pub struct Recorder {
    node: String,
    by_pod: Mutex<BTreeMap<String, VecDeque<Event>>>,
    seq: std::sync::atomic::AtomicU64,
}

/// What an event is about: a pod and maybe one of its containers.
pub struct Involved<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// `spec.containers{name}` or `spec.initContainers{name}`.
    pub field_path: Option<String>,
}

impl Recorder {
    pub fn new(node: &str) -> Recorder {
        Recorder { node: node.to_string(), by_pod: Mutex::new(BTreeMap::new()), seq: Default::default() }
    }

    pub fn normal(&self, obj: &Involved, reason: &str, message: impl Into<String>) {
        self.record(obj, "Normal", reason, message.into());
    }

    pub fn warning(&self, obj: &Involved, reason: &str, message: impl Into<String>) {
        self.record(obj, "Warning", reason, message.into());
    }

    fn record(&self, obj: &Involved, kind: &str, reason: &str, message: String) {
        tracing::info!(pod = %format!("{}/{}", obj.namespace, obj.name), reason, %message, "event");
        let now = Time(Timestamp::now());
        let key = format!("{}/{}", obj.namespace, obj.name);
        let mut all = self.by_pod.lock().expect("events lock");
        let list = all.entry(key).or_default();
        if let Some(e) = list.iter_mut().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.message.as_deref() == Some(message.as_str())
                && e.involved_object.field_path == obj.field_path
                && e.involved_object.uid.as_deref() == Some(obj.uid)
        }) {
            e.count = Some(e.count.unwrap_or(1) + 1);
            e.last_timestamp = Some(now);
            return;
        }
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        list.push_back(Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", obj.name, n)),
                namespace: Some(obj.namespace.to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(obj.name.to_string()),
                namespace: Some(obj.namespace.to_string()),
                uid: Some(obj.uid.to_string()),
                field_path: obj.field_path.clone(),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(kind.to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource { component: Some("berth".into()), host: Some(self.node.clone()) }),
            reporting_component: Some("berth".into()),
            reporting_instance: Some(self.node.clone()),
            ..Default::default()
        });
        if list.len() > PER_POD {
            list.pop_front();
        }
    }

    /// Events of a pod, oldest first.
    pub fn of_pod(&self, namespace: &str, name: &str) -> Vec<Event> {
        self.by_pod.lock().expect("events lock").get(&format!("{namespace}/{name}")).map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    /// Every event, oldest first per pod.
    pub fn all(&self) -> Vec<Event> {
        self.by_pod.lock().expect("events lock").values().flat_map(|l| l.iter().cloned()).collect()
    }

    /// Forgets a pod's events (after it is deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.by_pod.lock().expect("events lock").remove(&format!("{namespace}/{name}"));
    }
}
