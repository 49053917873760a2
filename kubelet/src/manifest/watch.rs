//! Follows a manifest directory like kubelet's static pod path.
//!
//! inotify (through `notify`) wakes the watcher; it then rescans the directory and compares file
//! contents with what it saw before, so only real changes become events (a `touch` is none). A
//! slow periodic rescan is the safety net for missed notifications. Hidden files, editor
//! temporaries and names other than `*.yaml`, `*.yml`, `*.json` are ignored.

use super::{is_manifest_name, load_file, Loaded};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A change to one manifest file.
#[derive(Debug)]
pub enum ManifestEvent {
    /// A file appeared (also every file present when watching starts).
    Added { path: PathBuf, loaded: Loaded },
    /// A file's bytes changed; `loaded` is the new content. A pod whose UID is unchanged is the
    /// same pod (only formatting or comments changed); a new UID means replace it.
    Changed { path: PathBuf, loaded: Loaded },
    /// A file went away (or stopped being a manifest name).
    Removed { path: PathBuf },
}

impl ManifestEvent {
    pub fn path(&self) -> &Path {
        match self {
            ManifestEvent::Added { path, .. } | ManifestEvent::Changed { path, .. } | ManifestEvent::Removed { path } => path,
        }
    }
}

/// Watcher settings.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The safety-net rescan interval (kubelet's file check frequency is 20 s).
    pub rescan_interval: Duration,
    /// How long to let a burst of notifications settle before rescanning (editors write in steps).
    pub settle: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { rescan_interval: Duration::from_secs(20), settle: Duration::from_millis(100) }
    }
}

/// The event stream of a watched directory; stops watching when dropped. Needs a tokio runtime.
pub struct ManifestWatcher {
    rx: mpsc::Receiver<ManifestEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl ManifestWatcher {
    /// Starts watching `dir` (which must exist). The first events are `Added` for the files
    /// already there, in name order.
    pub fn new(dir: impl Into<PathBuf>, opts: WatchOptions) -> std::io::Result<ManifestWatcher> {
        let dir = dir.into();
        if !std::fs::metadata(&dir)?.is_dir() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, format!("{} is not a directory", dir.display())));
        }
        let (wake_tx, wake_rx) = mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            let _ = wake_tx.send(());
        })
        .map_err(std::io::Error::other)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(run(dir, opts, watcher, wake_rx, tx));
        Ok(ManifestWatcher { rx, task })
    }

    /// The next event; `None` only if the watcher stopped.
    pub async fn next(&mut self) -> Option<ManifestEvent> {
        self.rx.recv().await
    }
}

impl Drop for ManifestWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures::Stream for ManifestWatcher {
    type Item = ManifestEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ManifestEvent>> {
        self.rx.poll_recv(cx)
    }
}

type Seen = BTreeMap<PathBuf, [u8; 32]>;

async fn run(
    dir: PathBuf,
    opts: WatchOptions,
    _watcher: notify::RecommendedWatcher,
    mut wake: mpsc::UnboundedReceiver<()>,
    tx: mpsc::Sender<ManifestEvent>,
) {
    let mut seen = Seen::new();
    let mut tick = tokio::time::interval(opts.rescan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let d = dir.clone();
        let prev = seen.clone();
        let Ok((events, now)) = tokio::task::spawn_blocking(move || rescan(&d, &prev)).await else { return };
        seen = now;
        for e in events {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            w = wake.recv() => {
                if w.is_none() {
                    return;
                }
                // Let the burst settle, then drain it.
                tokio::time::sleep(opts.settle).await;
                while wake.try_recv().is_ok() {}
            }
        }
    }
}

/// Compares the directory with what was seen; returns the events and the new state.
fn rescan(dir: &Path, prev: &Seen) -> (Vec<ManifestEvent>, Seen) {
    let mut now = Seen::new();
    let mut events = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| is_manifest_name(p)).collect(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot list the manifest directory: {e}");
            Vec::new()
        }
    };
    files.sort();
    for path in files {
        // Follows symlinks; directories and unreadable entries are skipped.
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if !meta.is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        now.insert(path.clone(), hash);
        match prev.get(&path) {
            Some(h) if *h == hash => {}
            Some(_) => events.push(ManifestEvent::Changed { loaded: load_file(&path), path }),
            None => events.push(ManifestEvent::Added { loaded: load_file(&path), path }),
        }
    }
    for path in prev.keys() {
        if !now.contains_key(path) {
            events.push(ManifestEvent::Removed { path: path.clone() });
        }
    }
    (events, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec: {containers: [{name: c, image: busybox}]}\n";

    fn pod(name: &str) -> String {
        POD.replace("NAME", name)
    }

    /// Writes atomically (temp file + rename), so no rescan can see a half-written file.
    fn put(path: &Path, content: &str) {
        let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_str().unwrap()));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn name_of(loaded: &Loaded) -> String {
        loaded.valid_pods().next().unwrap().metadata.name.clone().unwrap()
    }

    #[tokio::test]
    async fn follows_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.yaml"), pod("a")).unwrap();
        std::fs::write(d.join(".hidden.yaml"), pod("h")).unwrap();
        std::fs::write(d.join("a.yaml.swp"), "x").unwrap();
        std::fs::write(d.join("a.yaml~"), "x").unwrap();
        std::fs::create_dir(d.join("sub.yaml")).unwrap();
        let mut w = ManifestWatcher::new(d, WatchOptions::default()).unwrap();

        match w.next().await.unwrap() {
            ManifestEvent::Added { path, loaded } => {
                assert_eq!(path, d.join("a.yaml"));
                assert_eq!(name_of(&loaded), "a");
            }
            e => panic!("{e:?}"),
        }
        // Ignored names cause no events; a new manifest does.
        std::fs::write(d.join("#b.yaml#"), "x").unwrap();
        put(&d.join("b.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#);
        match w.next().await.unwrap() {
            ManifestEvent::Added { path, loaded } => {
                assert_eq!(path, d.join("b.json"));
                assert_eq!(name_of(&loaded), "b");
            }
            e => panic!("{e:?}"),
        }
        // Rewriting the same content is no change; new content is.
        put(&d.join("a.yaml"), &pod("a"));
        put(&d.join("a.yaml"), &pod("a2"));
        match w.next().await.unwrap() {
            ManifestEvent::Changed { path, loaded } => {
                assert_eq!(path, d.join("a.yaml"));
                assert_eq!(name_of(&loaded), "a2");
            }
            e => panic!("{e:?}"),
        }
        // An invalid edit arrives as a change with errors.
        put(&d.join("a.yaml"), &pod("a3").replace("image: busybox", "imag: busybox"));
        match w.next().await.unwrap() {
            ManifestEvent::Changed { loaded, .. } => assert!(loaded.has_errors()),
            e => panic!("{e:?}"),
        }
        // An editor's save: write a temp file, rename over.
        std::fs::write(d.join(".a.yaml.tmp"), pod("a4")).unwrap();
        std::fs::rename(d.join(".a.yaml.tmp"), d.join("a.yaml")).unwrap();
        match w.next().await.unwrap() {
            ManifestEvent::Changed { loaded, .. } => assert_eq!(name_of(&loaded), "a4"),
            e => panic!("{e:?}"),
        }
        std::fs::remove_file(d.join("b.json")).unwrap();
        match w.next().await.unwrap() {
            ManifestEvent::Removed { path } => assert_eq!(path, d.join("b.json")),
            e => panic!("{e:?}"),
        }
        // Renamed to an ignored name: removed.
        std::fs::rename(d.join("a.yaml"), d.join("a.yaml.bak")).unwrap();
        match w.next().await.unwrap() {
            ManifestEvent::Removed { path } => assert_eq!(path, d.join("a.yaml")),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn rescan_is_the_safety_net() {
        // Without notifications, the periodic rescan alone finds changes.
        let dir = tempfile::tempdir().unwrap();
        let (ev, seen) = rescan(dir.path(), &Seen::new());
        assert!(ev.is_empty());
        std::fs::write(dir.path().join("p.yml"), pod("p")).unwrap();
        let (ev, seen) = rescan(dir.path(), &seen);
        assert!(matches!(&ev[..], [ManifestEvent::Added { .. }]));
        let (ev, seen) = rescan(dir.path(), &seen);
        assert!(ev.is_empty());
        std::fs::remove_file(dir.path().join("p.yml")).unwrap();
        let (ev, _) = rescan(dir.path(), &seen);
        assert!(matches!(&ev[..], [ManifestEvent::Removed { .. }]));
    }

    #[tokio::test]
    async fn missing_directory_is_an_error() {
        assert!(ManifestWatcher::new("/nonexistent/berth-manifests", WatchOptions::default()).is_err());
    }
}
