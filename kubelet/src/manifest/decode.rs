//! From bytes to typed objects: documents, kinds, strict (unknown-field) decoding.

use super::error::{FieldError, ManifestError, ObjectRef, Origin, Problem};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// A document split out of a file: its number and its JSON value, or a syntax error.
pub(crate) fn documents(file: &Path, text: &str) -> Vec<(usize, Result<Value, ManifestError>)> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let json = trimmed.starts_with('{') || file.extension().is_some_and(|e| e == "json") && !trimmed.is_empty();
    let mut out = Vec::new();
    if json {
        let stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Value>();
        for (i, doc) in stream.enumerate() {
            let n = i + 1;
            match doc {
                Ok(v) => out.push((n, Ok(v))),
                Err(e) => {
                    out.push((n, Err(syntax(file, n, format!("invalid JSON: {e}")))));
                    break;
                }
            }
        }
    } else {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
            match Value::deserialize(doc) {
                Ok(mut v) => {
                    octal_modes(&mut v);
                    out.push((n, Ok(v)))
                }
                Err(e) => {
                    out.push((n, Err(syntax(file, n, format!("invalid YAML: {e}")))));
                    break;
                }
            }
        }
    }
    out
}

/// File modes written the YAML 1.1 way (`defaultMode: 0644`), as Kubernetes
/// reads them: YAML 1.2 makes a leading-zero scalar a string.
fn octal_modes(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if matches!(k.as_str(), "mode" | "defaultMode") {
                    if let Some(n) = x.as_str().filter(|s| s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| (b'0'..=b'7').contains(&b))).and_then(|s| i64::from_str_radix(s, 8).ok()) {
                        *x = Value::from(n);
                        continue;
                    }
                }
                octal_modes(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

fn syntax(file: &Path, document: usize, msg: String) -> ManifestError {
    ManifestError { file: file.to_path_buf(), document: Some(document), item: None, object: None, problem: Problem::Syntax(msg) }
}

/// A raw object of a kind standalone mode handles.
pub(crate) enum RawObject {
    Pod(Value),
    ConfigMap(Value),
    Secret(Value),
}

/// Splits a document into objects (a `List` gives its items), or errors for unsupported kinds.
pub(crate) fn objects(origin: Origin, value: Value, out: &mut Vec<(Origin, Result<RawObject, ManifestError>)>) {
    if value.is_null() {
        return; // an empty document
    }
    let Some(map) = value.as_object() else {
        out.push((origin.clone(), Err(ManifestError::at(&origin, None, Problem::Syntax("the document is not an object".into())))));
        return;
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let object = object_ref(&kind, &value);
    let err = |p: Problem| ManifestError::at(&origin, object.clone(), p);
    if kind.is_empty() {
        out.push((origin.clone(), Err(err(Problem::Field(FieldError::required("kind", ""))))));
        return;
    }
    if kind.ends_with("List") && origin.item.is_none() {
        match map.get("items") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let o = Origin { item: Some(i), ..origin.clone() };
                    objects(o, item.clone(), out);
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => out.push((origin.clone(), Err(err(Problem::Decode { field: "items".into(), message: "must be a list".into() })))),
        }
        return;
    }
    if api_version.is_empty() {
        out.push((origin.clone(), Err(err(Problem::Field(FieldError::required("apiVersion", ""))))));
        return;
    }
    let raw = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => RawObject::Pod(value),
        ("v1", "ConfigMap") => RawObject::ConfigMap(value),
        ("v1", "Secret") => RawObject::Secret(value),
        (v, k @ ("Pod" | "ConfigMap" | "Secret")) => {
            let e = err(Problem::UnsupportedKind(format!("apiVersion {v:?} is not supported for kind {k}: expected \"v1\"")));
            out.push((origin, Err(e)));
            return;
        }
        (v, k) => {
            let e = err(Problem::UnsupportedKind(format!(
                "kind {k:?} (apiVersion {v:?}) is not supported here: standalone mode runs Pods and reads ConfigMaps and Secrets (v1)"
            )));
            out.push((origin, Err(e)));
            return;
        }
    };
    out.push((origin, Ok(raw)));
}

/// `Kind namespace/name` from the raw document (namespace defaulted).
pub(crate) fn object_ref(kind: &str, value: &Value) -> Option<ObjectRef> {
    if kind.is_empty() {
        return None;
    }
    let meta = value.get("metadata");
    let s = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    Some(ObjectRef { kind: kind.into(), namespace: s("namespace").unwrap_or_else(|| "default".into()), name: s("name") })
}

/// Decodes strictly: a type error names its field path; keys the schema does not have are
/// reported by path (k8s-openapi ignores them, so the decoded object is serialized back and the
/// key sets compared).
pub(crate) fn decode_strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, Vec<Problem>> {
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        vec![Problem::Decode { field, message: e.into_inner().to_string() }]
    })?;
    let back = serde_json::to_value(&typed).map_err(|e| vec![Problem::Decode { field: String::new(), message: e.to_string() }])?;
    let mut unknown = Vec::new();
    unknown_keys(value, &back, String::new(), &mut unknown);
    if unknown.is_empty() {
        Ok(typed)
    } else {
        Err(unknown.into_iter().map(|p| Problem::Field(FieldError::unknown(p))).collect())
    }
}

fn unknown_keys(input: &Value, known: &Value, path: String, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    Some(bv) => unknown_keys(v, bv, p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Object(a), _) if !a.is_empty() => {
            // An object where the schema has a scalar/none: every key is unknown.
            for k in a.keys() {
                out.push(if path.is_empty() { k.clone() } else { format!("{path}.{k}") });
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                unknown_keys(x, y, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_reported_by_path() {
        let v = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labelz": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "i"}, {"name": "d", "image": "i", "imagePullPolicyy": "Always",
                     "ports": [{"containerPort": 80, "nmae": "http"}]}], "volumes": []}
        });
        let errs = decode_strict::<Pod>(&v).err().unwrap();
        let paths: Vec<String> = errs
            .iter()
            .map(|p| match p {
                Problem::Field(f) => f.to_string(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            paths,
            [
                "metadata.labelz: Unknown field",
                "spec.containers[1].imagePullPolicyy: Unknown field",
                "spec.containers[1].ports[0].nmae: Unknown field"
            ]
        );
    }

    #[test]
    fn yaml_octal_modes() {
        let docs = documents(Path::new("p.yaml"), "spec:\n  volumes:\n  - secret: {defaultMode: 0600, items: [{key: a, path: a, mode: 0444}, {key: b, path: '0600', mode: 420}]}\n");
        let v = docs[0].1.as_ref().unwrap();
        let s = &v["spec"]["volumes"][0]["secret"];
        assert_eq!(s["defaultMode"], 0o600);
        assert_eq!(s["items"][0]["mode"], 0o444);
        assert_eq!(s["items"][1]["mode"], 420);
        assert_eq!(s["items"][1]["path"], "0600");
    }

    #[test]
    fn type_errors_name_the_field() {
        let v = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]}});
        match &decode_strict::<Pod>(&v).err().unwrap()[0] {
            Problem::Decode { field, message } => {
                assert_eq!(field, "spec.containers[0].ports[0].containerPort");
                assert!(message.contains("invalid type"), "{message}");
            }
            p => panic!("{p:?}"),
        }
    }
}
