//! `httpGet` probes and hooks: kubelet's request (headers, User-Agent, Accept), its redirect rule
//! (follow only to the same host name, at most 10), HTTPS without certificate verification,
//! one connection per request.

use super::connect::{Destination, ProbeStream, StreamInner};
use super::{ProbeOutcome, Target, KUBE_VERSION};
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONNECTION, HOST, LOCATION, USER_AGENT};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::HTTPGetAction;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Kubelet reads at most this much of a response body.
const MAX_BODY: usize = 10 * 1024;
/// Kubelet's redirect checker stops after this many requests.
const MAX_REDIRECTS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One GET request, ready to send.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    scheme: Scheme,
    dest: Destination,
    /// Path and query, starting with '/'.
    path: String,
    /// Request headers except Host.
    headers: HeaderMap,
    /// A Host header from `httpHeaders`, which replaces host:port.
    host_header: Option<HeaderValue>,
    /// HTTP/2 with prior knowledge (h2c), `protocol: HTTP2`.
    http2: bool,
}

impl Request {
    /// The request of an `httpGet` action; `purpose` names the User-Agent (`kube-<purpose>/<ver>`).
    pub fn new(action: &HTTPGetAction, target: &Target, purpose: &str) -> Result<Request, String> {
        let given = action.scheme.as_deref().unwrap_or("");
        let scheme = match given.to_ascii_lowercase().as_str() {
            "" | "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(format!("unsupported scheme {given:?} (want HTTP or HTTPS)")),
        };
        let http2 = match action.protocol.as_deref().unwrap_or("") {
            "" | "HTTP1" => false,
            "HTTP2" if scheme == Scheme::Http => true,
            "HTTP2" => return Err("protocol HTTP2 (h2c) needs scheme HTTP".into()),
            other => return Err(format!("unsupported protocol {other:?} (want HTTP1 or HTTP2)")),
        };
        let port = target.resolve_port(&action.port)?;
        let dest = Destination::new(target, action.host.as_deref(), port)?;
        let path = normalize_path(action.path.as_deref().unwrap_or(""));
        let mut headers = HeaderMap::new();
        let mut host_header = None;
        for h in action.http_headers.iter().flatten() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("invalid HTTP header name {:?}", h.name))?;
            let value =
                HeaderValue::from_str(&h.value).map_err(|_| format!("invalid value of HTTP header {:?}", h.name))?;
            if name == HOST {
                host_header.get_or_insert(value);
            } else {
                headers.append(name, value);
            }
        }
        match headers.get(USER_AGENT) {
            None => {
                let ua = HeaderValue::from_str(&format!("kube-{purpose}/{KUBE_VERSION}")).map_err(|e| e.to_string())?;
                headers.insert(USER_AGENT, ua);
            }
            // An explicitly empty User-Agent means none, as in Go.
            Some(v) if v.is_empty() => {
                headers.remove(USER_AGENT);
            }
            Some(_) => {}
        }
        match headers.get(ACCEPT) {
            None => {
                headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            }
            Some(v) if v.is_empty() => {
                headers.remove(ACCEPT);
            }
            Some(_) => {}
        }
        Ok(Request {
            scheme,
            dest,
            path,
            headers,
            host_header,
            http2,
        })
    }

    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme.as_str(), self.dest.authority(), self.path)
    }

    /// The request a `Location` header points to.
    fn redirect(&self, location: &str) -> Result<Request, String> {
        let loc = location.trim();
        let loc = loc.split_once('#').map_or(loc, |(l, _)| l);
        let mut next = self.clone();
        let has_scheme = loc.find("://").is_some_and(|i| !loc[..i].contains(['/', '?']));
        if has_scheme || loc.starts_with("//") {
            let absolute = if has_scheme {
                loc.to_string()
            } else {
                format!("{}:{loc}", self.scheme.as_str())
            };
            let uri: http::Uri = absolute
                .parse()
                .map_err(|e| format!("bad redirect location {location:?}: {e}"))?;
            next.scheme = match uri.scheme_str() {
                Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
                Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
                _ => return Err(format!("unsupported protocol scheme in redirect to {location:?}")),
            };
            let host = uri
                .host()
                .ok_or_else(|| format!("no host in redirect location {location:?}"))?;
            next.dest.host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            next.dest.port = uri.port_u16().unwrap_or(match next.scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            });
            next.path = uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string());
            // A Host header is kept only for relative redirects, as in Go.
            next.host_header = None;
            next.http2 = self.http2 && next.scheme == Scheme::Http;
        } else if loc.starts_with('/') {
            next.path = normalize_path(loc);
        } else if loc.starts_with('?') {
            let base = self.path.split_once('?').map_or(self.path.as_str(), |(p, _)| p);
            next.path = normalize_path(&format!("{base}{loc}"));
        } else if !loc.is_empty() {
            let base = self.path.split_once('?').map_or(self.path.as_str(), |(p, _)| p);
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            next.path = normalize_path(&format!("{dir}{loc}"));
        }
        Ok(next)
    }

    async fn send(&self) -> Result<Response, SendError> {
        let tcp = self
            .dest
            .connect()
            .await
            .map_err(|e| SendError::Other(format!("dial tcp {}: {e}", self.dest)))?;
        let stream = match self.scheme {
            Scheme::Http => ProbeStream::plain(tcp),
            Scheme::Https => {
                let config = insecure_tls_config(&[b"http/1.1"]).map_err(SendError::Other)?;
                tls_handshake(tcp, &self.dest.host, config).await.map_err(|e| match e {
                    TlsError::HttpResponse => SendError::HttpResponseToHttps,
                    TlsError::Other(e) => SendError::Other(e),
                })?
            }
        };
        let io = TokioIo::new(stream);
        let authority = match &self.host_header {
            Some(h) => h
                .to_str()
                .map_err(|_| SendError::Other("Host header is not ASCII".into()))?
                .to_string(),
            None => self.dest.authority(),
        };
        let other = |e: hyper::Error| SendError::Other(error_chain(&e));
        let response = if self.http2 {
            let uri = format!("http://{authority}{}", self.path);
            let mut req = http::Request::get(uri)
                .body(Empty::<Bytes>::new())
                .map_err(|e| SendError::Other(e.to_string()))?;
            *req.headers_mut() = self.headers.clone();
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(other)?;
            let _conn = AbortOnDrop(tokio::spawn(async move {
                let _ = conn.await;
            }));
            let resp = sender.send_request(req).await.map_err(other)?;
            Response::read(resp).await
        } else {
            let mut req = http::Request::get(self.path.as_str())
                .body(Empty::<Bytes>::new())
                .map_err(|e| SendError::Other(e.to_string()))?;
            *req.headers_mut() = self.headers.clone();
            let host =
                HeaderValue::from_str(&authority).map_err(|_| SendError::Other(format!("bad host {authority:?}")))?;
            req.headers_mut().insert(HOST, host);
            req.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(other)?;
            let _conn = AbortOnDrop(tokio::spawn(async move {
                let _ = conn.await;
            }));
            let resp = sender.send_request(req).await.map_err(other)?;
            Response::read(resp).await
        };
        Ok(response)
    }
}

/// The path kubelet requests: a leading '/', no fragment, unsafe bytes percent-encoded.
fn normalize_path(path: &str) -> String {
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b <= b' ' || b >= 0x7f || b"\"<>\\^`{|}".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub location: Option<String>,
    /// Up to [`MAX_BODY`] bytes, or the error that cut reading short.
    pub body: Result<Vec<u8>, String>,
}

impl Response {
    async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Response {
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let body = loop {
            if buf.len() >= MAX_BODY {
                buf.truncate(MAX_BODY);
                break Ok(buf);
            }
            match body.frame().await {
                None => break Ok(buf),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        buf.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => break Err(error_chain(&e)),
            }
        };
        Response { status, location, body }
    }
}

#[derive(Debug)]
enum SendError {
    /// A server answered the TLS handshake in plain HTTP.
    HttpResponseToHttps,
    Other(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::HttpResponseToHttps => f.write_str("http: server gave HTTP response to HTTPS client"),
            SendError::Other(e) => f.write_str(e),
        }
    }
}

/// A failed request, Go style: `Get "URL": error`.
#[derive(Debug)]
struct FollowError {
    url: String,
    error: SendError,
}

impl fmt::Display for FollowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Get {:?}: {}", self.url, self.error)
    }
}

/// Sends `req`, following redirects to the same host name like kubelet's redirect checker:
/// a redirect elsewhere ends with that (3xx) response.
async fn follow(req: Request) -> Result<Response, FollowError> {
    let first_host = req.dest.host.clone();
    let mut req = req;
    let mut sent = 0;
    loop {
        let resp = req
            .send()
            .await
            .map_err(|error| FollowError { url: req.url(), error })?;
        sent += 1;
        let location = match (&resp.location, resp.status) {
            (Some(l), 301 | 302 | 303 | 307 | 308) => l.clone(),
            _ => return Ok(resp),
        };
        let next = req.redirect(&location).map_err(|e| FollowError {
            url: req.url(),
            error: SendError::Other(e),
        })?;
        if next.dest.host != first_host {
            return Ok(resp);
        }
        if sent >= MAX_REDIRECTS {
            return Err(FollowError {
                url: next.url(),
                error: SendError::Other("stopped after 10 redirects".into()),
            });
        }
        req = next;
    }
}

/// One `httpGet` probe attempt: 200–399 passes (a 3xx that was not followed passes with a
/// warning), anything else fails; the whole exchange is bounded by `timeout`.
pub(crate) async fn probe(action: &HTTPGetAction, target: &Target, timeout: Duration) -> ProbeOutcome {
    let req = match Request::new(action, target, "probe") {
        Ok(r) => r,
        Err(e) => return ProbeOutcome::Unknown(e),
    };
    let url = req.url();
    let resp = match tokio::time::timeout(timeout, follow(req)).await {
        Err(_) => {
            return ProbeOutcome::Failure(format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        }
        Ok(Err(e)) => return ProbeOutcome::Failure(e.to_string()),
        Ok(Ok(resp)) => resp,
    };
    let body = match resp.body {
        Ok(b) => b,
        Err(e) => return ProbeOutcome::Unknown(format!("reading the response body of {url}: {e}")),
    };
    match resp.status {
        200..=299 => ProbeOutcome::Success,
        300..=399 => ProbeOutcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            String::from_utf8_lossy(&body)
        )),
        code => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// An `httpGet` lifecycle hook: any response counts as done (kubelet does not look at the
/// status). An HTTPS request that gets a plain HTTP answer is retried over HTTP without the
/// Authorization header, as kubelet does.
pub(crate) async fn hook(action: &HTTPGetAction, target: &Target) -> Result<(), String> {
    let req = Request::new(action, target, "lifecycle")?;
    match follow(req.clone()).await {
        Ok(_) => Ok(()),
        Err(FollowError {
            error: SendError::HttpResponseToHttps,
            url,
        }) => {
            let mut plain = req;
            plain.scheme = Scheme::Http;
            plain.headers.remove(AUTHORIZATION);
            match follow(plain).await {
                Ok(_) => {
                    tracing::warn!(%url, "HTTPS lifecycle hook got an HTTP response; retry with HTTP succeeded");
                    Ok(())
                }
                Err(_) => Err(FollowError {
                    url,
                    error: SendError::HttpResponseToHttps,
                }
                .to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error and its sources, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let text = src.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = src.source();
    }
    s
}

// ---- TLS ----

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// A TLS client configuration that accepts any server certificate (kubelet's probes and hooks
/// use `InsecureSkipVerify`: the kubelet has nothing to verify a pod's certificate against).
pub(crate) fn insecure_tls_config(alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Skips certificate verification but still checks handshake signatures, like Go's
/// `InsecureSkipVerify`.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
pub(crate) enum TlsError {
    /// The server answered in plain HTTP.
    HttpResponse,
    Other(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::HttpResponse => f.write_str("http: server gave HTTP response to HTTPS client"),
            TlsError::Other(e) => f.write_str(e),
        }
    }
}

/// A TLS handshake over `tcp` with the server `host` (an IP address sends no SNI).
pub(crate) async fn tls_handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<ProbeStream, TlsError> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Other(format!("invalid TLS server name {host:?}: {e}")))?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sniff = Sniff {
        inner: tcp,
        seen: seen.clone(),
        full: false,
    };
    match tokio_rustls::TlsConnector::from(config).connect(name, sniff).await {
        Ok(s) => Ok(ProbeStream(StreamInner::Tls(Box::new(s)))),
        Err(e) => {
            if seen.lock().map(|s| s.starts_with(b"HTTP/")).unwrap_or(false) {
                Err(TlsError::HttpResponse)
            } else {
                Err(TlsError::Other(format!("TLS handshake: {}", error_chain(&e))))
            }
        }
    }
}

/// Keeps the first bytes a server sends, to tell a plain HTTP answer from a TLS one.
pub(crate) struct Sniff<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
    full: bool,
}

const SNIFF_LEN: usize = 5;

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.full {
            if let Ok(mut seen) = this.seen.lock() {
                let new = &buf.filled()[before..];
                let take = new.len().min(SNIFF_LEN.saturating_sub(seen.len()));
                seen.extend_from_slice(&new[..take]);
                this.full = seen.len() >= SNIFF_LEN;
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use k8s_openapi::api::core::v1::HTTPHeader;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn target() -> Target {
        Target {
            pod_ip: Some("10.1.2.3".parse().unwrap()),
            ..Default::default()
        }
    }

    fn action(path: &str) -> HTTPGetAction {
        HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(8080),
            ..Default::default()
        }
    }

    #[test]
    fn default_headers_and_url() {
        let r = Request::new(&action("healthz?x=1"), &target(), "probe").unwrap();
        assert_eq!(r.url(), "http://10.1.2.3:8080/healthz?x=1");
        assert_eq!(r.headers[USER_AGENT], format!("kube-probe/{KUBE_VERSION}").as_str());
        assert_eq!(r.headers[ACCEPT], "*/*");
        assert!(r.host_header.is_none());
    }

    #[test]
    fn user_headers_override_defaults() {
        let mut a = action("/");
        a.http_headers = Some(vec![
            HTTPHeader {
                name: "user-agent".into(),
                value: "mine".into(),
            },
            HTTPHeader {
                name: "Accept".into(),
                value: "".into(),
            },
            HTTPHeader {
                name: "Host".into(),
                value: "example.test".into(),
            },
            HTTPHeader {
                name: "X-A".into(),
                value: "1".into(),
            },
            HTTPHeader {
                name: "X-A".into(),
                value: "2".into(),
            },
        ]);
        let r = Request::new(&a, &target(), "lifecycle").unwrap();
        assert_eq!(r.headers[USER_AGENT], "mine");
        assert!(r.headers.get(ACCEPT).is_none());
        assert_eq!(r.host_header.as_ref().unwrap(), "example.test");
        assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut a = action("/");
        a.scheme = Some("FTP".into());
        assert!(Request::new(&a, &target(), "probe").unwrap_err().contains("FTP"));
        let mut a = action("/");
        a.port = IntOrString::String("http".into());
        assert!(Request::new(&a, &target(), "probe").unwrap_err().contains("\"http\""));
        let mut a = action("/");
        a.http_headers = Some(vec![HTTPHeader {
            name: "bad name".into(),
            value: "x".into(),
        }]);
        assert!(Request::new(&a, &target(), "probe").is_err());
        assert!(Request::new(&action("/"), &Target::default(), "probe")
            .unwrap_err()
            .contains("no IP"));
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/a b#frag"), "/a%20b");
        assert_eq!(normalize_path("/x?y=\"z\""), "/x?y=%22z%22");
    }

    #[test]
    fn redirects_resolve_like_urls() {
        let r = Request::new(&action("/a/b?q=1"), &target(), "probe").unwrap();
        assert_eq!(r.redirect("/c").unwrap().url(), "http://10.1.2.3:8080/c");
        assert_eq!(r.redirect("d").unwrap().url(), "http://10.1.2.3:8080/a/d");
        assert_eq!(r.redirect("?z=2").unwrap().url(), "http://10.1.2.3:8080/a/b?z=2");
        assert_eq!(
            r.redirect("https://10.1.2.3/x").unwrap().url(),
            "https://10.1.2.3:443/x"
        );
        assert_eq!(r.redirect("//other:81/y").unwrap().url(), "http://other:81/y");
        assert_eq!(r.redirect("http://[fd00::1]:9/").unwrap().url(), "http://[fd00::1]:9/");
        assert!(r.redirect("ftp://h/").is_err());
    }
}
