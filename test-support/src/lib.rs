//! What the workspace's integration tests share (every crate's `tests/`
//! uses it as `support`): a server on a free port, a raw HTTP/1.1 client,
//! self-signed certificates, and the tools from outside Rust some tests need.
// Test scaffolding: its items explain themselves where used.
#![allow(missing_docs, missing_debug_implementations)]

pub mod external;
pub mod http;
pub mod tls;

use std::sync::{Arc, Mutex};

use stackway::{App, Request, Response};

/// Runs `f` on a fresh single-threaded runtime.
pub fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The process's peak resident memory (VmHWM) in KiB: the memory tests run
/// each in a binary of its own, so it speaks of that test alone.
pub fn peak_rss_kib() -> u64 {
    peak_rss_kib_of("self")
}

/// The peak resident memory (VmHWM) in KiB of process `pid` (or `self`).
pub fn peak_rss_kib_of(pid: impl std::fmt::Display) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A shared log of what the middleware in a stack saw, in order.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    pub fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// A middleware that records `NAME in` before the inner app and `NAME out`
/// after it, and appends NAME to the `x-trace` response header.
pub struct Traced<A> {
    pub name: &'static str,
    pub trace: Trace,
    pub inner: A,
}

impl<A: App> App for Traced<A> {
    async fn call(&self, req: Request) -> Response {
        self.trace.push(format!("{} in", self.name));
        let mut res = self.inner.call(req).await;
        self.trace.push(format!("{} out", self.name));
        res.headers_mut()
            .append("x-trace", self.name.parse().unwrap());
        res
    }
}

/// A layer for `Builder::wrap` that makes a `Traced`.
pub fn traced<A>(name: &'static str, trace: &Trace) -> impl FnOnce(A) -> Traced<A> {
    let trace = trace.clone();
    move |inner| Traced { name, trace, inner }
}

/// A library server running `app` on a thread of its own, on a free port.
pub struct Running {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<stackway::Result<()>>>,
}

impl Running {
    pub fn start(server: stackway::Server, app: impl App) -> Self {
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = server.shutdown_on(async move {
            let _ = stopped.await;
        });
        let thread = std::thread::spawn(move || server.run(app));
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Begins a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns what `Server::run` returned.
    pub fn stop(mut self) -> stackway::Result<()> {
        self.begin_shutdown();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the server thread panicked")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// A server on a free loopback port with one worker.
pub fn server() -> stackway::Server {
    stackway::Server::bind("127.0.0.1:0").unwrap().workers(1)
}
