//! The Kubernetes Container Runtime Interface, version 1 (`runtime.v1`).
//!
//! Messages, the `RuntimeService` and `ImageService` servers and clients are
//! generated at build time from `proto/api.proto`.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// The encoded `FileDescriptorSet` of `api.proto`, for reflection and tests.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cri_descriptor.bin"));

/// Shown in place of a secret in Debug output and logs.
pub const REDACTED: &str = "<redacted>";

fn redact(s: &str) -> &str {
    if s.is_empty() {
        ""
    } else {
        REDACTED
    }
}

impl std::fmt::Debug for v1::AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("auth", &redact(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::v1::*;

    #[test]
    fn auth_config_debug_hides_secrets() {
        let auth = AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            auth: "YWxpY2U6aHVudGVyMg==".into(),
            server_address: "registry.example".into(),
            identity_token: "id-tok-123".into(),
            registry_token: "reg-tok-456".into(),
        };
        let req = PullImageRequest { image: None, auth: Some(auth), sandbox_config: None };
        for text in [format!("{req:?}"), format!("{req:#?}")] {
            for secret in ["hunter2", "YWxpY2U6aHVudGVyMg==", "id-tok-123", "reg-tok-456"] {
                assert!(!text.contains(secret), "secret {secret} leaked in {text}");
            }
            assert!(text.contains("alice") && text.contains("registry.example"));
            assert!(text.contains(super::REDACTED));
        }
    }
}
