//! The builder's only window on the host: files, path existence and device
//! nodes. [`HostFs`] is the real implementation; tests use a fake.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxDeviceType;

/// A device node on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// `C` (char) or `B` (block).
    pub kind: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (`st_mode & 0o7777`).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// How a mount passes mount events on, from its mountinfo optional fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// `shared:N`: a peer group; events flow both ways.
    Shared,
    /// `master:N` only: events flow in from the master.
    Slave,
    Private,
}

/// The mount holding a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    pub mount_point: PathBuf,
    pub propagation: Propagation,
}

/// Reads what the builder needs from the host.
pub trait HostReader {
    /// Whole contents of a file (`<rootfs>/etc/passwd`, seccomp profiles).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Whether a host path exists (mount sources).
    fn exists(&self, path: &Path) -> bool;
    /// The device node at `path` (following symlinks).
    fn device(&self, path: &Path) -> io::Result<DeviceNode>;
    /// Every device node under the host's `/dev`, for privileged containers.
    fn host_devices(&self) -> io::Result<Vec<DeviceNode>>;
    /// The mount holding `path` (symlinks followed), for mount propagation.
    fn mount_of(&self, path: &Path) -> io::Result<HostMount>;
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount of mountinfo text that holds the absolute path `path`: the
/// longest mount point containing it, the later one when stacked.
pub fn mount_in(mountinfo: &str, path: &Path) -> Option<HostMount> {
    let mut best: Option<HostMount> = None;
    for line in mountinfo.lines() {
        let Some((pre, _)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = pre.split(' ').collect();
        let Some(mp) = fields.get(4).map(|m| PathBuf::from(unescape_mountinfo(m))) else { continue };
        if !path.starts_with(&mp) || best.as_ref().is_some_and(|b| b.mount_point.as_os_str().len() > mp.as_os_str().len()) {
            continue;
        }
        let optional = fields.get(6..).unwrap_or_default();
        let propagation = if optional.iter().any(|f| f.starts_with("shared:")) {
            Propagation::Shared
        } else if optional.iter().any(|f| f.starts_with("master:")) {
            Propagation::Slave
        } else {
            Propagation::Private
        };
        best = Some(HostMount { mount_point: mp, propagation });
    }
    best
}

/// [`HostReader`] backed by the real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFs;

/// Linux `dev_t` split, as glibc's `gnu_dev_major`/`gnu_dev_minor` do.
fn major_minor(dev: u64) -> (i64, i64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as i64, minor as i64)
}

fn node_from_metadata(path: &Path, md: &std::fs::Metadata) -> Option<DeviceNode> {
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let (major, minor) = major_minor(md.rdev());
    Some(DeviceNode {
        path: path.to_path_buf(),
        kind,
        major,
        minor,
        file_mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// Directories and files under `/dev` that privileged containers do not get
/// from the host (runc skips the same ones).
const SKIP_DEV: &[&str] = &[
    "pts",
    "shm",
    "fd",
    "mqueue",
    "console",
    "ptmx",
    ".lxc",
    ".lxd-mounts",
    ".udev",
];

fn walk_dev(dir: &Path, out: &mut Vec<DeviceNode>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if SKIP_DEV.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            // Devices come and go; a vanished entry is not an error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if md.is_dir() {
            walk_dev(&path, out)?;
        } else if let Some(node) = node_from_metadata(&path, &md) {
            out.push(node);
        }
    }
    Ok(())
}

impl HostReader for HostFs {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn device(&self, path: &Path) -> io::Result<DeviceNode> {
        let md = std::fs::metadata(path)?;
        node_from_metadata(path, &md)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a device node"))
    }

    fn host_devices(&self) -> io::Result<Vec<DeviceNode>> {
        let mut out = Vec::new();
        walk_dev(Path::new("/dev"), &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn mount_of(&self, path: &Path) -> io::Result<HostMount> {
        let path = std::fs::canonicalize(path)?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        mount_in(&mountinfo, &path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no mount holds {}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_dev_t() {
        // /dev/null is 1:3; a large minor uses the high bits.
        assert_eq!(major_minor(0x103), (1, 3));
        assert_eq!(major_minor((259 << 8) | 5), (259, 5));
        // Minor 0x12345: low byte in bits 0-7, the rest from bit 20 up.
        let dev = 0x45 | (0x123 << 20) | (8 << 8);
        assert_eq!(major_minor(dev), (8, 0x12345));
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c\134d"), "/a b/c\\d");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn finds_the_mount_of_a_path() {
        let mi = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                  30 27 0:40 / /mnt/a\\040b rw shared:5 - tmpfs tmpfs rw\n\
                  31 30 0:41 / /mnt/a\\040b/in rw master:5 - tmpfs tmpfs rw\n\
                  32 30 0:42 / /mnt/a\\040b/in rw shared:7 master:5 - tmpfs tmpfs rw\n";
        let m = |p: &str| mount_in(mi, Path::new(p)).unwrap();
        assert_eq!(m("/etc/x"), HostMount { mount_point: "/".into(), propagation: Propagation::Private });
        assert_eq!(m("/mnt/a b/x"), HostMount { mount_point: "/mnt/a b".into(), propagation: Propagation::Shared });
        // Stacked mounts: the later one counts.
        assert_eq!(m("/mnt/a b/in/x"), HostMount { mount_point: "/mnt/a b/in".into(), propagation: Propagation::Shared });
        assert_eq!(m("/mnt/a bc").mount_point, PathBuf::from("/"), "a component prefix, not a string prefix");
    }
}
