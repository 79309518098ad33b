//! The HTTP server: HTTP/1.1 (keep-alive, pipelining) and HTTP/2, in the clear
//! or over TLS, on TCP and unix sockets, on hyper and tokio, with graceful
//! shutdown, timeouts and limits.
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> stackway::Result<()> {
//! // Serve on a free port with a worker per core until SIGINT or SIGTERM.
//! let server = stackway::Server::bind("127.0.0.1:0")?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(stackway::apps::hello)
//! # }
//! ```
//!
//! Several [`Listener`]s, each TCP or unix, in the clear or with [`Tls`], and
//! with or without the PROXY protocol, serve the same app with
//! [`Server::new`].
//!
//! # What the server guarantees
//!
//! - **An app always answers.** A panic in an app gives that request a 500
//!   and the server goes on. The server's own errors (this 500, and the 400
//!   and 413 below) can carry pages of your own:
//!   [`error_page`](Server::error_page).
//! - **Every connection makes progress or goes.** Four clocks, each measuring
//!   a lack of progress rather than total time, so slow clients that keep
//!   going are served:
//!
//!   | clock | closes | default | nginx |
//!   |---|---|---|---|
//!   | [`header_read_timeout`](Server::header_read_timeout) | a request head not complete this long after its first byte (and the HTTP/2 preface) | 30 s | `client_header_timeout` |
//!   | [`idle_timeout`](Server::idle_timeout) | a connection with no request in flight and nothing read | 60 s | `keepalive_timeout` |
//!   | [`send_timeout`](Server::send_timeout) | a connection that could not write a byte of a response this long (the client does not read); on HTTP/2, also a single stream whose window stays shut (that stream is reset) | 60 s | `send_timeout` |
//!   | [`body_timeout`](Server::body_timeout) | a request body the app waits on and no byte arrives for: the app's read fails ([`Error::is_timeout`]) and the connection closes after its answer | 60 s | `client_body_timeout` |
//!
//!   A worker looks at all of its connections' clocks at once, every eighth
//!   of the shortest timeout (within 10 ms and 1 s): a connection is closed
//!   within that tick after its deadline, never before.
//!
//!   An upgraded connection (a WebSocket, once its `101` is sent) is the
//!   task's that took it, and still the server's: it counts as open and
//!   against [`max_connections`](Server::max_connections), is closed when no
//!   byte has moved either way for the `idle_timeout`, and at the end of a
//!   shutdown's grace period.
//! - **Limits.** Request heads over [`max_header_size`](Server::max_header_size)
//!   get 431; bodies over [`max_body_size`](Server::max_body_size) get 413 (at
//!   once when `Content-Length` says so, or as soon as a chunked body passes the
//!   limit); at most [`max_connections`](Server::max_connections) are open, and
//!   more wait in the listen queue.
//! - **Malformed HTTP/1.1 is refused** with 400 and the connection closed:
//!   hyper refuses bad syntax, whitespace before a header's colon and invalid or
//!   conflicting `Content-Length`; the server adds the `Host` rules of RFC 9112
//!   §3.2 (exactly one `Host` in an HTTP/1.1 request).
//! - **Graceful shutdown that a balancer can follow.** On SIGINT or SIGTERM
//!   (or the future given to [`shutdown_on`](Server::shutdown_on), or a
//!   [`Shutdown`] handle) it first
//!   drains for [`drain_delay`](Server::drain_delay) (default none): the
//!   [`health_path`](Server::health_path) answers 503, the server goes on
//!   accepting and serving, and connections are not kept (`Connection: close`,
//!   HTTP/2 GOAWAY). Then it stops accepting, lets in-flight requests finish
//!   within [`grace_period`](Server::grace_period), and returns.
//! - **Handshakes are bounded.** A connection's PROXY protocol header, TLS
//!   handshake or uwsgi packet must arrive within
//!   [`handshake_timeout`](Server::handshake_timeout) (default 10 s).

mod clock;
mod connection;
mod listener;
mod protocol;
mod proxy_protocol;
mod request;
mod sendfile;
mod shared;
mod stats;
mod stream;
mod tls;
mod uwsgi;
mod worker;

pub use listener::{ListenAddr, Listener};
pub use stats::Stats;
pub use tls::{ClientCert, Tls};

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::sync::Semaphore;

use self::shared::{Lifecycle, Phase};
use self::worker::Worker;
use crate::App;
use crate::error::{Error, Kind};

type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;
type ReadyHook = Box<dyn FnOnce(&[ListenAddr]) + Send>;
type WorkerContext = Arc<dyn Fn(&mut (dyn FnMut() + Send)) + Send + Sync>;

/// Binds `addr` and serves `app` on the current runtime until SIGINT or SIGTERM.
///
/// The shorthand for `Server::bind(addr)?.serve(app).await`; see [`Server`] to
/// configure limits, timeouts and workers.
pub async fn serve(addr: impl ToSocketAddrs, app: impl App) -> crate::Result<()> {
    Server::bind(addr)?.serve(app).await
}

/// A configured, bound HTTP server; see the [module docs](self).
#[must_use = "a server does nothing until `run` or `serve` is called"]
pub struct Server {
    listeners: Vec<Listener>,
    config: Config,
    workers: usize,
    shutdown: Option<ShutdownSignal>,
    when_ready: Option<ReadyHook>,
    worker_context: Option<WorkerContext>,
    /// The phase, the drain delay and the counters, made before the server
    /// runs for [`stats`](Self::stats) and [`shutdown_handle`](Self::shutdown_handle).
    lifecycle: Arc<Lifecycle>,
}

#[derive(Debug, Clone)]
struct Config {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    body_timeout: Duration,
    grace_period: Duration,
    handshake_timeout: Duration,
    health_path: Option<String>,
    max_header_size: usize,
    max_body_size: Option<u64>,
    max_connections: usize,
    /// The pages of the server's own errors, by status; `None` for none.
    error_pages: Option<Arc<ErrorPages>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            grace_period: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            health_path: None,
            max_header_size: 64 * 1024,
            max_body_size: Some(1 << 30),
            max_connections: 10_000,
            error_pages: None,
        }
    }
}

/// A page's type and bytes, by the status it stands in for.
type ErrorPages = HashMap<StatusCode, (HeaderValue, Bytes)>;

impl Server {
    /// Binds a listening socket on `addr` (port 0 picks a free port).
    ///
    /// Fails with [`Error::is_bind`] when the address cannot be listened on (in
    /// use, not local, no permission).
    pub fn bind(addr: impl ToSocketAddrs) -> crate::Result<Self> {
        Self::new([Listener::bind(addr)?])
    }

    /// Serves on a TCP listener bound elsewhere (options this builder does
    /// not offer); see [`Listener`] for unix sockets and inherited ones.
    ///
    /// Fails with [`Error::is_bind`] when the socket cannot be used as a
    /// listener, as [`bind`](Self::bind) does.
    pub fn from_listener(listener: StdListener) -> crate::Result<Self> {
        Self::new([Listener::tcp(listener)?])
    }

    /// Serves on every one of `listeners`, each with its own TLS and PROXY
    /// protocol settings.
    ///
    /// Fails with [`Error::is_bind`] when there is none.
    pub fn new(listeners: impl IntoIterator<Item = Listener>) -> crate::Result<Self> {
        let listeners: Vec<Listener> = listeners.into_iter().collect();
        if listeners.is_empty() {
            let none = io::Error::new(io::ErrorKind::InvalidInput, "no listener to serve on");
            return Err(Error::new(Kind::Bind).with(none));
        }
        Ok(Self {
            listeners,
            config: Config::default(),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            shutdown: None,
            when_ready: None,
            worker_context: None,
            lifecycle: Arc::new(Lifecycle::new(Stats::default())),
        })
    }

    /// The first listener's address, when it is TCP (with the real port when
    /// bound to port 0).
    ///
    /// # Panics
    ///
    /// When the first listener is a unix socket: see
    /// [`local_addrs`](Self::local_addrs).
    pub fn local_addr(&self) -> SocketAddr {
        match self.listeners[0].local_addr() {
            ListenAddr::Tcp { addr, .. } => *addr,
            ListenAddr::Unix(path) => panic!("the first listener is unix:{}", path.display()),
        }
    }

    /// The server's counters (connections accepted and open, TLS
    /// handshakes), live while it runs: for a metrics middleware or a status
    /// page.
    pub fn stats(&self) -> Stats {
        self.lifecycle.stats.clone()
    }

    /// What stops this server from anywhere, as SIGTERM does: for an app
    /// that decides the server's end itself.
    pub fn shutdown_handle(&self) -> Shutdown {
        Shutdown(self.lifecycle.clone())
    }

    /// Where each listener listens.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        self.listeners
            .iter()
            .map(|l| l.local_addr().clone())
            .collect()
    }

    /// How long a client may take to send a whole request head, from its first
    /// byte. Default 30 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in flight, and an
    /// upgraded one (a WebSocket) with no byte moving either way. Default 60 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// How long a response may wait to write a byte because the client does
    /// not read, before the connection is closed (nginx's `send_timeout`).
    /// On HTTP/2, a stream whose flow-control window the client keeps shut
    /// for this long is reset, and the connection's other streams go on.
    /// The clock measures lack of progress, not the whole response: a slow
    /// client that keeps reading is never cut off. On HTTP/2 a stream's
    /// progress is seen a body chunk at a time (SharedData's are 256 KiB),
    /// so keep the timeout above the time a slow client takes to read one
    /// (4 s at 64 KiB/s). Default 60 s.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.config.send_timeout = timeout;
        self
    }

    /// How long an app reading a request body may wait for its next byte.
    /// Past it, the read fails with an error for which
    /// [`Error::is_timeout`] is true (the app may answer 408), and the
    /// connection is closed after the response (nginx's
    /// `client_body_timeout`). Default 60 s.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_timeout = timeout;
        self
    }

    /// How long in-flight requests may take to finish once shutdown begins.
    /// Default 30 s.
    pub fn grace_period(mut self, period: Duration) -> Self {
        self.config.grace_period = period;
        self
    }

    /// How long shutdown drains before it stops accepting (default none):
    /// the [`health_path`](Self::health_path) answers 503 and the server goes
    /// on serving and accepting, but keeps no connection (`Connection: close`,
    /// HTTP/2 GOAWAY), so that a balancer that checks health sees it leave and
    /// sends its last requests somewhere else, none of them refused
    /// (Kubernetes' preStop, HAProxy's `option httpchk`).
    pub fn drain_delay(self, delay: Duration) -> Self {
        self.lifecycle.set_drain_delay(delay);
        self
    }

    /// Answers requests for `path` itself: 200 `ok` while serving, 503
    /// `draining` once shutdown has begun, for a balancer's health checks and
    /// Kubernetes' readiness probes. The app never sees them.
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.config.health_path = Some(path.into());
        self
    }

    /// How long a new connection may take to send its PROXY protocol header
    /// and complete its TLS handshake (on a uwsgi listener, to send its
    /// packet). Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// The largest request head (request line and headers) accepted, in bytes;
    /// larger ones get 431. Default 64 KiB; values under 8 KiB (hyper's
    /// smallest read buffer) are raised to 8 KiB.
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.config.max_header_size = bytes.max(8192);
        self
    }

    /// The largest request body accepted, in bytes, or `None` for no limit;
    /// larger ones get 413. Default 1 GiB.
    pub fn max_body_size(mut self, bytes: Option<u64>) -> Self {
        self.config.max_body_size = bytes;
        self
    }

    /// A page for the errors the server answers itself, before or around the
    /// app, in place of their plain text: `400` (a request breaking RFC
    /// 9112's `Host` rule), `413` (a body over
    /// [`max_body_size`](Self::max_body_size)) and `500` (an app that
    /// panicked), as nginx's `error_page` covers its own. The status and
    /// `Connection: close` stay; the page brings `content_type`. Pages for
    /// what apps answer are the middleware crate's `ErrorPages`; hyper's own
    /// refusals of unparsable heads (400, 431) are written before any of this
    /// and keep their empty bodies.
    ///
    /// ```
    /// use stackway::Server;
    /// use stackway::http::{HeaderValue, StatusCode};
    ///
    /// let html = HeaderValue::from_static("text/html; charset=utf-8");
    /// let server = Server::bind("127.0.0.1:0")?
    ///     .error_page(StatusCode::PAYLOAD_TOO_LARGE, html, "<h1>Too large</h1>");
    /// # Ok::<(), stackway::Error>(())
    /// ```
    pub fn error_page(
        mut self,
        status: StatusCode,
        content_type: HeaderValue,
        page: impl Into<Bytes>,
    ) -> Self {
        let pages = self.config.error_pages.get_or_insert_default();
        Arc::make_mut(pages).insert(status, (content_type, page.into()));
        self
    }

    /// The most connections open at once; more wait in the listen queue.
    /// Default 10,000; 0 counts as 1.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n.max(1);
        self
    }

    /// How many workers [`run`](Self::run) starts: each a thread with its own
    /// single-threaded runtime, all accepting on the same socket, as gunicorn's
    /// worker processes do. Default: one per core; 0 counts as 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Shuts down when `signal` completes, instead of on SIGINT or SIGTERM.
    pub fn shutdown_on(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Calls `hook` with the listening addresses once the server is serving
    /// and its shutdown signals are installed (gunicorn's `when_ready`): the
    /// moment to tell the world, as `stackway serve` prints `listening on …`.
    pub fn when_ready(mut self, hook: impl FnOnce(&[ListenAddr]) + Send + 'static) -> Self {
        self.when_ready = Some(Box::new(hook));
        self
    }

    /// Runs each worker thread of [`run`](Self::run) inside `context`, which
    /// must call the function it is given, once: for what a thread sets up
    /// once and keeps while it serves. `stackway_wsgi::worker_context` keeps
    /// the thread attached to the Python interpreter, so that apps run on
    /// the workers do not attach anew for each request.
    pub fn worker_context(
        mut self,
        context: impl Fn(&mut (dyn FnMut() + Send)) + Send + Sync + 'static,
    ) -> Self {
        self.worker_context = Some(Arc::new(context));
        self
    }

    /// Serves `app` on the current tokio runtime until shutdown; see
    /// [`run`](Self::run) for worker threads. The `workers` setting is not used.
    pub async fn serve(self, app: impl App) -> crate::Result<()> {
        let addrs = self.local_addrs();
        let signal = self.shutdown.unwrap_or_else(|| Box::pin(os_signal()));
        let lifecycle = self.lifecycle;
        let connections = Arc::new(Semaphore::new(self.config.max_connections));
        let worker = Worker::new(
            &self.listeners,
            self.config,
            Arc::new(app),
            lifecycle.clone(),
            connections,
        )?;
        // The worker holds its own handles: once it stops accepting, the sockets close.
        drop(self.listeners);
        let running = tokio::spawn(worker.run());
        if let Some(hook) = self.when_ready {
            hook(&addrs);
        }
        shut_down(&lifecycle, signal).await;
        running.await.map_err(io_error)
    }

    /// Serves `app` on [`workers`](Self::workers) threads, blocking until
    /// shutdown has finished.
    ///
    /// Called from inside a tokio runtime (an `async fn`, `#[tokio::main]`),
    /// it still works, but blocks that runtime's thread until shutdown: there,
    /// prefer [`serve`](Self::serve)`.await`.
    pub fn run(self, app: impl App) -> crate::Result<()> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // A runtime cannot be blocked on from inside another: wait on a thread of our own.
            return std::thread::scope(|scope| match scope.spawn(|| self.run_here(app)).join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            });
        }
        self.run_here(app)
    }

    fn run_here(self, app: impl App) -> crate::Result<()> {
        let addrs = self.local_addrs();
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_error)?;
        let signal = match self.shutdown {
            Some(signal) => signal,
            // Signal handlers must be registered inside a runtime.
            None => {
                let _runtime = signals.enter();
                Box::pin(os_signal())
            }
        };
        let lifecycle = self.lifecycle;
        let app = Arc::new(app);
        let mut threads = Vec::with_capacity(self.workers);
        let connections = Arc::new(Semaphore::new(self.config.max_connections));
        for n in 0..self.workers {
            let worker = Worker::new(
                &self.listeners,
                self.config.clone(),
                app.clone(),
                lifecycle.clone(),
                connections.clone(),
            )?;
            let context = self.worker_context.clone();
            let thread = std::thread::Builder::new()
                .name(format!("stackway-worker-{n}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let mut worker = Some(worker);
                    let mut serve = || {
                        if let Some(worker) = worker.take() {
                            runtime.block_on(worker.run());
                        }
                    };
                    match &context {
                        Some(context) => context(&mut serve),
                        None => serve(),
                    }
                    io::Result::Ok(())
                })
                .map_err(io_error)?;
            threads.push(thread);
        }
        // The workers hold their own handles: once they stop accepting, the sockets close.
        drop(self.listeners);
        if let Some(hook) = self.when_ready {
            hook(&addrs);
        }
        signals.block_on(shut_down(&lifecycle, signal));
        for thread in threads {
            match thread.join() {
                Ok(result) => result.map_err(io_error)?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    }
}

/// Once `signal` completes or a [`Shutdown`] begins it: drains for the
/// drain delay (when there is one), then stops accepting.
async fn shut_down(lifecycle: &Lifecycle, signal: ShutdownSignal) {
    tokio::select! {
        () = signal => lifecycle.begin_shutdown(),
        () = lifecycle.reached(Phase::Draining) => {}
    }
    if lifecycle.phase() == Phase::Draining {
        let delay = lifecycle.drain_delay();
        tracing::info!(
            ?delay,
            "draining: the health check says 503, connections are not kept"
        );
        tokio::time::sleep(delay).await;
    }
    lifecycle.enter(Phase::Stopping);
}

/// Stops a [`Server`] from anywhere, as SIGTERM (or the future given to
/// [`shutdown_on`](Server::shutdown_on)) does; made by
/// [`Server::shutdown_handle`]. Clones stop the same server.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<Lifecycle>);

impl Shutdown {
    /// Begins the shutdown. Without a [drain delay](Server::drain_delay) the
    /// server stops accepting at once (each accept loop looks before it
    /// accepts), and the requests in flight finish within the grace period;
    /// with one, it drains first. Calls after the first do nothing.
    pub fn begin(&self) {
        self.0.begin_shutdown();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners)
            .field("config", &self.config)
            .field("drain_delay", &self.lifecycle.drain_delay())
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// A server failure other than binding: a thread, a runtime, a socket.
fn io_error(e: impl Into<crate::BoxError>) -> Error {
    Error::new(Kind::Io).with(e)
}

/// Completes on SIGINT or SIGTERM (on other systems, Ctrl-C).
///
/// The handlers are installed when this is called, not when it is first
/// polled, so a signal that arrives before the server waits is not lost (nor
/// kills the process by its default action).
#[cfg(unix)]
fn os_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let recv = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => drop(s.recv().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = recv(int.take()) => {}
            () = recv(term.take()) => {}
        }
    }
}

#[cfg(not(unix))]
fn os_signal() -> impl Future<Output = ()> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
