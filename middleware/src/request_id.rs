//! Gives each request an id: a trusted incoming `X-Request-Id`, or a new one.
//! The id is in the request (header and [`RequestId`] extension), in the
//! response, and in the `tracing` span the rest of the request runs in, so a
//! request can be followed through the logs of every service it crosses.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, testing::Client};
//! use stackway_middleware::request_id::{RequestId, RequestIds};
//!
//! let app = |req: Request| async move {
//!     let id = req.extensions().get::<RequestId>().unwrap();
//!     format!("handling {id}")
//! };
//! let app = RequestIds::new(app).trust_incoming(true);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/").header("x-request-id", "abc-123").await
//!     .assert_text("handling abc-123")
//!     .assert_header("x-request-id", "abc-123");
//! let fresh = client.get("/").await;
//! assert_eq!(fresh.header("x-request-id").unwrap().len(), 32);
//! # });
//! ```

use std::fmt;

use http::HeaderValue;
use http::header::HeaderName;
use stackway::{App, Request, Response};
use tracing::Instrument;

const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sets each request's id; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RequestIds<A> {
    inner: A,
    trust_incoming: bool,
}

impl<A> RequestIds<A> {
    /// Gives every request a new id.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            trust_incoming: false,
        }
    }

    /// Keeps the `X-Request-Id` a request comes with (1 to 128 visible ASCII
    /// characters), for a proxy in front that sets it. Off by default: a
    /// client could otherwise choose the id its requests are logged under.
    pub fn trust_incoming(mut self, on: bool) -> Self {
        self.trust_incoming = on;
        self
    }

    inner_accessors!();
}

/// 128 random bits as hex.
fn new_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

impl<A: App> App for RequestIds<A> {
    async fn call(&self, mut req: Request) -> Response {
        let incoming = req
            .headers()
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| self.trust_incoming && (1..=128).contains(&id.len()))
            .filter(|id| id.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned);
        let id = incoming.unwrap_or_else(new_id);
        let value = HeaderValue::from_str(&id).expect("visible ASCII");
        req.headers_mut().insert(HEADER, value.clone());
        req.extensions_mut().insert(RequestId(id.clone()));
        let span = tracing::info_span!("request", id = %id);
        let mut res = self.inner.call(req).instrument(span).await;
        res.headers_mut().insert(HEADER, value);
        res
    }
}
