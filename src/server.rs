//! The HTTP server: HTTP/1.1 (keep-alive, pipelining) and HTTP/2 over cleartext
//! on hyper and tokio, with graceful shutdown, timeouts and limits.
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
//! # What the server guarantees
//!
//! - **An app always answers.** A panic in an app gives that request a 500
//!   and the server goes on.
//! - **Slow clients cannot hold it.** A connection must deliver a complete
//!   request head within [`header_read_timeout`](Server::header_read_timeout)
//!   of its first byte, and a connection with no request in flight is closed after
//!   [`idle_timeout`](Server::idle_timeout). Both also bound the HTTP/2 preface.
//! - **Limits.** Request heads over [`max_header_size`](Server::max_header_size)
//!   get 431; bodies over [`max_body_size`](Server::max_body_size) get 413 (at
//!   once when `Content-Length` says so, or as soon as a chunked body passes the
//!   limit); at most [`max_connections`](Server::max_connections) are open, and
//!   more wait in the listen queue.
//! - **Malformed HTTP/1.1 is refused** with 400 and the connection closed:
//!   hyper refuses bad syntax, whitespace before a header's colon and invalid or
//!   conflicting `Content-Length`; the server adds the `Host` rules of RFC 9112
//!   §3.2 (exactly one `Host` in an HTTP/1.1 request).
//! - **Graceful shutdown.** On SIGINT or SIGTERM (or the future given to
//!   [`shutdown_on`](Server::shutdown_on)) it stops accepting, lets in-flight
//!   requests finish within [`grace_period`](Server::grace_period), then returns.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderValue};
use http::{StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::error::{Error, Kind};
use crate::{App, Body, Connection, Response, response};

type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

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
    listener: StdListener,
    config: Config,
    workers: usize,
    shutdown: Option<ShutdownSignal>,
    when_ready: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
}

#[derive(Debug, Clone)]
struct Config {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    grace_period: Duration,
    max_header_size: usize,
    max_body_size: Option<u64>,
    max_connections: usize,
}

impl Server {
    /// Binds a listening socket on `addr` (port 0 picks a free port).
    ///
    /// Fails with [`Error::is_bind`] when the address cannot be listened on (in
    /// use, not local, no permission).
    pub fn bind(addr: impl ToSocketAddrs) -> crate::Result<Self> {
        let bind_error = |e: io::Error| Error::new(Kind::Bind).with(e);
        let listener = StdListener::bind(addr).map_err(bind_error)?;
        Self::from_listener(listener).map_err(bind_error)
    }

    /// Serves on a listener bound elsewhere (for socket activation, or options
    /// this builder does not offer).
    pub fn from_listener(listener: StdListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        listener.local_addr()?;
        Ok(Self {
            listener,
            config: Config {
                header_read_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(60),
                grace_period: Duration::from_secs(30),
                max_header_size: 64 * 1024,
                max_body_size: Some(1 << 30),
                max_connections: 10_000,
            },
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            shutdown: None,
            when_ready: None,
        })
    }

    /// The address the server listens on, with the real port when bound to port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("checked when the server was made")
    }

    /// How long a client may take to send a whole request head, from its first
    /// byte. Default 30 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in flight. Default 60 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// How long in-flight requests may take to finish once shutdown begins.
    /// Default 30 s.
    pub fn grace_period(mut self, period: Duration) -> Self {
        self.config.grace_period = period;
        self
    }

    /// The largest request head (request line and headers) accepted, in bytes;
    /// larger ones get 431. At least 8 KiB; default 64 KiB.
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

    /// The most connections open at once; more wait in the listen queue.
    /// Default 10,000.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n.max(1);
        self
    }

    /// How many workers [`run`](Self::run) starts: each a thread with its own
    /// single-threaded runtime, all accepting on the same socket, as gunicorn's
    /// worker processes do. Default: one per core.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Shuts down when `signal` completes, instead of on SIGINT or SIGTERM.
    pub fn shutdown_on(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Calls `hook` with the listening address once the server is serving and
    /// its shutdown signals are installed (gunicorn's `when_ready`): the moment
    /// to tell the world, as `stackway serve` prints `listening on …`.
    pub fn when_ready(mut self, hook: impl FnOnce(SocketAddr) + Send + 'static) -> Self {
        self.when_ready = Some(Box::new(hook));
        self
    }

    /// Serves `app` on the current tokio runtime until shutdown; see
    /// [`run`](Self::run) for worker threads. The `workers` setting is not used.
    pub async fn serve(self, app: impl App) -> crate::Result<()> {
        let local_addr = self.local_addr();
        let signal = self.shutdown.unwrap_or_else(|| Box::pin(os_signal()));
        let (stop, stopped) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(self.config.max_connections));
        let worker = Worker::new(
            &self.listener,
            self.config,
            Arc::new(app),
            stopped,
            connections,
        )?;
        // The worker holds its own handle: once it stops accepting, the socket closes.
        drop(self.listener);
        let accepting = tokio::spawn(worker.accept_loop());
        if let Some(hook) = self.when_ready {
            hook(local_addr);
        }
        signal.await;
        let _ = stop.send(true);
        accepting.await.map_err(io_error)
    }

    /// Serves `app` on [`workers`](Self::workers) threads, blocking until
    /// shutdown has finished.
    pub fn run(self, app: impl App) -> crate::Result<()> {
        let local_addr = self.local_addr();
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
        let (stop, stopped) = watch::channel(false);
        let app = Arc::new(app);
        let mut threads = Vec::with_capacity(self.workers);
        let connections = Arc::new(Semaphore::new(self.config.max_connections));
        for n in 0..self.workers {
            let (config, app, stopped) = (self.config.clone(), app.clone(), stopped.clone());
            let worker = Worker::new(&self.listener, config, app, stopped, connections.clone())?;
            let thread = std::thread::Builder::new()
                .name(format!("stackway-worker-{n}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(worker.accept_loop());
                    io::Result::Ok(())
                })
                .map_err(io_error)?;
            threads.push(thread);
        }
        // The workers hold their own handles: once they stop accepting, the socket closes.
        drop(self.listener);
        if let Some(hook) = self.when_ready {
            hook(local_addr);
        }
        signals.block_on(signal);
        let _ = stop.send(true);
        for thread in threads {
            match thread.join() {
                Ok(result) => result.map_err(io_error)?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .field("config", &self.config)
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

/// One accept loop and the connections it started.
struct Worker<A> {
    listener: StdListener,
    local_addr: SocketAddr,
    config: Config,
    app: Arc<A>,
    stopped: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
}

impl<A: App> Worker<A> {
    fn new(
        listener: &StdListener,
        config: Config,
        app: Arc<A>,
        stopped: watch::Receiver<bool>,
        connections: Arc<Semaphore>,
    ) -> crate::Result<Self> {
        let listener = listener.try_clone().map_err(io_error)?;
        let local_addr = listener.local_addr().map_err(io_error)?;
        Ok(Self {
            connections,
            listener,
            local_addr,
            config,
            app,
            stopped,
        })
    }

    async fn accept_loop(self) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(e) => return eprintln!("stackway: cannot use the listening socket: {e}"),
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .max_buf_size(self.config.max_header_size);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.config.max_header_size).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            builder,
            config: self.config,
            local_addr: self.local_addr,
        });
        let tracker = TaskTracker::new();
        let (abort, aborted) = watch::channel(false);
        let mut stopped = self.stopped;
        loop {
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => permit.expect("never closed"),
                () = stopped.wait_for(|stop| *stop).map(drop) => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: wait a moment rather than spin.
                        eprintln!("stackway: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stopped.wait_for(|stop| *stop).map(drop) => break,
            };
            let _ = stream.set_nodelay(true);
            let signals = (stopped.clone(), aborted.clone());
            let conn = serve_connection(stream, peer, shared.clone(), self.app.clone(), signals);
            tracker.spawn(conn.map(move |()| drop(permit)));
        }
        // Shutting down: stop accepting, give in-flight requests the grace period,
        // then drop whatever is still open.
        drop(listener);
        tracker.close();
        if tokio::time::timeout(shared.config.grace_period, tracker.wait())
            .await
            .is_err()
        {
            let _ = abort.send(true);
            tracker.wait().await;
        }
    }
}

/// What every connection of a worker shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    config: Config,
    local_addr: SocketAddr,
}

async fn serve_connection<A: App>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    app: Arc<A>,
    (mut stopped, mut aborted): (watch::Receiver<bool>, watch::Receiver<bool>),
) {
    let activity = Arc::new(Activity::new());
    let info = Connection {
        remote_addr: Some(peer),
        local_addr: Some(shared.local_addr),
        scheme: http::uri::Scheme::HTTP,
    };
    let io = TokioIo::new(Tracked {
        io: stream,
        activity: activity.clone(),
        linger: None,
    });
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        service_fn(move |req| {
            handle(
                app.clone(),
                shared.clone(),
                activity.clone(),
                info.clone(),
                req,
            )
        })
    };
    let mut conn = pin!(shared.builder.serve_connection(io, service));
    let mut watchdog = pin!(activity.expired(&shared.config));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            // An idle or stalled connection is dropped: it has no response to finish.
            () = watchdog.as_mut() => return,
            () = stopped.wait_for(|stop| *stop).map(drop), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            () = aborted.wait_for(|abort| *abort).map(drop) => return,
        }
    }
}

async fn handle<A: App>(
    app: Arc<A>,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    info: Connection,
    req: http::Request<Incoming>,
) -> Result<http::Response<ServerBody>, Infallible> {
    let in_flight = InFlight::begin(activity.clone());
    let respond = |res: Response| {
        Ok(res.map(|body| ServerBody {
            body,
            _in_flight: in_flight,
        }))
    };
    let refuse = |status, body: &Incoming| {
        if !body.is_end_stream() {
            activity.unread_body.store(true, Ordering::Relaxed);
        }
        closing(status)
    };

    if req.version() == Version::HTTP_11 && req.headers().get_all(HOST).iter().count() != 1 {
        // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request that
        // lacks a Host header or has more than one.
        return respond(refuse(StatusCode::BAD_REQUEST, req.body()));
    }
    let limit = shared.config.max_body_size;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared
        .zip(limit)
        .is_some_and(|(declared, limit)| declared > limit)
    {
        return respond(refuse(StatusCode::PAYLOAD_TOO_LARGE, req.body()));
    }
    let tripped = Arc::new(AtomicBool::new(false));
    let mut req = req.map(|body| {
        Body::new(RequestBody {
            body,
            remaining: limit.unwrap_or(u64::MAX),
            tripped: tripped.clone(),
            activity: activity.clone(),
        })
    });
    req.extensions_mut().insert(info);

    let res = match AssertUnwindSafe(app.call(req)).catch_unwind().await {
        Ok(res) => res,
        // The panic hook has printed the message; the client gets a 500.
        Err(_panic) => closing(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if tripped.load(Ordering::Relaxed) {
        return respond(closing(StatusCode::PAYLOAD_TOO_LARGE));
    }
    respond(res)
}

/// A plain-text error response that also closes the connection.
fn closing(status: StatusCode) -> Response {
    let mut res = response::status(status);
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

/// When a connection last did something, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: AtomicU64,
    /// The first byte read after `idle_since`, or `NEVER`.
    first_byte: AtomicU64,
    /// A request body was left unread: the client may still be sending it.
    unread_body: AtomicBool,
}

const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NEVER),
            unread_body: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// Whether the client may still be sending when the server closes: a body
    /// left unread, a request under way, or bytes of a next one already here.
    fn client_may_be_sending(&self) -> bool {
        self.unread_body.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Relaxed) > 0
            || self.first_byte.load(Ordering::Relaxed) != NEVER
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.first_byte.load(Ordering::Relaxed) == NEVER
        {
            self.first_byte.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Completes when the connection has had no request in flight for too long:
    /// `idle_timeout` with nothing read, or `header_read_timeout` after the first
    /// byte of a request head that has not been completed.
    async fn expired(&self, config: &Config) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NEVER / 2);
        let (idle, header) = (ms(config.idle_timeout), ms(config.header_read_timeout));
        loop {
            let deadline = if self.in_flight.load(Ordering::Relaxed) > 0 {
                self.now() + idle.min(header)
            } else {
                match self.first_byte.load(Ordering::Relaxed) {
                    NEVER => self.idle_since.load(Ordering::Relaxed).saturating_add(idle),
                    first => first.saturating_add(header),
                }
            };
            let now = self.now();
            if deadline <= now && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now).max(1))).await;
        }
    }
}

/// Counts a request as in flight from when it arrives until its response body
/// has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Relaxed);
            activity.first_byte.store(NEVER, Ordering::Relaxed);
        }
    }
}

/// How long a closing connection keeps reading (and discarding) what the client
/// still sends, so that the kernel does not answer it with a reset that destroys
/// the last response before the client reads it (nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(5);

/// The socket, noting when bytes arrive, and closing it by lingering.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
    /// Set once the write side is shut: the end of the lingering read.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Sends FIN, then, if the client may still be sending, reads until it
    /// closes too (or `LINGER` passes).
    ///
    /// ```text
    /// client: GET /a, GET /b, POST /big (body still arriving) ...
    /// server: 200 /a, then closes (shutdown, 413, Connection: close)
    /// close() with unread bytes → RST → the client's kernel drops 200 /a unread
    /// ```
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut discard = [0u8; 4096];
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            // Bytes already waiting (pipelined requests, the rest of a body) say
            // the client is still sending, whatever the bookkeeping says.
            let mut buf = ReadBuf::new(&mut discard);
            let waiting = matches!(Pin::new(&mut this.io).poll_read(cx, &mut buf), Poll::Ready(Ok(())) if !buf.filled().is_empty());
            if !waiting && !this.activity.client_may_be_sending() {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        loop {
            if this
                .linger
                .as_mut()
                .is_some_and(|end| end.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut discard);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A request body that fails once it passes the size limit, and says so; and
/// notes, when dropped unread, that the connection must linger when it closes.
struct RequestBody {
    body: Incoming,
    remaining: u64,
    tripped: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if !self.body.is_end_stream() {
            self.activity.unread_body.store(true, Ordering::Relaxed);
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(Error::new(Kind::Body).with(e))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        match this.remaining.checked_sub(len) {
            Some(remaining) => {
                this.remaining = remaining;
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                this.tripped.store(true, Ordering::Relaxed);
                let e = Error::new(Kind::TooLarge)
                    .with("the request body is larger than the server's limit");
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until sent.
struct ServerBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for ServerBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
