//! Image references with Docker-style normalization
//! (`busybox` → `docker.io/library/busybox:latest`).

use super::error::{ImageError, Result};
pub use oci_client::Reference;

/// Parses and normalizes an image reference.
pub fn parse(s: &str) -> Result<Reference> {
    let invalid = |reason: String| ImageError::InvalidReference { reference: s.to_string(), reason };
    if s.trim().is_empty() {
        return Err(invalid("empty reference".into()));
    }
    if s.trim() != s {
        return Err(invalid("surrounding whitespace".into()));
    }
    let r: Reference = s.parse().map_err(|e: oci_client::ParseError| invalid(e.to_string()))?;
    // Docker's grammar: repository path components are lowercase (only the
    // registry host may have capitals). oci-client lets `UPPER/x` through as
    // a docker.io repository.
    if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(format!("repository name {:?} must be lowercase", r.repository())));
    }
    if let Some(d) = r.digest() {
        crate::digest::hex_part(d).map_err(invalid)?;
    }
    Ok(r)
}

/// `registry/repository`, e.g. `docker.io/library/busybox`.
pub fn repo_name(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// The tag form `registry/repository:tag`, when the reference names a tag and no digest.
pub fn repo_tag(r: &Reference) -> Option<String> {
    match (r.tag(), r.digest()) {
        (Some(t), None) => Some(format!("{}:{}", repo_name(r), t)),
        _ => None,
    }
}

/// `registry/repository@digest`.
pub fn repo_digest(r: &Reference, digest: &str) -> String {
    format!("{}@{}", repo_name(r), digest)
}

/// What the reference asks the registry for: its digest, else its tag.
pub fn target(r: &Reference) -> &str {
    r.digest().or(r.tag()).unwrap_or("latest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let r = parse("busybox").unwrap();
        assert_eq!(repo_tag(&r).unwrap(), "docker.io/library/busybox:latest");
        let r = parse("quay.io/a/b:v1").unwrap();
        assert_eq!(repo_tag(&r).unwrap(), "quay.io/a/b:v1");
        assert_eq!(repo_name(&parse("Example.COM/x/y").unwrap()), "Example.COM/x/y");
        let r = parse("127.0.0.1:5000/x/y").unwrap();
        assert_eq!(repo_tag(&r).unwrap(), "127.0.0.1:5000/x/y:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(repo_tag(&r), None);
        assert_eq!(target(&r), d);
        assert_eq!(repo_digest(&r, &d), format!("docker.io/library/busybox@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "UPPER/case", "UPPER", "quay.io/Org/x", "localhost:5000/A/b", "a b", "busybox@sha256:short", "x:bad tag", "-leading"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid image reference"), "{bad}: {e}");
        }
    }
}
