//! Container logs in the Kubernetes CRI format:
//! `<RFC 3339 nanosecond time> <stdout|stderr> <P|F> <content>\n`.
//! Lines longer than the line limit are split into partial (`P`) records
//! ending with one full (`F`) record, as containerd does.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Longest content in one record before a line is split (containerd's default).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends CRI log records to a file; reopens it on request (log rotation).
pub struct LogWriter {
    path: PathBuf,
    file: File,
    max_line: usize,
    pending: [Vec<u8>; 2],
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogWriter {
    pub fn open(path: &Path, max_line: usize) -> io::Result<Self> {
        Ok(Self { path: path.into(), file: open_append(path)?, max_line: max_line.max(1), pending: [Vec::new(), Vec::new()] })
    }

    /// Reopens the log path (after the kubelet rotated the file).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        Ok(())
    }

    fn record(&mut self, stream: Stream, tag: char, content: &[u8]) -> io::Result<()> {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut rec = Vec::with_capacity(content.len() + 48);
        rec.extend_from_slice(ts.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_str().as_bytes());
        rec.push(b' ');
        rec.push(tag as u8);
        rec.push(b' ');
        rec.extend_from_slice(content);
        rec.push(b'\n');
        // One write per record so concurrent readers never see half a record.
        self.file.write_all(&rec)
    }

    /// Writes what a stream produced; whole lines become records at once,
    /// the rest waits for its newline (or the line limit).
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let i = stream as usize;
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let mut line = std::mem::take(&mut self.pending[i]);
                    line.extend_from_slice(&data[..nl]);
                    self.emit(stream, line, true)?;
                    data = &data[nl + 1..];
                }
                None => {
                    self.pending[i].extend_from_slice(data);
                    data = &[];
                    if self.pending[i].len() >= self.max_line {
                        let line = std::mem::take(&mut self.pending[i]);
                        let keep = line.len() % self.max_line;
                        let (full, rest) = line.split_at(line.len() - keep);
                        for chunk in full.chunks(self.max_line) {
                            self.record(stream, 'P', chunk)?;
                        }
                        self.pending[i] = rest.to_vec();
                    }
                }
            }
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream, line: Vec<u8>, complete: bool) -> io::Result<()> {
        let mut chunks = line.chunks(self.max_line).peekable();
        if chunks.peek().is_none() {
            return self.record(stream, if complete { 'F' } else { 'P' }, &[]);
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            self.record(stream, if last && complete { 'F' } else { 'P' }, c)?;
        }
        Ok(())
    }

    /// Writes out what is left of a stream when it closes.
    pub fn close_stream(&mut self, stream: Stream) -> io::Result<()> {
        let line = std::mem::take(&mut self.pending[stream as usize]);
        if !line.is_empty() {
            self.emit(stream, line, true)?;
        }
        Ok(())
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: String,
    pub stream: Stream,
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Parses one record line (without its newline).
pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or_default().to_vec();
    chrono::DateTime::parse_from_rfc3339(&time).ok()?;
    Some(Record { time, stream, partial, content })
}

/// Joins partial records back into lines: `(stream, line)` pairs.
pub fn read_lines(text: &[u8]) -> Vec<(Stream, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(r) = parse_record(line) else { continue };
        let buf = &mut pending[r.stream as usize];
        buf.extend_from_slice(&r.content);
        if !r.partial {
            out.push((r.stream, std::mem::take(buf)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<Record> {
        std::fs::read(path).unwrap().split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| parse_record(l).expect("valid record")).collect()
    }

    #[test]
    fn full_and_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut w = LogWriter::open(&p, 8).unwrap();
        w.write(Stream::Stdout, b"hello\nwor").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"ld\n\n0123456789abcdefXY").unwrap();
        w.close_stream(Stream::Stdout).unwrap();
        let r = records(&p);
        let got: Vec<(Stream, bool, &[u8])> = r.iter().map(|r| (r.stream, r.partial, r.content.as_slice())).collect();
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, false, &b"hello"[..]),
                (Stream::Stderr, false, b"oops"),
                (Stream::Stdout, false, b"world"),
                (Stream::Stdout, false, b""),
                (Stream::Stdout, true, b"01234567"),
                (Stream::Stdout, true, b"89abcdef"),
                (Stream::Stdout, false, b"XY"),
            ]
        );
        assert!(r[0].time.ends_with('Z') && r[0].time.len() == "2016-10-06T00:17:09.669794202Z".len());
        let lines = read_lines(&std::fs::read(&p).unwrap());
        assert_eq!(lines.last().unwrap(), &(Stream::Stdout, b"0123456789abcdefXY".to_vec()));
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut w = LogWriter::open(&p, DEFAULT_MAX_LINE).unwrap();
        w.write(Stream::Stdout, b"one\n").unwrap();
        std::fs::rename(&p, dir.path().join("0.log.1")).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"two\n").unwrap();
        assert_eq!(read_lines(&std::fs::read(&p).unwrap()), vec![(Stream::Stdout, b"two".to_vec())]);
        assert!(parse_record(b"bogus line").is_none());
    }
}
