//! Harakiri (uWSGI's name): a request that has run in Python for longer than
//! its limit is answered 504 if its head has not gone out, else its response
//! is aborted; the stuck thread's Python stack is logged, and the mount's
//! hook is called (the command line asks its supervisor for a new process:
//! a thread stuck in Python cannot be stopped, only its process).
//!
//! A request on a Python thread of the pool is watched by its connection's
//! task. One on a server worker ([`inline`](crate::inline)) is watched by a
//! thread of its own, the watchdog, since Python holds the worker; there the
//! stuck thread is also interrupted ([`Interrupted`] raised in it once its
//! stack is logged), so that the worker it holds answers the 504 and serves
//! again as soon as Python gets back to its own code.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use http::StatusCode;
use pyo3::prelude::*;
use tokio::time::Instant;

use crate::objects::Exchange;

/// How long the hook waits for the stuck thread's stack to be logged: a
/// thread that holds the GIL in C never lets it be read.
const LOG_WAIT: Duration = Duration::from_secs(1);
/// How often the watchdog looks at the requests on server workers.
const TICK: Duration = Duration::from_millis(100);

pyo3::create_exception!(
    stackway,
    Interrupted,
    pyo3::exceptions::PyBaseException,
    "Raised by harakiri in a request that ran past its limit on a server worker."
);

/// A mount's limit and what to do when a request passes it.
#[derive(Clone)]
pub(crate) struct Harakiri {
    pub(crate) limit: Duration,
    pub(crate) then: Arc<dyn Fn() + Send + Sync>,
    pub(crate) app: Arc<str>,
    pub(crate) kills: Arc<AtomicU64>,
}

impl Harakiri {
    /// At `deadline`, cuts off the request of `exchange` if the app is not
    /// done with it: its body (its head gone out) ends in an error, so the
    /// response is aborted, whether or not its client reads.
    pub(crate) async fn watch(self, exchange: Weak<Exchange>, deadline: Instant, ident: u64) {
        tokio::time::sleep_until(deadline).await;
        let Some(exchange) = exchange.upgrade() else {
            return;
        };
        if !exchange.is_finished() && exchange.cut() {
            exchange.abort("harakiri: the app ran past its limit".to_owned());
            self.stuck(ident, false);
        }
    }

    /// Watches a request that runs on this server worker, the Python thread
    /// `ident`, until the guard is dropped: past the limit, the watchdog
    /// answers 504 (or aborts the body, its head gone out) and interrupts
    /// the thread.
    pub(crate) fn watch_here(&self, exchange: &Arc<Exchange>, ident: u64) -> Watching {
        let watchdog = WATCHDOG.get_or_init(Watchdog::start);
        let id = watchdog.next.fetch_add(1, Ordering::Relaxed);
        watchdog.watched().push(Watched {
            id,
            deadline: std::time::Instant::now() + self.limit,
            exchange: Arc::downgrade(exchange),
            ident,
            harakiri: self.clone(),
        });
        Watching { id }
    }

    /// A request on the Python thread `ident` passed the limit: its stack is
    /// logged (and the thread interrupted, if asked), then the hook is called
    /// (see [`log_stack_then`]).
    pub(crate) fn stuck(&self, ident: u64, interrupt: bool) {
        self.kills.fetch_add(1, Ordering::Relaxed);
        let what = format!(
            "a request of {} ran in Python for more than {:?}",
            self.app, self.limit
        );
        let then = self.then.clone();
        log_stack_then(ident, what, interrupt, move || then());
    }
}

static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();

/// The requests running on server workers, looked at every [`TICK`] by a
/// thread of its own; nothing wakes it per request.
struct Watchdog {
    watched: Mutex<Vec<Watched>>,
    next: AtomicU64,
}

struct Watched {
    id: u64,
    deadline: std::time::Instant,
    exchange: Weak<Exchange>,
    ident: u64,
    harakiri: Harakiri,
}

/// A request under the watchdog's eye, until dropped.
pub(crate) struct Watching {
    id: u64,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(watchdog) = WATCHDOG.get() {
            watchdog.watched().retain(|w| w.id != self.id);
        }
    }
}

impl Watched {
    /// Past the limit: the request is cut off (504, or its body aborted),
    /// and its thread interrupted.
    fn expire(self) {
        let Some(exchange) = self.exchange.upgrade() else {
            return;
        };
        if exchange.is_finished() || !exchange.cut() {
            return;
        }
        if !exchange.send_error_head(StatusCode::GATEWAY_TIMEOUT) {
            exchange.abort("harakiri: the app ran past its limit".to_owned());
        }
        self.harakiri.stuck(self.ident, true);
    }
}

impl Watchdog {
    fn start() -> Self {
        let spawned = std::thread::Builder::new()
            .name("stackway-watchdog".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TICK);
                    let Some(watchdog) = WATCHDOG.get() else {
                        continue;
                    };
                    let now = std::time::Instant::now();
                    let expired: Vec<Watched> = watchdog
                        .watched()
                        .extract_if(.., |w| w.deadline <= now)
                        .collect();
                    expired.into_iter().for_each(Watched::expire);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("harakiri: cannot start the watchdog thread: {e}");
        }
        Self {
            watched: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Logs `what` with the Python stack of thread `ident`, from a thread of its
/// own, which waits for the GIL (a thread computing in Python lets it go
/// every switch interval; one blocked in C holding it never does), and
/// raises [`Interrupted`] in that thread if `interrupt`; then calls `then`,
/// once the stack is logged or after [`LOG_WAIT`]: a process replaced at
/// once would drain and exit before its stack is read.
pub(crate) fn log_stack_then(
    ident: u64,
    what: String,
    interrupt: bool,
    then: impl FnOnce() + Send + 'static,
) {
    let (logged, log_done) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stackway-harakiri".into())
        .spawn(move || {
            let stack = Python::attach(|py| {
                let stack = stack(py, ident);
                if interrupt {
                    raise_in(py, ident);
                }
                stack
            })
            .unwrap_or_else(|e| format!("(the stack cannot be read: {e})"));
            tracing::error!(
                "harakiri: {what}; the stuck thread's stack, most recent call last:\n{stack}"
            );
            let _ = logged.send(());
        });
    if let Err(e) = &spawned {
        tracing::error!("harakiri: cannot start a thread to log a stuck stack: {e}");
    }
    let waited = std::thread::Builder::new()
        .name("stackway-harakiri".into())
        .spawn(move || {
            if spawned.is_ok() {
                let _ = log_done.recv_timeout(LOG_WAIT);
            }
            then();
        });
    if let Err(e) = waited {
        tracing::error!("harakiri: cannot start a thread to replace the process: {e}");
    }
}

impl fmt::Debug for Harakiri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harakiri")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Raises [`Interrupted`] in the Python thread `ident` when it next runs
/// Python code, through `ctypes` (the C API's `PyThreadState_SetAsyncExc`,
/// as Python's own recipes call it: this workspace has no unsafe Rust).
fn raise_in(py: Python<'_>, ident: u64) {
    let raised = (|| -> PyResult<i32> {
        let ctypes = py.import("ctypes")?;
        let set = ctypes
            .getattr("pythonapi")?
            .getattr("PyThreadState_SetAsyncExc")?;
        let ident = ctypes.getattr("c_ulong")?.call1((ident,))?;
        let exception = ctypes
            .getattr("py_object")?
            .call1((py.get_type::<Interrupted>(),))?;
        set.call1((ident, exception))?.extract()
    })();
    match raised {
        Ok(1) => {}
        Ok(_) => tracing::warn!("harakiri: the stuck thread is no longer in Python to interrupt"),
        Err(e) => tracing::error!("harakiri: cannot interrupt the stuck thread: {e}"),
    }
}

/// The stack of the Python thread `ident`, as `traceback.format_stack`
/// prints it.
pub(crate) fn stack(py: Python<'_>, ident: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let Some(frame) = frames
        .call_method1("get", (ident,))
        .ok()
        .filter(|f| !f.is_none())
    else {
        return Ok("(the thread is no longer in Python)".to_owned());
    };
    let lines: Vec<String> = py
        .import("traceback")?
        .call_method1("format_stack", (frame,))?
        .extract()?;
    Ok(lines.concat().trim_end().to_owned())
}

/// The ident of the Python thread this is (`threading.get_ident()`).
pub(crate) fn ident(py: Python<'_>) -> u64 {
    py.import("threading")
        .and_then(|t| t.call_method0("get_ident"))
        .and_then(|i| i.extract())
        .unwrap_or(0)
}
