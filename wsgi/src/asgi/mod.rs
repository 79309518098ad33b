//! ASGI 3 applications as stackway apps: see [`Asgi`].

mod bridge;
mod conn;
mod scope;
mod websocket;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use pyo3::prelude::*;
use stackway::{App, IntoResponse, Request, Response};

use crate::LoadError;
use bridge::Phase;
use scope::Scope;

/// How long the app may take to answer lifespan startup, and shutdown.
const STARTUP: Duration = Duration::from_secs(60);
const SHUTDOWN: Duration = Duration::from_secs(30);

/// An ASGI 3 application (FastAPI, Starlette, Django's async views) as a
/// stackway app, on the same embedded CPython as the WSGI apps.
///
/// Every ASGI app of a process runs on one asyncio event loop (uvloop when it
/// is installed), on a thread of its own; many requests are in flight on it
/// at once, each a task. The server's workers never take the GIL: they queue
/// events for the loop and wake it with a byte on a socket it watches. The
/// request body reaches the app a chunk at a time, as it asks
/// (`http.request` with `more_body`); the response goes out as the app sends
/// it, and `send` waits while more than 64 KiB are queued for a slow client;
/// `http.disconnect` comes once the response is done or the client gone.
/// The scope offers trailers (`http.response.trailers`) and files sent by
/// their path (`http.response.pathsend`, served as the core's file body). An
/// exception answers 500 (or aborts the response once its head is out), with
/// the traceback in the log; nothing an app does stops the server.
/// WebSockets come over HTTP/1.1's Upgrade and HTTP/2's extended CONNECT.
///
/// Clones share the app and its lifespan.
#[doc(alias = "asgi")]
#[derive(Clone)]
pub struct Asgi {
    app: Arc<Py<PyAny>>,
    name: Arc<str>,
    /// The lifespan, once started.
    life: Arc<OnceLock<u64>>,
}

/// Why an ASGI app's lifespan startup failed: the app's own message.
#[derive(Debug, Clone)]
pub struct StartupError {
    app: Arc<str>,
    why: String,
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the ASGI app {:?} failed to start: {}",
            self.app, self.why
        )
    }
}

impl std::error::Error for StartupError {}

impl Asgi {
    /// Imports `module:app` (uvicorn's spec; `module` alone means its `app`;
    /// the app may be a dotted path), with the working directory on
    /// `sys.path` as uvicorn has it.
    pub fn import(spec: &str) -> Result<Self, LoadError> {
        let app = crate::import(spec, "app", "main:app")?;
        Ok(Self::named(app, spec.to_owned()))
    }

    /// Runs Python `source` as a module named `module` and takes its `app`:
    /// for apps kept as text, and for tests.
    pub fn from_source(module: &str, source: &str, app: &str) -> Result<Self, LoadError> {
        let callable = crate::from_source(module, source, app)?;
        Ok(Self::named(callable, format!("{module}:{app}")))
    }

    /// Wraps an ASGI app that is already at hand.
    pub fn new(app: Py<PyAny>) -> Self {
        Self::named(app, "app".to_owned())
    }

    fn named(app: Py<PyAny>, name: String) -> Self {
        Self {
            app: Arc::new(app),
            name: name.into(),
            life: Arc::default(),
        }
    }

    /// Runs the app's lifespan startup (`lifespan.startup`) and waits for
    /// it, at most a minute: call it before serving, as uvicorn does. The
    /// `state` the app fills in is copied into every request's scope. An app
    /// without lifespan support (it raises, or returns, without answering)
    /// serves all the same; one that answers `lifespan.startup.failed` is an
    /// error with its message. Blocks the calling thread.
    pub fn startup(&self) -> Result<(), StartupError> {
        let error = |why: String| StartupError {
            app: self.name.clone(),
            why,
        };
        let shared = bridge::shared().map_err(|e| error(e.to_string()))?;
        let id = shared.id();
        match shared.life(id, Some(self.app.clone()), STARTUP) {
            Phase::Complete => {
                let _ = self.life.set(id);
                Ok(())
            }
            Phase::Unsupported(why) => {
                // As uvicorn says it, the traceback only for those who ask.
                tracing::info!(app = %self.name, "the ASGI lifespan protocol appears unsupported");
                if !why.is_empty() {
                    tracing::debug!(app = %self.name, "lifespan.startup raised:\n{why}");
                }
                let _ = self.life.set(id);
                Ok(())
            }
            Phase::Failed(why) => Err(error(why)),
        }
    }

    /// Watches the process's asyncio loop (uWSGI's `--harakiri`, for a
    /// coroutine that computes without an `await`, or calls something that
    /// blocks): a loop that takes no event for `limit` cannot be freed, only
    /// its process. The loop thread's Python stack is logged, every request
    /// in the apps' hands gets 500 (or its response aborted, its head out),
    /// later ones 503, and `then` is called, once: `stackway serve` asks its
    /// supervisor there for a new process. The loop is shared by every ASGI
    /// app of the process, and the first limit set is the one.
    pub fn harakiri(self, limit: Duration, then: impl Fn() + Send + Sync + 'static) -> Self {
        match bridge::shared() {
            Ok(shared) => shared.watch(limit, Arc::new(then)),
            Err(e) => tracing::error!("cannot start the asyncio loop: {e}"),
        }
        self
    }

    /// Runs the app's lifespan shutdown (`lifespan.shutdown`), if its
    /// startup ran, and waits for it, at most 30 seconds: call it once the
    /// server has drained. A failure is logged: `lifespan.shutdown.failed`,
    /// or the app raising on `lifespan.shutdown`.
    pub fn shutdown(&self) {
        let (Some(&id), Ok(shared)) = (self.life.get(), bridge::shared()) else {
            return;
        };
        match shared.life(id, None, SHUTDOWN) {
            Phase::Complete => {}
            // A lifespan that ended at startup has nothing to say; one that
            // raised on `lifespan.shutdown` failed, traceback and all.
            Phase::Unsupported(why) | Phase::Failed(why) if !why.is_empty() => {
                tracing::error!(app = %self.name, "the ASGI app failed to shut down: {why}");
            }
            Phase::Unsupported(_) | Phase::Failed(_) => {}
        }
    }
}

impl App for Asgi {
    async fn call(&self, mut req: Request) -> Response {
        let shared = match bridge::shared() {
            Ok(shared) => shared,
            Err(e) => {
                tracing::error!(app = %self.name, "cannot start the asyncio loop: {e}");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        if shared.is_stuck() {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let websocket = websocket::is_websocket(&req);
        let scope = Scope::new(&req, websocket);
        let upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let key = req.headers().get(http::header::SEC_WEBSOCKET_KEY).cloned();
        let life = self.life.get().copied();
        let started = shared.start(self.app.clone(), life, scope, req.into_body(), websocket);
        let Ok(head) = started.head.await else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(upgrade), Some((want, out, room))) =
            (head.status, upgrade, started.socket)
        {
            let res = websocket::accepted(key.as_ref(), head);
            tokio::spawn(websocket::run(
                upgrade,
                shared.clone(),
                started.id,
                want,
                out,
                room,
            ));
            return res;
        }
        let mut res = Response::new(head.body.unwrap_or(started.body));
        *res.status_mut() = head.status;
        *res.headers_mut() = head.headers;
        res
    }
}

impl fmt::Debug for Asgi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asgi")
            .field("app", &self.name)
            .finish_non_exhaustive()
    }
}
