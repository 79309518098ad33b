//! What crosses between the server and the asyncio loop.
//!
//! To the loop: events (a request to start, a message for `receive`, room
//! to `send` again), queued here and announced by a byte on a socket the
//! loop watches, so that no server worker ever takes the GIL. From the
//! loop's tasks: `want` (the next message, please), `send` and `end`, none
//! of which waits: `send` says when the client is behind, and the task then
//! waits on the loop for the room event.
//!
//! The head of a response (`http.response.start`) is held back until the
//! next message, or until the app's task next waits on anything (the glue's
//! `flush`), as the spec allows: a body that is a file
//! (`http.response.pathsend`) is then sent by the server as a file, and an
//! app that fails right after starting still gets its 500.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::Frame;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use stackway::{Body, FilePart};
use tokio::sync::{Notify, mpsc, oneshot};

use super::scope::Scope;
use super::websocket::Out;

/// Past this many bytes sent and not yet taken by the client, `send` waits.
const HIGH_WATER: usize = 64 * 1024;

/// The glue that runs on the loop's thread.
const GLUE: &str = include_str!("glue.py");

/// The response's head, from `http.response.start`.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The whole body, when it is not streamed from the app: a file.
    pub(crate) body: Option<Body>,
}

enum Event {
    Start {
        id: u64,
        app: Arc<Py<PyAny>>,
        scope: Box<Scope>,
        /// The app's lifespan, whose state the scope gets a copy of.
        life: Option<u64>,
    },
    /// Lifespan startup (with the app) or shutdown.
    Life {
        id: u64,
        app: Option<Arc<Py<PyAny>>>,
    },
    Receive {
        id: u64,
        message: Message,
    },
    Room {
        id: u64,
    },
    /// The watchdog's: the loop is alive if it takes this.
    Tick,
}

enum Message {
    Request {
        body: Bytes,
        more: bool,
    },
    Disconnect,
    Connect,
    Socket(Out),
    /// `websocket.disconnect`, with the close code.
    Closed(u16),
}

/// The server's side of the bridge: one per process, with its loop.
pub(crate) struct Shared {
    events: Mutex<Vec<Event>>,
    wake: UnixStream,
    conns: Mutex<HashMap<u64, Conn>>,
    /// Lifespans waiting for the app to answer startup or shutdown.
    lives: Mutex<HashMap<u64, std::sync::mpsc::Sender<Phase>>>,
    ids: AtomicU64,
    /// When events began to wait for the loop, if they wait.
    waiting_since: Mutex<Option<Instant>>,
    /// The loop stopped turning: it will not serve again.
    stuck: AtomicBool,
    /// The loop thread's Python ident, for its stack.
    ident: AtomicU64,
    watchdog: OnceLock<()>,
}

/// How a lifespan phase ended, as the app told.
#[derive(Debug)]
pub(crate) enum Phase {
    Complete,
    /// `lifespan.*.failed`, with its message.
    Failed(String),
    /// The app raised (or returned) without a word: it has no lifespan.
    Unsupported(String),
}

/// A request in the app's hands.
struct Conn {
    want: Arc<Notify>,
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
    websocket: bool,
    accepted: bool,
}

/// A request started in the app: its head, its body (unless it becomes a
/// WebSocket), and for a WebSocket what its socket needs.
pub(crate) struct Started {
    pub(crate) id: u64,
    pub(crate) head: oneshot::Receiver<Head>,
    pub(crate) body: Body,
    pub(crate) socket: Option<(Arc<Notify>, mpsc::UnboundedReceiver<Out>, Arc<Room>)>,
}

/// Bytes sent and not yet taken by the client, and whether `send` waits for room.
#[derive(Default)]
pub(crate) struct Room {
    queued: AtomicUsize,
    waiting: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process's loop, started on first use.
pub(crate) fn shared() -> io::Result<&'static Arc<Shared>> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    if let Some(shared) = SHARED.get() {
        return Ok(shared);
    }
    let (wake, watched) = UnixStream::pair()?;
    wake.set_nonblocking(true)?;
    watched.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        events: Mutex::default(),
        wake,
        conns: Mutex::default(),
        lives: Mutex::default(),
        ids: AtomicU64::new(0),
        waiting_since: Mutex::default(),
        stuck: AtomicBool::new(false),
        ident: AtomicU64::new(0),
        watchdog: OnceLock::new(),
    });
    let mut started = false;
    let shared = SHARED.get_or_init(|| {
        started = true;
        shared
    });
    if started {
        let bridge = Bridge(shared.clone());
        std::thread::Builder::new()
            .name("stackway-asyncio".into())
            .spawn(move || run_loop(bridge, &watched))?;
    }
    Ok(shared)
}

fn run_loop(bridge: Bridge, watched: &UnixStream) {
    let ran = Python::attach(|py| {
        let ident = crate::harakiri::ident(py);
        bridge.0.ident.store(ident, Ordering::Relaxed);
        let glue = pyo3::types::PyModule::from_code(
            py,
            &std::ffi::CString::new(GLUE)?,
            c"stackway_asgi_glue.py",
            c"stackway_asgi_glue",
        )?;
        glue.call_method1("serve", (bridge, watched.as_raw_fd()))?;
        Ok::<_, PyErr>(())
    });
    if let Err(e) = ran {
        let e = Python::attach(|py| crate::traceback(py, &e));
        tracing::error!("the asyncio loop of the ASGI apps stopped: {e}");
    }
}

impl Shared {
    fn push(&self, event: Event) {
        let first = {
            let mut events = lock(&self.events);
            events.push(event);
            events.len() == 1
        };
        if first {
            *lock(&self.waiting_since) = Some(Instant::now());
            // A full socket already holds a byte the loop has yet to read.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// Whether the loop stopped turning (see [`watch`](Self::watch)).
    pub(crate) fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }

    /// Watches the loop (once per process, the first limit wins): a loop
    /// that takes no event for `limit`, a coroutine computing without an
    /// `await`, is stuck for good. Its stack is logged, every request in the
    /// app's hands is answered 500 (its response aborted if its head is out),
    /// later ones get 503 at once, and `then` is called, once.
    pub(crate) fn watch(self: &Arc<Self>, limit: Duration, then: Arc<dyn Fn() + Send + Sync>) {
        if self.watchdog.set(()).is_err() {
            return;
        }
        let shared = self.clone();
        let watched = std::thread::Builder::new()
            .name("stackway-asyncio-watch".into())
            .spawn(move || {
                let tick = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
                loop {
                    std::thread::sleep(tick);
                    let waited = lock(&shared.waiting_since).map(|since| since.elapsed());
                    match waited {
                        Some(waited) if waited > limit => break,
                        Some(_) => {}
                        None => shared.push(Event::Tick),
                    }
                }
                shared.cut_off(limit, move || then());
            });
        if let Err(e) = watched {
            tracing::error!("cannot watch the asyncio loop: {e}");
        }
    }

    fn cut_off(&self, limit: Duration, then: impl FnOnce() + Send + 'static) {
        self.stuck.store(true, Ordering::Relaxed);
        for (_, conn) in lock(&self.conns).drain() {
            if let Some(reader) = &conn.reader {
                reader.abort();
            }
            if conn.head.is_none() {
                if let Some(out) = conn.body {
                    let _ = out.send(Err(io::Error::other("harakiri: the asyncio loop is stuck")));
                }
            }
        }
        let what =
            format!("the asyncio loop of the ASGI apps took no event for more than {limit:?}");
        crate::harakiri::log_stack_then(self.ident.load(Ordering::Relaxed), what, then);
    }

    /// Starts the lifespan of `app` (`Some`) or shuts lifespan `id` down,
    /// and waits for the app's answer, at most `limit`.
    pub(crate) fn life(&self, id: u64, app: Option<Arc<Py<PyAny>>>, limit: Duration) -> Phase {
        let (told, answer) = std::sync::mpsc::channel();
        lock(&self.lives).insert(id, told);
        self.push(Event::Life { id, app });
        let phase = answer
            .recv_timeout(limit)
            .unwrap_or_else(|_| Phase::Failed(format!("the app did not answer within {limit:?}")));
        lock(&self.lives).remove(&id);
        phase
    }

    pub(crate) fn id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts `app` on a request (a WebSocket handshake when `websocket`).
    pub(crate) fn start(
        self: &Arc<Self>,
        app: Arc<Py<PyAny>>,
        life: Option<u64>,
        scope: Scope,
        body: Body,
        websocket: bool,
    ) -> Started {
        let id = self.id();
        let want = Arc::new(Notify::new());
        let (head, head_rx) = oneshot::channel();
        let (out, out_rx) = mpsc::unbounded_channel();
        let room = Arc::new(Room::default());
        let (reader, socket, socket_rx) = match websocket {
            false => {
                let reader = read_body(body, want.clone(), self.clone(), id);
                (Some(tokio::spawn(reader).abort_handle()), None, None)
            }
            true => {
                let (socket, socket_rx) = mpsc::unbounded_channel();
                (
                    None,
                    Some(socket),
                    Some((want.clone(), socket_rx, room.clone())),
                )
            }
        };
        let conn = Conn {
            want,
            head: Some(head),
            started: None,
            body: Some(out),
            trailers: None,
            ended: false,
            room: room.clone(),
            reader,
            socket,
            websocket,
            accepted: false,
        };
        lock(&self.conns).insert(id, conn);
        let outgoing = Outgoing {
            frames: out_rx,
            room,
            gone: Gone {
                shared: self.clone(),
                id,
            },
        };
        let scope = Box::new(scope);
        self.push(Event::Start {
            id,
            app,
            scope,
            life,
        });
        if websocket {
            let message = Message::Connect;
            self.push(Event::Receive { id, message });
        }
        Started {
            id,
            head: head_rx,
            body: Body::new(outgoing),
            socket: socket_rx,
        }
    }

    /// A message from WebSocket `id`'s client.
    pub(crate) fn received(&self, id: u64, message: Out) {
        let message = Message::Socket(message);
        self.push(Event::Receive { id, message });
    }

    /// WebSocket `id` closed, with `code`.
    pub(crate) fn closed(&self, id: u64, code: u16) {
        let message = Message::Closed(code);
        self.push(Event::Receive { id, message });
    }

    /// `len` bytes of WebSocket `id` went out of its `room`.
    pub(crate) fn sent(&self, id: u64, room: &Room, len: usize) {
        if room.taken(len) {
            self.push(Event::Room { id });
        }
    }
}

/// The request body, a chunk each time the app asks for one.
async fn read_body(mut body: Body, want: Arc<Notify>, shared: Arc<Shared>, id: u64) {
    loop {
        want.notified().await;
        let message = match body.chunk().await {
            Some(Ok(data)) => Message::Request {
                body: data,
                more: true,
            },
            None => Message::Request {
                body: Bytes::new(),
                more: false,
            },
            // The client went away, or stalled past the server's limits.
            Some(Err(_)) => Message::Disconnect,
        };
        let more = matches!(message, Message::Request { more: true, .. });
        shared.push(Event::Receive { id, message });
        if !more {
            // Next, `http.disconnect`, once the response is done or the client gone.
            return;
        }
    }
}

/// The response body as the client takes it (its trailers last, if any);
/// dropped, it tells the app the client is gone.
struct Outgoing {
    frames: mpsc::UnboundedReceiver<io::Result<Frame<Bytes>>>,
    room: Arc<Room>,
    gone: Gone,
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let next = self.frames.poll_recv(cx);
        if let Poll::Ready(Some(Ok(frame))) = &next {
            let len = frame.data_ref().map_or(0, Bytes::len);
            if len > 0 && self.room.taken(len) {
                self.gone.shared.push(Event::Room { id: self.gone.id });
            }
        }
        next
    }
}

/// Sends `http.disconnect` to an app still at work when dropped.
struct Gone {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Gone {
    fn drop(&mut self) {
        // An accepted WebSocket says its own close.
        let message = match lock(&self.shared.conns).get(&self.id) {
            Some(conn) if conn.accepted => return,
            Some(conn) if conn.websocket => Message::Closed(1006),
            Some(_) => Message::Disconnect,
            None => return,
        };
        self.shared.push(Event::Receive {
            id: self.id,
            message,
        });
    }
}

/// The bridge as the loop's tasks see it.
#[pyclass(frozen)]
struct Bridge(Arc<Shared>);

#[pymethods]
impl Bridge {
    /// The events since the last call, as tuples: `(0, id, app, scope,
    /// life)`, `(1, id, message)`, `(2, id)` (room to send), `(3, id, app)`
    /// (lifespan startup), `(4, id)` (lifespan shutdown).
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let events = std::mem::take(&mut *lock(&self.0.events));
        *lock(&self.0.waiting_since) = None;
        events
            .into_iter()
            .map(|event| {
                Ok(match event {
                    Event::Start {
                        id,
                        app,
                        scope,
                        life,
                    } => (0, id, app.clone_ref(py), scope.into_dict(py)?, life)
                        .into_pyobject(py)?
                        .into_any(),
                    Event::Receive { id, message } => (1, id, message.into_dict(py)?)
                        .into_pyobject(py)?
                        .into_any(),
                    Event::Room { id } => (2, id).into_pyobject(py)?.into_any(),
                    Event::Life { id, app: Some(app) } => {
                        (3, id, app.clone_ref(py)).into_pyobject(py)?.into_any()
                    }
                    Event::Life { id, app: None } => (4, id).into_pyobject(py)?.into_any(),
                    Event::Tick => (5, 0).into_pyobject(py)?.into_any(),
                })
            })
            .collect()
    }

    /// The app awaits the next message of request `id`.
    fn want(&self, id: u64) {
        if let Some(conn) = lock(&self.0.conns).get(&id) {
            conn.want.notify_one();
        }
    }

    /// An `http.response.*` message of request `id`; true when the client
    /// is behind and the app should wait for room.
    fn send(&self, id: u64, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        let kind: String = item(message, "type")?
            .ok_or_else(|| PyRuntimeError::new_err("an ASGI message needs a 'type'"))?
            .extract()?;
        let mut conns = lock(&self.0.conns);
        let Some(conn) = conns.get_mut(&id) else {
            return Ok(false);
        };
        match kind.as_str() {
            "websocket.accept" if conn.websocket && conn.started.is_none() => {
                let mut head = head(message, Some(StatusCode::SWITCHING_PROTOCOLS))?;
                if let Some(protocol) = item(message, "subprotocol")?.filter(|p| !p.is_none()) {
                    let protocol: String = protocol.extract()?;
                    let protocol = HeaderValue::try_from(protocol)
                        .map_err(|_| PyRuntimeError::new_err("bad subprotocol"))?;
                    head.headers
                        .insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
                }
                let Some(sender) = conn.head.take() else {
                    return Err(PyRuntimeError::new_err(
                        "websocket.accept after the handshake",
                    ));
                };
                conn.accepted = true;
                conn.body = None;
                let _ = sender.send(head);
                Ok(false)
            }
            "websocket.send" if conn.accepted => {
                let Some(socket) = &conn.socket else {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send after websocket.close",
                    ));
                };
                let out = match item(message, "bytes")?.filter(|b| !b.is_none()) {
                    Some(data) => {
                        Out::Bytes(Bytes::from(data.cast::<PyBytes>()?.as_bytes().to_vec()))
                    }
                    None => Out::Text(
                        item(message, "text")?
                            .ok_or_else(|| {
                                PyRuntimeError::new_err("websocket.send needs bytes or text")
                            })?
                            .extract()?,
                    ),
                };
                let len = match &out {
                    Out::Bytes(data) => data.len(),
                    Out::Text(text) => text.len(),
                    Out::Close(..) => 0,
                };
                conn.room.queued.fetch_add(len, Ordering::SeqCst);
                let _ = socket.send(out);
                Ok(conn.room.behind())
            }
            "websocket.close" if conn.accepted => {
                let code: u16 = item(message, "code")?.map_or(Ok(1000), |c| c.extract())?;
                let reason: String = item(message, "reason")?
                    .filter(|r| !r.is_none())
                    .map_or(Ok(String::new()), |r| r.extract())?;
                if let Some(socket) = conn.socket.take() {
                    let _ = socket.send(Out::Close(code, reason));
                }
                Ok(false)
            }
            // Closed before the handshake: refused, as uvicorn does.
            "websocket.close" if conn.websocket => {
                if let Some(sender) = conn.head.take() {
                    let _ = sender.send(Head::refusal());
                }
                conn.body = None;
                Ok(false)
            }
            "websocket.http.response.start" if conn.websocket && !conn.accepted => {
                respond_start(conn, message)
            }
            "websocket.http.response.body" if conn.websocket && !conn.accepted => {
                respond_body(conn, message)
            }
            kind @ ("websocket.send" | "websocket.close" | "websocket.accept")
                if conn.websocket =>
            {
                Err(PyRuntimeError::new_err(format!("{kind} out of turn")))
            }
            "http.response.start" if !conn.websocket => respond_start(conn, message),
            "http.response.body" if !conn.websocket => respond_body(conn, message),
            "http.response.trailers" if !conn.websocket => respond_trailers(conn, message),
            "http.response.pathsend" if !conn.websocket => respond_path(conn, message),
            other => Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {other:?} in this scope"
            ))),
        }
    }

    /// Request `id`'s task waits on something: the head it started goes out.
    fn flush(&self, id: u64) {
        if let Some(conn) = lock(&self.0.conns).get_mut(&id) {
            conn.flush();
        }
    }

    /// Lifespan `id` ended a phase: `complete`, `failed` (with the app's
    /// message) or `unsupported` (with the traceback, if it raised).
    fn life(&self, id: u64, outcome: &str, message: String) {
        let phase = match outcome {
            "complete" => Phase::Complete,
            "failed" => Phase::Failed(message),
            _ => Phase::Unsupported(message),
        };
        if let Some(told) = lock(&self.0.lives).get(&id) {
            let _ = told.send(phase);
        }
    }

    /// The app is done with request `id`, having raised `error` (the
    /// traceback) or not.
    fn end(&self, id: u64, error: Option<String>) {
        let Some(conn) = lock(&self.0.conns).remove(&id) else {
            return;
        };
        if let Some(reader) = &conn.reader {
            reader.abort();
        }
        if let (Some(socket), Some(_)) = (&conn.socket, &error) {
            // Accepted, then failed: closed as an internal error (ignored if never accepted).
            let _ = socket.send(Out::Close(1011, String::new()));
        }
        let why = match error {
            Some(traceback) => traceback,
            None if conn.started.is_some() => {
                "the app returned before its response was complete".into()
            }
            None if conn.head.is_some() && conn.websocket => {
                // Returned without a word on the handshake: refused, as uvicorn does.
                if let Some(sender) = conn.head {
                    let _ = sender.send(Head::refusal());
                }
                return;
            }
            None if conn.head.is_some() => "the app returned without starting a response".into(),
            None if conn.body.is_some() => {
                "the app returned before its response was complete".into()
            }
            None => return,
        };
        tracing::error!("ASGI: {why}");
        // No head: the request gets 500. A head: the body ends in an error, so the response is aborted.
        if let (None, Some(out)) = (conn.head, conn.body) {
            let _ = out.send(Err(io::Error::other(why)));
        }
    }
}

impl Head {
    /// A WebSocket refused before its handshake.
    fn refusal() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

impl Conn {
    /// Sends the head the app started, if it is held back.
    fn flush(&mut self) {
        if let (Some(head), Some(sender)) = (self.started.take(), self.head.take()) {
            let _ = sender.send(head);
        }
    }
}

impl Room {
    /// `len` bytes went out; true when that makes room for a waiting `send`.
    fn taken(&self, len: usize) -> bool {
        let left = self.queued.fetch_sub(len, Ordering::SeqCst) - len;
        left <= HIGH_WATER && self.waiting.swap(false, Ordering::SeqCst)
    }

    /// Whether the client is behind; if so, room is announced once it catches up.
    fn behind(&self) -> bool {
        if self.queued.load(Ordering::SeqCst) <= HIGH_WATER {
            return false;
        }
        self.waiting.store(true, Ordering::SeqCst);
        // Caught up meanwhile: take the announcement back, unless it is already on its way.
        !(self.queued.load(Ordering::SeqCst) <= HIGH_WATER
            && self.waiting.swap(false, Ordering::SeqCst))
    }
}

/// `message[key]`, or `None` when absent.
fn item<'py>(message: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    message.get_item(key)
}

/// `http.response.start` (and its `websocket.http` twin): the response's
/// head, held back until the next message or a wait.
fn respond_start(conn: &mut Conn, message: &Bound<'_, PyDict>) -> PyResult<bool> {
    if conn.head.is_none() || conn.started.is_some() {
        return Err(PyRuntimeError::new_err("http.response.start sent twice"));
    }
    conn.started = Some(head(message, None)?);
    if item(message, "trailers")?.is_some_and(|t| t.is_truthy().unwrap_or(false)) {
        conn.trailers = Some(HeaderMap::new());
    }
    Ok(false)
}

/// `http.response.body` (and its `websocket.http` twin): a piece of the
/// body; true when the client is behind.
fn respond_body(conn: &mut Conn, message: &Bound<'_, PyDict>) -> PyResult<bool> {
    if conn.head.is_some() && conn.started.is_none() {
        return Err(PyRuntimeError::new_err(
            "http.response.body sent before http.response.start",
        ));
    }
    conn.flush();
    let (Some(out), false) = (&conn.body, conn.ended) else {
        return Err(PyRuntimeError::new_err(
            "http.response.body sent after the response was complete",
        ));
    };
    let body: Bytes = match item(message, "body")? {
        Some(body) => Bytes::from(body.cast::<PyBytes>()?.as_bytes().to_vec()),
        None => Bytes::new(),
    };
    let more = item(message, "more_body")?.is_some_and(|more| more.is_truthy().unwrap_or(false));
    let len = body.len();
    if len > 0 {
        conn.room.queued.fetch_add(len, Ordering::SeqCst);
        let _ = out.send(Ok(Frame::data(body)));
    }
    if !more {
        match conn.trailers {
            Some(_) => conn.ended = true,
            None => conn.body = None,
        }
        return Ok(false);
    }
    Ok(conn.room.behind())
}

/// `http.response.trailers`, after the last piece of a body whose start
/// declared `trailers`: the last of them (no `more_trailers`) ends the
/// response. HTTP/1.1 sends them to a client that asked (`TE: trailers`),
/// those the app named in its `Trailer` header.
fn respond_trailers(conn: &mut Conn, message: &Bound<'_, PyDict>) -> PyResult<bool> {
    let (Some(trailers), true) = (&mut conn.trailers, conn.ended) else {
        return Err(PyRuntimeError::new_err(
            "http.response.trailers comes after the body of a response started with 'trailers'",
        ));
    };
    fill(message, trailers)?;
    if !item(message, "more_trailers")?.is_some_and(|more| more.is_truthy().unwrap_or(false)) {
        if let (Some(trailers), Some(out)) = (conn.trailers.take(), conn.body.take()) {
            let _ = out.send(Ok(Frame::trailers(trailers)));
        }
    }
    Ok(false)
}

/// `http.response.pathsend`: the whole body is the file at `path`, sent
/// by the server as any file body (with `sendfile` where it can).
fn respond_path(conn: &mut Conn, message: &Bound<'_, PyDict>) -> PyResult<bool> {
    let Some(head) = &mut conn.started else {
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
    conn.flush();
    conn.body = None;
    Ok(false)
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
        let (name, value): (Vec<u8>, Vec<u8>) = pair?.extract()?;
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

impl Message {
    fn into_dict(self, py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let dict = PyDict::new(py);
        match self {
            Self::Request { body, more } => {
                dict.set_item("type", "http.request")?;
                dict.set_item("body", PyBytes::new(py, &body))?;
                dict.set_item("more_body", more)?;
            }
            Self::Disconnect => dict.set_item("type", "http.disconnect")?,
            Self::Connect => dict.set_item("type", "websocket.connect")?,
            Self::Socket(out) => {
                dict.set_item("type", "websocket.receive")?;
                match out {
                    Out::Text(text) => dict.set_item("text", text)?,
                    Out::Bytes(data) => dict.set_item("bytes", PyBytes::new(py, &data))?,
                    Out::Close(..) => {}
                }
            }
            Self::Closed(code) => {
                dict.set_item("type", "websocket.disconnect")?;
                dict.set_item("code", code)?;
            }
        }
        Ok(dict)
    }
}
