//! Errors of CNI configuration loading and plugin invocation.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// A network configuration that cannot be used: names the file (if any)
/// and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI config {}: {field}: {reason}", source_name(.path, .network))]
pub struct ConfigError {
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// The network name, when known and there is no file.
    pub network: Option<String>,
    /// The JSON field at fault (`plugins[1].type`), or `file`.
    pub field: String,
    pub reason: String,
}

fn source_name(path: &Option<PathBuf>, network: &Option<String>) -> String {
    match (path, network) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(n)) => format!("of network {n:?}"),
        (None, None) => "(built in)".into(),
    }
}

/// The error a plugin reported (CNI spec: `code`, `msg`, `details` on
/// stdout with a non-zero exit), or what is known when it printed none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PluginError {
    /// The spec's error code; `None` when the plugin gave no error object.
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// What the CNI spec's well-known error codes mean.
pub fn code_meaning(code: u32) -> Option<&'static str> {
    Some(match code {
        1 => "incompatible CNI version",
        2 => "unsupported field in network configuration",
        3 => "container unknown or does not exist",
        4 => "invalid necessary environment variables",
        5 => "I/O failure",
        6 => "failed to decode content",
        7 => "invalid network config",
        11 => "try again later",
        50 => "plugin not available",
        51 => "plugin not available, existing containers may be limited",
        _ => return None,
    })
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = if self.msg.is_empty() { "no message" } else { self.msg.as_str() };
        f.write_str(msg)?;
        if let Some(c) = self.code {
            match code_meaning(c) {
                Some(m) => write!(f, " (code {c}: {m})")?,
                None => write!(f, " (code {c})")?,
            }
        }
        if !self.details.is_empty() {
            write!(f, "; details: {}", self.details)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CNI plugin {plugin:?} of network {network:?} not found in {dirs}")]
    PluginNotFound { plugin: String, network: String, dirs: String },
    #[error("CNI plugin {plugin} ({command}) of network {network:?} failed: {error}")]
    Plugin { plugin: String, network: String, command: String, error: Box<PluginError> },
    #[error("CNI plugin {plugin} ({command}) of network {network:?} did not finish within {secs}s and was killed")]
    Timeout { plugin: String, network: String, command: String, secs: u64 },
    #[error("CNI plugin {plugin} ({command}) of network {network:?}: running {path}: {source}")]
    Exec { plugin: String, network: String, command: String, path: PathBuf, source: std::io::Error },
    #[error("CNI plugin {plugin} ({command}) of network {network:?} gave a bad result: {reason}")]
    BadResult { plugin: String, network: String, command: String, reason: String },
    #[error("network {network:?} (cniVersion {version}) does not support {command}")]
    Unsupported { network: String, version: String, command: String },
    #[error("CNI plugin {plugin} of network {network:?} does not support cniVersion {version} (it supports {supported})")]
    VersionMismatch { plugin: String, network: String, version: String, supported: String },
    #[error("CNI cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("network namespace {path}: {source}")]
    Netns { path: PathBuf, source: std::io::Error },
}

impl CniError {
    /// Whether the configuration or the installed plugins are at fault (the
    /// network is not ready), rather than one invocation.
    pub fn is_not_ready(&self) -> bool {
        matches!(self, CniError::Config(_) | CniError::PluginNotFound { .. } | CniError::Unsupported { .. } | CniError::VersionMismatch { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_error_display() {
        let e = PluginError { code: Some(7), msg: "bad subnet".into(), details: "10.0.0.0/33".into() };
        assert_eq!(e.to_string(), "bad subnet (code 7: invalid network config); details: 10.0.0.0/33");
        let e = PluginError { code: Some(999), msg: "x".into(), details: String::new() };
        assert_eq!(e.to_string(), "x (code 999)");
        assert_eq!(PluginError::default().to_string(), "no message");
    }

    #[test]
    fn config_error_names_file_and_field() {
        let e = ConfigError { path: Some("/etc/cni/net.d/10-x.conflist".into()), network: None, field: "plugins[0].type".into(), reason: "missing".into() };
        assert_eq!(e.to_string(), "CNI config /etc/cni/net.d/10-x.conflist: plugins[0].type: missing");
        let e = ConfigError { path: None, network: Some("berth".into()), field: "name".into(), reason: "r".into() };
        assert_eq!(e.to_string(), "CNI config of network \"berth\": name: r");
    }
}
