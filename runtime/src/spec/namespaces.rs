//! Linux namespaces (joined from the sandbox, new, or the host's) and
//! namespaced sysctls.

use std::collections::HashMap;
use std::path::PathBuf;

use cri_proto::v1::{
    LinuxContainerSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{SpecContext, SpecError};

/// The container's namespace options, else the sandbox's (kubelet copies
/// the pod's into each container, but be lenient).
pub(crate) fn effective_options(
    sc: &LinuxContainerSecurityContext,
    sandbox: &PodSandboxConfig,
) -> NamespaceOption {
    sc.namespace_options
        .clone()
        .or_else(|| {
            sandbox
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.clone())
        })
        .unwrap_or_default()
}

fn mode(v: i32) -> Result<NamespaceMode, SpecError> {
    NamespaceMode::try_from(v)
        .map_err(|_| SpecError::Namespace(format!("unknown namespace mode {v}")))
}

pub(crate) fn host_network(o: &NamespaceOption) -> bool {
    o.network == NamespaceMode::Node as i32
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path);
    n
}

/// Joins the sandbox's namespace; fails when the context lacks its path.
fn join(typ: LinuxNamespaceType, path: &Option<PathBuf>, standalone: bool) -> Result<LinuxNamespace, SpecError> {
    match path {
        Some(p) => Ok(ns(typ, Some(p.clone()))),
        // A container without a sandbox gets its own namespaces.
        None if standalone => Ok(ns(typ, None)),
        None => Err(SpecError::Namespace(format!(
            "no sandbox {typ} namespace path to join"
        ))),
    }
}

/// network/ipc/uts: the sandbox's unless NODE (host: no entry).
/// pid: POD → sandbox's, CONTAINER → new, NODE → host, TARGET → the target
/// container's. mount: always new. cgroup: new on cgroup v2.
pub(crate) fn build_namespaces(
    o: &NamespaceOption,
    ctx: &SpecContext,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let sb = &ctx.sandbox_namespaces;
    let mut out = Vec::new();

    if let Some(u) = &o.userns_options {
        if u.mode != NamespaceMode::Node as i32 {
            return Err(SpecError::Namespace(
                "user namespaces are not supported".into(),
            ));
        }
    }
    match mode(o.network)? {
        NamespaceMode::Node => {}
        NamespaceMode::Pod => {
            out.push(join(LinuxNamespaceType::Network, &sb.net, sb.standalone)?);
            // UTS follows the network namespace, as in containerd.
            out.push(join(LinuxNamespaceType::Uts, &sb.uts, sb.standalone)?);
        }
        m => {
            return Err(SpecError::Namespace(format!(
                "network mode {m:?} is not supported"
            )))
        }
    }
    match mode(o.ipc)? {
        NamespaceMode::Node => {}
        NamespaceMode::Pod => out.push(join(LinuxNamespaceType::Ipc, &sb.ipc, sb.standalone)?),
        m => {
            return Err(SpecError::Namespace(format!(
                "ipc mode {m:?} is not supported"
            )))
        }
    }
    match mode(o.pid)? {
        NamespaceMode::Node => {}
        NamespaceMode::Pod => out.push(join(LinuxNamespaceType::Pid, &sb.pid, sb.standalone)?),
        NamespaceMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)),
        NamespaceMode::Target => {
            let pid = ctx.target_pid.ok_or_else(|| {
                SpecError::Namespace(format!(
                    "pid mode TARGET ({:?}) but no target pid in the context",
                    o.target_id
                ))
            })?;
            out.push(ns(
                LinuxNamespaceType::Pid,
                Some(format!("/proc/{pid}/ns/pid").into()),
            ));
        }
    }
    out.push(ns(LinuxNamespaceType::Mount, None));
    if ctx.cgroup_v2 {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

/// What a sysctl is namespaced by, or `None` if it is node-wide.
fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key.starts_with("kernel.shm")
        || key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("fs.mqueue.")
    {
        Some(LinuxNamespaceType::Ipc)
    } else {
        None
    }
}

/// Kubernetes allows `/` as separator ("net/ipv4/ip_forward"); with it,
/// dots inside a component stay dots ("net/ipv4/conf/eth0.100/rp_filter").
fn normalize_sysctl(key: &str) -> String {
    if !key.contains('/') {
        return key.to_string();
    }
    key.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// The pod's sysctls, accepted only if namespaced and not in a namespace
/// shared with the host.
pub(crate) fn build_sysctls(
    sandbox: &PodSandboxConfig,
    o: &NamespaceOption,
) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::new();
    let Some(l) = &sandbox.linux else {
        return Ok(out);
    };
    for (k, v) in &l.sysctls {
        let key = normalize_sysctl(k);
        let err = |reason: &str| SpecError::Sysctl {
            key: k.clone(),
            reason: reason.to_string(),
        };
        match sysctl_namespace(&key) {
            None => return Err(err("not a namespaced sysctl; only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* are allowed")),
            Some(LinuxNamespaceType::Network) if host_network(o) => {
                return Err(err("net.* sysctls cannot be set in a pod using the host network"))
            }
            Some(LinuxNamespaceType::Ipc) if o.ipc == NamespaceMode::Node as i32 => {
                return Err(err("IPC sysctls cannot be set in a pod using the host IPC namespace"))
            }
            Some(_) => {}
        }
        out.insert(key, v.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testutil::ctx;
    use cri_proto::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, UserNamespace};
    use std::path::Path;

    fn opts(net: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> NamespaceOption {
        NamespaceOption {
            network: net as i32,
            pid: pid as i32,
            ipc: ipc as i32,
            ..Default::default()
        }
    }

    fn find(v: &[LinuxNamespace], t: LinuxNamespaceType) -> Option<&LinuxNamespace> {
        v.iter().find(|n| n.typ() == t)
    }

    fn path(v: &[LinuxNamespace], t: LinuxNamespaceType) -> Option<&Path> {
        find(v, t).and_then(|n| n.path().as_deref())
    }

    #[test]
    fn pod_mode_joins_sandbox() {
        use NamespaceMode::*;
        let v = build_namespaces(&opts(Pod, Pod, Pod), &ctx()).unwrap();
        assert_eq!(
            path(&v, LinuxNamespaceType::Network),
            Some(Path::new("/proc/42/ns/net"))
        );
        assert_eq!(
            path(&v, LinuxNamespaceType::Ipc),
            Some(Path::new("/proc/42/ns/ipc"))
        );
        assert_eq!(
            path(&v, LinuxNamespaceType::Uts),
            Some(Path::new("/proc/42/ns/uts"))
        );
        assert_eq!(
            path(&v, LinuxNamespaceType::Pid),
            Some(Path::new("/proc/42/ns/pid"))
        );
        let mnt = find(&v, LinuxNamespaceType::Mount).unwrap();
        assert!(mnt.path().is_none());
        assert!(find(&v, LinuxNamespaceType::Cgroup)
            .unwrap()
            .path()
            .is_none());
    }

    #[test]
    fn container_and_node_modes() {
        use NamespaceMode::*;
        let v = build_namespaces(&opts(Node, Container, Node), &ctx()).unwrap();
        assert!(find(&v, LinuxNamespaceType::Network).is_none());
        assert!(find(&v, LinuxNamespaceType::Uts).is_none());
        assert!(find(&v, LinuxNamespaceType::Ipc).is_none());
        let pid = find(&v, LinuxNamespaceType::Pid).unwrap();
        assert!(pid.path().is_none(), "new pid namespace");
        let v = build_namespaces(&opts(Pod, Node, Pod), &ctx()).unwrap();
        assert!(find(&v, LinuxNamespaceType::Pid).is_none());
    }

    #[test]
    fn target_mode() {
        use NamespaceMode::*;
        let mut o = opts(Pod, Target, Pod);
        o.target_id = "other".into();
        let err = build_namespaces(&o, &ctx()).unwrap_err();
        assert!(err.to_string().contains("other"));
        let mut cx = ctx();
        cx.target_pid = Some(777);
        let v = build_namespaces(&o, &cx).unwrap();
        assert_eq!(
            path(&v, LinuxNamespaceType::Pid),
            Some(Path::new("/proc/777/ns/pid"))
        );
    }

    #[test]
    fn cgroup_namespace_only_on_v2() {
        let mut cx = ctx();
        cx.cgroup_v2 = false;
        let v = build_namespaces(&NamespaceOption::default(), &cx).unwrap();
        assert!(find(&v, LinuxNamespaceType::Cgroup).is_none());
    }

    #[test]
    fn given_paths_and_missing_paths() {
        let mut cx = ctx();
        cx.sandbox_namespaces.net = Some("/run/netns/cni-1".into());
        let v = build_namespaces(&NamespaceOption::default(), &cx).unwrap();
        assert_eq!(
            path(&v, LinuxNamespaceType::Network),
            Some(Path::new("/run/netns/cni-1"))
        );
        cx.sandbox_namespaces.ipc = None;
        assert!(build_namespaces(&NamespaceOption::default(), &cx).is_err());
    }

    #[test]
    fn user_namespaces_refused() {
        let o = NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(build_namespaces(&o, &ctx()).is_err());
    }

    fn sandbox(sysctls: &[(&str, &str)], o: NamespaceOption) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                sysctls: sysctls
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(o),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sysctl_validation() {
        use NamespaceMode::*;
        let ok = [
            ("net.ipv4.ip_forward", "1"),
            ("kernel.shmmax", "1"),
            ("kernel.msgmax", "1"),
            ("kernel.sem", "1 2 3 4"),
            ("fs.mqueue.msg_max", "10"),
            ("net/ipv4/conf/eth0.100/rp_filter", "0"),
        ];
        let s = sandbox(&ok, opts(Pod, Pod, Pod));
        let out = build_sysctls(&s, &opts(Pod, Pod, Pod)).unwrap();
        assert_eq!(out.len(), 6);
        assert_eq!(out["net.ipv4.conf.eth0/100.rp_filter"], "0");

        let err = build_sysctls(
            &sandbox(&[("kernel.pid_max", "1")], opts(Pod, Pod, Pod)),
            &opts(Pod, Pod, Pod),
        )
        .unwrap_err();
        assert!(err.to_string().contains("kernel.pid_max"));
        assert!(build_sysctls(
            &sandbox(&[("vm.swappiness", "1")], opts(Pod, Pod, Pod)),
            &opts(Pod, Pod, Pod)
        )
        .is_err());

        let host_net = opts(Node, Pod, Pod);
        let err = build_sysctls(
            &sandbox(&[("net.core.somaxconn", "1")], host_net.clone()),
            &host_net,
        )
        .unwrap_err();
        assert!(err.to_string().contains("host network"), "{err}");
        // IPC sysctls are fine with host network.
        assert!(build_sysctls(
            &sandbox(&[("kernel.shmmax", "1")], host_net.clone()),
            &host_net
        )
        .is_ok());
        let host_ipc = opts(Pod, Pod, Node);
        assert!(build_sysctls(
            &sandbox(&[("kernel.shmmax", "1")], host_ipc.clone()),
            &host_ipc
        )
        .is_err());
    }

    #[test]
    fn options_fall_back_to_sandbox() {
        let s = sandbox(
            &[],
            opts(NamespaceMode::Node, NamespaceMode::Pod, NamespaceMode::Pod),
        );
        let o = effective_options(&Default::default(), &s);
        assert!(host_network(&o));
    }
}
