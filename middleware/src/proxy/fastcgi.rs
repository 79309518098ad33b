//! Upstreams that speak FastCGI (`fastcgi://HOST:PORT`,
//! `fastcgi+unix:/PATH`): PHP-FPM, flup, as nginx's `fastcgi_pass` reaches
//! them.
//!
//! On the way out, the request head hyper writes becomes a `BEGIN_REQUEST`
//! (the responder role) and `PARAMS` records holding the CGI variables of
//! [`cgi`](super::cgi) and those nginx's `fastcgi_params` adds: the script is
//! the path (`SCRIPT_NAME` the mount and the path, `SCRIPT_FILENAME` the
//! [root](super::Proxy::fastcgi_root) and the path, decoded), `DOCUMENT_ROOT`,
//! `DOCUMENT_URI`, `GATEWAY_INTERFACE`, `SERVER_SOFTWARE`, `REDIRECT_STATUS`,
//! and `REMOTE_USER`, empty.
//! The body follows in `STDIN` records, then an empty one. On the way in,
//! `STDOUT` records carry a CGI answer (`Status:`, headers, a blank line,
//! the body), which becomes the HTTP response hyper reads; `STDERR` goes to
//! the log; `END_REQUEST` ends the response. One request a connection.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use super::cgi;

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
/// The request id: one request a connection.
const ID: u16 = 1;
/// The most content a record holds.
const MAX_CONTENT: usize = 65_535;

/// A connection's FastCGI: what is written, and what is read.
pub(crate) struct FastCgi {
    writer: cgi::Writer<Records>,
    reading: Reading,
}

/// The request as records: `BEGIN_REQUEST`, `PARAMS`, then the body in
/// `STDIN` records, ended by an empty one.
struct Records {
    root: Option<Arc<Path>>,
    /// Body bytes still to come.
    left: u64,
}

impl cgi::Encode for Records {
    fn head(&mut self, request: &cgi::Request, body: &[u8]) -> io::Result<Vec<u8>> {
        let mut records = begin(request, self.root.as_deref());
        self.left = stdin(&mut records, body, request.content_length);
        Ok(records)
    }

    fn body(&mut self, buf: &[u8]) -> Option<(Vec<u8>, usize)> {
        // Past the body's length, nothing more belongs to the request.
        let n = match self.left {
            0 => return Some((Vec::new(), buf.len())),
            _ => buf.len().min(MAX_CONTENT),
        };
        let mut records = Vec::new();
        self.left = stdin(&mut records, &buf[..n], self.left);
        Some((records, n))
    }
}

#[derive(Default)]
struct Reading {
    /// Bytes from the socket not yet made records of.
    raw: Vec<u8>,
    /// The CGI answer's head, until it is whole.
    head: Vec<u8>,
    head_done: bool,
    /// What hyper reads next, and how much of it it has.
    out: Vec<u8>,
    taken: usize,
    ended: bool,
}

impl FastCgi {
    pub(crate) fn new(root: Option<Arc<Path>>) -> Self {
        Self {
            writer: cgi::Writer::new(Records { root, left: 0 }),
            reading: Reading::default(),
        }
    }

    pub(crate) fn poll_write<W: hyper::rt::Write + ?Sized>(
        &mut self,
        io: Pin<&mut W>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.poll_write(io, cx, buf)
    }

    pub(crate) fn poll_flush<W: hyper::rt::Write + ?Sized>(
        &mut self,
        io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.writer.poll_flush(io, cx)
    }

    /// Reads the response as HTTP: the CGI head made a status line and
    /// headers, then the body, ended by `END_REQUEST`.
    pub(crate) fn poll_read<R: hyper::rt::Read + ?Sized>(
        &mut self,
        mut io: Pin<&mut R>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let reading = &mut self.reading;
        loop {
            if cgi::give(&reading.out, &mut reading.taken, &mut buf) {
                return Poll::Ready(Ok(()));
            }
            reading.out.clear();
            reading.taken = 0;
            if reading.ended {
                return Poll::Ready(Ok(()));
            }
            if reading.records()? {
                continue;
            }
            let mut chunk = [0; 16 * 1024];
            let mut read = hyper::rt::ReadBuf::new(&mut chunk);
            ready!(io.as_mut().poll_read(cx, read.unfilled()))?;
            if read.filled().is_empty() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the FastCGI upstream closed before END_REQUEST",
                )));
            }
            reading.raw.extend_from_slice(read.filled());
        }
    }
}

impl Reading {
    /// Takes the whole records in `raw`; true when that gave hyper something
    /// to read, or ended the response.
    fn records(&mut self) -> io::Result<bool> {
        let mut at = 0;
        while let Some(header) = self.raw.get(at..at + 8) {
            let kind = header[1];
            let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
            let end = at + 8 + len + usize::from(header[6]);
            if self.raw.len() < end {
                break;
            }
            let content = self.raw[at + 8..at + 8 + len].to_vec();
            at = end;
            match kind {
                STDOUT if self.head_done => self.out.extend_from_slice(&content),
                STDOUT => self.head_in(&content)?,
                STDERR => {
                    let text = String::from_utf8_lossy(&content);
                    tracing::warn!("FastCGI upstream: {}", text.trim_end());
                }
                END_REQUEST => {
                    if !self.head_done {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the FastCGI upstream ended without a response head",
                        ));
                    }
                    self.ended = true;
                    break;
                }
                _ => {}
            }
        }
        self.raw.drain(..at);
        Ok(!self.out.is_empty() || self.ended)
    }

    /// Gathers the CGI head; once whole, it goes out as HTTP, with what
    /// follows it.
    fn head_in(&mut self, content: &[u8]) -> io::Result<()> {
        self.head.extend_from_slice(content);
        let Some((at, blank)) = cgi::blank_line(&self.head) else {
            if self.head.len() > cgi::MAX_HEAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the FastCGI upstream's head passes 64 KiB",
                ));
            }
            return Ok(());
        };
        let body = self.head.split_off(at + blank);
        self.out.extend(cgi::http_head(&self.head[..at]));
        self.out.extend(body);
        self.head_done = true;
        Ok(())
    }
}

fn record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    let len = u16::try_from(content.len()).expect("content is cut to 65535 bytes");
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&ID.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(content);
}

/// `BEGIN_REQUEST` and the `PARAMS` records (and their empty end) for `request`.
fn begin(request: &cgi::Request, root: Option<&Path>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = RESPONDER.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 6]); // flags 0: the connection closes after the request
    record(&mut out, BEGIN_REQUEST, &body);
    let path = request.decoded_path();
    let script_name = [&request.mount[..], &path].concat();
    let root = root.map(|r| r.as_os_str().as_encoded_bytes().to_vec());
    let filename = [root.as_deref().unwrap_or_default(), &path[..]].concat();
    // nginx's `$remote_user` is the name in a Basic `Authorization` header,
    // checked or not; an app is told only one `BasicAuth` checked.
    let told = (request.vars.iter()).any(|(name, _)| name == "REMOTE_USER");
    let params = (request
        .vars
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_slice())))
    .chain([
        (&b"SCRIPT_NAME"[..], &script_name[..]),
        (b"SCRIPT_FILENAME", &filename),
        (b"DOCUMENT_URI", &script_name),
        (b"DOCUMENT_ROOT", root.as_deref().unwrap_or_default()),
        (b"GATEWAY_INTERFACE", b"CGI/1.1"),
        (b"SERVER_SOFTWARE", b"stackway"),
        // PHP's cgi.force_redirect: the request came through the server.
        (b"REDIRECT_STATUS", b"200"),
    ])
    .chain((!told).then_some((&b"REMOTE_USER"[..], &b""[..])));
    let mut pairs = Vec::new();
    for (name, value) in params {
        for len in [name.len(), value.len()] {
            match u8::try_from(len) {
                Ok(len) if len < 128 => pairs.push(len),
                _ => pairs
                    .extend_from_slice(&(u32::try_from(len).unwrap_or(0) | 1 << 31).to_be_bytes()),
            }
        }
        pairs.extend_from_slice(name);
        pairs.extend_from_slice(value);
    }
    for chunk in pairs.chunks(MAX_CONTENT) {
        record(&mut out, PARAMS, chunk);
    }
    record(&mut out, PARAMS, &[]);
    out
}

/// `STDIN` records for `body`, of a body with `left` bytes still to come,
/// and the empty one that ends it once none are; what is left after.
fn stdin(out: &mut Vec<u8>, body: &[u8], left: u64) -> u64 {
    let take = usize::try_from(left).map_or(body.len(), |left| body.len().min(left));
    for chunk in body[..take].chunks(MAX_CONTENT) {
        record(out, STDIN, chunk);
    }
    let left = left - take as u64;
    if left == 0 {
        record(out, STDIN, &[]);
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `bytes`: (kind, content).
    fn records(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut all = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], VERSION);
            assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]), ID);
            let len = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
            all.push((bytes[1], bytes[8..8 + len].to_vec()));
            bytes = &bytes[8 + len + usize::from(bytes[6])..];
        }
        all
    }

    /// The name-value pairs of PARAMS content.
    fn pairs(mut content: &[u8]) -> Vec<(String, String)> {
        let len = |content: &mut &[u8]| {
            if content[0] < 128 {
                let n = usize::from(content[0]);
                *content = &content[1..];
                n
            } else {
                let n = u32::from_be_bytes([content[0] & 0x7f, content[1], content[2], content[3]]);
                *content = &content[4..];
                n as usize
            }
        };
        let mut all = Vec::new();
        while !content.is_empty() {
            let (n, v) = (len(&mut content), len(&mut content));
            let name = String::from_utf8_lossy(&content[..n]).into_owned();
            let value = String::from_utf8_lossy(&content[n..n + v]).into_owned();
            content = &content[n + v..];
            all.push((name, value));
        }
        all
    }

    #[test]
    fn a_request_becomes_begin_params_and_stdin_as_nginx_sends_them() {
        let head = b"POST /blog/index.php?p=1 HTTP/1.1\r\nhost: h\r\nx-forwarded-prefix: /php\r\n\
            content-length: 3\r\ncontent-type: text/plain\r\nx-long: "
            .to_vec();
        let head = [head, vec![b'l'; 300], b"\r\n\r\n".to_vec()].concat();
        let request = cgi::parse(&head).unwrap();
        let mut out = begin(&request, Some(Path::new("/srv/www")));
        assert_eq!(
            stdin(&mut out, b"abcdef", 3),
            0,
            "only the body's length is taken"
        );
        let records = records(&out);
        assert_eq!(records[0], (BEGIN_REQUEST, vec![0, 1, 0, 0, 0, 0, 0, 0]));
        let params: Vec<u8> = (records.iter())
            .filter(|(kind, _)| *kind == PARAMS)
            .flat_map(|(_, content)| content.clone())
            .collect();
        let params = pairs(&params);
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("SCRIPT_FILENAME"), Some("/srv/www/blog/index.php"));
        assert_eq!(get("SCRIPT_NAME"), Some("/php/blog/index.php"));
        assert_eq!(get("DOCUMENT_ROOT"), Some("/srv/www"));
        assert_eq!(get("REQUEST_URI"), Some("/php/blog/index.php?p=1"));
        assert_eq!(get("QUERY_STRING"), Some("p=1"));
        assert_eq!(get("CONTENT_LENGTH"), Some("3"));
        assert_eq!(get("REDIRECT_STATUS"), Some("200"));
        assert_eq!(get("REMOTE_USER"), Some(""));
        assert_eq!(
            get("HTTP_X_LONG").map(str::len),
            Some(300),
            "a 4-byte length"
        );
        let tail: Vec<_> = records.iter().rev().take(3).rev().cloned().collect();
        assert_eq!(
            tail,
            [(PARAMS, vec![]), (STDIN, b"abc".to_vec()), (STDIN, vec![])]
        );
    }

    #[test]
    fn stdout_records_are_read_as_a_response_until_end_request() {
        let mut raw = Vec::new();
        record(
            &mut raw,
            STDOUT,
            b"Status: 200 OK\r\nX-Powered-By: PHP\r\n\r",
        );
        record(&mut raw, STDERR, b"a notice");
        record(&mut raw, STDOUT, b"\nhello ");
        record(&mut raw, STDOUT, b"world");
        record(&mut raw, END_REQUEST, &[0; 8]);
        let mut reading = Reading {
            raw,
            ..Reading::default()
        };
        assert!(reading.records().unwrap());
        assert!(reading.ended);
        assert_eq!(
            String::from_utf8_lossy(&reading.out),
            "HTTP/1.1 200 OK\r\nX-Powered-By: PHP\r\n\r\nhello world"
        );
        let mut headless = Reading::default();
        record(&mut headless.raw, END_REQUEST, &[0; 8]);
        assert!(headless.records().is_err());
    }
}
