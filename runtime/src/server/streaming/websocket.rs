//! The Kubernetes channel protocols over WebSocket. Every message starts
//! with its channel: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, and
//! 255 close (`v5.channel.k8s.io`: `[255, channel]` ends that channel).
//! The `base64` variants send text messages: the channel as an ASCII digit,
//! then the data in base64.
//!
//! Port-forward: port i of the `port=` query gets data channel 2i and error
//! channel 2i+1, each opened by the port number (2 bytes LE).

use super::session::{self, In, Io, Job, Out, TermSize};
use super::{plain, Body, Pending, Streaming};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type WsStream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

pub const EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io", "portforward.k8s.io"];

const STDIN: u8 = 0;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Binary or base64 text messages.
#[derive(Debug, Clone, Copy)]
struct Codec {
    base64: bool,
}

enum Decoded {
    Data(u8, Vec<u8>),
    Closed,
    Skip,
}

impl Codec {
    fn new(proto: &str) -> Self {
        Self { base64: proto.contains("base64") }
    }

    fn encode(&self, ch: u8, data: &[u8]) -> Message {
        if self.base64 {
            Message::Text(format!("{}{}", (b'0' + ch) as char, base64::engine::general_purpose::STANDARD.encode(data)).into())
        } else {
            let mut m = Vec::with_capacity(data.len() + 1);
            m.push(ch);
            m.extend_from_slice(data);
            Message::Binary(m.into())
        }
    }

    fn decode(&self, m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Decoded {
        match m {
            Some(Ok(Message::Binary(b))) if !self.base64 && !b.is_empty() => Decoded::Data(b[0], b[1..].to_vec()),
            Some(Ok(Message::Text(t))) if self.base64 && !t.is_empty() => {
                let t = t.as_bytes();
                match base64::engine::general_purpose::STANDARD.decode(&t[1..]) {
                    Ok(d) if t[0].is_ascii_digit() => Decoded::Data(t[0] - b'0', d),
                    _ => Decoded::Skip,
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => Decoded::Closed,
            _ => Decoded::Skip,
        }
    }
}

/// Answers a WebSocket upgrade and runs the session on it.
pub fn upgrade(srv: &Arc<Streaming>, mut req: Request<Incoming>, pending: Pending) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let offered: Vec<String> = super::header_values(&req, "sec-websocket-protocol");
    let supported = match pending {
        Pending::Remote(_) => EXEC_PROTOCOLS,
        Pending::PortForward { .. } => PORTFORWARD_PROTOCOLS,
    };
    // The first protocol the client offers that we speak; none offered
    // means the plain channel protocol.
    let proto = if offered.is_empty() {
        None
    } else {
        match offered.iter().find(|p| supported.contains(&p.as_str())) {
            Some(p) => Some(p.clone()),
            None => return plain(StatusCode::BAD_REQUEST, &format!("none of the subprotocols {offered:?} is supported; want one of {supported:?}")),
        }
    };
    let query = super::query_pairs(req.uri().query().unwrap_or(""));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let srv = srv.clone();
    let p = proto.clone().unwrap_or_else(|| "channel.k8s.io".into());
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!("streaming upgrade: {e}"),
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        match pending {
            Pending::Remote(job) => remotecommand(&srv, ws, &p, job).await,
            Pending::PortForward { sandbox, netns, ports } => {
                let mut want: Vec<u16> = query.iter().filter(|(k, _)| k == "port").flat_map(|(_, v)| v.split(',').filter_map(|p| p.trim().parse().ok()).collect::<Vec<u16>>()).collect();
                if want.is_empty() {
                    want = ports.iter().map(|p| *p as u16).collect();
                }
                port_forward(&srv, ws, &p, sandbox, netns, want).await
            }
        }
    });
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS).header("connection", "Upgrade").header("upgrade", "websocket").header("sec-websocket-accept", key);
    if let Some(p) = proto {
        resp = resp.header("sec-websocket-protocol", p);
    }
    resp.body(Full::new(Bytes::new())).unwrap()
}

fn close_normal() -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

/// A task that owns the sink and sends what arrives on the channel; it ends
/// after a Close or when every sender is gone.
fn writer(mut sink: futures::stream::SplitSink<WsStream, Message>) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let h = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.flush().await;
    });
    (tx, h)
}

async fn remotecommand(srv: &Arc<Streaming>, ws: WsStream, proto: &str, job: Job) {
    let codec = Codec::new(proto);
    let v5 = proto == "v5.channel.k8s.io";
    let json = proto.starts_with("v4.") || v5;
    let (sink, mut stream) = ws.split();
    let (tx, writer) = writer(sink);
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let gone = Arc::new(AtomicBool::new(false));
    // Client messages go to the session in order, on their own task so
    // that a session not reading its input never holds up its output.
    let inbound = {
        let gone = gone.clone();
        tokio::spawn(async move {
            loop {
                let m = match codec.decode(stream.next().await) {
                    Decoded::Data(STDIN, d) => In::Stdin(d.into()),
                    Decoded::Data(RESIZE, d) => match serde_json::from_slice::<TermSize>(&d) {
                        Ok(s) => In::Resize { width: s.width, height: s.height },
                        Err(e) => {
                            tracing::debug!("bad resize message: {e}");
                            continue;
                        }
                    },
                    Decoded::Data(CLOSE, d) if v5 && d.first() == Some(&STDIN) => In::StdinEof,
                    Decoded::Data(..) | Decoded::Skip => continue,
                    Decoded::Closed => break,
                };
                if in_tx.send(m).await.is_err() {
                    break;
                }
            }
            gone.store(true, Ordering::SeqCst);
        })
    };
    let cmd = match &job {
        Job::Exec { cmd, .. } => Some(cmd.clone()),
        Job::Attach { .. } => None,
    };
    let mut sess = tokio::spawn(session::run(srv.containers.clone(), srv.cancel.clone(), job, Io { input: in_rx, output: out_tx }));
    let send_out = |o: Out| match o {
        Out::Stdout(b) => codec.encode(1, &b),
        Out::Stderr(b) => codec.encode(2, &b),
    };
    let result = loop {
        tokio::select! {
            r = &mut sess => break r.unwrap_or_else(|e| Err(format!("session failed: {e}"))),
            Some(o) = out_rx.recv() => { let _ = tx.send(send_out(o)).await; }
        }
    };
    while let Some(o) = out_rx.recv().await {
        let _ = tx.send(send_out(o)).await;
    }
    if !gone.load(Ordering::SeqCst) && !srv.cancel.is_cancelled() {
        if let Some(m) = session::status(json, cmd.as_deref(), &result) {
            let _ = tx.send(codec.encode(ERROR, &m)).await;
        }
        let _ = tx.send(close_normal()).await;
    }
    inbound.abort();
    drop(tx);
    let _ = writer.await;
}

/// Copies `r` to channel `ch` until EOF.
async fn pump(mut r: impl AsyncRead + Unpin, ch: u8, codec: Codec, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(codec.encode(ch, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn port_forward(srv: &Arc<Streaming>, ws: WsStream, proto: &str, sandbox: String, netns: Option<PathBuf>, ports: Vec<u16>) {
    let codec = Codec::new(proto);
    let (sink, mut stream) = ws.split();
    let (tx, writer) = writer(sink);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(ports.len().max(1));
    let mut conns: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data, err) = ((2 * i) as u8, (2 * i + 1) as u8);
        let le = port.to_le_bytes();
        let _ = tx.send(codec.encode(data, &le)).await;
        let _ = tx.send(codec.encode(err, &le)).await;
        match session::connect_in(netns.clone(), *port).await {
            Ok(s) => {
                let (r, w) = s.into_split();
                conns.push(Some(w));
                let (tx, done) = (tx.clone(), done_tx.clone());
                tokio::spawn(async move {
                    pump(r, data, codec, tx).await;
                    let _ = done.send(()).await;
                });
            }
            Err(e) => {
                let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
                let _ = tx.send(codec.encode(err, msg.as_bytes())).await;
                conns.push(None);
                let _ = done_tx.send(()).await;
            }
        }
    }
    drop(done_tx);
    let mut remaining = ports.len();
    let mut client_open = true;
    while remaining > 0 {
        tokio::select! {
            _ = srv.cancel.cancelled() => return,
            d = done_rx.recv() => match d {
                Some(()) => remaining -= 1,
                None => break,
            },
            m = stream.next() => match codec.decode(m) {
                Decoded::Data(ch, d) => {
                    let ch = ch as usize;
                    if ch & 1 == 0 {
                        if let Some(Some(w)) = conns.get_mut(ch / 2) {
                            if w.write_all(&d).await.is_err() {
                                conns[ch / 2] = None;
                            }
                        }
                    }
                }
                Decoded::Closed => {
                    client_open = false;
                    break;
                }
                Decoded::Skip => {}
            },
        }
    }
    drop(conns);
    if client_open {
        let _ = tx.send(close_normal()).await;
    }
    drop(tx);
    let _ = writer.await;
}
