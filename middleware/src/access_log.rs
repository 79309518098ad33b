//! Logs one line per request in the Common Log Format, as Apache and nginx do.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use stackway::testing::Client;
//! use stackway_middleware::AccessLog;
//!
//! let lines = Arc::new(Mutex::new(Vec::new()));
//! let sink = lines.clone();
//! let app = AccessLog::new(stackway::apps::hello).sink(move |line: &str| sink.lock().unwrap().push(line.to_owned()));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/you?x=1").await.assert_status(200);
//! # });
//! let line = lines.lock().unwrap().pop().unwrap();
//! assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
//! assert!(line.ends_with(r#"] "GET /you?x=1 HTTP/1.1" 200 20"#), "{line}");
//! ```
//!
//! The line is written when the response body has been sent (or the client
//! went away), so the byte count is what was really sent:
//!
//! ```text
//! 127.0.0.1 - - [21/Nov/2026:10:04:59 +0000] "GET /you?x=1 HTTP/1.1" 200 20
//! %h        %l %u %t                          "%r"                    %>s %b
//! ```
//!
//! The request line is the original request target, whatever SCRIPT_NAME the
//! request later gained; `%b` is `-` when no body bytes were sent.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use stackway::{App, Body, Request, RequestExt, Response};
use time::OffsetDateTime;
use time::macros::format_description;

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Logs each request in the Common Log Format; see the [module docs](self).
#[doc(alias = "logger")]
pub struct AccessLog<A> {
    inner: A,
    sink: Sink,
}

impl<A> AccessLog<A> {
    /// Logs requests to `inner` to standard error.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            sink: Arc::new(|line: &str| eprintln!("{line}")),
        }
    }

    /// Sends each line to `sink` instead of standard error.
    pub fn sink(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    inner_accessors!();
}

impl<A: App> App for AccessLog<A> {
    async fn call(&self, req: Request) -> Response {
        let time = OffsetDateTime::now_utc();
        let host = req
            .environ()
            .remote_addr()
            .map_or_else(|| "-".to_owned(), |a| a.ip().to_string());
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let request_line = format!("{} {target} {:?}", req.method(), req.version());
        let res = self.inner.call(req).await;
        let pending = Pending {
            host,
            time,
            request_line,
            status: res.status().as_u16(),
            sent: 0,
            sink: self.sink.clone(),
        };
        res.map(|body| Body::new(Counted { body, pending }))
    }
}

impl<A: fmt::Debug> fmt::Debug for AccessLog<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A log line waiting for its byte count; written when dropped.
struct Pending {
    host: String,
    time: OffsetDateTime,
    request_line: String,
    status: u16,
    sent: u64,
    sink: Sink,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let format =
            format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
        let time = self.time.format(format).unwrap_or_else(|_| "-".to_owned());
        let sent = match self.sent {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        // Escape the request line the way Apache does, so a hostile target cannot
        // forge a second log line or break the quoting.
        let request_line = self.request_line.escape_default();
        (self.sink)(&format!(
            "{} - - [{time}] \"{request_line}\" {} {sent}",
            self.host, self.status
        ));
    }
}

/// The response body, counting the bytes sent.
struct Counted {
    body: Body,
    pending: Pending,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = stackway::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            this.pending.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
