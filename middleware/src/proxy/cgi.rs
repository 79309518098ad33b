//! What a CGI-speaking upstream (uwsgi, FastCGI) is told of a request: read
//! from the HTTP/1.1 head hyper writes for it, and from the `X-Forwarded-*`
//! headers the proxy has just set there, as nginx's `uwsgi_params` and
//! `fastcgi_params` take them from its own variables.
//!
//! | variable | from |
//! |---|---|
//! | `REQUEST_METHOD`, `QUERY_STRING` | the request line |
//! | `SERVER_PROTOCOL` | the client's HTTP version, which the proxy sets for a CGI upstream ([`SERVER_PROTOCOL`]; the head hyper writes is HTTP/1.1 whatever the client spoke), as nginx's `$server_protocol` |
//! | the path (`PATH_INFO`, `SCRIPT_NAME`, `SCRIPT_FILENAME`, each protocol its way) | the target's path: below the mount, with the upstream's base, decoded, its slashes merged as nginx merges them ([`Request::decoded_path`]) |
//! | the mount | `X-Forwarded-Prefix` |
//! | `REQUEST_URI` | the mount followed by the target, raw: what the client asked for |
//! | `REMOTE_ADDR` | the last `X-Forwarded-For`: the client this server saw |
//! | `REMOTE_PORT`, `SERVER_ADDR` | the client's port and this server's address, which the proxy sets for a CGI upstream ([`REMOTE_PORT`], [`SERVER_ADDR`]) |
//! | `REMOTE_USER` | the user `BasicAuth` (or a front) let in, which the proxy sets for a CGI upstream ([`REMOTE_USER`]), as nginx's `$remote_user` |
//! | `REQUEST_SCHEME`, `HTTPS` | `X-Forwarded-Proto` |
//! | `HTTP_HOST`, `SERVER_NAME`, `SERVER_PORT` | `X-Forwarded-Host` (never the head's `Host`, the upstream's own; without a host, SERVER_NAME is the address the client reached), `X-Forwarded-Port` |
//! | `CONTENT_TYPE`, `CONTENT_LENGTH` | the headers, empty without them, as nginx's `$content_type` and `$content_length` |
//! | `HTTP_*` | the headers (repeated ones joined with `, `, cookies with `; `); a name with `_` is left out, as nginx leaves it out, for `X_Id` and `X-Id` would both be `HTTP_X_ID` |

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use percent_encoding::percent_decode;

/// The longest request head taken (a uwsgi packet holds 64 KiB).
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// What no forwarding header carries, set by the proxy on a request to a CGI
/// upstream (replacing any the client sent) and read back here: the
/// client's port (REMOTE_PORT), the address it reached this server at
/// (SERVER_ADDR, `fastcgi_params`' `$server_addr`) and the HTTP version it
/// spoke (SERVER_PROTOCOL). Never passed on as `HTTP_*`.
pub(crate) const REMOTE_PORT: http::HeaderName =
    http::HeaderName::from_static("x-stackway-remote-port");
pub(crate) const SERVER_ADDR: http::HeaderName =
    http::HeaderName::from_static("x-stackway-server-addr");
pub(crate) const SERVER_PROTOCOL: http::HeaderName =
    http::HeaderName::from_static("x-stackway-server-protocol");
pub(crate) const REMOTE_USER: http::HeaderName =
    http::HeaderName::from_static("x-stackway-remote-user");

/// A request, as CGI variables tell it.
pub(crate) struct Request {
    /// Variables every protocol sends, in nginx's order.
    pub(crate) vars: Vec<(String, Vec<u8>)>,
    /// The target's path, raw (percent-encoded).
    pub(crate) path: String,
    /// Where the proxy is mounted (`X-Forwarded-Prefix`), raw.
    pub(crate) mount: Vec<u8>,
    /// The body's length (0 without one).
    pub(crate) content_length: u64,
}

impl Request {
    pub(crate) fn add(&mut self, name: &str, value: &[u8]) {
        self.vars.push((name.to_owned(), value.to_vec()));
    }

    /// The path decoded, each run of slashes one, as nginx's `$uri` (and so
    /// `$document_uri` and `$fastcgi_script_name`) has it with its default
    /// `merge_slashes on`: a script a PHP app names as `PHP_SELF` in its own
    /// links never starts `//`, another site's address to a browser.
    pub(crate) fn decoded_path(&self) -> Vec<u8> {
        let mut path: Vec<u8> = percent_decode(self.path.as_bytes()).collect();
        path.dedup_by(|a, b| *a == b'/' && *b == b'/');
        path
    }
}

/// How a protocol encodes what hyper writes for a request.
pub(crate) trait Encode {
    /// The bytes for the request, and for the first `body` bytes written with its head.
    fn head(&mut self, request: &Request, body: &[u8]) -> io::Result<Vec<u8>>;

    /// The bytes for a piece of the body, and how much of `buf` they take;
    /// `None` to write it as it is.
    fn body(&mut self, buf: &[u8]) -> Option<(Vec<u8>, usize)>;
}

/// What hyper writes, encoded on its way to the socket: the head gathered
/// until it is whole, then what it becomes written out, then the body.
pub(crate) struct Writer<E> {
    encode: E,
    state: State,
}

enum State {
    Head(Vec<u8>),
    /// Encoded bytes, and how many of them are on the socket.
    Out(Vec<u8>, usize),
    Body,
}

impl<E: Encode> Writer<E> {
    pub(crate) fn new(encode: E) -> Self {
        Self {
            encode,
            state: State::Head(Vec::new()),
        }
    }

    pub(crate) fn poll_write<W: hyper::rt::Write + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.state {
                State::Head(head) => {
                    if let Some((head, body)) = gather(head, buf)? {
                        let bytes = self.encode.head(&parse(&head)?, &body)?;
                        self.state = State::Out(bytes, 0);
                    }
                    return Poll::Ready(Ok(buf.len()));
                }
                State::Out(..) => ready!(self.poll_out(io.as_mut(), cx))?,
                State::Body => match self.encode.body(buf) {
                    None => return io.poll_write(cx, buf),
                    Some((bytes, taken)) => {
                        self.state = State::Out(bytes, 0);
                        return Poll::Ready(Ok(taken));
                    }
                },
            }
        }
    }

    /// Flushes, what is encoded first.
    pub(crate) fn poll_flush<W: hyper::rt::Write + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_out(io.as_mut(), cx))?;
        io.poll_flush(cx)
    }

    /// Writes what is left of the encoded bytes, if any.
    fn poll_out<W: hyper::rt::Write + ?Sized>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if let State::Out(bytes, sent) = &mut self.state {
            while *sent < bytes.len() {
                match ready!(io.as_mut().poll_write(cx, &bytes[*sent..]))? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    n => *sent += n,
                }
            }
            self.state = State::Body;
        }
        Poll::Ready(Ok(()))
    }
}

/// Gathers the head hyper writes, up to its blank line: `Some(head, rest)`
/// once it is whole (`rest`: body bytes written with it).
fn gather(head: &mut Vec<u8>, buf: &[u8]) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    head.extend_from_slice(buf);
    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
        let rest = head.split_off(end + 4);
        return Ok(Some((std::mem::take(head), rest)));
    }
    if head.len() > MAX_HEAD {
        return Err(invalid("the request head passes 64 KiB"));
    }
    Ok(None)
}

/// Where an answer's head ends: its blank line's start and length, in
/// either line ending (a CGI app's head may end its lines in `\n` alone).
pub(crate) fn blank_line(head: &[u8]) -> Option<(usize, usize)> {
    let crlf = (head.windows(4).position(|w| w == b"\r\n\r\n")).map(|at| (at, 4));
    let lf = (head.windows(2).position(|w| w == b"\n\n")).map(|at| (at, 2));
    crlf.into_iter().chain(lf).min()
}

/// An HTTP/1.1 response head for a CGI one: its first `Status:` (else 302 with a
/// `Location:`, else 200) and its other headers but `Transfer-Encoding`: a
/// CGI body is framed by the records or the connection's end, never a coding
/// of its own (nginx's `fastcgi_pass` and `uwsgi_pass` pass the bytes as they
/// come too).
pub(crate) fn http_head(cgi: &[u8]) -> Vec<u8> {
    let mut status = None;
    let mut location = false;
    let mut headers = Vec::new();
    for line in cgi.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"status") {
            // The first, as nginx takes it.
            status.get_or_insert_with(|| value.to_vec());
            continue;
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        location |= name.eq_ignore_ascii_case(b"location");
        headers.extend_from_slice(name);
        headers.extend_from_slice(b": ");
        headers.extend_from_slice(value);
        headers.extend_from_slice(b"\r\n");
    }
    let status = status.unwrap_or_else(|| match location {
        true => b"302 Found".to_vec(),
        false => b"200 OK".to_vec(),
    });
    let mut head = b"HTTP/1.1 ".to_vec();
    head.extend(status);
    head.extend_from_slice(b"\r\n");
    head.extend(headers);
    head.extend_from_slice(b"\r\n");
    head
}

/// Puts what hyper has not yet read of `out` (past `taken`) into `buf`;
/// false when it has it all.
pub(crate) fn give(out: &[u8], taken: &mut usize, buf: &mut hyper::rt::ReadBufCursor<'_>) -> bool {
    if *taken >= out.len() {
        return false;
    }
    let n = buf.remaining().min(out.len() - *taken);
    buf.put_slice(&out[*taken..*taken + n]);
    *taken += n;
    true
}

pub(crate) fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why.to_owned())
}

/// The request an HTTP/1.1 head describes.
pub(crate) fn parse(head: &[u8]) -> io::Result<Request> {
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
        (req.headers.iter())
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if header("transfer-encoding").is_some() {
        return Err(invalid("a CGI upstream needs the body's length"));
    }
    let content_length = match header("content-length") {
        None => 0,
        Some(len) => std::str::from_utf8(len)
            .ok()
            .and_then(|len| len.parse().ok())
            .ok_or_else(|| invalid("a bad Content-Length"))?,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mount = header("x-forwarded-prefix").unwrap_or_default();
    let https = header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case(b"https"));
    // The host the client named, which the proxy sets in X-Forwarded-Host.
    // The head's own Host is the upstream's (hyper's), never the client's
    // when it named none (HTTP/1.0): an app would build its URLs with it.
    let host = header("x-forwarded-host");
    let mut request = Request {
        vars: Vec::new(),
        path: path.to_owned(),
        mount: mount.to_vec(),
        content_length,
    };
    request.add("REQUEST_METHOD", method.as_bytes());
    request.add("REQUEST_URI", &[mount, target.as_bytes()].concat());
    request.add("QUERY_STRING", query.as_bytes());
    let protocol = header(SERVER_PROTOCOL.as_str()).unwrap_or(b"HTTP/1.1");
    request.add("SERVER_PROTOCOL", protocol);
    request.add("REQUEST_SCHEME", if https { b"https" } else { b"http" });
    if https {
        request.add("HTTPS", b"on");
    }
    if let Some(client) = header("x-forwarded-for").and_then(|f| f.rsplit(|b| *b == b',').next()) {
        request.add("REMOTE_ADDR", client.trim_ascii());
    }
    if let Some(port) = header(REMOTE_PORT.as_str()) {
        request.add("REMOTE_PORT", port);
    }
    if let Some(addr) = header(SERVER_ADDR.as_str()) {
        request.add("SERVER_ADDR", addr);
    }
    if let Some(user) = header(REMOTE_USER.as_str()) {
        request.add("REMOTE_USER", user);
    }
    let named =
        (host.and_then(|h| std::str::from_utf8(h).ok())).map(|host| match host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => (name, Some(port)),
            _ => (host, None),
        });
    // Without a host, the address the client reached, as the server's own
    // environ has it.
    let reached = (header(SERVER_ADDR.as_str()).and_then(|a| std::str::from_utf8(a).ok()))
        .map(|addr| (addr, None));
    if let Some((name, port)) = named.or(reached) {
        request.add("SERVER_NAME", name.as_bytes());
        let port = header("x-forwarded-port")
            .and_then(|p| std::str::from_utf8(p).ok())
            .or(port)
            .unwrap_or(if https { "443" } else { "80" });
        request.add("SERVER_PORT", port.as_bytes());
    }
    request.add("CONTENT_TYPE", header("content-type").unwrap_or_default());
    request.add(
        "CONTENT_LENGTH",
        header("content-length").unwrap_or_default(),
    );
    let mut seen: Vec<String> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "connection" | "content-type" | "content-length"
        ) || [REMOTE_PORT, SERVER_ADDR, SERVER_PROTOCOL, REMOTE_USER]
            .iter()
            .any(|ours| ours.as_str() == name)
            || name.contains('_')
            || seen.contains(&name)
        {
            continue;
        }
        let separator: &[u8] = if name == "cookie" { b"; " } else { b", " };
        let value = match name.as_str() {
            "host" => match host {
                Some(host) => host.to_vec(),
                None => continue,
            },
            _ => (req.headers.iter())
                .filter(|other| other.name.eq_ignore_ascii_case(&name))
                .map(|other| other.value)
                .collect::<Vec<_>>()
                .join(separator),
        };
        let var = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        request.add(&var, &value);
        seen.push(name);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
        (request.vars.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_proxied_head_becomes_cgi_variables() {
        let head = b"POST /v1/caf%C3%A9?x=%20y HTTP/1.1\r\nhost: 127.0.0.1:3031\r\n\
            x-forwarded-for: 10.0.0.1, 203.0.113.7\r\nx-forwarded-proto: https\r\n\
            x-forwarded-host: shop.example\r\nx-forwarded-port: 8443\r\nx-forwarded-prefix: /app\r\n\
            content-type: text/plain\r\ncontent-length: 5\r\naccept: a\r\naccept: b\r\n\
            cookie: a=1\r\ncookie: b=2\r\nx_user: mallory\r\nx-user: alice\r\n\
            x-stackway-remote-port: 51000\r\nx-stackway-server-addr: 10.0.0.2\r\n\
            x-stackway-server-protocol: HTTP/1.0\r\n\r\n";
        let request = parse(head).unwrap();
        let expect = [
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/app/v1/caf%C3%A9?x=%20y"),
            ("QUERY_STRING", "x=%20y"),
            ("REQUEST_SCHEME", "https"),
            ("HTTPS", "on"),
            ("REMOTE_ADDR", "203.0.113.7"),
            ("SERVER_NAME", "shop.example"),
            ("SERVER_PORT", "8443"),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", "5"),
            ("HTTP_HOST", "shop.example"),
            ("HTTP_ACCEPT", "a, b"),
            ("HTTP_COOKIE", "a=1; b=2"),
            ("HTTP_X_USER", "alice"),
            ("REMOTE_PORT", "51000"),
            ("SERVER_ADDR", "10.0.0.2"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
            ("HTTP_X_FORWARDED_FOR", "10.0.0.1, 203.0.113.7"),
        ];
        for (name, value) in expect {
            assert_eq!(get(&request, name), Some(value), "{name}");
        }
        assert_eq!(get(&request, "HTTP_CONTENT_TYPE"), None);
        assert_eq!(get(&request, "HTTP_X_STACKWAY_REMOTE_PORT"), None);
        assert_eq!(get(&request, "HTTP_X_STACKWAY_SERVER_ADDR"), None);
        assert_eq!(get(&request, "HTTP_X_STACKWAY_SERVER_PROTOCOL"), None);
        assert_eq!(request.path, "/v1/caf%C3%A9");
        assert_eq!(request.mount, b"/app");
        assert_eq!(request.content_length, 5);
    }

    #[test]
    fn without_forwarded_headers_plain_http_stands_and_the_upstreams_host_is_not_the_clients() {
        // A client that named no host (HTTP/1.0): the head's Host is the one
        // hyper set for the upstream.
        let request = parse(
            b"GET / HTTP/1.1\r\nhost: 127.0.0.1:3031\r\nx-stackway-server-addr: 10.0.0.2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(get(&request, "HTTP_HOST"), None);
        assert_eq!(get(&request, "SERVER_NAME"), Some("10.0.0.2"));
        assert_eq!(get(&request, "SERVER_PORT"), Some("80"));
        assert_eq!(get(&request, "REQUEST_SCHEME"), Some("http"));
        assert_eq!(get(&request, "HTTPS"), None);
        assert_eq!(get(&request, "REMOTE_ADDR"), None);
        assert_eq!(get(&request, "REMOTE_PORT"), None);
        assert_eq!(get(&request, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get(&request, "CONTENT_TYPE"), Some(""), "as nginx sends it");
        assert_eq!(get(&request, "CONTENT_LENGTH"), Some(""));
        assert_eq!(request.content_length, 0);
    }

    #[test]
    fn chunked_bodies_and_huge_heads_are_refused() {
        let chunked = b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse(chunked).is_err());
        let mut head = Vec::new();
        assert!(gather(&mut head, b"GET / HTTP/1.1\r\n").unwrap().is_none());
        let (whole, rest) = gather(&mut head, b"host: h\r\n\r\nbody").unwrap().unwrap();
        assert_eq!(whole, b"GET / HTTP/1.1\r\nhost: h\r\n\r\n");
        assert_eq!(rest, b"body");
        assert!(gather(&mut Vec::new(), &vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn a_cgi_answer_becomes_an_http_head() {
        let table: [(&[u8], &[u8]); 6] = [
            (
                b"Status: 404 Not Found\r\nContent-type: text/html\r\n",
                b"HTTP/1.1 404 Not Found\r\nContent-type: text/html\r\n\r\n",
            ),
            (
                b"Content-type: text/html",
                b"HTTP/1.1 200 OK\r\nContent-type: text/html\r\n\r\n",
            ),
            (
                b"Location: /there\n",
                b"HTTP/1.1 302 Found\r\nLocation: /there\r\n\r\n",
            ),
            (b"Status: 201\nX-A:  b ", b"HTTP/1.1 201\r\nX-A: b\r\n\r\n"),
            (
                b"Transfer-Encoding: chunked\r\nContent-Length: 3",
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            ),
            // Two: the first, as nginx takes it.
            (
                b"Status: 201 Created\r\nStatus: 500 Oops\r\n",
                b"HTTP/1.1 201 Created\r\n\r\n",
            ),
        ];
        for (cgi, http) in table {
            assert_eq!(
                String::from_utf8_lossy(&http_head(cgi)),
                String::from_utf8_lossy(http)
            );
        }
    }
}
