//! The Kubernetes stream protocols over SPDY/3.1 (what kubelet's
//! apimachinery `httpstream/spdy` serves, and crictl and kubectl use by
//! default). After the `Upgrade: SPDY/3.1` handshake with a negotiated
//! `X-Stream-Protocol-Version`, the client opens one stream per channel,
//! named by its `streamType` header:
//!
//! - remotecommand (`v4.channel.k8s.io` down to `channel.k8s.io`): `error`,
//!   `stdin`, `stdout`, `stderr` and, with a terminal (v3 and later),
//!   `resize` (a sequence of `{"Width":..,"Height":..}`). The error stream
//!   carries the final status (JSON `metav1.Status` in v4, text before).
//! - port-forward (`portforward.k8s.io`): per connection a pair of streams,
//!   `error` and `data`, with the same `port` and `requestID` headers.
//!
//! Every stream is accepted with an empty SYN_REPLY; flow control is not
//! used (nor by `spdystream`); client PINGs are echoed.

use super::session::{self, In, Io, Job, Out, TermSize};
use super::{plain, Body, Pending, Streaming};
use crate::server::spdy::{Decoder, Encoder, Frame, Headers, FLAG_FIN, RST_PROTOCOL_ERROR, UPGRADE};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How long a client has to open its streams (kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client has to hang up after the server's GOAWAY.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `req` asks for a SPDY/3.1 upgrade.
pub fn is_spdy(req: &Request<Incoming>) -> bool {
    super::header_values(req, "upgrade").iter().any(|u| u.eq_ignore_ascii_case(UPGRADE))
}

/// Negotiates the stream protocol, answers the upgrade and runs the session.
pub fn upgrade(srv: &Arc<Streaming>, mut req: Request<Incoming>, pending: Pending) -> Response<Body> {
    if !super::header_values(&req, "connection").iter().any(|c| c.eq_ignore_ascii_case("upgrade")) {
        return plain(StatusCode::BAD_REQUEST, "unable to upgrade: missing Connection: Upgrade");
    }
    let offered = super::header_values(&req, "x-stream-protocol-version");
    if offered.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "unable to upgrade: X-Stream-Protocol-Version is required");
    }
    let supported = match pending {
        Pending::Remote(_) => REMOTECOMMAND_PROTOCOLS,
        Pending::PortForward { .. } => PORTFORWARD_PROTOCOLS,
    };
    let Some(proto) = offered.iter().find(|p| supported.contains(&p.as_str())).cloned() else {
        let mut r = Response::builder().status(StatusCode::FORBIDDEN).header("content-type", "text/plain");
        for p in supported {
            r = r.header("x-accepted-stream-protocol-versions", *p);
        }
        let msg = format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}\n");
        return r.body(Full::new(Bytes::from(msg))).unwrap();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let srv = srv.clone();
    let p = proto.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("streaming upgrade: {e}"),
        };
        let conn = Conn::start(TokioIo::new(upgraded));
        match pending {
            Pending::Remote(job) => remotecommand(&srv, conn, &p, job).await,
            Pending::PortForward { sandbox, netns, .. } => port_forward(&srv, conn, sandbox, netns).await,
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", UPGRADE)
        .header("x-stream-protocol-version", proto)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// What the client did, in the order its frames came.
#[derive(Debug)]
enum Event {
    Stream { id: u32, headers: Headers },
    Data { id: u32, data: Bytes },
    /// The client's half of the stream ended.
    Fin { id: u32 },
    Reset { id: u32 },
}

enum Cmd {
    Frame(Frame),
    /// GOAWAY, then no more writing.
    Close,
}

/// Sends frames through the connection's writer task.
#[derive(Clone)]
struct Tx {
    cmds: mpsc::Sender<Cmd>,
    last_stream: Arc<AtomicU32>,
}

impl Tx {
    async fn frame(&self, f: Frame) -> bool {
        self.cmds.send(Cmd::Frame(f)).await.is_ok()
    }

    async fn reply(&self, id: u32) {
        self.frame(Frame::SynReply { id, flags: 0, headers: Headers::new() }).await;
    }

    async fn data(&self, id: u32, data: Bytes) -> bool {
        self.frame(Frame::Data { id, flags: 0, data }).await
    }

    async fn fin(&self, id: u32) {
        self.frame(Frame::Data { id, flags: FLAG_FIN, data: Bytes::new() }).await;
    }

    async fn close(&self) {
        let _ = self.cmds.send(Cmd::Close).await;
    }
}

/// A server-side SPDY connection: a reader task turning frames into
/// [`Event`]s and a writer task that owns the socket's write half.
struct Conn {
    events: mpsc::Receiver<Event>,
    tx: Tx,
    reader: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn start<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static>(io: IO) -> Conn {
        let (r, w) = tokio::io::split(io);
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, events) = mpsc::channel(64);
        let tx = Tx { cmds: cmd_tx, last_stream: Arc::new(AtomicU32::new(0)) };
        tokio::spawn(write_loop(w, cmd_rx, tx.last_stream.clone()));
        let reader = tokio::spawn(read_loop(r, ev_tx, tx.clone()));
        Conn { events, tx, reader }
    }

    /// Sends GOAWAY and waits (a while) for the client to hang up, so the
    /// last frames are not lost to a reset.
    async fn finish(self) {
        self.tx.close().await;
        drop(self.events);
        let abort = self.reader.abort_handle();
        if tokio::time::timeout(CLOSE_TIMEOUT, self.reader).await.is_err() {
            abort.abort();
        }
    }
}

async fn write_loop(mut w: impl tokio::io::AsyncWrite + Unpin, mut cmds: mpsc::Receiver<Cmd>, last_stream: Arc<AtomicU32>) {
    let mut enc = Encoder::new();
    let mut out = Vec::with_capacity(64 * 1024);
    while let Some(first) = cmds.recv().await {
        let mut close = false;
        let mut next = Some(first);
        // Batch what is already queued into one write.
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(f) => {
                    if let Err(e) = enc.encode(&f, &mut out) {
                        tracing::debug!("SPDY encode: {e}");
                    }
                }
                Cmd::Close => {
                    let _ = enc.encode(&Frame::GoAway { last_good: last_stream.load(Ordering::SeqCst), status: 0 }, &mut out);
                    close = true;
                    break;
                }
            }
            if out.len() < 256 * 1024 {
                next = cmds.try_recv().ok();
            }
        }
        if w.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if close {
            let _ = w.flush().await;
            let _ = w.shutdown().await;
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_loop(mut r: impl tokio::io::AsyncRead + Unpin, events: mpsc::Sender<Event>, tx: Tx) {
    let mut dec = Decoder::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    // Once the session stops listening, frames are read and dropped until
    // the client hangs up.
    let mut events = Some(events);
    loop {
        loop {
            let f = match dec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("SPDY from the streaming client: {e}");
                    tx.frame(Frame::GoAway { last_good: tx.last_stream.load(Ordering::SeqCst), status: 1 }).await;
                    return;
                }
            };
            let mut evs = Vec::with_capacity(2);
            match f {
                Frame::SynStream { id, flags, headers, .. } => {
                    tx.last_stream.fetch_max(id, Ordering::SeqCst);
                    evs.push(Event::Stream { id, headers });
                    if flags & FLAG_FIN != 0 {
                        evs.push(Event::Fin { id });
                    }
                }
                Frame::Data { id, flags, data } => {
                    if !data.is_empty() {
                        evs.push(Event::Data { id, data });
                    }
                    if flags & FLAG_FIN != 0 {
                        evs.push(Event::Fin { id });
                    }
                }
                Frame::RstStream { id, .. } => evs.push(Event::Reset { id }),
                // Odd ids are the client's pings: echo them.
                Frame::Ping { id } if id % 2 == 1 => {
                    tx.frame(Frame::Ping { id }).await;
                }
                _ => {}
            }
            for e in evs {
                if let Some(ev) = &events {
                    if ev.send(e).await.is_err() {
                        events = None;
                    }
                }
            }
        }
        buf.reserve(32 * 1024);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The streams of a remotecommand session, by type.
#[derive(Debug, Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

async fn remotecommand(srv: &Arc<Streaming>, mut conn: Conn, proto: &str, job: Job) {
    let version = match proto {
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        "v2.channel.k8s.io" => 2,
        _ => 1,
    };
    let stdio = job.stdio();
    let resizable = stdio.tty && version >= 3;
    let expected = 1 + [stdio.stdin, stdio.stdout, stdio.stderr, resizable].iter().filter(|b| **b).count();
    let mut s = Streams::default();
    let mut all = Vec::new();
    // Data may come on a stream before the last stream is opened.
    let mut early = Vec::new();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    let mut got = 0;
    while got < expected {
        tokio::select! {
            ev = conn.events.recv() => match ev {
                Some(Event::Stream { id, headers }) => {
                    conn.tx.reply(id).await;
                    all.push(id);
                    let slot = match headers.get("streamtype") {
                        Some("error") => &mut s.error,
                        Some("stdin") => &mut s.stdin,
                        Some("stdout") => &mut s.stdout,
                        Some("stderr") => &mut s.stderr,
                        Some("resize") if resizable => &mut s.resize,
                        other => {
                            tracing::debug!("unexpected stream type {other:?}");
                            continue;
                        }
                    };
                    if slot.replace(id).is_none() {
                        got += 1;
                    }
                }
                Some(e) => early.push(e),
                None => return,
            },
            _ = &mut deadline => {
                tracing::debug!("timed out waiting for the client to create streams");
                return conn.finish().await;
            }
            _ = srv.cancel.cancelled() => return,
        }
    }
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let gone = Arc::new(AtomicBool::new(false));
    let (stdin_id, resize_id) = (s.stdin, s.resize);
    let mut events = std::mem::replace(&mut conn.events, mpsc::channel(1).1);
    let inbound = {
        let gone = gone.clone();
        tokio::spawn(async move {
            let mut resize = Vec::new();
            let mut early = early.into_iter();
            loop {
                let ev = match early.next() {
                    Some(e) => Some(e),
                    None => events.recv().await,
                };
                let msgs = match ev {
                    Some(Event::Data { id, data }) if Some(id) == stdin_id => vec![In::Stdin(data)],
                    Some(Event::Fin { id } | Event::Reset { id }) if Some(id) == stdin_id => vec![In::StdinEof],
                    Some(Event::Data { id, data }) if Some(id) == resize_id => {
                        resize.extend_from_slice(&data);
                        terminal_sizes(&mut resize)
                    }
                    Some(_) => continue,
                    None => break,
                };
                for m in msgs {
                    if in_tx.send(m).await.is_err() {
                        break;
                    }
                }
            }
            gone.store(true, Ordering::SeqCst);
            // The connection is closed: the session sees its input end.
            drop(in_tx);
        })
    };
    let cmd = match &job {
        Job::Exec { cmd, .. } => Some(cmd.clone()),
        Job::Attach { .. } => None,
    };
    let mut sess = tokio::spawn(session::run(srv.containers.clone(), srv.cancel.clone(), job, Io { input: in_rx, output: out_tx }));
    let tx = conn.tx.clone();
    let send_out = |o: Out| {
        let tx = tx.clone();
        let (id, b) = match o {
            Out::Stdout(b) => (s.stdout, b),
            Out::Stderr(b) => (s.stderr, b),
        };
        async move {
            if let Some(id) = id {
                tx.data(id, b).await;
            }
        }
    };
    let result = loop {
        tokio::select! {
            r = &mut sess => break r.unwrap_or_else(|e| Err(format!("session failed: {e}"))),
            Some(o) = out_rx.recv() => send_out(o).await,
        }
    };
    while let Some(o) = out_rx.recv().await {
        send_out(o).await;
    }
    if srv.cancel.is_cancelled() {
        inbound.abort();
        return;
    }
    if !gone.load(Ordering::SeqCst) {
        if let (Some(id), Some(m)) = (s.error, session::status(version >= 4, cmd.as_deref(), &result)) {
            tx.data(id, m.into()).await;
        }
        // The server's half of every stream ends; the client reads
        // stdout and stderr to their end, then the error stream.
        for id in all {
            tx.fin(id).await;
        }
    }
    inbound.abort();
    conn.finish().await;
}

/// Takes the complete JSON terminal sizes off the front of `buf`.
fn terminal_sizes(buf: &mut Vec<u8>) -> Vec<In> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(s)) => {
                used = it.byte_offset();
                out.push(In::Resize { width: s.width, height: s.height });
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => {
                tracing::debug!("bad resize message: {e}");
                used = buf.len();
                break;
            }
            None => break,
        }
    }
    buf.drain(..used);
    out
}

/// One port-forward request: its error and data streams.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

async fn port_forward(srv: &Arc<Streaming>, mut conn: Conn, sandbox: String, netns: Option<PathBuf>) {
    let tx = conn.tx.clone();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data stream id → the forwarding task's input (None: the client's FIN).
    let mut inputs: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    loop {
        let ev = tokio::select! {
            ev = conn.events.recv() => ev,
            _ = srv.cancel.cancelled() => return,
        };
        match ev {
            None => break,
            Some(Event::Stream { id, headers }) => {
                let port = headers.get("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
                let kind = headers.get("streamtype").unwrap_or_default();
                let Some(port) = port.filter(|_| kind == "error" || kind == "data") else {
                    tracing::debug!("port-forward stream {id} rejected: port {:?}, streamType {kind:?}", headers.get("port"));
                    tx.frame(Frame::RstStream { id, status: RST_PROTOCOL_ERROR }).await;
                    continue;
                };
                tx.reply(id).await;
                // Old clients send no requestID: their error and data
                // streams have consecutive odd ids.
                let request = match headers.get("requestid") {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ => (if kind == "error" { id } else { id.saturating_sub(2) }).to_string(),
                };
                let p = pairs.entry(request.clone()).or_default();
                p.port = port;
                let slot = if kind == "error" { &mut p.error } else { &mut p.data };
                if slot.is_some() {
                    let msg = format!("error processing stream for request {request}: {kind} stream already assigned");
                    if let Some(e) = p.error {
                        tx.data(e, msg.into()).await;
                    }
                    continue;
                }
                *slot = Some(id);
                if let (Some(error), Some(data)) = (p.error, p.data) {
                    let port = p.port;
                    pairs.remove(&request);
                    let (in_tx, in_rx) = mpsc::channel(16);
                    inputs.insert(data, in_tx);
                    tokio::spawn(forward(tx.clone(), sandbox.clone(), netns.clone(), port, error, data, in_rx));
                }
            }
            Some(Event::Data { id, data }) => {
                if let Some(i) = inputs.get(&id) {
                    if i.send(Some(data)).await.is_err() {
                        inputs.remove(&id);
                    }
                }
            }
            Some(Event::Fin { id }) => {
                if let Some(i) = inputs.remove(&id) {
                    let _ = i.send(None).await;
                }
            }
            Some(Event::Reset { id }) => {
                inputs.remove(&id);
            }
        }
    }
    drop(inputs);
    conn.finish().await;
}

/// Relays one port-forward connection between its data stream and
/// 127.0.0.1:`port` in the pod's network namespace.
async fn forward(tx: Tx, sandbox: String, netns: Option<PathBuf>, port: u16, error: u32, data: u32, mut input: mpsc::Receiver<Option<Bytes>>) {
    let sock = match session::connect_in(netns, port).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
            tx.data(error, msg.into()).await;
            tx.fin(error).await;
            tx.fin(data).await;
            return;
        }
    };
    let (mut r, mut w) = sock.into_split();
    let to_pod = tokio::spawn(async move {
        while let Some(m) = input.recv().await {
            match m {
                Some(b) => {
                    if w.write_all(&b).await.is_err() {
                        return;
                    }
                }
                None => break,
            }
        }
        // The client is done sending (or gone): half-close.
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !tx.data(data, Bytes::copy_from_slice(&buf[..n])).await {
                    break;
                }
            }
        }
    }
    tx.fin(data).await;
    tx.fin(error).await;
    to_pod.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_split_anywhere() {
        let mut b = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        let got = terminal_sizes(&mut b);
        assert!(matches!(got.as_slice(), [In::Resize { width: 80, height: 24 }]), "{got:?}");
        b.extend_from_slice(b"00,\"Height\":30}\n");
        let got = terminal_sizes(&mut b);
        assert!(matches!(got.as_slice(), [In::Resize { width: 100, height: 30 }]), "{got:?}");
        assert_eq!(b, b"\n");
    }
}
