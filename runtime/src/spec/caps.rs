//! Linux capabilities: containerd's default set, CRI add/drop/ambient
//! lists, privileged containers, and clamping to the host bounding set.

use std::collections::HashSet;

use cri_proto::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::{SpecError, Warning};

/// Every capability the builder knows, indexed by its kernel bit number.
const CAPS: &[(Capability, &str)] = &[
    (Capability::Chown, "CHOWN"),
    (Capability::DacOverride, "DAC_OVERRIDE"),
    (Capability::DacReadSearch, "DAC_READ_SEARCH"),
    (Capability::Fowner, "FOWNER"),
    (Capability::Fsetid, "FSETID"),
    (Capability::Kill, "KILL"),
    (Capability::Setgid, "SETGID"),
    (Capability::Setuid, "SETUID"),
    (Capability::Setpcap, "SETPCAP"),
    (Capability::LinuxImmutable, "LINUX_IMMUTABLE"),
    (Capability::NetBindService, "NET_BIND_SERVICE"),
    (Capability::NetBroadcast, "NET_BROADCAST"),
    (Capability::NetAdmin, "NET_ADMIN"),
    (Capability::NetRaw, "NET_RAW"),
    (Capability::IpcLock, "IPC_LOCK"),
    (Capability::IpcOwner, "IPC_OWNER"),
    (Capability::SysModule, "SYS_MODULE"),
    (Capability::SysRawio, "SYS_RAWIO"),
    (Capability::SysChroot, "SYS_CHROOT"),
    (Capability::SysPtrace, "SYS_PTRACE"),
    (Capability::SysPacct, "SYS_PACCT"),
    (Capability::SysAdmin, "SYS_ADMIN"),
    (Capability::SysBoot, "SYS_BOOT"),
    (Capability::SysNice, "SYS_NICE"),
    (Capability::SysResource, "SYS_RESOURCE"),
    (Capability::SysTime, "SYS_TIME"),
    (Capability::SysTtyConfig, "SYS_TTY_CONFIG"),
    (Capability::Mknod, "MKNOD"),
    (Capability::Lease, "LEASE"),
    (Capability::AuditWrite, "AUDIT_WRITE"),
    (Capability::AuditControl, "AUDIT_CONTROL"),
    (Capability::Setfcap, "SETFCAP"),
    (Capability::MacOverride, "MAC_OVERRIDE"),
    (Capability::MacAdmin, "MAC_ADMIN"),
    (Capability::Syslog, "SYSLOG"),
    (Capability::WakeAlarm, "WAKE_ALARM"),
    (Capability::BlockSuspend, "BLOCK_SUSPEND"),
    (Capability::AuditRead, "AUDIT_READ"),
    (Capability::Perfmon, "PERFMON"),
    (Capability::Bpf, "BPF"),
    (Capability::CheckpointRestore, "CHECKPOINT_RESTORE"),
];

/// containerd's default capability set for non-privileged containers.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability known to the builder (up to CAP_CHECKPOINT_RESTORE, 40).
pub fn all_capabilities() -> Capabilities {
    CAPS.iter().map(|(c, _)| *c).collect()
}

/// `CAP_SYS_ADMIN`, `sys_admin`, `Sys_Admin` … → the capability.
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPS.iter().find(|(_, n)| *n == bare).map(|(c, _)| *c)
}

/// `CAP_CHOWN`-style name of a capability.
fn cap_name(cap: Capability) -> String {
    CAPS.iter()
        .find(|(c, _)| *c == cap)
        .map(|(_, n)| format!("CAP_{n}"))
        .unwrap_or_else(|| format!("{cap:?}"))
}

/// The set of capabilities whose bits are set in a `CapBnd`-style hex mask.
pub fn parse_cap_mask(hex: &str) -> Option<Capabilities> {
    let mask = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(
        CAPS.iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1u64 << bit) != 0)
            .map(|(_, (c, _))| *c)
            .collect(),
    )
}

/// The calling process's capability bounding set, from `/proc/self/status`.
/// (The one helper here that does I/O; the builder takes the result through
/// `SpecContext::bounding_set`.)
pub fn host_bounding_set() -> std::io::Result<Capabilities> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_status_cap_bnd(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no CapBnd line in /proc/self/status",
        )
    })
}

fn parse_status_cap_bnd(status: &str) -> Option<Capabilities> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(parse_cap_mask)
}

fn sorted_names(set: &HashSet<Capability>) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|c| cap_name(*c)).collect();
    v.sort();
    v
}

fn parse_list(field: &'static str, names: &[String]) -> Result<(bool, Vec<Capability>), SpecError> {
    let mut all = false;
    let mut caps = Vec::new();
    for n in names {
        if n.trim().eq_ignore_ascii_case("ALL") {
            all = true;
        } else {
            caps.push(
                parse_capability(n).ok_or_else(|| SpecError::UnknownCapability {
                    field,
                    name: n.clone(),
                })?,
            );
        }
    }
    Ok((all, caps))
}

/// The process capabilities for a container.
///
/// Non-privileged: the default set, then `add ALL` (every cap), `drop ALL`
/// (none), then the individual adds, then the individual drops — the order
/// containerd applies them. Privileged: every capability. Bounding,
/// effective and permitted are the same set; inheritable is empty (as since
/// the CVE-2022-24769 fixes) except for ambient caps, which the kernel
/// requires in inheritable too. Everything is clamped to `bounding`, with one
/// warning listing what went (none for privileged: "all the host has" is
/// what privileged means).
pub fn build_capabilities(
    sc: &LinuxContainerSecurityContext,
    bounding: Option<&Capabilities>,
    warnings: &mut Vec<Warning>,
) -> Result<LinuxCapabilities, SpecError> {
    let empty = Default::default();
    let req = sc.capabilities.as_ref().unwrap_or(&empty);
    let (_, ambient_req) = parse_list(
        "capabilities.add_ambient_capabilities",
        &req.add_ambient_capabilities,
    )?;
    let mut set: Capabilities = if sc.privileged {
        all_capabilities()
    } else {
        let (add_all, add) = parse_list("capabilities.add_capabilities", &req.add_capabilities)?;
        let (drop_all, drop) =
            parse_list("capabilities.drop_capabilities", &req.drop_capabilities)?;
        let mut set: Capabilities = DEFAULT_CAPABILITIES.iter().copied().collect();
        if add_all {
            set = all_capabilities();
        }
        if drop_all {
            set.clear();
        }
        set.extend(add);
        for c in &drop {
            set.remove(c);
        }
        set
    };

    let mut ambient: Capabilities = ambient_req.into_iter().collect();
    let mut dropped = HashSet::new();
    if let Some(bnd) = bounding {
        dropped.extend(set.difference(bnd).copied());
        dropped.extend(ambient.difference(bnd).copied());
        set.retain(|c| bnd.contains(c));
        ambient.retain(|c| bnd.contains(c));
    }
    if !dropped.is_empty() && !sc.privileged {
        warnings.push(Warning(format!(
            "capabilities not in the host's bounding set were dropped: {}",
            sorted_names(&dropped).join(", ")
        )));
    }
    let not_permitted: Capabilities = ambient.difference(&set).copied().collect();
    if !not_permitted.is_empty() {
        warnings.push(Warning(format!(
            "ambient capabilities not in the container's capability set were dropped: {}",
            sorted_names(&not_permitted).join(", ")
        )));
        ambient.retain(|c| set.contains(c));
    }

    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(ambient.clone()));
    caps.set_ambient(Some(ambient));
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::v1::Capability as CriCaps;

    fn sc(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }
    }

    fn eff(
        sc: &LinuxContainerSecurityContext,
        bnd: Option<&Capabilities>,
    ) -> (Capabilities, Vec<Warning>) {
        let mut w = Vec::new();
        let c = build_capabilities(sc, bnd, &mut w).unwrap();
        assert_eq!(c.bounding(), c.effective());
        assert_eq!(c.permitted(), c.effective());
        (c.effective().clone().unwrap(), w)
    }

    fn set(caps: &[Capability]) -> Capabilities {
        caps.iter().copied().collect()
    }

    #[test]
    fn table_matches_kernel_bits() {
        assert_eq!(CAPS.len(), 41);
        assert_eq!(CAPS[21].0, Capability::SysAdmin);
        assert_eq!(CAPS[24].0, Capability::SysResource);
        assert_eq!(CAPS[40].0, Capability::CheckpointRestore);
        // Names agree with oci-spec's own serde names.
        for (cap, name) in CAPS {
            assert_eq!(
                serde_json::to_string(cap).unwrap(),
                format!("\"CAP_{name}\"")
            );
        }
    }

    #[test]
    fn parses_names_loosely() {
        assert_eq!(
            parse_capability("CAP_SYS_ADMIN"),
            Some(Capability::SysAdmin)
        );
        assert_eq!(parse_capability("sys_admin"), Some(Capability::SysAdmin));
        assert_eq!(parse_capability("cap_net_raw"), Some(Capability::NetRaw));
        assert_eq!(parse_capability("NOPE"), None);
    }

    #[test]
    fn default_set() {
        let (caps, w) = eff(&LinuxContainerSecurityContext::default(), None);
        assert_eq!(caps, set(DEFAULT_CAPABILITIES));
        assert_eq!(caps.len(), 14);
        assert!(w.is_empty());
    }

    #[test]
    fn add_and_drop() {
        let (caps, _) = eff(
            &sc(&["sys_admin", "CAP_NET_ADMIN"], &["CHOWN", "cap_kill"]),
            None,
        );
        assert!(caps.contains(&Capability::SysAdmin));
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Chown));
        assert!(!caps.contains(&Capability::Kill));
        assert_eq!(caps.len(), 14);
    }

    #[test]
    fn drop_wins_over_add_of_the_same_cap() {
        let (caps, _) = eff(&sc(&["NET_ADMIN"], &["NET_ADMIN"]), None);
        assert!(!caps.contains(&Capability::NetAdmin));
    }

    #[test]
    fn all_keywords() {
        let (caps, _) = eff(&sc(&["ALL"], &[]), None);
        assert_eq!(caps, all_capabilities());
        let (caps, _) = eff(&sc(&["all"], &["SYS_ADMIN"]), None);
        assert_eq!(caps.len(), all_capabilities().len() - 1);
        let (caps, _) = eff(&sc(&["NET_BIND_SERVICE"], &["ALL"]), None);
        assert_eq!(caps, set(&[Capability::NetBindService]));
        let (caps, _) = eff(&sc(&[], &["ALL"]), None);
        assert!(caps.is_empty());
    }

    #[test]
    fn unknown_name_is_an_error_naming_field_and_cap() {
        let err = build_capabilities(&sc(&["CAP_FLY"], &[]), None, &mut vec![]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("add_capabilities") && msg.contains("CAP_FLY"),
            "{msg}"
        );
        let err = build_capabilities(&sc(&[], &["bogus"]), None, &mut vec![]).unwrap_err();
        assert!(err.to_string().contains("drop_capabilities"));
    }

    #[test]
    fn privileged_gets_all() {
        let s = LinuxContainerSecurityContext {
            privileged: true,
            ..sc(&[], &["ALL"])
        };
        let (caps, w) = eff(&s, None);
        assert_eq!(caps, all_capabilities());
        assert!(w.is_empty());
    }

    #[test]
    fn clamps_to_bounding_set_with_one_warning() {
        // This host's CapBnd: everything but CAP_SYS_RESOURCE (bit 24).
        let bnd = parse_status_cap_bnd("Name:\tx\nCapBnd:\t000001fffeffffff\n").unwrap();
        assert!(!bnd.contains(&Capability::SysResource));
        assert_eq!(bnd.len(), 40);
        let (caps, w) = eff(&sc(&["SYS_RESOURCE", "SYS_ADMIN"], &[]), Some(&bnd));
        assert!(!caps.contains(&Capability::SysResource));
        assert!(caps.contains(&Capability::SysAdmin));
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("CAP_SYS_RESOURCE"), "{}", w[0]);

        let (caps, w) = eff(&sc(&["ALL"], &[]), Some(&bnd));
        assert_eq!(caps, bnd);
        assert_eq!(w.len(), 1);

        // Privileged: silently "everything the host has".
        let p = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let (caps, w) = eff(&p, Some(&bnd));
        assert_eq!(caps, bnd);
        assert!(w.is_empty());

        // Default set is within the bounding set: no warning.
        let (_, w) = eff(&LinuxContainerSecurityContext::default(), Some(&bnd));
        assert!(w.is_empty());
    }

    #[test]
    fn ambient_caps() {
        let mut s = sc(&["NET_ADMIN"], &[]);
        s.capabilities.as_mut().unwrap().add_ambient_capabilities =
            vec!["net_admin".into(), "CAP_SYS_TIME".into()];
        let mut w = Vec::new();
        let c = build_capabilities(&s, None, &mut w).unwrap();
        assert_eq!(c.ambient().as_ref().unwrap(), &set(&[Capability::NetAdmin]));
        assert_eq!(
            c.inheritable().as_ref().unwrap(),
            &set(&[Capability::NetAdmin])
        );
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("CAP_SYS_TIME"));
    }

    #[test]
    fn inheritable_empty_by_default() {
        let c = build_capabilities(&LinuxContainerSecurityContext::default(), None, &mut vec![])
            .unwrap();
        assert!(c.inheritable().as_ref().unwrap().is_empty());
        assert!(c.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn cap_mask_parsing() {
        assert_eq!(parse_cap_mask("0").unwrap().len(), 0);
        assert_eq!(parse_cap_mask("1").unwrap(), set(&[Capability::Chown]));
        assert_eq!(
            parse_cap_mask("000001ffffffffff").unwrap(),
            all_capabilities()
        );
        assert!(parse_cap_mask("xyz").is_none());
    }
}
