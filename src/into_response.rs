//! What a handler may return: anything that becomes a response, so a handler
//! can return `Result<_, _>` and use `?`.
//!
//! # Example
//!
//! ```
//! use http::StatusCode;
//! use stackway::{Extract, Json, Request, testing::Client};
//!
//! #[derive(serde::Deserialize)]
//! struct Page { n: u32 }
//!
//! // A bad query is a 400 through `?`; the success is JSON.
//! async fn page(req: Request) -> Result<Json<u32>, stackway::Rejection> {
//!     let page: Page = req.query()?;
//!     Ok(Json(page.n * 10))
//! }
//! let teapot = |_req: Request| async { (StatusCode::IM_A_TEAPOT, "short and stout") };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(page).get("/?n=4").await.assert_status(200).assert_text("40");
//! Client::new(page).get("/?n=four").await.assert_status(400);
//! Client::new(teapot).get("/").await.assert_status(418).assert_text("short and stout");
//! # });
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::{App, Body, Request, Response, response};

/// Something a handler can answer with. A handler returning it is an app.
pub trait IntoResponse {
    /// The response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    #[inline]
    fn into_response(self) -> Response {
        self
    }
}

/// The status, with its code and reason as a plain-text body.
impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        response::status(self)
    }
}

/// `200 OK`, plain text.
impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        response::text(self)
    }
}

/// `200 OK`, plain text.
impl IntoResponse for String {
    fn into_response(self) -> Response {
        response::text(self)
    }
}

/// `200 OK`, `application/octet-stream`.
impl IntoResponse for Bytes {
    fn into_response(self) -> Response {
        let mut res = Response::new(Body::from(self));
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        res
    }
}

/// `200 OK` with the body and no `Content-Type`.
impl IntoResponse for Body {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

/// `204 No Content`.
impl IntoResponse for () {
    fn into_response(self) -> Response {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::NO_CONTENT;
        res
    }
}

/// `inner` with another status.
impl<T: IntoResponse> IntoResponse for (StatusCode, T) {
    fn into_response(self) -> Response {
        let mut res = self.1.into_response();
        *res.status_mut() = self.0;
        res
    }
}

/// `inner` with another status and more headers.
impl<T: IntoResponse> IntoResponse for (StatusCode, HeaderMap, T) {
    fn into_response(self) -> Response {
        let mut res = (self.0, self.2).into_response();
        res.headers_mut().extend(self.1);
        res
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    #[inline]
    fn into_response(self) -> Response {
        match self {
            Ok(ok) => ok.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

impl IntoResponse for Infallible {
    fn into_response(self) -> Response {
        match self {}
    }
}

/// A value sent as JSON: `200 OK`, `application/json`; a value that does not
/// serialize is a 500.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        response::json(&self.0)
    }
}

/// HTML: `200 OK`, `text/html; charset=utf-8`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Html<T>(pub T);

impl<T: Into<Body>> IntoResponse for Html<T> {
    fn into_response(self) -> Response {
        response::html(self.0)
    }
}

/// Async functions and closures returning anything that becomes a response
/// ([`IntoResponse`]: a `Response`, a `Result` of two such, a status, text,
/// [`Json`]) are apps, so handlers can use `?`.
impl<F, Fut> App for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future + Send,
    Fut::Output: IntoResponse,
{
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        let answered = self(req);
        async move { answered.await.into_response() }
    }
}
