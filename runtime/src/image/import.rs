//! Reads image archives for import: OCI image layout directories, OCI
//! archives (a tar of a layout, optionally gzip or zstd compressed) and
//! `docker save` archives (legacy `<id>/layer.tar` and docker 25+
//! `blobs/sha256/` forms).
//!
//! Everything is presented as an OCI-layout view: a list of named manifests
//! (or indexes) plus a way to find blobs by digest. Docker archives get a
//! synthesized OCI manifest. Storing the content is left to the caller.
//!
//! Archives are extracted into a temporary directory that lives as long as
//! the [`ImportSource`]. Only regular files and directories are created;
//! members that would land outside it are rejected, and symlinks or hard
//! links inside the archive (docker uses them for repeated layers) become
//! hard links or copies of files inside it.

use crate::digest;
use crate::image::builder::{media, REF_NAME_ANNOTATION};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// The containerd annotation holding a full image name (docker 25+ archives).
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {0} is not in the import source")]
    BlobNotFound(String),
}

type Result<T, E = ImportError> = std::result::Result<T, E>;

fn invalid(path: &Path, message: impl Into<String>) -> ImportError {
    ImportError::Invalid { path: path.display().to_string(), message: message.into() }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io { path: path.display().to_string(), source }
}

/// What the import source was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    OciLayout,
    OciArchive,
    DockerArchive,
}

/// A manifest or index found in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// From `io.containerd.image.name`, else `org.opencontainers.image.ref.name`
    /// (may be a bare tag such as `latest`), or a docker RepoTags entry.
    pub name: Option<String>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest_bytes: Vec<u8>,
}

/// An opened import source; holds any extraction directory until dropped.
#[derive(Debug)]
pub struct ImportSource {
    root: PathBuf,
    format: ImportFormat,
    images: Vec<ImportedImage>,
    /// Blobs outside `blobs/sha256` (docker archives), by digest.
    extra_blobs: HashMap<String, PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

impl ImportSource {
    pub fn format(&self) -> ImportFormat {
        self.format
    }

    /// The manifests and indexes in the source, in order.
    pub fn images(&self) -> &[ImportedImage] {
        &self.images
    }

    /// The directory holding the (extracted) layout or archive contents.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file holding a blob. Docker archives' synthesized manifests are
    /// not files: they are only in [`ImportedImage::manifest_bytes`].
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest::hex_part(digest).map_err(|m| invalid(&self.root, m))?;
        if let Some(p) = self.extra_blobs.get(digest) {
            return Ok(p.clone());
        }
        let p = self.root.join("blobs/sha256").join(hex);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(p),
            _ => Err(ImportError::BlobNotFound(digest.into())),
        }
    }

    /// Reads a blob (manifests, configs) and checks its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        if let Some(i) = self.images.iter().find(|i| i.manifest_digest == digest) {
            return Ok(i.manifest_bytes.clone());
        }
        let p = self.blob_path(digest)?;
        let b = fs::read(&p).map_err(io_err(&p))?;
        if digest::of_bytes(&b) != digest {
            return Err(invalid(&p, format!("content does not match digest {digest}")));
        }
        Ok(b)
    }
}

/// Opens an OCI layout directory, OCI archive or docker save archive,
/// extracting archives under the system temp dir.
pub fn open(path: &Path) -> Result<ImportSource> {
    open_in(path, None)
}

/// Like [`open`], extracting archives under `tmp_parent` when given
/// (e.g. on the content store's filesystem).
pub fn open_in(path: &Path, tmp_parent: Option<&Path>) -> Result<ImportSource> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        return from_dir(path, path, None, ImportFormat::OciLayout);
    }
    let tmp = match tmp_parent {
        Some(p) => tempfile::Builder::new().prefix("berth-import-").tempdir_in(p),
        None => tempfile::Builder::new().prefix("berth-import-").tempdir(),
    }
    .map_err(io_err(tmp_parent.unwrap_or(Path::new("temporary directory"))))?;
    let f = fs::File::open(path).map_err(io_err(path))?;
    let mut r = BufReader::new(f);
    let head = r.fill_buf().map_err(io_err(path))?.to_vec();
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(r).map_err(io_err(path))?)
    } else {
        Box::new(r)
    };
    extract(reader, tmp.path(), path)?;
    let root = tmp.path().to_path_buf();
    from_dir(&root, path, Some(tmp), ImportFormat::OciArchive)
}

const UNKNOWN: &str = "not an OCI layout, OCI archive or docker save archive";

/// Reads an extracted or on-disk source. `shown` is the path named in errors.
fn from_dir(root: &Path, shown: &Path, tmp: Option<tempfile::TempDir>, format: ImportFormat) -> Result<ImportSource> {
    let mut src =
        ImportSource { root: root.into(), format, images: Vec::new(), extra_blobs: HashMap::new(), _tmp: tmp };
    // Docker 25+ archives are also OCI layouts; the OCI view is preferred.
    if root.join("index.json").is_file() {
        src.images = read_oci_index(root, shown)?;
    } else if root.join("manifest.json").is_file() {
        src.format = ImportFormat::DockerArchive;
        read_docker(&mut src, shown)?;
    } else {
        return Err(invalid(shown, UNKNOWN));
    }
    Ok(src)
}

fn read_oci_index(root: &Path, shown: &Path) -> Result<Vec<ImportedImage>> {
    let ctx = |m: String| invalid(shown, format!("index.json: {m}"));
    let p = root.join("index.json");
    let index: Value = serde_json::from_slice(&fs::read(&p).map_err(io_err(&p))?).map_err(|e| ctx(e.to_string()))?;
    let manifests = index["manifests"].as_array().ok_or_else(|| ctx("no manifests array".into()))?;
    let mut out = Vec::new();
    for (i, d) in manifests.iter().enumerate() {
        let digest = d["digest"].as_str().ok_or_else(|| ctx(format!("manifests[{i}]: no digest")))?;
        let hex = digest::hex_part(digest).map_err(|m| ctx(format!("manifests[{i}]: {m}")))?;
        let bp = root.join("blobs/sha256").join(hex);
        let bytes = fs::read(&bp).map_err(|e| ctx(format!("manifests[{i}]: blob {digest}: {e}")))?;
        if digest::of_bytes(&bytes) != digest {
            return Err(ctx(format!("manifests[{i}]: blob {digest} does not match its digest")));
        }
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|e| ctx(format!("manifests[{i}]: manifest {digest}: {e}")))?;
        let media_type = d["mediaType"]
            .as_str()
            .or_else(|| body["mediaType"].as_str())
            .unwrap_or(if body.get("manifests").is_some() { media::OCI_INDEX } else { media::OCI_MANIFEST });
        let ann = &d["annotations"];
        let name = ann[CONTAINERD_NAME_ANNOTATION].as_str().or_else(|| ann[REF_NAME_ANNOTATION].as_str());
        out.push(ImportedImage {
            name: name.map(Into::into),
            manifest_digest: digest.into(),
            manifest_media_type: media_type.into(),
            manifest_bytes: bytes,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Synthesizes an OCI manifest per manifest.json entry.
fn read_docker(src: &mut ImportSource, shown: &Path) -> Result<()> {
    let ctx = |m: String| invalid(shown, format!("manifest.json: {m}"));
    let p = src.root.join("manifest.json");
    let raw = fs::read(&p).map_err(io_err(&p))?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(&raw).map_err(|e| ctx(e.to_string()))?;
    if entries.is_empty() {
        return Err(ctx("no images".into()));
    }
    // (digest, size, media type) per layer file, hashed once.
    let mut hashed: HashMap<PathBuf, (String, u64, &'static str)> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let member = |name: &str| -> Result<PathBuf> {
            let rel = safe_rel(name.as_bytes())
                .filter(|r| !r.as_os_str().is_empty())
                .ok_or_else(|| ctx(format!("[{i}]: bad file name {name:?}")))?;
            let path = src.root.join(rel);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => Ok(path),
                _ => Err(ctx(format!("[{i}]: {name} is missing from the archive"))),
            }
        };
        let cp = member(&e.config)?;
        let config = fs::read(&cp).map_err(io_err(&cp))?;
        serde_json::from_slice::<Value>(&config).map_err(|err| ctx(format!("[{i}]: config {}: {err}", e.config)))?;
        let config_digest = digest::of_bytes(&config);
        src.extra_blobs.insert(config_digest.clone(), cp);
        let mut layers = Vec::new();
        for l in &e.layers {
            let lp = member(l)?;
            let (d, size, mt) = match hashed.get(&lp) {
                Some(v) => v.clone(),
                None => {
                    let v = hash_layer(&lp)?;
                    hashed.insert(lp.clone(), v.clone());
                    v
                }
            };
            src.extra_blobs.insert(d.clone(), lp);
            layers.push(json!({"mediaType": mt, "digest": d, "size": size}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|err| ctx(err.to_string()))?;
        let digest = digest::of_bytes(&bytes);
        let tags = e.repo_tags.clone().unwrap_or_default();
        let names: Vec<Option<String>> =
            if tags.is_empty() { vec![None] } else { tags.into_iter().map(Some).collect() };
        for name in names {
            src.images.push(ImportedImage {
                name,
                manifest_digest: digest.clone(),
                manifest_media_type: media::OCI_MANIFEST.into(),
                manifest_bytes: bytes.clone(),
            });
        }
    }
    Ok(())
}

/// Digest, size and media type (by magic bytes) of a layer file.
fn hash_layer(path: &Path) -> Result<(String, u64, &'static str)> {
    let f = fs::File::open(path).map_err(io_err(path))?;
    let mut r = digest::HashingReader::new(BufReader::new(f));
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]).map_err(io_err(path))? {
            0 => break,
            k => n += k,
        }
    }
    io::copy(&mut r, &mut io::sink()).map_err(io_err(path))?;
    let mt = if head[..n].starts_with(&[0x1f, 0x8b]) {
        media::OCI_LAYER_GZIP
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        media::OCI_LAYER_ZSTD
    } else {
        media::OCI_LAYER
    };
    let (size, d) = r.finish();
    Ok((d, size, mt))
}

/// A member name as a relative path, or None if it is absolute or has `..`.
fn safe_rel(name: &[u8]) -> Option<PathBuf> {
    if name.starts_with(b"/") {
        return None;
    }
    let mut out = PathBuf::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(std::str::from_utf8(c).ok()?),
        }
    }
    Some(out)
}

/// Resolves a link target lexically against `base` (a directory inside the
/// archive); None if it is absolute or leaves the archive.
fn resolve_in(base: &Path, target: &[u8]) -> Option<PathBuf> {
    if target.starts_with(b"/") {
        return None;
    }
    let mut parts: Vec<String> = base
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_str()?.to_string()),
            _ => None,
        })
        .collect();
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            c => parts.push(std::str::from_utf8(c).ok()?.to_string()),
        }
    }
    Some(parts.iter().collect())
}

/// Extracts a tar, creating only directories and regular files inside `dest`.
fn extract(reader: impl Read, dest: &Path, shown: &Path) -> Result<()> {
    let not_tar = |e: io::Error| invalid(shown, format!("{UNKNOWN} ({e})"));
    let mut ar = tar::Archive::new(reader);
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut count = 0usize;
    for entry in ar.entries().map_err(not_tar)? {
        let mut e = entry.map_err(not_tar)?;
        count += 1;
        let raw = e.path_bytes().into_owned();
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        let rel = safe_rel(&raw)
            .ok_or_else(|| invalid(shown, format!("archive member {lossy:?} points outside the archive")))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        let kind = e.header().entry_type();
        match kind {
            tar::EntryType::Directory => fs::create_dir_all(&target).map_err(io_err(&target))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                // A repeated member replaces the earlier one (tar semantics).
                let _ = fs::remove_file(&target);
                let mut f = fs::File::create(&target).map_err(io_err(&target))?;
                io::copy(&mut e, &mut f).map_err(io_err(&target))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
                let base =
                    if kind == tar::EntryType::Symlink { rel.parent().unwrap_or(Path::new("")) } else { Path::new("") };
                let to = resolve_in(base, &link)
                    .ok_or_else(|| invalid(shown, format!("archive member {lossy:?} links outside the archive")))?;
                links.push((rel, to));
            }
            // Devices, fifos and the like have no place in an image archive.
            _ => {}
        }
    }
    if count == 0 {
        return Err(invalid(shown, UNKNOWN));
    }
    // Links to files become hard links (or copies); others are dropped.
    for (rel, to) in links {
        let (from, dst) = (dest.join(&to), dest.join(&rel));
        if !fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
            continue;
        }
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let _ = fs::remove_file(&dst);
        if fs::hard_link(&from, &dst).is_err() {
            fs::copy(&from, &dst).map_err(io_err(&dst))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::builder::*;

    fn image(docker: bool, compression: Compression) -> BuiltImage {
        let mut l = LayerBuilder::new();
        l.add_dir("etc", 0o755).add_file("etc/hello", 0o644, b"hello");
        let l1 = l.finish(compression).unwrap();
        let l2 = LayerBuilder::new().add_file("b", 0o644, b"b").finish(compression).unwrap();
        ImageBuilder::new().layer(l1).layer(l2).cmd(&["sh"]).docker_media_types(docker).build().unwrap()
    }

    fn check_blobs(src: &ImportSource, img: &BuiltImage) {
        for (d, _, b) in &img.blobs {
            assert_eq!(&fs::read(src.blob_path(d).unwrap()).unwrap(), b, "{d}");
        }
    }

    #[test]
    fn oci_layout_and_archives_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let img = image(false, Compression::Gzip);
        let other = image(true, Compression::None);
        let index = IndexBuilder::new()
            .add_image(img.clone())
            .add_with_platform(other.clone(), Platform::new("linux", "arm64"))
            .build()
            .unwrap();
        let refs =
            [("latest", Built::from(&img)), ("example.com/x:multi", Built::from(&index)), ("", Built::from(&other))];
        let dir = tmp.path().join("layout");
        write_oci_layout(&dir, &refs).unwrap();
        let tar = tmp.path().join("a.tar");
        write_oci_archive(&tar, &refs, Compression::None).unwrap();
        let tgz = tmp.path().join("a.tar.gz");
        write_oci_archive(&tgz, &refs, Compression::Gzip).unwrap();
        for (p, fmt) in
            [(&dir, ImportFormat::OciLayout), (&tar, ImportFormat::OciArchive), (&tgz, ImportFormat::OciArchive)]
        {
            let src = open(p).unwrap();
            assert_eq!(src.format(), fmt);
            let ims = src.images();
            assert_eq!(ims.len(), 3);
            assert_eq!(ims[0].name.as_deref(), Some("latest"));
            assert_eq!(ims[0].manifest_digest, img.manifest_digest);
            assert_eq!(ims[0].manifest_bytes, img.manifest_bytes);
            assert_eq!(ims[1].name.as_deref(), Some("example.com/x:multi"));
            assert_eq!(ims[1].manifest_media_type, media::OCI_INDEX);
            assert_eq!(ims[1].manifest_digest, index.manifest_digest);
            assert_eq!(ims[2].name, None);
            assert_eq!(ims[2].manifest_media_type, media::DOCKER_MANIFEST);
            check_blobs(&src, &img);
            check_blobs(&src, &other);
            assert_eq!(src.read_blob(&other.manifest_digest).unwrap(), other.manifest_bytes);
            assert!(matches!(src.blob_path(&digest::of_bytes(b"nope")), Err(ImportError::BlobNotFound(_))));
            assert!(src.blob_path("sha256:../../etc").is_err());
        }
        // The extraction dir goes away with the source.
        let src = open(&tgz).unwrap();
        let root = src.root().to_path_buf();
        assert!(root.exists());
        drop(src);
        assert!(!root.exists());
    }

    #[test]
    fn docker_archives_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        for (i, style) in [DockerArchiveStyle::Legacy, DockerArchiveStyle::Blobs].into_iter().enumerate() {
            let img = image(false, Compression::Gzip);
            let p = tmp.path().join(format!("d{i}.tar"));
            write_docker_archive(&p, &img, &["busybox:latest", "example.com/a/b:v1"], style).unwrap();
            let src = open(&p).unwrap();
            assert_eq!(src.format(), ImportFormat::DockerArchive);
            let ims = src.images();
            assert_eq!(ims.len(), 2);
            assert_eq!(ims[0].name.as_deref(), Some("busybox:latest"));
            assert_eq!(ims[1].name.as_deref(), Some("example.com/a/b:v1"));
            assert_eq!(ims[0].manifest_digest, digest::of_bytes(&ims[0].manifest_bytes));
            let m: Value = serde_json::from_slice(&ims[0].manifest_bytes).unwrap();
            assert_eq!(m["config"]["digest"], img.config_digest.as_str());
            assert_eq!(src.read_blob(&img.config_digest).unwrap(), img.config_bytes);
            // Layers are stored uncompressed: their digests are the diff_ids.
            let layers = m["layers"].as_array().unwrap();
            for (l, diff_id) in layers.iter().zip(&img.diff_ids) {
                assert_eq!(l["digest"], diff_id.as_str());
                assert_eq!(l["mediaType"], media::OCI_LAYER);
                let d = l["digest"].as_str().unwrap();
                assert_eq!(&digest::of_bytes(&fs::read(src.blob_path(d).unwrap()).unwrap()), d);
            }
        }
    }

    #[test]
    fn docker_archive_with_linked_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = LayerBuilder::new().add_file("a", 0o644, b"a").into_tar().unwrap();
        let mut t = LayerBuilder::new();
        t.add_file("aaa/layer.tar", 0o644, &layer)
            .add_symlink("bbb/layer.tar", "../aaa/layer.tar")
            .add_file("c.json", 0o644, br#"{"rootfs":{}}"#)
            .add_file(
                "manifest.json",
                0o644,
                br#"[{"Config":"c.json","RepoTags":null,"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#,
            );
        let p = tmp.path().join("d.tar");
        fs::write(&p, t.into_tar().unwrap()).unwrap();
        let src = open(&p).unwrap();
        assert_eq!(src.images().len(), 1);
        assert_eq!(src.images()[0].name, None);
        let m: Value = serde_json::from_slice(&src.images()[0].manifest_bytes).unwrap();
        assert_eq!(m["layers"][1]["digest"], digest::of_bytes(&layer));
    }

    fn archive_of(build: impl FnOnce(&mut LayerBuilder)) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = LayerBuilder::new();
        build(&mut t);
        let p = tmp.path().join("bad.tar");
        fs::write(&p, t.into_tar().unwrap()).unwrap();
        (tmp, p)
    }

    #[test]
    fn rejects_escapes_and_junk() {
        use tar::EntryType::*;
        let cases: Vec<fn(&mut LayerBuilder)> = vec![
            |t| {
                t.add_raw(b"../escape", Regular, 0o644, None, b"x");
            },
            |t| {
                t.add_raw(b"/abs", Regular, 0o644, None, b"x");
            },
            |t| {
                t.add_raw(b"a/../../x", Regular, 0o644, None, b"x");
            },
            |t| {
                t.add_symlink("up", "../../etc/passwd");
            },
            |t| {
                t.add_symlink("root", "/");
            },
        ];
        for build in cases {
            let (tmp, p) = archive_of(build);
            let err = open(&p).unwrap_err().to_string();
            assert!(err.contains("outside the archive") && err.contains("bad.tar"), "{err}");
            assert!(!tmp.path().parent().unwrap().join("escape").exists());
        }
        // A file beneath a symlink member lands in a real directory, not via the link.
        let (tmp, p) = archive_of(|t| {
            t.add_symlink("blobs", ".").add_raw(b"blobs/x", Regular, 0o644, None, b"x");
        });
        let err = open(&p).unwrap_err().to_string();
        assert!(err.contains(UNKNOWN), "{err}");
        drop(tmp);

        let tmp = tempfile::tempdir().unwrap();
        let junk = tmp.path().join("junk");
        fs::write(&junk, b"this is not a tar file at all, just some text").unwrap();
        let err = open(&junk).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: {UNKNOWN}", junk.display())), "{err}");
        assert!(open(tmp.path()).unwrap_err().to_string().contains(UNKNOWN));
        let (_t, p) = archive_of(|t| {
            t.add_file("manifest.json", 0o644, b"{not json");
        });
        let err = open(&p).unwrap_err().to_string();
        assert!(err.contains("manifest.json: "), "{err}");
        let (_t, p) = archive_of(|t| {
            t.add_file("manifest.json", 0o644, br#"[{"Config":"../c.json","Layers":[]}]"#);
        });
        assert!(open(&p).unwrap_err().to_string().contains("bad file name"));
    }
}
