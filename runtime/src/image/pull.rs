//! Pulling from OCI distribution registries, through configured mirrors.

use super::error::{ImageError, Result};
use super::manifest::Descriptor;
use super::reference::{self, Reference};
use super::store::ContentStore;
use super::{PullEvent, PullProgress};
use crate::config::Config;
use crate::digest::finish;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use sha2::{Digest as _, Sha256};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Media types asked for when fetching manifests.
pub const MANIFEST_TYPES: &[&str] = &[
    super::manifest::OCI_MANIFEST,
    super::manifest::OCI_INDEX,
    super::manifest::DOCKER_MANIFEST,
    super::manifest::DOCKER_LIST,
];

/// Registry credentials, from a CRI `AuthConfig` or the command line.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Credentials {
    /// From a CRI AuthConfig; `auth` is base64 `user:password`.
    pub fn from_cri(a: &cri_proto::v1::AuthConfig) -> std::result::Result<Self, String> {
        let mut c = Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
            identity_token: a.identity_token.clone(),
            registry_token: a.registry_token.clone(),
        };
        if !a.auth.is_empty() {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|e| format!("auth is not valid base64: {e}"))?;
            let s = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_string())?;
            let (u, p) = s.split_once(':').ok_or("auth must encode user:password")?;
            c.username = u.into();
            c.password = p.into();
        }
        Ok(c)
    }

    fn registry_auth(&self) -> RegistryAuth {
        if !self.registry_token.is_empty() {
            RegistryAuth::Bearer(self.registry_token.clone())
        } else if !self.identity_token.is_empty() {
            // Identity tokens are exchanged with the username "<token>", as docker's credential helpers do.
            RegistryAuth::Basic("<token>".into(), self.identity_token.clone())
        } else if !self.username.is_empty() {
            RegistryAuth::Basic(self.username.clone(), self.password.clone())
        } else {
            RegistryAuth::Anonymous
        }
    }
}

/// One place an image can be fetched from.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `host[:port]`
    pub host: String,
    /// Prepended to repository names (`prefix/library/busybox`).
    pub prefix: String,
    pub insecure: bool,
}

impl Endpoint {
    fn parse(s: &str, cfg: &Config) -> Endpoint {
        let (scheme, rest) = match s.split_once("://") {
            Some((sch, r)) => (Some(sch), r),
            None => (None, s),
        };
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let insecure = match scheme {
            Some("http") => true,
            Some(_) => false,
            None => cfg.is_insecure(host),
        };
        Endpoint { host: host.into(), prefix: prefix.trim_matches('/').into(), insecure }
    }

    /// The reference as this endpoint names it.
    fn remote(&self, r: &Reference) -> Reference {
        let repo = if self.prefix.is_empty() {
            r.repository().to_string()
        } else {
            format!("{}/{}", self.prefix, r.repository())
        };
        match r.digest() {
            Some(d) => Reference::with_digest(self.host.clone(), repo, d.into()),
            None => Reference::with_tag(self.host.clone(), repo, r.tag().unwrap_or("latest").into()),
        }
    }
}

/// Mirrors first, then the registry itself (or its configured endpoint).
pub fn endpoints(cfg: &Config, r: &Reference) -> Vec<Endpoint> {
    let host = r.registry();
    let rc = cfg.registry.get(host);
    let mut out: Vec<Endpoint> = rc.map(|c| c.mirrors.iter().map(|m| Endpoint::parse(m, cfg)).collect()).unwrap_or_default();
    if !rc.is_some_and(|c| c.mirrors_only && !c.mirrors.is_empty()) {
        out.push(match rc.and_then(|c| c.endpoint.as_deref()) {
            Some(e) => Endpoint::parse(e, cfg),
            None => Endpoint { host: host.into(), prefix: String::new(), insecure: cfg.is_insecure(host) },
        });
    }
    out
}

/// A connection to one endpoint for one image.
pub struct Remote {
    client: Client,
    auth: RegistryAuth,
    remote: Reference,
    /// The image as the user named it, for messages.
    pub reference: String,
    pub endpoint: Endpoint,
}

impl Remote {
    pub fn new(r: &Reference, endpoint: Endpoint, creds: &Credentials) -> Remote {
        let config = ClientConfig {
            protocol: if endpoint.insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        Remote {
            client: Client::new(config),
            auth: creds.registry_auth(),
            remote: endpoint.remote(r),
            reference: r.whole(),
            endpoint,
        }
    }

    fn map_err(&self, e: OciDistributionError) -> ImageError {
        let reference = self.reference.clone();
        let registry = self.endpoint.host.clone();
        let detail = e.to_string();
        match &e {
            OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => {
                ImageError::Unauthorized { reference, registry, detail }
            }
            OciDistributionError::ImageManifestNotFoundError(_) => ImageError::NotInRegistry { reference, registry, detail },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<_> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    ImageError::Unauthorized { reference, registry, detail }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown))
                {
                    ImageError::NotInRegistry { reference, registry, detail }
                } else {
                    ImageError::Registry { reference, registry, detail }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => ImageError::NotInRegistry { reference, registry, detail },
            OciDistributionError::ServerError { code: 401 | 403, .. } => ImageError::Unauthorized { reference, registry, detail },
            OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() => {
                ImageError::Unreachable { reference, registry, detail: error_chain(re) }
            }
            OciDistributionError::RequestError(re) => ImageError::Registry { reference, registry, detail: error_chain(re) },
            _ => ImageError::Registry { reference, registry, detail },
        }
    }

    /// Fetches the manifest (or index) the reference names: bytes and digest.
    /// A digest reference is checked against the bytes.
    pub async fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String)> {
        let r = match digest {
            Some(d) => self.remote.clone_with_digest(d.to_string()),
            None => self.remote.clone(),
        };
        let (bytes, _) = self.client.pull_manifest_raw(&r, &self.auth, MANIFEST_TYPES).await.map_err(|e| self.map_err(e))?;
        let actual = crate::digest::of_bytes(&bytes);
        if let Some(want) = r.digest() {
            if want != actual {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {}", self.reference),
                    digest: want.into(),
                    actual,
                    size: bytes.len() as u64,
                });
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Downloads one blob into the content store, verified, unless present.
    /// Concurrent fetches of one digest (in any process) download it once.
    pub async fn fetch_blob(&self, store: &ContentStore, desc: &Descriptor, what: &str, progress: &dyn PullProgress) -> Result<()> {
        if store.has(&desc.digest, Some(desc.size)) {
            progress.event(PullEvent::Exists { digest: &desc.digest, size: desc.size });
            return Ok(());
        }
        let lock_path = store.root().to_path_buf();
        let digest = desc.digest.clone();
        let _lock = tokio::task::spawn_blocking(move || ContentStore::open(&lock_path)?.lock_ingest(&digest))
            .await
            .expect("lock task")?;
        if store.has(&desc.digest, Some(desc.size)) {
            progress.event(PullEvent::Exists { digest: &desc.digest, size: desc.size });
            return Ok(());
        }
        progress.event(PullEvent::Downloading { digest: &desc.digest, size: desc.size });
        // Removed on every way out but a commit, including this future being
        // dropped (a sibling layer failed, or the caller gave up).
        let tmp = TmpFile(store.ingest_path(&desc.digest));
        let what = format!("{what} of {}", self.reference);
        let (n, actual) = self.download(&tmp.0, desc, &what, progress).await?;
        store.commit(&what, &tmp.0, &desc.digest, Some(desc.size), &actual, n)?;
        progress.event(PullEvent::Downloaded { digest: &desc.digest, size: n });
        Ok(())
    }

    async fn download(
        &self,
        tmp: &std::path::Path,
        desc: &Descriptor,
        what: &str,
        progress: &dyn PullProgress,
    ) -> Result<(u64, String)> {
        let mut stream = self
            .client
            .pull_blob_stream(&self.remote, desc.digest.as_str())
            .await
            .map_err(|e| self.map_err(e))?;
        let mut file = tokio::fs::File::create(tmp).await.map_err(ImageError::io(tmp))?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                // oci-client checks the digest itself at the end of the stream.
                let inner = e.get_ref().and_then(|i| i.downcast_ref::<DigestError>());
                if let Some(DigestError::VerificationError { actual, .. }) = inner {
                    return ImageError::DigestMismatch {
                        what: what.to_string(),
                        digest: desc.digest.clone(),
                        actual: actual.clone(),
                        size: n,
                    };
                }
                ImageError::Registry {
                    reference: self.reference.clone(),
                    registry: self.endpoint.host.clone(),
                    detail: format!("reading blob {}: {e}", desc.digest),
                }
            })?;
            n += chunk.len() as u64;
            if n > desc.size {
                return Err(ImageError::SizeMismatch {
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: n,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(ImageError::io(tmp))?;
            progress.event(PullEvent::Progress { digest: &desc.digest, done: n, total: desc.size });
        }
        file.sync_all().await.map_err(ImageError::io(tmp))?;
        Ok((n, finish(hasher)))
    }
}

/// A download in progress: removed on drop unless it was moved into the store.
struct TmpFile(std::path::PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        // After a commit the file is gone: NotFound is expected.
        let _ = std::fs::remove_file(&self.0);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Tries each endpoint in turn; returns the first that serves the manifest.
pub async fn resolve(cfg: &Config, r: &Reference, creds: &Credentials) -> Result<(Remote, Vec<u8>, String)> {
    let mut last = None;
    for ep in endpoints(cfg, r) {
        let remote = Remote::new(r, ep, creds);
        match remote.manifest(None).await {
            Ok((bytes, digest)) => return Ok((remote, bytes, digest)),
            Err(e) => {
                tracing::debug!(endpoint = %remote.endpoint.host, error = %e, "endpoint failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ImageError::NotFound { reference: reference::repo_name(r) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_then_registry() {
        let cfg = Config::parse(
            r#"
[registry."docker.io"]
mirrors = ["http://127.0.0.1:5000/hub", "mirror.example:443"]
[registry."registry.k8s.io"]
endpoint = "127.0.0.1:5001"
"#,
        )
        .unwrap();
        let r = reference::parse("busybox:1.36").unwrap();
        let eps = endpoints(&cfg, &r);
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0], Endpoint { host: "127.0.0.1:5000".into(), prefix: "hub".into(), insecure: true });
        assert!(!eps[1].insecure);
        assert_eq!(eps[2].host, "docker.io");
        assert_eq!(eps[0].remote(&r).whole(), "127.0.0.1:5000/hub/library/busybox:1.36");
        let p = reference::parse("registry.k8s.io/pause:3.9").unwrap();
        let eps = endpoints(&cfg, &p);
        assert_eq!(eps, vec![Endpoint { host: "127.0.0.1:5001".into(), prefix: String::new(), insecure: true }]);
    }

    #[test]
    fn cri_auth_decodes() {
        let a = cri_proto::v1::AuthConfig { auth: "YWxpY2U6czNjcjN0".into(), ..Default::default() };
        let c = Credentials::from_cri(&a).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice", "s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let bad = cri_proto::v1::AuthConfig { auth: "!!".into(), ..Default::default() };
        assert!(Credentials::from_cri(&bad).is_err());
    }
}
