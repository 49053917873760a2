//! CRI → OCI runtime-spec builder.
//!
//! [`build`] turns a CRI `ContainerConfig` (plus its `PodSandboxConfig`, the
//! image's config and a few runtime facts in [`SpecContext`]) into an
//! `oci_spec::runtime::Spec`, following what containerd's CRI plugin and
//! CRI-O do. It is pure: the only things it reads (the rootfs' `/etc/passwd`
//! and `/etc/group`, Localhost seccomp profiles, mount sources and device
//! nodes) go through the [`HostReader`] trait, so tests use a fake.
//!
//! Things the builder had to weaken (clamped capabilities, oom_score_adj,
//! ignored AppArmor) are returned as [`Warning`]s next to the spec.

mod caps;
mod mounts;
mod namespaces;
mod process;
mod reader;
mod resources;
mod seccomp;
mod seccomp_default;
mod user;

use std::collections::HashMap;
use std::path::PathBuf;

use cri_proto::v1::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Capabilities, Linux, Root, Spec};

pub use caps::{
    all_capabilities, host_bounding_set, parse_cap_mask, parse_capability, DEFAULT_CAPABILITIES,
};
pub use mounts::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
pub use reader::{mount_in, unescape_mountinfo, DeviceNode, HostFs, HostMount, HostReader, Propagation};
pub use resources::{cgroups_path, cpu_shares_to_weight, memory_swap_to_v2};
pub(crate) use resources::build_resources;
pub use seccomp::default_profile;
pub use user::ResolvedUser;
/// Validates and normalizes a pod's sysctls (the pause process applies them).
pub(crate) use namespaces::build_sysctls;

/// OCI runtime-spec version written into every spec.
/// The runtime-spec version written into specs; crun 1.8 refuses newer ones.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Annotation keys set on every container spec, as containerd names them.
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const CONTAINER_TYPE_CONTAINER: &str = "container";
    pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// Errors building a spec. Each names the CRI field or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command to run: command, args, image Entrypoint and image Cmd are all empty")]
    EmptyCommand,
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("user {name:?} not found in the container's /etc/passwd")]
    UnknownUser { name: String },
    #[error("group {name:?} not found in the container's /etc/group")]
    UnknownGroup { name: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{field}: unknown capability {name:?}")]
    UnknownCapability { field: &'static str, name: String },
    #[error("mount {container_path}: host path {host_path} does not exist")]
    MountSourceMissing {
        container_path: String,
        host_path: PathBuf,
    },
    /// containerd's words for a propagating mount whose host side cannot.
    #[error("mount {container_path}: path {host_path:?} is mounted on {mount_point:?} but it is not a {want} mount")]
    MountPropagation {
        container_path: String,
        host_path: PathBuf,
        mount_point: PathBuf,
        want: &'static str,
    },
    #[error("device {host_path}: {reason}")]
    Device { host_path: PathBuf, reason: String },
    #[error("sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },
    #[error("seccomp profile {path}: {reason}")]
    SeccompProfile { path: PathBuf, reason: String },
    #[error("namespace_options: {0}")]
    Namespace(String),
}

/// Something the builder weakened or ignored; shown to the user, not fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What seccomp profile a container gets when its config names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompDefault {
    /// No filter (containerd's and the kubelet's historic default).
    #[default]
    Unconfined,
    /// The builtin [`default_profile`] (kubelet `--seccomp-default`).
    RuntimeDefault,
}

/// Namespace files of the pod sandbox that containers join.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// No pod sandbox: namespaces without a path are created new.
    pub standalone: bool,
}

impl SandboxNamespaces {
    /// The namespaces of a running pause process: `/proc/<pid>/ns/*`.
    pub fn from_pid(pid: u32) -> Self {
        let p = |ns: &str| Some(PathBuf::from(format!("/proc/{pid}/ns/{ns}")));
        Self {
            net: p("net"),
            ipc: p("ipc"),
            uts: p("uts"),
            pid: p("pid"),
            standalone: false,
        }
    }
}

/// Runtime facts the builder needs that are not in the CRI request.
#[derive(Debug, Clone)]
pub struct SpecContext {
    /// Container id (used for annotations and error messages).
    pub container_id: String,
    /// Pod sandbox id.
    pub sandbox_id: String,
    /// The container's root filesystem on the host; `/etc/passwd` and
    /// `/etc/group` are read below it.
    pub rootfs: PathBuf,
    /// Namespaces of the sandbox to join.
    pub sandbox_namespaces: SandboxNamespaces,
    /// PID of the target container's init, for `NamespaceMode::TARGET`.
    pub target_pid: Option<u32>,
    /// The sandbox's `/dev/shm` on the host; `None` gives the container its
    /// own 64 MiB tmpfs.
    pub sandbox_shm: Option<PathBuf>,
    /// The sandbox's `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` files,
    /// bind-mounted unless the CRI request mounts those paths itself.
    pub sandbox_hostname_file: Option<PathBuf>,
    pub sandbox_hosts_file: Option<PathBuf>,
    pub sandbox_resolv_conf: Option<PathBuf>,
    /// Hostname of the sandbox (also exported as `HOSTNAME`).
    pub sandbox_hostname: String,
    /// `linux.cgroupsPath`, cgroupfs (`/kubepods/.../<id>`) or systemd
    /// (`slice:prefix:name`) style; see [`cgroups_path`].
    pub cgroups_path: String,
    /// The host's capability bounding set; every set is clamped to it.
    /// `None` skips clamping. See [`host_bounding_set`].
    pub bounding_set: Option<Capabilities>,
    /// Lowest oom_score_adj the runtime may set (its own value when it is
    /// not privileged enough to lower it).
    pub min_oom_score_adj: i32,
    /// The host uses the unified cgroup v2 hierarchy.
    pub cgroup_v2: bool,
    /// Profile for containers whose config names no seccomp profile.
    pub default_seccomp: SeccompDefault,
    /// The kernel has AppArmor enabled.
    pub apparmor_enabled: bool,
    /// AppArmor profile name used for `RuntimeDefault`.
    pub apparmor_default_profile: String,
    /// Recursive read-only mounts (`rro`, kernel ≥ 5.12) are supported.
    pub rro_supported: bool,
    /// Pod pids limit (kubelet `podPidsLimit`); `None` for no limit.
    pub pids_limit: Option<i64>,
    /// Image name for the annotation; the CRI image field when empty.
    pub image_name: String,
}

impl Default for SpecContext {
    fn default() -> Self {
        Self {
            container_id: String::new(),
            sandbox_id: String::new(),
            rootfs: PathBuf::new(),
            sandbox_namespaces: SandboxNamespaces::default(),
            target_pid: None,
            sandbox_shm: None,
            sandbox_hostname_file: None,
            sandbox_hosts_file: None,
            sandbox_resolv_conf: None,
            sandbox_hostname: String::new(),
            cgroups_path: String::new(),
            bounding_set: None,
            min_oom_score_adj: -1000,
            cgroup_v2: true,
            default_seccomp: SeccompDefault::Unconfined,
            apparmor_enabled: false,
            apparmor_default_profile: String::new(),
            rro_supported: false,
            pids_limit: None,
            image_name: String::new(),
        }
    }
}

/// A built spec and what was weakened on the way.
#[derive(Debug, Clone)]
pub struct BuiltSpec {
    pub spec: Spec,
    pub warnings: Vec<Warning>,
}

/// Builds the OCI spec of a CRI container.
pub fn build(
    container: &ContainerConfig,
    sandbox: &PodSandboxConfig,
    image: &ImageConfiguration,
    ctx: &SpecContext,
    reader: &dyn HostReader,
) -> Result<BuiltSpec, SpecError> {
    let mut warnings = Vec::new();
    let empty_sc = LinuxContainerSecurityContext::default();
    let sc = container
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&empty_sc);
    let privileged = sc.privileged;
    if privileged && !sandbox_privileged(sandbox) {
        return Err(SpecError::InvalidField {
            field: "security_context.privileged",
            reason: "a privileged container needs a privileged pod sandbox".into(),
        });
    }

    let ns_opts = namespaces::effective_options(sc, sandbox);
    let host_network = namespaces::host_network(&ns_opts);

    // Capabilities first: the default seccomp profile depends on them.
    let capabilities = caps::build_capabilities(sc, ctx.bounding_set.as_ref(), &mut warnings)?;

    let mut process = process::build_process(container, sc, image, ctx, reader, &mut warnings)?;
    process.set_capabilities(Some(capabilities.clone()));

    let mut linux = Linux::default();
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_mount_label(None);

    linux.set_namespaces(Some(namespaces::build_namespaces(&ns_opts, ctx)?));
    let sysctls = namespaces::build_sysctls(sandbox, &ns_opts)?;
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));

    let mounts = mounts::build_mounts(container, sc, ctx, reader)?;
    linux.set_rootfs_propagation(mounts.rootfs_propagation);
    let (masked, readonly) = mounts::masked_and_readonly(sc);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));

    let devices = mounts::build_devices(container, privileged, reader)?;
    linux.set_devices(Some(devices.nodes));

    let mut res = resources::build_resources(container, ctx, &mut warnings)?;
    res.set_devices(Some(devices.cgroup_rules));
    linux.set_resources(Some(res));
    linux
        .set_cgroups_path((!ctx.cgroups_path.is_empty()).then(|| PathBuf::from(&ctx.cgroups_path)));

    let seccomp = if privileged {
        None
    } else {
        seccomp::build_seccomp(sc, ctx.default_seccomp, &capabilities, reader)?
    };
    linux.set_seccomp(seccomp);

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    let mut root = Root::default();
    root.set_path(ctx.rootfs.clone());
    root.set_readonly(Some(sc.readonly_rootfs));
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts.mounts));
    spec.set_process(Some(process));
    spec.set_hostname(if host_network || ctx.sandbox_hostname.is_empty() {
        None
    } else {
        Some(ctx.sandbox_hostname.clone())
    });
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(build_annotations(container, sandbox, ctx)));
    spec.set_linux(Some(linux));
    Ok(BuiltSpec { spec, warnings })
}

fn sandbox_privileged(sandbox: &PodSandboxConfig) -> bool {
    sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged)
}

/// CRI annotations plus containerd's `io.kubernetes.cri.*` keys.
fn build_annotations(
    container: &ContainerConfig,
    sandbox: &PodSandboxConfig,
    ctx: &SpecContext,
) -> HashMap<String, String> {
    use annotations::*;
    let mut a = container.annotations.clone();
    a.insert(CONTAINER_TYPE.into(), CONTAINER_TYPE_CONTAINER.into());
    a.insert(SANDBOX_ID.into(), ctx.sandbox_id.clone());
    if let Some(md) = &sandbox.metadata {
        a.insert(SANDBOX_NAME.into(), md.name.clone());
        a.insert(SANDBOX_NAMESPACE.into(), md.namespace.clone());
        a.insert(SANDBOX_UID.into(), md.uid.clone());
    }
    if let Some(md) = &container.metadata {
        a.insert(CONTAINER_NAME.into(), md.name.clone());
    }
    let image = if ctx.image_name.is_empty() {
        container
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default()
    } else {
        ctx.image_name.clone()
    };
    a.insert(IMAGE_NAME.into(), image);
    a
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A fake [`HostReader`] and request builders for the unit tests.
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::io;
    use std::path::Path;

    #[derive(Default)]
    pub struct FakeReader {
        pub files: HashMap<PathBuf, Vec<u8>>,
        pub existing: HashSet<PathBuf>,
        pub devices: Vec<DeviceNode>,
        /// Host mounts by mount point; paths outside them are on a shared `/`.
        pub mounts: Vec<HostMount>,
    }

    impl FakeReader {
        pub fn with_file(mut self, path: &str, content: &str) -> Self {
            self.files.insert(path.into(), content.as_bytes().to_vec());
            self
        }
        pub fn with_path(mut self, path: &str) -> Self {
            self.existing.insert(path.into());
            self
        }
    }

    impl HostReader for FakeReader {
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn exists(&self, path: &Path) -> bool {
            self.existing.contains(path) || self.files.contains_key(path)
        }
        fn device(&self, path: &Path) -> io::Result<DeviceNode> {
            self.devices
                .iter()
                .find(|d| d.path == path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn host_devices(&self) -> io::Result<Vec<DeviceNode>> {
            Ok(self.devices.clone())
        }
        fn mount_of(&self, path: &Path) -> io::Result<HostMount> {
            let root = HostMount { mount_point: "/".into(), propagation: Propagation::Shared };
            let best = self.mounts.iter().filter(|m| path.starts_with(&m.mount_point)).max_by_key(|m| m.mount_point.as_os_str().len());
            Ok(best.cloned().unwrap_or(root))
        }
    }

    pub fn ctx() -> SpecContext {
        SpecContext {
            container_id: "c1".into(),
            sandbox_id: "s1".into(),
            rootfs: "/rootfs".into(),
            sandbox_namespaces: SandboxNamespaces::from_pid(42),
            sandbox_shm: Some("/run/berth/s1/shm".into()),
            sandbox_hostname: "pod-a".into(),
            cgroups_path: "/kubepods/podu1/c1".into(),
            ..Default::default()
        }
    }

    pub fn container(args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn with_sc(mut c: ContainerConfig, sc: LinuxContainerSecurityContext) -> ContainerConfig {
        c.linux
            .get_or_insert_with(Default::default)
            .security_context = Some(sc);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use cri_proto::v1::{
        ContainerMetadata, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
        NamespaceMode, NamespaceOption, PodSandboxMetadata,
    };
    use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccompAction};

    #[test]
    fn builds_a_basic_spec() {
        let mut c = container(&["sleep", "1"]);
        c.metadata = Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        });
        c.image = Some(ImageSpec {
            image: "busybox:1".into(),
            ..Default::default()
        });
        c.annotations.insert("x".into(), "y".into());
        let s = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let out = build(
            &c,
            &s,
            &ImageConfiguration::default(),
            &ctx(),
            &FakeReader::default(),
        )
        .unwrap();
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let spec = out.spec;
        assert_eq!(spec.version(), OCI_VERSION);
        assert_eq!(spec.hostname().as_deref(), Some("pod-a"));
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            &PathBuf::from("/rootfs")
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        let a = spec.annotations().as_ref().unwrap();
        assert_eq!(a[annotations::CONTAINER_TYPE], "container");
        assert_eq!(a[annotations::SANDBOX_ID], "s1");
        assert_eq!(a[annotations::CONTAINER_NAME], "app");
        assert_eq!(a[annotations::IMAGE_NAME], "busybox:1");
        assert_eq!(a[annotations::SANDBOX_NAMESPACE], "ns");
        assert_eq!(a["x"], "y");
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/podu1/c1"))
        );
        assert!(linux.seccomp().is_none(), "unconfined by default");
        let p = spec.process().as_ref().unwrap();
        assert!(p.rlimits().is_none());
        assert_eq!(
            p.args().as_ref().unwrap(),
            &vec!["sleep".to_string(), "1".into()]
        );
        // JSON round trip: what the executor will write as config.json.
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
    use std::path::Path;

    #[test]
    fn privileged_container_needs_privileged_sandbox() {
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let c = with_sc(container(&["sh"]), sc);
        let err = build(
            &c,
            &PodSandboxConfig::default(),
            &ImageConfiguration::default(),
            &ctx(),
            &FakeReader::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("privileged"), "{err}");
    }

    #[test]
    fn privileged_container_gets_everything() {
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let c = with_sc(container(&["sh"]), sc);
        let s = PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut cx = ctx();
        cx.default_seccomp = SeccompDefault::RuntimeDefault;
        let out = build(
            &c,
            &s,
            &ImageConfiguration::default(),
            &cx,
            &FakeReader::default(),
        )
        .unwrap();
        let linux = out.spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
        let caps = out
            .spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap().len(),
            all_capabilities().len()
        );
    }

    #[test]
    fn host_network_has_no_hostname_and_no_net_namespace() {
        let ns = NamespaceOption {
            network: NamespaceMode::Node as i32,
            ..Default::default()
        };
        let sc = LinuxContainerSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        };
        let c = with_sc(container(&["sh"]), sc);
        let out = build(
            &c,
            &PodSandboxConfig::default(),
            &ImageConfiguration::default(),
            &ctx(),
            &FakeReader::default(),
        )
        .unwrap();
        assert!(out.spec.hostname().is_none());
        let nss = out
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap();
        assert!(!nss.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
    }

    #[test]
    fn runtime_default_seccomp_from_context() {
        let mut cx = ctx();
        cx.default_seccomp = SeccompDefault::RuntimeDefault;
        let out = build(
            &container(&["sh"]),
            &PodSandboxConfig::default(),
            &ImageConfiguration::default(),
            &cx,
            &FakeReader::default(),
        )
        .unwrap();
        let sec = out
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .clone()
            .unwrap();
        assert_eq!(sec.default_action(), LinuxSeccompAction::ScmpActErrno);
    }
}
