//! A request in the app's hands, and what each message the app sends
//! (`http.response.*`, `websocket.*`) makes of it; the room its client
//! leaves it ([`Room`]: past 64 KiB queued, `send` waits).
//!
//! The head of a response (`http.response.start`) is held back until the
//! next message, or until the app's task next waits on anything (the glue's
//! `flush`), as the spec allows: a body that is a file
//! (`http.response.pathsend`) is then sent by the server as a file, and an
//! app that fails right after starting still gets its 500.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::Frame;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use stackway::{Body, FilePart};
use tokio::sync::{Notify, mpsc, oneshot};

/// Past this many bytes sent and not yet taken by the client, `send` waits.
const HIGH_WATER: usize = 64 * 1024;

/// What the app sends on an accepted socket (and, but for `Close`, what its
/// client sends).
pub(crate) enum Out {
    Text(String),
    Bytes(Bytes),
    Close(u16, String),
}

impl Out {
    /// The message's payload in bytes.
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Bytes(data) => data.len(),
            Self::Close(..) => 0,
        }
    }
}

/// Bytes sent and not yet taken by the client, and whether `send` waits for room.
#[derive(Default)]
pub(crate) struct Room {
    queued: AtomicUsize,
    waiting: AtomicBool,
}

impl Room {
    /// `len` bytes went out; true when that makes room for a waiting `send`.
    pub(super) fn taken(&self, len: usize) -> bool {
        let left = self.queued.fetch_sub(len, Ordering::SeqCst) - len;
        left <= HIGH_WATER && self.waiting.swap(false, Ordering::SeqCst)
    }

    /// `len` more bytes are on their way to the client.
    pub(super) fn queue(&self, len: usize) {
        self.queued.fetch_add(len, Ordering::SeqCst);
    }

    /// Whether the client is behind; if so, room is announced once it catches up.
    pub(super) fn behind(&self) -> bool {
        if self.queued.load(Ordering::SeqCst) <= HIGH_WATER {
            return false;
        }
        self.waiting.store(true, Ordering::SeqCst);
        // Caught up meanwhile: take the announcement back, unless it is already on its way.
        !(self.queued.load(Ordering::SeqCst) <= HIGH_WATER
            && self.waiting.swap(false, Ordering::SeqCst))
    }
}

/// The response's head, from `http.response.start`.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The whole body, when it is not streamed from the app: a file.
    pub(crate) body: Option<Body>,
}

/// A request in the app's hands.
pub(super) struct Conn {
    pub(super) want: Arc<Notify>,
    /// Where the head goes, until it has gone.
    head: Option<oneshot::Sender<Head>>,
    /// The head the app started, held back until it is flushed.
    started: Option<Head>,
    body: Option<mpsc::UnboundedSender<io::Result<Frame<Bytes>>>>,
    /// The trailers so far, when the app declared some; they end the body.
    trailers: Option<HeaderMap>,
    /// The app sent the last piece of the body, and owes its trailers.
    ended: bool,
    room: Arc<Room>,
    /// The request body's reader (an http scope's).
    reader: Option<tokio::task::AbortHandle>,
    /// A websocket scope's messages out, once accepted.
    socket: Option<mpsc::UnboundedSender<Out>>,
    pub(super) websocket: bool,
    pub(super) accepted: bool,
}

impl Head {
    /// A WebSocket refused before its handshake.
    pub(super) fn refusal() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

impl Conn {
    /// A request just started, its head and body not yet given.
    pub(super) fn new(
        want: Arc<Notify>,
        head: oneshot::Sender<Head>,
        body: mpsc::UnboundedSender<io::Result<Frame<Bytes>>>,
        room: Arc<Room>,
        reader: Option<tokio::task::AbortHandle>,
        socket: Option<mpsc::UnboundedSender<Out>>,
    ) -> Self {
        Self {
            want,
            head: Some(head),
            started: None,
            body: Some(body),
            trailers: None,
            ended: false,
            room,
            reader,
            websocket: socket.is_some(),
            socket,
            accepted: false,
        }
    }

    /// Sends the head the app started, if it is held back.
    pub(super) fn flush(&mut self) {
        if let (Some(head), Some(sender)) = (self.started.take(), self.head.take()) {
            let _ = sender.send(head);
        }
    }

    /// A message the app sent; true when the client is behind and the app
    /// should wait for room.
    pub(super) fn answer(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let kind: String = item(message, "type")?
            .ok_or_else(|| PyRuntimeError::new_err("an ASGI message needs a 'type'"))?
            .extract()?;
        match kind.as_str() {
            "websocket.accept" if self.websocket && self.started.is_none() => self.accept(message),
            "websocket.send" if self.accepted => self.socket_send(message),
            "websocket.close" if self.accepted => self.socket_close(message),
            // Closed before the handshake: refused, as uvicorn does.
            "websocket.close" if self.websocket => {
                if let Some(sender) = self.head.take() {
                    let _ = sender.send(Head::refusal());
                }
                self.body = None;
                Ok(false)
            }
            "websocket.http.response.start" if self.websocket && !self.accepted => {
                self.respond_start(message)
            }
            "websocket.http.response.body" if self.websocket && !self.accepted => {
                self.respond_body(message)
            }
            kind @ ("websocket.send" | "websocket.close" | "websocket.accept")
                if self.websocket =>
            {
                Err(PyRuntimeError::new_err(format!("{kind} out of turn")))
            }
            "http.response.start" if !self.websocket => self.respond_start(message),
            "http.response.body" if !self.websocket => self.respond_body(message),
            "http.response.trailers" if !self.websocket => self.respond_trailers(message),
            "http.response.pathsend" if !self.websocket => self.respond_path(message),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {other:?} in this scope"
            ))),
        }
    }

    /// The app is done, having raised `error` (the traceback) or not.
    pub(super) fn end(self, error: Option<String>) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
        if let (Some(socket), Some(_)) = (&self.socket, &error) {
            // Accepted, then failed: closed as an internal error (ignored if never accepted).
            let _ = socket.send(Out::Close(1011, String::new()));
        }
        let why = match error {
            Some(traceback) => traceback,
            // The client went first: nobody to answer, and nothing wrong
            // with the app for it (uvicorn is quiet too).
            None if self.client_gone() => return,
            None if self.started.is_some() => {
                "the app returned before its response was complete".into()
            }
            None if self.head.is_some() && self.websocket => {
                // Returned without a word on the handshake: refused, as uvicorn does.
                if let Some(sender) = self.head {
                    let _ = sender.send(Head::refusal());
                }
                return;
            }
            None if self.head.is_some() => "the app returned without starting a response".into(),
            None if self.body.is_some() => {
                "the app returned before its response was complete".into()
            }
            None => return,
        };
        tracing::error!("ASGI: {why}");
        self.fail(why);
    }

    /// Whether the client has gone: the server no longer waits for the
    /// response's head, or, once that is out, for its body.
    fn client_gone(&self) -> bool {
        match (&self.head, &self.body) {
            (Some(head), _) => head.is_closed(),
            (None, Some(body)) => body.is_closed(),
            (None, None) => false,
        }
    }

    /// Ends the request in an error: a 500 while its head is not out (the
    /// head's sender dropped), else a body that ends in an error, so the
    /// response is aborted.
    pub(super) fn fail(self, why: String) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
        if let (None, Some(out)) = (self.head, self.body) {
            let _ = out.send(Err(io::Error::other(why)));
        }
    }

    /// `websocket.accept`: the handshake's answer, with the subprotocol and
    /// headers the app chose.
    fn accept(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let mut head = head(message, Some(StatusCode::SWITCHING_PROTOCOLS))?;
        if let Some(protocol) = item(message, "subprotocol")?.filter(|p| !p.is_none()) {
            let protocol: String = protocol.extract()?;
            let protocol = HeaderValue::try_from(protocol)
                .map_err(|_| PyRuntimeError::new_err("bad subprotocol"))?;
            head.headers
                .insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        let Some(sender) = self.head.take() else {
            return Err(PyRuntimeError::new_err(
                "websocket.accept after the handshake",
            ));
        };
        self.accepted = true;
        self.body = None;
        let _ = sender.send(head);
        Ok(false)
    }

    /// `websocket.send`: a message out; true when the client is behind.
    fn socket_send(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let Some(socket) = &self.socket else {
            return Err(PyRuntimeError::new_err(
                "websocket.send after websocket.close",
            ));
        };
        let out = match item(message, "bytes")?.filter(|b| !b.is_none()) {
            Some(data) => Out::Bytes(Bytes::from(data.cast::<PyBytes>()?.as_bytes().to_vec())),
            None => Out::Text(
                item(message, "text")?
                    .ok_or_else(|| PyRuntimeError::new_err("websocket.send needs bytes or text"))?
                    .extract()?,
            ),
        };
        self.room.queue(out.len());
        let _ = socket.send(out);
        Ok(self.room.behind())
    }

    /// `websocket.close`, with the app's code and reason.
    fn socket_close(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let code: u16 = item(message, "code")?.map_or(Ok(1000), |c| c.extract())?;
        let reason: String = item(message, "reason")?
            .filter(|r| !r.is_none())
            .map_or(Ok(String::new()), |r| r.extract())?;
        if let Some(socket) = self.socket.take() {
            let _ = socket.send(Out::Close(code, reason));
        }
        Ok(false)
    }

    /// `http.response.start` (and its `websocket.http` twin): the response's
    /// head, held back until the next message or a wait.
    fn respond_start(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        if self.head.is_none() || self.started.is_some() {
            return Err(PyRuntimeError::new_err("http.response.start sent twice"));
        }
        self.started = Some(head(message, None)?);
        if item(message, "trailers")?.is_some_and(|t| t.is_truthy().unwrap_or(false)) {
            self.trailers = Some(HeaderMap::new());
        }
        Ok(false)
    }

    /// `http.response.body` (and its `websocket.http` twin): a piece of the
    /// body; true when the client is behind.
    fn respond_body(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        if self.head.is_some() && self.started.is_none() {
            return Err(PyRuntimeError::new_err(
                "http.response.body sent before http.response.start",
            ));
        }
        // Read before the head goes: a body that is no bytes is still a 500.
        let body: Bytes =
            match item(message, "body")? {
                // Bytes, or a bytearray, as uvicorn takes it.
                Some(body) => Bytes::from(body.extract::<Vec<u8>>().map_err(|_| {
                    PyTypeError::new_err("http.response.body's 'body' must be bytes")
                })?),
                None => Bytes::new(),
            };
        self.flush();
        let (Some(out), false) = (&self.body, self.ended) else {
            return Err(PyRuntimeError::new_err(
                "http.response.body sent after the response was complete",
            ));
        };
        let more =
            item(message, "more_body")?.is_some_and(|more| more.is_truthy().unwrap_or(false));
        let len = body.len();
        if len > 0 {
            self.room.queue(len);
            let _ = out.send(Ok(Frame::data(body)));
        }
        if !more {
            match self.trailers {
                Some(_) => self.ended = true,
                None => self.body = None,
            }
            return Ok(false);
        }
        Ok(self.room.behind())
    }

    /// `http.response.trailers`, after the last piece of a body whose start
    /// declared `trailers`: the last of them (no `more_trailers`) ends the
    /// response. HTTP/1.1 sends them to a client that asked (`TE: trailers`),
    /// those the app named in its `Trailer` header.
    fn respond_trailers(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let (Some(trailers), true) = (&mut self.trailers, self.ended) else {
            return Err(PyRuntimeError::new_err(
                "http.response.trailers comes after the body of a response started with 'trailers'",
            ));
        };
        fill(message, trailers)?;
        if !item(message, "more_trailers")?.is_some_and(|more| more.is_truthy().unwrap_or(false)) {
            if let (Some(trailers), Some(out)) = (self.trailers.take(), self.body.take()) {
                let _ = out.send(Ok(Frame::trailers(trailers)));
            }
        }
        Ok(false)
    }

    /// `http.response.pathsend`: the whole body is the file at `path`, sent
    /// by the server as any file body (with `sendfile` where it can).
    fn respond_path(&mut self, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let Some(head) = &mut self.started else {
            return Err(PyRuntimeError::new_err(
                "http.response.pathsend comes right after http.response.start",
            ));
        };
        let path: PathBuf = item(message, "path")?
            .ok_or_else(|| PyRuntimeError::new_err("http.response.pathsend needs a 'path'"))?
            .extract()?;
        let body = file_body(&path)
            .map_err(|e| PyRuntimeError::new_err(format!("cannot send {}: {e}", path.display())))?;
        head.body = Some(body);
        self.flush();
        self.body = None;
        Ok(false)
    }
}

/// `message[key]`, or `None` when absent.
fn item<'py>(message: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    message.get_item(key)
}

/// The whole file at `path`, which must be absolute.
fn file_body(path: &Path) -> io::Result<Body> {
    if !path.is_absolute() {
        return Err(io::Error::other("the path is not absolute"));
    }
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a file"));
    }
    let whole = vec![FilePart::Range(0..meta.len())];
    Ok(Body::from_file_parts(Arc::new(file), whole))
}

/// The head a message gives: `status` (unless given here) and `headers`.
fn head(message: &Bound<'_, PyDict>, status: Option<StatusCode>) -> PyResult<Head> {
    let status = match status {
        Some(status) => status,
        None => {
            let status: u16 = item(message, "status")?
                .ok_or_else(|| PyRuntimeError::new_err("http.response.start needs a 'status'"))?
                .extract()?;
            StatusCode::from_u16(status)
                .map_err(|_| PyRuntimeError::new_err(format!("{status} is not an HTTP status")))?
        }
    };
    let mut headers = HeaderMap::new();
    fill(message, &mut headers)?;
    stackway::response::declared_length(&headers).map_err(PyRuntimeError::new_err)?;
    Ok(Head {
        status,
        headers,
        body: None,
    })
}

/// Adds the message's `headers` to `headers`.
fn fill(message: &Bound<'_, PyDict>, headers: &mut HeaderMap) -> PyResult<()> {
    let Some(pairs) = item(message, "headers")? else {
        return Ok(());
    };
    for pair in pairs.try_iter()? {
        // An iterable of `[name, value]` (the spec's words): lists or tuples.
        let pair = pair?;
        let (name, value): (Vec<u8>, Vec<u8>) = match pair.cast::<PyList>() {
            Ok(list) if list.len() == 2 => {
                (list.get_item(0)?.extract()?, list.get_item(1)?.extract()?)
            }
            _ => pair.extract()?,
        };
        let name = HeaderName::from_bytes(&name).map_err(|_| {
            PyRuntimeError::new_err(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(&name)
            ))
        })?;
        let value = HeaderValue::from_bytes(&value)
            .map_err(|_| PyRuntimeError::new_err(format!("bad value for header {name}")))?;
        headers.append(name, value);
    }
    Ok(())
}
