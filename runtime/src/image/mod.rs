//! Images: references, pulling, the content store, layer snapshots and import.
//!
//! [`ImageService`] is what the CRI ImageService and `berth images` use. An
//! image becomes visible only once every blob is verified and every layer
//! unpacked; its record is written last.

pub mod builder;
pub mod error;
pub mod import;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use error::{ImageError, Result};
pub use pull::Credentials;
pub use store::{ImageRecord, LayerRecord};

use crate::config::Config;
use manifest::{Descriptor, Manifest};
use snapshot::Snapshotter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{ContentStore, RecordDb};

/// What a pull reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum PullEvent<'a> {
    Resolved { reference: &'a str, digest: &'a str },
    Exists { digest: &'a str, size: u64 },
    Downloading { digest: &'a str, size: u64 },
    Progress { digest: &'a str, done: u64, total: u64 },
    Downloaded { digest: &'a str, size: u64 },
    Unpacking { digest: &'a str },
    Done { id: &'a str },
}

pub trait PullProgress: Send + Sync {
    fn event(&self, ev: PullEvent<'_>);
}

/// Logs pull steps through `tracing`.
pub struct LogProgress;

impl PullProgress for LogProgress {
    fn event(&self, ev: PullEvent<'_>) {
        match ev {
            PullEvent::Progress { .. } => {}
            PullEvent::Resolved { reference, digest } => tracing::info!(%reference, %digest, "resolved"),
            PullEvent::Exists { digest, size } => tracing::info!(%digest, size, "already present"),
            PullEvent::Downloading { digest, size } => tracing::info!(%digest, size, "downloading"),
            PullEvent::Downloaded { digest, size } => tracing::info!(%digest, size, "downloaded"),
            PullEvent::Unpacking { digest } => tracing::info!(%digest, "unpacking"),
            PullEvent::Done { id } => tracing::info!(%id, "pulled"),
        }
    }
}

/// Bytes and inodes used by images, for CRI ImageFsInfo.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// The image service; cheap to clone.
#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    dir: PathBuf,
    content: ContentStore,
    snapshots: Snapshotter,
    db: RecordDb,
}

/// How an image came to be stored, for its record.
struct Origin {
    /// Names to give the image (`repo:tag`).
    tags: Vec<String>,
    /// `repo@digest` names.
    digests: Vec<String>,
    index_digest: Option<String>,
}

impl ImageService {
    /// Opens (creating) the image state under `<cfg.root>/images`.
    pub fn open(cfg: &Config) -> Result<Self> {
        let dir = cfg.root.join("images");
        let content = ContentStore::open(&dir)?;
        content.cleanup_ingest();
        let snapshots = Snapshotter::new(cfg.root.join("snapshots")).map_err(ImageError::io(cfg.root.join("snapshots")))?;
        let _ = snapshots.cleanup_incomplete();
        let db = RecordDb::open(&dir);
        Ok(Self { inner: Arc::new(Inner { cfg: cfg.clone(), dir, content, snapshots, db }) })
    }

    pub fn snapshots(&self) -> &Snapshotter {
        &self.inner.snapshots
    }

    pub fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    /// Pulls an image; returns its record. Blobs already present are reused.
    /// A failed pull leaves no blobs or snapshots behind (unless another
    /// pull is running, in which case a later failure or removal collects them).
    pub async fn pull(&self, image: &str, creds: &Credentials, progress: &dyn PullProgress) -> Result<ImageRecord> {
        let r = reference::parse(image)?;
        let gc = self.gc_lock(false).await?;
        let res = self.pull_locked(&r, creds, progress).await;
        drop(gc);
        if res.is_err() {
            self.collect_after_failure().await;
        }
        res
    }

    async fn pull_locked(&self, r: &reference::Reference, creds: &Credentials, progress: &dyn PullProgress) -> Result<ImageRecord> {
        let r = r.clone();
        let name = r.whole();
        let (remote, bytes, top_digest) = pull::resolve(&self.inner.cfg, &r, creds).await?;
        progress.event(PullEvent::Resolved { reference: &name, digest: &top_digest });
        let content = &self.inner.content;
        let mut manifest = Manifest::parse(&name, &bytes, None)?;
        let mut manifest_bytes = bytes;
        let mut manifest_digest = top_digest.clone();
        let mut index_digest = None;
        if let Manifest::Index { manifests, .. } = &manifest {
            content.write_bytes(&format!("index of {name}"), &top_digest, &manifest_bytes)?;
            let chosen = manifest::choose_platform(&name, manifests, &manifest::host_platform())?.clone();
            let (b, d) = remote.manifest(Some(&chosen.digest)).await?;
            manifest = Manifest::parse(&name, &b, Some(&chosen.media_type))?;
            if matches!(manifest, Manifest::Index { .. }) {
                return Err(ImageError::Malformed { reference: name, what: "index".into(), detail: "nested index".into() });
            }
            index_digest = Some(top_digest.clone());
            manifest_bytes = b;
            manifest_digest = d;
        }
        content.write_bytes(&format!("manifest of {name}"), &manifest_digest, &manifest_bytes)?;
        let Manifest::Image { config, layers, .. } = &manifest else { unreachable!("index handled above") };
        remote.fetch_blob(content, config, "config", progress).await?;
        let fetches = layers.iter().map(|l| remote.fetch_blob(content, l, "layer", progress));
        futures::future::try_join_all(fetches).await?;
        let origin = Origin {
            tags: reference::repo_tag(&r).into_iter().collect(),
            digests: vec![reference::repo_digest(&r, &top_digest)],
            index_digest,
        };
        let rec = self.install(name, manifest, manifest_digest, origin, progress).await?;
        progress.event(PullEvent::Done { id: &rec.id });
        Ok(rec)
    }

    async fn gc_lock(&self, exclusive: bool) -> Result<store::FileLock> {
        let path = self.inner.dir.join("gc.lock");
        tokio::task::spawn_blocking(move || store::lock_file(&path, exclusive)).await.expect("lock task")
    }

    /// After a failed pull or import: removes what no image uses, if no other
    /// pull, import or removal is running (they hold the gc lock).
    async fn collect_after_failure(&self) {
        let this = self.clone();
        let res = tokio::task::spawn_blocking(move || {
            match store::try_lock_exclusive(&this.inner.dir.join("gc.lock"))? {
                Some(_gc) => this.collect_unused(),
                None => Ok(()),
            }
        })
        .await
        .expect("gc task");
        if let Err(e) = res {
            tracing::warn!(error = %e, "removing the leftovers of a failed pull");
        }
    }

    /// Removes every blob and snapshot no image record uses. The caller holds
    /// the gc lock exclusively, so no pull or import is half done.
    fn collect_unused(&self) -> Result<()> {
        let images = self.list()?;
        let used_blobs: std::collections::HashSet<&str> = images.iter().flat_map(|i| i.blobs()).collect();
        let used_chains: std::collections::HashSet<&str> =
            images.iter().flat_map(|i| i.layers.iter().map(|l| l.chain_id.as_str())).collect();
        for b in self.inner.content.list()? {
            if !used_blobs.contains(b.as_str()) {
                tracing::debug!(digest = %b, "removing unused blob");
                self.inner.content.remove(&b)?;
            }
        }
        let snapshots = &self.inner.snapshots;
        for c in snapshots.list().map_err(ImageError::io(snapshots.root()))? {
            if !used_chains.contains(c.as_str()) {
                tracing::debug!(chain_id = %c, "removing unused snapshot");
                snapshots.remove(&c).map_err(ImageError::io(snapshots.path(&c)))?;
            }
        }
        Ok(())
    }

    /// Unpacks the layers of a manifest whose blobs are all stored, then
    /// writes the image record.
    async fn install(&self, name: String, manifest: Manifest, manifest_digest: String, origin: Origin, progress: &dyn PullProgress) -> Result<ImageRecord> {
        let Manifest::Image { media_type, config, layers } = manifest else {
            return Err(ImageError::Malformed { reference: name, what: "manifest".into(), detail: "not an image manifest".into() });
        };
        let config_bytes = self.inner.content.read(&config.digest)?;
        let diff_ids = manifest::config_diff_ids(&name, &config_bytes)?;
        if diff_ids.len() != layers.len() {
            return Err(ImageError::Malformed {
                reference: name,
                what: "image config".into(),
                detail: format!("{} diff_ids for {} layers", diff_ids.len(), layers.len()),
            });
        }
        let mut records = Vec::new();
        let mut parent: Option<String> = None;
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            let chain = Snapshotter::chain_id(parent.as_deref(), diff_id);
            if !self.inner.snapshots.exists(&chain) {
                progress.event(PullEvent::Unpacking { digest: &layer.digest });
                self.unpack(&name, parent.clone(), layer, diff_id).await?;
            }
            records.push(LayerRecord {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
                diff_id: diff_id.clone(),
                chain_id: chain.clone(),
            });
            parent = Some(chain);
        }
        let rec = ImageRecord {
            id: config.digest.clone(),
            repo_tags: origin.tags,
            repo_digests: origin.digests,
            manifest_digest,
            manifest_media_type: media_type,
            index_digest: origin.index_digest,
            size: config.size + layers.iter().map(|l| l.size).sum::<u64>(),
            layers: records,
            stored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pinned: false,
            other_blobs: Vec::new(),
        };
        self.inner.db.update(|images| Ok(merge_record(images, rec)))
    }

    async fn unpack(&self, name: &str, parent: Option<String>, layer: &Descriptor, diff_id: &str) -> Result<()> {
        let inner = self.inner.clone();
        let blob = inner.content.blob_path(&layer.digest)?;
        let (mt, diff, digest) = (layer.media_type.clone(), diff_id.to_string(), layer.digest.clone());
        let res = tokio::task::spawn_blocking(move || inner.snapshots.apply_layer(parent.as_deref(), &blob, &mt, Some(&diff)))
            .await
            .expect("unpack task");
        res.map(|_| ()).map_err(|source| ImageError::Unpack { reference: name.into(), digest, source })
    }

    /// Imports every image of an OCI layout directory, OCI archive or
    /// `docker save` archive. `name` overrides the archive's own names (it is
    /// required when the archive names none).
    pub async fn import(&self, path: &Path, name: Option<&str>, progress: &dyn PullProgress) -> Result<Vec<ImageRecord>> {
        let gc = self.gc_lock(false).await?;
        let res = self.import_locked(path, name, progress).await;
        drop(gc);
        if res.is_err() {
            self.collect_after_failure().await;
        }
        res
    }

    async fn import_locked(&self, path: &Path, name: Option<&str>, progress: &dyn PullProgress) -> Result<Vec<ImageRecord>> {
        let this = self.clone();
        let (path, name) = (path.to_path_buf(), name.map(str::to_string));
        let staged = tokio::task::spawn_blocking(move || this.stage_import(&path, name.as_deref())).await.expect("import task")?;
        let mut out = Vec::new();
        for (label, manifest, digest, origin) in staged {
            out.push(self.install(label, manifest, digest, origin, progress).await?);
        }
        Ok(out)
    }

    /// Copies the blobs of every image of an archive into the content store,
    /// verified; returns what `install` needs for each.
    fn stage_import(&self, path: &Path, name: Option<&str>) -> Result<Vec<(String, Manifest, String, Origin)>> {
        let import_err = |e: import::ImportError| ImageError::Import { path: path.into(), detail: e.to_string() };
        let src = import::open_in(path, Some(&self.inner.dir.join("ingest"))).map_err(import_err)?;
        if src.images().is_empty() {
            return Err(ImageError::Import { path: path.into(), detail: "the archive holds no images".into() });
        }
        let content = &self.inner.content;
        let mut staged = Vec::new();
        for img in src.images() {
            let given = name.or(img.name.as_deref()).filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
            // A bare tag (`latest`) from an OCI layout names no repository.
            let r = match given {
                Some(n) if n.contains('/') || n.contains(':') || name.is_some() => Some(reference::parse(n)?),
                _ => None,
            };
            let label = r.as_ref().map(|r| r.whole()).unwrap_or_else(|| format!("{}@{}", path.display(), img.manifest_digest));
            let mut manifest = Manifest::parse(&label, &img.manifest_bytes, Some(&img.manifest_media_type))?;
            let mut digest = img.manifest_digest.clone();
            let mut index_digest = None;
            content.write_bytes(&format!("manifest of {label}"), &digest, &img.manifest_bytes)?;
            if let Manifest::Index { manifests, .. } = &manifest {
                let chosen = manifest::choose_platform(&label, manifests, &manifest::host_platform())?.clone();
                let bytes = src.read_blob(&chosen.digest).map_err(import_err)?;
                content.write_bytes(&format!("manifest of {label}"), &chosen.digest, &bytes)?;
                index_digest = Some(digest);
                digest = chosen.digest.clone();
                manifest = Manifest::parse(&label, &bytes, Some(&chosen.media_type))?;
            }
            let Manifest::Image { config, layers, .. } = &manifest else {
                return Err(ImageError::Malformed { reference: label, what: "index".into(), detail: "nested index".into() });
            };
            for d in std::iter::once(config).chain(layers) {
                let blob = src.blob_path(&d.digest).map_err(import_err)?;
                content.ingest_file(&format!("blob of {label}"), &blob, &d.digest, Some(d.size))?;
            }
            let top = index_digest.clone().unwrap_or_else(|| digest.clone());
            let origin = Origin {
                tags: r.as_ref().and_then(reference::repo_tag).into_iter().collect(),
                digests: r.as_ref().map(|r| reference::repo_digest(r, &top)).into_iter().collect(),
                index_digest,
            };
            staged.push((label, manifest, digest, origin));
        }
        Ok(staged)
    }

    /// Every stored image.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.inner.db.all()
    }

    /// Finds an image by ID (full, bare hex, or unique prefix of at least 12
    /// hex digits), `repo:tag`, `repo@digest`, or manifest digest.
    pub fn status(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(find(&self.list()?, name)?.cloned())
    }

    /// The image config JSON of a stored image.
    pub fn config_json(&self, rec: &ImageRecord) -> Result<serde_json::Value> {
        let b = self.inner.content.read(&rec.id)?;
        serde_json::from_slice(&b).map_err(|e| ImageError::Malformed { reference: rec.id.clone(), what: "image config".into(), detail: e.to_string() })
    }

    /// The parsed OCI image config of a stored image.
    pub fn config(&self, rec: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration> {
        let b = self.inner.content.read(&rec.id)?;
        serde_json::from_slice(&b).map_err(|e| ImageError::Malformed { reference: rec.id.clone(), what: "image config".into(), detail: e.to_string() })
    }

    /// Removes an image with all its names, then the blobs and snapshots no
    /// other image uses. Removing an absent image is an error `NotFound`.
    pub async fn remove(&self, name: &str) -> Result<ImageRecord> {
        let _gc = self.gc_lock(true).await?;
        let removed = self.inner.db.update(|images| {
            let rec = find(images, name)?.cloned().ok_or_else(|| ImageError::NotFound { reference: name.into() })?;
            images.retain(|i| i.id != rec.id);
            Ok((rec, images.clone()))
        });
        let (rec, rest) = removed?;
        let used_blobs: std::collections::HashSet<&str> = rest.iter().flat_map(|i| i.blobs()).collect();
        let used_chains: std::collections::HashSet<&str> = rest.iter().flat_map(|i| i.layers.iter().map(|l| l.chain_id.as_str())).collect();
        for b in rec.blobs().filter(|b| !used_blobs.contains(b)) {
            self.inner.content.remove(b)?;
        }
        for l in rec.layers.iter().rev().filter(|l| !used_chains.contains(l.chain_id.as_str())) {
            self.inner.snapshots.remove(&l.chain_id).map_err(ImageError::io(self.inner.snapshots.path(&l.chain_id)))?;
        }
        // Also whatever earlier failed pulls could not clean up.
        if let Err(e) = self.collect_unused() {
            tracing::warn!(error = %e, "removing unused blobs and snapshots");
        }
        Ok(rec)
    }

    /// Bytes and inodes used by blobs and snapshots.
    pub fn fs_usage(&self) -> Result<FsUsage> {
        let (b1, i1) = self.inner.content.usage();
        let (b2, i2) = self.inner.snapshots.usage().map_err(ImageError::io(self.snapshot_root()))?;
        Ok(FsUsage { bytes: b1 + b2, inodes: i1 + i2 })
    }

    /// Where image data lives (the CRI image filesystem mountpoint).
    pub fn snapshot_root(&self) -> PathBuf {
        self.inner.cfg.root.join("snapshots")
    }

    pub fn root(&self) -> &Path {
        &self.inner.cfg.root
    }
}

/// Adds a record, moving its names off any other image, and merging with an
/// existing record of the same ID.
fn merge_record(images: &mut Vec<ImageRecord>, mut rec: ImageRecord) -> ImageRecord {
    for other in images.iter_mut().filter(|i| i.id != rec.id) {
        other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
    }
    if let Some(existing) = images.iter_mut().find(|i| i.id == rec.id) {
        // The image as last pulled or imported (its manifest may differ:
        // another media type, index or layer compression); the names, age and
        // pin of the stored one; and the blobs of both, so that removing the
        // image removes them all.
        let mut tags = std::mem::take(&mut existing.repo_tags);
        for t in rec.repo_tags.drain(..) {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let mut digests = std::mem::take(&mut existing.repo_digests);
        for d in rec.repo_digests.drain(..) {
            if !digests.contains(&d) {
                digests.push(d);
            }
        }
        let mut other: Vec<String> = Vec::new();
        for b in existing.blobs() {
            if !rec.blobs().any(|n| n == b) && !other.iter().any(|o| o == b) {
                other.push(b.to_string());
            }
        }
        rec.repo_tags = tags;
        rec.repo_digests = digests;
        rec.other_blobs = other;
        rec.stored_at = std::mem::take(&mut existing.stored_at);
        rec.pinned = existing.pinned;
        *existing = rec.clone();
        return rec;
    }
    images.push(rec.clone());
    rec
}

fn find<'a>(images: &'a [ImageRecord], name: &str) -> Result<Option<&'a ImageRecord>> {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 12 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        let by_id: Vec<_> = images.iter().filter(|i| i.id["sha256:".len()..].starts_with(hex)).collect();
        match by_id.len() {
            1 => return Ok(Some(by_id[0])),
            n if n > 1 => {
                return Err(ImageError::InvalidReference { reference: name.into(), reason: format!("ID prefix matches {n} images") })
            }
            _ => {}
        }
        if hex.len() == 64 {
            let d = format!("sha256:{hex}");
            return Ok(images.iter().find(|i| i.manifest_digest == d || i.index_digest.as_deref() == Some(&d)));
        }
    }
    let r = reference::parse(name)?;
    Ok(match (reference::repo_tag(&r), r.digest()) {
        (_, Some(d)) => {
            let want = reference::repo_digest(&r, d);
            images.iter().find(|i| i.repo_digests.contains(&want))
        }
        (Some(tag), None) => images.iter().find(|i| i.repo_tags.contains(&tag)),
        (None, None) => None,
    })
}
