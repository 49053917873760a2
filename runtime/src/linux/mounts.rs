//! Root filesystem setup: propagation, spec mounts, device nodes,
//! pivot_root, masked and read-only paths.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::{Context, SysError, SysResult};

const NONE: Option<&str> = None;

/// Parsed mount options.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation changes applied after mounting, in order.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options passed as mount data.
    pub data: Vec<String>,
    pub bind: bool,
}

/// Parses OCI/fstab-style mount options.
pub fn parse_options(opts: &[String]) -> MountOptions {
    let mut o = MountOptions { flags: MsFlags::empty(), propagation: Vec::new(), data: Vec::new(), bind: false };
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                (MsFlags::MS_BIND, MsFlags::empty())
            }
            "rbind" => {
                o.bind = true;
                (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty())
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable" | "runbindable" => {
                let mut p = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "slave" => MsFlags::MS_SLAVE,
                    "shared" => MsFlags::MS_SHARED,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if opt.starts_with('r') {
                    p |= MsFlags::MS_REC;
                }
                o.propagation.push(p);
                continue;
            }
            // Runtime-only hints without a kernel meaning here.
            "tmpcopyup" | "idmap" | "ridmap" | "defaults" => continue,
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o
}

/// Joins `path` under `root`, resolving symlinks as if `root` were `/`, so
/// the result never escapes `root`.
pub fn secure_join(root: &Path, path: &Path) -> PathBuf {
    let mut pending: Vec<OsString> = Vec::new();
    let push_rev = |pending: &mut Vec<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push(n.to_os_string()),
                Component::ParentDir => pending.push("..".into()),
                _ => {}
            }
        }
    };
    push_rev(&mut pending, path);
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(&resolved).join(&part);
        match fs::read_link(&candidate) {
            Ok(target) if links < 255 => {
                links += 1;
                if target.is_absolute() {
                    resolved.clear();
                }
                push_rev(&mut pending, &target);
            }
            _ => resolved.push(&part),
        }
    }
    root.join(resolved)
}

/// Mount flags that an existing mount at `path` has and that a bind
/// remount must keep (they may be locked).
fn existing_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else { return MsFlags::empty() };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

fn bind_remount(path: &Path, flags: MsFlags) -> SysResult<()> {
    let flags = flags | existing_flags(path) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mount(NONE, path, NONE, flags, NONE).ctx(|| format!("remount {} ({flags:?})", path.display()))
}

/// Everything needed to prepare a container's root filesystem.
pub struct RootfsConfig<'a> {
    pub rootfs: &'a Path,
    pub mounts: &'a [Mount],
    pub propagation: Option<&'a str>,
    pub devices: &'a [LinuxDevice],
    /// Host cgroup directories to expose under a `cgroup` mount.
    pub cgroup_sources: Vec<(String, PathBuf)>,
    /// Whether the container has its own cgroup namespace.
    pub cgroup_ns: bool,
}

/// Sets up mounts under `rootfs` in the current (private) mount namespace.
pub fn prepare_rootfs(cfg: &RootfsConfig) -> SysResult<()> {
    let prop = match cfg.propagation.unwrap_or("rslave") {
        "shared" | "rshared" => MsFlags::MS_SHARED,
        "private" | "rprivate" => MsFlags::MS_PRIVATE,
        "unbindable" | "runbindable" => MsFlags::MS_UNBINDABLE,
        _ => MsFlags::MS_SLAVE,
    } | MsFlags::MS_REC;
    mount(NONE, "/", NONE, prop, NONE).ctx(|| "set propagation of /")?;
    make_parent_mount_private(cfg.rootfs)?;
    mount(Some(cfg.rootfs), cfg.rootfs, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
        .ctx(|| format!("bind rootfs {}", cfg.rootfs.display()))?;

    let mut dev_bound = false;
    for m in cfg.mounts {
        let dest = secure_join(cfg.rootfs, m.destination());
        let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
        let typ = m.typ().as_deref().unwrap_or("");
        if m.destination() == Path::new("/dev") && (opts.bind || typ == "bind") {
            dev_bound = true;
        }
        if typ == "cgroup" || typ == "cgroup2" {
            mount_cgroup(cfg, &dest, &opts)?;
        } else if opts.bind || typ == "bind" {
            mount_bind(m, &dest, &opts)?;
        } else {
            fs::create_dir_all(&dest).ctx(|| format!("mkdir {}", dest.display()))?;
            let src = m.source().as_ref().map(|s| s.to_path_buf()).unwrap_or_else(|| PathBuf::from(typ));
            let data = opts.data.join(",");
            let flags = opts.flags & !MsFlags::MS_REMOUNT;
            mount(Some(&src), &dest, Some(typ), flags, (!data.is_empty()).then_some(data.as_str()))
                .ctx(|| format!("mount {typ} on {}", m.destination().display()))?;
            for p in &opts.propagation {
                mount(NONE, &dest, NONE, *p, NONE).ctx(|| format!("set propagation of {}", dest.display()))?;
            }
        }
    }
    if !dev_bound {
        create_devices(cfg.rootfs, cfg.devices)?;
    }
    Ok(())
}

fn make_parent_mount_private(rootfs: &Path) -> SysResult<()> {
    let info = fs::read_to_string("/proc/self/mountinfo").ctx(|| "read mountinfo")?;
    let parent = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .filter(|mp| rootfs.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len());
    if let Some(mp) = parent {
        mount(NONE, &mp, NONE, MsFlags::MS_PRIVATE, NONE).ctx(|| format!("make {} private", mp.display()))?;
    }
    Ok(())
}

fn mount_bind(m: &Mount, dest: &Path, opts: &MountOptions) -> SysResult<()> {
    let src = m.source().clone().ok_or_else(|| SysError::msg(format!("bind mount {} without source", dest.display())))?;
    let meta = fs::metadata(&src).ctx(|| format!("bind source {}", src.display()))?;
    if meta.is_dir() {
        fs::create_dir_all(dest).ctx(|| format!("mkdir {}", dest.display()))?;
    } else {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        if !dest.exists() {
            fs::File::create(dest).ctx(|| format!("create {}", dest.display()))?;
        }
    }
    let base = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
    mount(Some(&src), dest, NONE, base, NONE).ctx(|| format!("bind {} on {}", src.display(), m.destination().display()))?;
    let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        bind_remount(dest, extra)?;
    }
    for p in &opts.propagation {
        mount(NONE, dest, NONE, *p, NONE).ctx(|| format!("set propagation of {}", dest.display()))?;
    }
    Ok(())
}

fn mount_cgroup(cfg: &RootfsConfig, dest: &Path, opts: &MountOptions) -> SysResult<()> {
    fs::create_dir_all(dest).ctx(|| format!("mkdir {}", dest.display()))?;
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if let [(name, src)] = cfg.cgroup_sources.as_slice() {
        if name.is_empty() {
            // v2: a fresh cgroup2 mount shows the namespace root.
            if cfg.cgroup_ns {
                return mount(Some("cgroup2"), dest, Some("cgroup2"), opts.flags, NONE).ctx(|| "mount cgroup2");
            }
            mount(Some(src), dest, NONE, MsFlags::MS_BIND, NONE).ctx(|| format!("bind {}", src.display()))?;
            return if ro { bind_remount(dest, base | MsFlags::MS_RDONLY) } else { Ok(()) };
        }
    }
    // v1: a tmpfs holding a bind of the container's directory per hierarchy.
    mount(Some("tmpfs"), dest, Some("tmpfs"), base, Some("mode=755")).ctx(|| "mount tmpfs for cgroups")?;
    for (name, src) in &cfg.cgroup_sources {
        let sub = dest.join(name);
        fs::create_dir_all(&sub).ctx(|| format!("mkdir {}", sub.display()))?;
        if src.exists() {
            mount(Some(src), &sub, NONE, MsFlags::MS_BIND, NONE).ctx(|| format!("bind {}", src.display()))?;
            if ro {
                bind_remount(&sub, base | MsFlags::MS_RDONLY)?;
            }
        }
        // Co-mounted hierarchies ("cpu,cpuacct") get a link per controller.
        if name.contains(',') {
            for c in name.split(',') {
                let _ = symlink(name, dest.join(c));
            }
        }
    }
    if ro {
        mount(NONE, dest, NONE, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base, NONE).ctx(|| "remount cgroup tmpfs ro")?;
    }
    Ok(())
}

/// Host devices every container gets.
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn create_devices(rootfs: &Path, devices: &[LinuxDevice]) -> SysResult<()> {
    let dev = rootfs.join("dev");
    fs::create_dir_all(&dev).ctx(|| "mkdir /dev")?;
    for name in DEFAULT_DEVICES {
        let dest = dev.join(name);
        if devices.iter().any(|d| d.path() == &Path::new("/dev").join(name)) {
            continue;
        }
        bind_device(&Path::new("/dev").join(name), &dest)?;
    }
    for d in devices {
        let dest = secure_join(rootfs, d.path());
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
        let _ = fs::remove_file(&dest);
        match mknod(&dest, kind, mode, makedev(d.major() as u64, d.minor() as u64)) {
            Ok(()) => {
                nix::unistd::chown(&dest, d.uid().map(Into::into), d.gid().map(Into::into))
                    .ctx(|| format!("chown {}", dest.display()))?;
            }
            // Not allowed to create nodes (e.g. user namespace): bind the host's.
            Err(nix::errno::Errno::EPERM) => bind_device(d.path(), &dest)?,
            Err(e) => return Err(SysError::new(format!("mknod {}", d.path().display()), std::io::Error::from(e))),
        }
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        let path = dev.join(link);
        if link == "ptmx" {
            let _ = fs::remove_file(&path);
        }
        if fs::symlink_metadata(&path).is_err() {
            symlink(target, &path).ctx(|| format!("symlink /dev/{link}"))?;
        }
    }
    Ok(())
}

fn bind_device(host: &Path, dest: &Path) -> SysResult<()> {
    if fs::symlink_metadata(dest).is_err() {
        fs::File::create(dest).ctx(|| format!("create {}", dest.display()))?;
    }
    mount(Some(host), dest, NONE, MsFlags::MS_BIND, NONE).ctx(|| format!("bind device {}", host.display()))
}

/// Makes `rootfs` the root and detaches the old root.
pub fn pivot_root(rootfs: &Path) -> SysResult<()> {
    let old = fs::File::open("/").ctx(|| "open /")?;
    let new = fs::File::open(rootfs).ctx(|| format!("open {}", rootfs.display()))?;
    nix::unistd::fchdir(&new).ctx(|| "chdir to rootfs")?;
    // pivot_root(".", ".") stacks the old root on top of the new one; it is
    // then unmounted from under us (runc's trick, no put_old dir needed).
    nix::unistd::pivot_root(".", ".").ctx(|| format!("pivot_root {}", rootfs.display()))?;
    nix::unistd::fchdir(&old).ctx(|| "chdir to old root")?;
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE).ctx(|| "make old root rslave")?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmount old root")?;
    nix::unistd::chdir("/").ctx(|| "chdir /")
}

/// Hides `path`: /dev/null over files, an empty read-only tmpfs over dirs.
pub fn mask_path(path: &Path) -> SysResult<()> {
    let Ok(meta) = fs::metadata(path) else { return Ok(()) };
    let r = if meta.is_dir() {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE)
    } else {
        mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
    };
    r.ctx(|| format!("mask {}", path.display()))
}

/// Makes `path` read-only.
pub fn readonly_path(path: &Path) -> SysResult<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(Some(path), path, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
        .ctx(|| format!("bind {} read-only", path.display()))?;
    bind_remount(path, MsFlags::MS_RDONLY | MsFlags::MS_REC)
}

/// Remounts `/` read-only.
pub fn remount_root_readonly() -> SysResult<()> {
    bind_remount(Path::new("/"), MsFlags::MS_RDONLY)
}

/// Creates `dir` with `mode` if missing (state dirs).
pub fn ensure_dir(dir: &Path, mode: u32) -> SysResult<()> {
    fs::create_dir_all(dir).ctx(|| format!("mkdir {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&["nosuid".into(), "ro".into(), "rbind".into(), "rprivate".into(), "size=64k".into()]);
        assert!(o.bind);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, vec!["size=64k"]);
        assert_eq!(parse_options(&["ro".into(), "rw".into()]).flags, MsFlags::empty());
    }

    #[test]
    fn secure_join_stays_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../..", root.join("etc/up")).unwrap();
        assert_eq!(secure_join(root, Path::new("/abs/passwd")), root.join("etc/passwd"));
        assert_eq!(secure_join(root, Path::new("/etc/up/x")), root.join("x"));
        assert_eq!(secure_join(root, Path::new("../../x")), root.join("x"));
    }
}
