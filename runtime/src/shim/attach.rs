//! The shim's attach socket (`<state dir>/attach`, like conmon's): a unix
//! stream socket through which the daemon relays CRI `Attach` sessions.
//!
//! Both directions carry frames `[kind u8][length u32 BE][payload]`.
//! Client → shim: [`STDIN`] data, [`STDIN_CLOSE`] (the session's stdin
//! ended: closes the container's stdin when its config has `stdin_once`),
//! [`RESIZE`] (width and height, u16 BE each; applied to the container's
//! terminal). Shim → client: [`STDOUT`] and [`STDERR`] output from the
//! moment the client connected; the socket closes once the container has
//! exited and its output is drained.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

pub const STDIN: u8 = 0;
pub const STDIN_CLOSE: u8 = 1;
pub const RESIZE: u8 = 2;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// Largest frame payload accepted.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Output queued for a client that does not read is dropped past this, with
/// the client.
const MAX_QUEUED: usize = 8 << 20;

/// Encodes one frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Takes one complete frame off the front of `buf`; an error for a frame
/// that is too large.
pub fn parse(buf: &mut Vec<u8>) -> io::Result<Option<(u8, Vec<u8>)>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("attach frame of {len} bytes")));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some((kind, payload)))
}

/// A path for `bind`/`connect`: unix socket paths are limited to 108
/// bytes, so a long one goes through `/proc/self/fd/N` of its directory,
/// opened as `dir` (keep it until the call returns).
fn short_path(path: &Path) -> io::Result<(PathBuf, Option<std::fs::File>)> {
    if path.as_os_str().len() < 100 {
        return Ok((path.to_path_buf(), None));
    }
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n),
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad socket path {}", path.display()))),
    };
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir)?;
    Ok((Path::new(&format!("/proc/self/fd/{}", f.as_raw_fd())).join(name), Some(f)))
}

/// Binds a unix stream socket at `path` (of any length), mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let (p, _dir) = short_path(path)?;
    let l = UnixListener::bind(&p)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Connects to the unix stream socket at `path` (of any length).
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let (p, _dir) = short_path(path)?;
    UnixStream::connect(p)
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

/// What the attached clients asked of the container.
pub enum Request {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize { width: u16, height: u16 },
}

/// The shim's side: the listener and the attached clients, all
/// non-blocking, driven by the shim's poll loop.
pub struct Clients {
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    /// Whether the last [`Clients::poll_fds`] listed the listener.
    polled_listener: std::cell::Cell<bool>,
}

impl Clients {
    pub fn new(listener: UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self { listener: Some(listener), clients: Vec::new(), polled_listener: std::cell::Cell::new(false) })
    }

    /// Stops accepting (the container has exited).
    pub fn stop_listening(&mut self) {
        self.listener = None;
    }

    /// Fds to poll with their events, in the order [`Clients::handle`] expects:
    /// the listener, then each client. `read` is false while stdin is backed up.
    pub fn poll_fds(&self, read: bool) -> Vec<(std::os::fd::BorrowedFd<'_>, nix::poll::PollFlags)> {
        use nix::poll::PollFlags;
        let mut v = Vec::new();
        self.polled_listener.set(self.listener.is_some());
        if let Some(l) = &self.listener {
            v.push((l.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.clients {
            let mut ev = PollFlags::empty();
            if read {
                ev |= PollFlags::POLLIN;
            }
            if !c.outbuf.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            v.push((c.sock.as_fd(), ev));
        }
        v
    }

    /// Acts on poll results (`ready[i]` for the i-th fd of [`Clients::poll_fds`]);
    /// returns the clients' requests in arrival order.
    pub fn handle(&mut self, ready: &[bool]) -> Vec<Request> {
        let mut out = Vec::new();
        let mut i = 0;
        if self.polled_listener.get() {
            if ready.first().copied().unwrap_or(false) {
                self.accept();
            }
            i = 1;
        }
        let n = ready.len().saturating_sub(i).min(self.clients.len());
        let mut dead = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        for k in 0..n {
            if !ready[i + k] {
                continue;
            }
            let c = &mut self.clients[k];
            if !flush(c) {
                dead.push(k);
                continue;
            }
            loop {
                match c.sock.read(&mut buf) {
                    Ok(0) => {
                        dead.push(k);
                        break;
                    }
                    Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        dead.push(k);
                        break;
                    }
                }
            }
            loop {
                match parse(&mut c.inbuf) {
                    Ok(Some((STDIN, p))) => out.push(Request::Stdin(p)),
                    Ok(Some((STDIN_CLOSE, _))) => out.push(Request::CloseStdin),
                    Ok(Some((RESIZE, p))) if p.len() == 4 => {
                        out.push(Request::Resize { width: u16::from_be_bytes([p[0], p[1]]), height: u16::from_be_bytes([p[2], p[3]]) })
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        dead.push(k);
                        break;
                    }
                }
            }
        }
        dead.sort_unstable();
        dead.dedup();
        for k in dead.into_iter().rev() {
            self.clients.remove(k);
        }
        out
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            match l.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_ok() {
                        self.clients.push(Client { sock, inbuf: Vec::new(), outbuf: Vec::new() });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Queues container output for every client and sends what it can.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let f = frame(kind, data);
        self.clients.retain_mut(|c| {
            if c.outbuf.len() + f.len() > MAX_QUEUED {
                return false;
            }
            c.outbuf.extend_from_slice(&f);
            flush(c)
        });
    }

    /// Sends what is queued, waiting at most a second per client, and hangs up.
    pub fn close(&mut self) {
        for mut c in self.clients.drain(..) {
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = c.sock.write_all(&c.outbuf);
        }
        self.listener = None;
    }
}

/// Writes what it can of a client's queue; false once the client is gone.
fn flush(c: &mut Client) -> bool {
    while !c.outbuf.is_empty() {
        match c.sock.write(&c.outbuf) {
            Ok(n) => {
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// The container's stdin as the shim holds it: a pipe's write end, or the
/// terminal master; input is queued and written when the fd takes it.
pub struct StdinSink {
    fd: Option<OwnedFd>,
    pending: Vec<u8>,
    close_when_flushed: bool,
    /// A terminal master is also the output: never closed here.
    terminal: bool,
}

impl StdinSink {
    pub fn new(fd: Option<OwnedFd>, terminal: bool) -> io::Result<Self> {
        if let Some(f) = &fd {
            set_nonblocking(f)?;
        }
        Ok(Self { fd, pending: Vec::new(), close_when_flushed: false, terminal })
    }

    /// Input beyond this much is not read from clients until it drains.
    pub fn backed_up(&self) -> bool {
        self.pending.len() >= MAX_PAYLOAD
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.fd.is_some() && !self.close_when_flushed {
            self.pending.extend_from_slice(data);
            self.flush();
        }
    }

    /// Closes the container's stdin once queued input is written (EOF for
    /// the container). A terminal stays open.
    pub fn close(&mut self) {
        if !self.terminal {
            self.close_when_flushed = true;
            self.flush();
        }
    }

    pub fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().filter(|_| !self.pending.is_empty()).map(|f| f.as_fd())
    }

    pub fn flush(&mut self) {
        let Some(fd) = &self.fd else { return };
        while !self.pending.is_empty() {
            match nix::unistd::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    // The container closed its stdin.
                    self.pending.clear();
                    if !self.terminal {
                        self.fd = None;
                    }
                    return;
                }
            }
        }
        if self.close_when_flushed {
            self.fd = None;
        }
    }
}

pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let mut b = frame(STDIN, b"hi");
        b.extend(frame(RESIZE, &[0, 80, 0, 24]));
        b.push(STDIN);
        assert_eq!(parse(&mut b).unwrap(), Some((STDIN, b"hi".to_vec())));
        assert_eq!(parse(&mut b).unwrap(), Some((RESIZE, vec![0, 80, 0, 24])));
        assert_eq!(parse(&mut b).unwrap(), None);
        let mut big = vec![STDIN, 0xff, 0, 0, 0];
        assert!(parse(&mut big).is_err());
    }

    #[test]
    fn long_socket_paths() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let p = deep.join("attach");
        let l = bind(&p).unwrap();
        let mut c = connect(&p).unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
