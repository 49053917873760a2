//! Service account tokens for projected volumes.
//!
//! The engine asks a [`TokenIssuer`] for tokens bound to a pod. In standalone
//! mode Berth is the issuer ([`LocalIssuer`]): it signs ES256 JWTs with a key
//! kept in `<root>/issuer/` and publishes there what a workload needs to
//! verify them:
//!
//! - `jwks.json`: the public key as a JSON Web Key Set (what the apiserver
//!   serves at `/openid/v1/jwks`),
//! - `openid-configuration.json`: the OIDC discovery document
//!   (`/.well-known/openid-configuration`),
//! - `sa.pub`: the public key in PEM,
//! - `ca.crt`: Berth's own self-signed CA certificate; pods get it as `ca.crt`
//!   (the `kube-root-ca.crt` ConfigMap of every namespace).
//!
//! Node mode gets tokens from the apiserver's TokenRequest API behind the
//! same trait.

use anyhow::Context;
use base64::Engine;
use futures::future::BoxFuture;
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kubernetes' default issuer (and API audience) of a cluster.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A token for a pod's service account (TokenRequest's spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    /// Empty: the issuer's API audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
    pub node_name: String,
}

/// An issued token.
#[derive(Clone)]
pub struct Token {
    pub token: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("issued_at", &self.issued_at).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Tokens older than this are refreshed whatever their expiry (kubelet's rule).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl Token {
    /// When kubelet would refresh it: at 80% of its life, or after 24 hours.
    pub fn refresh_at(&self) -> SystemTime {
        let life = self.expires_at.duration_since(self.issued_at).unwrap_or_default();
        self.issued_at + (life.mul_f64(0.8)).min(MAX_AGE)
    }
}

/// Where service account tokens and the cluster CA come from.
pub trait TokenIssuer: Send + Sync {
    /// A token bound to the pod in the request.
    fn request(&self, req: TokenRequest) -> BoxFuture<'_, anyhow::Result<Token>>;
    /// The CA bundle pods get as `ca.crt` (PEM).
    fn root_ca(&self) -> anyhow::Result<String>;
}

/// Berth as the token issuer: a signing key and a CA in a state directory.
pub struct LocalIssuer {
    dir: PathBuf,
    issuer: String,
    /// Tokens live no longer than this (the apiserver's
    /// `--service-account-max-token-expiration`).
    max_expiration: Option<Duration>,
    keys: Mutex<Option<Arc<Keys>>>,
}

struct Keys {
    encoding: jsonwebtoken::EncodingKey,
    kid: String,
    ca_pem: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a [String],
    exp: u64,
    iat: u64,
    nbf: u64,
    iss: &'a str,
    jti: String,
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubeClaims<'a>,
}

#[derive(Serialize)]
struct KubeClaims<'a> {
    namespace: &'a str,
    node: Ref<'a>,
    pod: Ref<'a>,
    serviceaccount: Ref<'a>,
}

#[derive(Serialize)]
struct Ref<'a> {
    name: &'a str,
    uid: String,
}

impl LocalIssuer {
    /// An issuer keeping its keys in `dir` (created, with keys, on first use
    /// or right away when possible).
    pub fn new(dir: PathBuf, issuer: &str, max_expiration: Option<Duration>) -> LocalIssuer {
        let me = LocalIssuer { dir, issuer: issuer.to_string(), max_expiration, keys: Mutex::new(None) };
        if let Err(e) = me.keys() {
            tracing::warn!(dir = %me.dir.display(), "service account token issuer: {e:#}");
        }
        me
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The directory holding the keys and the published documents.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn keys(&self) -> anyhow::Result<Arc<Keys>> {
        let mut k = self.keys.lock().expect("issuer lock");
        if let Some(k) = &*k {
            return Ok(k.clone());
        }
        let loaded = Arc::new(load_or_create(&self.dir, &self.issuer)?);
        *k = Some(loaded.clone());
        Ok(loaded)
    }

    /// Signs a token at `now`.
    pub fn sign(&self, req: &TokenRequest, now: SystemTime) -> anyhow::Result<Token> {
        let keys = self.keys()?;
        let mut life = Duration::from_secs(req.expiration_seconds.max(1) as u64);
        if let Some(max) = self.max_expiration {
            life = life.min(max);
        }
        let iat = now.duration_since(UNIX_EPOCH)?.as_secs();
        let exp = iat + life.as_secs().max(1);
        let audiences = if req.audiences.is_empty() { vec![self.issuer.clone()] } else { req.audiences.clone() };
        let claims = Claims {
            aud: &audiences,
            exp,
            iat,
            nbf: iat,
            iss: &self.issuer,
            jti: uuid(&rand::random::<[u8; 16]>()),
            sub: format!("system:serviceaccount:{}:{}", req.namespace, req.service_account),
            kubernetes: KubeClaims {
                namespace: &req.namespace,
                node: Ref { name: &req.node_name, uid: derived_uid(&keys.kid, &["node", &req.node_name]) },
                pod: Ref { name: &req.pod_name, uid: req.pod_uid.clone() },
                serviceaccount: Ref {
                    name: &req.service_account,
                    uid: derived_uid(&keys.kid, &["serviceaccount", &req.namespace, &req.service_account]),
                },
            },
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(keys.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &keys.encoding).context("signing the token")?;
        Ok(Token { token, issued_at: UNIX_EPOCH + Duration::from_secs(iat), expires_at: UNIX_EPOCH + Duration::from_secs(exp) })
    }
}

impl TokenIssuer for LocalIssuer {
    fn request(&self, req: TokenRequest) -> BoxFuture<'_, anyhow::Result<Token>> {
        Box::pin(async move { self.sign(&req, SystemTime::now()) })
    }

    fn root_ca(&self) -> anyhow::Result<String> {
        Ok(self.keys()?.ca_pem.clone())
    }
}

/// A random UUID (version 4) from 16 random bytes.
fn uuid(b: &[u8; 16]) -> String {
    let mut b = *b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A stable UUID-shaped identifier for objects standalone mode has no record
/// of (service accounts, the node): a hash of the key ID and the names.
fn derived_uid(kid: &str, parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(kid.as_bytes());
    for p in parts {
        h.update([0]);
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Writes a file through a temporary name and a rename, with `mode`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Loads the signing key and CA from `dir`, creating what is missing, and
/// (re)writes the published documents.
fn load_or_create(dir: &Path, issuer: &str) -> anyhow::Result<Keys> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let load_key = |name: &str| -> anyhow::Result<rcgen::KeyPair> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(pem) => rcgen::KeyPair::from_pem(&pem).with_context(|| format!("reading the key {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = rcgen::KeyPair::generate_for(alg).context("generating a key")?;
                write_file(&path, k.serialize_pem().as_bytes(), 0o600)?;
                Ok(k)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    let sa = load_key("sa.key")?;
    let ca_key = load_key("ca.key")?;
    let ca_path = dir.join("ca.crt");
    let ca_pem = match std::fs::read_to_string(&ca_path) {
        Ok(pem) if pem.contains("BEGIN CERTIFICATE") => pem,
        _ => {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign, rcgen::KeyUsagePurpose::DigitalSignature];
            params.distinguished_name = rcgen::DistinguishedName::new();
            let node = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
            params.distinguished_name.push(rcgen::DnType::CommonName, format!("berth-ca@{node}"));
            let now = rcgen::date_time_ymd(2000, 1, 1);
            let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
            params.not_before = now + Duration::from_secs((secs - 946_684_800 - 3600).max(0) as u64);
            params.not_after = params.not_before + Duration::from_secs(10 * 365 * 24 * 3600);
            let cert = params.self_signed(&ca_key).context("creating the CA certificate")?;
            let pem = cert.pem();
            write_file(&ca_path, pem.as_bytes(), 0o644)?;
            pem
        }
    };
    let spki = rcgen::PublicKeyData::subject_public_key_info(&sa);
    use sha2::Digest;
    let kid = b64url(&sha2::Sha256::digest(&spki));
    let point = sa.public_key_raw();
    anyhow::ensure!(point.len() == 65 && point[0] == 4, "unexpected P-256 public key encoding");
    let jwks = serde_json::json!({
        "keys": [{
            "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..]),
        }]
    });
    let discovery = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/openid/v1/jwks", issuer.trim_end_matches('/')),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    write_file(&dir.join("jwks.json"), serde_json::to_string_pretty(&jwks)?.as_bytes(), 0o644)?;
    write_file(&dir.join("openid-configuration.json"), serde_json::to_string_pretty(&discovery)?.as_bytes(), 0o644)?;
    write_file(&dir.join("sa.pub"), sa.public_key_pem().as_bytes(), 0o644)?;
    Ok(Keys { encoding: jsonwebtoken::EncodingKey::from_ec_der(sa.serialized_der()), kid, ca_pem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> TokenRequest {
        TokenRequest {
            namespace: "prod".into(),
            service_account: "builder".into(),
            audiences: vec!["vault".into()],
            expiration_seconds: 600,
            pod_name: "web".into(),
            pod_uid: "0123".into(),
            node_name: "n1".into(),
        }
    }

    fn jwk(dir: &Path) -> jsonwebtoken::DecodingKey {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&std::fs::read(dir.join("jwks.json")).unwrap()).unwrap();
        jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap()
    }

    #[test]
    fn signs_tokens_that_verify_with_the_published_key() {
        let d = tempfile::tempdir().unwrap();
        let iss = LocalIssuer::new(d.path().join("issuer"), "https://berth.test", None);
        let now = SystemTime::now();
        let t = iss.sign(&req(), now).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["vault"]);
        v.set_issuer(&["https://berth.test"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&t.token, &jwk(&d.path().join("issuer")), &v).unwrap();
        let c = data.claims;
        assert_eq!(c["sub"], "system:serviceaccount:prod:builder");
        assert_eq!(c["aud"], serde_json::json!(["vault"]));
        assert_eq!(c["kubernetes.io"]["namespace"], "prod");
        assert_eq!(c["kubernetes.io"]["pod"]["name"], "web");
        assert_eq!(c["kubernetes.io"]["pod"]["uid"], "0123");
        assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "builder");
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);
        assert_eq!(c["nbf"], c["iat"]);
        assert_eq!(data.header.kid.as_deref().map(str::len), Some(43));
        // The refresh point is at 80% of the life.
        assert_eq!(t.refresh_at().duration_since(t.issued_at).unwrap(), Duration::from_secs(480));

        // Another audience is refused; a token from another key too.
        let mut other = v.clone();
        other.set_audience(&["nope"]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&t.token, &jwk(&d.path().join("issuer")), &other).is_err());
        let d2 = tempfile::tempdir().unwrap();
        let _ = LocalIssuer::new(d2.path().to_path_buf(), "https://berth.test", None);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&t.token, &jwk(d2.path()), &v).is_err());
    }

    #[test]
    fn keeps_its_key_and_caps_lifetimes() {
        let d = tempfile::tempdir().unwrap();
        let a = LocalIssuer::new(d.path().to_path_buf(), DEFAULT_ISSUER, None);
        let ca = a.root_ca().unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::read(d.path().join("sa.key")).unwrap();
        assert_eq!(std::fs::metadata(d.path().join("sa.key")).unwrap().permissions().mode() & 0o777, 0o600);
        // A second issuer on the same directory uses the same keys and CA.
        let b = LocalIssuer::new(d.path().to_path_buf(), DEFAULT_ISSUER, Some(Duration::from_secs(30)));
        assert_eq!(b.root_ca().unwrap(), ca);
        assert_eq!(std::fs::read(d.path().join("sa.key")).unwrap(), key);
        let mut r = req();
        r.audiences.clear();
        let t = b.sign(&r, SystemTime::now()).unwrap();
        assert_eq!(t.expires_at.duration_since(t.issued_at).unwrap(), Duration::from_secs(30));
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        // No audience asked for: the issuer's API audience.
        v.set_audience(&[DEFAULT_ISSUER]);
        jsonwebtoken::decode::<serde_json::Value>(&t.token, &jwk(d.path()), &v).unwrap();
        let disc: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path().join("openid-configuration.json")).unwrap()).unwrap();
        assert_eq!(disc["issuer"], DEFAULT_ISSUER);
        assert_eq!(disc["jwks_uri"], format!("{DEFAULT_ISSUER}/openid/v1/jwks"));
    }

    #[test]
    fn refreshes_at_most_daily() {
        let t = Token { token: String::new(), issued_at: UNIX_EPOCH, expires_at: UNIX_EPOCH + Duration::from_secs(365 * 24 * 3600) };
        assert_eq!(t.refresh_at(), UNIX_EPOCH + MAX_AGE);
    }
}
