//! What crosses between the server and the asyncio loop.
//!
//! To the loop: events (a request to start, a message for `receive`, room
//! to `send` again), queued here and announced by a byte on a socket the
//! loop watches, so that no server worker ever takes the GIL. From the
//! loop's tasks: `want` (the next message, please), `send` and `end`, none
//! of which waits: `send` says when the client is behind, and the task then
//! waits on the loop for the room event. What each message does to its
//! request is [`Conn`]'s.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use stackway::Body;
use tokio::sync::{Notify, mpsc, oneshot};

use super::conn::{Conn, Head, Out, Room};
use super::scope::Scope;

/// The glue that runs on the loop's thread.
const GLUE: &str = include_str!("glue.py");

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
    /// `websocket.disconnect`, with the close code and reason.
    Closed(u16, String),
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

/// A request started in the app: its head, its body (unless it becomes a
/// WebSocket), and for a WebSocket what its socket needs.
pub(crate) struct Started {
    pub(crate) id: u64,
    pub(crate) head: oneshot::Receiver<Head>,
    pub(crate) body: Body,
    pub(crate) socket: Option<(Arc<Notify>, mpsc::UnboundedReceiver<Out>, Arc<Room>)>,
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
            conn.fail("harakiri: the asyncio loop is stuck".into());
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
        let conn = Conn::new(want, head, out, room.clone(), reader, socket);
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

    /// WebSocket `id` closed, with the client's `code` and `reason`.
    pub(crate) fn closed(&self, id: u64, code: u16, reason: String) {
        let message = Message::Closed(code, reason);
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
            // The chunk that completes a body of known length says so, as
            // uvicorn's does: the app asks no more.
            Some(Ok(data)) => Message::Request {
                body: data,
                more: http_body::Body::size_hint(&body).exact() != Some(0),
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
            Some(conn) if conn.websocket => Message::Closed(1006, String::new()),
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

    /// A message of request `id`'s app (`http.response.*`, `websocket.*`);
    /// true when the client is behind and the app should wait for room.
    fn send(&self, id: u64, message: &Bound<'_, PyDict>) -> PyResult<bool> {
        match lock(&self.0.conns).get_mut(&id) {
            Some(conn) => conn.answer(message),
            None => Ok(false),
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
        let conn = lock(&self.0.conns).remove(&id);
        if let Some(conn) = conn {
            conn.end(error);
        }
    }
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
            Self::Closed(code, reason) => {
                dict.set_item("type", "websocket.disconnect")?;
                dict.set_item("code", code)?;
                dict.set_item("reason", reason)?;
            }
        }
        Ok(dict)
    }
}
