//! One request on a Python thread: the app is called, its iterable streamed
//! chunk by chunk as Python yields it, and its `close()` called whatever
//! happens: an exception, the client going away, or the end.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::body::BodyReader;
use crate::environ::Cgi;
use crate::objects::{Exchange, FileWrapper, Input, SendError, StartResponse};

/// What a Python thread needs to answer one request.
pub(crate) struct Job {
    pub(crate) cgi: Cgi,
    pub(crate) input: BodyReader,
    pub(crate) exchange: Arc<Exchange>,
    /// When it was queued, for the queue wait.
    pub(crate) queued_at: std::time::Instant,
    /// Told the Python thread's ident when a thread takes it, for harakiri.
    pub(crate) started: Option<tokio::sync::oneshot::Sender<u64>>,
}

/// How a request ended on the Python side, when not well.
enum Failure {
    /// The app raised; the traceback is printed.
    Python(PyErr),
    /// The app broke a rule of PEP 3333.
    Rule(&'static str),
    /// The client went away: nothing to answer.
    Gone,
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Self::Python(e)
    }
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Gone => Self::Gone,
            SendError::NotStarted => {
                Self::Rule("the app yielded a body before calling start_response")
            }
        }
    }
}

/// Runs `app` for `job` on a thread attached to the interpreter.
pub(crate) fn run(py: Python<'_>, app: &Py<PyAny>, job: Job) {
    let Job {
        cgi,
        input,
        exchange,
        ..
    } = job;
    {
        let outcome = (|| -> Result<(), Failure> {
            let environ = cgi.into_dict(py, Bound::new(py, Input::new(input))?.into_any())?;
            let start_response = Bound::new(
                py,
                StartResponse {
                    exchange: exchange.clone(),
                },
            )?;
            let iterable = app.bind(py).call1((environ, start_response))?;
            let streamed = stream(py, &iterable, &exchange);
            // PEP 3333: close() is called however the iteration ended
            // (looked up once: the bound method is what is called).
            let closed = match iterable.getattr_opt(intern!(py, "close")) {
                Ok(Some(close)) => close.call0().map(drop),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            streamed?;
            closed?;
            exchange.send_head()?;
            Ok(())
        })();
        match outcome {
            Ok(()) | Err(Failure::Gone) => {}
            Err(Failure::Python(e)) => {
                // Formatted, not PyErr_Print: that would exit the process on SystemExit.
                tracing::error!("the app raised an exception:\n{}", crate::traceback(py, &e));
                fail(&exchange, "the app raised an exception");
            }
            Err(Failure::Rule(rule)) => {
                tracing::error!("{rule}");
                fail(&exchange, rule);
            }
        }
        exchange.finish();
    }
}

/// A 500 if nothing was sent yet, else an aborted body.
fn fail(exchange: &Exchange, why: &str) {
    if !exchange.send_error_head(StatusCode::INTERNAL_SERVER_ERROR) {
        exchange.abort(why.to_owned());
    }
}

/// Sends what the iterable yields, as it yields it.
fn stream(py: Python<'_>, iterable: &Bound<'_, PyAny>, exchange: &Exchange) -> Result<(), Failure> {
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        if let Some(result) = send_file(py, &wrapper.borrow(), exchange) {
            return result;
        }
    }
    for item in iterable.try_iter()? {
        let item = item?;
        let chunk = item
            .cast::<PyBytes>()
            .map_err(|_| Failure::Rule("the app yielded something other than bytes"))?;
        exchange.send(py, Bytes::copy_from_slice(chunk.as_bytes()))?;
    }
    Ok(())
}

/// A `wsgi.file_wrapper` around a real file, sent from its descriptor in
/// 256 KiB reads with the GIL released, never through Python objects; `None`
/// when it has no descriptor (a `BytesIO`), to be iterated instead.
fn send_file(
    py: Python<'_>,
    wrapper: &FileWrapper,
    exchange: &Exchange,
) -> Option<Result<(), Failure>> {
    let filelike = wrapper.filelike.bind(py);
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    let position: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
    // The same file, opened anew through its descriptor: an offset of our own,
    // and the app's file object left as it was.
    let mut file = std::fs::File::open(format!("/proc/self/fd/{fd}")).ok()?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return None;
    }
    Some((|| {
        file.seek(SeekFrom::Start(position))
            .map_err(|_| Failure::Rule("the wrapped file cannot seek"))?;
        loop {
            let mut buf = vec![0; 256 * 1024];
            let n = py
                .detach(|| file.read(&mut buf))
                .map_err(|_| Failure::Rule("reading the wrapped file failed"))?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            exchange.send(py, Bytes::from(buf))?;
        }
    })())
}
