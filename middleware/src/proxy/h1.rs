//! A request without a body to a plain HTTP/1.1 upstream, written on a
//! pooled connection and its answer read in the request's own task.
//!
//! hyper's client connection ([`pool`](super::pool)) is a task of its own: a
//! request is handed to it through a channel, and the answer's head and body
//! come back through two more, each a wakeup of one task by the other. A
//! request with no body to stream needs none of that: its head is written
//! whole and the answer read where it is asked for, as an nginx worker reads
//! its upstream in the event that read its client. The answer is read as
//! hyper's client reads one (with httparse, by hyper's framing rules and
//! limits), so the client gets the same either way. A request with a body,
//! or one that asks to upgrade, goes on hyper's connections.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use stackway::Body;
use tokio::io::AsyncWriteExt;

use super::headers::lists;
use super::pool::{Leased, Pool, Sending};
use super::upstream::{SendError, Stream};

/// hyper's limits: a head's bytes (its read buffer's), its fields, and a
/// chunked body's extensions and trailers.
const MAX_HEAD: usize = 8192 + 4096 * 100;
const MAX_FIELDS: usize = 100;
const MAX_EXTENSIONS: u64 = 16 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// The room a read asks the socket to fill, to begin with and at most: it
/// doubles after each read that filled it, as hyper's adaptive reads do.
const READ: usize = 8192;
const MOST_READ: usize = 256 * 1024;

/// Whether `req` goes this way: no body, and no protocol to switch to.
pub(crate) fn takes(req: &Request<Body>) -> bool {
    req.body().is_end_stream()
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(UPGRADE)
}

/// Sends `req` on an idle connection of `pool` (or a new one, and always
/// one when `fresh`), and reads its answer's head.
pub(crate) fn send(pool: Arc<Pool>, req: Request<Body>, fresh: bool) -> Sending {
    let idle = match fresh {
        true => None,
        false => pool.take_bare(),
    };
    let head = encode(&req);
    let method = req.method().clone();
    drop(req);
    Box::pin(async move {
        let reused = idle.is_some();
        let mut conn = match idle {
            Some(conn) => conn,
            None => Conn::new(pool.open().await?),
        };
        match conn.ask(&head, &method).await {
            Ok((parts, framing, keep_alive)) => {
                // The request asks for no close: a `Connection` field stays on its hop.
                let body = Answer::new(conn, framing, keep_alive, pool);
                Ok(Response::from_parts(parts, Leased::Bare(body)))
            }
            Err(e) if reused && e.closed_before_answer() => Err(SendError::Stale(Box::new(e))),
            Err(e) => Err(SendError::Bare(e)),
        }
    })
}

/// The request's head as hyper's client writes it: no body, so no
/// `Transfer-Encoding`.
fn encode(req: &Request<Body>) -> Vec<u8> {
    use std::io::Write as _;
    let (method, uri) = (req.method().as_str(), req.uri());
    let fields: usize = (req.headers().iter())
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(method.len() + uri.path().len() + fields + 40);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    match (uri.scheme(), uri.path_and_query()) {
        (None, Some(origin)) => head.extend_from_slice(origin.as_str().as_bytes()),
        _ => {
            let _ = write!(head, "{uri}");
        }
    }
    head.extend_from_slice(match req.version() {
        Version::HTTP_10 => b" HTTP/1.0\r\n",
        _ => b" HTTP/1.1\r\n",
    });
    for (name, value) in req.headers() {
        if name != TRANSFER_ENCODING {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A connection to a plain HTTP/1.1 upstream, and what has been read of it.
pub(crate) struct Conn {
    io: TokioIo<Stream>,
    buf: BytesMut,
    /// The room the next read asks for.
    room: usize,
}

impl Conn {
    fn new(io: Stream) -> Self {
        Self {
            io: TokioIo::new(io),
            buf: BytesMut::new(),
            room: READ,
        }
    }

    /// Made ready to wait in its pool: a buffer grown for a large body is
    /// not kept.
    pub(crate) fn rest(&mut self) {
        if self.buf.capacity() > READ {
            (self.buf, self.room) = (BytesMut::new(), READ);
        }
    }

    /// Whether an idle connection can carry a request: its upstream has
    /// neither closed it nor sent anything unasked. No system call unless
    /// the socket became readable.
    pub(crate) fn is_idle(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.buf.is_empty() && self.poll_fill(&mut cx).is_pending()
    }

    /// The connection, for hyper to carry a request on: only an idle one,
    /// with nothing read.
    pub(crate) fn into_stream(self) -> Stream {
        self.io.into_inner()
    }

    /// Reads what the socket has; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // What was read before is shared with the answers made of it, so a
        // buffer is taken anew only once the room left runs low, not for
        // each answer.
        if self.buf.capacity() - self.buf.len() < self.room / 8 {
            self.buf.reserve(self.room);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        self.room = match read {
            _ if read == room => (self.room * 2).min(MOST_READ),
            _ if read < self.room / 8 => READ,
            _ => self.room,
        };
        Poll::Ready(Ok(read))
    }

    /// Writes `head`, and reads the answer's head: its parts, how its body
    /// is framed, and whether the connection can carry another request.
    async fn ask(&mut self, head: &[u8], method: &Method) -> Result<(Parts, Framing, bool), Error> {
        self.io.write_all(head).await.map_err(Error::Io)?;
        loop {
            if let Some(answer) = parse(&mut self.buf, method)? {
                return Ok(answer);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Error::TooLarge);
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx)).await;
            if read.map_err(Error::Io)? == 0 {
                return Err(Error::Closed);
            }
        }
    }
}

/// The head of the answer at the start of `buf`, taken from it, past any
/// informational answer (`100 Continue`, `103 Early Hints`): `None` until
/// it is all there. As hyper's client parses it.
fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<(Parts, Framing, bool)>, Error> {
    while !buf.is_empty() {
        // Where each field's name and value are in the head.
        let mut at = [[0u32; 4]; MAX_FIELDS];
        let (len, status, reason, version, count) = {
            let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                buf,
                &mut fields,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(Error::Parse(e)),
            };
            let status =
                (res.code.and_then(|code| StatusCode::from_u16(code).ok())).ok_or(Error::Status)?;
            let reason = res.reason.unwrap_or_default();
            let reason = (Some(reason) != status.canonical_reason())
                .then(|| Bytes::copy_from_slice(reason.as_bytes()));
            let version = match res.version {
                Some(1) => Version::HTTP_11,
                _ => Version::HTTP_10,
            };
            let start = buf.as_ptr() as usize;
            for (at, field) in at.iter_mut().zip(res.headers.iter()) {
                let (name, value) = (field.name.as_ptr() as usize, field.value.as_ptr() as usize);
                let offset = |p: usize, len: usize| [p - start, p - start + len].map(|o| o as u32);
                let [name_start, name_end] = offset(name, field.name.len());
                let [value_start, value_end] = offset(value, field.value.len());
                *at = [name_start, name_end, value_start, value_end];
            }
            (len, status, reason, version, res.headers.len())
        };
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        let mut keep_alive = version == Version::HTTP_11;
        let mut closing = false;
        let mut said = Said::default();
        for &[name_start, name_end, value_start, value_end] in &at[..count] {
            let name = &head[name_start as usize..name_end as usize];
            let name = HeaderName::from_bytes(name).map_err(|_| Error::Field)?;
            let value = head.slice(value_start as usize..value_end as usize);
            let value = HeaderValue::from_maybe_shared(value).map_err(|_| Error::Field)?;
            if name == CONNECTION {
                // Once a line asks to close, a later `keep-alive` does not undo it.
                if closing || lists(&value, "close") {
                    (closing, keep_alive) = (true, false);
                } else if !keep_alive {
                    keep_alive = lists(&value, "keep-alive");
                }
            }
            said.note(&name, &value);
            headers.append(name, value);
        }
        let Some(framing) = framing(status, version, &said, method)? else {
            // An informational answer: the final one follows.
            continue;
        };
        let (mut parts, ()) = Response::new(()).into_parts();
        (parts.status, parts.version, parts.headers) = (status, version, headers);
        if let Some(reason) = reason {
            let reason = hyper::ext::ReasonPhrase::try_from(reason).map_err(|_| Error::Status)?;
            parts.extensions.insert(reason);
        }
        let keep_alive = keep_alive && status != StatusCode::SWITCHING_PROTOCOLS;
        return Ok(Some((parts, framing, keep_alive)));
    }
    Ok(None)
}

/// How the body of an answer to `method` is framed, as hyper's client
/// decides (RFC 9112 §6.3); `None` for an informational answer, which has
/// none and precedes the answer.
fn framing(
    status: StatusCode,
    version: Version,
    said: &Said,
    method: &Method,
) -> Result<Option<Framing>, Error> {
    match status.as_u16() {
        101 | 204 | 304 => return Ok(Some(Framing::Length(0))),
        100..=199 => return Ok(None),
        _ if method == Method::HEAD => return Ok(Some(Framing::Length(0))),
        _ => {}
    }
    Ok(Some(match (said.chunked, said.length) {
        (Some(_), _) if version == Version::HTTP_10 => {
            return Err(Error::Framing("a Transfer-Encoding in an HTTP/1.0 answer"));
        }
        (Some(true), _) => Framing::Chunked(Chunked::default()),
        (Some(false), _) | (None, None) => Framing::Eof,
        (None, Some(Some(length))) => Framing::Length(length),
        (None, Some(None)) => return Err(Error::Length),
    }))
}

/// What an answer's fields say of its framing, noted as they are read.
#[derive(Default)]
struct Said {
    /// Whether the last `Transfer-Encoding` line ends in `chunked`, if
    /// there is one.
    chunked: Option<bool>,
    /// The `Content-Length`, if there is one: `Some(None)` unless every
    /// value of every line is the same number.
    length: Option<Option<u64>>,
}

impl Said {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == TRANSFER_ENCODING {
            let last = (value.to_str().ok()).and_then(|value| value.rsplit(',').next());
            self.chunked = Some(last.is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")));
        } else if name == CONTENT_LENGTH {
            let mut length = match self.length {
                // Once not one number, never one.
                Some(None) => return,
                Some(Some(n)) => Some(n),
                None => None,
            };
            let one = value.to_str().is_ok_and(|value| {
                value.split(',').all(|n| {
                    let n = number(n.trim());
                    let same = n.is_some() && (length.is_none() || length == n);
                    length = n;
                    same
                })
            });
            self.length = Some(length.filter(|_| one));
        }
    }
}

/// A length: digits alone, no more than hyper takes.
fn number(digits: &str) -> Option<u64> {
    let n = (digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse::<u64>().ok());
    n.flatten().filter(|&n| n < u64::MAX - 1)
}

/// How an answer's body ends.
#[derive(Debug)]
enum Framing {
    /// After so many more bytes.
    Length(u64),
    Chunked(Chunked),
    /// With the connection.
    Eof,
}

/// The answer's body, read from its connection; the connection goes back
/// to its pool once the body has been read to its end.
pub(crate) struct Answer {
    /// Until the body has been read to its end, or failed.
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl Answer {
    fn new(conn: Conn, framing: Framing, keep_alive: bool, pool: Arc<Pool>) -> Self {
        let keep_alive = keep_alive && !matches!(framing, Framing::Eof);
        let mut answer = Self {
            conn: Some(conn),
            framing,
            keep_alive,
            pool,
        };
        if answer.is_end_stream() {
            answer.done();
        }
        answer
    }

    /// The body read to its end: the connection is given back if it can
    /// carry another request (nothing unasked came after the answer).
    fn done(&mut self) {
        if let Some(conn) = self.conn.take().filter(|conn| conn.buf.is_empty()) {
            if self.keep_alive {
                self.pool.give_back_bare(conn);
            }
        }
    }
}

impl Framing {
    /// The next frame of what has been read into `buf`, if there is one yet.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        Ok(match self {
            Self::Length(0) => Decoded::End,
            Self::Length(_) | Self::Eof if buf.is_empty() => Decoded::More,
            Self::Length(left) => {
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Decoded::Frame(Frame::data(buf.split_to(n).freeze()))
            }
            Self::Eof => Decoded::Frame(Frame::data(buf.split().freeze())),
            Self::Chunked(chunked) => chunked.decode(buf)?,
        })
    }
}

/// What the bytes read so far make of the body.
enum Decoded {
    Frame(Frame<Bytes>),
    End,
    /// More bytes are needed.
    More,
}

impl Drop for Answer {
    fn drop(&mut self) {
        if matches!(self.framing, Framing::Length(0)) {
            self.done();
        }
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.decode(&mut conn.buf) {
                Ok(Decoded::Frame(frame)) => {
                    if this.is_end_stream() {
                        this.done();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Decoded::End) => {
                    this.done();
                    return Poll::Ready(None);
                }
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Decoded::More) => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::Eof) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Incomplete)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A chunked body's decoding (RFC 9112 §7.1), step for step as hyper's.
#[derive(Debug, Default)]
struct Chunked {
    state: State,
    /// The chunk's size, then what is left of it.
    size: u64,
    /// The extensions' bytes over the whole body.
    extensions: u64,
    /// The trailer section, as it comes, and its lines.
    trailers: Option<BytesMut>,
    trailer_lines: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            match self.state {
                State::End => return Ok(Decoded::End),
                State::Body => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = buf
                        .len()
                        .min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::BodyCr;
                    }
                    return Ok(Decoded::Frame(Frame::data(buf.split_to(n).freeze())));
                }
                _ => {}
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::More);
            };
            buf.advance(1);
            self.state = self.step(byte)?;
            if self.state == State::End {
                if let Some(mut trailers) = self.trailers.take() {
                    let trailers = trailers_of(&mut trailers, self.trailer_lines)?;
                    return Ok(Decoded::Frame(Frame::trailers(trailers)));
                }
            }
        }
    }

    fn step(&mut self, byte: u8) -> Result<State, Error> {
        let hex = |b: u8| char::from(b).to_digit(16).map(u64::from);
        Ok(match (self.state, byte) {
            (State::Start, b) => {
                self.size = hex(b).ok_or(Error::Chunk("a chunk size line without a size"))?;
                State::Size
            }
            (State::Size, b) if hex(b).is_some() => {
                self.size = (self.size.checked_mul(16))
                    .and_then(|size| size.checked_add(hex(b)?))
                    .ok_or(Error::Chunk("a chunk size past 64 bits"))?;
                State::Size
            }
            (State::Size | State::SizeLws, b'\t' | b' ') => State::SizeLws,
            (State::Size | State::SizeLws, b';') => State::Extension,
            (State::Size | State::SizeLws | State::Extension, b'\r') => State::SizeLf,
            (State::Size, _) => return Err(Error::Chunk("an invalid chunk size")),
            (State::SizeLws, _) => return Err(Error::Chunk("an invalid chunk size line")),
            (State::Extension, b'\n') => {
                return Err(Error::Chunk("a chunk extension with a line feed"));
            }
            (State::Extension, _) => {
                self.extensions += 1;
                if self.extensions >= MAX_EXTENSIONS {
                    return Err(Error::Chunk("chunk extensions over their limit"));
                }
                State::Extension
            }
            (State::SizeLf, b'\n') if self.size == 0 => State::EndCr,
            (State::SizeLf, b'\n') => State::Body,
            (State::SizeLf, _) => return Err(Error::Chunk("a chunk size line without its LF")),
            (State::BodyCr, b'\r') => State::BodyLf,
            (State::BodyCr, _) => return Err(Error::Chunk("a chunk without its CR")),
            (State::BodyLf, b'\n') => State::Start,
            (State::BodyLf, _) => return Err(Error::Chunk("a chunk without its LF")),
            (State::Trailer, b) => {
                self.put_trailer(b)?;
                match b {
                    b'\r' => State::TrailerLf,
                    _ => State::Trailer,
                }
            }
            (State::TrailerLf, b'\n') => {
                if self.trailer_lines >= MAX_FIELDS {
                    return Err(Error::Chunk("too many trailer fields"));
                }
                self.trailer_lines += 1;
                self.put_trailer(b'\n')?;
                State::EndCr
            }
            (State::TrailerLf, _) => return Err(Error::Chunk("a trailer line without its LF")),
            (State::EndCr, b'\r') => {
                if self.trailers.is_some() {
                    self.put_trailer(b'\r')?;
                }
                State::EndLf
            }
            (State::EndCr, b) => {
                match &mut self.trailers {
                    None => {
                        let mut trailers = BytesMut::with_capacity(64);
                        trailers.put_u8(b);
                        self.trailers = Some(trailers);
                    }
                    Some(_) => self.put_trailer(b)?,
                }
                State::Trailer
            }
            (State::EndLf, b'\n') => {
                if self.trailers.is_some() {
                    self.put_trailer(b'\n')?;
                }
                State::End
            }
            (State::EndLf, _) => return Err(Error::Chunk("a chunked body's end without its LF")),
            (State::Body | State::End, _) => unreachable!("not read byte by byte"),
        })
    }

    fn put_trailer(&mut self, byte: u8) -> Result<(), Error> {
        let trailers = self.trailers.as_mut().expect("begun by EndCr");
        if trailers.len() >= MAX_TRAILERS {
            return Err(Error::Chunk("trailers over their limit"));
        }
        trailers.put_u8(byte);
        Ok(())
    }
}

/// The trailer section's fields.
fn trailers_of(section: &mut BytesMut, lines: usize) -> Result<HeaderMap, Error> {
    let mut fields = vec![httparse::EMPTY_HEADER; lines];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes());
                let value = HeaderValue::from_bytes(field.value);
                let (Ok(name), Ok(value)) = (name, value) else {
                    return Err(Error::Field);
                };
                trailers.append(name, value);
            }
            Ok(trailers)
        }
        Ok(httparse::Status::Partial) => Err(Error::Chunk("a trailer section cut short")),
        Err(e) => Err(Error::Parse(e)),
    }
}

/// Why a request went unanswered, or its answer could not be read.
#[derive(Debug)]
pub(crate) enum Error {
    Io(io::Error),
    /// The connection closed before the answer's head was whole.
    Closed,
    TooLarge,
    Parse(httparse::Error),
    Status,
    Field,
    Framing(&'static str),
    Length,
    Chunk(&'static str),
    /// The connection closed before the body's length was reached.
    Incomplete,
}

impl Error {
    /// Whether the connection closed (or was reset) before any answer came:
    /// no answer, rather than a bad one.
    pub(crate) fn closed_before_answer(&self) -> bool {
        match self {
            Self::Closed => true,
            Self::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "the connection failed: {e}"),
            Self::Closed => f.write_str("connection closed before message completed"),
            Self::TooLarge => f.write_str("message head is too large"),
            Self::Parse(e) => write!(f, "invalid HTTP answer: {e}"),
            Self::Status => f.write_str("invalid HTTP status code"),
            Self::Field => f.write_str("invalid header field"),
            Self::Framing(why) => write!(f, "invalid answer framing: {why}"),
            Self::Length => f.write_str("invalid Content-Length"),
            Self::Chunk(why) => write!(f, "invalid chunked body: {why}"),
            Self::Incomplete => f.write_str("end of file before message length reached"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Parse(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head at the start of `bytes` and how its body is framed, as read
    /// for a `method` request; what is left of `bytes` after the head.
    fn head(bytes: &str, method: &Method) -> Result<Option<(Parts, Framing, bool, usize)>, Error> {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse(&mut buf, method)?;
        Ok(parsed.map(|(parts, framing, keep_alive)| (parts, framing, keep_alive, buf.len())))
    }

    fn framed(bytes: &str, method: &Method) -> String {
        match head(bytes, method) {
            Ok(Some((_, framing, keep_alive, _))) => format!("{framing:?} {keep_alive}"),
            Ok(None) => "partial".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn an_answer_is_framed_as_hyper_s_client_frames_it() {
        assert_eq!(
            framed(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                &Method::GET
            ),
            "Length(2) true"
        );
        assert_eq!(
            framed(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                &Method::HEAD
            ),
            "Length(0) true"
        );
        assert_eq!(
            framed(
                "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n",
                &Method::GET
            ),
            "Length(0) true"
        );
        assert_eq!(
            framed("HTTP/1.1 304 Not Modified\r\n\r\n", &Method::GET),
            "Length(0) true"
        );
        // Read to the close, which ends the connection.
        assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n", &Method::GET), "Eof true");
        assert_eq!(
            framed(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                &Method::GET
            ),
            "Eof true"
        );
        // Transfer-Encoding wins over a length; chunked must be the last coding.
        assert!(
            framed(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                &Method::GET
            )
            .starts_with("Chunked")
        );
        assert_eq!(
            framed(
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &Method::GET
            ),
            "error: invalid answer framing: a Transfer-Encoding in an HTTP/1.0 answer"
        );
        // One length, however often it is said.
        assert_eq!(
            framed(
                "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\n",
                &Method::GET
            ),
            "Length(2) true"
        );
        for bad in ["2\r\nContent-Length: 3", "+2", "", "0x2", "2 2"] {
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                framed(&answer, &Method::GET),
                "error: invalid Content-Length",
                "{bad:?}"
            );
        }
        // Keep-alive: HTTP/1.1 unless asked to close; HTTP/1.0 only when asked to keep.
        assert_eq!(
            framed(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                &Method::GET
            ),
            "Length(0) false"
        );
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &Method::GET),
            "Length(0) false"
        );
        assert_eq!(
            framed(
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
                &Method::GET
            ),
            "Length(0) true"
        );
        // A switch is never kept; no status outside 100-999, no HTTP/2 status line.
        assert_eq!(
            framed("HTTP/1.1 101 Switching Protocols\r\n\r\n", &Method::GET),
            "Length(0) false"
        );
        assert_eq!(
            framed("HTTP/1.1 099 Odd\r\n\r\n", &Method::GET),
            "error: invalid HTTP status code"
        );
        assert!(
            framed("HTTP/2.0 200 OK\r\n\r\n", &Method::GET)
                .starts_with("error: invalid HTTP answer")
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET),
            "partial"
        );
    }

    #[test]
    fn informational_answers_are_read_past_and_odd_reasons_kept() {
        let answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 Fine\r\nContent-Length: 2\r\n\r\nok";
        let (parts, framing, _, left) = head(answer, &Method::GET).unwrap().unwrap();
        assert_eq!(
            (parts.status, format!("{framing:?}"), left),
            (StatusCode::OK, "Length(2)".into(), 2)
        );
        assert!(!parts.headers.contains_key("link"));
        let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().unwrap();
        assert_eq!(reason.as_bytes(), b"Fine");
        // The canonical reason is not kept; an informational answer alone is no answer yet.
        let (parts, ..) = head("HTTP/1.1 200 OK\r\n\r\n", &Method::GET)
            .unwrap()
            .unwrap();
        assert!(parts.extensions.get::<hyper::ext::ReasonPhrase>().is_none());
        assert!(
            head("HTTP/1.1 100 Continue\r\n\r\n", &Method::GET)
                .unwrap()
                .is_none()
        );
    }

    /// A chunked body's frames, decoded from `bytes` fed `step` bytes at a
    /// time: its data joined, then its trailers.
    fn dechunk(bytes: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let (mut chunked, mut buf) = (Chunked::default(), BytesMut::new());
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = bytes.chunks(step);
        loop {
            match chunked.decode(&mut buf)? {
                Decoded::Frame(frame) => match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Decoded::End => return Ok((data, trailers)),
                Decoded::More => match fed.next() {
                    Some(more) => buf.extend_from_slice(more),
                    None => return Err(Error::Incomplete),
                },
            }
        }
    }

    #[test]
    fn a_chunked_body_is_decoded_as_hyper_decodes_it() {
        let body = b"5;name=value\r\nhello\r\n6 \t\r\n world\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n";
        for step in [1, 2, 7, body.len()] {
            let (data, trailers) = dechunk(body, step).unwrap();
            assert_eq!(data, b"hello world0123456789");
            let trailers = trailers.unwrap();
            assert_eq!(
                (trailers["x-t"].as_bytes(), trailers["x-u"].as_bytes()),
                (&b"1"[..], &b"2"[..])
            );
        }
        assert_eq!(dechunk(b"0\r\n\r\n", 1).unwrap(), (Vec::new(), None));
        for (bad, why) in [
            (&b"5\nhello\r\n0\r\n\r\n"[..], "an invalid chunk size"),
            (b"5\rhello\r\n0\r\n\r\n", "a chunk size line without its LF"),
            (b"5\r\nhello\n0\r\n\r\n", "a chunk without its CR"),
            (b"\r\n0\r\n\r\n", "a chunk size line without a size"),
            (b"5x\r\n", "an invalid chunk size"),
            (b"5 x\r\n", "an invalid chunk size line"),
            (b"5;a\nb\r\n", "a chunk extension with a line feed"),
            (b"11111111111111111\r\n", "a chunk size past 64 bits"),
            (b"0\r\n\r\r", "a chunked body's end without its LF"),
        ] {
            match dechunk(bad, 3) {
                Err(Error::Chunk(e)) => assert_eq!(e, why, "{:?}", String::from_utf8_lossy(bad)),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        assert!(matches!(dechunk(b"5\r\nhel", 2), Err(Error::Incomplete)));
    }
}
