//! Standalone manifests: Pods, ConfigMaps and Secrets from YAML or JSON files.
//!
//! [`load_file`] / [`load_paths`] parse (multi-document YAML, JSON, `List`s), decode strictly
//! (unknown fields are errors), apply the apiserver's defaults, give each pod a stable static-pod
//! UID and validate. Every object stands alone: an invalid pod is an `Err` in [`Loaded::pods`]
//! and does not stop the others. [`watch::ManifestWatcher`] follows a manifest directory.

mod decode;
pub mod defaults;
mod error;
pub mod quantity;
pub mod validate;
pub mod watch;

pub use defaults::{static_pod_uid, CONFIG_HASH_ANNOTATION, CONFIG_SOURCE_ANNOTATION};
pub use error::{FieldError, FieldErrorType, InvalidObject, ManifestError, ObjectRef, Origin, Problem};
pub use watch::{ManifestEvent, ManifestWatcher, WatchOptions};


use decode::RawObject;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a set of manifests holds. Its `Debug` output names Secrets but never shows their data.
#[derive(Clone, Default)]
pub struct Loaded {
    /// Every Pod, in file and document order: valid and defaulted (UID set, status cleared), or
    /// why it is invalid — then nothing of it may be started.
    pub pods: Vec<Result<Pod, InvalidObject>>,
    /// Valid ConfigMaps, namespace defaulted.
    pub config_maps: Vec<ConfigMap>,
    /// Valid Secrets, namespace and type defaulted, `stringData` merged into `data`.
    pub secrets: Vec<Secret>,
    /// Problems that are no pod's: unreadable files, syntax errors, unsupported kinds, invalid
    /// ConfigMaps and Secrets.
    pub errors: Vec<ManifestError>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: Vec<String> = self
            .secrets
            .iter()
            .map(|s| format!("{}/{}", s.metadata.namespace.as_deref().unwrap_or(""), s.metadata.name.as_deref().unwrap_or("")))
            .collect();
        f.debug_struct("Loaded")
            .field("pods", &self.pods)
            .field("config_maps", &self.config_maps)
            .field("secrets", &secrets)
            .field("errors", &self.errors)
            .finish()
    }
}

impl Loaded {
    /// The pods that may run.
    pub fn valid_pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter_map(|p| p.as_ref().ok())
    }

    /// Every error, the invalid pods' included, in order.
    pub fn all_errors(&self) -> impl Iterator<Item = &ManifestError> {
        self.pods.iter().filter_map(|p| p.as_ref().err()).flat_map(|i| i.errors.iter()).chain(self.errors.iter())
    }

    pub fn has_errors(&self) -> bool {
        self.all_errors().next().is_some()
    }

    /// Appends another load (no duplicate check; [`load_paths`] does that).
    pub fn extend(&mut self, other: Loaded) {
        self.pods.extend(other.pods);
        self.config_maps.extend(other.config_maps);
        self.secrets.extend(other.secrets);
        self.errors.extend(other.errors);
    }
}

/// Whether a file name is a manifest: `*.yaml`, `*.yml`, `*.json`, not hidden.
pub fn is_manifest_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && [".yaml", ".yml", ".json"].iter().any(|e| name.len() > e.len() && name.ends_with(e))
}

/// The source string a pod's UID is derived from: the canonical path when there is one.
fn source_of(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// Loads one file.
pub fn load_file(path: impl AsRef<Path>) -> Loaded {
    let path = path.as_ref();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str_with_source(path, &text, &source_of(path)),
            Err(_) => {
                let mut l = Loaded::default();
                l.errors.push(ManifestError::file(path, Problem::Syntax("not UTF-8 text".into())));
                l
            }
        },
        Err(e) => {
            let mut l = Loaded::default();
            l.errors.push(ManifestError::file(path, Problem::Read(e.to_string())));
            l
        }
    }
}

/// Loads manifests from text; `name` is used in errors and as the UID source (e.g. `<stdin>`).
pub fn load_str(name: impl AsRef<Path>, text: &str) -> Loaded {
    let name = name.as_ref();
    load_str_with_source(name, text, &name.display().to_string())
}

fn load_str_with_source(file: &Path, text: &str, source: &str) -> Loaded {
    let mut loaded = Loaded::default();
    let mut raws = Vec::new();
    for (n, doc) in decode::documents(file, text) {
        match doc {
            Ok(value) => decode::objects(Origin { file: file.to_path_buf(), document: n, item: None }, value, &mut raws),
            Err(e) => loaded.errors.push(e),
        }
    }
    for (origin, raw) in raws {
        match raw {
            Err(e) => loaded.errors.push(e),
            Ok(RawObject::Pod(v)) => loaded.pods.push(pod(&origin, &v, source)),
            Ok(RawObject::ConfigMap(v)) => match config_map(&origin, &v) {
                Ok(cm) => loaded.config_maps.push(cm),
                Err(es) => loaded.errors.extend(es),
            },
            Ok(RawObject::Secret(v)) => match secret(&origin, &v) {
                Ok(s) => loaded.secrets.push(s),
                Err(es) => loaded.errors.extend(es),
            },
        }
    }
    reject_duplicates(&mut loaded);
    loaded
}

fn problems_to_errors(origin: &Origin, object: &Option<ObjectRef>, problems: Vec<Problem>) -> Vec<ManifestError> {
    problems.into_iter().map(|p| ManifestError::at(origin, object.clone(), p)).collect()
}

#[allow(clippy::result_large_err)]
fn pod(origin: &Origin, value: &serde_json::Value, source: &str) -> Result<Pod, InvalidObject> {
    let object = decode::object_ref("Pod", value);
    let invalid = |errors| InvalidObject { origin: origin.clone(), object: object.clone(), errors };
    let mut pod: Pod = decode::decode_strict(value).map_err(|ps| invalid(problems_to_errors(origin, &object, ps)))?;
    defaults::apply_pod_defaults(&mut pod, source);
    annotate_origin(&mut pod.metadata, origin);
    let errs = validate::validate_pod(&pod);
    if errs.is_empty() {
        Ok(pod)
    } else {
        Err(invalid(problems_to_errors(origin, &object, errs.into_iter().map(Problem::Field).collect())))
    }
}

fn config_map(origin: &Origin, value: &serde_json::Value) -> Result<ConfigMap, Vec<ManifestError>> {
    let object = decode::object_ref("ConfigMap", value);
    let mut cm: ConfigMap = decode::decode_strict(value).map_err(|ps| problems_to_errors(origin, &object, ps))?;
    if cm.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        cm.metadata.namespace = Some("default".into());
    }
    let errs = validate::validate_config_map(&cm);
    if errs.is_empty() {
        annotate_origin(&mut cm.metadata, origin);
        Ok(cm)
    } else {
        Err(problems_to_errors(origin, &object, errs.into_iter().map(Problem::Field).collect()))
    }
}

fn secret(origin: &Origin, value: &serde_json::Value) -> Result<Secret, Vec<ManifestError>> {
    let object = decode::object_ref("Secret", value);
    let mut s: Secret = decode::decode_strict(value).map_err(|ps| {
        // Decode messages can quote the value: never a Secret's.
        let ps = ps
            .into_iter()
            .map(|p| match p {
                Problem::Decode { field, .. } if field.starts_with("data.") => {
                    Problem::Decode { field, message: "invalid value: must be base64-encoded".into() }
                }
                Problem::Decode { field, .. } if field.starts_with("stringData.") => {
                    Problem::Decode { field, message: "invalid value: must be a string".into() }
                }
                p => p,
            })
            .collect();
        problems_to_errors(origin, &object, ps)
    })?;
    if s.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        s.metadata.namespace = Some("default".into());
    }
    if s.type_.as_deref().unwrap_or("").is_empty() {
        s.type_ = Some("Opaque".into());
    }
    if let Some(string_data) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    let errs = validate::validate_secret(&s);
    if errs.is_empty() {
        annotate_origin(&mut s.metadata, origin);
        Ok(s)
    } else {
        Err(problems_to_errors(origin, &object, errs.into_iter().map(Problem::Field).collect()))
    }
}

/// Annotation on every loaded object naming its manifest: `FILE#DOCUMENT`, `FILE#DOCUMENT/ITEM`
/// inside a `List`. Set after the UID is computed.
pub const ORIGIN_ANNOTATION: &str = "berth.dev/manifest";

fn annotate_origin(meta: &mut ObjectMeta, origin: &Origin) {
    let mut s = format!("{}#{}", origin.file.display(), origin.document);
    if let Some(i) = origin.item {
        s.push_str(&format!("/{i}"));
    }
    meta.annotations.get_or_insert_with(Default::default).insert(ORIGIN_ANNOTATION.into(), s);
}

/// Where a loaded object came from, from its [`ORIGIN_ANNOTATION`].
pub fn origin_of(meta: &ObjectMeta) -> Option<Origin> {
    let s = meta.annotations.as_ref()?.get(ORIGIN_ANNOTATION)?;
    let (file, rest) = s.rsplit_once('#')?;
    let (doc, item) = match rest.split_once('/') {
        Some((d, i)) => (d, Some(i.parse().ok()?)),
        None => (rest, None),
    };
    Some(Origin { file: PathBuf::from(file), document: doc.parse().ok()?, item })
}

fn ns_name(meta: &ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

fn duplicate(kind: &str, meta: &ObjectMeta, field: &str, value: &str, first: &ObjectMeta) -> InvalidObject {
    let origin = origin_of(meta).unwrap_or(Origin { file: PathBuf::new(), document: 0, item: None });
    let (namespace, name) = ns_name(meta);
    let object = Some(ObjectRef { kind: kind.into(), namespace, name: Some(name) });
    let detail = match origin_of(first) {
        Some(o) => format!("already defined in {o}"),
        None => "already defined".into(),
    };
    let e = FieldError::new(FieldErrorType::Duplicate, field, Some(format!("{value:?}")), detail);
    InvalidObject { origin: origin.clone(), object: object.clone(), errors: vec![ManifestError::at(&origin, object, Problem::Field(e))] }
}

/// A later pod with the namespace/name (or UID) of an earlier one is invalid, as kubelet ignores
/// duplicate static pods; so are later ConfigMaps and Secrets with a taken name.
fn reject_duplicates(loaded: &mut Loaded) {
    let mut names: HashMap<(String, String), ObjectMeta> = HashMap::new();
    let mut uids: HashMap<String, ObjectMeta> = HashMap::new();
    for p in loaded.pods.iter_mut() {
        let Ok(pod) = p else { continue };
        let key = ns_name(&pod.metadata);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(first) = names.get(&key) {
            *p = Err(duplicate("Pod", &pod.metadata, "metadata.name", &key.1, first));
        } else if let Some(first) = uids.get(&uid) {
            *p = Err(duplicate("Pod", &pod.metadata, "metadata.uid", &uid, first));
        } else {
            names.insert(key, pod.metadata.clone());
            uids.insert(uid, pod.metadata.clone());
        }
    }
    let mut seen: HashMap<(String, String), ObjectMeta> = HashMap::new();
    let mut errors = Vec::new();
    loaded.config_maps.retain(|c| match seen.get(&ns_name(&c.metadata)) {
        Some(first) => {
            errors.extend(duplicate("ConfigMap", &c.metadata, "metadata.name", &ns_name(&c.metadata).1, first).errors);
            false
        }
        None => {
            seen.insert(ns_name(&c.metadata), c.metadata.clone());
            true
        }
    });
    seen.clear();
    loaded.secrets.retain(|c| match seen.get(&ns_name(&c.metadata)) {
        Some(first) => {
            errors.extend(duplicate("Secret", &c.metadata, "metadata.name", &ns_name(&c.metadata).1, first).errors);
            false
        }
        None => {
            seen.insert(ns_name(&c.metadata), c.metadata.clone());
            true
        }
    });
    loaded.errors.extend(errors);
}

/// Loads files and directories (a directory gives its `*.yaml`, `*.yml` and `*.json` files, in
/// name order). Pods with the same namespace/name as an earlier one are invalid.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut all = Loaded::default();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|f| is_manifest_name(f) && f.is_file()).collect();
                    files.sort();
                    for f in files {
                        all.extend(load_file(&f));
                    }
                }
                Err(e) => all.errors.push(ManifestError::file(p, Problem::Read(e.to_string()))),
            }
        } else {
            all.extend(load_file(p));
        }
    }
    reject_duplicates(&mut all);
    all
}

#[cfg(test)]
mod tests;
