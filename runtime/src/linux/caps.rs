//! Capability sets for the container process.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

use super::{SysError, SysResult};

/// Capability sets to apply, already clamped to what this process may hold.
#[derive(Debug, Default, Clone)]
pub struct CapPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
    /// Names that were unknown or unavailable here (skipped).
    pub skipped: Vec<String>,
}

fn cerr(what: &str, e: caps::errors::CapsError) -> SysError {
    SysError::msg(format!("{what}: {e}"))
}

/// Builds the plan from the spec, dropping capabilities outside the
/// current bounding set (e.g. CAP_SYS_RESOURCE on restricted hosts).
pub fn plan(spec: Option<&LinuxCapabilities>) -> SysResult<CapPlan> {
    let available = caps::read(None, CapSet::Bounding).map_err(|e| cerr("read bounding set", e))?;
    let mut p = CapPlan::default();
    let Some(spec) = spec else { return Ok(p) };
    let mut convert = |set: &Option<oci_spec::runtime::Capabilities>| -> CapsHashSet {
        let mut out = CapsHashSet::new();
        for c in set.iter().flatten() {
            let name = c.to_string();
            match Capability::from_str(&caps::to_canonical(&name)) {
                Ok(cap) if available.contains(&cap) => {
                    out.insert(cap);
                }
                _ => {
                    if !p.skipped.contains(&name) {
                        p.skipped.push(name);
                    }
                }
            }
        }
        out
    };
    let bounding = convert(spec.bounding());
    let effective = convert(spec.effective());
    let permitted = convert(spec.permitted());
    let inheritable = convert(spec.inheritable());
    let ambient = convert(spec.ambient());
    p.bounding = bounding;
    p.effective = effective;
    p.permitted = permitted;
    p.inheritable = inheritable;
    p.ambient = ambient;
    Ok(p)
}

/// Drops bounding-set capabilities not in the plan. Call before changing
/// user (needs CAP_SETPCAP).
pub fn drop_bounding(p: &CapPlan) -> SysResult<()> {
    let current = caps::read(None, CapSet::Bounding).map_err(|e| cerr("read bounding set", e))?;
    for cap in current.difference(&p.bounding) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(|e| cerr(&format!("drop {cap} from bounding set"), e))?;
    }
    Ok(())
}

/// Keeps permitted capabilities across setuid away from root.
pub fn set_keep_caps(keep: bool) -> SysResult<()> {
    caps::securebits::set_keepcaps(keep).map_err(|e| cerr("set keepcaps", e))
}

/// Sets inheritable, effective, permitted and ambient sets (after the user change).
pub fn apply(p: &CapPlan) -> SysResult<()> {
    // Order matters: capset requires effective ⊆ permitted at every step and
    // inheritable may only grow within the permitted set.
    caps::set(None, CapSet::Inheritable, &p.inheritable).map_err(|e| cerr("set inheritable capabilities", e))?;
    let eff: CapsHashSet = p.effective.intersection(&p.permitted).copied().collect();
    caps::set(None, CapSet::Effective, &eff).map_err(|e| cerr("set effective capabilities", e))?;
    caps::set(None, CapSet::Permitted, &p.permitted).map_err(|e| cerr("set permitted capabilities", e))?;
    caps::set(None, CapSet::Effective, &eff).map_err(|e| cerr("set effective capabilities", e))?;
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(|e| cerr("clear ambient capabilities", e))?;
        for cap in &p.ambient {
            if p.permitted.contains(cap) && p.inheritable.contains(cap) {
                caps::raise(None, CapSet::Ambient, *cap).map_err(|e| cerr(&format!("raise ambient {cap}"), e))?;
            }
        }
    }
    Ok(())
}
