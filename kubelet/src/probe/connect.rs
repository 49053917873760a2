//! TCP connections for probes and hooks, from the host or from inside a pod's network namespace.
//!
//! A socket stays in the network namespace it was created in. To reach a pod that has no
//! routable IP (or to avoid depending on routes at all), [`netns_tcp_socket`] creates the socket
//! on a short-lived helper thread that has entered the pod's namespace with `setns(CLONE_NEWNET)`;
//! the thread exits right after, and the socket is connected from the async runtime as usual.
//!
//! Routing follows kubelet where it can: the default host (no `host` field) is the pod IP —
//! reached inside the pod's namespace when [`Target::netns`] is set, or 127.0.0.1 there when the
//! pod has no IP. An explicit `host` other than the pod IP is reached from the host, as kubelet does.
//! Pods on the host network are always probed from the host.

use super::Target;
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Creates an unconnected, non-blocking TCP socket inside the network namespace at `netns`
/// (IPv6 when `ipv6`). Bind/listen or connect it like any [`TcpSocket`]: it keeps using that
/// namespace. Needs CAP_SYS_ADMIN.
pub async fn netns_tcp_socket(netns: &Path, ipv6: bool) -> io::Result<TcpSocket> {
    let file = std::fs::File::open(netns)
        .map_err(|e| io::Error::new(e.kind(), format!("open network namespace {}: {e}", netns.display())))?;
    let shown = netns.display().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<io::Result<OwnedFd>>();
    // A dedicated thread, never a pooled one: it leaves the host namespace for good and exits.
    std::thread::Builder::new().name("berth-netns".into()).spawn(move || {
        let made = nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::from(e).kind_with(format!("enter network namespace {shown}")))
            .and_then(|()| {
                let family = if ipv6 {
                    AddressFamily::Inet6
                } else {
                    AddressFamily::Inet
                };
                nix::sys::socket::socket(
                    family,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    None,
                )
                .map_err(|e| io::Error::from(e).kind_with(format!("socket in network namespace {shown}")))
            });
        let _ = tx.send(made);
    })?;
    let fd = rx
        .await
        .map_err(|_| io::Error::other("network namespace helper thread exited early"))??;
    Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
}

trait ErrorContext {
    fn kind_with(self, what: String) -> io::Error;
}

impl ErrorContext for io::Error {
    fn kind_with(self, what: String) -> io::Error {
        io::Error::new(self.kind(), format!("{what}: {self}"))
    }
}

/// Connects to `addr`, from inside `netns` when given, else from the host.
pub async fn connect_tcp(netns: Option<&Path>, addr: SocketAddr) -> io::Result<TcpStream> {
    match netns {
        None => TcpStream::connect(addr).await,
        Some(ns) => netns_tcp_socket(ns, addr.is_ipv6()).await?.connect(addr).await,
    }
}

/// One host:port to connect to, and the namespace to connect from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    /// A host name or an IP literal (without brackets).
    pub host: String,
    pub port: u16,
    /// Connect from inside this network namespace (None: from the host).
    pub netns: Option<PathBuf>,
}

impl Destination {
    /// Where a handler with this `host` field (None or empty: the default) and `port` connects.
    pub fn new(target: &Target, host: Option<&str>, port: u16) -> Result<Destination, String> {
        let pod_netns = target.netns.clone().filter(|_| !target.host_network);
        match host.filter(|h| !h.is_empty()) {
            Some(h) => {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                let is_pod_ip = target.pod_ip.is_some() && h.parse::<IpAddr>().ok() == target.pod_ip;
                Ok(Destination {
                    host: h.to_string(),
                    port,
                    netns: if is_pod_ip { pod_netns } else { None },
                })
            }
            None => match (target.pod_ip, pod_netns) {
                (Some(ip), netns) => Ok(Destination {
                    host: ip.to_string(),
                    port,
                    netns,
                }),
                (None, Some(ns)) => Ok(Destination {
                    host: Ipv4Addr::LOCALHOST.to_string(),
                    port,
                    netns: Some(ns),
                }),
                (None, None) if target.host_network => Ok(Destination {
                    host: Ipv4Addr::LOCALHOST.to_string(),
                    port,
                    netns: None,
                }),
                (None, None) => Err("the pod has no IP and no network namespace to connect to".into()),
            },
        }
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// Connects, trying each address of a host name in turn.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await?
                .collect(),
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("no addresses for {}", self.host));
        for addr in addrs {
            match connect_tcp(self.netns.as_deref(), addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

/// A connected stream, plain or TLS.
pub struct ProbeStream(pub(crate) StreamInner);

pub(crate) enum StreamInner {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<super::http::Sniff<TcpStream>>>),
}

impl ProbeStream {
    pub(crate) fn plain(tcp: TcpStream) -> ProbeStream {
        ProbeStream(StreamInner::Plain(tcp))
    }
}

impl hyper_util::client::legacy::connect::Connection for ProbeStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl AsyncRead for ProbeStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            StreamInner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            StreamInner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ProbeStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            StreamInner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            StreamInner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            StreamInner::Plain(s) => Pin::new(s).poll_flush(cx),
            StreamInner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            StreamInner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            StreamInner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connector for hyper-util's client and tonic's `Endpoint::connect_with_connector`: connects
/// to the URI's host and port from inside a network namespace (or from the host), optionally
/// with TLS that does not verify the server's certificate (as kubelet's probes do).
#[derive(Clone, Default)]
pub struct ProbeConnector {
    netns: Option<PathBuf>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ProbeConnector {
    /// Connects from inside `netns`, or from the host when None.
    pub fn new(netns: Option<PathBuf>) -> ProbeConnector {
        ProbeConnector { netns, tls: None }
    }

    /// Wraps connections in TLS without certificate verification, offering these ALPN protocols
    /// (e.g. `[b"h2"]` for gRPC).
    pub fn with_insecure_tls(mut self, alpn: &[&[u8]]) -> Result<ProbeConnector, String> {
        self.tls = Some(super::http::insecure_tls_config(alpn)?);
        Ok(self)
    }

    async fn open(self, uri: http::Uri) -> io::Result<TokioIo<ProbeStream>> {
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
        let https = uri.scheme_str() == Some("https") || self.tls.is_some();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let dest = Destination {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            netns: self.netns,
        };
        let tcp = dest.connect().await?;
        let stream = match self.tls {
            None => ProbeStream::plain(tcp),
            Some(config) => super::http::tls_handshake(tcp, &dest.host, config)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))?,
        };
        Ok(TokioIo::new(stream))
    }
}

impl tonic::codegen::Service<http::Uri> for ProbeConnector {
    type Response = TokioIo<ProbeStream>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<TokioIo<ProbeStream>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().open(uri))
    }
}
