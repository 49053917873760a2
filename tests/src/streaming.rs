//! Clients of the CRI streaming server for tests: SPDY/3.1 (the framing of
//! `berth_runtime::server::spdy`, the client's side of the Kubernetes
//! stream protocols, as client-go's `spdystream` speaks it) and WebSocket.

use berth_runtime::server::spdy::{Decoder, Encoder, Frame, Headers, FLAG_FIN};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

/// How long a test waits for the server before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `http://HOST:PORT/path?query` → (`HOST:PORT`, `/path?query`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (host.to_string(), format!("/{path}"))
}

/// The answer to an upgrade request that was refused.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A SPDY/3.1 client connection.
pub struct SpdyClient {
    w: OwnedWriteHalf,
    enc: Encoder,
    next_id: u32,
    frames: mpsc::UnboundedReceiver<Frame>,
    /// Data received per stream, and the streams the server finished.
    pub data: BTreeMap<u32, Vec<u8>>,
    pub finished: HashSet<u32>,
    replied: HashSet<u32>,
    pub reset: HashSet<u32>,
    pub closed: bool,
}

impl SpdyClient {
    /// Sends the upgrade request (`X-Stream-Protocol-Version` for each of
    /// `protocols`); returns the client and the negotiated protocol.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<(SpdyClient, String), Refused> {
        let (host, path) = split_url(url);
        let tcp = tokio::net::TcpStream::connect(&host).await.expect("connect to the streaming server");
        let (mut r, mut w) = tcp.into_split();
        let mut req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n");
        for p in protocols {
            req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        req.push_str("\r\n");
        w.write_all(req.as_bytes()).await.unwrap();
        // The response head, then frames.
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(PATIENCE, r.read(&mut chunk)).await.expect("upgrade response").unwrap();
            assert!(n > 0, "the server closed before answering: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
        if status != 101 {
            // The connection stays open: read Content-Length bytes.
            let len: usize = get("content-length").parse().unwrap_or(0);
            let mut body = buf[head_end..].to_vec();
            while body.len() < len {
                let mut chunk = [0u8; 4096];
                match tokio::time::timeout(PATIENCE, r.read(&mut chunk)).await.expect("refusal body") {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            return Err(Refused { status, headers, body: String::from_utf8_lossy(&body).into_owned() });
        }
        assert_eq!(get("upgrade"), "SPDY/3.1", "{head}");
        let proto = get("x-stream-protocol-version");
        let mut rest = buf[head_end..].to_vec();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut dec = Decoder::new();
            loop {
                while let Some(f) = dec.decode(&mut rest).expect("a SPDY frame from the server") {
                    if tx.send(f).is_err() {
                        return;
                    }
                }
                let mut chunk = vec![0u8; 32 * 1024];
                match r.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => rest.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let c = SpdyClient {
            w,
            enc: Encoder::new(),
            next_id: 1,
            frames,
            data: BTreeMap::new(),
            finished: HashSet::new(),
            replied: HashSet::new(),
            reset: HashSet::new(),
            closed: false,
        };
        Ok((c, proto))
    }

    async fn send(&mut self, f: Frame) {
        let mut out = Vec::new();
        self.enc.encode(&f, &mut out).unwrap();
        self.w.write_all(&out).await.expect("write to the streaming server");
    }

    /// Opens a stream and waits for the server's SYN_REPLY.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let h = headers.iter().fold(Headers::new(), |h, (k, v)| h.with(k, *v));
        self.send(Frame::SynStream { id, associated: 0, priority: 0, flags: 0, headers: h }).await;
        self.wait(|c| c.replied.contains(&id) || c.reset.contains(&id)).await;
        id
    }

    pub async fn write(&mut self, id: u32, data: &[u8]) {
        self.send(Frame::Data { id, flags: 0, data: data.to_vec().into() }).await;
    }

    pub async fn fin(&mut self, id: u32) {
        self.send(Frame::Data { id, flags: FLAG_FIN, data: Vec::new().into() }).await;
    }

    pub async fn ping(&mut self, id: u32) {
        self.send(Frame::Ping { id }).await;
    }

    /// Handles one frame; false once the connection is closed.
    async fn step(&mut self) -> Option<Frame> {
        let f = self.frames.recv().await;
        match &f {
            None => self.closed = true,
            Some(Frame::SynReply { id, .. }) => {
                self.replied.insert(*id);
            }
            Some(Frame::RstStream { id, .. }) => {
                self.reset.insert(*id);
            }
            Some(Frame::Data { id, flags, data }) => {
                self.data.entry(*id).or_default().extend_from_slice(data);
                if flags & FLAG_FIN != 0 {
                    self.finished.insert(*id);
                }
            }
            _ => {}
        }
        f
    }

    /// Reads frames until `done` holds; panics after [`PATIENCE`].
    pub async fn wait(&mut self, done: impl Fn(&SpdyClient) -> bool) {
        let fut = async {
            while !done(self) {
                if self.closed {
                    return;
                }
                self.step().await;
            }
        };
        tokio::time::timeout(PATIENCE, fut).await.expect("the streaming server did not answer in time");
    }

    /// Reads until the server finished stream `id` (or closed).
    pub async fn wait_fin(&mut self, id: u32) {
        self.wait(|c| c.finished.contains(&id)).await;
    }

    /// Reads until stream `id` has received `needle`.
    pub async fn wait_for(&mut self, id: u32, needle: &str) {
        self.wait(|c| c.text(id).contains(needle) || c.finished.contains(&id)).await;
        assert!(self.text(id).contains(needle), "stream {id} ended without {needle:?}: {:?}", self.text(id));
    }

    /// Waits for the next PING with `id` back.
    pub async fn wait_ping(&mut self, id: u32) {
        let fut = async {
            loop {
                match self.step().await {
                    Some(Frame::Ping { id: got }) if got == id => return true,
                    None => return false,
                    _ => {}
                }
            }
        };
        assert!(tokio::time::timeout(PATIENCE, fut).await.expect("no PING answer"), "connection closed before the PING answer");
    }

    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or_default()).into_owned()
    }
}

/// A remotecommand session over SPDY: the client's streams in the order
/// client-go opens them.
pub struct SpdyCommand {
    pub conn: SpdyClient,
    pub protocol: String,
    pub error: u32,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

/// Which streams to open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl SpdyCommand {
    pub async fn start(url: &str, protocols: &[&str], s: Streams) -> Result<SpdyCommand, Refused> {
        let (mut conn, protocol) = SpdyClient::connect(url, protocols).await?;
        let error = conn.open(&[("streamType", "error")]).await;
        let stdin = open_if(&mut conn, s.stdin, "stdin").await;
        let stdout = open_if(&mut conn, s.stdout, "stdout").await;
        let stderr = open_if(&mut conn, s.stderr, "stderr").await;
        let resize = open_if(&mut conn, s.tty && protocol != "v2.channel.k8s.io", "resize").await;
        Ok(SpdyCommand { conn, protocol, error, stdin, stdout, stderr, resize })
    }

    pub async fn stdin(&mut self, data: &str) {
        let id = self.stdin.expect("a stdin stream");
        self.conn.write(id, data.as_bytes()).await;
    }

    pub async fn close_stdin(&mut self) {
        let id = self.stdin.expect("a stdin stream");
        self.conn.fin(id).await;
    }

    pub async fn resize(&mut self, width: u16, height: u16) {
        let id = self.resize.expect("a resize stream");
        let msg = format!("{{\"Width\":{width},\"Height\":{height}}}\n");
        self.conn.write(id, msg.as_bytes()).await;
    }

    pub async fn wait_stdout(&mut self, needle: &str) {
        let id = self.stdout.expect("a stdout stream");
        self.conn.wait_for(id, needle).await;
    }

    /// Reads to the end: stdout, stderr, and what the error stream said.
    pub async fn finish(mut self) -> (String, String, String) {
        for id in [self.stdout, self.stderr, Some(self.error)].into_iter().flatten() {
            self.conn.wait_fin(id).await;
        }
        let t = |id: Option<u32>| id.map(|i| self.conn.text(i)).unwrap_or_default();
        (t(self.stdout), t(self.stderr), self.conn.text(self.error))
    }
}

async fn open_if(conn: &mut SpdyClient, on: bool, kind: &str) -> Option<u32> {
    if on {
        Some(conn.open(&[("streamType", kind)]).await)
    } else {
        None
    }
}
