//! SPDY/3.1 framing, as the Kubernetes streaming protocols use it (the Go
//! `spdystream` package on the other side): control and data frames, and
//! header blocks compressed with one zlib stream per direction, seeded with
//! the SPDY/3 dictionary and sync-flushed after every block.
//!
//! Used by the streaming server and, for tests, by a client.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hyper::body::Bytes;
use std::sync::OnceLock;

pub const VERSION: u16 = 3;
/// The `Upgrade` header value of a SPDY/3.1 connection.
pub const UPGRADE: &str = "SPDY/3.1";

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

/// FIN: the sender's half of the stream ends with this frame.
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// Largest control frame accepted (header blocks are small).
const MAX_CONTROL: usize = 1 << 20;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1):
/// length-prefixed header names and values, then common value fragments.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding", "accept-language",
            "accept-ranges", "age", "allow", "authorization", "cache-control", "connection", "content-base", "content-encoding",
            "content-language", "content-length", "content-location", "content-md5", "content-range", "content-type", "date", "etag",
            "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
            "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
            "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
            "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
            "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Header names and values of a stream; names are lower-case on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header; the name is lower-cased as SPDY requires.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream { id: u32, associated: u32, priority: u8, flags: u8, headers: Headers },
    SynReply { id: u32, flags: u8, headers: Headers },
    RstStream { id: u32, status: u32 },
    Settings { flags: u8, entries: Vec<(u8, u32, u32)> },
    Ping { id: u32 },
    GoAway { last_good: u32, status: u32 },
    Headers { id: u32, flags: u8, headers: Headers },
    WindowUpdate { id: u32, delta: u32 },
    Data { id: u32, flags: u8, data: Bytes },
    /// A control frame of a type this side does not know: ignored.
    Unknown { kind: u16 },
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY: unsupported version {0}")]
    Version(u16),
    #[error("SPDY: control frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("SPDY: malformed {0} frame")]
    Malformed(&'static str),
    #[error("SPDY: header block: {0}")]
    Compression(String),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes frames; owns the sending direction's header compressor.
pub struct Encoder {
    z: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).expect("a fresh zlib stream takes a dictionary");
        Self { z }
    }

    fn header_block(&mut self, h: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(h.0.len() as u32).to_be_bytes());
        for (k, v) in &h.0 {
            let k = k.to_ascii_lowercase();
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.z.total_in();
            self.z.compress_vec(input, &mut out, FlushCompress::Sync).map_err(|e| SpdyError::Compression(e.to_string()))?;
            input = &input[(self.z.total_in() - before) as usize..];
            // Done once the input is used up and the flush fitted.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Appends the wire form of `f` to `out`.
    pub fn encode(&mut self, f: &Frame, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]| {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&((flags as u32) << 24 | body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
        };
        match f {
            Frame::SynStream { id, associated, priority, flags, headers } => {
                let mut body = Vec::new();
                body.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 7) << 5);
                body.push(0);
                body.extend(self.header_block(headers)?);
                control(out, TYPE_SYN_STREAM, *flags, &body);
            }
            Frame::SynReply { id, flags, headers } | Frame::Headers { id, flags, headers } => {
                let kind = if matches!(f, Frame::SynReply { .. }) { TYPE_SYN_REPLY } else { TYPE_HEADERS };
                let mut body = (id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend(self.header_block(headers)?);
                control(out, kind, *flags, &body);
            }
            Frame::RstStream { id, status } => control(out, TYPE_RST_STREAM, 0, &[id.to_be_bytes(), status.to_be_bytes()].concat()),
            Frame::Settings { flags, entries } => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, id, v) in entries {
                    body.extend_from_slice(&((*f as u32) << 24 | (id & 0xff_ffff)).to_be_bytes());
                    body.extend_from_slice(&v.to_be_bytes());
                }
                control(out, TYPE_SETTINGS, *flags, &body);
            }
            Frame::Ping { id } => control(out, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => control(out, TYPE_GOAWAY, 0, &[last_good.to_be_bytes(), status.to_be_bytes()].concat()),
            Frame::WindowUpdate { id, delta } => control(out, TYPE_WINDOW_UPDATE, 0, &[id.to_be_bytes(), delta.to_be_bytes()].concat()),
            Frame::Data { id, flags, data } => {
                // One frame carries at most 2^24-1 bytes.
                let mut chunks = data.chunks(0xff_ffff).peekable();
                if chunks.peek().is_none() {
                    out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                    out.extend_from_slice(&((*flags as u32) << 24).to_be_bytes());
                }
                while let Some(c) = chunks.next() {
                    let fl = if chunks.peek().is_none() { *flags } else { 0 };
                    out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                    out.extend_from_slice(&((fl as u32) << 24 | c.len() as u32).to_be_bytes());
                    out.extend_from_slice(c);
                }
            }
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }
}

/// Reads frames; owns the receiving direction's header decompressor.
pub struct Decoder {
    z: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self { z: Decompress::new(true) }
    }

    fn header_block(&mut self, mut input: &[u8]) -> Result<Headers, SpdyError> {
        let err = |m: &str| SpdyError::Compression(m.to_string());
        let mut raw = Vec::with_capacity(input.len() * 4 + 64);
        loop {
            raw.reserve(1024);
            let before = self.z.total_in();
            let r = self.z.decompress_vec(input, &mut raw, FlushDecompress::Sync);
            input = &input[(self.z.total_in() - before) as usize..];
            match r {
                Ok(Status::StreamEnd) => return Err(err("the zlib stream ended")),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(dictionary()).map_err(|e| SpdyError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            if raw.len() > MAX_HEADER_BLOCK {
                return Err(err("too large"));
            }
            if input.is_empty() && raw.len() < raw.capacity() {
                break;
            }
        }
        let mut p = &raw[..];
        let mut take = |n: usize| -> Result<&[u8], SpdyError> {
            if p.len() < n {
                return Err(err("truncated"));
            }
            let (a, b) = p.split_at(n);
            p = b;
            Ok(a)
        };
        let count = be32(take(4)?) as usize;
        let mut h = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let n = be32(take(4)?) as usize;
            let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
            let n = be32(take(4)?) as usize;
            let value = String::from_utf8_lossy(take(n)?).into_owned();
            // Several values of one name are NUL-separated.
            for v in value.split('\0') {
                h.push((name.clone(), v.to_string()));
            }
        }
        Ok(Headers(h))
    }

    /// Takes one complete frame off the front of `buf`, if there is one.
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let first = be32(&buf[0..4]);
        let flags = buf[4];
        let len = (be32(&buf[4..8]) & 0xff_ffff) as usize;
        let control = first & 0x8000_0000 != 0;
        if control && len > MAX_CONTROL {
            return Err(SpdyError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let body: Vec<u8> = buf.drain(..8 + len).skip(8).collect();
        if !control {
            return Ok(Some(Frame::Data { id: first & 0x7fff_ffff, flags, data: Bytes::from(body) }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let need = |n: usize, what: &'static str| if body.len() < n { Err(SpdyError::Malformed(what)) } else { Ok(()) };
        let f = match kind {
            TYPE_SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                Frame::SynStream {
                    id: be32(&body[0..4]) & 0x7fff_ffff,
                    associated: be32(&body[4..8]) & 0x7fff_ffff,
                    priority: body[8] >> 5,
                    flags,
                    headers: self.header_block(&body[10..])?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(4, "SYN_REPLY")?;
                let id = be32(&body[0..4]) & 0x7fff_ffff;
                let headers = self.header_block(&body[4..])?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply { id, flags, headers }
                } else {
                    Frame::Headers { id, flags, headers }
                }
            }
            TYPE_RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream { id: be32(&body[0..4]) & 0x7fff_ffff, status: be32(&body[4..8]) }
            }
            TYPE_SETTINGS => {
                need(4, "SETTINGS")?;
                let n = be32(&body[0..4]) as usize;
                need(4 + n.saturating_mul(8), "SETTINGS")?;
                let entries = (0..n)
                    .map(|i| {
                        let e = &body[4 + 8 * i..];
                        let fid = be32(e);
                        ((fid >> 24) as u8, fid & 0xff_ffff, be32(&e[4..]))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(4, "PING")?;
                Frame::Ping { id: be32(&body[0..4]) }
            }
            TYPE_GOAWAY => {
                need(4, "GOAWAY")?;
                Frame::GoAway { last_good: be32(&body[0..4]) & 0x7fff_ffff, status: if body.len() >= 8 { be32(&body[4..8]) } else { 0 } }
            }
            TYPE_WINDOW_UPDATE => {
                need(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate { id: be32(&body[0..4]) & 0x7fff_ffff, delta: be32(&body[4..8]) & 0x7fff_ffff }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib's dictionary id (Adler-32), as in the FDICT header of every
        // SPDY/3 peer's first header block.
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(b << 16 | a, 0xe3c6_a7c2);
    }

    #[test]
    fn reads_a_header_block_from_another_zlib() {
        // SYN_STREAM id 1 with `streamtype: error`, compressed by CPython's
        // zlib (level 9, the SPDY dictionary, Z_SYNC_FLUSH).
        let block = hex::decode("78f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff").unwrap();
        let mut wire = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, (10 + block.len()) as u8];
        wire.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        wire.extend_from_slice(&block);
        let mut d = Decoder::new();
        let f = d.decode(&mut wire).unwrap().unwrap();
        assert!(wire.is_empty());
        match f {
            Frame::SynStream { id: 1, headers, .. } => assert_eq!(headers.get("streamType"), Some("error")),
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn round_trips_frames() {
        let frames = vec![
            Frame::SynStream { id: 1, associated: 0, priority: 0, flags: 0, headers: Headers::new().with("streamType", "stdout").with("port", "80") },
            Frame::SynReply { id: 1, flags: 0, headers: Headers::new() },
            Frame::Data { id: 1, flags: 0, data: Bytes::from_static(b"hello") },
            Frame::Data { id: 1, flags: FLAG_FIN, data: Bytes::new() },
            Frame::SynStream { id: 3, associated: 0, priority: 0, flags: FLAG_FIN, headers: Headers::new().with("streamtype", "error").with("x", "a") },
            Frame::RstStream { id: 3, status: RST_CANCEL },
            Frame::Ping { id: 7 },
            Frame::Settings { flags: 0, entries: vec![(0, 7, 65536)] },
            Frame::WindowUpdate { id: 1, delta: 100 },
            Frame::GoAway { last_good: 3, status: 0 },
        ];
        let mut e = Encoder::new();
        let mut wire = Vec::new();
        for f in &frames {
            e.encode(f, &mut wire).unwrap();
        }
        let mut d = Decoder::new();
        // Byte by byte: partial frames wait for more.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut d = Decoder::new();
        let mut v2 = vec![0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1];
        assert!(matches!(d.decode(&mut v2), Err(SpdyError::Version(2))));
        let mut huge = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff];
        assert!(matches!(d.decode(&mut huge), Err(SpdyError::TooLarge(_))));
        let mut junk = vec![0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 1, 2, 3, 4];
        assert!(d.decode(&mut junk).is_err());
    }
}
