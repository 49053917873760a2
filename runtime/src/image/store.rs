//! The content store (blobs by digest, verified before use) and the image
//! records database.
//!
//! Layout under `<root>/images`:
//! - `blobs/sha256/<hex>`: verified content only; written by rename from `ingest/`.
//! - `ingest/`: downloads in progress, and per-digest lock files that make
//!   concurrent pulls (in any process) share one download.
//! - `images.json`: the image records, replaced atomically under `images.lock`.
//! - `gc.lock`: held shared by pulls and imports, exclusively by removal.

use super::error::{ImageError, Result};
use crate::digest::{self, HashingReader};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A held file lock; released on drop.
pub struct FileLock(#[allow(dead_code)] Flock<File>);

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(ImageError::io(path))
}

/// Takes a blocking flock on `path` (created if missing).
pub fn lock_file(path: &Path, exclusive: bool) -> Result<FileLock> {
    let f = open_lock(path)?;
    let arg = if exclusive { FlockArg::LockExclusive } else { FlockArg::LockShared };
    Flock::lock(f, arg)
        .map(FileLock)
        .map_err(|(_, e)| ImageError::Io { path: path.into(), source: e.into() })
}

/// Takes an exclusive flock on `path` if nobody holds it; `None` if busy.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<FileLock>> {
    let f = open_lock(path)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(FileLock(l))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(ImageError::Io { path: path.into(), source: e.into() }),
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(ImageError::io(path))
}

pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self> {
        for d in ["blobs/sha256", "ingest"] {
            fs::create_dir_all(root.join(d)).map_err(ImageError::io(root.join(d)))?;
        }
        Ok(Self { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest::hex_part(digest).map_err(|detail| ImageError::Malformed {
            reference: String::new(),
            what: "digest".into(),
            detail,
        })?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// Whether a verified blob is present (with the given size, when known).
    pub fn has(&self, digest: &str, size: Option<u64>) -> bool {
        let Ok(p) = self.blob_path(digest) else { return false };
        match fs::metadata(p) {
            Ok(m) => size.is_none_or(|s| m.len() == s),
            Err(_) => false,
        }
    }

    /// Reads a small blob (manifest, config), re-verifying its digest.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let b = fs::read(&p).map_err(ImageError::io(&p))?;
        let actual = digest::of_bytes(&b);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: "stored blob".into(),
                digest: digest.into(),
                actual,
                size: b.len() as u64,
            });
        }
        Ok(b)
    }

    /// Stores bytes that must match `digest`.
    pub fn write_bytes(&self, what: &str, digest: &str, bytes: &[u8]) -> Result<()> {
        let actual = digest::of_bytes(bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: what.into(),
                digest: digest.into(),
                actual,
                size: bytes.len() as u64,
            });
        }
        let p = self.blob_path(digest)?;
        if !p.exists() {
            write_atomic(&p, bytes)?;
        }
        Ok(())
    }

    /// Locks a digest for ingestion, so one process downloads it and others wait.
    pub fn lock_ingest(&self, digest: &str) -> Result<FileLock> {
        let hex = digest::hex_part(digest).unwrap_or("invalid");
        lock_file(&self.root.join("ingest").join(format!("{hex}.lock")), true)
    }

    /// A fresh temp path for a download of `digest`.
    pub fn ingest_path(&self, digest: &str) -> PathBuf {
        let hex = digest::hex_part(digest).unwrap_or("invalid");
        self.root.join("ingest").join(format!("{hex}.{}.{}", std::process::id(), rand::random::<u32>()))
    }

    /// Verifies a finished download and moves it into the store; removes it
    /// when it does not match.
    pub fn commit(&self, what: &str, tmp: &Path, digest: &str, size: Option<u64>, actual: &str, actual_size: u64) -> Result<()> {
        let bad = if actual != digest {
            Some(ImageError::DigestMismatch {
                what: what.into(),
                digest: digest.into(),
                actual: actual.into(),
                size: actual_size,
            })
        } else {
            size.filter(|s| *s != actual_size).map(|expected| ImageError::SizeMismatch {
                what: what.into(),
                digest: digest.into(),
                expected,
                actual: actual_size,
            })
        };
        if let Some(e) = bad {
            let _ = fs::remove_file(tmp);
            return Err(e);
        }
        let dest = self.blob_path(digest)?;
        fs::rename(tmp, &dest).map_err(ImageError::io(&dest))
    }

    /// Copies a local file into the store, verifying digest and size.
    pub fn ingest_file(&self, what: &str, src: &Path, digest: &str, size: Option<u64>) -> Result<()> {
        if self.has(digest, size) {
            return Ok(());
        }
        let _lock = self.lock_ingest(digest)?;
        if self.has(digest, size) {
            return Ok(());
        }
        let tmp = self.ingest_path(digest);
        let copied = (|| -> io::Result<(u64, String)> {
            let mut r = HashingReader::new(File::open(src)?);
            let mut w = File::create(&tmp)?;
            io::copy(&mut r, &mut w)?;
            w.sync_all()?;
            Ok(r.finish())
        })();
        let (n, actual) = match copied {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(ImageError::Io { path: src.into(), source: e });
            }
        };
        self.commit(what, &tmp, digest, size, &actual, n)
    }

    /// Digests of every stored blob.
    pub fn list(&self) -> Result<Vec<String>> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let name = e.map_err(ImageError::io(&dir))?.file_name();
            let name = name.to_string_lossy();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    pub fn remove(&self, digest: &str) -> Result<()> {
        let p = self.blob_path(digest)?;
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ImageError::Io { path: p, source: e }),
            _ => Ok(()),
        }
    }

    /// Removes downloads left behind by a crash (not those another process holds).
    pub fn cleanup_ingest(&self) {
        let dir = self.root.join("ingest");
        let Ok(entries) = fs::read_dir(&dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((hex, rest)) = name.split_once('.') else { continue };
            if rest == "lock" {
                continue;
            }
            let pid_alive = rest
                .split('.')
                .next()
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !pid_alive {
                let _ = hex;
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Bytes and inodes used by the blobs.
    pub fn usage(&self) -> (u64, u64) {
        dir_usage(&self.root)
    }
}

/// Bytes (allocated blocks) and inodes under a directory, not following symlinks.
pub fn dir_usage(root: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&d) else { continue };
        bytes += m.blocks() * 512;
        inodes += 1;
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, inodes)
}

/// One layer of a stored image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub diff_id: String,
    pub chain_id: String,
}

/// A stored image: what `images ls` and the CRI ImageService report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The config digest (the CRI image ID).
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The platform manifest.
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// The index the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<String>,
    /// Config plus compressed layer bytes.
    pub size: u64,
    pub layers: Vec<LayerRecord>,
    /// RFC 3339 time the image was stored.
    pub stored_at: String,
    #[serde(default)]
    pub pinned: bool,
    /// Manifests, indexes and layer blobs of earlier pulls or imports of the
    /// same image (same config) through other manifests: kept with the image
    /// and removed with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_blobs: Vec<String>,
}

impl ImageRecord {
    /// The chain ID of the top layer: the image's root filesystem snapshot.
    pub fn top_chain_id(&self) -> Option<&str> {
        self.layers.last().map(|l| l.chain_id.as_str())
    }

    /// Every blob the image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        [self.id.as_str(), self.manifest_digest.as_str()]
            .into_iter()
            .chain(self.index_digest.as_deref())
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
            .chain(self.other_blobs.iter().map(String::as_str))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordFile {
    images: Vec<ImageRecord>,
}

/// The image records, shared by every process using the same state root.
pub struct RecordDb {
    path: PathBuf,
    lock: PathBuf,
}

impl RecordDb {
    pub fn open(dir: &Path) -> Self {
        Self { path: dir.join("images.json"), lock: dir.join("images.lock") }
    }

    fn load(&self) -> Result<RecordFile> {
        match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::Io {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RecordFile::default()),
            Err(e) => Err(ImageError::Io { path: self.path.clone(), source: e }),
        }
    }

    pub fn all(&self) -> Result<Vec<ImageRecord>> {
        let _l = lock_file(&self.lock, false)?;
        Ok(self.load()?.images)
    }

    /// Reads, changes and writes the records under an exclusive lock.
    pub fn update<T>(&self, f: impl FnOnce(&mut Vec<ImageRecord>) -> Result<T>) -> Result<T> {
        let _l = lock_file(&self.lock, true)?;
        let mut file = self.load()?;
        let out = f(&mut file.images)?;
        let bytes = serde_json::to_vec_pretty(&file).expect("records serialize");
        write_atomic(&self.path, &bytes)?;
        Ok(out)
    }
}
