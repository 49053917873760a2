//! The container process's uid, gid and supplementary groups, resolved
//! against the rootfs' `/etc/passwd` and `/etc/group` as containerd does.

use std::io;
use std::path::{Path, PathBuf};

use cri_proto::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use super::{HostReader, SpecError};

/// The identity the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Primary gid first, then `/etc/group` memberships (unless the Strict
    /// policy), then the CRI `supplemental_groups`; no duplicates.
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads `<rootfs>/<rel>`; a missing file reads as empty (scratch images).
fn read_rootfs_file(
    rootfs: &Path,
    rel: &str,
    reader: &dyn HostReader,
) -> Result<String, SpecError> {
    let path: PathBuf = rootfs.join(rel);
    match reader.read(&path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(SpecError::Read { path, source }),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn id_from_i64(field: &'static str, v: i64) -> Result<u32, SpecError> {
    u32::try_from(v).map_err(|_| SpecError::InvalidField {
        field,
        reason: format!("{v} is not a valid id"),
    })
}

fn push_unique(v: &mut Vec<u32>, id: u32) {
    if !v.contains(&id) {
        v.push(id);
    }
}

/// Resolves the user: CRI `run_as_user` / `run_as_username` / `run_as_group`
/// win over the image's `User` (`uid`, `uid:gid`, `name`, `name:group`, …).
pub(crate) fn resolve_user(
    sc: &LinuxContainerSecurityContext,
    image_user: &str,
    rootfs: &Path,
    reader: &dyn HostReader,
) -> Result<ResolvedUser, SpecError> {
    let passwd = parse_passwd(&read_rootfs_file(rootfs, "etc/passwd", reader)?);
    let groups = parse_group(&read_rootfs_file(rootfs, "etc/group", reader)?);

    // The user part (uid or name) and an explicit group part, if any.
    let (user_part, mut group_part): (String, Option<String>) = if let Some(u) = &sc.run_as_user {
        (
            id_from_i64("security_context.run_as_user", u.value)?.to_string(),
            None,
        )
    } else if !sc.run_as_username.is_empty() {
        (sc.run_as_username.clone(), None)
    } else {
        match image_user.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (image_user.to_string(), None),
        }
    };
    if let Some(g) = &sc.run_as_group {
        group_part = Some(id_from_i64("security_context.run_as_group", g.value)?.to_string());
    }

    // uid 0 when nothing is set, like every runtime.
    let user_part = if user_part.is_empty() {
        "0".to_string()
    } else {
        user_part
    };
    let (uid, entry) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, passwd.iter().find(|p| p.uid == uid)),
        Err(_) => {
            let e = passwd.iter().find(|p| p.name == user_part).ok_or_else(|| {
                SpecError::UnknownUser {
                    name: user_part.clone(),
                }
            })?;
            (e.uid, Some(e))
        }
    };

    let gid = match group_part.as_deref() {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| SpecError::UnknownGroup {
                    name: g.to_string(),
                })?,
        },
        // The passwd entry's primary group, else root's group.
        _ => entry.map(|e| e.gid).unwrap_or(0),
    };

    let mut additional = vec![gid];
    let strict = sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32;
    if let (Some(e), false) = (entry, strict) {
        for g in groups.iter().filter(|g| g.members.contains(&e.name)) {
            push_unique(&mut additional, g.gid);
        }
    }
    for g in &sc.supplemental_groups {
        push_unique(
            &mut additional,
            id_from_i64("security_context.supplemental_groups", *g)?,
        );
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testutil::FakeReader;
    use cri_proto::v1::Int64Value;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1::/:/sbin/nologin\n\
        # comment\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,alice\n\
        users:x:100:\n\
        alice:x:1000:\n\
        video:x:44:alice,bob\n\
        staff:x:50:bob\n";

    fn reader() -> FakeReader {
        FakeReader::default()
            .with_file("/rootfs/etc/passwd", PASSWD)
            .with_file("/rootfs/etc/group", GROUP)
    }

    fn resolve(
        sc: &LinuxContainerSecurityContext,
        image_user: &str,
    ) -> Result<ResolvedUser, SpecError> {
        resolve_user(sc, image_user, Path::new("/rootfs"), &reader())
    }

    fn image(user: &str) -> ResolvedUser {
        resolve(&Default::default(), user).unwrap()
    }

    #[test]
    fn empty_user_is_root_with_roots_groups() {
        let u = image("");
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![0, 10]);
    }

    #[test]
    fn image_user_by_name() {
        let u = image("alice");
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![1000, 10, 44]);
    }

    #[test]
    fn image_user_by_uid() {
        let u = image("1001");
        assert_eq!((u.uid, u.gid), (1001, 100));
        assert_eq!(u.additional_gids, vec![100, 44, 50]);
        // A uid missing from passwd runs with gid 0 and no extra groups.
        let u = image("4242");
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(u.additional_gids, vec![0]);
    }

    #[test]
    fn image_user_with_group() {
        let u = image("alice:video");
        assert_eq!((u.uid, u.gid), (1000, 44));
        assert_eq!(u.additional_gids, vec![44, 10]);
        let u = image("1000:7");
        assert_eq!((u.uid, u.gid), (1000, 7));
        let u = image("bob:50");
        assert_eq!((u.uid, u.gid), (1001, 50));
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let err = resolve(&Default::default(), "mallory").unwrap_err();
        assert!(matches!(&err, SpecError::UnknownUser { name } if name == "mallory"));
        assert!(err.to_string().contains("mallory"));
        let err = resolve(&Default::default(), "alice:nogroup").unwrap_err();
        assert!(matches!(&err, SpecError::UnknownGroup { name } if name == "nogroup"));
        let sc = LinuxContainerSecurityContext {
            run_as_username: "eve".into(),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&sc, "").unwrap_err(),
            SpecError::UnknownUser { .. }
        ));
    }

    #[test]
    fn cri_fields_override_image_user() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 3000 }),
            supplemental_groups: vec![5000, 44],
            ..Default::default()
        };
        let u = resolve(&sc, "bob:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 3000));
        assert_eq!(u.additional_gids, vec![3000, 10, 44, 5000]);

        let sc = LinuxContainerSecurityContext {
            run_as_username: "bob".into(),
            ..Default::default()
        };
        let u = resolve(&sc, "alice").unwrap();
        assert_eq!((u.uid, u.gid), (1001, 100));

        // run_as_group alone overrides the image's group.
        let sc = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 9 }),
            ..Default::default()
        };
        let u = resolve(&sc, "alice:video").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 9));
    }

    #[test]
    fn strict_policy_skips_group_file_memberships() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![77],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        };
        let u = resolve(&sc, "").unwrap();
        assert_eq!(u.additional_gids, vec![1000, 77]);
    }

    #[test]
    fn negative_ids_are_rejected() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: -1 }),
            ..Default::default()
        };
        let err = resolve(&sc, "").unwrap_err();
        assert!(err.to_string().contains("run_as_user"));
    }

    #[test]
    fn scratch_image_without_passwd() {
        let r = FakeReader::default();
        let u = resolve_user(&Default::default(), "65534", Path::new("/rootfs"), &r).unwrap();
        assert_eq!((u.uid, u.gid), (65534, 0));
        let err =
            resolve_user(&Default::default(), "nobody", Path::new("/rootfs"), &r).unwrap_err();
        assert!(matches!(err, SpecError::UnknownUser { .. }));
    }
}
