//! Harakiri (uWSGI's name): a request that has run in Python for longer than
//! its limit is answered 504 if its head has not gone out, else its response
//! is aborted; the stuck thread's Python stack is logged, and the mount's
//! hook is called (the command line asks its supervisor for a new process:
//! a thread stuck in Python cannot be stopped, only its process).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::time::Instant;

use crate::objects::Exchange;

/// How long the hook waits for the stuck thread's stack to be logged: a
/// thread that holds the GIL in C never lets it be read.
const LOG_WAIT: Duration = Duration::from_secs(1);

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
            self.stuck(ident);
        }
    }

    /// A request on the Python thread `ident` passed the limit: its stack is
    /// logged, then the hook is called (see [`log_stack_then`]).
    pub(crate) fn stuck(&self, ident: u64) {
        self.kills.fetch_add(1, Ordering::Relaxed);
        let what = format!(
            "a request of {} ran in Python for more than {:?}",
            self.app, self.limit
        );
        let then = self.then.clone();
        log_stack_then(ident, what, move || then());
    }
}

/// Logs `what` with the Python stack of thread `ident`, from a thread of its
/// own, which waits for the GIL (a thread computing in Python lets it go
/// every switch interval; one blocked in C holding it never does); then
/// calls `then`, once the stack is logged or after [`LOG_WAIT`]: a process
/// replaced at once would drain and exit before its stack is read.
pub(crate) fn log_stack_then(ident: u64, what: String, then: impl FnOnce() + Send + 'static) {
    let (logged, log_done) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stackway-harakiri".into())
        .spawn(move || {
            let stack = Python::attach(|py| stack(py, ident))
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

/// Harakiri for requests run on the server's workers: no task of theirs
/// runs while Python holds the thread, so a thread of its own watches their
/// deadlines. It only marks a request cut off and calls [`Harakiri::stuck`];
/// the worker answers 504 if Python ever gives it back.
pub(crate) struct Watchdog {
    shared: Arc<Watched>,
}

struct Watched {
    state: Mutex<Deadlines>,
    /// Signalled when the watchdog closes.
    closed: Condvar,
    harakiri: Harakiri,
}

struct Deadlines {
    /// By the order they came in, which is the order of their deadlines:
    /// every request has the same limit.
    requests: BTreeMap<u64, (std::time::Instant, u64, Weak<Exchange>)>,
    next: u64,
    open: bool,
}

/// A request watched; it is not any more once this is dropped.
pub(crate) struct Watch<'a> {
    watchdog: &'a Watchdog,
    id: u64,
}

impl Watchdog {
    pub(crate) fn start(harakiri: Harakiri) -> Self {
        let shared = Arc::new(Watched {
            state: Mutex::new(Deadlines {
                requests: BTreeMap::new(),
                next: 0,
                open: true,
            }),
            closed: Condvar::new(),
            harakiri,
        });
        let watching = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("stackway-harakiri".into())
            .spawn(move || watching.watch());
        if let Err(e) = spawned {
            tracing::error!("harakiri: cannot start the thread that watches requests: {e}");
        }
        Self { shared }
    }

    /// Watches the request of `exchange`, run in Python by thread `ident`
    /// from now on.
    pub(crate) fn watch(&self, exchange: &Arc<Exchange>, ident: u64) -> Watch<'_> {
        let deadline = std::time::Instant::now() + self.shared.harakiri.limit;
        let mut state = self.shared.lock();
        let id = state.next;
        state.next += 1;
        // Nothing to wake: the thread looks again within a limit of now.
        state
            .requests
            .insert(id, (deadline, ident, Arc::downgrade(exchange)));
        Watch { watchdog: self, id }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.watchdog.shared.lock().requests.remove(&self.id);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().open = false;
        self.shared.closed.notify_all();
    }
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, Deadlines> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Until the watchdog closes: sleeps until the first deadline (or for a
    /// limit, when none is watched), and cuts off what passed it.
    fn watch(&self) {
        let mut state = self.lock();
        while state.open {
            let now = std::time::Instant::now();
            let first = state
                .requests
                .first_key_value()
                .map(|(&id, &(at, ..))| (id, at));
            let wake = match first {
                Some((id, at)) if at <= now => {
                    let Some((_, ident, exchange)) = state.requests.remove(&id) else {
                        continue;
                    };
                    drop(state);
                    if exchange
                        .upgrade()
                        .is_some_and(|e| !e.is_finished() && e.cut())
                    {
                        self.harakiri.stuck(ident);
                    }
                    state = self.lock();
                    continue;
                }
                Some((_, at)) => at,
                None => now + self.harakiri.limit,
            };
            state = (self.closed.wait_timeout(state, wake - now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl fmt::Debug for Harakiri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harakiri")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
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
