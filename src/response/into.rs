//! What a handler may return.

use std::borrow::Cow;
use std::convert::Infallible;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::{JSON, OCTET_STREAM, TEXT_HTML, TEXT_PLAIN, with_type};
use crate::{App, Body, Request, Response};

/// Something a handler can answer with. A handler returning it is an app, and
/// since a `Result` of two such is one too, a handler can use `?`.
///
/// ```
/// use stackway::prelude::*;
/// use stackway::testing::Client;
///
/// #[derive(serde::Deserialize)]
/// struct Page { n: u32 }
///
/// // A bad query is a 400 through `?`; the success is JSON.
/// async fn page(req: Request) -> Result<Json<u32>, Rejection> {
///     let page: Page = req.query()?;
///     Ok(Json(page.n * 10))
/// }
/// let teapot = |_req: Request| async { (StatusCode::IM_A_TEAPOT, "short and stout") };
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// Client::new(page).get("/?n=4").await.assert_status(200).assert_text("40");
/// Client::new(page).get("/?n=four").await.assert_status(400);
/// Client::new(teapot).get("/").await.assert_status(418).assert_text("short and stout");
/// # });
/// ```
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

/// The status, with its code and reason as a plain-text body, marked
/// [`StatusOnly`].
impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        let mut res = self.to_string().into_response();
        *res.status_mut() = self;
        res.extensions_mut().insert(StatusOnly);
        res
    }
}

/// Marks a response that says nothing but its status (one made from a
/// [`StatusCode`]: a 404 of a dispatcher, a proxy's 502, a policy's 429),
/// so that what serves error pages knows it may stand in for its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusOnly;

/// `200 OK`, `text/plain; charset=utf-8`.
impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        with_type(self.into(), TEXT_PLAIN)
    }
}

/// `200 OK`, `text/plain; charset=utf-8`.
impl IntoResponse for String {
    fn into_response(self) -> Response {
        with_type(self.into(), TEXT_PLAIN)
    }
}

/// `200 OK`, `text/plain; charset=utf-8`.
impl IntoResponse for Cow<'static, str> {
    fn into_response(self) -> Response {
        match self {
            Cow::Borrowed(text) => text.into_response(),
            Cow::Owned(text) => text.into_response(),
        }
    }
}

/// `200 OK`, `application/octet-stream`.
impl IntoResponse for Bytes {
    fn into_response(self) -> Response {
        with_type(self.into(), OCTET_STREAM)
    }
}

/// `200 OK`, `application/octet-stream`.
impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        Bytes::from(self).into_response()
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

/// `inner` with these headers set (replacing any of the same name), as in
/// `([(CONTENT_TYPE, "text/csv")], body)`; a value that is not a valid header
/// value is a 500, with the reason logged.
impl<T: IntoResponse, const N: usize> IntoResponse for ([(HeaderName, &'static str); N], T) {
    fn into_response(self) -> Response {
        let mut res = self.1.into_response();
        for (name, value) in self.0 {
            match HeaderValue::from_str(value) {
                Ok(value) => res.headers_mut().insert(name, value),
                Err(_) => {
                    tracing::error!("{value:?} is not a valid value for the header {name}");
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
            };
        }
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
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => with_type(bytes.into(), JSON),
            Err(e) => {
                tracing::error!("the value does not serialize to JSON: {e}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// HTML: `200 OK`, `text/html; charset=utf-8`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Html<T>(pub T);

impl<T: Into<Body>> IntoResponse for Html<T> {
    fn into_response(self) -> Response {
        with_type(self.0.into(), TEXT_HTML)
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
        // The handler's future made in its place in the one returned, not
        // moved into an `async` block's state by `memcpy`.
        self(req).map(IntoResponse::into_response)
    }
}
