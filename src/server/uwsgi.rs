//! The uwsgi protocol on a listener, as nginx's `uwsgi_pass` speaks it: a
//! packet of CGI variables, then the request body; the response goes back as
//! raw HTTP, and the connection carries one request.
//!
//! The packet becomes an HTTP/1.0 request head that hyper then reads as if
//! the client had sent it, followed by the body as it arrives, so a uwsgi
//! request is served as any other, body streamed, response framed by
//! `Content-Length` or by closing the connection (nginx reads the response to
//! its end and never reuses a uwsgi connection). What the variables say of
//! the connection (REMOTE_ADDR, HTTPS) and of the mount (SCRIPT_NAME) comes
//! out beside the head:
//!
//! | variable | becomes |
//! |---|---|
//! | `REQUEST_METHOD`, `QUERY_STRING` | the request line |
//! | `PATH_INFO` (decoded, as nginx's `$document_uri`) | the path, with `REQUEST_URI`'s raw bytes when they decode to it |
//! | `SCRIPT_NAME` | where the front mounted this server ([`Forwarded::prefix`]); taken off the front of `PATH_INFO` when it starts it, as uWSGI's `--manage-script-name` and `uwsgi_modifier1 30` do |
//! | `HTTP_*`, `CONTENT_TYPE`, `CONTENT_LENGTH` | headers (the first of a repeated variable wins) |
//! | `REMOTE_ADDR`, `REMOTE_PORT` | the client's address |
//! | `HTTPS` (`on`, `1`), `REQUEST_SCHEME`, `UWSGI_SCHEME` | the scheme |
//! | `SERVER_PROTOCOL` | the version the app is told |
//! | `SERVER_PORT` | the port the front took the request on (SERVER_PORT, as uWSGI passes it) |
//! | `SERVER_NAME` | not used: the host comes from `HTTP_HOST` (`SERVER_NAME`, with `SERVER_PORT` unless it is the scheme's, only without it) |
//! | `UWSGI_*` | not used: the apps are the server's mounts |
//! | any other (`REMOTE_USER`, `DOCUMENT_ROOT`, `REQUEST_SCHEME`, a deployment's own `uwsgi_param`) | passed on to the app as it is, as uWSGI does ([`Forwarded::vars`]) |
//!
//! `modifier1` must be 0 (WSGI) or 30 (WSGI, SCRIPT_NAME managed); others are
//! answered 501.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use http::Version;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Forwarded;

/// Bytes a raw path (already encoded) may not hold as they are.
const PATH_RAW: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Bytes a decoded path encodes: those, and `%`.
const PATH: &AsciiSet = &PATH_RAW.add(b'%');

/// Bytes a query string may not hold as they are.
const QUERY: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>');

/// What a uwsgi packet turns into.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Opened {
    /// The HTTP/1.0 request head hyper reads first, and the bytes of the
    /// body that came with the packet.
    pub(super) head: Bytes,
    pub(super) remote_addr: Option<SocketAddr>,
    pub(super) https: bool,
    /// The version to tell the app (`SERVER_PROTOCOL`).
    pub(super) version: Version,
    /// SCRIPT_NAME, as the front's mount of this server.
    pub(super) forwarded: Option<Forwarded>,
}

/// A packet the server will not serve, with the status that says why.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    pub(super) status: u16,
    pub(super) why: String,
}

impl Refused {
    fn bad(why: impl Into<String>) -> Self {
        Self {
            status: 400,
            why: why.into(),
        }
    }

    /// The raw response that says so, as the connection's only one.
    pub(super) fn response(&self) -> Vec<u8> {
        let reason = if self.status == 501 {
            "Not Implemented"
        } else {
            "Bad Request"
        };
        let body = format!("{}\n", self.why);
        format!(
            "HTTP/1.0 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// The first read of a connection: a packet of nginx's `uwsgi_params` for a
/// browser's request fits, and a larger one reads on.
const FIRST_READ: usize = 4096;

/// Reads the packet (its 4-byte header and its variables) in as few reads as
/// it takes: one, for most. Body bytes that came with it follow the head.
pub(super) async fn read_packet<S: AsyncRead + Unpin>(
    io: &mut S,
) -> io::Result<Result<Opened, Refused>> {
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    fill(io, &mut buf, 4).await?;
    let end = 4 + usize::from(u16::from_le_bytes([buf[1], buf[2]]));
    fill(io, &mut buf, end).await?;
    let modifier1 = buf[0];
    if !matches!(modifier1, 0 | 30) {
        return Ok(Err(Refused {
            status: 501,
            why: format!("uwsgi modifier1 {modifier1} is not served here: 0 and 30 (WSGI) are"),
        }));
    }
    let opened = parse_vars(&buf[4..end]).and_then(|vars| open(&vars));
    Ok(opened.map(|mut opened| {
        if let Some(body) = buf.get(end..).filter(|body| !body.is_empty()) {
            let mut head = BytesMut::from(&opened.head[..]);
            head.extend_from_slice(body);
            opened.head = head.freeze();
        }
        opened
    }))
}

/// Reads into `buf` until it holds at least `len` bytes.
async fn fill<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, len: usize) -> io::Result<()> {
    while buf.len() < len {
        buf.reserve(len - buf.len());
        if io.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// A variable: its name and its value.
type Var<'a> = (&'a [u8], &'a [u8]);

/// The variables, in order: each a 16-bit little-endian length and bytes, name then value.
fn parse_vars(mut block: &[u8]) -> Result<Vec<Var<'_>>, Refused> {
    fn take<'a>(block: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = block.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        let item = rest.get(..len)?;
        *block = &rest[len..];
        Some(item)
    }
    // nginx's `uwsgi_params` and a browser's fields: about thirty.
    let mut vars = Vec::with_capacity(32);
    while !block.is_empty() {
        let (Some(name), Some(value)) = (take(&mut block), take(&mut block)) else {
            return Err(Refused::bad(
                "a uwsgi variable runs past the end of its packet",
            ));
        };
        vars.push((name, value));
    }
    Ok(vars)
}

/// The request the variables describe.
fn open(vars: &[Var<'_>]) -> Result<Opened, Refused> {
    let var = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| *v)
    };
    let text = |name: &str| var(name).and_then(|v| std::str::from_utf8(v).ok());
    let method = text("REQUEST_METHOD").unwrap_or("GET");
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!".contains(&b))
    {
        return Err(Refused::bad(format!("bad REQUEST_METHOD {method:?}")));
    }
    // The head says less than the variables it is made from.
    let mut head = String::with_capacity(vars.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
    head.push_str(method);
    head.push(' ');
    let prefix = target_path(
        var("PATH_INFO"),
        var("SCRIPT_NAME"),
        var("REQUEST_URI"),
        &mut head,
    );
    if let Some(query) = var("QUERY_STRING").filter(|q| !q.is_empty()) {
        head.push('?');
        head.extend(utf8_percent_encode(&String::from_utf8_lossy(query), QUERY));
    }
    head.push_str(" HTTP/1.0\r\n");
    let mut head = head.into_bytes();
    let mut seen: Vec<&[u8]> = Vec::with_capacity(vars.len());
    // The rest is the front's word for the app (REMOTE_USER, DOCUMENT_ROOT,
    // a deployment's own), passed on as uWSGI does; the first of a name wins.
    let mut front: Vec<(String, Vec<u8>)> = Vec::new();
    for &(name, value) in vars {
        let header = match name {
            b"CONTENT_TYPE" | b"CONTENT_LENGTH" => name,
            // What the request is made of, or what stackway decides itself.
            b"REQUEST_METHOD" | b"REQUEST_URI" | b"PATH_INFO" | b"SCRIPT_NAME"
            | b"QUERY_STRING" | b"REMOTE_ADDR" | b"REMOTE_PORT" | b"SERVER_PROTOCOL"
            | b"SERVER_NAME" | b"SERVER_PORT" | b"HTTPS" => continue,
            _ => match name.strip_prefix(b"HTTP_") {
                Some(header) if !header.is_empty() => header,
                Some(_) => continue,
                None => {
                    let passed = !name.starts_with(b"UWSGI_")
                        && !name.is_empty()
                        && name.iter().all(u8::is_ascii_graphic)
                        && !front.iter().any(|(n, _)| n.as_bytes() == name);
                    if passed {
                        let name = String::from_utf8_lossy(name).into_owned();
                        front.push((name, value.to_vec()));
                    }
                    continue;
                }
            },
        };
        if value.is_empty() || seen.contains(&name) {
            continue;
        }
        seen.push(name);
        if !header
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            return Err(Refused::bad(format!(
                "bad uwsgi variable name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        if value.iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
            return Err(Refused::bad(format!(
                "uwsgi variable {} holds a line break",
                String::from_utf8_lossy(name)
            )));
        }
        head.extend(header.iter().map(|b| match b {
            b'_' => b'-',
            b => b.to_ascii_lowercase(),
        }));
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    let https = text("HTTPS").is_some_and(|on| on.eq_ignore_ascii_case("on") || on == "1")
        || ["REQUEST_SCHEME", "UWSGI_SCHEME"]
            .iter()
            .any(|name| text(name).is_some_and(|s| s.eq_ignore_ascii_case("https")));
    // The port the front took the request on, not this listener's.
    let port = text("SERVER_PORT").and_then(|p| p.parse::<u16>().ok());
    if !seen.contains(&&b"HTTP_HOST"[..]) {
        // No Host (HTTP/1.0): SERVER_NAME, with SERVER_PORT unless it is the
        // scheme's, as Werkzeug builds the host from them.
        if let Some(name) =
            text("SERVER_NAME").filter(|n| http::uri::Authority::try_from(*n).is_ok())
        {
            let host = match port.filter(|&p| p != if https { 443 } else { 80 }) {
                Some(port) if !name.contains(':') => format!("host: {name}:{port}\r\n"),
                _ => format!("host: {name}\r\n"),
            };
            head.extend_from_slice(host.as_bytes());
        }
    }
    head.extend_from_slice(b"\r\n");
    let remote_addr = text("REMOTE_ADDR")
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| {
            let port = text("REMOTE_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            SocketAddr::new(ip, port)
        });
    let version = match text("SERVER_PROTOCOL") {
        Some("HTTP/1.0") => Version::HTTP_10,
        Some("HTTP/2.0" | "HTTP/2") => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let forwarded = (prefix.is_some() || port.is_some() || !front.is_empty()).then(|| Forwarded {
        prefix,
        port,
        vars: front,
        ..Forwarded::default()
    });
    Ok(Opened {
        head: head.into(),
        remote_addr,
        https,
        version,
        forwarded,
    })
}

/// Writes the request target's path, encoded, to `out`; returns the mount
/// prefix SCRIPT_NAME gives (without a trailing `/`).
fn target_path(
    path_info: Option<&[u8]>,
    script_name: Option<&[u8]>,
    request_uri: Option<&[u8]>,
    out: &mut String,
) -> Option<String> {
    let raw_path = request_uri.map(|uri| uri.split(|b| *b == b'?').next().unwrap_or_default());
    let prefix = script_name
        .map(|s| String::from_utf8_lossy(s).trim_end_matches('/').to_owned())
        .filter(|s| s.starts_with('/'));
    let Some(path_info) = path_info else {
        // No PATH_INFO: the raw path, as sent.
        let raw = raw_path.filter(|p| p.starts_with(b"/")).unwrap_or(b"/");
        out.extend(utf8_percent_encode(&String::from_utf8_lossy(raw), PATH_RAW));
        return None;
    };
    let decoded = String::from_utf8_lossy(path_info);
    let rest = match &prefix {
        Some(prefix) => match decoded.strip_prefix(prefix.as_str()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
            _ => &decoded,
        },
        None => &decoded,
    };
    // REQUEST_URI's bytes keep what decoding loses (`%2F`), when they say the same.
    if prefix.is_none() {
        if let Some(raw) = raw_path.filter(|raw| percent_decode(raw).eq(path_info.iter().copied()))
        {
            out.extend(utf8_percent_encode(&String::from_utf8_lossy(raw), PATH_RAW));
            return None;
        }
    }
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.extend(utf8_percent_encode(rest, PATH));
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackway_test_support::http::uwsgi_packet as packet;

    async fn read(bytes: &[u8]) -> Result<Opened, Refused> {
        let mut io = bytes;
        read_packet(&mut io).await.unwrap()
    }

    fn head(opened: &Opened) -> String {
        String::from_utf8(opened.head.to_vec()).unwrap()
    }

    /// nginx's `uwsgi_params`, for a request of `uri` with `extra` variables.
    fn nginx(
        uri: &str,
        path_info: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Vec<(String, String)> {
        let (_, query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut vars = vec![
            ("QUERY_STRING".into(), query.to_owned()),
            ("REQUEST_METHOD".into(), "GET".into()),
            ("CONTENT_TYPE".into(), String::new()),
            ("CONTENT_LENGTH".into(), String::new()),
            ("REQUEST_URI".into(), uri.to_owned()),
            ("PATH_INFO".into(), path_info.to_owned()),
            ("DOCUMENT_ROOT".into(), "/usr/share/nginx/html".into()),
            ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
            ("REQUEST_SCHEME".into(), "http".into()),
            ("REMOTE_ADDR".into(), "203.0.113.7".into()),
            ("REMOTE_PORT".into(), "51000".into()),
            ("SERVER_PORT".into(), "80".into()),
            ("SERVER_NAME".into(), "example.org".into()),
            ("HTTP_HOST".into(), "example.org".into()),
        ];
        vars.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        vars
    }

    async fn nginx_request(
        uri: &str,
        path_info: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Result<Opened, Refused> {
        let vars = nginx(uri, path_info, extra);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        read(&packet(&vars)).await
    }

    #[tokio::test]
    async fn nginx_params_become_an_http_head() {
        let opened = nginx_request(
            "/app/caf%C3%A9?q=a%20b&x=1",
            "/app/café",
            &[("HTTP_X_TRACE_ID", "abc"), ("HTTP_HOST", "spoofed.example")],
        )
        .await
        .unwrap();
        assert_eq!(
            head(&opened),
            "GET /app/caf%C3%A9?q=a%20b&x=1 HTTP/1.0\r\nhost: example.org\r\nx-trace-id: abc\r\n\r\n",
            "the raw path kept, empty CONTENT_* left out, the first HTTP_HOST taken"
        );
        assert_eq!(
            opened.remote_addr,
            Some("203.0.113.7:51000".parse().unwrap())
        );
        assert!(!opened.https);
        assert_eq!(opened.version, Version::HTTP_11);
        let front = Forwarded {
            port: Some(80),
            vars: vec![
                ("DOCUMENT_ROOT".into(), b"/usr/share/nginx/html".to_vec()),
                ("REQUEST_SCHEME".into(), b"http".to_vec()),
            ],
            ..Forwarded::default()
        };
        assert_eq!(
            opened.forwarded,
            Some(front),
            "nginx's SERVER_PORT, and its variables the request is not made of"
        );
    }

    #[tokio::test]
    async fn the_fronts_own_variables_pass_on_to_the_app() {
        let opened = nginx_request(
            "/",
            "/",
            &[
                ("REMOTE_USER", "alice"),
                ("APP_ENV", "production"),
                ("REMOTE_USER", "mallory"),
                ("UWSGI_SCRIPT", "other.wsgi"),
                ("HTTP_X_REAL_IP", "203.0.113.9"),
            ],
        )
        .await
        .unwrap();
        let vars = opened.forwarded.unwrap().vars;
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["DOCUMENT_ROOT", "REQUEST_SCHEME", "REMOTE_USER", "APP_ENV"],
            "what the request is made of, UWSGI_* and headers stay out"
        );
        assert_eq!(vars[2].1, b"alice", "the first of a name wins");
    }

    #[tokio::test]
    async fn without_a_host_the_host_is_server_name_and_a_port_not_the_schemes() {
        // (SERVER_PORT, HTTPS) → the host of the head, as Werkzeug builds it
        let table = [
            ("80", "", "example.org"),
            ("8080", "", "example.org:8080"),
            ("443", "on", "example.org"),
            ("80", "on", "example.org:80"),
        ];
        for (port, https, host) in table {
            let vars = [
                ("REQUEST_METHOD", "GET"),
                ("PATH_INFO", "/"),
                ("SERVER_PROTOCOL", "HTTP/1.0"),
                ("SERVER_NAME", "example.org"),
                ("SERVER_PORT", port),
                ("HTTPS", https),
            ];
            let opened = read(&packet(&vars)).await.unwrap();
            assert_eq!(
                head(&opened),
                format!("GET / HTTP/1.0\r\nhost: {host}\r\n\r\n"),
                "SERVER_PORT {port}, HTTPS {https:?}"
            );
            assert_eq!(opened.forwarded.and_then(|f| f.port), port.parse().ok());
        }
    }

    #[tokio::test]
    async fn script_name_is_the_fronts_mount_and_leaves_path_info() {
        // (REQUEST_URI, PATH_INFO, SCRIPT_NAME) → (target path, prefix)
        let table = [
            ("/app/x?y", "/app/x", "/app", "/x", Some("/app")),
            ("/app", "/app", "/app", "/", Some("/app")),
            ("/app/", "/app/", "/app/", "/", Some("/app")),
            // Already taken off (uwsgi_param PATH_INFO $1): PATH_INFO stands.
            ("/app/x", "/x", "/app", "/x", Some("/app")),
            // Not on a segment boundary: PATH_INFO stands.
            ("/apps/x", "/apps/x", "/app", "/apps/x", Some("/app")),
            // Decoded PATH_INFO is encoded again; % itself too.
            (
                "/app/a%25b%20c",
                "/app/a%b c",
                "/app",
                "/a%25b%20c",
                Some("/app"),
            ),
            // No SCRIPT_NAME: REQUEST_URI's bytes, where they decode to PATH_INFO.
            ("/a%2Fb", "/a/b", "", "/a%2Fb", None),
            // nginx normalised the path: PATH_INFO wins.
            ("/a/../b", "/b", "", "/b", None),
        ];
        for (uri, path_info, script_name, path, prefix) in table {
            let vars: Vec<(&str, &str)> = vec![
                ("REQUEST_URI", uri),
                ("PATH_INFO", path_info),
                ("SCRIPT_NAME", script_name),
            ];
            let opened = read(&packet(&vars)).await.unwrap();
            let line = head(&opened);
            assert!(
                line.starts_with(&format!("GET {path} HTTP/1.0\r\n")),
                "{uri} {path_info} {script_name}: {line}"
            );
            assert_eq!(
                opened.forwarded.and_then(|f| f.prefix).as_deref(),
                prefix,
                "{uri} {path_info} {script_name}"
            );
        }
    }

    #[tokio::test]
    async fn the_scheme_comes_from_https_or_the_request_scheme() {
        for extra in [
            [("HTTPS", "on")],
            [("HTTPS", "1")],
            [("REQUEST_SCHEME", "https")],
            [("UWSGI_SCHEME", "https")],
        ] {
            let mut vars = vec![("PATH_INFO", "/")];
            vars.extend(extra);
            assert!(read(&packet(&vars)).await.unwrap().https, "{extra:?}");
        }
        let vars = [
            ("PATH_INFO", "/"),
            ("HTTPS", "off"),
            ("REQUEST_SCHEME", "http"),
        ];
        assert!(!read(&packet(&vars)).await.unwrap().https);
    }

    #[tokio::test]
    async fn a_body_is_announced_by_its_length_and_follows_the_head() {
        let vars = [
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/upload"),
            ("CONTENT_LENGTH", "5"),
            ("CONTENT_TYPE", "text/plain"),
        ];
        let mut bytes = packet(&vars);
        bytes.extend_from_slice(b"hello");
        let head_only =
            "POST /upload HTTP/1.0\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\n";
        // The body read with the packet follows the head, as hyper is to read it.
        let opened = read(&bytes).await.unwrap();
        assert_eq!(head(&opened), format!("{head_only}hello"));
        // The body that comes after, in reads of its own, stays the connection's.
        let (packet_alone, body) = bytes.split_at(bytes.len() - 5);
        let mut io = packet_alone.chain(body);
        let opened = read_packet(&mut io).await.unwrap().unwrap();
        assert_eq!(head(&opened), head_only);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"hello");
    }

    #[tokio::test]
    async fn bad_packets_are_refused_with_a_reason() {
        let table: [(Vec<u8>, u16, &str); 5] = [
            (
                {
                    let mut p = packet(&[("PATH_INFO", "/")]);
                    p[0] = 5;
                    p
                },
                501,
                "modifier1 5",
            ),
            (
                packet(&[("HTTP_X_A", "a\r\nInjected: yes")]),
                400,
                "line break",
            ),
            (packet(&[("HTTP_X:A", "a")]), 400, "bad uwsgi variable name"),
            (
                packet(&[("REQUEST_METHOD", "GET /x")]),
                400,
                "REQUEST_METHOD",
            ),
            (vec![0, 3, 0, 0, 9, 0, b'x'], 400, "past the end"),
        ];
        for (bytes, status, why) in table {
            let refused = read(&bytes).await.unwrap_err();
            assert_eq!(refused.status, status, "{why}");
            assert!(refused.why.contains(why), "{}", refused.why);
            assert!(
                String::from_utf8(refused.response())
                    .unwrap()
                    .starts_with(&format!("HTTP/1.0 {status} "))
            );
        }
        let mut short: &[u8] = &[0, 10, 0, 0, 1];
        assert!(
            read_packet(&mut short).await.is_err(),
            "a packet cut short is an I/O error"
        );
    }
}
