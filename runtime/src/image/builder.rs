//! Builds OCI images from files (test images, import fixtures).
//!
//! Layers are written entry by entry with [`LayerBuilder`] (including
//! deliberately malicious entries via [`LayerBuilder::add_raw`]), assembled
//! into images with [`ImageBuilder`] and multi-platform indexes with
//! [`IndexBuilder`], then written as an OCI layout, an OCI archive or a
//! `docker save` archive, or pushed to a registry. Output is reproducible:
//! the same inputs give the same digests.

use crate::digest;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;
use tar::{EntryType, Header};

/// Media types used by images.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}

/// The annotation naming a manifest in an OCI layout's index.json.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A fixed mtime (2020-01-01T00:00:00Z) so builds are reproducible.
pub const DEFAULT_MTIME: u64 = 1_577_836_800;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: {message}")]
    Entry { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("push {reference}: {message}")]
    Push { reference: String, message: String },
}

type Result<T, E = BuildError> = std::result::Result<T, E>;

fn io_err(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.as_ref().display().to_string();
    move |source| BuildError::Io { path, source }
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A finished layer blob.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    /// The OCI layer media type (mapped to Docker types by `docker_media_types`).
    pub media_type: String,
    /// Digest of `blob`.
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
    pub compression: Compression,
}

/// Builds a layer tar in memory. Setters and `add_*` calls chain; the first
/// error is kept and returned by [`LayerBuilder::finish`].
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
    uid: u64,
    gid: u64,
    mtime: u64,
    error: Option<BuildError>,
    /// Modes of the regular files added so far: a hard link's header
    /// carries its target's mode (containerd applies it to the inode).
    modes: std::collections::HashMap<Vec<u8>, u32>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Normalizes an API path: strips leading `/` and `./`; rejects empty paths.
fn norm(path: &str, dir: bool) -> Option<Vec<u8>> {
    let p = path.trim_start_matches('/');
    let p = p.strip_prefix("./").unwrap_or(p).trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() || p == "." {
        return None;
    }
    let mut v = p.as_bytes().to_vec();
    if dir {
        v.push(b'/');
    }
    Some(v)
}

impl LayerBuilder {
    pub fn new() -> Self {
        let tar = tar::Builder::new(Vec::new());
        Self { tar, uid: 0, gid: 0, mtime: DEFAULT_MTIME, error: None, modes: Default::default() }
    }

    /// Owner of the entries added after this call.
    pub fn owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Modification time of the entries added after this call.
    pub fn mtime(&mut self, mtime: u64) -> &mut Self {
        self.mtime = mtime;
        self
    }

    fn fail(&mut self, e: BuildError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn normal(&mut self, path: &str, dir: bool, f: impl FnOnce(&mut Self, Vec<u8>)) -> &mut Self {
        match norm(path, dir) {
            Some(p) => f(self, p),
            None => self.fail(BuildError::Entry { path: path.into(), message: "empty path".into() }),
        }
        self
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.normal(path, true, |s, p| {
            s.add_raw(&p, EntryType::Directory, mode, None, &[]);
        })
    }

    pub fn add_file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.normal(path, false, |s, p| {
            s.modes.insert(p.clone(), mode);
            s.add_raw(&p, EntryType::Regular, mode, None, data);
        })
    }

    /// Adds a regular file with the contents of a host file.
    pub fn add_file_from(&mut self, path: &str, mode: u32, host_path: impl AsRef<Path>) -> &mut Self {
        match std::fs::read(host_path.as_ref()) {
            Ok(data) => self.add_file(path, mode, &data),
            Err(e) => {
                self.fail(io_err(host_path)(e));
                self
            }
        }
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let t = target.as_bytes().to_vec();
        self.normal(path, false, |s, p| {
            s.add_raw(&p, EntryType::Symlink, 0o777, Some(&t), &[]);
        })
    }

    /// Adds a hard link to `target`, an earlier entry's path in this layer.
    pub fn add_hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        match norm(target, false) {
            Some(t) => self.normal(path, false, |s, p| {
                let mode = s.modes.get(&t).copied().unwrap_or(0o644);
                s.add_raw(&p, EntryType::Link, mode, Some(&t), &[]);
            }),
            None => {
                self.fail(BuildError::Entry { path: target.into(), message: "empty link target".into() });
                self
            }
        }
    }

    /// Adds a whiteout deleting `path` from lower layers (`dir/.wh.name`).
    pub fn add_whiteout(&mut self, path: &str) -> &mut Self {
        let p = path.trim_end_matches('/');
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        if name.is_empty() || name == "." || name == ".." {
            self.fail(BuildError::Entry { path: path.into(), message: "no name to white out".into() });
            return self;
        }
        let wh = format!("{dir}/.wh.{name}");
        self.add_file(&wh, 0, &[])
    }

    /// Marks `dir` opaque: lower layers' contents of it are hidden.
    pub fn add_opaque(&mut self, dir: &str) -> &mut Self {
        let wh = format!("{}/.wh..wh..opq", dir.trim_end_matches('/'));
        self.add_file(&wh, 0, &[])
    }

    pub fn add_char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.normal(path, false, |s, p| s.entry(&p, EntryType::Char, mode, None, &[], Some((major, minor))))
    }

    /// Adds an entry with the path bytes exactly as given (no normalization):
    /// for malicious entries such as `../escape`, `/abs` or a file beneath a
    /// symlink. `link` is the link target for symlinks and hard links.
    pub fn add_raw(
        &mut self,
        path: &[u8],
        entry_type: EntryType,
        mode: u32,
        link: Option<&[u8]>,
        data: &[u8],
    ) -> &mut Self {
        self.entry(path, entry_type, mode, link, data, None);
        self
    }

    fn entry(
        &mut self,
        path: &[u8],
        kind: EntryType,
        mode: u32,
        link: Option<&[u8]>,
        data: &[u8],
        dev: Option<(u32, u32)>,
    ) {
        if let Err(e) = self.try_entry(path, kind, mode, link, data, dev) {
            let path = String::from_utf8_lossy(path).into_owned();
            self.fail(BuildError::Entry { path, message: e.to_string() });
        }
    }

    fn try_entry(
        &mut self,
        path: &[u8],
        kind: EntryType,
        mode: u32,
        link: Option<&[u8]>,
        data: &[u8],
        dev: Option<(u32, u32)>,
    ) -> io::Result<()> {
        if path.is_empty() || path.contains(&0) || link.is_some_and(|l| l.contains(&0)) {
            return Err(io::Error::other("empty path or NUL byte"));
        }
        // Names longer than the header field go in GNU long-name records.
        if path.len() > 100 {
            self.long_record(EntryType::GNULongName, path)?;
        }
        if let Some(l) = link.filter(|l| l.len() > 100) {
            self.long_record(EntryType::GNULongLink, l)?;
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_size(data.len() as u64);
        if let Some((major, minor)) = dev {
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        let old = h.as_old_mut();
        let n = path.len().min(100);
        old.name[..n].copy_from_slice(&path[..n]);
        if let Some(l) = link {
            let n = l.len().min(100);
            old.linkname[..n].copy_from_slice(&l[..n]);
        }
        h.set_cksum();
        self.tar.append(&h, data)
    }

    fn long_record(&mut self, kind: EntryType, name: &[u8]) -> io::Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_size(name.len() as u64 + 1);
        h.set_cksum();
        let mut data = name.to_vec();
        data.push(0);
        self.tar.append(&h, &data[..])
    }

    /// Ends the tar and compresses it; the builder is left empty.
    pub fn finish(&mut self, compression: Compression) -> Result<Layer> {
        Layer::from_tar(self.into_tar()?, compression)
    }

    /// Ends the tar and returns it uncompressed; the builder is left empty.
    pub fn into_tar(&mut self) -> Result<Vec<u8>> {
        let this = std::mem::take(self);
        if let Some(e) = this.error {
            return Err(e);
        }
        this.tar.into_inner().map_err(io_err("layer tar"))
    }
}

/// Compresses bytes (gzip header with mtime 0, so output is reproducible).
pub fn compress(data: &[u8], compression: Compression) -> Result<Vec<u8>> {
    let err = io_err("compress");
    match compression {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).map_err(io_err("gzip"))?;
            e.finish().map_err(err)
        }
        Compression::Zstd => zstd::stream::encode_all(data, 3).map_err(err),
    }
}

/// Decompresses a layer blob of the given media type.
pub fn decompress(data: &[u8], media_type: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).map_err(io_err("gunzip"))?;
    } else if media_type.ends_with("zstd") {
        out = zstd::stream::decode_all(data).map_err(io_err("unzstd"))?;
    } else {
        out = data.to_vec();
    }
    Ok(out)
}

impl Layer {
    /// A layer from an uncompressed tar stream.
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Result<Layer> {
        let diff_id = digest::of_bytes(&tar);
        let blob = compress(&tar, compression)?;
        let media_type = match compression {
            Compression::None => media::OCI_LAYER,
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
        };
        Ok(Layer {
            digest: digest::of_bytes(&blob),
            size: blob.len() as u64,
            media_type: media_type.into(),
            diff_id,
            blob,
            compression,
        })
    }
}

/// An image platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Self {
        Self { os: os.into(), architecture: architecture.into(), variant: None }
    }

    /// The host's platform in OCI (Go) names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        let mut p = Self::new("linux", arch);
        if arch == "arm64" {
            p.variant = Some("v8".into());
        }
        p
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("architecture".into(), self.architecture.clone().into());
        m.insert("os".into(), self.os.clone().into());
        if let Some(v) = &self.variant {
            m.insert("variant".into(), v.clone().into());
        }
        Value::Object(m)
    }
}

/// A built image: manifest, config and blobs.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config_bytes: Vec<u8>,
    pub config_digest: String,
    /// `(digest, media_type, bytes)` of the config and every layer.
    pub blobs: Vec<(String, String, Vec<u8>)>,
    /// Layer digests in manifest order.
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    pub platform: Platform,
}

impl BuiltImage {
    fn blob(&self, digest: &str) -> Option<&(String, String, Vec<u8>)> {
        self.blobs.iter().find(|b| b.0 == digest)
    }
}

/// Assembles layers and a config into an image manifest.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    layers: Vec<Layer>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    user: Option<String>,
    working_dir: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    platform: Platform,
    docker: bool,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

impl ImageBuilder {
    /// An empty image for the host platform.
    pub fn new() -> Self {
        Self {
            layers: Vec::new(),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            user: None,
            working_dir: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            platform: Platform::host(),
            docker: false,
        }
    }
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    pub fn entrypoint(mut self, v: &[&str]) -> Self {
        self.entrypoint = Some(strings(v));
        self
    }
    pub fn cmd(mut self, v: &[&str]) -> Self {
        self.cmd = Some(strings(v));
        self
    }
    /// Adds `KEY=value` environment entries.
    pub fn env(mut self, v: &[&str]) -> Self {
        self.env.extend(strings(v));
        self
    }
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    /// A manifest annotation (OCI media types only).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
    pub fn platform(mut self, os: &str, arch: &str, variant: Option<&str>) -> Self {
        self.platform = Platform { os: os.into(), architecture: arch.into(), variant: variant.map(Into::into) };
        self
    }
    /// Use Docker schema 2 media types instead of OCI ones.
    pub fn docker_media_types(mut self, docker: bool) -> Self {
        self.docker = docker;
        self
    }

    /// The config JSON (deterministic: keys sorted, fixed timestamp).
    fn config_json(&self) -> Value {
        let mut c = Map::new();
        if !self.env.is_empty() {
            c.insert("Env".into(), json!(self.env));
        }
        if let Some(v) = &self.entrypoint {
            c.insert("Entrypoint".into(), json!(v));
        }
        if let Some(v) = &self.cmd {
            c.insert("Cmd".into(), json!(v));
        }
        if let Some(v) = &self.user {
            c.insert("User".into(), json!(v));
        }
        if let Some(v) = &self.working_dir {
            c.insert("WorkingDir".into(), json!(v));
        }
        if !self.labels.is_empty() {
            c.insert("Labels".into(), json!(self.labels));
        }
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let history: Vec<Value> = self
            .layers
            .iter()
            .map(|_| json!({"created": "2020-01-01T00:00:00Z", "created_by": "berth image builder"}))
            .collect();
        let mut cfg = self.platform.to_json();
        let m = cfg.as_object_mut().expect("platform json is an object");
        m.insert("created".into(), "2020-01-01T00:00:00Z".into());
        m.insert("config".into(), Value::Object(c));
        m.insert("rootfs".into(), json!({"type": "layers", "diff_ids": diff_ids}));
        m.insert("history".into(), json!(history));
        cfg
    }

    pub fn build(self) -> Result<BuiltImage> {
        let config_bytes = serde_json::to_vec(&self.config_json()).map_err(|e| BuildError::Invalid(e.to_string()))?;
        let config_digest = digest::of_bytes(&config_bytes);
        let (manifest_type, config_type) = if self.docker {
            (media::DOCKER_MANIFEST, media::DOCKER_CONFIG)
        } else {
            (media::OCI_MANIFEST, media::OCI_CONFIG)
        };
        let mut blobs = vec![(config_digest.clone(), config_type.to_string(), config_bytes.clone())];
        let mut layers = Vec::new();
        for l in &self.layers {
            let mt = match (self.docker, l.compression) {
                (true, Compression::None) => media::DOCKER_LAYER,
                (true, Compression::Gzip) => media::DOCKER_LAYER_GZIP,
                _ => l.media_type.as_str(),
            };
            layers.push(descriptor(mt, &l.digest, l.blob.len()));
            if !blobs.iter().any(|b| b.0 == l.digest) {
                blobs.push((l.digest.clone(), mt.to_string(), l.blob.clone()));
            }
        }
        let mut m = Map::new();
        m.insert("schemaVersion".into(), 2.into());
        m.insert("mediaType".into(), manifest_type.into());
        m.insert("config".into(), descriptor(config_type, &config_digest, config_bytes.len()));
        m.insert("layers".into(), Value::Array(layers));
        if !self.annotations.is_empty() && !self.docker {
            m.insert("annotations".into(), json!(self.annotations));
        }
        let manifest_bytes = serde_json::to_vec(&Value::Object(m)).map_err(|e| BuildError::Invalid(e.to_string()))?;
        Ok(BuiltImage {
            manifest_digest: digest::of_bytes(&manifest_bytes),
            manifest_bytes,
            manifest_media_type: manifest_type.into(),
            config_bytes,
            config_digest,
            blobs,
            layer_digests: self.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: self.layers.iter().map(|l| l.diff_id.clone()).collect(),
            platform: self.platform,
        })
    }
}

/// A built multi-platform index (OCI index or Docker manifest list).
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub images: Vec<BuiltImage>,
}

/// Builds an index over images, each listed with its platform.
#[derive(Debug, Clone, Default)]
pub struct IndexBuilder {
    images: Vec<(BuiltImage, Platform)>,
    annotations: BTreeMap<String, String>,
    docker: bool,
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an image under the platform in its config.
    pub fn add_image(self, image: BuiltImage) -> Self {
        let p = image.platform.clone();
        self.add_with_platform(image, p)
    }
    /// Adds an image under an explicit platform (may disagree with its config).
    pub fn add_with_platform(mut self, image: BuiltImage, platform: Platform) -> Self {
        self.images.push((image, platform));
        self
    }
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }
    /// Produce a Docker manifest list instead of an OCI index.
    pub fn docker_media_types(mut self, docker: bool) -> Self {
        self.docker = docker;
        self
    }

    pub fn build(self) -> Result<BuiltIndex> {
        let media_type = if self.docker { media::DOCKER_LIST } else { media::OCI_INDEX };
        let manifests: Vec<Value> = self
            .images
            .iter()
            .map(|(img, p)| {
                let mut d = descriptor(&img.manifest_media_type, &img.manifest_digest, img.manifest_bytes.len());
                d["platform"] = p.to_json();
                d
            })
            .collect();
        let mut m = Map::new();
        m.insert("schemaVersion".into(), 2.into());
        m.insert("mediaType".into(), media_type.into());
        m.insert("manifests".into(), Value::Array(manifests));
        if !self.annotations.is_empty() && !self.docker {
            m.insert("annotations".into(), json!(self.annotations));
        }
        let bytes = serde_json::to_vec(&Value::Object(m)).map_err(|e| BuildError::Invalid(e.to_string()))?;
        Ok(BuiltIndex {
            manifest_digest: digest::of_bytes(&bytes),
            manifest_bytes: bytes,
            manifest_media_type: media_type.into(),
            images: self.images.into_iter().map(|(i, _)| i).collect(),
        })
    }
}

/// An image or an index, for the writers and `push`.
#[derive(Debug, Clone, Copy)]
pub enum Built<'a> {
    Image(&'a BuiltImage),
    Index(&'a BuiltIndex),
}

impl<'a> From<&'a BuiltImage> for Built<'a> {
    fn from(i: &'a BuiltImage) -> Self {
        Built::Image(i)
    }
}

impl<'a> From<&'a BuiltIndex> for Built<'a> {
    fn from(i: &'a BuiltIndex) -> Self {
        Built::Index(i)
    }
}

impl Built<'_> {
    pub fn manifest_digest(&self) -> &str {
        match self {
            Built::Image(i) => &i.manifest_digest,
            Built::Index(i) => &i.manifest_digest,
        }
    }
    pub fn manifest_media_type(&self) -> &str {
        match self {
            Built::Image(i) => &i.manifest_media_type,
            Built::Index(i) => &i.manifest_media_type,
        }
    }
    pub fn manifest_bytes(&self) -> &[u8] {
        match self {
            Built::Image(i) => &i.manifest_bytes,
            Built::Index(i) => &i.manifest_bytes,
        }
    }
    fn images(&self) -> Vec<&BuiltImage> {
        match self {
            Built::Image(i) => vec![*i],
            Built::Index(i) => i.images.iter().collect(),
        }
    }
    /// Every content blob by digest: configs, layers and manifests.
    fn all_blobs(&self) -> BTreeMap<&str, &[u8]> {
        let mut out = BTreeMap::new();
        for img in self.images() {
            for (d, _, b) in &img.blobs {
                out.insert(d.as_str(), b.as_slice());
            }
            out.insert(img.manifest_digest.as_str(), img.manifest_bytes.as_slice());
        }
        out.insert(self.manifest_digest(), self.manifest_bytes());
        out
    }
}

/// The files of an OCI layout holding `refs` (empty name: no annotation).
fn oci_layout_files(refs: &[(&str, Built)]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut blobs = BTreeMap::new();
    let mut manifests = Vec::new();
    for (name, b) in refs {
        blobs.extend(b.all_blobs());
        let mut d = descriptor(b.manifest_media_type(), b.manifest_digest(), b.manifest_bytes().len());
        if let Built::Image(i) = b {
            d["platform"] = i.platform.to_json();
        }
        if !name.is_empty() {
            d["annotations"] = json!({ REF_NAME_ANNOTATION: name });
        }
        manifests.push(d);
    }
    let index = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    let mut files = vec![
        ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json".to_string(), serde_json::to_vec(&index).map_err(|e| BuildError::Invalid(e.to_string()))?),
    ];
    for (d, b) in blobs {
        let hex = digest::hex_part(d).map_err(BuildError::Invalid)?;
        files.push((format!("blobs/sha256/{hex}"), b.to_vec()));
    }
    Ok(files)
}

/// Writes an OCI image layout directory (created if missing).
pub fn write_oci_layout(dir: &Path, refs: &[(&str, Built)]) -> Result<()> {
    for (name, data) in oci_layout_files(refs)? {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, data).map_err(io_err(&path))?;
    }
    Ok(())
}

/// A tar of files, directories implied by paths added first.
fn tar_of(files: &[(String, Vec<u8>)], compression: Compression) -> Result<Vec<u8>> {
    let mut l = LayerBuilder::new();
    let mut dirs = BTreeSet::new();
    for (name, _) in files {
        let mut p = Path::new(name).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    for d in &dirs {
        l.add_dir(d, 0o755);
    }
    for (name, data) in files {
        l.add_file(name, 0o644, data);
    }
    compress(&l.into_tar()?, compression)
}

/// Writes an OCI archive: a tar (optionally compressed) of an OCI layout.
pub fn write_oci_archive(path: &Path, refs: &[(&str, Built)], compression: Compression) -> Result<()> {
    let tar = tar_of(&oci_layout_files(refs)?, compression)?;
    std::fs::write(path, tar).map_err(io_err(path))
}

/// Layout of a `docker save` archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerArchiveStyle {
    /// `<id>/layer.tar` and `<config hex>.json` (docker before 25).
    Legacy,
    /// `blobs/sha256/<hex>` for layers and config (docker 25+, without index.json).
    Blobs,
}

/// Writes a `docker save` archive of one image with uncompressed layers.
pub fn write_docker_archive(
    path: &Path,
    image: &BuiltImage,
    repo_tags: &[&str],
    style: DockerArchiveStyle,
) -> Result<()> {
    let cfg_hex = digest::hex_part(&image.config_digest).map_err(BuildError::Invalid)?;
    let config_name = match style {
        DockerArchiveStyle::Legacy => format!("{cfg_hex}.json"),
        DockerArchiveStyle::Blobs => format!("blobs/sha256/{cfg_hex}"),
    };
    let mut files = vec![(config_name.clone(), image.config_bytes.clone())];
    let mut layer_names = Vec::new();
    for (d, diff_id) in image.layer_digests.iter().zip(&image.diff_ids) {
        let (_, mt, blob) =
            image.blob(d).ok_or_else(|| BuildError::Invalid(format!("image has no blob for layer {d}")))?;
        let hex = digest::hex_part(diff_id).map_err(BuildError::Invalid)?;
        let name = match style {
            DockerArchiveStyle::Legacy => format!("{hex}/layer.tar"),
            DockerArchiveStyle::Blobs => format!("blobs/sha256/{hex}"),
        };
        if !files.iter().any(|f| f.0 == name) {
            files.push((name.clone(), decompress(blob, mt)?));
        }
        layer_names.push(name);
    }
    let manifest = json!([{ "Config": config_name, "RepoTags": repo_tags, "Layers": layer_names }]);
    files
        .push(("manifest.json".into(), serde_json::to_vec(&manifest).map_err(|e| BuildError::Invalid(e.to_string()))?));
    // `repositories` maps repo -> tag -> top layer id (legacy metadata).
    let top = image.diff_ids.last().map(|d| d.trim_start_matches("sha256:").to_string()).unwrap_or_default();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for t in repo_tags {
        if let Some((repo, tag)) = t.rsplit_once(':').filter(|(r, tag)| !tag.contains('/') && !r.is_empty()) {
            repos.entry(repo.into()).or_default().insert(tag.into(), top.clone());
        }
    }
    files.push(("repositories".into(), serde_json::to_vec(&repos).map_err(|e| BuildError::Invalid(e.to_string()))?));
    let tar = tar_of(&files, Compression::None)?;
    std::fs::write(path, tar).map_err(io_err(path))
}

/// Applets linked to /bin/busybox in [`busybox_layer`].
#[rustfmt::skip]
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "ls", "cat", "echo", "true", "false", "sleep", "id", "env", "mkdir", "rm", "rmdir", "touch",
    "stat", "ps", "grep", "wc", "head", "tail", "hostname", "mount", "umount", "unshare", "pwd", "test", "[",
    "printf", "kill", "date", "dd", "yes", "seq", "nc", "wget", "ip", "cut", "tr", "sort", "uniq", "uname",
    "readlink", "realpath", "ln", "chmod", "chown", "chgrp", "mv", "cp", "find", "xargs", "tee", "nslookup",
    "timeout", "which", "whoami", "basename", "dirname", "sed", "awk", "df", "du", "free", "top", "vi", "less",
    "more", "md5sum", "sha256sum", "base64", "nproc", "ping", "ifconfig", "route", "netstat", "mknod", "mkfifo",
    "sync", "tar", "gzip", "gunzip", "zcat", "diff", "cmp", "expr", "hexdump", "od", "xxd", "watch", "pidof",
    "pgrep", "pkill", "killall", "nohup", "setsid", "chroot", "nsenter", "su", "login", "logger", "groups", "fuser",
    "lsof", "mountpoint", "truncate", "fallocate", "ulimit", "usleep", "getty", "init", "poweroff", "reboot",
    "halt", "dmesg", "sysctl", "httpd", "tac", "rev", "fold", "split", "strings", "time", "uptime",
];

/// /etc/passwd of the busybox image.
pub const BUSYBOX_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// /etc/group of the busybox image: `app` is also in `extra` (2000) and `wheel` (10).
pub const BUSYBOX_GROUP: &str = "root:x:0:\n\
wheel:x:10:root,app\n\
app:x:1000:\n\
extra:x:2000:app\n\
nogroup:x:65534:\n";

/// A layer with the host's /bin/busybox, hard links in /bin for the common
/// applets it has ([`BUSYBOX_APPLETS`]),
/// users (root, app 1000, nobody 65534) and the usual directories.
pub fn busybox_layer() -> Result<LayerBuilder> {
    let bin = std::fs::read("/bin/busybox").map_err(io_err("/bin/busybox"))?;
    let mut l = LayerBuilder::new();
    for (d, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sbin", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ] {
        l.add_dir(d, mode);
    }
    l.owner(1000, 1000).add_dir("home/app", 0o755).owner(0, 0);
    l.add_file("bin/busybox", 0o755, &bin);
    // Only applets this busybox has (all of them if it cannot say).
    let has: Option<BTreeSet<String>> = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect());
    let mut seen = BTreeSet::new();
    for a in BUSYBOX_APPLETS {
        if has.as_ref().is_none_or(|h| h.contains(*a)) && seen.insert(*a) {
            l.add_hardlink(&format!("bin/{a}"), "bin/busybox");
        }
    }
    l.add_file("etc/passwd", 0o644, BUSYBOX_PASSWD.as_bytes());
    l.add_file("etc/group", 0o644, BUSYBOX_GROUP.as_bytes());
    l.add_file("etc/hostname", 0o644, b"busybox\n");
    l.add_file("etc/hosts", 0o644, b"127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    l.add_file("etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\nhosts: files dns\n");
    Ok(l)
}

/// PATH of the busybox image.
pub const BUSYBOX_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The busybox image builder (one gzip layer, Cmd ["sh"], PATH), host platform.
pub fn busybox_image_builder() -> Result<ImageBuilder> {
    let layer = busybox_layer()?.finish(Compression::Gzip)?;
    Ok(ImageBuilder::new().layer(layer).cmd(&["sh"]).env(&[BUSYBOX_PATH]))
}

/// The busybox image for the host platform.
pub fn busybox_image() -> Result<BuiltImage> {
    busybox_image_builder()?.build()
}

/// Whether a registry host (`host[:port]`) is local, so plain HTTP is used.
fn is_local(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// Pushes an image or index anonymously; returns the manifest digest.
/// Registries on 127.0.0.1/localhost and `insecure_hosts` use plain HTTP.
pub async fn push(reference: &str, what: impl Into<Built<'_>>, insecure_hosts: &[&str]) -> Result<String> {
    push_with_auth(reference, what, insecure_hosts, &oci_client::secrets::RegistryAuth::Anonymous).await
}

/// Like [`push`], with credentials.
pub async fn push_with_auth(
    reference: &str,
    what: impl Into<Built<'_>>,
    insecure_hosts: &[&str],
    auth: &oci_client::secrets::RegistryAuth,
) -> Result<String> {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference, RegistryOperation};

    let what = what.into();
    let perr = |message: String| BuildError::Push { reference: reference.into(), message };
    let r: Reference = reference.parse().map_err(|e| perr(format!("bad reference: {e}")))?;
    let registry = r.resolve_registry().to_string();
    let mut insecure: Vec<String> = insecure_hosts.iter().map(|s| s.to_string()).collect();
    if is_local(&registry) {
        insecure.push(registry.clone());
    }
    let client = Client::new(ClientConfig { protocol: ClientProtocol::HttpsExcept(insecure), ..Default::default() });
    client.store_auth_if_needed(&registry, auth).await;
    if !matches!(auth, RegistryAuth::Anonymous) {
        client.auth(&r, auth, RegistryOperation::Push).await.map_err(|e| perr(format!("auth: {e}")))?;
    }
    let by_digest =
        |d: &str| Reference::with_digest(r.registry().to_string(), r.repository().to_string(), d.to_string());
    let manifest = |mt: &str| http::HeaderValue::from_str(mt).map_err(|e| perr(e.to_string()));

    for img in what.images() {
        for (d, _, b) in &img.blobs {
            client.push_blob(&r, b.clone(), d).await.map_err(|e| perr(format!("blob {d}: {e}")))?;
        }
        if let Built::Index(_) = what {
            let child = by_digest(&img.manifest_digest);
            client
                .push_manifest_raw(&child, img.manifest_bytes.clone(), manifest(&img.manifest_media_type)?)
                .await
                .map_err(|e| perr(format!("manifest {}: {e}", img.manifest_digest)))?;
        }
    }
    client
        .push_manifest_raw(&r, what.manifest_bytes().to_vec(), manifest(what.manifest_media_type())?)
        .await
        .map_err(|e| perr(format!("manifest: {e}")))?;
    Ok(what.manifest_digest().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<(String, EntryType, Option<String>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
                (String::from_utf8_lossy(&e.path_bytes()).into_owned(), e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn layer_entries_and_reproducibility() {
        let build = || {
            let mut l = LayerBuilder::new();
            l.add_dir("/etc", 0o755)
                .add_file("/etc/a", 0o644, b"a")
                .add_symlink("etc/b", "/etc/a")
                .add_hardlink("etc/c", "/etc/a")
                .add_whiteout("/etc/old")
                .add_opaque("/var")
                .add_char_device("dev/null", 0o666, 1, 3)
                .add_raw(b"../escape", EntryType::Regular, 0o644, None, b"x")
                .add_raw(b"/abs", EntryType::Regular, 0o644, None, b"x")
                .add_file(&format!("long/{}", "n".repeat(150)), 0o644, b"long")
                .add_symlink("l", &"t".repeat(150));
            l.finish(Compression::Gzip).unwrap()
        };
        let (a, b) = (build(), build());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.digest, digest::of_bytes(&a.blob));
        let tar = decompress(&a.blob, &a.media_type).unwrap();
        assert_eq!(a.diff_id, digest::of_bytes(&tar));
        let n = names(&tar);
        let paths: Vec<&str> = n.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(paths[..6], ["etc/", "etc/a", "etc/b", "etc/c", "etc/.wh.old", "var/.wh..wh..opq"]);
        assert_eq!(n[3].2.as_deref(), Some("etc/a"));
        assert_eq!(n[3].1, EntryType::Link);
        assert!(paths.contains(&"../escape") && paths.contains(&"/abs"));
        assert!(paths.iter().any(|p| p.len() > 150));
        assert_eq!(n.last().unwrap().2.as_deref(), Some("t".repeat(150).as_str()));
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let mut l = LayerBuilder::new();
        l.add_file("", 0o644, b"").add_file_from("x", 0o644, "/nonexistent/file");
        assert!(matches!(l.finish(Compression::None), Err(BuildError::Entry { .. })));
        assert!(LayerBuilder::new().add_file_from("x", 0o644, "/nonexistent").finish(Compression::Zstd).is_err());
    }

    #[test]
    fn image_and_index() {
        let layer = LayerBuilder::new().add_file("a", 0o644, b"a").finish(Compression::Zstd).unwrap();
        let img = ImageBuilder::new().layer(layer.clone()).cmd(&["sh"]).user("1000").build().unwrap();
        let m: Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
        assert_eq!(m["mediaType"], media::OCI_MANIFEST);
        assert_eq!(m["config"]["digest"], img.config_digest.as_str());
        assert_eq!(m["layers"][0]["mediaType"], media::OCI_LAYER_ZSTD);
        let c: Value = serde_json::from_slice(&img.config_bytes).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], layer.diff_id.as_str());
        assert_eq!(c["config"]["User"], "1000");

        let layer = LayerBuilder::new().add_file("a", 0o644, b"a").finish(Compression::Gzip).unwrap();
        let d = ImageBuilder::new().layer(layer).docker_media_types(true).platform("linux", "arm64", Some("v8"));
        let d = d.build().unwrap();
        let m: Value = serde_json::from_slice(&d.manifest_bytes).unwrap();
        assert_eq!(m["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(m["layers"][0]["mediaType"], media::DOCKER_LAYER_GZIP);
        let idx = IndexBuilder::new().add_image(img.clone()).add_image(d).docker_media_types(true).build().unwrap();
        let v: Value = serde_json::from_slice(&idx.manifest_bytes).unwrap();
        assert_eq!(v["mediaType"], media::DOCKER_LIST);
        assert_eq!(v["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(v["manifests"][0]["digest"], img.manifest_digest.as_str());
    }

    #[test]
    fn busybox_has_hardlinks() {
        if !Path::new("/bin/busybox").exists() {
            return;
        }
        let tar = busybox_layer().unwrap().into_tar().unwrap();
        let n = names(&tar);
        let sh = n.iter().find(|e| e.0 == "bin/sh").unwrap();
        assert_eq!((sh.1, sh.2.as_deref()), (EntryType::Link, Some("bin/busybox")));
        assert!(n.iter().any(|e| e.0 == "tmp/"));
        // Hard links carry their target's mode: containerd applies it to the inode.
        let mut a = tar::Archive::new(&tar[..]);
        let sh_mode = a.entries().unwrap().flatten().find(|e| e.path().unwrap().to_str() == Some("bin/sh")).unwrap().header().mode().unwrap();
        assert_eq!(sh_mode & 0o7777, 0o755);
        let img = busybox_image().unwrap();
        assert_eq!(img.blobs.len(), 2);
    }
}
