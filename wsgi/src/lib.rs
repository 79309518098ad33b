//! Python WSGI applications (PEP 3333) as stackway apps: a Flask or Django app
//! mounts under a Dispatcher beside Rust apps, sits behind SharedData, and is
//! wrapped by any middleware, on an embedded CPython.
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::Dispatcher;
//! use stackway_wsgi::Wsgi;
//!
//! let hello = Wsgi::from_source(
//!     "hello",
//!     r#"
//! def application(environ, start_response):
//!     start_response("200 OK", [("Content-Type", "text/plain")])
//!     return [f"Hello from {environ['SCRIPT_NAME']}{environ['PATH_INFO']}".encode()]
//! "#,
//!     "application",
//! )
//! .unwrap();
//! let app = Dispatcher::default().mount("/py", hello);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/py/there").await.assert_text("Hello from /py/there");
//! # });
//! ```
//!
//! # PEP 3333, to the letter
//!
//! The environ has the CGI variables from stackway's environ, SCRIPT_NAME and
//! PATH_INFO percent-decoded and as native (latin-1) strings, the raw target in
//! `REQUEST_URI` and `RAW_URI`, and `wsgi.input` with the request body
//! (`read`, `readline`, `readlines`, iteration). `start_response` follows the PEP's rules (once,
//! unless with `exc_info`, which re-raises once the head is out), and returns
//! `write()`. The response is sent as Python yields it: the head with the
//! first non-empty chunk, each chunk when it comes, and `close()` is called
//! on the iterable however it ends, the client going away included.
//! `wsgi.file_wrapper` around a real file is sent from its descriptor, not
//! through Python objects.
//!
//! # Threads and the GIL
//!
//! Python runs on a bounded pool of threads of its own ([`Wsgi::threads`],
//! gunicorn's `--threads`), holding the GIL only while in Python: the server's
//! workers never wait for Python, and an app waiting on I/O or a slow client
//! lets the others run. `threads(0)` runs it on the workers instead, as
//! uWSGI's processes do: half the CPU of a small request, at the price of a
//! worker that serves nothing else meanwhile (see [`worker_context`]). An
//! exception gives 500 (or, once the head is out, an aborted response) with
//! the traceback on stderr; nothing an app does stops the server. When every thread is busy, requests queue; past
//! [`Wsgi::queue`] waiting, they get 503.
//!
//! Requests are taken in the order they came, and a second thread starts on
//! one only while no busy thread is computing a request it took less than
//! 20 ms ago: Python runs one thread at a time, so requests that compute
//! would only trade the GIL in no fair order, each waiting for all the
//! others (eight threads gave a CPU-bound app a p99 of 180 ms, one thread
//! 28 ms). Requests that wait on I/O still overlap, and a long request does
//! not hold up the short ones behind it for more than those 20 ms. An idle
//! thread looks at the busy ones every millisecond while requests wait.
//!
//! # Slow clients hold no thread
//!
//! A request body is read whole before a thread is taken (the first MiB in
//! memory, the rest in an unnamed temporary file), unless the mount asks for
//! [`stream_input`](Wsgi::stream_input); a response is taken from Python as
//! fast as Python makes it ([`Body::spooled`](stackway::Body::spooled), with
//! the same bounds), so a client that uploads slowly, or reads slowly or not at
//! all, ties up no Python thread: gunicorn's docs ask for a buffering proxy in
//! front for this; here none is needed.
//!
//! # ASGI
//!
//! [`Asgi`] mounts an ASGI 3 app (FastAPI, Starlette, Django's `asgi.py`) the
//! same way, on the same interpreter: every ASGI app of a process runs on one
//! asyncio event loop of its own thread.
//!
//! # Stuck requests
//!
//! [`Wsgi::harakiri`] cuts off a request that has run in Python past a limit:
//! 504, the stuck thread's stack logged, and a hook that `stackway serve` uses
//! to have the process replaced (`--harakiri`).

mod asgi;
mod body;
mod environ;
mod harakiri;
mod objects;
mod pool;
mod run;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use pyo3::prelude::*;
use stackway::app::BoxFuture;
use stackway::environ::Packet;
use stackway::readings::PoolReading;
use stackway::{App, Body, IntoResponse, Request, Response};
use tokio::sync::oneshot;

pub use crate::asgi::{Asgi, StartupError};
use crate::body::BodyReader;
use crate::environ::Cgi;
use crate::harakiri::{Harakiri, Watchdog};
use crate::objects::{Exchange, Head, Waiting};
use crate::pool::{Pool, Refused};
use crate::run::Job;

/// The bytes of a request or response body kept in memory; more go to a
/// temporary file.
const MEMORY: usize = 1 << 20;

/// A Python WSGI application as a stackway app; see the [crate docs](crate).
#[doc(alias = "application")]
#[doc(alias = "wsgi")]
pub struct Wsgi {
    app: Arc<Py<PyAny>>,
    name: String,
    threads: usize,
    queue: usize,
    /// Started on the first request, once the settings are final; shared
    /// with [`WsgiStats`].
    pool: Arc<OnceLock<Pool>>,
    counters: Arc<Counters>,
    harakiri: Option<Harakiri>,
    /// Watches requests run on the workers, once one has a limit.
    watchdog: OnceLock<Watchdog>,
    stream_input: bool,
    /// `wsgi.multithread`, when said; else from the threads.
    multithread: Option<bool>,
    multiprocess: bool,
}

/// What the Python threads did.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) busy: AtomicUsize,
    pub(crate) jobs: AtomicU64,
    pub(crate) waited_nanos: AtomicU64,
    /// Requests cut off by harakiri.
    harakiri: Arc<AtomicU64>,
}

/// A WSGI app's thread pool as it stands: see [`Wsgi::stats`].
#[derive(Clone)]
pub struct WsgiStats {
    threads: usize,
    pool: Arc<OnceLock<Pool>>,
    counters: Arc<Counters>,
}

impl WsgiStats {
    /// Threads that run Python.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Threads running a request now.
    pub fn busy(&self) -> usize {
        self.counters.busy.load(Ordering::Relaxed)
    }

    /// Requests waiting for a free thread.
    pub fn queued(&self) -> usize {
        self.pool.get().map_or(0, Pool::queued)
    }

    /// Requests a thread has taken, since the start.
    pub fn jobs(&self) -> u64 {
        self.counters.jobs.load(Ordering::Relaxed)
    }

    /// Seconds those requests waited in the queue, in all.
    pub fn waited_seconds(&self) -> f64 {
        self.counters.waited_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Requests cut off by [harakiri](Wsgi::harakiri).
    pub fn harakiri(&self) -> u64 {
        self.counters.harakiri.load(Ordering::Relaxed)
    }

    /// All of the above at once, as metrics and status pages read them.
    pub fn reading(&self) -> PoolReading {
        PoolReading {
            threads: self.threads(),
            busy: self.busy(),
            queued: self.queued(),
            jobs: self.jobs(),
            waited_seconds: self.waited_seconds(),
            harakiri: self.harakiri(),
        }
    }
}

impl fmt::Debug for WsgiStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsgiStats")
            .field("threads", &self.threads)
            .field("busy", &self.busy())
            .field("queued", &self.queued())
            .finish()
    }
}

/// Why a WSGI or ASGI app could not be loaded; `Display` has Python's own message,
/// with the traceback where there is one.
#[derive(Debug, Clone)]
pub struct LoadError {
    spec: String,
    why: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot load the Python app {:?}: {}",
            self.spec, self.why
        )
    }
}

impl std::error::Error for LoadError {}

/// Puts `dir` first on Python's `sys.path` (gunicorn's `--pythonpath`), for
/// the apps imported after it.
pub fn python_path(dir: impl AsRef<std::path::Path>) -> Result<(), LoadError> {
    let dir = dir.as_ref();
    let shown = dir.display().to_string();
    let error = |why: String| LoadError {
        spec: shown.clone(),
        why,
    };
    let absolute = std::fs::canonicalize(dir).map_err(|e| error(e.to_string()))?;
    Python::attach(|py| {
        let path = py.import("sys")?.getattr("path")?;
        let absolute = absolute.to_string_lossy();
        if !path.contains(&*absolute)? {
            path.call_method1("insert", (0, &*absolute))?;
        }
        Ok::<_, PyErr>(())
    })
    .map_err(|e| error(e.to_string()))
}

/// Imports the callable of `spec` (`module:callable`, the callable perhaps a
/// dotted path; `module` alone means its `default`), with the working
/// directory on `sys.path` as gunicorn and uvicorn have it.
pub(crate) fn import(spec: &str, default: &str, example: &str) -> Result<Py<PyAny>, LoadError> {
    let error = |why: String| LoadError {
        spec: spec.to_owned(),
        why,
    };
    let (module, callable) = spec.split_once(':').unwrap_or((spec, default));
    if module.is_empty() || callable.is_empty() {
        return Err(error(format!("expected module:callable, as in {example}")));
    }
    python_path(".").map_err(|e| error(e.why))?;
    let app = Python::attach(|py| -> PyResult<Py<PyAny>> {
        main_thread(py)?;
        let mut app = py.import(module)?.into_any();
        for name in callable.split('.') {
            app = app.getattr(name)?;
        }
        Ok(app.unbind())
    })
    .map_err(|e| error(Python::attach(|py| traceback(py, &e))))?;
    checked(app).map_err(error)
}

/// Runs Python `source` as a module named `module` and takes its `callable`.
pub(crate) fn from_source(
    module: &str,
    source: &str,
    callable: &str,
) -> Result<Py<PyAny>, LoadError> {
    let error = |why: String| LoadError {
        spec: format!("{module}:{callable}"),
        why,
    };
    let app = Python::attach(|py| -> PyResult<Py<PyAny>> {
        let code = std::ffi::CString::new(source)
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("NUL in the source"))?;
        let file = std::ffi::CString::new(format!("{module}.py")).unwrap_or_default();
        let name = std::ffi::CString::new(module).unwrap_or_default();
        main_thread(py)?;
        let module = PyModule::from_code(py, &code, &file, &name)?;
        Ok(module.getattr(callable)?.unbind())
    })
    .map_err(|e| error(Python::attach(|py| traceback(py, &e))))?;
    checked(app).map_err(error)
}

/// `threading` takes the thread that first imports it for the main thread:
/// let that be the one loading the apps (the process's main thread, under
/// `stackway serve`), not a Python pool's or the asyncio loop's. uvloop asks
/// `threading` whether it runs on the main thread and, told yes on the loop's,
/// fails to set up signals there.
fn main_thread(py: Python<'_>) -> PyResult<()> {
    py.import("threading").map(drop)
}

fn checked(app: Py<PyAny>) -> Result<Py<PyAny>, String> {
    match Python::attach(|py| app.bind(py).is_callable()) {
        true => Ok(app),
        false => Err("it is not callable".to_owned()),
    }
}

impl Wsgi {
    /// Imports `module:callable` (gunicorn's spec; `module` alone means its
    /// `application`; the callable may be a dotted path), with the working
    /// directory on `sys.path` as gunicorn has it.
    pub fn import(spec: &str) -> Result<Self, LoadError> {
        let app = import(spec, "application", "mysite.wsgi:application")?;
        Ok(Self::from_callable(app, spec.to_owned()))
    }

    /// Runs Python `source` as a module named `module` and takes its
    /// `callable`: for apps kept as text, and for tests.
    pub fn from_source(module: &str, source: &str, callable: &str) -> Result<Self, LoadError> {
        let app = from_source(module, source, callable)?;
        Ok(Self::from_callable(app, format!("{module}:{callable}")))
    }

    /// Wraps a Python callable that is already at hand.
    pub fn new(app: Py<PyAny>) -> Self {
        Self::from_callable(app, "app".to_owned())
    }

    fn from_callable(app: Py<PyAny>, name: String) -> Self {
        Self {
            app: Arc::new(app),
            name,
            threads: 8,
            queue: 1024,
            pool: Arc::default(),
            counters: Arc::default(),
            harakiri: None,
            watchdog: OnceLock::new(),
            stream_input: false,
            multithread: None,
            multiprocess: false,
        }
    }

    /// Tells the app (`wsgi.multiprocess`) that other processes run it too,
    /// so that what it keeps in memory is not all there is: `stackway serve
    /// --processes N` says so for N > 1, as gunicorn and uWSGI do. Default
    /// false.
    pub fn multiprocess(mut self, multiprocess: bool) -> Self {
        self.multiprocess = multiprocess;
        self
    }

    /// Whether the app may be called again while a call is running in this
    /// process (`wsgi.multithread`). By default true, but false with one
    /// Python [thread](Self::threads). With 0 threads it depends on the
    /// server's workers: `stackway serve` says false when a process has one.
    pub fn multithread(mut self, multithread: bool) -> Self {
        self.multithread = Some(multithread);
        self
    }

    /// Gives the app the request body as it arrives (`wsgi.input` waits for
    /// the client), instead of reading it whole before a Python thread is
    /// taken: for apps that answer before the upload ends, or stream it on.
    /// A slow upload then holds a thread.
    pub fn stream_input(mut self, stream: bool) -> Self {
        self.stream_input = stream;
        self
    }

    /// Cuts off a request that has run in Python for longer than `limit`
    /// (uWSGI's `--harakiri`, gunicorn's `--timeout`): it is answered 504 if
    /// its head has not gone out, else its response is aborted, and the stuck
    /// thread's Python stack is logged. Time waiting for a free thread does
    /// not count. A thread stuck in Python cannot be stopped, only its
    /// process: `then` is called for each request cut off, and
    /// `stackway serve` asks its supervisor there for a new process, which
    /// serves before this one drains and is killed.
    pub fn harakiri(mut self, limit: Duration, then: impl Fn() + Send + Sync + 'static) -> Self {
        self.harakiri = Some(Harakiri {
            limit,
            then: Arc::new(then),
            app: self.name.as_str().into(),
            kills: self.counters.harakiri.clone(),
        });
        self
    }

    /// How many threads run Python for this app (gunicorn's `--threads`).
    /// Default 8.
    ///
    /// 0 runs the app on the server's own worker threads, as uWSGI's and
    /// gunicorn's sync workers do: no hand-off to a thread and back, which is
    /// most of what a small request costs (a hello takes half the CPU), but
    /// a worker serves nothing else while Python runs (its other
    /// connections wait, whatever app they are for), so give it
    /// [`Server::workers`](stackway::Server::workers) and processes enough.
    /// The response goes out when the app returns (kept as it is yielded):
    /// apps that stream as they go (server-sent events) need threads. The
    /// request body is always read whole first ([`stream_input`](Self::stream_input)
    /// has no effect), and a request cut off by [harakiri](Self::harakiri)
    /// gets its 504 only if Python gives the worker back. Serve with
    /// [`worker_context`] so that the workers stay attached to the
    /// interpreter between requests.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// How many requests may wait for a free thread; more get 503. Default 1024.
    pub fn queue(mut self, requests: usize) -> Self {
        self.queue = requests;
        self
    }

    /// The thread pool as it stands, for metrics and status pages.
    pub fn stats(&self) -> WsgiStats {
        WsgiStats {
            threads: self.threads,
            pool: self.pool.clone(),
            counters: self.counters.clone(),
        }
    }

    fn pool(&self) -> &Pool {
        self.pool
            .get_or_init(|| Pool::start(&self.app, self.threads, self.queue, &self.counters))
    }
}

/// Keeps a worker thread attached to the interpreter while it runs `serve`,
/// for [`Server::worker_context`](stackway::Server::worker_context): apps run
/// on the workers ([`Wsgi::threads`]`(0)`) then take the GIL without making
/// a Python thread state for each request, which costs as much as a small
/// request itself.
///
/// ```no_run
/// # fn app() -> stackway_wsgi::Wsgi { unimplemented!() }
/// stackway::Server::bind("127.0.0.1:8000")?
///     .worker_context(stackway_wsgi::worker_context)
///     .run(app().threads(0))?;
/// # Ok::<(), stackway::Error>(())
/// ```
pub fn worker_context(serve: &mut (dyn FnMut() + Send)) {
    Python::attach(|py| py.detach(serve));
}

/// An exception with its traceback, as Python prints it.
pub(crate) fn traceback(py: Python<'_>, e: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (e.value(py),)))
        .and_then(|lines| lines.extract::<Vec<String>>());
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_owned(),
        Err(_) => e.to_string(),
    }
}

impl App for Wsgi {
    fn call(&self, mut req: Request) -> impl Future<Output = Response> + Send {
        let body = std::mem::take(req.body_mut());
        self.answer(Cgi::new(req), body)
    }

    /// The environ made from the packet's variables, as uWSGI makes it.
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        Ok(Box::pin(self.answer(Cgi::packet(packet), Body::empty())))
    }

    fn takes_packets(&self) -> bool {
        true
    }
}

impl Wsgi {
    /// Answers the request `cgi` describes, whose body is `body`.
    ///
    /// Not an `async fn`, which would keep a copy of its arguments; the job
    /// is made apart (`job`) and handed over before its answer is waited
    /// for, so that the future keeps neither the environ nor the job. It is
    /// boxed on every request, and under a kilobyte the box comes from the
    /// allocator's per-thread cache.
    #[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
    fn answer(&self, cgi: Cgi, body: Body) -> impl Future<Output = Response> + Send {
        async move {
            let on_workers = self.threads == 0;
            let input = match self.stream_input && !on_workers {
                true => body::streamed(body),
                false => match body::whole(body, MEMORY).await {
                    Ok(input) => input,
                    Err(answer) => return answer,
                },
            };
            let (job, exchange, waiting) = self.job(cgi, input);
            let answer = match waiting {
                None => {
                    self.run_here(job);
                    if exchange.is_cut() {
                        return StatusCode::GATEWAY_TIMEOUT.into_response();
                    }
                    exchange.kept()
                }
                Some((head_rx, body)) => match self.run_on_pool(job, &exchange, head_rx).await {
                    Ok(head) => head.ok().map(|head| (head, body)),
                    Err(answer) => return answer,
                },
            };
            let (head, body) = match answer {
                Some((head, body)) if !head.failed => (head, body),
                // The app raised or broke a rule before its head: the 500 says
                // so in words (an ASGI app's too), and `ErrorPages` dresses it.
                Some((head, _)) => return head.status.into_response(),
                None => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            };
            let mut res = Response::new(body);
            *res.status_mut() = head.status;
            *res.headers_mut() = head.headers;
            if let Some(reason) = head.reason {
                res.extensions_mut().insert(reason);
            }
            res
        }
    }
}

impl Wsgi {
    /// The job for `req` (its body taken, read into `input`), with its
    /// exchange and, on Python's threads, what the server's task waits on:
    /// the head's receiver and the spooled body. On the server's worker the
    /// exchange keeps both until the app returns.
    fn job(&self, mut cgi: Cgi, input: BodyReader) -> (Job, Arc<Exchange>, Option<Waiting>) {
        cgi.multithread = self.multithread.unwrap_or(self.threads != 1);
        cgi.multiprocess = self.multiprocess;
        // Python sends into the spool and never waits for the client; on
        // the worker, the response is made when it returns.
        let (exchange, waiting) = match self.threads {
            0 => (Exchange::on_worker(), None),
            _ => {
                let (exchange, waiting) = Exchange::on_threads();
                (exchange, Some(waiting))
            }
        };
        let job = Job {
            cgi,
            input,
            exchange: exchange.clone(),
            queued_at: std::time::Instant::now(),
            started: None,
        };
        (job, exchange, waiting)
    }

    /// Runs `job` on this thread, a worker's (see [`Wsgi::threads`]), watched
    /// by the harakiri thread when there is a limit.
    fn run_here(&self, job: Job) {
        Python::attach(|py| {
            let watchdog = self.harakiri.as_ref().map(|harakiri| {
                self.watchdog
                    .get_or_init(|| Watchdog::start(harakiri.clone()))
            });
            let _watch = watchdog.map(|w| w.watch(&job.exchange, harakiri::ident(py)));
            self.counters.jobs.fetch_add(1, Ordering::Relaxed);
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            run::run(py, &self.app, job);
            self.counters.busy.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Queues `job` for the pool's threads and waits for its head, cut off
    /// at the harakiri limit; `Err` is the answer when it cannot be had.
    /// Not an `async fn`: the job is handed to the pool before the future
    /// is made, so that the future does not keep it.
    fn run_on_pool<'a>(
        &'a self,
        mut job: Job,
        exchange: &'a Arc<Exchange>,
        head_rx: oneshot::Receiver<Head>,
    ) -> impl Future<Output = Result<Result<Head, oneshot::error::RecvError>, Response>> + Send + 'a
    {
        let started_rx = self.harakiri.as_ref().map(|_| {
            let (started, started_rx) = oneshot::channel();
            job.started = Some(started);
            started_rx
        });
        let refused = self.pool().push(job).err();
        async move {
            match refused {
                None => {}
                Some(Refused::Full) => {
                    tracing::warn!(app = %self.name, "every Python thread is busy and the queue is full: 503");
                    return Err(StatusCode::SERVICE_UNAVAILABLE.into_response());
                }
                Some(Refused::Closed) => {
                    return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
            }
            let (Some(harakiri), Some(started)) = (&self.harakiri, started_rx) else {
                return Ok(head_rx.await);
            };
            // Python's time starts when a thread takes the request.
            let Ok(ident) = started.await else {
                return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            };
            let deadline = tokio::time::Instant::now() + harakiri.limit;
            // The body is watched apart: its client may never read it.
            let watched = Arc::downgrade(exchange);
            tokio::spawn(harakiri.clone().watch(watched, deadline, ident));
            match tokio::time::timeout_at(deadline, head_rx).await {
                Ok(head) => Ok(head),
                Err(_) => {
                    if exchange.cut() {
                        harakiri.stuck(ident);
                    }
                    Err(StatusCode::GATEWAY_TIMEOUT.into_response())
                }
            }
        }
    }
}

impl fmt::Debug for Wsgi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wsgi")
            .field("app", &self.name)
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}
