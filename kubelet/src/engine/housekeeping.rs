//! The node's periodic work, every `housekeepingInterval`: a usage sample
//! (for `berth top` and eviction), an eviction round, the burstable
//! cgroup's shares, and container and image garbage collection on their
//! own periods.

use super::{eviction, gc, qos, spec, stats, PodManager};
use std::collections::HashSet;
use std::sync::Weak;
use std::time::{Duration, Instant};

/// How often dead containers are collected (kubelet's ContainerGCPeriod).
const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);

pub async fn run(m: Weak<PodManager>) {
    let (interval, image_gc_period) = match m.upgrade() {
        Some(mgr) => {
            let c = &mgr.shared.node.cfg;
            (c.duration(&c.housekeeping_interval, Duration::from_secs(10)), c.duration(&c.image_gc_period, Duration::from_secs(300)))
        }
        None => return,
    };
    let start = Instant::now();
    let mut next_container_gc = start + CONTAINER_GC_PERIOD;
    // Image GC runs at the first round (recording the images), then on its period.
    let mut next_image_gc = start;
    loop {
        tokio::time::sleep(interval).await;
        let Some(mgr) = m.upgrade() else { return };
        tick(&mgr).await;
        let now = Instant::now();
        if now >= next_container_gc {
            next_container_gc = now + CONTAINER_GC_PERIOD;
            let known: HashSet<String> = mgr.uids().into_iter().collect();
            if let Err(e) = gc::collect_containers(&mgr.shared, &known).await {
                tracing::debug!("container garbage collection: {e:#}");
            }
        }
        if now >= next_image_gc {
            next_image_gc = now + image_gc_period;
            if let Err(e) = mgr.shared.image_gc.collect(&mgr.shared, &mgr.active()).await {
                tracing::warn!("image garbage collection: {e:#}");
            }
        }
    }
}

/// One sample and one eviction round.
pub async fn tick(mgr: &PodManager) {
    let shared = &mgr.shared;
    let snap = match shared.stats.sample(shared).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("usage sample: {e:#}");
            return;
        }
    };
    let before = shared.eviction.conditions();
    let obs = eviction::observe(&snap, &shared.node);
    let decision = shared.eviction.decide(&obs, Instant::now());
    let after = shared.eviction.conditions();
    if before != after {
        if after.is_empty() {
            tracing::warn!("node pressure is gone");
        } else {
            let crossed: Vec<String> = shared
                .eviction
                .met()
                .iter()
                .filter_map(|t| obs.get(&t.signal).map(|o| format!("{} {} < {}", t.signal, qos::format_bytes(qos::value(o.available)), qos::format_bytes(qos::value(t.value.amount(o.capacity))))))
                .collect();
            tracing::warn!(
                "node under {}: {}; pods are evicted and new ones refused (thresholds: --eviction-hard, --eviction-soft, or the kubelet config)",
                after.join(", "),
                crossed.join(", ")
            );
        }
    }
    mgr.after_change();
    let Some(d) = decision else { return };
    tracing::warn!(signal = %d.threshold.signal, "eviction threshold met: attempting to reclaim {}", d.resource);
    // Disk: unused containers and images go before pods.
    if d.resource == "ephemeral-storage" || d.resource == "inodes" {
        let known: HashSet<String> = mgr.uids().into_iter().collect();
        let _ = gc::collect_containers(shared, &known).await;
        let cfg = &shared.node.cfg;
        let min_age = cfg.duration(&cfg.image_minimum_gc_age, Duration::from_secs(120));
        let _ = shared.image_gc.delete_unused(shared, &mgr.active(), None, min_age).await;
        if let Ok(again) = shared.stats.sample(shared).await {
            let obs = eviction::observe(&again, &shared.node);
            if eviction::thresholds_met(std::slice::from_ref(&d.threshold), &obs, false).is_empty() {
                tracing::info!("reclaimed enough {} without evicting pods", d.resource);
                return;
            }
        }
    }
    let usage = stats::by_uid(&snap);
    let mut pods: Vec<_> = mgr
        .active()
        .into_iter()
        .filter(|p| !qos::is_critical(p) && p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.reason.as_deref()) != Some("Evicted"))
        .collect();
    eviction::rank(&mut pods, d.resource, &usage);
    let hard = d.threshold.grace_period.is_zero();
    for p in pods {
        let uid = spec::pod_uid(&p).to_string();
        let grace = if hard {
            1
        } else {
            let max = shared.node.cfg.eviction_max_pod_grace_period;
            let own = spec::spec(&p).termination_grace_period_seconds.unwrap_or(30);
            if max > 0 { own.min(max) } else { own }
        };
        let msg = eviction::message(d.resource, &p, usage.get(&uid), &d, &obs);
        let inv = super::events::Involved { namespace: spec::pod_namespace(&p), name: spec::pod_name(&p), uid: &uid, field_path: None };
        shared.events.warning(&inv, "Evicted", msg.clone());
        tracing::warn!(pod = %format!("{}/{}", spec::pod_namespace(&p), spec::pod_name(&p)), "evicting: {msg}");
        if mgr.evict(&uid, grace, msg).await {
            // One pod per round, as kubelet does.
            return;
        }
    }
}
