//! A request body limit for one app or mount, beneath the server's own: a
//! body declared larger gets 413 before the app runs; one that turns out
//! larger fails the app's read, and the client gets 413 whatever the app
//! answered.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, testing::Client};
//! use stackway_middleware::BodyLimit;
//!
//! let upload = |req: Request| async move {
//!     match req.into_body().collect(usize::MAX).await {
//!         Ok(body) => format!("{} bytes", body.len()),
//!         Err(e) => format!("failed: {e}"),
//!     }
//! };
//! let app = BodyLimit::new(upload, 8);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.post("/").body("12345678").await.assert_text("8 bytes");
//! client.post("/").body("123456789").await.assert_status(413);
//! # });
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use http::StatusCode;
use http::header::CONTENT_LENGTH;
use stackway::{App, IntoResponse, Request, Response};

/// Refuses request bodies over a size with 413; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct BodyLimit<A> {
    inner: A,
    max: u64,
}

impl<A> BodyLimit<A> {
    /// Lets at most `max` bytes of request body through to `inner`.
    pub fn new(inner: A, max: u64) -> Self {
        Self { inner, max }
    }

    inner_accessors!();
}

impl<A: App> App for BodyLimit<A> {
    async fn call(&self, req: Request) -> Response {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max) {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
        let tripped = Arc::new(AtomicBool::new(false));
        // The limit, and a note when it is passed, so that the answer is 413.
        let note = tripped.clone();
        let max = self.max;
        let req = req.map(move |body| {
            body.limit(max).inspect(move |polled| {
                if let Poll::Ready(Some(Err(e))) = polled {
                    if e.is_too_large() {
                        note.store(true, Ordering::Relaxed);
                    }
                }
            })
        });
        let res = self.inner.call(req).await;
        match tripped.load(Ordering::Relaxed) {
            true => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            false => res,
        }
    }
}
