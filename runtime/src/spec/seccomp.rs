//! Seccomp: the CRI profile choice (RuntimeDefault, Unconfined, Localhost,
//! or the deprecated `seccomp_profile_path` strings) → `linux.seccomp`.

use std::path::{Path, PathBuf};

use cri_proto::v1::security_profile::ProfileType;
use cri_proto::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

use super::seccomp_default as data;
use super::{HostReader, SeccompDefault, SpecError};

/// Which profile a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    RuntimeDefault,
    Unconfined,
    Localhost(PathBuf),
}

fn invalid(field: &'static str, reason: String) -> SpecError {
    SpecError::InvalidField { field, reason }
}

/// `seccomp` wins over `seccomp_profile_path`; neither → the context's
/// default.
fn choice(
    sc: &LinuxContainerSecurityContext,
    default: SeccompDefault,
) -> Result<Choice, SpecError> {
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Choice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(Choice::Unconfined),
            Ok(ProfileType::Localhost) => {
                let path = p
                    .localhost_ref
                    .strip_prefix("localhost/")
                    .unwrap_or(&p.localhost_ref);
                if !path.starts_with('/') {
                    return Err(invalid(
                        "security_context.seccomp.localhost_ref",
                        format!("{:?} is not an absolute path", p.localhost_ref),
                    ));
                }
                Ok(Choice::Localhost(path.into()))
            }
            Err(_) => Err(invalid(
                "security_context.seccomp.profile_type",
                format!("unknown type {}", p.profile_type),
            )),
        };
    }
    match sc.seccomp_profile_path.as_str() {
        "" => Ok(match default {
            SeccompDefault::Unconfined => Choice::Unconfined,
            SeccompDefault::RuntimeDefault => Choice::RuntimeDefault,
        }),
        "unconfined" => Ok(Choice::Unconfined),
        "runtime/default" | "docker/default" => Ok(Choice::RuntimeDefault),
        other => match other.strip_prefix("localhost/") {
            Some(p) if p.starts_with('/') => Ok(Choice::Localhost(p.into())),
            _ => Err(invalid(
                "security_context.seccomp_profile_path",
                format!("invalid profile {other:?}"),
            )),
        },
    }
}

/// Loads an OCI `LinuxSeccomp` JSON profile through the reader.
fn load_localhost(path: &Path, reader: &dyn HostReader) -> Result<LinuxSeccomp, SpecError> {
    let bytes = reader.read(path).map_err(|e| SpecError::SeccompProfile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| SpecError::SeccompProfile {
        path: path.to_path_buf(),
        reason: format!("invalid JSON: {e}"),
    })
}

/// The container's seccomp filter; `None` for unconfined. (Privileged
/// containers never get here.)
pub(crate) fn build_seccomp(
    sc: &LinuxContainerSecurityContext,
    default: SeccompDefault,
    caps: &LinuxCapabilities,
    reader: &dyn HostReader,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    Ok(match choice(sc, default)? {
        Choice::Unconfined => None,
        Choice::RuntimeDefault => Some(default_profile(
            caps.effective().as_ref().unwrap_or(&Capabilities::new()),
        )),
        Choice::Localhost(p) => Some(load_localhost(&p, reader)?),
    })
}

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Every field is set, so the builder cannot fail.
    b.build().unwrap_or_default()
}

fn allow_if(name: &str, a: LinuxSeccompArg) -> LinuxSyscall {
    let mut s = allow(&[name]);
    s.set_args(Some(vec![a]));
    s
}

/// The architectures a profile covers on this host.
fn host_architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "x86" => vec![Arch::ScmpArchX86],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "arm" => vec![Arch::ScmpArchArm],
        _ => vec![Arch::ScmpArchNative],
    }
}

/// The RuntimeDefault profile for a container with effective caps `caps`:
/// EPERM for everything not allowlisted; namespace-creating clone flags
/// refused and clone3 answered with ENOSYS unless CAP_SYS_ADMIN;
/// capability-gated syscalls added for the caps held.
pub fn default_profile(caps: &Capabilities) -> LinuxSeccomp {
    let arch_extra: &[&str] = match std::env::consts::ARCH {
        "x86_64" | "x86" => data::ALLOWED_X86,
        "aarch64" | "arm" => data::ALLOWED_ARM,
        _ => &[],
    };
    let mut names: Vec<&str> = data::ALLOWED.to_vec();
    names.extend_from_slice(arch_extra);
    let mut syscalls = vec![allow(&names)];
    syscalls.push(allow_if(
        "socket",
        arg(0, data::AF_VSOCK, None, LinuxSeccompOperator::ScmpCmpNe),
    ));
    // Arguments in one rule are ANDed, so one rule per allowed persona.
    for p in data::PERSONALITY_ALLOWED {
        syscalls.push(allow_if(
            "personality",
            arg(0, *p, None, LinuxSeccompOperator::ScmpCmpEq),
        ));
    }
    if !caps.contains(&Capability::SysAdmin) {
        // MASKED_EQ: (flags & value) == value_two (0 here).
        let a = arg(
            0,
            data::CLONE_NAMESPACE_FLAGS,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        );
        syscalls.push(allow_if("clone", a));
        let mut clone3 = LinuxSyscall::default();
        clone3.set_names(vec!["clone3".into()]);
        clone3.set_action(LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(data::ENOSYS));
        syscalls.push(clone3);
    }
    for (cap, names) in data::CAP_GATED {
        if caps.contains(cap) {
            syscalls.push(allow(names));
        }
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_default_errno_ret(Some(data::EPERM));
    s.set_architectures(Some(host_architectures()));
    s.set_syscalls(Some(syscalls));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::caps::DEFAULT_CAPABILITIES;
    use crate::spec::testutil::FakeReader;
    use cri_proto::v1::SecurityProfile;

    fn default_caps() -> Capabilities {
        DEFAULT_CAPABILITIES.iter().copied().collect()
    }

    /// Names allowed without argument conditions.
    fn unconditional(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn linux_caps(c: Capabilities) -> LinuxCapabilities {
        let mut l = LinuxCapabilities::default();
        l.set_effective(Some(c));
        l
    }

    #[test]
    fn runtime_default_profile_contents() {
        let p = default_profile(&default_caps());
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        let allowed = unconditional(&p);
        for must in [
            "read",
            "write",
            "exit_group",
            "execve",
            "openat",
            "futex",
            "chroot",
        ] {
            assert!(allowed.iter().any(|n| n == must), "{must} allowed");
        }
        for never in [
            "unshare",
            "mount",
            "umount2",
            "kexec_load",
            "kexec_file_load",
            "bpf",
            "perf_event_open",
            "ptrace",
            "keyctl",
            "add_key",
            "request_key",
            "open_by_handle_at",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
            "swapon",
            "swapoff",
            "pivot_root",
            "setns",
            "clone",
            "clone3",
            "personality",
            "socket",
            "userfaultfd",
        ] {
            assert!(
                !allowed.iter().any(|n| n == never),
                "{never} not allowed unconditionally"
            );
        }
        let arches = p.architectures().clone().unwrap();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                arches,
                vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            );
            assert!(allowed.iter().any(|n| n == "arch_prctl"));
        }
    }

    #[test]
    fn clone_is_filtered_by_namespace_flags() {
        let p = default_profile(&default_caps());
        let sys = p.syscalls().clone().unwrap();
        let clone = sys
            .iter()
            .find(|s| s.names() == &vec!["clone".to_string()])
            .unwrap();
        let a = clone.args().clone().unwrap()[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(a.value(), 0x7E02_0000);
        assert_eq!(a.value_two(), Some(0));
        let clone3 = sys
            .iter()
            .find(|s| s.names() == &vec!["clone3".to_string()])
            .unwrap();
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(38));
        assert_eq!(
            sys.iter().filter(|s| s.names()[0] == "personality").count(),
            5
        );
    }

    #[test]
    fn capabilities_unlock_gated_syscalls() {
        let mut caps = default_caps();
        caps.insert(Capability::SysAdmin);
        caps.insert(Capability::SysPtrace);
        let p = default_profile(&caps);
        let allowed = unconditional(&p);
        for n in ["mount", "unshare", "setns", "clone", "ptrace", "bpf"] {
            assert!(allowed.iter().any(|x| x == n), "{n}");
        }
        assert!(!allowed.iter().any(|x| x == "kexec_load"));
        assert!(!allowed.iter().any(|x| x == "reboot"));
        // No clone filter when CAP_SYS_ADMIN is held.
        assert!(!p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.names()[0] == "clone3"));
    }

    #[test]
    fn profile_choice() {
        let none = LinuxContainerSecurityContext::default();
        assert_eq!(
            choice(&none, SeccompDefault::Unconfined).unwrap(),
            Choice::Unconfined
        );
        assert_eq!(
            choice(&none, SeccompDefault::RuntimeDefault).unwrap(),
            Choice::RuntimeDefault
        );
        let path = |s: &str| LinuxContainerSecurityContext {
            seccomp_profile_path: s.into(),
            ..Default::default()
        };
        assert_eq!(
            choice(&path("runtime/default"), SeccompDefault::Unconfined).unwrap(),
            Choice::RuntimeDefault
        );
        assert_eq!(
            choice(&path("docker/default"), SeccompDefault::Unconfined).unwrap(),
            Choice::RuntimeDefault
        );
        assert_eq!(
            choice(&path("unconfined"), SeccompDefault::RuntimeDefault).unwrap(),
            Choice::Unconfined
        );
        assert_eq!(
            choice(&path("localhost//etc/p.json"), SeccompDefault::Unconfined).unwrap(),
            Choice::Localhost("/etc/p.json".into())
        );
        assert!(choice(&path("localhost/rel.json"), SeccompDefault::Unconfined).is_err());
        assert!(choice(&path("bogus"), SeccompDefault::Unconfined).is_err());
        let prof = |t: ProfileType, r: &str| LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            seccomp_profile_path: "unconfined".into(),
            ..Default::default()
        };
        assert_eq!(
            choice(
                &prof(ProfileType::RuntimeDefault, ""),
                SeccompDefault::Unconfined
            )
            .unwrap(),
            Choice::RuntimeDefault
        );
        assert_eq!(
            choice(
                &prof(ProfileType::Unconfined, ""),
                SeccompDefault::RuntimeDefault
            )
            .unwrap(),
            Choice::Unconfined
        );
        assert_eq!(
            choice(
                &prof(ProfileType::Localhost, "/p.json"),
                SeccompDefault::Unconfined
            )
            .unwrap(),
            Choice::Localhost("/p.json".into())
        );
        assert!(choice(
            &prof(ProfileType::Localhost, ""),
            SeccompDefault::Unconfined
        )
        .is_err());
    }

    const PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_LOG",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]
    }"#;

    fn localhost(r: &str) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn localhost_profiles() {
        let reader = FakeReader::default()
            .with_file("/profiles/ok.json", PROFILE)
            .with_file("/profiles/bad.json", "{\"defaultAction\": ");
        let caps = linux_caps(default_caps());
        let p = build_seccomp(
            &localhost("/profiles/ok.json"),
            SeccompDefault::Unconfined,
            &caps,
            &reader,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActLog);
        assert_eq!(p.syscalls().as_ref().unwrap()[0].names().len(), 2);

        let err = build_seccomp(
            &localhost("/profiles/bad.json"),
            SeccompDefault::Unconfined,
            &caps,
            &reader,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/profiles/bad.json") && msg.contains("invalid JSON"),
            "{msg}"
        );

        let err = build_seccomp(
            &localhost("/profiles/none.json"),
            SeccompDefault::Unconfined,
            &caps,
            &reader,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/profiles/none.json"));
    }

    #[test]
    fn unconfined_is_none() {
        let caps = linux_caps(default_caps());
        let sc = LinuxContainerSecurityContext {
            seccomp_profile_path: "unconfined".into(),
            ..Default::default()
        };
        assert!(build_seccomp(
            &sc,
            SeccompDefault::RuntimeDefault,
            &caps,
            &FakeReader::default()
        )
        .unwrap()
        .is_none());
    }
}
