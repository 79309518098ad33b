//! Turns a panic in the app into a response, for in-process use (tests, an
//! app embedded in another program); the server already does this at its edge.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, testing::Client};
//! use stackway_middleware::CatchPanic;
//!
//! let broken = |req: Request| async move {
//!     if req.uri().path() == "/boom" {
//!         panic!("boom");
//!     }
//!     "fine"
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(CatchPanic::new(broken));
//! client.get("/boom").await.assert_status(500);
//! client.get("/").await.assert_text("fine");
//! # });
//! ```

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use http::StatusCode;
use stackway::{App, IntoResponse, Request, Response};

type OnPanic = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Answers a panicking request with 500 (or what [`respond`](Self::respond)
/// makes); see the [module docs](self).
#[derive(Clone)]
pub struct CatchPanic<A> {
    inner: A,
    respond: OnPanic,
}

impl<A> CatchPanic<A> {
    /// Answers panics with 500 and logs their message.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            respond: Arc::new(|_message: &str| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        }
    }

    /// Makes the response for a panic from its message.
    pub fn respond(mut self, respond: impl Fn(&str) -> Response + Send + Sync + 'static) -> Self {
        self.respond = Arc::new(respond);
        self
    }

    inner_accessors!();
}

impl<A: App> App for CatchPanic<A> {
    async fn call(&self, req: Request) -> Response {
        let line = format!("{} {}", req.method(), req.uri());
        // In `call` itself (a router's lookup) or in its future.
        let caught = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(called) => AssertUnwindSafe(called).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        match caught {
            Ok(res) => res,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic without a message");
                tracing::error!(request = %line, "the app panicked: {message}");
                (self.respond)(message)
            }
        }
    }
}

impl<A> fmt::Debug for CatchPanic<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanic").finish_non_exhaustive()
    }
}
