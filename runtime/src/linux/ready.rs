//! Readiness pipes for detached helper processes (the shim, the pause
//! process): the child finds the pipe's write end on fd 3 and reports
//! `ok <pid>` or `err <message>`; the parent reads until EOF, with a timeout
//! so a stuck child cannot hang the daemon.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fd on which a child finds its readiness pipe.
pub const READY_FD: i32 = 3;

/// What a child reported.
#[derive(Debug, PartialEq)]
pub enum Report {
    /// `ok <pid>`
    Ready(i32),
    /// `err <message>`, or the child ended without a report.
    Failed(String),
    /// No report within the timeout; what arrived so far.
    TimedOut(String),
}

/// Spawns `cmd` (stdio to /dev/null, its own session when `new_session`)
/// with the pipe on fd 3, reads its report, and reaps the spawned process.
pub fn spawn(mut cmd: Command, new_session: bool, timeout: Duration) -> io::Result<Report> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let w_raw = w.as_raw_fd();
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if w_raw == READY_FD {
                // dup2 onto itself keeps close-on-exec: clear it by hand.
                if libc::fcntl(READY_FD, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(w_raw, READY_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            if new_session {
                libc::setsid();
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(w);
    let mut r = fs::File::from(r);
    let mut msg = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX)) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let mut chunk = [0u8; 4096];
        match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => msg.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    let _ = child.wait();
    let msg = String::from_utf8_lossy(&msg).trim().to_string();
    if timed_out {
        return Ok(Report::TimedOut(msg));
    }
    Ok(parse(&msg))
}

fn parse(msg: &str) -> Report {
    match (msg.strip_prefix("ok "), msg.strip_prefix("err ")) {
        (Some(pid), _) => pid.parse::<i32>().map(Report::Ready).unwrap_or_else(|_| Report::Failed(format!("bad pid {pid:?} in the report"))),
        (_, Some(e)) => Report::Failed(e.to_string()),
        _ if msg.is_empty() => Report::Failed("exited without a report".into()),
        _ => Report::Failed(format!("exited without a report: {msg}")),
    }
}

/// In the child: takes the readiness pipe from fd 3 and keeps it out of
/// whatever the child executes later. `None` when fd 3 is not open.
pub fn take() -> Option<fs::File> {
    // SAFETY: fcntl on a plain fd number; from_raw_fd only when it is open.
    (unsafe { libc::fcntl(READY_FD, libc::F_SETFD, libc::FD_CLOEXEC) } == 0).then(|| unsafe { fs::File::from_raw_fd(READY_FD) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports() {
        let mut ok = Command::new("/bin/sh");
        ok.args(["-c", "echo ok 42 >&3"]);
        assert_eq!(spawn(ok, false, Duration::from_secs(10)).unwrap(), Report::Ready(42));
        let mut err = Command::new("/bin/sh");
        err.args(["-c", "echo err no such thing >&3"]);
        assert_eq!(spawn(err, true, Duration::from_secs(10)).unwrap(), Report::Failed("no such thing".into()));
        let silent = Command::new("/bin/true");
        assert!(matches!(spawn(silent, false, Duration::from_secs(10)).unwrap(), Report::Failed(_)));
        let mut slow = Command::new("/bin/sleep");
        slow.arg("5");
        assert!(matches!(spawn(slow, false, Duration::from_millis(200)).unwrap(), Report::TimedOut(_)));
    }
}
