//! Mounts (defaults, sandbox files, CRI mounts), masked and read-only
//! paths, device nodes and the device cgroup allowlist.

use std::path::{Component, Path, PathBuf};

use cri_proto::v1::{ContainerConfig, LinuxContainerSecurityContext, Mount as CriMount, MountPropagation};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Mount};

use super::{HostReader, Propagation, SpecContext, SpecError};

/// containerd's masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Mounts plus the rootfs propagation they need.
#[derive(Debug)]
pub(crate) struct Mounts {
    pub mounts: Vec<Mount>,
    pub rootfs_propagation: Option<String>,
}

fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(dest: &str, source: &Path, readonly: bool) -> Mount {
    let mut m = mount(
        dest,
        "bind",
        "",
        &["rbind", "rprivate", if readonly { "ro" } else { "rw" }],
    );
    m.set_source(Some(source.to_path_buf()));
    m
}

/// The mounts every container gets (containerd's defaults). Privileged
/// containers get read-write `/sys` and `/sys/fs/cgroup`.
fn default_mounts(privileged: bool, shm: Option<&Path>) -> Vec<Mount> {
    let ro = |opts: &[&'static str]| -> Vec<&'static str> {
        let mut v = opts.to_vec();
        v.push(if privileged { "rw" } else { "ro" });
        v
    };
    let mut v = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &ro(&["nosuid", "noexec", "nodev"]),
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &ro(&["nosuid", "noexec", "nodev", "relatime"]),
        ),
    ];
    v.push(match shm {
        Some(p) => bind("/dev/shm", p, false),
        None => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    });
    v
}

/// Lexically cleans an absolute container path ("/a/./b/" → "/a/b").
fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// Builds all mounts: defaults, the sandbox's hostname/hosts/resolv.conf,
/// then the CRI mounts, which replace anything at the same destination.
/// Sorted (stably) by depth so parents are mounted before children.
pub(crate) fn build_mounts(
    container: &ContainerConfig,
    sc: &LinuxContainerSecurityContext,
    ctx: &SpecContext,
    reader: &dyn HostReader,
) -> Result<Mounts, SpecError> {
    let mut mounts = default_mounts(sc.privileged, ctx.sandbox_shm.as_deref());
    let sandbox_files = [
        ("/etc/hostname", &ctx.sandbox_hostname_file),
        ("/etc/hosts", &ctx.sandbox_hosts_file),
        ("/etc/resolv.conf", &ctx.sandbox_resolv_conf),
    ];
    for (dest, src) in sandbox_files {
        if let Some(src) = src {
            mounts.push(bind(dest, src, sc.readonly_rootfs));
        }
    }

    let mut propagation: Option<&'static str> = None;
    for (i, m) in container.mounts.iter().enumerate() {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(SpecError::InvalidField {
                field: "mounts.container_path",
                reason: format!("mount {i}: {:?} is not an absolute path", m.container_path),
            });
        }
        if m.image.is_some() {
            return Err(SpecError::InvalidField {
                field: "mounts.image",
                reason: format!(
                    "mount {}: image volumes are not supported",
                    m.container_path
                ),
            });
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(SpecError::InvalidField {
                field: "mounts.uid_mappings",
                reason: format!(
                    "mount {}: id-mapped mounts are not supported",
                    m.container_path
                ),
            });
        }
        let host = PathBuf::from(&m.host_path);
        if m.host_path.is_empty() || !reader.exists(&host) {
            return Err(SpecError::MountSourceMissing {
                container_path: m.container_path.clone(),
                host_path: host,
            });
        }
        let prop = match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationPrivate) => "rprivate",
            Ok(MountPropagation::PropagationHostToContainer) => {
                ensure_propagates(reader, m, &host, &[Propagation::Shared, Propagation::Slave])?;
                propagation = Some(propagation.filter(|p| *p == "rshared").unwrap_or("rslave"));
                "rslave"
            }
            Ok(MountPropagation::PropagationBidirectional) => {
                ensure_propagates(reader, m, &host, &[Propagation::Shared])?;
                propagation = Some("rshared");
                "rshared"
            }
            Err(_) => {
                return Err(SpecError::InvalidField {
                    field: "mounts.propagation",
                    reason: format!(
                        "mount {}: unknown propagation {}",
                        m.container_path, m.propagation
                    ),
                })
            }
        };
        // selinux_relabel is ignored: no SELinux support.
        let mut opts = vec!["rbind".to_string(), prop.to_string()];
        if m.recursive_read_only {
            if !m.readonly || prop != "rprivate" {
                return Err(SpecError::InvalidField {
                    field: "mounts.recursive_read_only",
                    reason: format!(
                        "mount {}: needs readonly and private propagation",
                        m.container_path
                    ),
                });
            }
            if !ctx.rro_supported {
                return Err(SpecError::InvalidField {
                    field: "mounts.recursive_read_only",
                    reason: format!(
                        "mount {}: recursive read-only mounts are not supported by this kernel",
                        m.container_path
                    ),
                });
            }
            opts.push("rro".into());
        } else {
            opts.push(if m.readonly { "ro" } else { "rw" }.into());
        }
        let dest = clean(&m.container_path);
        mounts.retain(|x| clean(&x.destination().to_string_lossy()) != dest);
        let mut om = Mount::default();
        om.set_destination(dest);
        om.set_typ(Some("bind".into()));
        om.set_source(Some(host));
        om.set_options(Some(opts));
        mounts.push(om);
    }
    mounts.sort_by_key(|m| depth(m.destination()));
    Ok(Mounts {
        mounts,
        rootfs_propagation: propagation.map(str::to_string),
    })
}

/// A propagating mount needs its host side on a mount of one of `kinds`
/// (containerd's ensureShared / ensureSharedOrSlave): else mounts would
/// silently not propagate.
fn ensure_propagates(reader: &dyn HostReader, m: &CriMount, host: &Path, kinds: &[Propagation]) -> Result<(), SpecError> {
    let hm = reader.mount_of(host).map_err(|source| SpecError::Read { path: host.into(), source })?;
    if kinds.contains(&hm.propagation) {
        return Ok(());
    }
    Err(SpecError::MountPropagation {
        container_path: m.container_path.clone(),
        host_path: host.into(),
        mount_point: hm.mount_point,
        want: if kinds.contains(&Propagation::Slave) { "shared or slave" } else { "shared" },
    })
}

/// Masked and read-only paths: CRI lists when set, else the defaults;
/// privileged containers get neither.
pub(crate) fn masked_and_readonly(
    sc: &LinuxContainerSecurityContext,
) -> (Vec<String>, Vec<String>) {
    if sc.privileged {
        return (Vec::new(), Vec::new());
    }
    let pick = |cri: &[String], def: &[&str]| {
        if cri.is_empty() {
            def.iter().map(|s| s.to_string()).collect()
        } else {
            cri.to_vec()
        }
    };
    (
        pick(&sc.masked_paths, DEFAULT_MASKED_PATHS),
        pick(&sc.readonly_paths, DEFAULT_READONLY_PATHS),
    )
}

/// Device nodes and device cgroup rules.
#[derive(Debug)]
pub(crate) struct Devices {
    pub nodes: Vec<LinuxDevice>,
    pub cgroup_rules: Vec<LinuxDeviceCgroup>,
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// Deny everything, then allow mknod and the standard nodes: null, zero,
/// full, random, urandom, tty, ptmx and the pts range (136:*).
fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
        rule(true, C, Some(1), Some(3), "rwm"),
        rule(true, C, Some(1), Some(5), "rwm"),
        rule(true, C, Some(1), Some(7), "rwm"),
        rule(true, C, Some(1), Some(8), "rwm"),
        rule(true, C, Some(1), Some(9), "rwm"),
        rule(true, C, Some(5), Some(0), "rwm"),
        rule(true, C, Some(5), Some(2), "rwm"),
        rule(true, C, Some(136), None, "rwm"),
    ]
}

fn linux_device(path: PathBuf, node: &super::DeviceNode) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(path);
    d.set_typ(node.kind);
    d.set_major(node.major);
    d.set_minor(node.minor);
    d.set_file_mode(Some(node.file_mode));
    d.set_uid(Some(node.uid));
    d.set_gid(Some(node.gid));
    d
}

/// CRI devices (host node → container path, cgroup permissions "rwm"),
/// or every host device for privileged containers.
pub(crate) fn build_devices(
    container: &ContainerConfig,
    privileged: bool,
    reader: &dyn HostReader,
) -> Result<Devices, SpecError> {
    let mut nodes = Vec::new();
    let mut rules = default_device_rules();
    if privileged {
        let host = reader.host_devices().map_err(|source| SpecError::Read {
            path: "/dev".into(),
            source,
        })?;
        nodes.extend(host.iter().map(|n| linux_device(n.path.clone(), n)));
        rules = vec![rule(true, LinuxDeviceType::A, None, None, "rwm")];
    }
    for d in &container.devices {
        let host = PathBuf::from(&d.host_path);
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if perms.chars().any(|c| !matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::Device {
                host_path: host,
                reason: format!("invalid permissions {perms:?}"),
            });
        }
        let node = reader.device(&host).map_err(|e| SpecError::Device {
            host_path: host.clone(),
            reason: e.to_string(),
        })?;
        let dest = if d.container_path.is_empty() {
            host.clone()
        } else {
            PathBuf::from(&d.container_path)
        };
        if !dest.is_absolute() {
            return Err(SpecError::Device {
                host_path: host,
                reason: format!("container path {dest:?} is not absolute"),
            });
        }
        // A CRI device replaces a host one at the same path.
        nodes.retain(|n: &LinuxDevice| n.path() != &dest);
        nodes.push(linux_device(dest, &node));
        rules.push(rule(
            true,
            node.kind,
            Some(node.major),
            Some(node.minor),
            perms,
        ));
    }
    Ok(Devices {
        nodes,
        cgroup_rules: rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testutil::{ctx, FakeReader};
    use crate::spec::DeviceNode;
    use cri_proto::v1::{Device, Mount as CriMount};

    fn cri_mount(cp: &str, hp: &str, ro: bool, prop: MountPropagation) -> CriMount {
        CriMount {
            container_path: cp.into(),
            host_path: hp.into(),
            readonly: ro,
            propagation: prop as i32,
            ..Default::default()
        }
    }

    fn build(mounts: Vec<CriMount>, reader: &FakeReader) -> Result<Mounts, SpecError> {
        let c = ContainerConfig {
            mounts,
            ..Default::default()
        };
        build_mounts(&c, &Default::default(), &ctx(), reader)
    }

    fn find<'a>(m: &'a Mounts, dest: &str) -> &'a Mount {
        m.mounts
            .iter()
            .find(|x| x.destination() == Path::new(dest))
            .unwrap()
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap()
    }

    #[test]
    fn defaults() {
        let m = build(vec![], &FakeReader::default()).unwrap();
        let dests: Vec<_> = m
            .mounts
            .iter()
            .map(|x| x.destination().to_str().unwrap().to_string())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert!(dests.contains(&d.to_string()), "{d} in {dests:?}");
        }
        assert!(opts(find(&m, "/dev")).contains(&"size=65536k".to_string()));
        assert!(opts(find(&m, "/dev/pts")).contains(&"ptmxmode=0666".to_string()));
        assert!(opts(find(&m, "/sys")).contains(&"ro".to_string()));
        assert!(opts(find(&m, "/sys/fs/cgroup")).contains(&"ro".to_string()));
        let shm = find(&m, "/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/berth/s1/shm"))
        );
        assert!(m.rootfs_propagation.is_none());
    }

    #[test]
    fn own_shm_without_sandbox_shm() {
        let mut cx = ctx();
        cx.sandbox_shm = None;
        let m = build_mounts(
            &ContainerConfig::default(),
            &Default::default(),
            &cx,
            &FakeReader::default(),
        )
        .unwrap();
        let shm = find(&m, "/dev/shm");
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
    }

    #[test]
    fn privileged_sysfs_and_cgroup_are_rw() {
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let m = build_mounts(
            &ContainerConfig::default(),
            &sc,
            &ctx(),
            &FakeReader::default(),
        )
        .unwrap();
        assert!(opts(find(&m, "/sys")).contains(&"rw".to_string()));
        assert!(!opts(find(&m, "/sys/fs/cgroup")).contains(&"ro".to_string()));
    }

    #[test]
    fn propagation_mapping() {
        let r = FakeReader::default()
            .with_path("/a")
            .with_path("/b")
            .with_path("/c");
        let m = build(
            vec![cri_mount(
                "/a",
                "/a",
                false,
                MountPropagation::PropagationPrivate,
            )],
            &r,
        )
        .unwrap();
        assert_eq!(opts(find(&m, "/a")), vec!["rbind", "rprivate", "rw"]);
        assert!(m.rootfs_propagation.is_none());

        let m = build(
            vec![cri_mount(
                "/b",
                "/b",
                true,
                MountPropagation::PropagationHostToContainer,
            )],
            &r,
        )
        .unwrap();
        assert_eq!(opts(find(&m, "/b")), vec!["rbind", "rslave", "ro"]);
        assert_eq!(m.rootfs_propagation.as_deref(), Some("rslave"));

        let m = build(
            vec![cri_mount(
                "/c",
                "/c",
                false,
                MountPropagation::PropagationBidirectional,
            )],
            &r,
        )
        .unwrap();
        assert_eq!(opts(find(&m, "/c")), vec!["rbind", "rshared", "rw"]);
        assert_eq!(m.rootfs_propagation.as_deref(), Some("rshared"));

        // rshared is kept when a later mount only needs rslave.
        let m = build(
            vec![
                cri_mount(
                    "/c",
                    "/c",
                    false,
                    MountPropagation::PropagationBidirectional,
                ),
                cri_mount(
                    "/b",
                    "/b",
                    false,
                    MountPropagation::PropagationHostToContainer,
                ),
            ],
            &r,
        )
        .unwrap();
        assert_eq!(m.rootfs_propagation.as_deref(), Some("rshared"));
    }

    #[test]
    fn propagation_needs_a_propagating_host_mount() {
        use crate::spec::{HostMount, Propagation};
        let mut r = FakeReader::default().with_path("/priv/d").with_path("/slave/d");
        r.mounts = vec![
            HostMount { mount_point: "/priv".into(), propagation: Propagation::Private },
            HostMount { mount_point: "/slave".into(), propagation: Propagation::Slave },
        ];
        let one = |hp: &str, p| build(vec![cri_mount("/m", hp, false, p)], &r);
        let err = one("/priv/d", MountPropagation::PropagationHostToContainer).unwrap_err().to_string();
        assert_eq!(err, r#"mount /m: path "/priv/d" is mounted on "/priv" but it is not a shared or slave mount"#);
        one("/slave/d", MountPropagation::PropagationHostToContainer).unwrap();
        let err = one("/slave/d", MountPropagation::PropagationBidirectional).unwrap_err().to_string();
        assert!(err.ends_with(r#"is mounted on "/slave" but it is not a shared mount"#), "{err}");
        one("/priv/d", MountPropagation::PropagationPrivate).unwrap();
    }

    #[test]
    fn missing_source_is_an_error_naming_it() {
        let err = build(
            vec![cri_mount(
                "/data",
                "/srv/missing",
                false,
                MountPropagation::PropagationPrivate,
            )],
            &FakeReader::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/srv/missing") && msg.contains("/data"),
            "{msg}"
        );
    }

    #[test]
    fn relative_container_path_is_rejected() {
        let r = FakeReader::default().with_path("/a");
        let err = build(
            vec![cri_mount(
                "data",
                "/a",
                false,
                MountPropagation::PropagationPrivate,
            )],
            &r,
        )
        .unwrap_err();
        assert!(err.to_string().contains("container_path"));
    }

    #[test]
    fn cri_mount_overrides_default_and_sorts_parents_first() {
        let r = FakeReader::default()
            .with_path("/host/shm")
            .with_path("/v")
            .with_path("/v2");
        let m = build(
            vec![
                cri_mount(
                    "/data/sub",
                    "/v2",
                    false,
                    MountPropagation::PropagationPrivate,
                ),
                cri_mount(
                    "/dev/shm/",
                    "/host/shm",
                    false,
                    MountPropagation::PropagationPrivate,
                ),
                cri_mount("/data", "/v", false, MountPropagation::PropagationPrivate),
            ],
            &r,
        )
        .unwrap();
        let shms: Vec<_> = m
            .mounts
            .iter()
            .filter(|x| x.destination() == Path::new("/dev/shm"))
            .collect();
        assert_eq!(shms.len(), 1);
        assert_eq!(shms[0].source().as_deref(), Some(Path::new("/host/shm")));
        let pos = |d: &str| {
            m.mounts
                .iter()
                .position(|x| x.destination() == Path::new(d))
                .unwrap()
        };
        assert!(pos("/data") < pos("/data/sub"));
        assert!(pos("/dev") < pos("/dev/shm"));
        assert!(pos("/sys") < pos("/sys/fs/cgroup"));
    }

    #[test]
    fn recursive_read_only() {
        let r = FakeReader::default().with_path("/a");
        let mut m = cri_mount("/a", "/a", true, MountPropagation::PropagationPrivate);
        m.recursive_read_only = true;
        let c = ContainerConfig {
            mounts: vec![m.clone()],
            ..Default::default()
        };
        assert!(build_mounts(&c, &Default::default(), &ctx(), &r).is_err());
        let mut cx = ctx();
        cx.rro_supported = true;
        let out = build_mounts(&c, &Default::default(), &cx, &r).unwrap();
        assert_eq!(opts(find(&out, "/a")), vec!["rbind", "rprivate", "rro"]);
        m.readonly = false;
        let c = ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        };
        assert!(build_mounts(&c, &Default::default(), &cx, &r).is_err());
    }

    #[test]
    fn sandbox_files_are_bound_unless_cri_mounts_them() {
        let mut cx = ctx();
        cx.sandbox_hosts_file = Some("/run/s1/hosts".into());
        cx.sandbox_resolv_conf = Some("/run/s1/resolv.conf".into());
        let r = FakeReader::default().with_path("/kubelet/hosts");
        let c = ContainerConfig {
            mounts: vec![cri_mount(
                "/etc/hosts",
                "/kubelet/hosts",
                false,
                MountPropagation::PropagationPrivate,
            )],
            ..Default::default()
        };
        let sc = LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        };
        let m = build_mounts(&c, &sc, &cx, &r).unwrap();
        assert_eq!(
            find(&m, "/etc/hosts").source().as_deref(),
            Some(Path::new("/kubelet/hosts"))
        );
        let rc = find(&m, "/etc/resolv.conf");
        assert!(opts(rc).contains(&"ro".to_string()));
    }

    #[test]
    fn masked_and_readonly_defaults_overrides_privileged() {
        let (m, r) = masked_and_readonly(&Default::default());
        assert_eq!(m.len(), DEFAULT_MASKED_PATHS.len());
        assert!(m.contains(&"/proc/kcore".to_string()));
        assert!(m.contains(&"/sys/devices/virtual/powercap".to_string()));
        assert!(r.contains(&"/proc/sysrq-trigger".to_string()));
        let sc = LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/x".into()],
            readonly_paths: vec!["/proc/y".into()],
            ..Default::default()
        };
        assert_eq!(
            masked_and_readonly(&sc),
            (vec!["/proc/x".to_string()], vec!["/proc/y".to_string()])
        );
        let p = LinuxContainerSecurityContext {
            privileged: true,
            ..sc
        };
        assert_eq!(masked_and_readonly(&p), (vec![], vec![]));
    }

    fn node(path: &str, major: i64, minor: i64) -> DeviceNode {
        DeviceNode {
            path: path.into(),
            kind: LinuxDeviceType::C,
            major,
            minor,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn cri_devices() {
        let r = FakeReader {
            devices: vec![node("/dev/fuse", 10, 229)],
            ..Default::default()
        };
        let c = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/myfuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        let d = build_devices(&c, false, &r).unwrap();
        assert_eq!(d.nodes.len(), 1);
        assert_eq!(d.nodes[0].path(), Path::new("/dev/myfuse"));
        assert_eq!((d.nodes[0].major(), d.nodes[0].minor()), (10, 229));
        let first = &d.cgroup_rules[0];
        assert!(!first.allow() && first.access().as_deref() == Some("rwm"));
        let last = d.cgroup_rules.last().unwrap();
        assert_eq!(last.to_string(), "c 10:229 rw");
        let rules: Vec<String> = d.cgroup_rules.iter().map(|r| r.to_string()).collect();
        for want in [
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
        ] {
            assert!(rules.contains(&want.to_string()), "{want} in {rules:?}");
        }

        let bad = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/x".into(),
                host_path: "/dev/nope".into(),
                permissions: "rwm".into(),
            }],
            ..Default::default()
        };
        let err = build_devices(&bad, false, &r).err().unwrap();
        assert!(err.to_string().contains("/dev/nope"));
        let bad = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/x".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwx".into(),
            }],
            ..Default::default()
        };
        assert!(build_devices(&bad, false, &r).is_err());
    }

    #[test]
    fn privileged_gets_all_host_devices() {
        let r = FakeReader {
            devices: vec![node("/dev/null", 1, 3), node("/dev/sda", 8, 0)],
            ..Default::default()
        };
        let d = build_devices(&ContainerConfig::default(), true, &r).unwrap();
        assert_eq!(d.nodes.len(), 2);
        assert_eq!(d.cgroup_rules.len(), 1);
        assert!(d.cgroup_rules[0].allow());
        assert_eq!(d.cgroup_rules[0].to_string(), "a *:* rwm");
    }
}
