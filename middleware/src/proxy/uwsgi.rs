//! Upstreams that speak uwsgi (`uwsgi://HOST:PORT`, `uwsgi+unix:/PATH`):
//! uWSGI's `--socket`, reached as nginx's `uwsgi_pass` reaches it.
//!
//! The request goes out as hyper writes it, with its head turned into a
//! uwsgi packet on the way: the CGI variables of [`cgi`](super::cgi), with
//! `SCRIPT_NAME` the mount and `PATH_INFO` the path below it, decoded. The
//! body follows as it is (it has a length: the proxy reads a body of unknown
//! length whole first). The answer is raw HTTP, which hyper reads as any
//! response but for a `Transfer-Encoding` it names ([`Answer`]); the
//! connection carries one request and is never pooled.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use super::cgi;

/// The request head as a uwsgi packet; the body as it is.
pub(crate) struct Uwsgi;

impl cgi::Encode for Uwsgi {
    fn head(&mut self, request: &cgi::Request, body: &[u8]) -> io::Result<Vec<u8>> {
        let mut packet = packet(request)?;
        packet.extend_from_slice(body);
        Ok(packet)
    }

    fn body(&mut self, _: &[u8]) -> Option<(Vec<u8>, usize)> {
        None
    }
}

/// The answer as hyper reads it. A uwsgi app's answer runs to the close of
/// its connection (or to its `Content-Length`), as nginx's `uwsgi_pass` reads
/// it: a `Transfer-Encoding` the app names (a WSGI app may not, but uWSGI
/// passes what it is given) frames nothing, and is left out of the head.
#[derive(Default)]
pub(crate) struct Answer {
    /// The head while it is gathered.
    head: Vec<u8>,
    /// What hyper reads next, and how much of it it has.
    out: Vec<u8>,
    taken: usize,
    /// The head is out: the rest is read as it comes.
    passing: bool,
}

impl Answer {
    pub(crate) fn poll_read<R: hyper::rt::Read + ?Sized>(
        &mut self,
        mut io: Pin<&mut R>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if cgi::give(&self.out, &mut self.taken, &mut buf) {
                return Poll::Ready(Ok(()));
            }
            if self.passing {
                self.out = Vec::new();
                return io.poll_read(cx, buf);
            }
            let mut chunk = [0; 4096];
            let mut read = hyper::rt::ReadBuf::new(&mut chunk);
            ready!(io.as_mut().poll_read(cx, read.unfilled()))?;
            let closed = read.filled().is_empty();
            self.head.extend_from_slice(read.filled());
            // A head that never ends goes to hyper as it is, which refuses it.
            let end = cgi::blank_line(&self.head);
            if end.is_none() && !closed && self.head.len() <= cgi::MAX_HEAD {
                continue;
            }
            let head = std::mem::take(&mut self.head);
            self.out = match end {
                None => head,
                // A CGI head (`Status: 201 Created`), as uWSGI's CGI plugin
                // answers and nginx takes it.
                Some((at, blank)) if starts_with_a_field(&head) => {
                    [cgi::http_head(&head[..at]), head[at + blank..].to_vec()].concat()
                }
                Some((at, blank)) => without_transfer_encoding(&head[..at + blank])
                    .chain(head[at + blank..].iter().copied())
                    .collect(),
            };
            self.passing = true;
            if self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Whether a head's first line is a field (`Status: 201 Created`), not a
/// status line: the head is a CGI one.
fn starts_with_a_field(head: &[u8]) -> bool {
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let name = first.split(|b| *b == b':').next().unwrap_or_default();
    name.len() < first.len()
        && !name.is_empty()
        && (name.iter()).all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// The head's lines but those of a `Transfer-Encoding`.
fn without_transfer_encoding(head: &[u8]) -> impl Iterator<Item = u8> + '_ {
    head.split_inclusive(|b| *b == b'\n')
        .filter(|line| {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            !(line.contains(&b':') && name.eq_ignore_ascii_case(b"transfer-encoding"))
        })
        .flatten()
        .copied()
}

/// The uwsgi packet (modifier1 0, WSGI) for `request`.
fn packet(request: &cgi::Request) -> io::Result<Vec<u8>> {
    let too_large = || cgi::invalid("the request's variables pass the 64 KiB a uwsgi packet holds");
    let path_info = request.decoded_path();
    let vars = (request.vars.iter().map(|(n, v)| (n.as_str(), v.as_slice()))).chain([
        ("PATH_INFO", &path_info[..]),
        ("SCRIPT_NAME", &request.mount[..]),
    ]);
    let mut block = Vec::new();
    for (name, value) in vars {
        for item in [name.as_bytes(), value] {
            let len = u16::try_from(item.len()).map_err(|_| too_large())?;
            block.extend_from_slice(&len.to_le_bytes());
            block.extend_from_slice(item);
        }
    }
    let len = u16::try_from(block.len()).map_err(|_| too_large())?;
    let mut packet = vec![0];
    packet.extend_from_slice(&len.to_le_bytes());
    packet.push(0);
    packet.extend(block);
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_transfer_encoding_is_left_out_of_its_head() {
        let head =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Transfer-Encoding: a\r\n\r\n";
        assert_eq!(cgi::blank_line(head), Some((head.len() - 4, 4)));
        let left: Vec<u8> = without_transfer_encoding(head).collect();
        assert_eq!(
            String::from_utf8_lossy(&left),
            "HTTP/1.1 200 OK\r\nX-Transfer-Encoding: a\r\n\r\n"
        );
        assert_eq!(
            cgi::blank_line(b"HTTP/1.0 200 OK\nA: b\n\nbody"),
            Some((20, 2))
        );
        assert_eq!(cgi::blank_line(b"HTTP/1.0 200 OK\r\n"), None);
    }

    /// The variables of a packet, in order.
    fn vars(packet: &[u8]) -> Vec<(String, String)> {
        assert_eq!(packet[0], 0, "modifier1");
        let len = usize::from(u16::from_le_bytes([packet[1], packet[2]]));
        let mut block = &packet[4..];
        assert_eq!(block.len(), len);
        let mut vars = Vec::new();
        while !block.is_empty() {
            let mut item = || {
                let n = usize::from(u16::from_le_bytes([block[0], block[1]]));
                let item = String::from_utf8_lossy(&block[2..2 + n]).into_owned();
                block = &block[2 + n..];
                item
            };
            let name = item();
            vars.push((name, item()));
        }
        vars
    }

    #[test]
    fn the_packet_holds_the_mount_as_script_name_and_the_path_decoded() {
        let head = b"GET /v1/caf%C3%A9?q HTTP/1.1\r\nhost: h\r\nx-forwarded-prefix: /app\r\n\r\n";
        let vars = vars(&packet(&cgi::parse(head).unwrap()).unwrap());
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PATH_INFO"), Some("/v1/café"));
        assert_eq!(get("SCRIPT_NAME"), Some("/app"));
        assert_eq!(get("REQUEST_URI"), Some("/app/v1/caf%C3%A9?q"));
        assert_eq!(get("REQUEST_METHOD"), Some("GET"));
    }

    #[test]
    fn a_head_too_large_for_a_packet_is_refused() {
        let big = "a".repeat(40_000);
        let head = format!("GET / HTTP/1.1\r\nhost: h\r\nx-a: {big}\r\nx-b: {big}\r\n\r\n");
        let request = cgi::parse(head.as_bytes()).unwrap();
        assert!(packet(&request).is_err());
    }
}
