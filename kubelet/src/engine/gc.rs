//! Garbage collection of images and dead containers, after kubelet's
//! image and container GC: images no container uses are removed, least
//! recently used first, once the image filesystem is fuller than
//! `imageGCHighThresholdPercent`, until it is back at the low threshold
//! (never images younger than `imageMinimumGCAge`, never pinned ones); dead
//! containers beyond the newest of each pod and name, and those of pods
//! that are gone, are removed (two dead containers of each pod and name are
//! kept where kubelet keeps one: `berth logs --previous` reads the older).

use super::spec;
use super::Shared;
use cri_proto::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct ImageGc {
    /// When each image was first seen and last seen in use.
    seen: std::sync::Mutex<HashMap<String, (Instant, Instant)>>,
}

/// One image as the GC sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: String,
    pub size: u64,
    pub first_seen: Instant,
    pub last_used: Instant,
}

impl ImageGc {
    /// Unused images (with sizes), oldest use first; updates the records.
    /// Images of containers (any state) are in use, and so are those of
    /// admitted pods whose containers do not exist yet.
    async fn unused(&self, shared: &Shared, pods: &[Pod], now: Instant) -> anyhow::Result<Vec<Candidate>> {
        let mut img = shared.cri.images.clone();
        let images = img.list_images(cri::ListImagesRequest::default()).await?.into_inner().images;
        let mut rt = shared.cri.runtime.clone();
        let containers = rt.list_containers(cri::ListContainersRequest::default()).await?.into_inner().containers;
        let mut used: HashSet<String> = containers.iter().flat_map(|c| [c.image_ref.clone(), c.image.as_ref().map(|i| i.image.clone()).unwrap_or_default()]).filter(|s| !s.is_empty()).collect();
        let wanted: HashSet<String> = pods.iter().flat_map(|p| {
            let s = spec::spec(p);
            s.containers.iter().chain(s.init_containers.iter().flatten()).filter_map(|c| c.image.clone()).collect::<Vec<_>>()
        }).collect();
        for w in wanted {
            let st = img.image_status(cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: w, ..Default::default() }), verbose: false }).await;
            if let Some(i) = st.ok().and_then(|r| r.into_inner().image) {
                used.insert(i.id);
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let ids: HashSet<&String> = images.iter().map(|i| &i.id).collect();
        seen.retain(|id, _| ids.contains(id));
        let mut out = Vec::new();
        for i in &images {
            let e = seen.entry(i.id.clone()).or_insert((now, now));
            let in_use = used.contains(&i.id) || i.repo_tags.iter().chain(i.repo_digests.iter()).any(|t| used.contains(t));
            if in_use {
                e.1 = now;
                continue;
            }
            if i.pinned {
                continue;
            }
            out.push(Candidate { id: i.id.clone(), size: i.size, first_seen: e.0, last_used: e.1 });
        }
        out.sort_by_key(|c| (c.last_used, c.first_seen));
        Ok(out)
    }

    /// Removes unused images until `bytes` are freed (all when `None`);
    /// returns what was freed.
    pub async fn delete_unused(&self, shared: &Shared, pods: &[Pod], bytes: Option<u64>, min_age: Duration) -> anyhow::Result<u64> {
        let now = Instant::now();
        let mut freed = 0u64;
        let mut img = shared.cri.images.clone();
        for c in self.unused(shared, pods, now).await? {
            if bytes.is_some_and(|b| freed >= b) {
                break;
            }
            if now.duration_since(c.first_seen) < min_age {
                continue;
            }
            match img.remove_image(cri::RemoveImageRequest { image: Some(cri::ImageSpec { image: c.id.clone(), ..Default::default() }) }).await {
                Ok(_) => {
                    tracing::info!(image = %c.id, size = c.size, "image garbage collection: removed an unused image");
                    freed += c.size;
                }
                Err(e) => tracing::warn!(image = %c.id, "image garbage collection: {}", e.message()),
            }
        }
        Ok(freed)
    }

    /// Kubelet's periodic image GC against the high and low thresholds.
    pub async fn collect(&self, shared: &Shared, pods: &[Pod]) -> anyhow::Result<()> {
        let cfg = &shared.node.cfg;
        let (high, low) = (cfg.image_gc_high_threshold_percent, cfg.image_gc_low_threshold_percent);
        let min_age = cfg.duration(&cfg.image_minimum_gc_age, Duration::from_secs(120));
        // Keep the records of use fresh even when nothing is removed.
        let _ = self.unused(shared, pods, Instant::now()).await?;
        if high >= 100 {
            return Ok(());
        }
        let Some(fs) = shared.stats.latest().and_then(|s| s.node.imagefs) else { return Ok(()) };
        if fs.capacity_bytes == 0 {
            return Ok(());
        }
        let usage = 100 - (fs.available_bytes as u128 * 100 / fs.capacity_bytes as u128) as i32;
        if usage < high {
            return Ok(());
        }
        let target = (fs.capacity_bytes as u128 * (100 - low as u128) / 100) as u64;
        let to_free = target.saturating_sub(fs.available_bytes).max(1);
        tracing::info!(usage, high, to_free, "image filesystem usage is over the high threshold: removing unused images");
        self.delete_unused(shared, pods, Some(to_free), min_age).await?;
        Ok(())
    }
}

/// Container GC: removes dead containers beyond the newest two of each pod
/// and container name, and every dead container of pods that are gone.
pub async fn collect_containers(shared: &Shared, known_pods: &HashSet<String>) -> anyhow::Result<usize> {
    let mut rt = shared.cri.runtime.clone();
    let list = rt.list_containers(cri::ListContainersRequest::default()).await?.into_inner().containers;
    let mut by_name: HashMap<(String, String), Vec<&cri::Container>> = HashMap::new();
    let mut doomed = Vec::new();
    for c in &list {
        let Some(uid) = c.labels.get(spec::LABEL_POD_UID) else { continue };
        if c.state != cri::ContainerState::ContainerExited as i32 {
            continue;
        }
        if !known_pods.contains(uid) {
            doomed.push(c.id.clone());
            continue;
        }
        let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        by_name.entry((uid.clone(), name)).or_default().push(c);
    }
    for (_, mut v) in by_name {
        v.sort_by_key(|c| std::cmp::Reverse((c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0), c.created_at)));
        doomed.extend(v.iter().skip(2).map(|c| c.id.clone()));
    }
    let n = doomed.len();
    for id in doomed {
        let _ = rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await;
    }
    Ok(n)
}
