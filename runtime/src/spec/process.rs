//! The OCI `process`: argv, environment, working directory, user,
//! oom_score_adj, AppArmor.

use cri_proto::v1::security_profile::ProfileType;
use cri_proto::v1::{ContainerConfig, LinuxContainerSecurityContext};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Process, User};

use super::user::resolve_user;
use super::{HostReader, SpecContext, SpecError, Warning};

/// PATH for images that set none (containerd's default).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes' rules: `command` replaces the image Entrypoint and drops its
/// Cmd; `args` alone replace Cmd; neither → Entrypoint + Cmd.
pub(crate) fn merge_args(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    cmd: &[String],
) -> Result<Vec<String>, SpecError> {
    let out: Vec<String> = if !command.is_empty() {
        command.iter().chain(args).cloned().collect()
    } else if !args.is_empty() {
        entrypoint.iter().chain(args).cloned().collect()
    } else {
        entrypoint.iter().chain(cmd).cloned().collect()
    };
    if out.is_empty() {
        return Err(SpecError::EmptyCommand);
    }
    Ok(out)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Adds `entry`, replacing an earlier one with the same key in place.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = env_key(&entry).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// Default PATH, then HOSTNAME, then the image's Env, then the CRI envs;
/// later entries win by key while keeping the first position.
pub(crate) fn merge_env(
    hostname: &str,
    image_env: &[String],
    cri_env: &[(String, String)],
) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    if !hostname.is_empty() {
        set_env(&mut env, format!("HOSTNAME={hostname}"));
    }
    for e in image_env {
        set_env(&mut env, e.clone());
    }
    for (k, v) in cri_env {
        set_env(&mut env, format!("{k}={v}"));
    }
    env
}

/// Clamps oom_score_adj into `[min_allowed, 1000]`, warning when it moves.
pub(crate) fn clamp_oom_score_adj(
    requested: i64,
    min_allowed: i32,
    warnings: &mut Vec<Warning>,
) -> i32 {
    let lo = i64::from(min_allowed.clamp(-1000, 1000));
    let v = requested.clamp(lo, 1000);
    if v != requested {
        warnings.push(Warning(format!("oom_score_adj {requested} clamped to {v}")));
    }
    v as i32
}

/// The AppArmor profile name, or `None` for unconfined/unsupported.
fn apparmor_profile(
    sc: &LinuxContainerSecurityContext,
    ctx: &SpecContext,
    warnings: &mut Vec<Warning>,
) -> Result<Option<String>, SpecError> {
    // (wanted by the request, profile name) — None name = runtime default.
    let req: Option<Option<String>> = if sc.privileged {
        None
    } else if let Some(p) = &sc.apparmor {
        match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Some(None),
            Ok(ProfileType::Unconfined) => None,
            Ok(ProfileType::Localhost) => {
                let name = p
                    .localhost_ref
                    .strip_prefix("localhost/")
                    .unwrap_or(&p.localhost_ref);
                if name.is_empty() {
                    return Err(SpecError::InvalidField {
                        field: "security_context.apparmor.localhost_ref",
                        reason: "empty profile name".into(),
                    });
                }
                Some(Some(name.to_string()))
            }
            Err(_) => {
                return Err(SpecError::InvalidField {
                    field: "security_context.apparmor.profile_type",
                    reason: format!("unknown profile type {}", p.profile_type),
                })
            }
        }
    } else {
        match sc.apparmor_profile.as_str() {
            // Unset means runtime default for AppArmor (unlike seccomp).
            "" | "runtime/default" => Some(None),
            "unconfined" => None,
            other => match other.strip_prefix("localhost/") {
                Some(name) if !name.is_empty() => Some(Some(name.to_string())),
                _ => {
                    return Err(SpecError::InvalidField {
                        field: "security_context.apparmor_profile",
                        reason: format!("invalid profile {other:?}"),
                    })
                }
            },
        }
    };
    let Some(name) = req else { return Ok(None) };
    if !ctx.apparmor_enabled {
        // Only an explicit profile is worth a warning.
        if let Some(n) = name {
            warnings.push(Warning(format!(
                "AppArmor is not enabled on this host; profile {n:?} ignored"
            )));
        }
        return Ok(None);
    }
    Ok(match name {
        Some(n) => Some(n),
        None if ctx.apparmor_default_profile.is_empty() => None,
        None => Some(ctx.apparmor_default_profile.clone()),
    })
}

/// Builds `process` (capabilities are set by the caller).
pub(crate) fn build_process(
    container: &ContainerConfig,
    sc: &LinuxContainerSecurityContext,
    image: &ImageConfiguration,
    ctx: &SpecContext,
    reader: &dyn HostReader,
    warnings: &mut Vec<Warning>,
) -> Result<Process, SpecError> {
    let icfg = image.config().clone().unwrap_or_default();
    let empty = Vec::new();
    let args = merge_args(
        &container.command,
        &container.args,
        icfg.entrypoint().as_ref().unwrap_or(&empty),
        icfg.cmd().as_ref().unwrap_or(&empty),
    )?;

    let mut cri_env = Vec::with_capacity(container.envs.len());
    for kv in &container.envs {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(SpecError::InvalidField {
                field: "envs",
                reason: format!("invalid variable name {:?}", kv.key),
            });
        }
        let value = String::from_utf8(kv.value.clone()).map_err(|_| SpecError::InvalidField {
            field: "envs",
            reason: format!("value of {} is not UTF-8", kv.key),
        })?;
        cri_env.push((kv.key.clone(), value));
    }
    let mut env = merge_env(
        &ctx.sandbox_hostname,
        icfg.env().as_ref().unwrap_or(&empty),
        &cri_env,
    );
    // On a terminal, TERM=xterm unless the image or config set one (as containerd does).
    if container.tty && !env.iter().any(|e| env_key(e) == "TERM") {
        env.push("TERM=xterm".into());
    }

    let cwd = if !container.working_dir.is_empty() {
        container.working_dir.clone()
    } else {
        icfg.working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    if !cwd.starts_with('/') {
        return Err(SpecError::InvalidField {
            field: "working_dir",
            reason: format!("{cwd:?} is not absolute"),
        });
    }

    let resolved = resolve_user(
        sc,
        icfg.user().as_deref().unwrap_or(""),
        &ctx.rootfs,
        reader,
    )?;
    let mut user = User::default();
    user.set_uid(resolved.uid);
    user.set_gid(resolved.gid);
    user.set_additional_gids(Some(resolved.additional_gids));

    let oom = container
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map(|r| r.oom_score_adj)
        .unwrap_or(0);

    let mut p = Process::default();
    p.set_terminal(Some(container.tty));
    p.set_args(Some(args));
    p.set_env(Some(env));
    p.set_cwd(cwd.into());
    p.set_user(user);
    p.set_rlimits(None);
    p.set_no_new_privileges(Some(sc.no_new_privs));
    p.set_oom_score_adj(Some(clamp_oom_score_adj(
        oom,
        ctx.min_oom_score_adj,
        warnings,
    )));
    p.set_apparmor_profile(apparmor_profile(sc, ctx, warnings)?);
    p.set_selinux_label(None);
    p.set_capabilities(None);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testutil::{ctx, FakeReader};
    use cri_proto::v1::{KeyValue, LinuxContainerConfig, LinuxContainerResources, SecurityProfile};
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn entrypoint_cmd_merging_table() {
        let ep = v(&["/ep"]);
        let cmd = v(&["cmd-arg"]);
        // (command, args, entrypoint, cmd) → expected
        type Row<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [String],
            &'a [String],
            &'a [&'a str],
        );
        let table: &[Row] = &[
            (&[], &[], &ep, &cmd, &["/ep", "cmd-arg"]),
            (&["/c"], &[], &ep, &cmd, &["/c"]),
            (&["/c"], &["a"], &ep, &cmd, &["/c", "a"]),
            (&[], &["a", "b"], &ep, &cmd, &["/ep", "a", "b"]),
            (&[], &["a"], &[], &cmd, &["a"]),
            (&[], &[], &[], &cmd, &["cmd-arg"]),
            (&[], &[], &ep, &[], &["/ep"]),
            (&["/c"], &[], &[], &[], &["/c"]),
        ];
        for (command, args, e, c, want) in table {
            let got = merge_args(&v(command), &v(args), e, c).unwrap();
            assert_eq!(got, v(want), "command={command:?} args={args:?}");
        }
        assert!(matches!(
            merge_args(&[], &[], &[], &[]),
            Err(SpecError::EmptyCommand)
        ));
    }

    #[test]
    fn env_later_wins_in_place() {
        let env = merge_env(
            "pod-a",
            &v(&["PATH=/img/bin", "A=1", "B=2", "NOEQ"]),
            &[
                ("B".into(), "cri".into()),
                ("C".into(), "3".into()),
                ("HOSTNAME".into(), "x".into()),
            ],
        );
        assert_eq!(
            env,
            v(&["PATH=/img/bin", "HOSTNAME=x", "A=1", "B=cri", "NOEQ", "C=3"])
        );
        let env = merge_env("", &[], &[]);
        assert_eq!(env, v(&[DEFAULT_PATH_ENV]));
    }

    #[test]
    fn oom_clamping() {
        let mut w = Vec::new();
        assert_eq!(clamp_oom_score_adj(-998, -1000, &mut w), -998);
        assert!(w.is_empty());
        assert_eq!(clamp_oom_score_adj(-998, -500, &mut w), -500);
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("-998") && w[0].0.contains("-500"));
        assert_eq!(clamp_oom_score_adj(5000, -1000, &mut w), 1000);
        assert_eq!(w.len(), 2);
    }

    fn image(ep: &[&str], cmd: &[&str], env: &[&str], wd: &str, user: &str) -> ImageConfiguration {
        let cfg = ConfigBuilder::default()
            .entrypoint(v(ep))
            .cmd(v(cmd))
            .env(v(env))
            .working_dir(wd.to_string())
            .user(user.to_string())
            .build()
            .unwrap();
        ImageConfigurationBuilder::default()
            .config(cfg)
            .build()
            .unwrap()
    }

    #[test]
    fn process_from_image_and_cri() {
        let img = image(&["/bin/app"], &["--serve"], &["A=img"], "/srv", "alice");
        let c = ContainerConfig {
            args: v(&["--debug"]),
            envs: vec![KeyValue {
                key: "A".into(),
                value: b"cri".to_vec(),
            }],
            tty: true,
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    oom_score_adj: -999,
                    ..Default::default()
                }),
                security_context: None,
            }),
            ..Default::default()
        };
        let r =
            FakeReader::default().with_file("/rootfs/etc/passwd", "alice:x:1000:1000::/:/bin/sh\n");
        let mut cx = ctx();
        cx.min_oom_score_adj = -900;
        let mut w = Vec::new();
        let p = build_process(&c, &Default::default(), &img, &cx, &r, &mut w).unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &v(&["/bin/app", "--debug"]));
        assert!(p.env().as_ref().unwrap().contains(&"A=cri".to_string()));
        assert!(p
            .env()
            .as_ref()
            .unwrap()
            .contains(&"HOSTNAME=pod-a".to_string()));
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.terminal(), Some(true));
        assert!(p.env().as_ref().unwrap().contains(&"TERM=xterm".to_string()));
        assert_eq!(p.oom_score_adj(), Some(-900));
        assert_eq!(p.no_new_privileges(), Some(false));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn working_dir_rules() {
        let r = FakeReader::default();
        let mut c = ContainerConfig {
            args: v(&["x"]),
            ..Default::default()
        };
        let p = build_process(
            &c,
            &Default::default(),
            &ImageConfiguration::default(),
            &ctx(),
            &r,
            &mut vec![],
        )
        .unwrap();
        assert_eq!(p.cwd().to_str(), Some("/"));
        c.working_dir = "/work".into();
        let img = image(&[], &[], &[], "/srv", "");
        let p = build_process(&c, &Default::default(), &img, &ctx(), &r, &mut vec![]).unwrap();
        assert_eq!(p.cwd().to_str(), Some("/work"));
        c.working_dir = "rel".into();
        let err =
            build_process(&c, &Default::default(), &img, &ctx(), &r, &mut vec![]).unwrap_err();
        assert!(err.to_string().contains("working_dir"));
    }

    #[test]
    fn bad_env_names_are_rejected() {
        let c = ContainerConfig {
            args: v(&["x"]),
            envs: vec![KeyValue {
                key: "A=B".into(),
                value: vec![],
            }],
            ..Default::default()
        };
        let err = build_process(
            &c,
            &Default::default(),
            &ImageConfiguration::default(),
            &ctx(),
            &FakeReader::default(),
            &mut vec![],
        )
        .unwrap_err();
        assert!(err.to_string().contains("envs"));
    }

    #[test]
    fn apparmor_handling() {
        let local = LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: "localhost/my-prof".into(),
            }),
            ..Default::default()
        };
        // Kernel without AppArmor: explicit profile ignored with a warning.
        let mut w = Vec::new();
        assert_eq!(apparmor_profile(&local, &ctx(), &mut w).unwrap(), None);
        assert_eq!(w.len(), 1);
        // Defaults are silent.
        let mut w = Vec::new();
        assert_eq!(
            apparmor_profile(&Default::default(), &ctx(), &mut w).unwrap(),
            None
        );
        assert!(w.is_empty());

        let mut cx = ctx();
        cx.apparmor_enabled = true;
        cx.apparmor_default_profile = "berth-default".into();
        assert_eq!(
            apparmor_profile(&local, &cx, &mut w).unwrap().as_deref(),
            Some("my-prof")
        );
        assert_eq!(
            apparmor_profile(&Default::default(), &cx, &mut w)
                .unwrap()
                .as_deref(),
            Some("berth-default")
        );
        let unconf = LinuxContainerSecurityContext {
            apparmor_profile: "unconfined".into(),
            ..Default::default()
        };
        assert_eq!(apparmor_profile(&unconf, &cx, &mut w).unwrap(), None);
        let priv_ = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(apparmor_profile(&priv_, &cx, &mut w).unwrap(), None);
        let bad = LinuxContainerSecurityContext {
            apparmor_profile: "weird".into(),
            ..Default::default()
        };
        assert!(apparmor_profile(&bad, &cx, &mut w).is_err());
        assert!(w.is_empty());
    }
}
