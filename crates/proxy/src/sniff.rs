//! HTTP/1 framing guard.
//!
//! hyper resolves ambiguous framing silently (it drops `Content-Length` when
//! `Transfer-Encoding` is present and folds identical duplicate lengths). A proxy
//! must instead *refuse* such requests (SPEC §8): a peer behind us may resolve the
//! ambiguity differently, which is how request smuggling works. This adapter reads
//! the raw bytes hyper reads, tracks message boundaries with an independent parser,
//! and queues one verdict per request head. The request pipeline pops the verdict
//! for each request before doing anything else; an ambiguous request gets 400 and
//! the connection is closed.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the guard concluded about one request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Ambiguous(&'static str),
}

/// Shared between the IO adapter and the request service of one connection.
#[derive(Default)]
pub struct Verdicts {
    queue: Mutex<VecDeque<Verdict>>,
}

impl Verdicts {
    /// The verdict for the next request; none queued means the guard could not
    /// follow the stream, which is refused too (fail closed).
    pub fn next(&self) -> Verdict {
        self.queue
            .lock()
            .pop_front()
            .unwrap_or(Verdict::Ambiguous("request framing could not be verified"))
    }
    fn push(&self, v: Verdict) {
        self.queue.lock().push_back(v);
    }
}

const MAX_HEAD: usize = 64 * 1024;

enum State {
    Head,
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize {
        line: Vec<u8>,
    },
    ChunkData(u64),
    /// CRLF after chunk data: bytes still to skip.
    ChunkCrlf(u8),
    /// Trailer section after the last chunk; `line_len` of the current line.
    Trailers {
        line_len: usize,
        prev_lf: bool,
    },
    /// Stream can no longer be followed (after an ambiguity or an upgrade): stop.
    Stopped,
}

pub struct Tracker {
    state: State,
    head: Vec<u8>,
    verdicts: Arc<Verdicts>,
}

impl Tracker {
    pub fn new(verdicts: Arc<Verdicts>) -> Tracker {
        Tracker {
            state: State::Head,
            head: Vec::new(),
            verdicts,
        }
    }

    /// Feed bytes read from the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Stopped => return,
                State::Head => {
                    // Skip leading CRLFs between messages (RFC 9112 §2.2).
                    if self.head.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let before = self.head.len();
                    self.head.extend_from_slice(data);
                    match find_head_end(&self.head) {
                        Some(end) => {
                            let consumed = end - before;
                            let head = std::mem::take(&mut self.head);
                            self.on_head(&head[..end]);
                            data = &data[consumed..];
                        }
                        None => {
                            if self.head.len() > MAX_HEAD {
                                // hyper refuses oversize heads itself.
                                self.state = State::Stopped;
                            }
                            return;
                        }
                    }
                }
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkSize { line } => {
                    if let Some(pos) = data.iter().position(|b| *b == b'\n') {
                        line.extend_from_slice(&data[..pos]);
                        data = &data[pos + 1..];
                        let size = parse_chunk_size(line);
                        match size {
                            Some(0) => {
                                self.state = State::Trailers {
                                    line_len: 0,
                                    prev_lf: true,
                                }
                            }
                            Some(n) => self.state = State::ChunkData(n),
                            None => self.state = State::Stopped,
                        }
                    } else {
                        line.extend_from_slice(data);
                        if line.len() > 4096 {
                            self.state = State::Stopped;
                        }
                        return;
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkCrlf(2);
                    }
                }
                State::ChunkCrlf(k) => {
                    // Accept "\r\n" or a bare "\n".
                    let b = data[0];
                    data = &data[1..];
                    if b == b'\n' {
                        self.state = State::ChunkSize { line: Vec::new() };
                    } else {
                        *k -= 1;
                        if *k == 0 {
                            self.state = State::ChunkSize { line: Vec::new() };
                        }
                    }
                }
                State::Trailers { line_len, prev_lf } => {
                    let b = data[0];
                    data = &data[1..];
                    if b == b'\n' {
                        if *line_len == 0 && *prev_lf {
                            self.state = State::Head;
                        } else {
                            *line_len = 0;
                            *prev_lf = true;
                        }
                    } else if b != b'\r' {
                        *line_len += 1;
                        *prev_lf = false;
                    }
                }
            }
        }
    }

    fn on_head(&mut self, head: &[u8]) {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = matches!(req.parse(head), Ok(httparse::Status::Complete(_)));
        if !parsed {
            // hyper will refuse it too; nothing after it can be trusted.
            self.verdicts
                .push(Verdict::Ambiguous("malformed request head"));
            self.state = State::Stopped;
            return;
        }
        let mut cl: Vec<&[u8]> = Vec::new();
        let mut te: Vec<&[u8]> = Vec::new();
        let mut hosts = 0;
        let mut upgrade = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl.push(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te.push(h.value);
            } else if h.name.eq_ignore_ascii_case("host") {
                hosts += 1;
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let verdict = if !cl.is_empty() && !te.is_empty() {
            Verdict::Ambiguous("both Content-Length and Transfer-Encoding are present")
        } else if cl.len() > 1 {
            Verdict::Ambiguous("duplicate Content-Length")
        } else if te.len() > 1 {
            Verdict::Ambiguous("duplicate Transfer-Encoding")
        } else if hosts > 1 {
            Verdict::Ambiguous("duplicate Host")
        } else if te.len() == 1 && !te[0].eq_ignore_ascii_case(b"chunked") {
            Verdict::Ambiguous("Transfer-Encoding other than a single 'chunked'")
        } else if cl.len() == 1 && !cl[0].iter().all(u8::is_ascii_digit)
            || cl.first().is_some_and(|v| v.is_empty())
        {
            Verdict::Ambiguous("invalid Content-Length")
        } else {
            Verdict::Ok
        };
        let ok = verdict == Verdict::Ok;
        self.verdicts.push(verdict);
        if !ok || upgrade || req.method == Some("CONNECT") {
            // The connection will be closed or switch protocols: stop following it.
            self.state = State::Stopped;
            return;
        }
        self.state = if te.len() == 1 {
            State::ChunkSize { line: Vec::new() }
        } else if let Some(v) = cl.first() {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Stopped,
            }
        } else {
            State::Head
        };
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    // "\r\n\r\n" or "\n\n" (httparse accepts bare LF).
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex_part = line.split(|b| *b == b';').next().unwrap_or(&[]);
    let s = std::str::from_utf8(hex_part).ok()?.trim();
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

pin_project_lite::pin_project! {
    /// An IO wrapper that feeds everything read to a [`Tracker`].
    pub struct Sniffed<S> {
        #[pin]
        inner: S,
        tracker: Tracker,
    }
}

impl<S> Sniffed<S> {
    pub fn new(inner: S, verdicts: Arc<Verdicts>) -> Self {
        Sniffed {
            inner,
            tracker: Tracker::new(verdicts),
        }
    }
}

impl<S: AsyncRead> AsyncRead for Sniffed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            this.tracker.feed(&buf.filled()[before..]);
        }
        res
    }
}

impl<S: AsyncWrite> AsyncWrite for Sniffed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts_for(stream: &[u8], split: usize) -> Vec<Verdict> {
        let v = Arc::new(Verdicts::default());
        let mut t = Tracker::new(v.clone());
        let (a, b) = stream.split_at(split.min(stream.len()));
        t.feed(a);
        t.feed(b);
        let mut out = Vec::new();
        while let Some(x) = v.queue.lock().pop_front() {
            out.push(x);
        }
        out
    }

    #[test]
    fn follows_pipelined_messages_at_every_split() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..stream.len() {
            assert_eq!(
                verdicts_for(stream, split),
                vec![Verdict::Ok, Verdict::Ok, Verdict::Ok],
                "split {split}"
            );
        }
    }

    #[test]
    fn flags_smuggling_shapes() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
        ];
        for c in cases {
            let v = verdicts_for(c, 7);
            assert!(
                matches!(v.as_slice(), [Verdict::Ambiguous(_)]),
                "{:?} -> {v:?}",
                String::from_utf8_lossy(c)
            );
        }
    }
}
