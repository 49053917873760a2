//! Kubernetes' atomic writer: a volume's files live in a timestamped
//! directory (`..2024_01_02_03_04_05.123456789`), `..data` is a symlink to
//! the current one and every top-level name is a symlink through `..data`.
//! An update writes a new timestamped directory and swaps `..data` with one
//! rename, so a reader sees the old set of files or the new one, never a mix;
//! names gone from the payload are removed.

use anyhow::{bail, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a volume's payload.
#[derive(Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
    /// Owner of the file (service account tokens of pods with one runAsUser).
    pub fs_user: Option<u32>,
}

impl std::fmt::Debug for FileProjection {
    // Contents stay out of logs: they may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileProjection({} bytes, mode {:o}, user {:?})", self.data.len(), self.mode, self.fs_user)
    }
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Checks a payload path as Kubernetes does: relative, no `..` element, not
/// starting with `..`, no empty elements.
pub fn validate_path(p: &str) -> anyhow::Result<()> {
    if p.is_empty() {
        bail!("invalid path: must not be empty");
    }
    if p.len() > 4096 {
        bail!("invalid path {p:?}: must be less than or equal to 4096 characters");
    }
    if p.starts_with('/') {
        bail!("invalid path {p:?}: must be relative path");
    }
    if p.starts_with("..") {
        bail!("invalid path {p:?}: must not start with '..'");
    }
    for part in p.split('/') {
        if part == ".." {
            bail!("invalid path {p:?}: must not contain '..'");
        }
        if part.len() > 255 {
            bail!("invalid path {p:?}: must not contain elements longer than 255 characters");
        }
    }
    Ok(())
}

/// The payload path in clean form (no `.` or empty elements).
fn clean(p: &str) -> String {
    p.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/")
}

fn top(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// Files and directories under `dir`, as relative paths.
fn walk(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let rd = match std::fs::read_dir(dir.join(&rel)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.join(&rel).display())),
        };
        for e in rd {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r.to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

/// The data directory `..data` points to now, if any.
pub fn current(dir: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(dir.join(DATA_DIR)).ok()?;
    let name = target.file_name()?;
    Some(dir.join(name))
}

fn new_ts_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let now = chrono::Utc::now();
    for i in 0..100u32 {
        let name = format!("..{}.{:09}{}", now.format("%Y_%m_%d_%H_%M_%S"), now.timestamp_subsec_nanos(), if i == 0 { String::new() } else { format!("_{i}") });
        let p = dir.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    bail!("no free timestamped directory name in {}", dir.display())
}

fn write_payload(ts: &Path, payload: &Payload) -> anyhow::Result<()> {
    for (rel, f) in payload {
        let path = ts.join(rel);
        if let Some(parent) = path.parent() {
            if parent != ts {
                std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(&f.data).with_context(|| format!("writing {}", path.display()))?;
        // The mode is set outright: the umask does not apply.
        file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o7777))?;
        if let Some(uid) = f.fs_user {
            std::os::unix::fs::fchown(&file, Some(uid), None).with_context(|| format!("chown {}", path.display()))?;
        }
    }
    Ok(())
}

/// Whether the payload differs from what the data directory holds.
fn differs(old: &Path, old_paths: &BTreeSet<String>, payload: &Payload) -> bool {
    for (rel, f) in payload {
        match std::fs::read(old.join(rel)) {
            Ok(d) if d == f.data => {}
            _ => return true,
        }
    }
    let wanted: BTreeSet<String> = payload.keys().flat_map(|k| ancestors(k)).collect();
    old_paths.iter().any(|p| !wanted.contains(p))
}

/// `a/b/c` → `a`, `a/b`, `a/b/c`.
fn ancestors(p: &str) -> Vec<String> {
    let parts: Vec<&str> = p.split('/').collect();
    (1..=parts.len()).map(|i| parts[..i].join("/")).collect()
}

/// Writes `payload` into `dir` (created if missing). `set_perms` runs on the
/// volume directory once the new files are written and before they become
/// visible. Returns whether anything was written.
pub fn write(dir: &Path, payload: &Payload, set_perms: &mut dyn FnMut(&Path) -> anyhow::Result<()>) -> anyhow::Result<bool> {
    let mut clean_payload = Payload::new();
    for (p, f) in payload {
        validate_path(p)?;
        let c = clean(p);
        if Path::new(&c).components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!("invalid path {p:?}");
        }
        clean_payload.insert(c, f.clone());
    }
    // A name that is both a file and a directory cannot be written.
    for k in clean_payload.keys() {
        for a in ancestors(k).iter().rev().skip(1) {
            if clean_payload.contains_key(a) {
                bail!("invalid payload: {a:?} is both a file and a directory");
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let old = current(dir);
    let old_paths = match &old {
        Some(o) => walk(o)?,
        None => BTreeSet::new(),
    };
    let new_tops: BTreeSet<&str> = clean_payload.keys().map(|k| top(k)).collect();
    let visible_ok = new_tops.iter().all(|t| std::fs::symlink_metadata(dir.join(t)).is_ok());
    if let Some(o) = &old {
        if !differs(o, &old_paths, &clean_payload) && visible_ok {
            return Ok(false);
        }
    }

    let ts = new_ts_dir(dir)?;
    if let Err(e) = write_payload(&ts, &clean_payload).and_then(|_| set_perms(dir)) {
        let _ = std::fs::remove_dir_all(&ts);
        return Err(e);
    }
    let ts_name = ts.file_name().expect("named").to_owned();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts_name, &tmp).with_context(|| format!("creating {}", tmp.display()))?;
    // The one step readers can observe: the rename swaps every file at once.
    std::fs::rename(&tmp, dir.join(DATA_DIR)).with_context(|| format!("renaming {} to {DATA_DIR}", tmp.display()))?;

    for t in &new_tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(t), &link).with_context(|| format!("creating {}", link.display()))?;
        }
    }
    let old_tops: BTreeSet<&str> = old_paths.iter().map(|p| top(p)).collect();
    for t in old_tops.difference(&new_tops) {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
    }
    // Old data directories, and any left by an interrupted write.
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name();
        let s = name.to_string_lossy();
        if s.starts_with("..") && s != DATA_DIR && name != ts_name && e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), "removing an old data directory: {err}");
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection { data: data.as_bytes().to_vec(), mode, fs_user: None }
    }

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items.iter().map(|(p, d, m)| (p.to_string(), file(d, *m))).collect()
    }

    fn noop(_: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn layout_updates_and_stale_keys() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vol");
        let p1 = payload(&[("a", "one", 0o644), ("b", "bee", 0o400), ("sub/c", "see", 0o600)]);
        assert!(write(&dir, &p1, &mut noop).unwrap());
        let data = std::fs::read_link(dir.join(DATA_DIR)).unwrap();
        assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
        assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(std::fs::read_link(dir.join("sub")).unwrap(), Path::new("..data/sub"));
        assert_eq!(std::fs::read_to_string(dir.join("sub/c")).unwrap(), "see");
        assert_eq!(std::fs::metadata(dir.join("b")).unwrap().mode() & 0o7777, 0o400);
        assert_eq!(std::fs::metadata(dir.join("sub/c")).unwrap().mode() & 0o7777, 0o600);
        let first = names(&dir);
        assert_eq!(first.len(), 5, "{first:?}");

        // The same payload writes nothing.
        assert!(!write(&dir, &p1, &mut noop).unwrap());
        assert_eq!(names(&dir), first);

        // An update swaps the data directory and drops stale names.
        let p2 = payload(&[("a", "two", 0o644), ("sub/d", "dee", 0o644)]);
        assert!(write(&dir, &p2, &mut noop).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "two");
        assert!(std::fs::symlink_metadata(dir.join("b")).is_err());
        assert!(std::fs::symlink_metadata(dir.join("sub/c")).is_err());
        assert_eq!(std::fs::read_to_string(dir.join("sub/d")).unwrap(), "dee");
        let now = names(&dir);
        assert!(!now.contains(data.to_str().unwrap()), "old data dir removed: {now:?}");
        assert_eq!(now.len(), 4, "{now:?}");

        // Empty payload: nothing visible left.
        assert!(write(&dir, &Payload::new(), &mut noop).unwrap());
        assert_eq!(names(&dir).len(), 2, "{:?}", names(&dir));
    }

    #[test]
    fn rejects_bad_paths() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "/abs", "..data", "a/../../b", "", "a/.."] {
            let p = payload(&[(bad, "x", 0o644)]);
            assert!(write(d.path(), &p, &mut noop).is_err(), "{bad:?} accepted");
        }
        let p = payload(&[("a", "x", 0o644), ("a/b", "y", 0o644)]);
        assert!(write(d.path(), &p, &mut noop).is_err());
        assert!(std::fs::read_dir(d.path()).unwrap().next().is_none(), "nothing written");
    }

    #[test]
    fn set_perms_runs_before_the_swap() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        let mut seen = None;
        write(&dir, &payload(&[("k", "v", 0o644)]), &mut |p: &Path| {
            seen = Some((current(p), walk(p).unwrap()));
            Ok(())
        })
        .unwrap();
        let (cur, files) = seen.unwrap();
        assert!(cur.is_none(), "..data not there yet");
        assert!(files.iter().any(|f| f.ends_with("/k")), "{files:?}");
        // A failing hook leaves the old data in place.
        let r = write(&dir, &payload(&[("k", "new", 0o644)]), &mut |_: &Path| anyhow::bail!("no"));
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(dir.join("k")).unwrap(), "v");
        assert_eq!(names(&dir).len(), 3);
    }

    #[test]
    fn readers_never_see_a_mix() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        let version = |n: usize| payload(&[("a", &n.to_string(), 0o644), ("b", &n.to_string(), 0o644), ("c/d", &"x".repeat(n % 7 * 1000), 0o644)]);
        write(&dir, &version(0), &mut noop).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let dir = dir.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut reads, mut torn) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // A consistent view: resolve ..data once, read through it.
                    let Ok(ts) = std::fs::read_link(dir.join(DATA_DIR)) else { continue };
                    let (Ok(a), Ok(b)) = (std::fs::read_to_string(dir.join(&ts).join("a")), std::fs::read_to_string(dir.join(&ts).join("b"))) else { continue };
                    reads += 1;
                    if a != b {
                        torn += 1;
                    }
                }
                (reads, torn)
            })
        };
        for n in 1..300 {
            write(&dir, &version(n), &mut noop).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (reads, torn) = reader.join().unwrap();
        assert_eq!(torn, 0, "{torn} of {reads} reads saw a mix");
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "299");
    }
}
