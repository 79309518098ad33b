//! Checks that the app inside, and the middleware around it, keep the rules
//! of this interface and of HTTP, as Werkzeug's `LintMiddleware` and
//! `Rack::Lint` do: for tests and development.
//!
//! # Example
//!
//! ```
//! use stackway::{IntoResponse, Request, testing::Client};
//! use stackway_middleware::Lint;
//!
//! // A 204 must not have a body.
//! let broken = |_req: Request| async {
//!     let mut res = "oops".into_response();
//!     *res.status_mut() = http::StatusCode::NO_CONTENT;
//!     res
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let app = Lint::strict(broken);
//! let caught = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
//!     Client::new(app).get("/").into_future(),
//! )).await;
//! let message = caught.unwrap_err().downcast::<String>().unwrap();
//! assert!(message.contains("a 204 response has a body"), "{message}");
//! # });
//! ```
//!
//! # What it checks
//!
//! Of the request it is handed (by the server and the middleware around it):
//! SCRIPT_NAME + PATH_INFO must be the request's path, SCRIPT_NAME must not
//! end in `/`, PATH_INFO must be empty or start with `/` (or be `OPTIONS *`'s
//! `*`, at the root).
//!
//! Of the response: no body for a successful `HEAD`, nor for 1xx, 204 or 304; a `Content-Length`
//! that agrees with the body's known size and with the bytes actually sent;
//! no hop-by-hop headers (`Connection`, `Keep-Alive`, `Transfer-Encoding`,
//! `TE`, `Proxy-*`, `Upgrade` outside a 101), which are the server's to set;
//! a 304 to `If-None-Match` carries an `ETag`; a `Location` that is a valid
//! URI reference; and a body that is read to its end.
//!
//! Each finding is a warning through `tracing` (target `stackway::lint`) with
//! the request line; [`Lint::strict`] panics instead, for tests.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, ETAG, IF_NONE_MATCH, LOCATION};
use http::{Method, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use stackway::app::BoxFuture;
use stackway::environ::Packet;
use stackway::{App, Body, Request, RequestExt, Response};

/// Reports protocol mistakes of the app it wraps; see the [module docs](self).
#[doc(alias = "LintMiddleware")]
#[derive(Debug, Clone)]
pub struct Lint<A> {
    inner: A,
    strict: bool,
}

impl<A> Lint<A> {
    /// Warns about each finding through `tracing`.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            strict: false,
        }
    }

    /// Panics on the first finding: for tests.
    pub fn strict(inner: A) -> Self {
        Self {
            inner,
            strict: true,
        }
    }

    inner_accessors!();
}

/// Where findings go.
#[derive(Debug, Clone)]
struct Reporter {
    strict: bool,
    /// `GET /path HTTP/1.1`, for the reader of the finding.
    request: String,
}

impl Reporter {
    fn finding(&self, what: impl fmt::Display) {
        if self.strict {
            panic!("stackway lint: {}: {what}", self.request);
        }
        tracing::warn!(target: "stackway::lint", request = %self.request, "{what}");
    }
}

/// Headers that belong to a connection, which only the server sets.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

impl<A: App> App for Lint<A> {
    async fn call(&self, req: Request) -> Response {
        let reporter = Reporter {
            strict: self.strict,
            request: format!("{} {} {:?}", req.method(), req.uri(), req.version()),
        };
        check_request(&req, &reporter);
        let method = req.method().clone();
        let asked_etag = req.headers().contains_key(IF_NONE_MATCH);
        let res = self.inner.call(req).await;
        checked(res, method, asked_etag, reporter)
    }

    /// A packet the app takes: its answer is checked as a request's is.
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        let reporter = Reporter {
            strict: self.strict,
            request: format!(
                "{} {} {} (a uwsgi packet)",
                packet.method(),
                String::from_utf8_lossy(packet.request_target()),
                packet.server_protocol()
            ),
        };
        let method = packet.method().clone();
        let asked_etag = packet
            .cgi_headers()
            .any(|(name, _)| name == b"HTTP_IF_NONE_MATCH");
        let called = self.inner.call_packet(packet)?;
        Ok(Box::pin(async move {
            checked(called.await, method, asked_etag, reporter)
        }))
    }

    fn takes_packets(&self) -> bool {
        self.inner.takes_packets()
    }
}

/// The app's answer, its head checked and its body checked as it goes.
fn checked(res: Response, method: Method, asked_etag: bool, reporter: Reporter) -> Response {
    check_head(&res, &method, asked_etag, &reporter);
    // A HEAD answer's body is dropped by the server; an app that makes a
    // whole successful body for it does the work for nothing. Short error
    // and redirect pages are let pass.
    let no_body = (method == Method::HEAD && res.status().is_success())
        || res.status().is_informational()
        || matches!(
            res.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    let declared = res
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .filter(|_| !no_body);
    let status = res.status();
    res.map(|body| {
        Body::new(LintBody {
            body,
            declared,
            sent: 0,
            no_body: no_body.then_some((method, status)),
            finished: false,
            reporter,
        })
    })
}

fn check_request(req: &Request, reporter: &Reporter) {
    let env = req.environ();
    let (script_name, path_info) = (env.script_name(), env.path_info());
    if format!("{script_name}{path_info}") != req.uri().path() {
        reporter.finding(format_args!(
            "SCRIPT_NAME {script_name:?} + PATH_INFO {path_info:?} is not the request's path"
        ));
    }
    if script_name.ends_with('/') {
        reporter.finding(format_args!("SCRIPT_NAME {script_name:?} ends in /"));
    }
    // `*` is `OPTIONS *`'s (the server as a whole), at the root.
    let asterisk = path_info == "*" && script_name.is_empty();
    if !path_info.is_empty() && !path_info.starts_with('/') && !asterisk {
        reporter.finding(format_args!(
            "PATH_INFO {path_info:?} does not start with /"
        ));
    }
}

fn check_head(res: &Response, method: &Method, asked_etag: bool, reporter: &Reporter) {
    let status = res.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    for name in HOP_BY_HOP {
        // A 101 names its new protocol in `Connection: upgrade`.
        if res.headers().contains_key(name) && !(switching && name == "connection") {
            reporter.finding(format_args!(
                "the app set {name}, a hop-by-hop header the server sets"
            ));
        }
    }
    if res.headers().contains_key(http::header::UPGRADE)
        && status != StatusCode::SWITCHING_PROTOCOLS
    {
        reporter.finding("the app set Upgrade outside a 101 response");
    }
    if status == StatusCode::NOT_MODIFIED && asked_etag && !res.headers().contains_key(ETAG) {
        reporter.finding("a 304 to If-None-Match has no ETag");
    }
    if let Some(location) = res.headers().get(LOCATION) {
        let valid = location
            .to_str()
            .ok()
            .is_some_and(|l| !l.is_empty() && l.parse::<http::Uri>().is_ok());
        if !valid {
            reporter.finding(format_args!("Location {location:?} is not a URI reference"));
        }
    }
    if let Some(length) = res.headers().get(CONTENT_LENGTH) {
        match length.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            None => reporter.finding(format_args!("Content-Length {length:?} is not a number")),
            Some(declared) => {
                let known = res.body().size_hint().exact();
                let bodyless = *method == Method::HEAD || status == StatusCode::NOT_MODIFIED;
                if known.is_some_and(|known| known != declared && !(bodyless && known == 0)) {
                    reporter.finding(format_args!(
                        "Content-Length says {declared} but the body is {} bytes",
                        known.unwrap_or_default()
                    ));
                }
                if (status.is_informational() || status == StatusCode::NO_CONTENT) && declared != 0
                {
                    reporter.finding(format_args!(
                        "a {status} response has Content-Length {declared}"
                    ));
                }
            }
        }
    }
}

/// The response body, checked as it is sent.
struct LintBody {
    body: Body,
    declared: Option<u64>,
    sent: u64,
    /// Set when the response may have no body: why.
    no_body: Option<(Method, StatusCode)>,
    finished: bool,
    reporter: Reporter,
}

impl http_body::Body for LintBody {
    type Data = Bytes;
    type Error = stackway::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, stackway::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > 0 {
                    if let Some((method, status)) = &this.no_body {
                        match *method == Method::HEAD {
                            true => this.reporter.finding("a response to HEAD has a body"),
                            false => this
                                .reporter
                                .finding(format_args!("a {} response has a body", status.as_u16())),
                        }
                        this.no_body = None; // once is enough
                    }
                }
                this.sent += len;
            }
            Poll::Ready(None) => {
                this.finished = true;
                if let Some(declared) = this.declared.filter(|d| *d != this.sent) {
                    this.reporter.finding(format_args!(
                        "Content-Length says {declared} but {} bytes were sent",
                        this.sent
                    ));
                }
            }
            Poll::Ready(Some(Err(_))) => this.finished = true,
            Poll::Pending => {}
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

impl Drop for LintBody {
    fn drop(&mut self) {
        // Only a warning, even when strict: a client may leave mid-body, and a
        // panic while dropping would abort.
        if !self.finished && !self.body.is_end_stream() && !std::thread::panicking() {
            tracing::warn!(
                target: "stackway::lint",
                request = %self.reporter.request,
                "the response body was dropped before its end"
            );
        }
    }
}
