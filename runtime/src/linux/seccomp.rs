//! Compiles an OCI `LinuxSeccomp` profile to BPF (via seccompiler) and loads it.
//!
//! seccompiler filters have one match action, so the profile becomes a stack
//! of filters: one per distinct non-default action ("these rules → action,
//! else allow") plus one for the default action ("any listed rule → allow,
//! else default"). The kernel runs every filter and takes the most
//! restrictive result, which yields the OCI semantics.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

use super::syscalls::syscall_nr;
use super::{SysError, SysResult};

/// A compiled profile: programs in load order, and syscall names unknown
/// on this architecture (skipped, as runc does).
pub struct CompiledSeccomp {
    pub programs: Vec<BpfProgram>,
    pub unknown: Vec<String>,
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> SysResult<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => SeccompAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        other => return Err(SysError::msg(format!("seccomp action {other:?} is not supported"))),
    })
}

fn condition(arg: &oci_spec::runtime::LinuxSeccompArg) -> SysResult<SeccompCondition> {
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        // libseccomp: value is the mask, valueTwo the expected masked value.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(arg.value()), arg.value_two().unwrap_or(0)),
    };
    SeccompCondition::new(arg.index() as u8, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| SysError::msg(format!("seccomp argument condition: {e}")))
}

/// Rules for one syscall entry: conditions are ANDed in one rule.
fn rules_for(sys: &oci_spec::runtime::LinuxSyscall) -> SysResult<Vec<SeccompRule>> {
    let conds = sys.args().iter().flatten().map(condition).collect::<SysResult<Vec<_>>>()?;
    if conds.is_empty() {
        return Ok(Vec::new()); // Unconditional match.
    }
    Ok(vec![SeccompRule::new(conds).map_err(|e| SysError::msg(format!("seccomp rule: {e}")))?])
}

/// Adds `rules` for `nr`; an empty rule list (unconditional) dominates.
fn merge(map: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, rules: Vec<SeccompRule>) {
    match map.get_mut(&nr) {
        Some(existing) if existing.is_empty() => {}
        Some(existing) if rules.is_empty() => existing.clear(),
        Some(existing) => existing.extend(rules),
        None => {
            map.insert(nr, rules);
        }
    }
}

/// Compiles `profile` for the running architecture.
pub fn compile(profile: &LinuxSeccomp) -> SysResult<CompiledSeccomp> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SysError::msg(format!("seccomp: {e}")))?;
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut unknown = Vec::new();
    // Groups keyed by the action's debug form (SeccompAction is not Ord).
    let mut groups: BTreeMap<String, (SeccompAction, BTreeMap<i64, Vec<SeccompRule>>)> = BTreeMap::new();
    let mut listed: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for sys in profile.syscalls().iter().flatten() {
        let act = action(sys.action(), sys.errno_ret())?;
        if act == default {
            continue;
        }
        let rules = rules_for(sys)?;
        for name in sys.names() {
            let Some(nr) = syscall_nr(name) else {
                unknown.push(name.clone());
                continue;
            };
            if act != SeccompAction::Allow {
                let group = groups.entry(format!("{act:?}")).or_insert_with(|| (act.clone(), BTreeMap::new()));
                merge(&mut group.1, nr, rules.clone());
            }
            merge(&mut listed, nr, rules.clone());
        }
    }
    let build = |rules, mismatch, matched| -> SysResult<BpfProgram> {
        let f = SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| SysError::msg(format!("seccomp filter: {e}")))?;
        f.try_into().map_err(|e: seccompiler::BackendError| SysError::msg(format!("seccomp compile: {e}")))
    };
    let mut programs = Vec::new();
    for (_, (act, rules)) in groups {
        programs.push(build(rules, SeccompAction::Allow, act)?);
    }
    // The default-action filter goes last: once loaded it may block the
    // seccomp()/prctl() calls needed to load further filters.
    if default != SeccompAction::Allow {
        programs.push(build(listed, default, SeccompAction::Allow)?);
    }
    Ok(CompiledSeccomp { programs, unknown })
}

impl CompiledSeccomp {
    /// Loads the filters into this thread. Needs no_new_privs or
    /// CAP_SYS_ADMIN; unlike seccompiler's `apply_filter` it does not set
    /// no_new_privs itself, so the spec decides.
    pub fn load(&self) -> SysResult<()> {
        for p in self.programs.iter().filter(|p| !p.is_empty()) {
            let prog = libc::sock_fprog { len: p.len() as u16, filter: p.as_ptr() as *mut libc::sock_filter };
            // SAFETY: the kernel copies the program, which outlives the call.
            let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog) };
            if rc != 0 {
                return Err(SysError::msg(format!("load seccomp filter: {}", std::io::Error::last_os_error())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_profiles() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["unshare","setns"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["personality"],"action":"SCMP_ACT_KILL","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["no_such_call"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let c = compile(&p).unwrap();
        assert_eq!(c.programs.len(), 2);
        assert_eq!(c.unknown, vec!["no_such_call"]);

        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        assert_eq!(compile(&p).unwrap().programs.len(), 1);
    }
}
