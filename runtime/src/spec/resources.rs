//! cgroup resources from `LinuxContainerResources`, the cgroups path, and
//! the cgroup v1 → v2 conversions the executor needs.
//!
//! The spec carries v1-style values (cpu shares, memory+swap); runtimes
//! convert them for cgroup v2 with [`cpu_shares_to_weight`] and
//! [`memory_swap_to_v2`].

use std::collections::HashMap;

use cri_proto::v1::ContainerConfig;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxPids, LinuxResources};

use super::{SpecContext, SpecError, Warning};

pub use crate::linux::cgroups::v2::shares_to_weight as cpu_shares_to_weight;

/// v1 `memory.memsw.limit_in_bytes` (memory + swap) → v2 `memory.swap.max`
/// (swap only). -1 (unlimited) stays -1; swap equal to the limit → 0.
pub fn memory_swap_to_v2(limit: i64, swap: i64) -> i64 {
    if swap == -1 || limit <= 0 {
        return swap;
    }
    (swap - limit).max(0)
}

/// `linux.cgroupsPath` for a container: systemd style
/// `"<parent slice>:<prefix>:<id>"` (the parent's last component, as
/// containerd does), or cgroupfs style `"<parent>/<id>"`.
pub fn cgroups_path(parent: &str, id: &str, systemd: bool, prefix: &str) -> String {
    if systemd {
        let slice = parent
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        format!("{slice}:{prefix}:{id}")
    } else {
        let parent = parent.trim_end_matches('/');
        let parent = if parent.starts_with('/') || parent.is_empty() {
            parent.to_string()
        } else {
            format!("/{parent}")
        };
        format!("{parent}/{id}")
    }
}

fn nonneg(field: &'static str, v: i64) -> Result<i64, SpecError> {
    if v < 0 {
        return Err(SpecError::InvalidField {
            field,
            reason: format!("{v} is negative"),
        });
    }
    Ok(v)
}

/// CPU, memory (swap = limit unless given, i.e. no swap), hugepages,
/// unified (v2 only), pids from the context. Device rules are added by the
/// caller.
pub(crate) fn build_resources(
    container: &ContainerConfig,
    ctx: &SpecContext,
    warnings: &mut Vec<Warning>,
) -> Result<LinuxResources, SpecError> {
    let mut res = LinuxResources::default();
    if let Some(p) = ctx.pids_limit.filter(|l| *l > 0) {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        res.set_pids(Some(pids));
    }
    let Some(r) = container.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return Ok(res);
    };

    let mut cpu = LinuxCpu::default();
    let shares = nonneg("resources.cpu_shares", r.cpu_shares)?;
    if shares > 0 {
        cpu.set_shares(Some(shares as u64));
    }
    // -1 is "no quota"; other negatives are invalid.
    if r.cpu_quota != 0 {
        if r.cpu_quota < -1 {
            return Err(SpecError::InvalidField {
                field: "resources.cpu_quota",
                reason: format!("{} is invalid", r.cpu_quota),
            });
        }
        cpu.set_quota(Some(r.cpu_quota));
    }
    let period = nonneg("resources.cpu_period", r.cpu_period)?;
    if period > 0 {
        cpu.set_period(Some(period as u64));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }
    if cpu != LinuxCpu::default() {
        res.set_cpu(Some(cpu));
    }

    let limit = nonneg("resources.memory_limit_in_bytes", r.memory_limit_in_bytes)?;
    let swap = r.memory_swap_limit_in_bytes;
    if swap < -1 {
        return Err(SpecError::InvalidField {
            field: "resources.memory_swap_limit_in_bytes",
            reason: format!("{swap} is invalid"),
        });
    }
    if limit > 0 {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(limit));
        if swap != 0 && swap != -1 && swap < limit {
            return Err(SpecError::InvalidField {
                field: "resources.memory_swap_limit_in_bytes",
                reason: format!("{swap} is below memory_limit_in_bytes {limit}"),
            });
        }
        // 0 → swap equal to the limit: no swap, the kubelet's default.
        mem.set_swap(Some(if swap == 0 { limit } else { swap }));
        res.set_memory(Some(mem));
    } else if swap != 0 {
        warnings.push(Warning(
            "memory_swap_limit_in_bytes ignored without memory_limit_in_bytes".into(),
        ));
    }

    if !r.hugepage_limits.is_empty() {
        let mut v = Vec::new();
        for h in &r.hugepage_limits {
            let limit = i64::try_from(h.limit).map_err(|_| SpecError::InvalidField {
                field: "resources.hugepage_limits",
                reason: format!("limit {} for {} is too large", h.limit, h.page_size),
            })?;
            let mut hl = LinuxHugepageLimit::default();
            hl.set_page_size(h.page_size.clone());
            hl.set_limit(limit);
            v.push(hl);
        }
        res.set_hugepage_limits(Some(v));
    }

    if !r.unified.is_empty() {
        if ctx.cgroup_v2 {
            res.set_unified(Some(
                r.unified.clone().into_iter().collect::<HashMap<_, _>>(),
            ));
        } else {
            warnings.push(Warning(
                "resources.unified ignored: the host is not on cgroup v2".into(),
            ));
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testutil::ctx;
    use cri_proto::v1::{HugepageLimit, LinuxContainerConfig, LinuxContainerResources};

    fn container(r: LinuxContainerResources) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(r),
                security_context: None,
            }),
            ..Default::default()
        }
    }

    fn build(r: LinuxContainerResources) -> Result<(LinuxResources, Vec<Warning>), SpecError> {
        let mut w = Vec::new();
        build_resources(&container(r), &ctx(), &mut w).map(|res| (res, w))
    }

    #[test]
    fn shares_to_weight() {
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(1), 1);
        assert_eq!(cpu_shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn swap_to_v2() {
        assert_eq!(memory_swap_to_v2(100, 100), 0);
        assert_eq!(memory_swap_to_v2(100, 300), 200);
        assert_eq!(memory_swap_to_v2(100, -1), -1);
    }

    #[test]
    fn cgroups_paths() {
        assert_eq!(
            cgroups_path("/kubepods/burstable/pod1", "c1", false, ""),
            "/kubepods/burstable/pod1/c1"
        );
        assert_eq!(
            cgroups_path("kubepods/pod1/", "c1", false, ""),
            "/kubepods/pod1/c1"
        );
        assert_eq!(
            cgroups_path(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice",
                "c1",
                true,
                "berth"
            ),
            "kubepods-burstable-pod1.slice:berth:c1"
        );
        assert_eq!(
            cgroups_path("kubepods-pod1.slice", "c1", true, "berth"),
            "kubepods-pod1.slice:berth:c1"
        );
    }

    #[test]
    fn cpu_and_memory() {
        let (res, w) = build(LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            memory_limit_in_bytes: 1 << 30,
            ..Default::default()
        })
        .unwrap();
        assert!(w.is_empty());
        let cpu = res.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = res.memory().unwrap();
        assert_eq!(mem.limit(), Some(1 << 30));
        assert_eq!(mem.swap(), Some(1 << 30), "no swap: swap == limit");
    }

    #[test]
    fn swap_rules() {
        let (res, _) = build(LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(res.memory().unwrap().swap(), Some(300));
        let (res, _) = build(LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: -1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(res.memory().unwrap().swap(), Some(-1));
        let err = build(LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 50,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("memory_swap_limit_in_bytes"));
        // No limit → no memory section at all.
        let (res, _) = build(LinuxContainerResources::default()).unwrap();
        assert!(res.memory().is_none());
        assert!(res.cpu().is_none());
    }

    #[test]
    fn negative_values_are_errors_naming_the_field() {
        let err = build(LinuxContainerResources {
            cpu_shares: -5,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("cpu_shares"));
        let err = build(LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("memory_limit_in_bytes"));
        let (res, _) = build(LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(res.cpu().clone().unwrap().quota(), Some(-1));
    }

    #[test]
    fn hugepages_unified_pids() {
        let mut r = LinuxContainerResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            ..Default::default()
        };
        r.unified.insert("memory.high".into(), "1000000".into());
        let mut cx = ctx();
        cx.pids_limit = Some(1024);
        let mut w = Vec::new();
        let res = build_resources(&container(r.clone()), &cx, &mut w).unwrap();
        let hp = &res.hugepage_limits().clone().unwrap()[0];
        assert_eq!((hp.page_size().as_str(), hp.limit()), ("2MB", 4 << 20));
        assert_eq!(res.unified().clone().unwrap()["memory.high"], "1000000");
        assert_eq!(res.pids().unwrap().limit(), 1024);
        assert!(w.is_empty());

        cx.cgroup_v2 = false;
        let res = build_resources(&container(r), &cx, &mut w).unwrap();
        assert!(res.unified().is_none());
        assert_eq!(w.len(), 1);
    }
}
