//! Manifest errors: where (file, document, object, field) and what.

use std::fmt;
use std::path::PathBuf;

/// Where an object came from: a file and its 1-based document number; for an object inside a
/// `List`, its 0-based index in `items`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)?;
        if let Some(i) = self.item {
            write!(f, " (items[{i}])")?;
        }
        Ok(())
    }
}

/// The object an error is about, e.g. `Pod default/web`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} {}/{}", self.kind, self.namespace, name),
            None => write!(f, "{} {}/<no name>", self.kind, self.namespace),
        }
    }
}

/// The kind of a field error, worded as Kubernetes' `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldErrorType {
    Required,
    Invalid,
    Duplicate,
    NotFound,
    NotSupported,
    Forbidden,
    TooLong,
    /// A key the object's schema does not have (Kubernetes' strict decoding rejects it).
    UnknownField,
}

impl fmt::Display for FieldErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldErrorType::Required => "Required value",
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::NotFound => "Not found",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::UnknownField => "Unknown field",
        })
    }
}

/// One problem with one field, displayed like Kubernetes: `spec.containers[0].image: Required value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldError {
    pub kind: FieldErrorType,
    /// The field path, e.g. `spec.containers[1].ports[0].containerPort`.
    pub field: String,
    /// The offending value, already formatted (strings quoted), if it is shown.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn new(kind: FieldErrorType, field: impl Into<String>, value: Option<String>, detail: impl Into<String>) -> Self {
        FieldError { kind, field: field.into(), value, detail: detail.into() }
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Required, field, None, detail)
    }
    pub fn invalid(field: impl Into<String>, value: impl fmt::Debug, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Invalid, field, Some(format!("{value:?}")), detail)
    }
    pub fn duplicate(field: impl Into<String>, value: impl fmt::Debug) -> Self {
        Self::new(FieldErrorType::Duplicate, field, Some(format!("{value:?}")), "")
    }
    pub fn not_found(field: impl Into<String>, value: impl fmt::Debug, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::NotFound, field, Some(format!("{value:?}")), detail)
    }
    pub fn not_supported(field: impl Into<String>, value: impl fmt::Debug, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            FieldErrorType::NotSupported,
            field,
            Some(format!("{value:?}")),
            format!("supported values: {}", list.join(", ")),
        )
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Forbidden, field, None, detail)
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(FieldErrorType::TooLong, field, None, format!("must have at most {max} bytes"))
    }
    pub fn unknown(field: impl Into<String>) -> Self {
        Self::new(FieldErrorType::UnknownField, field, None, "")
    }

    /// The problem without the field path (Kubernetes' `ErrorBody`).
    pub fn body(&self) -> String {
        let mut s = self.kind.to_string();
        if let Some(v) = &self.value {
            if !matches!(self.kind, FieldErrorType::Required | FieldErrorType::Forbidden | FieldErrorType::TooLong) {
                s.push_str(": ");
                s.push_str(v);
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// What went wrong with a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Problem {
    /// The file could not be read (or the directory listed).
    Read(String),
    /// YAML or JSON syntax.
    Syntax(String),
    /// An apiVersion/kind that standalone mode does not run.
    UnsupportedKind(String),
    /// The document does not fit the object's schema (wrong type, bad base64, ...); `field` is the path.
    Decode { field: String, message: String },
    /// A validation failure (unknown fields included).
    Field(FieldError),
}

/// One error in a manifest, displayed as
/// `pod.yaml: document 2: Pod default/web: spec.containers[1].image: Required value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based; `None` for errors about the whole file.
    pub document: Option<usize>,
    /// Index in a `List`'s items.
    pub item: Option<usize>,
    pub object: Option<ObjectRef>,
    pub problem: Problem,
}

impl ManifestError {
    pub(crate) fn file(file: impl Into<PathBuf>, problem: Problem) -> Self {
        ManifestError { file: file.into(), document: None, item: None, object: None, problem }
    }

    pub(crate) fn at(origin: &Origin, object: Option<ObjectRef>, problem: Problem) -> Self {
        ManifestError {
            file: origin.file.clone(),
            document: Some(origin.document),
            item: origin.item,
            object,
            problem,
        }
    }

    /// The field path the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match &self.problem {
            Problem::Decode { field, .. } => Some(field),
            Problem::Field(e) => Some(&e.field),
            _ => None,
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(d) = self.document {
            write!(f, ": document {d}")?;
        }
        if let Some(i) = self.item {
            write!(f, " (items[{i}])")?;
        }
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        match &self.problem {
            Problem::Read(m) => write!(f, ": cannot read: {m}"),
            Problem::Syntax(m) => write!(f, ": {m}"),
            Problem::UnsupportedKind(m) => write!(f, ": {m}"),
            Problem::Decode { field, message } if field.is_empty() => write!(f, ": {message}"),
            Problem::Decode { field, message } => write!(f, ": {field}: {message}"),
            Problem::Field(e) => write!(f, ": {e}"),
        }
    }
}

/// An object that was found but is not valid; nothing of it may be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidObject {
    pub origin: Origin,
    pub object: Option<ObjectRef>,
    /// At least one.
    pub errors: Vec<ManifestError>,
}

impl fmt::Display for InvalidObject {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
