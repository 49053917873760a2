//! OCI and Docker schema-2 manifests and indexes, and platform choice.

use super::error::{ImageError, Result};
use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest or index.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image { media_type: String, config: Descriptor, layers: Vec<Descriptor> },
    Index { media_type: String, manifests: Vec<Descriptor> },
}

impl Manifest {
    /// Parses manifest bytes; `media_type` is the one the registry or layout
    /// gave, used when the document does not carry its own.
    pub fn parse(reference: &str, bytes: &[u8], media_type: Option<&str>) -> Result<Manifest> {
        let malformed = |detail: String| ImageError::Malformed { reference: reference.into(), what: "manifest".into(), detail };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let mt = raw.media_type.clone().or(media_type.map(str::to_string)).unwrap_or_default();
        if mt.starts_with(DOCKER_SCHEMA1) || raw.schema_version == Some(1) {
            return Err(ImageError::UnsupportedMediaType { reference: reference.into(), media_type: "docker schema 1 manifest".into() });
        }
        if let Some(manifests) = raw.manifests {
            let media_type = if mt.is_empty() { OCI_INDEX.into() } else { mt };
            return Ok(Manifest::Index { media_type, manifests });
        }
        match (raw.config, raw.layers) {
            (Some(config), Some(layers)) => {
                let media_type = if mt.is_empty() { OCI_MANIFEST.into() } else { mt };
                if ![OCI_MANIFEST, DOCKER_MANIFEST].contains(&media_type.as_str()) {
                    return Err(ImageError::UnsupportedMediaType { reference: reference.into(), media_type });
                }
                for l in &layers {
                    if !is_layer_type(&l.media_type) {
                        return Err(ImageError::UnsupportedMediaType { reference: reference.into(), media_type: l.media_type.clone() });
                    }
                }
                Ok(Manifest::Image { media_type, config, layers })
            }
            _ => Err(malformed("neither an image manifest nor an index".into())),
        }
    }
}

fn is_layer_type(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.v1.tar") || mt.starts_with("application/vnd.docker.image.rootfs.diff.tar")
}

/// The platform this host runs, in OCI terms.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    let variant = (architecture == "arm64").then(|| "v8".to_string());
    Platform { os: "linux".into(), architecture: architecture.into(), variant }
}

pub fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) if !v.is_empty() => format!("{}/{}/{}", p.os, p.architecture, v),
        _ => format!("{}/{}", p.os, p.architecture),
    }
}

/// Picks the manifest for `want` from an index (an arm64 entry without a
/// variant matches `v8`).
pub fn choose_platform<'a>(reference: &str, manifests: &'a [Descriptor], want: &Platform) -> Result<&'a Descriptor> {
    let matches = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && match (&p.variant, &want.variant) {
                (Some(a), Some(b)) => a == b || a.is_empty(),
                _ => true,
            }
    };
    manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(matches))
        .ok_or_else(|| ImageError::NoPlatform {
            reference: reference.into(),
            platform: platform_string(want),
            available: manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(platform_string))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The uncompressed layer digests listed in an image config.
pub fn config_diff_ids(reference: &str, config: &[u8]) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Cfg {
        rootfs: RootFs,
    }
    let c: Cfg = serde_json::from_slice(config)
        .map_err(|e| ImageError::Malformed { reference: reference.into(), what: "image config".into(), detail: e.to_string() })?;
    Ok(c.rootfs.diff_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{arch}"),
            size: 1,
            platform: Some(Platform { os: "linux".into(), architecture: arch.into(), variant: variant.map(Into::into) }),
        }
    }

    #[test]
    fn chooses_platform() {
        let ms = vec![desc("arm", Some("v7")), desc("arm64", None), desc("amd64", None)];
        let amd = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        assert_eq!(choose_platform("x", &ms, &amd).unwrap().digest, "sha256:amd64");
        let arm64 = Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) };
        assert_eq!(choose_platform("x", &ms, &arm64).unwrap().digest, "sha256:arm64");
        let s390 = Platform { os: "linux".into(), architecture: "s390x".into(), variant: None };
        let e = choose_platform("x", &ms, &s390).unwrap_err().to_string();
        assert!(e.contains("linux/s390x") && e.contains("linux/arm/v7"), "{e}");
    }

    #[test]
    fn parses_kinds() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:a","size":1},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:b","size":2}]}"#;
        assert!(matches!(Manifest::parse("x", m, None).unwrap(), Manifest::Image { .. }));
        let i = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(Manifest::parse("x", i, None).unwrap(), Manifest::Index { .. }));
        let s1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(Manifest::parse("x", s1, None).unwrap_err().to_string().contains("schema 1"));
        assert!(Manifest::parse("x", b"{", None).unwrap_err().to_string().contains("malformed manifest"));
    }
}
