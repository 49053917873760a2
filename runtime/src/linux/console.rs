//! Container terminals: allocate a pty inside the container and hand the
//! master to the caller over a unix socket (SCM_RIGHTS), as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::{process, Context, SysResult};

/// Opens a pty from the current /dev/ptmx, sends the master over `socket`
/// and makes the slave this process's stdio and controlling terminal.
/// Call after `setsid`.
pub fn setup_console(socket: &OwnedFd) -> SysResult<()> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).ctx(|| "open /dev/ptmx")?;
    nix::pty::grantpt(&master).ctx(|| "grantpt")?;
    nix::pty::unlockpt(&master).ctx(|| "unlockpt")?;
    let name = nix::pty::ptsname_r(&master).ctx(|| "ptsname")?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .ctx(|| format!("open {name}"))?
        .into();
    let fds = [master.as_raw_fd()];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .ctx(|| "send console master fd")?;
    drop(master);
    for n in 0..3 {
        process::dup_onto(&slave, n)?;
    }
    process::set_controlling_tty(0)?;
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

/// Receives a pty master fd sent by [`setup_console`] (for callers of
/// `create --console-socket`).
pub fn recv_console(socket: &impl AsRawFd) -> SysResult<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .ctx(|| "receive console fd")?;
    for c in msg.cmsgs().ctx(|| "read control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(super::SysError::msg("no fd received on console socket"))
}

/// Sets a terminal's size (TIOCSWINSZ); the foreground process group gets SIGWINCH.
pub fn set_winsize(fd: &impl AsRawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
