//! The one place errors become gRPC statuses.

use crate::container::ContainerError;
use crate::image::ImageError;
use tonic::{Code, Status};

pub fn image(e: ImageError) -> Status {
    let code = match &e {
        ImageError::InvalidReference { .. } | ImageError::NoPlatform { .. } | ImageError::UnsupportedMediaType { .. } => Code::InvalidArgument,
        ImageError::NotFound { .. } | ImageError::NotInRegistry { .. } => Code::NotFound,
        ImageError::Unauthorized { .. } => Code::PermissionDenied,
        ImageError::Unreachable { .. } => Code::Unavailable,
        ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. } | ImageError::Malformed { .. } | ImageError::Unpack { .. } => Code::DataLoss,
        ImageError::Registry { .. } => Code::Unknown,
        ImageError::Import { .. } | ImageError::Io { .. } => Code::Internal,
    };
    Status::new(code, e.to_string())
}

pub fn container(e: ContainerError) -> Status {
    let code = match &e {
        ContainerError::NotFound(_) | ContainerError::ImageNotFound(_) => Code::NotFound,
        ContainerError::NameInUse { .. } => Code::AlreadyExists,
        // The request is fine; the host's mount is not ready for it.
        ContainerError::Spec { source: crate::spec::SpecError::MountPropagation { .. }, .. } => Code::FailedPrecondition,
        ContainerError::Invalid { .. } | ContainerError::Spec { .. } => Code::InvalidArgument,
        ContainerError::BadState { .. } => Code::FailedPrecondition,
        ContainerError::Image(i) => return image_ref(i),
        ContainerError::Exec { .. } | ContainerError::Create { .. } => Code::Unknown,
        ContainerError::Io { .. } => Code::Internal,
    };
    Status::new(code, e.to_string())
}

fn image_ref(e: &ImageError) -> Status {
    let code = match e {
        ImageError::InvalidReference { .. } => Code::InvalidArgument,
        ImageError::NotFound { .. } => Code::NotFound,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A required field that is missing.
pub fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

pub fn sandbox(e: crate::sandbox::SandboxError) -> Status {
    use crate::sandbox::SandboxError as E;
    let code = match &e {
        E::NotFound(_) => Code::NotFound,
        E::NameInUse { .. } => Code::AlreadyExists,
        E::Invalid { .. } => Code::InvalidArgument,
        E::NotReady(_) => Code::FailedPrecondition,
        E::Pause { .. } => Code::Unknown,
        E::Cgroup { .. } | E::Io { .. } => Code::Internal,
        // No usable configuration or plugin: the node is not ready for pods.
        E::NetworkNotReady(_) => Code::FailedPrecondition,
        E::Network { source, .. } if source.is_not_ready() => Code::FailedPrecondition,
        // A plugin failed (containerd answers Unknown too).
        E::Network { .. } => Code::Unknown,
    };
    Status::new(code, e.to_string())
}
