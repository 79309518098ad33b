//! Gives each request a deadline: an app that has not answered by then is
//! dropped, and the client gets 503 (or the status chosen).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use stackway::{Request, testing::Client};
//! use stackway_middleware::Timeout;
//!
//! let slow = |_req: Request| async {
//!     tokio::time::sleep(Duration::from_secs(60)).await;
//!     "too late"
//! };
//! let app = Timeout::new(slow, Duration::from_millis(50));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/").await.assert_status(503);
//! # });
//! ```
//!
//! The deadline covers the app until its response head; a streaming body is
//! bounded by the server's send timeout instead. Dropping the app's future
//! cancels what it was doing at its next await: work it handed to other tasks
//! or threads goes on.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use stackway::{App, IntoResponse, Request, Response};

/// Answers 503 for requests the app does not answer in time; see the
/// [module docs](self).
#[derive(Clone)]
pub struct Timeout<A> {
    inner: A,
    deadline: Duration,
    status: StatusCode,
}

impl<A> Timeout<A> {
    /// Gives `inner` `deadline` to answer each request.
    pub fn new(inner: A, deadline: Duration) -> Self {
        Self {
            inner,
            deadline,
            status: StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The status for a request that ran out of time (503 by default; 504
    /// suits an app that waits on another service).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    inner_accessors!();
}

impl<A: App> App for Timeout<A> {
    async fn call(&self, req: Request) -> Response {
        let line = format!("{} {}", req.method(), req.uri());
        match tokio::time::timeout(self.deadline, self.inner.call(req)).await {
            Ok(res) => res,
            Err(_elapsed) => {
                tracing::warn!(request = %line, deadline = ?self.deadline, "the app did not answer in time");
                self.status.into_response()
            }
        }
    }
}

impl<A> fmt::Debug for Timeout<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.deadline)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}
