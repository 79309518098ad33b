//! A request run on the server worker that read it ([`Wsgi::threads(0)`]),
//! as uWSGI's processes without `--threads` and gunicorn's sync workers run
//! theirs: no hand-off to a Python thread and back, so no wake-up across
//! threads; the worker serves nothing else while Python runs.
//!
//! [`Wsgi::threads(0)`]: crate::Wsgi::threads

use std::cell::Cell;
use std::io::{self, Read};
use std::sync::atomic::Ordering;

use pyo3::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Counters;
use crate::harakiri::{self, Harakiri};
use crate::run::{self, Job};

thread_local! {
    /// This thread's Python ident, once it has run a request.
    static IDENT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `app` for `job` on this thread, holding the GIL while in Python,
/// watched by harakiri's watchdog if the mount has a limit.
pub(crate) fn run(app: &Py<PyAny>, job: Job, harakiri: Option<&Harakiri>, counters: &Counters) {
    Python::attach(|py| {
        let ident = IDENT.get().unwrap_or_else(|| {
            let ident = harakiri::ident(py);
            IDENT.set(Some(ident));
            ident
        });
        counters.jobs.fetch_add(1, Ordering::Relaxed);
        counters.busy.fetch_add(1, Ordering::Relaxed);
        let watched = harakiri.map(|h| h.watch_here(&job.exchange, ident));
        run::run(py, app, job);
        drop(watched);
        counters.busy.fetch_sub(1, Ordering::Relaxed);
    });
}

/// The request body, read by blocking this thread: the body is whole (in
/// memory or in a file the blocking pool reads), so nothing it waits for
/// needs this thread's runtime.
pub(crate) struct Blocking<R>(pub(crate) R);

impl<R: AsyncRead + Unpin> Read for Blocking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        futures_executor::block_on(self.0.read(buf))
    }
}
