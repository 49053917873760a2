//! What a remotecommand session does, whatever carries it: `Exec` runs a
//! command in the container (pipes, or a terminal), `Attach` relays the
//! container's stdio through its shim's attach socket. The transports
//! (WebSocket, SPDY) turn client messages into [`In`] and [`Out`] into
//! messages, in order.

use crate::container::Manager as Containers;
use crate::shim::attach as shim_attach;
use hyper::body::Bytes;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Which streams a session has, as the CRI request asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// From the client, in the order it sent them.
#[derive(Debug)]
pub enum In {
    Stdin(Bytes),
    /// The client's stdin ended.
    StdinEof,
    Resize { width: u16, height: u16 },
}

/// To the client.
#[derive(Debug)]
pub enum Out {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A session's ends: `input` closes when the client goes away.
pub struct Io {
    pub input: mpsc::Receiver<In>,
    pub output: mpsc::Sender<Out>,
}

/// A remotecommand request waiting for its client.
#[derive(Debug, Clone)]
pub enum Job {
    Exec { id: String, cmd: Vec<String>, stdio: Stdio },
    Attach { id: String, stdio: Stdio },
}

impl Job {
    pub fn stdio(&self) -> Stdio {
        match self {
            Job::Exec { stdio, .. } | Job::Attach { stdio, .. } => *stdio,
        }
    }
}

/// A terminal size message (`{"Width":80,"Height":24}`).
#[derive(Debug, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Runs the session to its end: the command's exit code (attach: 0), or
/// an error for the client's error stream.
pub async fn run(containers: Arc<Containers>, cancel: CancellationToken, job: Job, io: Io) -> Result<i32, String> {
    match job {
        Job::Exec { id, cmd, stdio } if stdio.tty => exec_tty(&containers, &cancel, &id, &cmd, io).await,
        Job::Exec { id, cmd, stdio } => exec_pipes(&containers, &cancel, &id, &cmd, stdio, io).await,
        Job::Attach { id, stdio } => attach(&containers, &cancel, &id, stdio, io).await,
    }
}

/// The error-stream message for how a session ended: a `metav1.Status`
/// as JSON (v4 and later), or plain text on failure only (older protocols).
pub fn status(json: bool, cmd: Option<&[String]>, r: &Result<i32, String>) -> Option<Vec<u8>> {
    let failed = |n: i32| {
        let cmd = cmd.map(|c| c.join(" ")).unwrap_or_default();
        format!("command terminated with non-zero exit code: error executing command [{cmd}], exit code {n}")
    };
    let v = match (r, json) {
        (Ok(0), true) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (Ok(0), false) => return None,
        (Ok(n), true) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": failed(*n),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": n.to_string()}]},
        }),
        (Ok(n), false) => return Some(failed(*n).into_bytes()),
        (Err(e), true) => serde_json::json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError"}),
        (Err(e), false) => return Some(e.clone().into_bytes()),
    };
    Some(v.to_string().into_bytes())
}

/// Asks `berth exec-sync` to kill the exec'd process (and so to exit);
/// SIGKILL would leave the process running in the container.
fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
}

fn exit_code(s: std::io::Result<std::process::ExitStatus>) -> Result<i32, String> {
    match s {
        Ok(s) => Ok(s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0))),
        Err(e) => Err(format!("waiting for exec: {e}")),
    }
}

/// Copies `r` to the client as `Out::Stdout` (or `Stderr`) until EOF.
async fn pump(mut r: impl AsyncRead + Unpin, stderr: bool, tx: mpsc::Sender<Out>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let b = Bytes::copy_from_slice(&buf[..n]);
                if tx.send(if stderr { Out::Stderr(b) } else { Out::Stdout(b) }).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Where a session's input goes.
enum Sink {
    Pipe(Option<tokio::process::ChildStdin>),
    Pty(Arc<Pty>),
}

/// Feeds the client's input to `sink` in order; says `gone` when the
/// client has gone away.
async fn feed(mut input: mpsc::Receiver<In>, mut sink: Sink, gone: oneshot::Sender<()>) {
    while let Some(m) = input.recv().await {
        match (m, &mut sink) {
            (In::Stdin(b), Sink::Pipe(p)) => {
                if let Some(w) = p.as_mut() {
                    if w.write_all(&b).await.is_err() {
                        *p = None;
                    }
                }
            }
            (In::Stdin(b), Sink::Pty(t)) => {
                let _ = t.write_all(&b).await;
            }
            (In::StdinEof, Sink::Pipe(p)) => *p = None,
            // A terminal has no EOF of its own; its process decides.
            (In::StdinEof, Sink::Pty(_)) => {}
            (In::Resize { width, height }, Sink::Pty(t)) => {
                let _ = crate::linux::console::set_winsize(t.fd.get_ref(), height, width);
            }
            (In::Resize { .. }, Sink::Pipe(_)) => {}
        }
    }
    let _ = gone.send(());
}

async fn exec_pipes(containers: &Containers, cancel: &CancellationToken, id: &str, cmd: &[String], stdio: Stdio, io: Io) -> Result<i32, String> {
    let mut c = containers.exec_command(id, cmd, None).map_err(|e| e.to_string())?;
    let pipe = |on: bool| if on { std::process::Stdio::piped() } else { std::process::Stdio::null() };
    c.stdin(pipe(stdio.stdin)).stdout(pipe(stdio.stdout)).stderr(pipe(stdio.stderr));
    let mut child = c.spawn().map_err(|e| format!("starting exec: {e}"))?;
    let mut pumps = Vec::new();
    if let Some(r) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(r, false, io.output.clone())));
    }
    if let Some(r) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(r, true, io.output.clone())));
    }
    drop(io.output);
    let (gone_tx, mut gone) = oneshot::channel();
    let feeder = tokio::spawn(feed(io.input, Sink::Pipe(child.stdin.take()), gone_tx));
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            Ok(()) = &mut gone => terminate(&child),
            _ = cancel.cancelled() => {
                terminate(&child);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                feeder.abort();
                return Err("the streaming server is shutting down".into());
            }
        }
    };
    feeder.abort();
    for p in pumps {
        tokio::select! {
            _ = p => {}
            _ = cancel.cancelled() => return Err("the streaming server is shutting down".into()),
        }
    }
    exit_code(status)
}

/// A terminal master, non-blocking, for async reads and writes.
struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        shim_attach::set_nonblocking(&fd)?;
        // SAFETY: the AsyncFd owns the only copy of this fd.
        Ok(Self { fd: unsafe { AsyncFd::register(fd)? } })
    }

    /// Reads some output; 0 at EOF (EIO once the last slave fd closed).
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut g = self.fd.readable().await?;
            match g.try_io(|f| nix::unistd::read(f.get_ref(), buf).map_err(std::io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut b: &[u8]) -> std::io::Result<()> {
        while !b.is_empty() {
            let mut g = self.fd.writable().await?;
            match g.try_io(|f| nix::unistd::write(f.get_ref(), b).map_err(std::io::Error::from)) {
                Ok(Ok(n)) => b = &b[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

async fn exec_tty(containers: &Containers, cancel: &CancellationToken, id: &str, cmd: &[String], io: Io) -> Result<i32, String> {
    // The runtime sends the terminal's master to this socket.
    let dir = tempfile::Builder::new().prefix("berth-pty-").tempdir().map_err(|e| format!("console socket dir: {e}"))?;
    let path = dir.path().join("console.sock");
    let listener = tokio::net::UnixListener::bind(&path).map_err(|e| format!("console socket {}: {e}", path.display()))?;
    let mut c = containers.exec_command(id, cmd, Some(&path)).map_err(|e| e.to_string())?;
    c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("starting exec: {e}"))?;
    let mut errout = child.stderr.take().expect("piped stderr");
    let errors = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = (&mut errout).take(64 * 1024).read_to_end(&mut s).await;
        String::from_utf8_lossy(&s).trim().to_string()
    });
    let conn = tokio::select! {
        a = listener.accept() => a.map_err(|e| format!("console socket: {e}"))?.0,
        st = child.wait() => {
            let msg = errors.await.unwrap_or_default();
            return Err(if msg.is_empty() { format!("exec ended before it had a terminal ({})", exit_code(st).unwrap_or(-1)) } else { msg });
        }
        _ = cancel.cancelled() => {
            terminate(&child);
            return Err("the streaming server is shutting down".into());
        }
    };
    let conn = conn.into_std().map_err(|e| e.to_string())?;
    let master = tokio::task::spawn_blocking(move || -> Result<OwnedFd, String> {
        conn.set_nonblocking(false).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        crate::linux::console::recv_console(&conn).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?;
    let master = match master {
        Ok(m) => m,
        Err(e) => {
            terminate(&child);
            return Err(format!("receiving the exec's terminal: {e}"));
        }
    };
    drop(listener);
    drop(dir);
    let pty = Arc::new(Pty::new(master).map_err(|e| e.to_string())?);
    let out = io.output;
    let reader = {
        let pty = pty.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = pty.read(&mut buf).await {
                if n == 0 || out.send(Out::Stdout(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    break;
                }
            }
        })
    };
    let (gone_tx, mut gone) = oneshot::channel();
    let feeder = tokio::spawn(feed(io.input, Sink::Pty(pty.clone()), gone_tx));
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            Ok(()) = &mut gone => terminate(&child),
            _ = cancel.cancelled() => {
                terminate(&child);
                feeder.abort();
                reader.abort();
                return Err("the streaming server is shutting down".into());
            }
        }
    };
    feeder.abort();
    // The output ends when the last holder of the terminal closes it; a
    // process left in the background may keep it open, so not for long.
    let abort = reader.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), reader).await.is_err() {
        abort.abort();
    }
    let _ = errors.await;
    exit_code(status)
}

async fn attach(containers: &Containers, cancel: &CancellationToken, id: &str, stdio: Stdio, io: Io) -> Result<i32, String> {
    let (path, _tty) = containers.attach_socket(id).map_err(|e| e.to_string())?;
    let sock = tokio::task::spawn_blocking(move || -> std::io::Result<tokio::net::UnixStream> {
        let s = shim_attach::connect(&path)?;
        s.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(s)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("attaching to container {id}: {e}"))?;
    let (mut r, mut w) = sock.into_split();
    let out = io.output;
    let mut reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            loop {
                match shim_attach::parse(&mut buf) {
                    Ok(Some((kind, data))) => {
                        let m = match kind {
                            shim_attach::STDOUT if stdio.stdout => Out::Stdout(data.into()),
                            shim_attach::STDERR if stdio.stderr => Out::Stderr(data.into()),
                            // Without a stderr stream (a terminal), stderr goes to stdout.
                            shim_attach::STDERR if stdio.stdout && stdio.tty => Out::Stdout(data.into()),
                            _ => continue,
                        };
                        if out.send(m).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let mut input = io.input;
    let mut client_open = true;
    loop {
        tokio::select! {
            // The container exited and its output is drained.
            _ = &mut reader => break,
            _ = cancel.cancelled() => {
                reader.abort();
                return Err("the streaming server is shutting down".into());
            }
            m = input.recv(), if client_open => {
                let f = match m {
                    Some(In::Stdin(b)) if stdio.stdin => shim_attach::frame(shim_attach::STDIN, &b),
                    Some(In::Stdin(_)) => continue,
                    Some(In::StdinEof) if stdio.stdin => shim_attach::frame(shim_attach::STDIN_CLOSE, &[]),
                    Some(In::StdinEof) => continue,
                    Some(In::Resize { width, height }) => shim_attach::frame(shim_attach::RESIZE, &[width.to_be_bytes(), height.to_be_bytes()].concat()),
                    // The client detached: that ends its stdin too.
                    None => {
                        if stdio.stdin {
                            let _ = w.write_all(&shim_attach::frame(shim_attach::STDIN_CLOSE, &[])).await;
                        }
                        reader.abort();
                        break;
                    }
                };
                if w.write_all(&f).await.is_err() {
                    // The shim is gone; the reader sees EOF.
                    client_open = false;
                }
            }
        }
    }
    Ok(0)
}

/// Connects to 127.0.0.1:`port` in the network namespace `netns` (the
/// daemon's own for none) from a throwaway thread, so no daemon thread
/// changes namespace.
pub async fn connect_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| -> std::io::Result<std::net::TcpStream> {
            if let Some(ns) = &netns {
                let f = std::fs::File::open(ns)?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            }
            let s = std::net::TcpStream::connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })();
        let _ = tx.send(r);
    });
    let s = rx.await.map_err(|_| std::io::Error::other("the connecting thread died"))??;
    tokio::net::TcpStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status(false, None, &Ok(0)), None);
        let s: serde_json::Value = serde_json::from_slice(&status(true, Some(&["false".into()]), &Ok(1)).unwrap()).unwrap();
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "1");
        assert_eq!(String::from_utf8(status(false, Some(&["x".into()]), &Ok(2)).unwrap()).unwrap(), "command terminated with non-zero exit code: error executing command [x], exit code 2");
        let s: serde_json::Value = serde_json::from_slice(&status(true, None, &Err("boom".into())).unwrap()).unwrap();
        assert_eq!(s["message"], "boom");
    }
}
