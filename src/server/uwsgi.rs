//! The uwsgi protocol on a listener, as nginx's `uwsgi_pass` speaks it: a
//! packet of CGI variables, then the request body; the response goes back as
//! raw HTTP, and the connection carries one request.
//!
//! The packet becomes the request's head ([`Opened`]). A request without a
//! body (most) is answered here, as uWSGI answers it: the app called with
//! that head and its response written to the socket ([`write_response`]),
//! with no HTTP parser between. One with a body goes to hyper as the HTTP/1.0
//! head the packet makes ([`Opened::http1`]), followed by the body as it
//! arrives, so that hyper streams it as any other. Either way the response is
//! framed by `Content-Length` or by closing the connection (nginx reads the
//! response to its end and never reuses a uwsgi connection), and is the same
//! byte for byte but the date. What the variables say of the connection
//! (REMOTE_ADDR, HTTPS) and of the mount (SCRIPT_NAME) comes out beside the
//! head:
//!
//! | variable | becomes |
//! |---|---|
//! | `REQUEST_METHOD`, `QUERY_STRING` | the request line |
//! | `PATH_INFO` (decoded, as nginx's `$document_uri`) | the path, with `REQUEST_URI`'s raw bytes when they decode to it |
//! | `REQUEST_URI` | the app's REQUEST_URI, as the client sent it ([`Forwarded::request_uri`]), where it is not the request's own target (a SCRIPT_NAME taken off, a path nginx normalised) |
//! | `SCRIPT_NAME` | where the front mounted this server ([`Forwarded::prefix`]); taken off the front of `PATH_INFO` when it starts it, as uWSGI's `--manage-script-name` and `uwsgi_modifier1 30` do |
//! | `HTTP_*`, `CONTENT_TYPE`, `CONTENT_LENGTH` | headers: a repeated `HTTP_*` is each of its values (nginx before 1.23 sends a field the client sent twice as two variables), joined in the environ as the fields are (cookies with `; `, as nginx 1.23 joins them); of `HTTP_HOST`, `HTTP_TRANSFER_ENCODING` and the two `CONTENT_*` the first wins, an empty one too; `HTTP_CONTENT_TYPE` and `HTTP_CONTENT_LENGTH` (nginx passes the client's fields beside the two) are left out, as uWSGI reads a body by `CONTENT_LENGTH` alone; `HTTP_TRANSFER_ENCODING` is left out beside a `CONTENT_LENGTH`, which frames the body; an empty `CONTENT_*` (nginx sends both on every request) is no header but is passed on to the app empty, as uWSGI's environ has it ([`Forwarded::vars`]) |
//! | `REMOTE_ADDR`, `REMOTE_PORT` | the client's address |
//! | `HTTPS` (`on`, `1`), `REQUEST_SCHEME`, `UWSGI_SCHEME` | the scheme |
//! | `SERVER_PROTOCOL` | the version the app is told |
//! | `SERVER_PORT` | the port the front took the request on (SERVER_PORT, as uWSGI passes it) |
//! | `SERVER_NAME` | the app's SERVER_NAME (nginx's `$server_name`, as uWSGI passes it: [`Forwarded::server_name`]); the host comes from `HTTP_HOST` (`SERVER_NAME`, with `SERVER_PORT` unless it is the scheme's, only without it) |
//! | `UWSGI_*` | not used: the apps are the server's mounts |
//! | any other (`REMOTE_USER`, `DOCUMENT_ROOT`, `REQUEST_SCHEME`, a deployment's own `uwsgi_param`) | passed on to the app as it is, as uWSGI does ([`Forwarded::vars`]) |
//!
//! `modifier1` must be 0 (WSGI) or 30 (WSGI, SCRIPT_NAME managed); others are
//! answered 501.
//!
//! For an app that takes packets ([`App::takes_packets`](crate::App::takes_packets):
//! a WSGI app, through the Dispatcher), a packet without a body whose
//! variables say what the request made of them would say, each field and
//! front variable once ([`plain`]), is read as a [`Packet`] and offered to
//! the app as it is; one the app gives back is made a request ([`reopen`]).

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, TRAILER, TRANSFER_ENCODING};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, percent_encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::request::valid_host;
use crate::Forwarded;
use crate::environ::{PLACES, Packet, Place, Vars};

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
#[derive(Debug)]
pub(super) struct Opened {
    /// The request the variables describe, without its body; its version is
    /// the one to tell the app (`SERVER_PROTOCOL`).
    pub(super) head: http::request::Parts,
    /// The bytes of the body that came with the packet.
    pub(super) early: Bytes,
    /// The packet's size: a head larger than the server takes goes to hyper,
    /// which refuses it.
    pub(super) packet_len: usize,
    pub(super) remote_addr: Option<SocketAddr>,
    pub(super) https: bool,
    /// SCRIPT_NAME, as the front's mount of this server.
    pub(super) forwarded: Option<Forwarded>,
}

impl Opened {
    /// Whether a body follows the packet: a length above zero, or a transfer
    /// coding without a length (which hyper then reads, or refuses).
    pub(super) fn has_body(&self) -> bool {
        let headers = &self.head.headers;
        headers.contains_key(TRANSFER_ENCODING)
            || headers
                .get(CONTENT_LENGTH)
                .is_some_and(|len| len.as_bytes().iter().any(|b| *b != b'0'))
    }

    /// The request as an HTTP/1.0 head for hyper to read, followed by the body
    /// bytes that came with the packet.
    pub(super) fn http1(&self) -> Bytes {
        let head = &self.head;
        let target = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let fields: usize = (head.headers.iter())
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        let mut out = Vec::with_capacity(
            head.method.as_str().len() + target.len() + 12 + fields + 2 + self.early.len(),
        );
        out.extend_from_slice(head.method.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.0\r\n");
        for (name, value) in &head.headers {
            push_field(&mut out, name.as_str(), value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.early);
        out.into()
    }
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
/// Boxed: the request's head, half a kilobyte, passes through the states of
/// four futures on its way to the app, each of which would copy it.
pub(super) async fn read_packet<S: AsyncRead + Unpin>(
    io: &mut S,
    plain_wanted: bool,
) -> io::Result<Result<Read, Refused>> {
    // Read on the stack and kept at its size: what a request's fields point
    // into is not a 4 KiB allocation of which they use a few hundred bytes.
    let mut buf = poll_fn(|cx| {
        let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut first = ReadBuf::uninit(&mut first);
        std::task::ready!(Pin::new(&mut *io).poll_read(cx, &mut first))?;
        Poll::Ready(io::Result::Ok(BytesMut::from(first.filled())))
    })
    .await?;
    if buf.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
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
    let packet = buf.freeze();
    if plain_wanted && let Some(plain) = plain(&packet, end) {
        return Ok(Ok(Read::Plain(Box::new(plain))));
    }
    let (vars, fields) = match parse_vars(&packet[4..end]) {
        Ok(parsed) => parsed,
        Err(refused) => return Ok(Err(refused)),
    };
    Ok(open(&packet, end, vars, fields).map(Read::Opened))
}

/// A packet read: as it is, where an app may take it so, or as a request.
pub(super) enum Read {
    Plain(Box<Packet>),
    Opened(Box<Opened>),
}

/// The request a [`plain`] packet describes, for an app that did not take
/// the packet itself.
pub(super) fn reopen(packet: &Packet) -> Result<Box<Opened>, Refused> {
    let (vars, fields) = parse_vars(&packet.vars)?;
    let mut opened = open(&packet.vars, packet.vars.len(), vars, fields)?;
    // And the 4-byte header before the block.
    opened.packet_len += 4;
    Ok(opened)
}

/// The packet (its variables up to `end`) as a [`Packet`], where [`open`]
/// would make of it a request without a body whose environ says what the
/// variables say as they are: no field or front variable named twice (none
/// to join, none whose first wins), each field's name `HTTP_` and `A-Z`,
/// `0-9` and `_` (`open` spells it back the same) and its value one a field
/// may hold, a valid host, a target (`PATH_INFO` and a `REQUEST_URI` that
/// is printable ASCII starting with `/`), the server's name and port and the
/// client's address. Any other packet, and one that `open` refuses, is left
/// to `open`.
fn plain(packet: &Bytes, end: usize) -> Option<Packet> {
    let mut named = Named::default();
    let block = &packet[4..end];
    let mut vars = Vars(block);
    let at = |var: &[u8]| var.as_ptr() as usize - block.as_ptr() as usize;
    let (mut places, mut count, mut front) = ([Place::default(); PLACES], 0, 0u32);
    let mut host = None;
    for (name, value) in &mut vars {
        match named.take(name, value) {
            Kind::Named | Kind::Dropped => continue,
            Kind::Front => front |= 1 << count,
            Kind::Field => {
                let spelled = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_';
                let field = |b: &u8| *b == b'\t' || (*b >= 0x20 && *b != 0x7f);
                if !name.iter().all(spelled) || !value.iter().all(field) {
                    return None;
                }
                match name {
                    b"HTTP_HOST" => host = Some(value),
                    b"HTTP_TRANSFER_ENCODING" => return None,
                    b"CONTENT_LENGTH" if value.iter().any(|b| *b != b'0') => return None,
                    _ => {}
                }
            }
        }
        let twice = places[..count].iter().any(|&[start, end, _]| {
            usize::from(end - start) == name.len() && &block[start.into()..end.into()] == name
        });
        if twice || count == PLACES {
            return None;
        }
        // A block is at most 64 KiB: every place fits.
        let (start, value_end) = (at(name), at(value) + value.len());
        places[count] = [start, start + name.len(), value_end].map(|at| at as u16);
        count += 1;
    }
    // A variable that runs past the block is `open`'s to refuse.
    if !vars.0.is_empty() {
        return None;
    }
    let host = host.filter(|host| !host.is_empty() && valid_host(host))?;
    let request_uri = named.request_uri.filter(|uri| {
        uri.starts_with(b"/") && uri.iter().all(u8::is_ascii_graphic) && named.path_info.is_some()
    })?;
    let (target, prefix) = named.target();
    let within = |var: &[u8]| at(var)..at(var) + var.len();
    Some(Packet {
        method: named.method().ok()?,
        target: PathAndQuery::from_maybe_shared(Bytes::from(target)).ok()?,
        prefix,
        script_end: 0,
        request_uri: within(request_uri),
        server_name: within(server_name(named.server_name, host)?),
        server_port: named.server_port()?,
        version: named.version(),
        remote_addr: named.remote_addr()?,
        scheme: match named.https() {
            true => Scheme::HTTPS,
            false => Scheme::HTTP,
        },
        vars: packet.slice(4..end),
        places,
        count,
        front,
    })
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

/// The variables of `block` (see [`Vars`]), if every one lies within it,
/// and how many of them may be header fields (`HTTP_*`, `CONTENT_*`).
fn parse_vars(block: &[u8]) -> Result<(Vars<'_>, usize), Refused> {
    let mut vars = Vars(block);
    let mut fields = 0;
    while !vars.0.is_empty() {
        let Some((name, _)) = vars.next() else {
            return Err(Refused::bad(
                "a uwsgi variable runs past the end of its packet",
            ));
        };
        fields += usize::from(name.starts_with(b"HTTP_") || name.starts_with(b"CONTENT_"));
    }
    Ok((Vars(block), fields))
}

/// The request the variables describe; `packet` holds them (up to `end`,
/// then the body's first bytes), and the header values are slices of it.
fn open(packet: &Bytes, end: usize, vars: Vars<'_>, fields: usize) -> Result<Box<Opened>, Refused> {
    let mut headers = HeaderMap::with_capacity(fields);
    // The rest is the front's word for the app (REMOTE_USER, DOCUMENT_ROOT,
    // a deployment's own), passed on as uWSGI does; the first of a name wins.
    let mut front: Vec<(Bytes, Bytes)> = Vec::new();
    // What the request is made of, or what stackway decides itself, found in
    // the same pass (the first of a name).
    let mut named = Named::default();
    // Noted as they are taken, not looked up after.
    let (mut host, mut coding) = (None, false);
    for (name, value) in vars {
        let header = match named.take(name, value) {
            Kind::Named | Kind::Dropped => continue,
            Kind::Front => {
                pass_on(&mut front, packet, name, value);
                continue;
            }
            // One sent empty first is the one that counts.
            Kind::Field
                if matches!(name, b"CONTENT_TYPE" | b"CONTENT_LENGTH")
                    && front.iter().any(|(n, _)| n == name) =>
            {
                pass_on(&mut front, packet, name, value);
                continue;
            }
            Kind::Field => name.strip_prefix(b"HTTP_").unwrap_or(name),
        };
        let header = header_name(header).ok_or_else(|| {
            Refused::bad(format!(
                "bad uwsgi variable name {:?}",
                String::from_utf8_lossy(name)
            ))
        })?;
        // An empty header is the client's (`X-Empty:`), but not an empty
        // Host: without one, SERVER_NAME and SERVER_PORT make it. A field the
        // client sent twice comes as two variables from nginx before 1.23
        // (`Cookie` twice): both are kept, for the environ to join as the
        // fields are; but the first of those that say one thing each.
        let single = matches!(
            header,
            HOST | CONTENT_LENGTH | CONTENT_TYPE | TRANSFER_ENCODING
        );
        if (single && headers.contains_key(&header)) || (value.is_empty() && header == HOST) {
            continue;
        }
        if value.iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
            return Err(Refused::bad(format!(
                "uwsgi variable {} holds a line break",
                String::from_utf8_lossy(name)
            )));
        }
        match header {
            HOST => host = Some(value),
            TRANSFER_ENCODING => coding = true,
            _ => {}
        }
        let value = HeaderValue::from_maybe_shared(packet.slice_ref(value)).map_err(|_| {
            Refused::bad(format!(
                "uwsgi variable {} holds a control character",
                String::from_utf8_lossy(name)
            ))
        })?;
        headers.append(header, value);
    }
    // CONTENT_LENGTH frames the body, as the protocol has it. A transfer
    // coding beside it is the client's hop, which the front undid (nginx reads
    // a chunked body whole and sends its length); as framing, the two would
    // contradict each other.
    if coding && headers.contains_key(CONTENT_LENGTH) {
        headers.remove(TRANSFER_ENCODING);
    }
    // The host, as the HTTP listeners check it: nginx passes `a@b` and `a"b`.
    if let Some(host) = host.filter(|h| !valid_host(h)) {
        let host = String::from_utf8_lossy(host);
        return Err(Refused::bad(format!("HTTP_HOST {host:?} is no host")));
    }
    let method = named.method()?;
    let (target, prefix) = named.target();
    // The client's own target, for the app, where it is not this one.
    let request_uri = named
        .request_uri
        .filter(|uri| *uri != target.as_bytes() && uri.starts_with(b"/"))
        .filter(|uri| uri.iter().all(u8::is_ascii_graphic))
        .map(|uri| String::from_utf8_lossy(uri).into_owned());
    let uri = Uri::from_maybe_shared(Bytes::from(target))
        .map_err(|e| Refused::bad(format!("bad request target: {e}")))?;
    let https = named.https();
    let port = named.server_port();
    if host.is_none() {
        // No Host (HTTP/1.0): SERVER_NAME, with SERVER_PORT unless it is the
        // scheme's, as Werkzeug builds the host from them.
        let name = text(named.server_name).filter(|n| http::uri::Authority::try_from(*n).is_ok());
        let host =
            name.and_then(
                |name| match port.filter(|&p| p != if https { 443 } else { 80 }) {
                    Some(port) if !name.contains(':') => format!("{name}:{port}").try_into().ok(),
                    _ => HeaderValue::try_from(name).ok(),
                },
            );
        if let Some(host) = host {
            headers.insert(HOST, host);
        }
    }
    let remote_addr = named.remote_addr();
    let server_name = text(named.server_name).filter(|n| !n.is_empty());
    let forwarded = (prefix.is_some()
        || port.is_some()
        || server_name.is_some()
        || request_uri.is_some()
        || !front.is_empty())
    .then(|| Forwarded {
        prefix,
        port,
        server_name: server_name.map(str::to_owned),
        request_uri,
        vars: front,
        ..Forwarded::default()
    });
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.version = named.version();
    head.headers = headers;
    Ok(Box::new(Opened {
        head,
        early: packet.slice(end..),
        packet_len: end,
        remote_addr,
        https,
        forwarded,
    }))
}

/// Passes a front's variable on to the app, unless one of its name came
/// first: its name and value where they lie in the packet.
fn pass_on(front: &mut Vec<(Bytes, Bytes)>, packet: &Bytes, name: &[u8], value: &[u8]) {
    if !front.iter().any(|(n, _)| n == name) {
        front.push((packet.slice_ref(name), packet.slice_ref(value)));
    }
}

/// The variables the request is made of, or that stackway decides from.
#[derive(Default)]
struct Named<'a> {
    method: Option<&'a [u8]>,
    request_uri: Option<&'a [u8]>,
    path_info: Option<&'a [u8]>,
    script_name: Option<&'a [u8]>,
    query_string: Option<&'a [u8]>,
    remote_addr: Option<&'a [u8]>,
    remote_port: Option<&'a [u8]>,
    protocol: Option<&'a [u8]>,
    server_name: Option<&'a [u8]>,
    server_port: Option<&'a [u8]>,
    https: Option<&'a [u8]>,
    /// Also passed on to the app.
    request_scheme: Option<&'a [u8]>,
    /// Also a `UWSGI_*`, not passed on.
    uwsgi_scheme: Option<&'a [u8]>,
}

/// What a packet's variable is to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One the request is made of (REQUEST_METHOD, PATH_INFO, …), or one
    /// stackway decides from (HTTPS, UWSGI_SCHEME); not the app's.
    Named,
    /// A header field: `HTTP_*`, and a `CONTENT_*` with a value.
    Field,
    /// The front's word for the app, passed on (DOCUMENT_ROOT,
    /// REQUEST_SCHEME, an empty `CONTENT_*`, a deployment's own).
    Front,
    /// Left out: nginx's copies of the client's `Content-*`, `HTTP_`, an
    /// `UWSGI_*`, a name that is no name.
    Dropped,
}

impl<'a> Named<'a> {
    /// What the variable `name` is to the request; the first of each name
    /// the request is made of is noted.
    fn take(&mut self, name: &[u8], value: &'a [u8]) -> Kind {
        let (slot, kind) = match name {
            b"REQUEST_METHOD" => (&mut self.method, Kind::Named),
            b"REQUEST_URI" => (&mut self.request_uri, Kind::Named),
            b"PATH_INFO" => (&mut self.path_info, Kind::Named),
            b"SCRIPT_NAME" => (&mut self.script_name, Kind::Named),
            b"QUERY_STRING" => (&mut self.query_string, Kind::Named),
            b"REMOTE_ADDR" => (&mut self.remote_addr, Kind::Named),
            b"REMOTE_PORT" => (&mut self.remote_port, Kind::Named),
            b"SERVER_PROTOCOL" => (&mut self.protocol, Kind::Named),
            b"SERVER_NAME" => (&mut self.server_name, Kind::Named),
            b"SERVER_PORT" => (&mut self.server_port, Kind::Named),
            b"HTTPS" => (&mut self.https, Kind::Named),
            b"REQUEST_SCHEME" => (&mut self.request_scheme, Kind::Front),
            b"UWSGI_SCHEME" => (&mut self.uwsgi_scheme, Kind::Dropped),
            // nginx's uwsgi_params send both on every request, empty without
            // a body: no header, but the app sees them empty, as under uWSGI.
            b"CONTENT_TYPE" | b"CONTENT_LENGTH" if value.is_empty() => return Kind::Front,
            b"CONTENT_TYPE" | b"CONTENT_LENGTH" => return Kind::Field,
            // The client's own fields, which nginx passes beside those two:
            // the front's CONTENT_* say what the body is, as uWSGI reads it.
            b"HTTP_CONTENT_TYPE" | b"HTTP_CONTENT_LENGTH" | b"HTTP_" => return Kind::Dropped,
            _ if name.starts_with(b"HTTP_") => return Kind::Field,
            _ if name.starts_with(b"UWSGI_") || name.is_empty() => return Kind::Dropped,
            _ if name.iter().all(u8::is_ascii_graphic) => return Kind::Front,
            _ => return Kind::Dropped,
        };
        slot.get_or_insert(value);
        kind
    }

    /// REQUEST_METHOD, `GET` without one.
    fn method(&self) -> Result<Method, Refused> {
        let method = self.method.unwrap_or(b"GET");
        Some(method)
            .filter(|m| !m.is_empty())
            .filter(|m| {
                m.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!".contains(b))
            })
            .and_then(|m| Method::from_bytes(m).ok())
            .ok_or_else(|| {
                let method = String::from_utf8_lossy(method);
                Refused::bad(format!("bad REQUEST_METHOD {method:?}"))
            })
    }

    /// The request's target, encoded, and the mount prefix SCRIPT_NAME gives.
    fn target(&self) -> (String, Option<String>) {
        let mut target = String::with_capacity(self.request_uri.map_or(16, |u| u.len() + 16));
        let prefix = target_path(
            self.path_info,
            self.script_name,
            self.request_uri,
            &mut target,
        );
        if let Some(query) = self.query_string.filter(|q| !q.is_empty()) {
            target.push('?');
            target.extend(percent_encode(query, QUERY));
        }
        (target, prefix)
    }

    /// Whether the client's request came over TLS.
    fn https(&self) -> bool {
        (self.https).is_some_and(|on| on.eq_ignore_ascii_case(b"on") || on == b"1")
            || [self.request_scheme, self.uwsgi_scheme]
                .into_iter()
                .any(|scheme| scheme.is_some_and(|s| s.eq_ignore_ascii_case(b"https")))
    }

    /// The version to tell the app (SERVER_PROTOCOL).
    fn version(&self) -> Version {
        match self.protocol {
            Some(b"HTTP/1.0") => Version::HTTP_10,
            Some(b"HTTP/2.0" | b"HTTP/2") => Version::HTTP_2,
            _ => Version::HTTP_11,
        }
    }

    /// The client's address, its port 0 when the front gave none.
    fn remote_addr(&self) -> Option<SocketAddr> {
        let ip = text(self.remote_addr)?.parse::<IpAddr>().ok()?;
        let port = text(self.remote_port)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Some(SocketAddr::new(ip, port))
    }

    /// The port the front took the request on, not this listener's.
    fn server_port(&self) -> Option<u16> {
        text(self.server_port)?.parse().ok()
    }
}

/// SERVER_NAME as the request's environ has it: the front's, else the
/// host's name where it reads as it stands.
fn server_name<'a>(front: Option<&'a [u8]>, host: &'a [u8]) -> Option<&'a [u8]> {
    match text(front).filter(|name| !name.is_empty()) {
        Some(name) => Some(name.as_bytes()),
        None => crate::environ::server_name_of(text(Some(host))?).map(str::as_bytes),
    }
}

/// A variable's value, if it is text.
fn text(var: Option<&[u8]>) -> Option<&str> {
    var.and_then(|v| std::str::from_utf8(v).ok())
}

/// The header an `HTTP_*` variable names: `X_TRACE_ID` → `x-trace-id`.
fn header_name(var: &[u8]) -> Option<HeaderName> {
    if !var.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
        return None;
    }
    let dashed = |buf: &mut [u8]| {
        for (to, from) in buf.iter_mut().zip(var) {
            *to = if *from == b'_' { b'-' } else { *from };
        }
        // HeaderName makes it lower case.
        HeaderName::from_bytes(buf).ok()
    };
    let mut short = [0u8; 64];
    match short.get_mut(..var.len()) {
        Some(buf) => dashed(buf),
        None => dashed(&mut vec![0; var.len()]),
    }
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
    // Bytes, as nginx decoded them: a path's that are no UTF-8 (`%FF`) stay
    // those bytes, encoded again.
    let prefix = script_name
        .map(|s| &s[..s.len() - s.iter().rev().take_while(|&&b| b == b'/').count()])
        .filter(|s| s.starts_with(b"/"));
    let Some(path_info) = path_info else {
        // No PATH_INFO: the raw path, as sent.
        let raw = raw_path.filter(|p| p.starts_with(b"/")).unwrap_or(b"/");
        out.extend(percent_encode(raw, PATH_RAW));
        return None;
    };
    let rest = match prefix.and_then(|prefix| path_info.strip_prefix(prefix)) {
        Some(rest) if rest.is_empty() || rest.starts_with(b"/") => rest,
        _ => path_info,
    };
    // REQUEST_URI's bytes keep what decoding loses (`%2F`), when they say the same.
    if prefix.is_none() {
        if let Some(raw) = raw_path.filter(|raw| percent_decode(raw).eq(path_info.iter().copied()))
        {
            out.extend(percent_encode(raw, PATH_RAW));
            return None;
        }
    }
    if !rest.starts_with(b"/") {
        out.push('/');
    }
    out.extend(percent_encode(rest, PATH));
    prefix.map(|prefix| percent_encode(prefix, PATH).to_string())
}

/// Writes the response to a uwsgi request as hyper writes one to an HTTP/1.0
/// client whose connection closes after it (the head the front sees does not
/// depend on which of the two answered): the status line, the headers with
/// `content-length` when the body's length is known and `date` when the app
/// set none, then the body, none for HEAD, 204 and 304; its end told by its
/// length or by the close that follows. A body that fails, or ends short of
/// its length, is an error: the connection closes without finishing it.
///
/// The head is made before the future, which holds only it and the body.
pub(super) fn write_response<'a, W, B>(
    io: &'a mut W,
    res: http::Response<B>,
    head_request: bool,
) -> impl Future<Output = io::Result<()>> + 'a
where
    W: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes> + Unpin + 'a,
    B::Error: std::fmt::Display,
{
    let framed = frame(res, head_request);
    async move {
        let (head, body) = framed?;
        let Some((mut body, limit)) = body else {
            return write_all(io, &head, &[]).await;
        };
        let mut head = Some(head);
        let mut remaining = limit.unwrap_or(u64::MAX);
        while remaining > 0 {
            let frame = match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None if limit.is_none() => break,
                None => return Err(io::Error::other("the body ended short of its length")),
                Some(Err(e)) => return Err(io::Error::other(format!("the body failed: {e}"))),
                Some(Ok(frame)) => frame,
            };
            let Ok(mut data) = frame.into_data() else {
                continue; // trailers: not in HTTP/1.0
            };
            if data.len() as u64 > remaining {
                data.truncate(remaining as usize);
            }
            remaining -= data.len() as u64;
            write_all(io, head.take().as_deref().unwrap_or_default(), &data).await?;
        }
        match head {
            Some(head) => write_all(io, &head, &[]).await,
            None => Ok(()),
        }
    }
}

/// A body to send, and how many of its bytes (`None`: all of them).
type ToSend<B> = Option<(B, Option<u64>)>;

/// The response's head as `write_response` sends it, and its body unless
/// the response has none to send.
fn frame<B>(res: http::Response<B>, head_request: bool) -> io::Result<(Vec<u8>, ToSend<B>)>
where
    B: http_body::Body<Data = Bytes>,
{
    let (parts, body) = res.into_parts();
    let status = parts.status;
    if status.is_informational() {
        // hyper answers a 1xx response, which it cannot send, with a 500.
        let mut head = b"HTTP/1.0 500 Internal Server Error\r\ncontent-length: 0\r\n".to_vec();
        push_date(&mut head);
        head.extend_from_slice(b"\r\n");
        return Ok((head, None));
    }
    let may_have_length = !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let length = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let mut head = Vec::with_capacity(64 + 40 * parts.headers.len());
    head.extend_from_slice(b"HTTP/1.0 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    let reason = match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => reason.as_bytes(),
        None => status.canonical_reason().unwrap_or_default().as_bytes(),
    };
    head.extend_from_slice(reason);
    head.extend_from_slice(b"\r\n");
    // How many bytes of the body to send; `None`, all of it.
    let mut limit = None;
    let mut wrote_length = false;
    let mut wrote_date = false;
    for (name, value) in &parts.headers {
        match *name {
            CONTENT_LENGTH => {
                if wrote_length || (length == Some(0) && !head_request) {
                    continue;
                }
                limit = match length {
                    Some(len) => Some(len),
                    None => match std::str::from_utf8(value.as_bytes())
                        .ok()
                        .and_then(|v| v.parse().ok())
                    {
                        Some(len) => Some(len),
                        None => return Err(io::Error::other("a bad content-length")),
                    },
                };
                wrote_length = true;
            }
            // HTTP/1.0 has no chunked body, and so no trailers.
            TRANSFER_ENCODING | TRAILER => continue,
            DATE => wrote_date = true,
            _ => {}
        }
        push_field(&mut head, name.as_str(), value.as_bytes());
    }
    if !wrote_length && may_have_length {
        match length {
            Some(0) if head_request => {}
            Some(len) => {
                let mut digits = itoa::Buffer::new();
                push_field(&mut head, "content-length", digits.format(len).as_bytes());
                limit = Some(len);
            }
            None => {}
        }
    }
    if !wrote_date {
        push_date(&mut head);
    }
    head.extend_from_slice(b"\r\n");
    let to_send = !head_request && may_have_length;
    Ok((head, to_send.then_some((body, limit))))
}

/// Writes `head`, then `data`, in as few `writev`s as the socket takes.
async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut head: &[u8],
    mut data: &[u8],
) -> io::Result<()> {
    while !head.is_empty() || !data.is_empty() {
        // Never an empty buffer first: a file's stand-in is found by where its
        // slice points (sendfile.rs).
        let bufs = [io::IoSlice::new(head), io::IoSlice::new(data)];
        let bufs = if head.is_empty() {
            &bufs[1..]
        } else {
            &bufs[..]
        };
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        data = &data[n - from_head..];
    }
    Ok(())
}

/// Appends the `date` field, as hyper does: the time, formatted once a second
/// on each thread.
fn push_date(head: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, date)| {
        if *at != secs || date.is_empty() {
            *at = secs;
            *date = httpdate::fmt_http_date(now);
        }
        push_field(head, "date", date.as_bytes());
    });
}

/// Appends `name: value` and its line's end.
fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackway_test_support::http::{nginx_uwsgi_vars, uwsgi_packet as packet};

    /// The request a packet makes, read as `plain` or `open` reads it.
    async fn read(bytes: &[u8]) -> Result<Opened, Refused> {
        let mut io = bytes;
        made(read_packet(&mut io, true).await.unwrap())
    }

    fn made(read: Result<Read, Refused>) -> Result<Opened, Refused> {
        match read? {
            Read::Opened(opened) => Ok(*opened),
            Read::Plain(packet) => reopen(&packet).map(|opened| *opened),
        }
    }

    fn head(opened: &Opened) -> String {
        String::from_utf8(opened.http1().to_vec()).unwrap()
    }

    /// nginx's `uwsgi_params`, for a request of `uri` with `extra` variables.
    fn nginx(
        uri: &str,
        path_info: &str,
        extra: &[(&'static str, &'static str)],
    ) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = (nginx_uwsgi_vars(uri, path_info).into_iter())
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        vars.push(("HTTP_HOST".into(), "example.org".into()));
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

    /// The packet as `plain` reads it, if it does.
    fn plain_of(vars: &[(&str, &str)]) -> Option<Packet> {
        let bytes = Bytes::from(packet(vars));
        let end = bytes.len();
        plain(&bytes, end)
    }

    /// Every view of a packet `plain` reads is what the request's environ
    /// says of the same request as the server makes it, mounted or not: an
    /// app that takes the packet sees what it would see of the request.
    #[test]
    fn a_plain_packet_says_what_the_request_made_of_it_says() {
        use crate::{Connection, RequestExt};
        // nginx's variables, each of `extra`'s replacing its namesake.
        let nginx = |uri: &str, path_info: &str, extra: &[(&'static str, &'static str)]| {
            let mut vars = nginx(uri, path_info, &[]);
            for (name, value) in extra {
                match vars.iter_mut().find(|(n, _)| n == name) {
                    Some(var) => var.1 = (*value).to_owned(),
                    None => vars.push(((*name).to_owned(), (*value).to_owned())),
                }
            }
            vars
        };
        let cases: Vec<Vec<(String, String)>> = vec![
            nginx("/", "/", &[]),
            nginx(
                "/x?y=1&z=%20&e=%E9",
                "/x",
                &[("HTTP_USER_AGENT", "t/1"), ("HTTP_ACCEPT", "*/*")],
            ),
            nginx(
                "/a%2Fb/caf%C3%A9/%FF/sp%20ace/%252F",
                "/a/b/caf\u{e9}/sp ace/%2F",
                &[],
            ),
            nginx("//a//b/c", "/a/b/c", &[]),
            nginx("/q?a=<b>%20c", "/q", &[]),
            // Not plain: a REQUEST_URI that is not ASCII.
            nginx("/q?a=\u{e9}", "/q", &[]),
            nginx("/app/x?k=v", "/app/x", &[("SCRIPT_NAME", "/app")]),
            nginx("/app", "/app", &[("SCRIPT_NAME", "/app/")]),
            nginx("/h", "/h", &[("HTTP_HOST", "Example.COM:8080")]),
            nginx(
                "/h",
                "/h",
                &[("SERVER_NAME", ""), ("HTTP_HOST", "example.com:8080")],
            ),
            nginx(
                "/h",
                "/h",
                &[("SERVER_NAME", ""), ("HTTP_HOST", "[::1]:8080")],
            ),
            nginx("/s", "/s", &[("HTTPS", "on"), ("SERVER_PORT", "443")]),
            nginx("/s", "/s", &[("REQUEST_SCHEME", "https")]),
            nginx("/v", "/v", &[("SERVER_PROTOCOL", "HTTP/1.0")]),
            nginx("/v", "/v", &[("SERVER_PROTOCOL", "HTTP/2.0")]),
            nginx(
                "/r",
                "/r",
                &[("REMOTE_ADDR", "2001:db8::1"), ("REMOTE_PORT", "")],
            ),
            nginx(
                "/r",
                "/r",
                &[("REMOTE_PORT", "+80"), ("SERVER_PORT", "08080")],
            ),
            nginx(
                "/f",
                "/f",
                &[
                    ("HTTP_COOKIE", "a=1; b=2"),
                    ("HTTP_X_EMPTY", ""),
                    ("HTTP_X_TRACE_ID", "abc"),
                    ("HTTP_CONTENT_TYPE", "text/plain"),
                    ("REMOTE_USER", "alice"),
                    ("UWSGI_SCRIPT", "x"),
                    ("MY_VAR", "v\u{e9}"),
                ],
            ),
            nginx("/m", "/m", &[("REQUEST_METHOD", "HEAD")]),
            nginx("/m", "/m", &[("REQUEST_METHOD", "PURGE")]),
            nginx(
                "/c",
                "/c",
                &[("CONTENT_LENGTH", "0"), ("CONTENT_TYPE", "text/plain")],
            ),
        ];
        let mut plain_ones = 0;
        for vars in &cases {
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let Some(mut packet) = plain_of(&vars) else {
                continue;
            };
            plain_ones += 1;
            let opened = *reopen(&packet).unwrap();
            let mut req = http::Request::from_parts(opened.head, ());
            if let Some(forwarded) = opened.forwarded {
                req.extensions_mut().insert(forwarded);
            }
            req.extensions_mut().insert(Connection {
                remote_addr: opened.remote_addr,
                local_addr: Some(([127, 0, 0, 1], 3031).into()),
                scheme: match opened.https {
                    true => Scheme::HTTPS,
                    false => Scheme::HTTP,
                },
                listener: 0,
            });
            // At the root, then mounted a segment down where there is one.
            let segment = packet.path_info()[1..].find('/').map(|end| end + 1);
            for mount in [None, segment] {
                if let Some(len) = mount {
                    assert!(req.push_script_name(len) && packet.push_script_name(len));
                }
                let env = req.environ();
                let case = format!("{vars:?} mounted {mount:?}");
                assert_eq!(packet.method(), req.method(), "{case}");
                assert_eq!(Some(packet.target()), req.uri().path_and_query(), "{case}");
                assert_eq!(packet.version(), req.version(), "{case}");
                assert_eq!(packet.mount_path(), env.mount_path(), "{case}");
                assert_eq!(packet.path_info(), env.path_info(), "{case}");
                assert_eq!(packet.query_string(), env.query_string(), "{case}");
                assert_eq!(
                    packet.request_target(),
                    env.request_target().as_bytes(),
                    "{case}"
                );
                assert_eq!(packet.server_name(), env.server_name().as_bytes(), "{case}");
                assert_eq!(packet.server_port(), env.server_port(), "{case}");
                assert_eq!(packet.server_protocol(), env.server_protocol(), "{case}");
                assert_eq!(Some(packet.remote_addr()), env.remote_addr(), "{case}");
                assert_eq!(packet.url_scheme(), env.url_scheme(), "{case}");
                assert_eq!(packet.ssl_client(), env.ssl_client(), "{case}");
                let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                env.for_each_cgi_header(|n, v| headers.push((n.as_bytes().to_vec(), v.to_vec())));
                let mut theirs: Vec<(Vec<u8>, Vec<u8>)> = packet
                    .cgi_headers()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                headers.sort();
                theirs.sort();
                assert_eq!(theirs, headers, "{case}");
                let front: Vec<(&[u8], &[u8])> = env
                    .front_vars()
                    .iter()
                    .map(|(n, v)| (&n[..], &v[..]))
                    .collect();
                assert_eq!(packet.front_vars().collect::<Vec<_>>(), front, "{case}");
            }
        }
        assert_eq!(plain_ones, cases.len() - 1);
    }

    /// What `plain` leaves to `open`: packets whose request says more than
    /// their variables as they stand, or that `open` refuses.
    #[test]
    fn a_packet_that_is_not_plain_is_left_to_be_opened() {
        let not_plain: &[&[(&str, &str)]] = &[
            &[("HTTP_COOKIE", "a=1"), ("HTTP_COOKIE", "b=2")],
            &[("HTTP_x_lower", "1")],
            &[("HTTP_X_BREAK", "a\r\nb")],
            &[("HTTP_TRANSFER_ENCODING", "chunked")],
            &[("CONTENT_LENGTH", "5")],
            &[("HTTP_HOST", "")],
            &[("HTTP_HOST", "a@b")],
            &[("REQUEST_URI", "no-slash")],
            &[("SERVER_PORT", "http")],
            &[("REMOTE_ADDR", "unknown")],
            &[("REQUEST_METHOD", "G T")],
            &[("DOCUMENT_ROOT", "/twice")],
        ];
        for extra in not_plain {
            // Each replaces nginx's variable of its name, or comes after them.
            let mut vars = nginx("/x", "/x", &[]);
            for (name, value) in *extra {
                match vars
                    .iter_mut()
                    .find(|(n, _)| n == name && *name != "HTTP_COOKIE" && *name != "DOCUMENT_ROOT")
                {
                    Some(var) => var.1 = (*value).to_owned(),
                    None => vars.push(((*name).to_owned(), (*value).to_owned())),
                }
            }
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert!(plain_of(&vars).is_none(), "{extra:?}");
        }
        let vars = nginx("/x", "/x", &[]);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert!(plain_of(&vars).is_some(), "nginx's own");
    }

    #[tokio::test]
    async fn a_plain_packet_but_a_name_without_its_value_is_refused() {
        let vars = nginx("/x", "/x", &[]);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut bytes = packet(&vars);
        bytes.extend_from_slice(&[1, 0, b'A']);
        let len = u16::try_from(bytes.len() - 4).unwrap().to_le_bytes();
        bytes[1..3].copy_from_slice(&len);
        let end = bytes.len();
        assert!(plain(&Bytes::from(bytes.clone()), end).is_none());
        let refused = read(&bytes).await.unwrap_err();
        assert!(refused.why.contains("past the end"), "{}", refused.why);
    }

    #[tokio::test]
    async fn nginx_params_become_an_http_head() {
        let opened = nginx_request(
            "/app/caf%C3%A9?q=a%20b&x=1",
            "/app/café",
            &[
                ("HTTP_X_TRACE_ID", "abc"),
                ("HTTP_X_EMPTY", ""),
                ("HTTP_HOST", "spoofed.example"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            head(&opened),
            "GET /app/caf%C3%A9?q=a%20b&x=1 HTTP/1.0\r\nhost: example.org\r\nx-trace-id: abc\r\nx-empty: \r\n\r\n",
            "the raw path kept, empty CONTENT_* no headers, the first HTTP_HOST taken"
        );
        assert_eq!(
            opened.remote_addr,
            Some("203.0.113.7:51000".parse().unwrap())
        );
        assert!(!opened.https);
        assert_eq!(opened.head.version, Version::HTTP_11);
        let front = Forwarded {
            port: Some(80),
            server_name: Some("example.org".into()),
            vars: vec![
                ("CONTENT_TYPE".into(), "".into()),
                ("CONTENT_LENGTH".into(), "".into()),
                ("DOCUMENT_ROOT".into(), "/usr/share/nginx/html".into()),
                ("REQUEST_SCHEME".into(), "http".into()),
            ],
            ..Forwarded::default()
        };
        assert_eq!(
            opened.forwarded,
            Some(front),
            "nginx's SERVER_PORT, and its variables the request is not made of \
             (the empty CONTENT_* among them, as uWSGI's environ has them)"
        );
    }

    #[tokio::test]
    async fn a_field_sent_twice_is_both_values_but_a_host_or_a_length() {
        // nginx 1.22 sends each of a repeated field as a variable of its own.
        let opened = nginx_request(
            "/",
            "/",
            &[
                ("HTTP_COOKIE", "a=1"),
                ("HTTP_ACCEPT", "text/html"),
                ("HTTP_COOKIE", "b=2"),
                ("HTTP_ACCEPT", "*/*"),
                ("HTTP_HOST", "second.example"),
                ("CONTENT_TYPE", "text/plain"),
                ("CONTENT_TYPE", "text/html"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            head(&opened),
            "GET / HTTP/1.0\r\nhost: example.org\r\ncookie: a=1\r\ncookie: b=2\r\n\
             accept: text/html\r\naccept: */*\r\n\r\n"
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
        let names: Vec<&str> = (vars.iter())
            .map(|(n, _)| std::str::from_utf8(n).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "CONTENT_TYPE",
                "CONTENT_LENGTH",
                "DOCUMENT_ROOT",
                "REQUEST_SCHEME",
                "REMOTE_USER",
                "APP_ENV"
            ],
            "what the request is made of, UWSGI_* and headers stay out"
        );
        assert_eq!(vars[4].1, "alice", "the first of a name wins");
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
        // (REQUEST_URI, PATH_INFO, SCRIPT_NAME) → (target path, prefix, the
        // client's REQUEST_URI kept for the app where the target differs)
        let table = [
            (
                "/app/x?y",
                "/app/x",
                "/app",
                "/x",
                Some("/app"),
                Some("/app/x?y"),
            ),
            ("/app", "/app", "/app", "/", Some("/app"), Some("/app")),
            ("/app/", "/app/", "/app/", "/", Some("/app"), Some("/app/")),
            // Already taken off (uwsgi_param PATH_INFO $1): PATH_INFO stands.
            ("/app/x", "/x", "/app", "/x", Some("/app"), Some("/app/x")),
            // Not on a segment boundary: PATH_INFO stands.
            ("/apps/x", "/apps/x", "/app", "/apps/x", Some("/app"), None),
            // Decoded PATH_INFO is encoded again; % itself too.
            (
                "/app/a%25b%20c",
                "/app/a%b c",
                "/app",
                "/a%25b%20c",
                Some("/app"),
                Some("/app/a%25b%20c"),
            ),
            // No SCRIPT_NAME: REQUEST_URI's bytes, where they decode to PATH_INFO.
            ("/a%2Fb", "/a/b", "", "/a%2Fb", None, None),
            // nginx normalised the path: PATH_INFO wins, the app still sees
            // what the client sent.
            ("/a/../b//c", "/b/c", "", "/b/c", None, Some("/a/../b//c")),
            // Not a request target: not passed on.
            ("/a\u{e9}", "/a", "", "/a", None, None),
        ];
        for (uri, path_info, script_name, path, prefix, client) in table {
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
            let forwarded = opened.forwarded.unwrap_or_default();
            assert_eq!(
                forwarded.prefix.as_deref(),
                prefix,
                "{uri} {path_info} {script_name}"
            );
            assert_eq!(forwarded.request_uri.as_deref(), client, "{uri}");
        }
        // Bytes that are no UTF-8, decoded by nginx: the same bytes, encoded,
        // whether SCRIPT_NAME is taken off or not; a query's raw bytes too.
        for script_name in ["", "/app"] {
            let vars: [(&[u8], &[u8]); 4] = [
                (b"REQUEST_URI", b"/app/%FF%FE?q=\xE9"),
                (b"PATH_INFO", b"/app/\xFF\xFE"),
                (b"SCRIPT_NAME", script_name.as_bytes()),
                (b"QUERY_STRING", b"q=\xE9"),
            ];
            let opened = read(&packet(&vars)).await.unwrap();
            let path = if script_name.is_empty() { "/app" } else { "" };
            assert!(
                head(&opened).starts_with(&format!("GET {path}/%FF%FE?q=%E9 HTTP/1.0\r\n")),
                "{script_name:?}: {}",
                head(&opened)
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
        let opened = made(read_packet(&mut io, true).await.unwrap()).unwrap();
        assert_eq!(head(&opened), head_only);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"hello");
    }

    #[tokio::test]
    async fn a_length_frames_the_body_and_the_clients_transfer_coding_is_left_out() {
        // nginx reads a chunked body whole, sends its length, and passes the
        // client's Transfer-Encoding on as a variable.
        let vars = [
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/upload"),
            ("CONTENT_LENGTH", "5"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
        ];
        let mut bytes = packet(&vars);
        bytes.extend_from_slice(b"hello");
        let opened = read(&bytes).await.unwrap();
        assert!(opened.has_body());
        assert_eq!(
            head(&opened),
            "POST /upload HTTP/1.0\r\ncontent-length: 5\r\n\r\nhello"
        );
        // Without a length, the coding frames the body: hyper reads it.
        let vars = [
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/upload"),
            ("HTTP_TRANSFER_ENCODING", "chunked"),
        ];
        let opened = read(&packet(&vars)).await.unwrap();
        assert!(opened.has_body());
        assert_eq!(
            head(&opened),
            "POST /upload HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn only_the_fronts_content_variables_say_what_the_body_is() {
        // nginx passes the client's own fields as HTTP_CONTENT_*; uWSGI reads
        // a body by CONTENT_LENGTH alone. An empty CONTENT_LENGTH first is
        // the first of its name too: no body.
        let vars = [
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/upload"),
            ("CONTENT_TYPE", "text/plain"),
            ("CONTENT_LENGTH", ""),
            ("HTTP_CONTENT_LENGTH", "99999"),
            ("HTTP_CONTENT_TYPE", "text/html"),
            ("CONTENT_LENGTH", "99999"),
        ];
        let opened = read(&packet(&vars)).await.unwrap();
        assert!(!opened.has_body());
        assert_eq!(
            head(&opened),
            "POST /upload HTTP/1.0\r\ncontent-type: text/plain\r\n\r\n"
        );
        let front = opened.forwarded.unwrap().vars;
        assert_eq!(front, [("CONTENT_LENGTH".into(), "".into())]);
    }

    /// What `write_response` sends for `res`, with the date taken out.
    async fn written<B>(res: http::Response<B>, head_request: bool) -> io::Result<String>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut out = Vec::new();
        write_response(&mut out, res, head_request).await?;
        let out = String::from_utf8(out).unwrap();
        let (before, rest) = out.split_once("date: ").expect("a date");
        let (date, after) = rest.split_once("\r\n").unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        Ok(format!("{before}{after}"))
    }

    fn response<B>(status: u16, headers: &[(&'static str, &str)], body: B) -> http::Response<B> {
        let mut res = http::Response::new(body);
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            (res.headers_mut()).append(*name, HeaderValue::from_str(value).unwrap());
        }
        res
    }

    type Full = http_body_util::Full<Bytes>;

    /// A body of `chunks` whose length is not known in advance.
    fn stream(
        chunks: &[&'static str],
    ) -> impl http_body::Body<Data = Bytes, Error = io::Error> + Unpin {
        let frames = chunks
            .iter()
            .map(|c| Ok::<_, io::Error>(http_body::Frame::data(Bytes::from_static(c.as_bytes()))));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn a_response_is_written_as_hyper_writes_one_to_an_http_1_0_client() {
        // (status, headers, body, HEAD?) → what the front reads
        let hello = || Full::new(Bytes::from_static(b"hello"));
        let table = [
            (
                written(
                    response(200, &[("content-type", "text/plain")], hello()),
                    false,
                )
                .await,
                "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello",
            ),
            (
                written(response(200, &[], hello()), true).await,
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
            ),
            (
                written(response(404, &[], Full::default()), false).await,
                "HTTP/1.0 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            ),
            (
                written(response(204, &[("x-a", "1")], Full::default()), false).await,
                "HTTP/1.0 204 No Content\r\nx-a: 1\r\n\r\n",
            ),
            (
                written(response(304, &[("etag", "\"a\"")], hello()), false).await,
                "HTTP/1.0 304 Not Modified\r\netag: \"a\"\r\n\r\n",
            ),
            (
                // No length: the close ends it. HTTP/1.0 has no chunked coding.
                written(
                    response(
                        200,
                        &[("transfer-encoding", "chunked")],
                        stream(&["ab", "", "c"]),
                    ),
                    false,
                )
                .await,
                "HTTP/1.0 200 OK\r\n\r\nabc",
            ),
            (
                // The app's length is the one sent, and bounds the body.
                written(
                    response(200, &[("content-length", "2")], stream(&["ab", "cd"])),
                    false,
                )
                .await,
                "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nab",
            ),
            (
                // The app's own reason (Werkzeug's), as hyper sends it.
                written(
                    {
                        let mut res = response(404, &[], Full::default());
                        let reason = hyper::ext::ReasonPhrase::from_static(b"NOT FOUND");
                        res.extensions_mut().insert(reason);
                        res
                    },
                    false,
                )
                .await,
                "HTTP/1.0 404 NOT FOUND\r\ncontent-length: 0\r\n\r\n",
            ),
            (
                written(response(103, &[("link", "</a>")], Full::default()), false).await,
                "HTTP/1.0 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            ),
        ];
        for (written, expected) in table {
            assert_eq!(written.unwrap(), expected);
        }
        // A body that ends short of its length is not passed off as whole.
        let short = response(200, &[("content-length", "9")], stream(&["ab"]));
        assert!(written(short, false).await.is_err());
    }

    #[tokio::test]
    async fn bad_packets_are_refused_with_a_reason() {
        let table: [(Vec<u8>, u16, &str); 8] = [
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
            (packet(&[("HTTP_X_A", "a\x01b")]), 400, "control character"),
            (
                packet(&[("HTTP_HOST", "evil.example@a")]),
                400,
                "is no host",
            ),
            (
                packet(&[("REQUEST_METHOD", "GET /x")]),
                400,
                "REQUEST_METHOD",
            ),
            (
                // Not text: refused, never taken for a GET.
                {
                    let mut p = packet(&[("REQUEST_METHOD", "GzT")]);
                    let at = p.iter().position(|b| *b == b'z').unwrap();
                    p[at] = 0xff;
                    p
                },
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
            read_packet(&mut short, true).await.is_err(),
            "a packet cut short is an I/O error"
        );
    }
}
