//! Process plumbing: spawning with extra fds, forking, prctl, pid liveness.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use nix::unistd::Pid;

use super::{Context, SysError, SysResult};

/// Spawns `cmd`, placing each `(src, dst)` fd at number `dst` in the child
/// (without close-on-exec). `dst` values must not collide with `src` values
/// of later pairs.
pub fn spawn_with_fds(cmd: &mut Command, fds: &[(RawFd, RawFd)]) -> std::io::Result<Child> {
    let fds = fds.to_vec();
    let mut tmp = vec![-1; fds.len()];
    // SAFETY: the closure only calls async-signal-safe fcntl/dup2 between
    // fork and exec and does not allocate (`tmp` is preallocated).
    unsafe {
        cmd.pre_exec(move || remap_fds(&fds, &mut tmp));
    }
    cmd.spawn()
}

/// Places each `(src, dst)` fd at number `dst` (without close-on-exec),
/// sources first moved out of the way (to close-on-exec copies in `tmp`,
/// one slot a pair) so targets cannot clobber later sources. Only
/// async-signal-safe calls, no allocation.
pub fn remap_fds(fds: &[(RawFd, RawFd)], tmp: &mut [RawFd]) -> std::io::Result<()> {
    // SAFETY: fcntl and dup2 on fds the caller owns.
    unsafe {
        for (i, &(src, _)) in fds.iter().enumerate() {
            tmp[i] = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100);
            if tmp[i] < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for (i, &(_, dst)) in fds.iter().enumerate() {
            if libc::dup2(tmp[i], dst) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Closes every fd from `from` up (close_range, or each fd listed in
/// /proc/self/fd on kernels before 5.9).
pub fn close_from(from: RawFd) {
    // SAFETY: close_range only closes fds; the caller owns all of them.
    if unsafe { libc::syscall(libc::SYS_close_range, from as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) } == 0 {
        return;
    }
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|&fd| fd >= from).collect())
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: closing fds this process owns (the dir iterator's is gone).
        unsafe { libc::close(fd) };
    }
}

/// Whether this process has a single thread (then it may fork and go on
/// running Rust code in the child).
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").map(|d| d.count() == 1).unwrap_or(false)
}

/// Takes ownership of inherited fd `fd`, if it is open.
pub fn take_inherited_fd(fd: RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only queries; if the fd is open it was passed to us
    // by our parent and nothing else in this process owns it.
    unsafe {
        if libc::fcntl(fd, libc::F_GETFD) < 0 {
            return None;
        }
        Some(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

/// Path of the hybrid-mode cgroup2 mount some v1 hosts have.
pub const HYBRID_CGROUP2: &str = "/sys/fs/cgroup/unified";

/// True when the host mixes cgroup v1 hierarchies with a cgroup2 mount at
/// [`HYBRID_CGROUP2`] ("hybrid" mode).
pub fn hybrid_cgroup2_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4 && f[4] == HYBRID_CGROUP2 && l.contains(" - cgroup2 ")
            })
        })
        .unwrap_or(false)
}

/// Makes `cmd` run in a private mount namespace without the hybrid cgroup2
/// mount, so runtimes that refuse hybrid layouts (crun 1.8: "cgroups in hybrid
/// mode not supported") see a pure v1 host. Only the child's namespace changes.
pub fn hide_hybrid_cgroup2(cmd: &mut Command) {
    // SAFETY: unshare/mount/umount2 are plain syscalls, async-signal-safe; the
    // C strings are static.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Keep receiving host mounts but stop ours from propagating back.
            let flags = libc::MS_REC | libc::MS_SLAVE;
            if libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), flags, std::ptr::null()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Forks; the child runs `f` and exits with its return value. Only call
/// from a single-threaded process (the init re-exec).
pub fn fork_child<F: FnOnce() -> i32>(f: F) -> SysResult<Pid> {
    // SAFETY: callers are single-threaded (the freshly exec'd init), so the
    // child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.ctx(|| "fork")? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            let code = f();
            exit_now(code)
        }
    }
}

/// Exits immediately without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Makes `fd` (a terminal) the controlling terminal of this session.
pub fn set_controlling_tty(fd: RawFd) -> SysResult<()> {
    // SAFETY: TIOCSCTTY takes an int argument; fd is owned by the caller.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if r < 0 {
        return Err(SysError::new("ioctl TIOCSCTTY", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets close-on-exec on every fd >= `from`, so nothing leaks into the container.
pub fn cloexec_from(from: RawFd) -> SysResult<()> {
    let dir = std::fs::read_dir("/proc/self/fd").ctx(|| "read /proc/self/fd")?;
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= from)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change fd flags; a stale fd (the dir
        // iterator's) just fails with EBADF, which is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Closes inherited fd `fd` whose owner lives on in a forked copy of our
/// parent's memory (the init channel after a fork).
pub fn close_inherited_fd(fd: RawFd) {
    // SAFETY: the only owner of `fd` is a value in a stack frame that this
    // process never returns to (it execs or _exits), so nothing uses or
    // closes it afterwards.
    unsafe {
        libc::close(fd);
    }
}

/// Duplicates `src` onto `dst` (used for stdio).
pub fn dup_onto(src: &impl AsRawFd, dst: RawFd) -> SysResult<()> {
    // SAFETY: dup2 on fds; dst is a standard stream number owned by us.
    if unsafe { libc::dup2(src.as_raw_fd(), dst) } < 0 {
        return Err(SysError::new(format!("dup2 {dst}"), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Process start time (clock ticks since boot, field 22 of /proc/PID/stat)
/// and state letter; `None` if the process does not exist.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    proc_stat_in(Path::new("/proc"), pid)
}

fn proc_stat_in(proc: &Path, pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    // The command name may contain spaces and parens: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// True if `pid` is alive (not a zombie) and, when given, started at `start`.
pub fn pid_alive(pid: i32, start: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some((s, state)) => state != 'Z' && state != 'X' && start.is_none_or(|st| st == s),
        None => false,
    }
}

/// A pidfd for `pid` (Linux 5.3+), `None` if the process is gone or the
/// kernel has no pidfd_open. It becomes readable once the process has
/// exited (zombie or reaped), whoever its parent is.
pub fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (or -1).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Polls `fds` for their events for up to `timeout` (None: forever),
/// retrying on EINTR with the remaining time. Returns each fd's revents
/// (all zero on timeout).
pub fn poll_fds(fds: &[(RawFd, i16)], timeout: Option<std::time::Duration>) -> std::io::Result<Vec<i16>> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&(fd, events)| libc::pollfd { fd, events, revents: 0 }).collect();
    loop {
        let ms = match deadline {
            None => -1,
            // Rounded up so a sub-millisecond remainder does not spin.
            Some(d) => d.saturating_duration_since(std::time::Instant::now()).as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        // SAFETY: pfds is a valid array of pfds.len() pollfd structs.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(pfds.iter().map(|p| p.revents).collect());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits up to `timeout` for every process behind `pidfds` to exit.
/// Returns false on timeout.
pub fn wait_pidfds_exit(pidfds: &[std::os::fd::OwnedFd], timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let mut left: Vec<RawFd> = pidfds.iter().map(|f| f.as_raw_fd()).collect();
    while !left.is_empty() {
        let fds: Vec<(RawFd, i16)> = left.iter().map(|&fd| (fd, libc::POLLIN)).collect();
        match poll_fds(&fds, Some(deadline.saturating_duration_since(std::time::Instant::now()))) {
            Ok(revents) if revents.iter().any(|r| *r != 0) => {
                left = left.into_iter().zip(revents).filter(|(_, r)| *r == 0).map(|(fd, _)| fd).collect();
            }
            _ => return false,
        }
    }
    true
}

/// Sets this process as a child subreaper, so orphaned descendants (the
/// container init after the intermediate process exits) are reparented here.
pub fn set_child_subreaper() -> SysResult<()> {
    nix::sys::prctl::set_child_subreaper(true).ctx(|| "prctl PR_SET_CHILD_SUBREAPER")
}

/// Sets the no_new_privs bit.
pub fn set_no_new_privs() -> SysResult<()> {
    nix::sys::prctl::set_no_new_privs().ctx(|| "prctl PR_SET_NO_NEW_PRIVS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_own_stat() {
        let (start, state) = proc_stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(state == 'R' || state == 'S');
        assert!(pid_alive(std::process::id() as i32, Some(start)));
        assert!(!pid_alive(std::process::id() as i32, Some(start + 1)));
    }
}
