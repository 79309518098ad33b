//! Upstreams that speak uwsgi (`uwsgi://HOST:PORT`, `uwsgi+unix:/PATH`):
//! uWSGI's `--socket`, reached as nginx's `uwsgi_pass` reaches it.
//!
//! The request goes out as hyper writes it, with its head turned into a
//! uwsgi packet on the way: CGI variables as nginx's `uwsgi_params` sets
//! them, from the head and from the `X-Forwarded-*` headers the proxy has
//! just set. The body follows as it is (it has a length: the proxy reads a
//! body of unknown length whole first). The answer is raw HTTP, which hyper
//! reads as any response; the connection carries one request and is never
//! pooled.
//!
//! | variable | from |
//! |---|---|
//! | `REQUEST_METHOD`, `QUERY_STRING`, `SERVER_PROTOCOL` | the request line |
//! | `PATH_INFO` | the path, percent-decoded (below the mount, with the upstream's base) |
//! | `SCRIPT_NAME` | `X-Forwarded-Prefix`: the mount, which the app builds its URLs under |
//! | `REQUEST_URI` | `SCRIPT_NAME` followed by the path and query, raw: what the client asked for |
//! | `REMOTE_ADDR` | the last `X-Forwarded-For`: the client this server saw |
//! | `REQUEST_SCHEME`, `HTTPS` | `X-Forwarded-Proto` |
//! | `HTTP_HOST`, `SERVER_NAME`, `SERVER_PORT` | `X-Forwarded-Host` (else `Host`), `X-Forwarded-Port` |
//! | `CONTENT_TYPE`, `CONTENT_LENGTH`, `HTTP_*` | the headers (repeated ones joined with `, `) |

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use percent_encoding::percent_decode;

/// The longest request head taken (uwsgi's variables fit in 64 KiB).
const MAX_HEAD: usize = 64 * 1024;

/// What is written next: the head, gathered until it is whole; then the
/// packet made of it (and any body bytes written with the head); then the
/// body, as it comes.
pub(crate) enum Uwsgi {
    Head(Vec<u8>),
    Packet(Vec<u8>, usize),
    Body,
}

impl Uwsgi {
    pub(crate) fn new() -> Self {
        Self::Head(Vec::new())
    }

    /// Writes `buf` through to `io`, the head turned into a packet.
    pub(crate) fn poll_write<W: hyper::rt::Write + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self {
                Self::Head(head) => {
                    head.extend_from_slice(buf);
                    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let body = head.split_off(end + 4);
                        let mut packet = packet(head)?;
                        packet.extend_from_slice(&body);
                        *self = Self::Packet(packet, 0);
                    } else if head.len() > MAX_HEAD {
                        return Poll::Ready(Err(too_large()));
                    }
                    return Poll::Ready(Ok(buf.len()));
                }
                Self::Packet(..) => ready!(self.poll_packet(io.as_mut(), cx))?,
                Self::Body => return io.poll_write(cx, buf),
            }
        }
    }

    /// Flushes, the packet first.
    pub(crate) fn poll_flush<W: hyper::rt::Write + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_packet(io.as_mut(), cx))?;
        io.poll_flush(cx)
    }

    /// Writes what is left of the packet, if any.
    fn poll_packet<W: hyper::rt::Write + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if let Self::Packet(packet, sent) = self {
            while *sent < packet.len() {
                match ready!(io.as_mut().poll_write(cx, &packet[*sent..]))? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    n => *sent += n,
                }
            }
            *self = Self::Body;
        }
        Poll::Ready(Ok(()))
    }
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the request's variables pass the 64 KiB a uwsgi packet holds",
    )
}

/// The uwsgi packet (modifier1 0, WSGI) for an HTTP/1.1 request head.
fn packet(head: &[u8]) -> io::Result<Vec<u8>> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(invalid("the request head does not parse")),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(invalid("the request head has no request line"));
    };
    let header = |name: &str| {
        let mut values = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value);
        values.next()
    };
    if header("transfer-encoding").is_some() {
        return Err(invalid("a uwsgi upstream needs the body's length"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let prefix = header("x-forwarded-prefix").unwrap_or_default();
    let https = header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case(b"https"));
    let host = header("x-forwarded-host").or_else(|| header("host"));
    let mut vars = Vars::default();
    vars.add("REQUEST_METHOD", method.as_bytes());
    vars.add("REQUEST_URI", &[prefix, target.as_bytes()].concat());
    vars.add(
        "PATH_INFO",
        &percent_decode(path.as_bytes()).collect::<Vec<u8>>(),
    );
    vars.add("QUERY_STRING", query.as_bytes());
    vars.add("SCRIPT_NAME", prefix);
    vars.add("SERVER_PROTOCOL", b"HTTP/1.1");
    vars.add("REQUEST_SCHEME", if https { b"https" } else { b"http" });
    if https {
        vars.add("HTTPS", b"on");
    }
    if let Some(client) = header("x-forwarded-for").and_then(|f| f.rsplit(|b| *b == b',').next()) {
        vars.add("REMOTE_ADDR", client.trim_ascii());
    }
    if let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => (name, Some(port)),
            _ => (host, None),
        };
        vars.add("SERVER_NAME", name.as_bytes());
        let port = header("x-forwarded-port")
            .and_then(|p| std::str::from_utf8(p).ok())
            .or(port)
            .unwrap_or(if https { "443" } else { "80" });
        vars.add("SERVER_PORT", port.as_bytes());
    }
    for name in ["content-type", "content-length"] {
        if let Some(value) = header(name) {
            vars.add(&name.to_ascii_uppercase().replace('-', "_"), value);
        }
    }
    let mut seen: Vec<String> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "connection" | "content-type" | "content-length"
        ) || seen.contains(&name)
        {
            continue;
        }
        let value = match name.as_str() {
            "host" => host.unwrap_or(h.value).to_vec(),
            _ => {
                let all: Vec<&[u8]> = (req.headers.iter())
                    .filter(|other| other.name.eq_ignore_ascii_case(&name))
                    .map(|other| other.value)
                    .collect();
                all.join(&b", "[..])
            }
        };
        vars.add(
            &format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")),
            &value,
        );
        seen.push(name);
    }
    vars.into_packet()
}

/// The variables block, as it is built.
#[derive(Default)]
struct Vars(Vec<u8>);

impl Vars {
    fn add(&mut self, name: &str, value: &[u8]) {
        for item in [name.as_bytes(), value] {
            // Longer than 64 KiB: the block passes the limit too, and is refused.
            let len = u16::try_from(item.len()).unwrap_or(u16::MAX);
            self.0.extend_from_slice(&len.to_le_bytes());
            self.0.extend_from_slice(item);
        }
    }

    fn into_packet(self) -> io::Result<Vec<u8>> {
        let len = u16::try_from(self.0.len()).map_err(|_| too_large())?;
        let mut packet = Vec::with_capacity(4 + self.0.len());
        packet.push(0);
        packet.extend_from_slice(&len.to_le_bytes());
        packet.push(0);
        packet.extend(self.0);
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_proxied_head_becomes_nginx_s_uwsgi_params() {
        let head = b"POST /v1/caf%C3%A9?x=%20y HTTP/1.1\r\nhost: 127.0.0.1:3031\r\n\
            x-forwarded-for: 10.0.0.1, 203.0.113.7\r\nx-forwarded-proto: https\r\n\
            x-forwarded-host: shop.example\r\nx-forwarded-port: 8443\r\nx-forwarded-prefix: /app\r\n\
            content-type: text/plain\r\ncontent-length: 5\r\naccept: a\r\naccept: b\r\n\r\n";
        let vars = vars(&packet(head).unwrap());
        let expect = [
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/app/v1/caf%C3%A9?x=%20y"),
            ("PATH_INFO", "/v1/café"),
            ("QUERY_STRING", "x=%20y"),
            ("SCRIPT_NAME", "/app"),
            ("REQUEST_SCHEME", "https"),
            ("HTTPS", "on"),
            ("REMOTE_ADDR", "203.0.113.7"),
            ("SERVER_NAME", "shop.example"),
            ("SERVER_PORT", "8443"),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", "5"),
            ("HTTP_HOST", "shop.example"),
            ("HTTP_ACCEPT", "a, b"),
            ("HTTP_X_FORWARDED_FOR", "10.0.0.1, 203.0.113.7"),
        ];
        for (name, value) in expect {
            assert_eq!(get(&vars, name), Some(value), "{name}: {vars:?}");
        }
        assert_eq!(get(&vars, "HTTP_CONTENT_TYPE"), None);
    }

    #[test]
    fn without_forwarded_headers_the_host_and_plain_http_stand() {
        let vars = vars(&packet(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap());
        assert_eq!(get(&vars, "SERVER_NAME"), Some("localhost"));
        assert_eq!(get(&vars, "SERVER_PORT"), Some("80"));
        assert_eq!(get(&vars, "REQUEST_SCHEME"), Some("http"));
        assert_eq!(get(&vars, "SCRIPT_NAME"), Some(""));
        assert_eq!(get(&vars, "HTTPS"), None);
        assert_eq!(get(&vars, "REMOTE_ADDR"), None);
    }

    #[test]
    fn chunked_bodies_and_huge_heads_are_refused() {
        let chunked = b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(packet(chunked).is_err());
        let huge = format!(
            "GET / HTTP/1.1\r\nhost: h\r\nx-big: {}\r\n\r\n",
            "a".repeat(70_000)
        );
        assert!(packet(huge.as_bytes()).is_err());
    }
}
