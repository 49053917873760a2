//! Errors of the image service. Each names the image reference, digest or
//! path concerned and the cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {reference:?} not found")]
    NotFound { reference: String },
    #[error("image {reference:?} not found in registry {registry}: {detail}")]
    NotInRegistry { reference: String, registry: String, detail: String },
    #[error("pulling {reference:?}: registry {registry} refused the credentials: {detail}")]
    Unauthorized { reference: String, registry: String, detail: String },
    #[error("pulling {reference:?}: registry {registry} unreachable: {detail}")]
    Unreachable { reference: String, registry: String, detail: String },
    #[error("pulling {reference:?} from {registry}: {detail}")]
    Registry { reference: String, registry: String, detail: String },
    #[error("{what} {digest}: content does not match its digest (got {actual}, {size} bytes); rejected")]
    DigestMismatch { what: String, digest: String, actual: String, size: u64 },
    #[error("{what} {digest}: expected {expected} bytes, got {actual}; rejected")]
    SizeMismatch { what: String, digest: String, expected: u64, actual: u64 },
    #[error("image {reference:?}: no manifest for platform {platform} (available: {available})")]
    NoPlatform { reference: String, platform: String, available: String },
    #[error("image {reference:?}: unsupported media type {media_type:?}")]
    UnsupportedMediaType { reference: String, media_type: String },
    #[error("image {reference:?}: malformed {what}: {detail}")]
    Malformed { reference: String, what: String, detail: String },
    #[error("image {reference:?}: layer {digest}: {source}")]
    Unpack {
        reference: String,
        digest: String,
        #[source]
        source: super::unpack::UnpackError,
    },
    #[error("importing {path}: {detail}")]
    Import { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    /// Whether the error says the image or something it names does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ImageError::NotFound { .. } | ImageError::NotInRegistry { .. })
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
