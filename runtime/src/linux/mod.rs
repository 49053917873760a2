//! Linux primitives for the built-in OCI executor: namespaces, mounts,
//! cgroups, seccomp, capabilities, consoles and process plumbing.
//!
//! All `unsafe` code of the executor lives under this module.

pub mod caps;
pub mod cgroups;
pub mod console;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod ready;
pub mod seccomp;
pub mod syscalls;

use std::fmt;

/// A failed system operation, with what was being done.
#[derive(Debug)]
pub struct SysError {
    pub context: String,
    pub source: std::io::Error,
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Print "No such file or directory" rather than io's "(os error 2)" form.
        match self.source.raw_os_error() {
            Some(n) => write!(f, "{}: {}", self.context, nix::errno::Errno::from_raw(n).desc()),
            None => write!(f, "{}: {}", self.context, self.source),
        }
    }
}

impl std::error::Error for SysError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl SysError {
    pub fn new(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        SysError { context: context.into(), source: source.into() }
    }

    /// An error without an OS cause.
    pub fn msg(context: impl Into<String>) -> Self {
        let context = context.into();
        SysError { source: std::io::Error::other(context.clone()), context }
    }

    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub type SysResult<T> = Result<T, SysError>;

/// Attaches context to io and errno results.
pub trait Context<T> {
    fn ctx<C: Into<String>, F: FnOnce() -> C>(self, f: F) -> SysResult<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx<C: Into<String>, F: FnOnce() -> C>(self, f: F) -> SysResult<T> {
        self.map_err(|e| SysError::new(f(), e))
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx<C: Into<String>, F: FnOnce() -> C>(self, f: F) -> SysResult<T> {
        self.map_err(|e| SysError::new(f(), std::io::Error::from_raw_os_error(e as i32)))
    }
}
