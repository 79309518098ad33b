//! The objects a WSGI app is handed: `wsgi.input`, `wsgi.errors`,
//! `start_response` with its `write()`, and `wsgi.file_wrapper`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use hyper::ext::ReasonPhrase;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use stackway::{Body, Spooler};

use crate::MEMORY;
use crate::body::BodyReader;
use tokio::sync::oneshot;

/// `wsgi.input`: the request body, streamed as the app reads it.
#[pyclass(module = "stackway")]
pub(crate) struct Input {
    reader: Mutex<BodyReader>,
}

impl Input {
    pub(crate) fn new(reader: BodyReader) -> Self {
        Self {
            reader: Mutex::new(reader),
        }
    }

    /// Runs `read` on the reader with the GIL released.
    fn with_reader(
        &self,
        py: Python<'_>,
        read: impl FnOnce(&mut BodyReader) -> io::Result<Vec<u8>> + Send,
    ) -> PyResult<Py<PyBytes>> {
        let bytes = py.detach(|| {
            let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            read(&mut reader)
        });
        match bytes {
            Ok(bytes) => Ok(PyBytes::new(py, &bytes).unbind()),
            Err(e) => Err(PyOSError::new_err(format!("reading the request body: {e}"))),
        }
    }
}

/// Reads up to `limit` bytes (all, if `None`), stopping after `until` if given.
fn read_limited(
    reader: &mut BodyReader,
    limit: Option<usize>,
    until: Option<u8>,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let want = limit.map_or(usize::MAX, |l| l - out.len());
        if want == 0 {
            return Ok(out);
        }
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(out);
        }
        let mut take = available.len().min(want);
        let mut done = false;
        if let Some(stop) = until {
            if let Some(at) = available[..take].iter().position(|&b| b == stop) {
                take = at + 1;
                done = true;
            }
        }
        out.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(out);
        }
    }
}

/// A size argument: negative or `None` means no limit.
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read(&self, py: Python<'_>, size: Option<isize>) -> PyResult<Py<PyBytes>> {
        let limit = limit(size);
        self.with_reader(py, move |r| read_limited(r, limit, None))
    }

    #[pyo3(signature = (size=None))]
    fn readline(&self, py: Python<'_>, size: Option<isize>) -> PyResult<Py<PyBytes>> {
        let limit = limit(size);
        self.with_reader(py, move |r| read_limited(r, limit, Some(b'\n')))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines(&self, py: Python<'_>, hint: Option<isize>) -> PyResult<Vec<Py<PyBytes>>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            let len = line.bind(py).as_bytes().len();
            if len == 0 {
                return Ok(lines);
            }
            total += len;
            lines.push(line);
            if hint.is_some_and(|h| total >= h) {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.bind(py).as_bytes().is_empty()).then_some(line))
    }
}

/// `wsgi.errors`: text written to it goes to the server's log (stderr).
#[pyclass(module = "stackway")]
pub(crate) struct Errors;

#[pymethods]
impl Errors {
    fn write(&self, text: &str) -> usize {
        tracing::warn!(target: "wsgi.errors", "{}", text.trim_end());
        text.len()
    }

    fn writelines(&self, lines: Vec<String>) {
        for line in lines {
            tracing::warn!(target: "wsgi.errors", "{}", line.trim_end());
        }
    }

    fn flush(&self) {}
}

/// `wsgi.file_wrapper(filelike, block_size)`: iterates the file in blocks; the
/// server sends a wrapped real file straight from its descriptor instead.
#[pyclass(module = "stackway")]
pub(crate) struct FileWrapper {
    pub(crate) filelike: Py<PyAny>,
    block_size: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size=8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> Self {
        Self {
            filelike,
            block_size: block_size.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        Ok((block.len()? > 0).then(|| block.unbind()))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}

/// A response head, as `start_response` was given it.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    /// The status line's reason where it is not the code's usual one
    /// (Werkzeug's `404 NOT FOUND`): HTTP/1 sends it as the app said it, as
    /// gunicorn and uWSGI do.
    pub(crate) reason: Option<ReasonPhrase>,
    pub(crate) headers: HeaderMap,
    /// Its `Content-Length`.
    pub(crate) length: Option<u64>,
    /// The server's own head, for an app that failed before it sent one:
    /// answered as any status the server makes (its text, error pages).
    pub(crate) failed: bool,
}

/// What one request's `start_response`, `write()` and the runner share.
pub(crate) struct Exchange {
    state: Mutex<State>,
    body: Sink,
    /// The app is done with the request.
    finished: AtomicBool,
    /// Cut off by harakiri.
    cut: AtomicBool,
}

struct State {
    /// Given to `start_response`, not sent yet.
    pending: Option<Head>,
    /// Where it goes; taken when it is sent.
    head: Option<HeadTo>,
    /// Sent, for the response made when the app returns.
    kept: Option<Head>,
}

/// What the server's task waits on for a request on Python's threads.
pub(crate) type Waiting = (oneshot::Receiver<Head>, Body);

/// Where the head goes when it is sent.
enum HeadTo {
    /// The server's task, which waits for it (Python's threads).
    Task(oneshot::Sender<Head>),
    /// The response made when the app returns (the server's worker).
    Kept,
}

impl State {
    fn deliver(&mut self, to: HeadTo, head: Head) -> Result<(), SendError> {
        match to {
            HeadTo::Task(task) => task.send(head).map_err(|_| SendError::Gone),
            HeadTo::Kept => {
                self.kept = Some(head);
                Ok(())
            }
        }
    }
}

/// Where the body goes.
enum Sink {
    /// Into a spool, which the client reads as the app goes on (Python's
    /// threads).
    Spool(Spooler),
    /// Kept here while the app runs on the server's worker, whose response
    /// is made when it returns ([`Exchange::kept`]): no spool between
    /// the two for the small body most responses have.
    Kept(Mutex<Kept>),
}

#[derive(Default)]
struct Kept {
    chunks: Vec<Bytes>,
    len: usize,
    /// Where the body went once it passed [`MEMORY`], the kept chunks first.
    spool: Option<(Spooler, Body)>,
}

impl Kept {
    fn spooler(&mut self) -> &Spooler {
        let (spooler, _) = self.spool.get_or_insert_with(|| {
            let (spooler, body) = Body::spooled(MEMORY);
            for chunk in self.chunks.drain(..) {
                // In memory: what was kept is within the spool's bound.
                let _ = spooler.send(chunk);
            }
            (spooler, body)
        });
        spooler
    }
}

/// Why a chunk could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The client went away (or the server dropped the response).
    Gone,
    /// The app yielded before calling `start_response`.
    NotStarted,
}

impl Exchange {
    /// An exchange for Python's threads, with what the server's task waits
    /// on: the head's receiver, and the body, spooled as the app yields it.
    pub(crate) fn on_threads() -> (Arc<Self>, Waiting) {
        let (head, head_rx) = oneshot::channel();
        let (spooler, body) = Body::spooled(MEMORY);
        let exchange = Self::new(HeadTo::Task(head), Sink::Spool(spooler));
        (exchange, (head_rx, body))
    }

    /// An exchange for the server's worker, which keeps the head and the
    /// body for the response made when the app returns ([`kept`](Self::kept)).
    pub(crate) fn on_worker() -> Arc<Self> {
        Self::new(HeadTo::Kept, Sink::Kept(Mutex::default()))
    }

    fn new(head: HeadTo, body: Sink) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                pending: None,
                head: Some(head),
                kept: None,
            }),
            body,
            finished: AtomicBool::new(false),
            cut: AtomicBool::new(false),
        })
    }

    /// Ends the body: the app is done, whoever still holds `start_response`.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        if let Sink::Spool(spooler) = &self.body {
            spooler.finish();
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Marks the request cut off by harakiri; true the first time only.
    pub(crate) fn cut(&self) -> bool {
        !self.cut.swap(true, Ordering::AcqRel)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends the head `start_response` was given, if not yet sent.
    pub(crate) fn send_head(&self) -> Result<(), SendError> {
        let mut state = self.state();
        let Some(to) = state.head.take() else {
            return Ok(());
        };
        let Some(head) = state.pending.take() else {
            state.head = Some(to);
            return Err(SendError::NotStarted);
        };
        state.deliver(to, head)
    }

    /// Sends a response head for an error, if none has gone out; returns
    /// whether it did.
    pub(crate) fn send_error_head(&self, status: StatusCode) -> bool {
        let mut state = self.state();
        let Some(to) = state.head.take() else {
            return false;
        };
        let head = Head {
            status,
            reason: None,
            headers: HeaderMap::new(),
            length: None,
            failed: true,
        };
        let _ = state.deliver(to, head);
        true
    }

    /// Sends a chunk of the body (the head first). It is kept until the
    /// client reads it, so the thread never waits for the client; only a
    /// chunk that goes to the spool's file lets the GIL go.
    pub(crate) fn send(&self, py: Python<'_>, chunk: Bytes) -> Result<(), SendError> {
        self.send_head()?;
        if chunk.is_empty() {
            return Ok(());
        }
        let spool = |spooler: &Spooler, chunk: Bytes| {
            let sent = match spooler.spills(chunk.len()) {
                false => spooler.send(chunk),
                true => py.detach(|| spooler.send(chunk)),
            };
            sent.map_err(|_| SendError::Gone)
        };
        match &self.body {
            Sink::Spool(spooler) => spool(spooler, chunk),
            Sink::Kept(kept) => {
                let mut kept = lock(kept);
                if kept.spool.is_none() && kept.len + chunk.len() <= MEMORY {
                    kept.len += chunk.len();
                    kept.chunks.push(chunk);
                    return Ok(());
                }
                spool(kept.spooler(), chunk)
            }
        }
    }

    /// Ends the body with an error: the client's connection is aborted rather
    /// than a truncated body passing for a whole one.
    pub(crate) fn abort(&self, why: String) {
        match &self.body {
            Sink::Spool(spooler) => spooler.fail(why),
            Sink::Kept(kept) => lock(kept).spooler().fail(why),
        }
    }

    /// The head and the body the app gave on the server's worker, once it
    /// returned (`None` if it sent no head): the body whole, with its
    /// length, when that is the length the head declares; else as it came
    /// (the server then frames it as it would have framed it streamed).
    pub(crate) fn kept(&self) -> Option<(Head, Body)> {
        let head = self.state().kept.take()?;
        let Sink::Kept(kept) = &self.body else {
            return None;
        };
        let kept = std::mem::take(&mut *lock(kept));
        let body = match (kept.spool, kept.chunks.len()) {
            (Some((_, body)), _) => body,
            // Ended, but of no length of its own (an empty spool, the
            // spooler dropped): the head's is sent where the app put it.
            (None, 0) => Body::spooled(0).1,
            (None, 1) if head.length == Some(kept.len as u64) => {
                Body::from(kept.chunks.into_iter().next().unwrap_or_default())
            }
            (None, _) if head.length == Some(kept.len as u64) => {
                Body::from_chunks(kept.chunks).exact_size(kept.len as u64)
            }
            (None, _) => Body::from_chunks(kept.chunks),
        };
        Some((head, body))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `start_response(status, headers, exc_info=None)`.
#[pyclass(module = "stackway")]
pub(crate) struct StartResponse {
    pub(crate) exchange: Arc<Exchange>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    #[allow(clippy::needless_pass_by_value)] // PyO3 hands arguments over by value
    fn __call__(
        &self,
        status: &str,
        headers: Vec<Field<'_>>,
        exc_info: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let mut state = self.exchange.state();
        match (&exc_info, state.head.is_none(), state.pending.is_some()) {
            // PEP 3333: with the head sent, the error is re-raised.
            (Some(exc_info), true, _) => {
                let value = exc_info.cast::<PyTuple>()?.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
            (None, _, true) | (None, true, _) => {
                return Err(PyRuntimeError::new_err(
                    "start_response was called already (pass exc_info to replace the head)",
                ));
            }
            _ => {}
        }
        state.pending = Some(parse_head(status, &headers)?);
        Ok(Write {
            exchange: self.exchange.clone(),
        })
    }
}

/// The `write(data)` callable `start_response` returns (PEP 3333's
/// imperative API for old frameworks).
#[pyclass(module = "stackway")]
pub(crate) struct Write {
    exchange: Arc<Exchange>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        match self.exchange.send(py, Bytes::copy_from_slice(data)) {
            Ok(()) => Ok(()),
            Err(SendError::Gone) => Err(PyOSError::new_err("the client went away")),
            Err(SendError::NotStarted) => {
                Err(PyRuntimeError::new_err("write() before start_response"))
            }
        }
    }
}

/// One of `start_response`'s headers: PEP 3333's `(name, value)` tuple, or
/// a list of the two, which gunicorn, Werkzeug and waitress take as well.
pub(crate) struct Field<'py>(Bound<'py, PyString>, Bound<'py, PyString>);

impl<'a, 'py> FromPyObject<'a, 'py> for Field<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let pair = match obj.cast::<PyList>() {
            Ok(list) if list.len() == 2 => {
                (list.get_item(0)?.extract()?, list.get_item(1)?.extract()?)
            }
            _ => obj.extract()?,
        };
        Ok(Field(pair.0, pair.1))
    }
}

/// Whether a header an app names is one of its connection's, which the
/// server keeps (PEP 3333 forbids apps them): left out, as gunicorn leaves
/// them out. `Connection: close` stays, and closes the connection;
/// `Transfer-Encoding` is the server's to choose and it chooses it.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "keep-alive" | "proxy-connection" | "te" | "upgrade"
    )
}

/// `"404 Not Found"` and `[("Content-Type", "text/plain")]` as a head.
/// Header values are native strings: latin-1. The strings are read where
/// Python keeps them, not copied out first.
fn parse_head(status: &str, headers: &[Field<'_>]) -> PyResult<Head> {
    let code = status
        .get(..3)
        .filter(|_| status.len() == 3 || status.as_bytes()[3] == b' ')
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|code| code.as_u16() >= 200)
        .ok_or_else(|| PyValueError::new_err(format!("status {status:?} is not \"NNN Reason\"")))?;
    // Room for what the server adds (hyper looks `Connection` up by an
    // entry, which grows a full map).
    let mut map = HeaderMap::with_capacity(headers.len() + 2);
    for Field(name, value) in headers {
        let (name, value) = (name.to_str()?, value.to_str()?);
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .zip(if value.is_ascii() {
                HeaderValue::from_str(value).ok()
            } else {
                let bytes: Option<Vec<u8>> = value.chars().map(|c| u8::try_from(c).ok()).collect();
                bytes.and_then(|b| HeaderValue::from_bytes(&b).ok())
            });
        let Some((name, value)) = parsed else {
            return Err(PyValueError::new_err(format!(
                "header {name:?}: {value:?} is not a valid header"
            )));
        };
        if !hop_by_hop(&name) {
            map.append(name, value);
        }
    }
    let length = stackway::response::declared_length(&map).map_err(PyValueError::new_err)?;
    let reason = status
        .get(4..)
        .filter(|reason| !reason.is_empty() && Some(*reason) != code.canonical_reason())
        .and_then(|reason| ReasonPhrase::try_from(reason.as_bytes()).ok());
    Ok(Head {
        status: code,
        reason,
        headers: map,
        length,
        failed: false,
    })
}
