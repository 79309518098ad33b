//! Writing responses: what a handler may return ([`IntoResponse`]: a
//! `Response`, a status, text, [`Json`], [`Html`], a `Result` of two such),
//! and the responses that need the request ([`redirect`], [`set_cookie`]) or a
//! stream ([`sse`]).
//!
//! # Example
//!
//! ```
//! use stackway::prelude::*;
//! use stackway::testing::Client;
//!
//! let app = |req: Request| async move {
//!     match req.uri().path() {
//!         "/" => Html("<p>home</p>").into_response(),
//!         _ => StatusCode::NOT_FOUND.into_response(),
//!     }
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/").await.assert_status(200).assert_text("<p>home</p>");
//! client.get("/x").await.assert_status(404).assert_text("404 Not Found");
//! # });
//! ```

mod into;
mod sse;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use http::{HeaderMap, StatusCode};

use crate::{Body, Request, RequestExt, Response};

pub use into::{Html, IntoResponse, Json, StatusOnly};
pub use sse::{Event, sse};

/// A redirect with `status` (301, 302, 303, 307 or 308) to `location`. A
/// location relative to the app (`/login`) is made relative to where the app
/// is mounted (`/admin/login` under `/admin`), so redirects stay right under
/// any mount; a full URL, or `//host/…`, is sent as given.
///
/// ```
/// use http::StatusCode;
/// use stackway::{Request, response, testing::Client};
/// use stackway_middleware::Dispatcher;
///
/// let app = |req: Request| async move { response::redirect(&req, StatusCode::SEE_OTHER, "/login") };
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// Client::new(Dispatcher::default().mount("/admin", app))
///     .get("/admin/x").await
///     .assert_status(303)
///     .assert_header("location", "/admin/login");
/// # });
/// ```
pub fn redirect(req: &Request, status: StatusCode, location: &str) -> Response {
    let location = match location.starts_with('/') && !location.starts_with("//") {
        true => format!("{}{location}", req.environ().mount_path()),
        false => location.to_owned(),
    };
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    match HeaderValue::try_from(location) {
        Ok(location) => {
            res.headers_mut().insert(LOCATION, location);
            res
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Adds `Set-Cookie` for `cookie` to `res`. A cookie without a `Path` gets the
/// app's mount point (SCRIPT_NAME, or `/` at the root), so that an app
/// mounted at `/shop` does not set cookies for the whole site.
///
/// ```
/// use cookie::{Cookie, SameSite};
/// use stackway::{IntoResponse, Request, response, testing::Client};
///
/// let app = |req: Request| async move {
///     let mut res = "signed in".into_response();
///     let session = Cookie::build(("session", "abc")).http_only(true).secure(true).same_site(SameSite::Lax);
///     response::set_cookie(&mut res, &req, session.build());
///     res
/// };
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// Client::new(app).get("/").await
///     .assert_header("set-cookie", "session=abc; HttpOnly; SameSite=Lax; Secure; Path=/");
/// # });
/// ```
pub fn set_cookie(res: &mut Response, req: &Request, mut cookie: cookie::Cookie<'_>) {
    if cookie.path().is_none() {
        match req.environ().mount_path() {
            mount if mount.is_empty() => cookie.set_path("/"),
            mount => cookie.set_path(mount.into_owned()),
        }
    }
    if let Ok(value) = HeaderValue::try_from(cookie.encoded().to_string()) {
        res.headers_mut().append(SET_COOKIE, value);
    }
}

/// The length a response's `Content-Length` declares, `None` without one;
/// an error saying why when it declares none: a value not 1*DIGIT (RFC
/// 9110, 8.6), too large, or two that differ. hyper sends no answer at all
/// to such a response, so the server answers 500 instead, and the WSGI and
/// ASGI apps' `start_response` raises (gunicorn's `int()` raises too).
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::CONTENT_LENGTH};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(stackway::response::declared_length(&headers), Ok(None));
/// headers.insert(CONTENT_LENGTH, HeaderValue::from_static("42"));
/// assert_eq!(stackway::response::declared_length(&headers), Ok(Some(42)));
/// headers.append(CONTENT_LENGTH, HeaderValue::from_static("+42"));
/// assert!(stackway::response::declared_length(&headers).is_err());
/// ```
pub fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, String> {
    // Looked for among the few fields a response has, not hashed for: the
    // server asks this of every response.
    let mut lengths =
        (headers.iter()).filter_map(|(name, value)| (name == CONTENT_LENGTH).then_some(value));
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    let length = Some(first.as_bytes())
        .filter(|digits| !digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
        .and_then(|digits| std::str::from_utf8(digits).ok()?.parse().ok())
        .filter(|_| lengths.all(|other| other == first));
    match length {
        Some(length) => Ok(Some(length)),
        None => Err(format!(
            "Content-Length {:?} is not the body's length in bytes",
            headers.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>()
        )),
    }
}

/// `body` with `Content-Type: content_type`, one of the constants below
/// (checked once, when compiled, rather than at every response).
pub(crate) fn with_type(body: Body, content_type: HeaderValue) -> Response {
    let mut res = Response::new(body);
    res.headers_mut().insert(CONTENT_TYPE, content_type);
    res
}

pub(crate) const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
pub(crate) const TEXT_HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
pub(crate) const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(crate) const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// Escapes `&`, `<`, `>`, `"` and `'` so that `text` is safe inside HTML text and
/// quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(escaped_len(text));
    push_escaped(&mut out, text);
    out
}

/// How long `text` is once escaped by [`escape_html`].
pub(crate) fn escaped_len(text: &str) -> usize {
    text.bytes().map(|b| escaped(b).map_or(1, str::len)).sum()
}

/// Appends `text` to `out`, escaped as [`escape_html`] does: the runs between
/// the bytes to escape copied whole (all five are ASCII, so every cut is on a
/// character's boundary).
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    let mut rest = text;
    let special =
        |rest: &str| (rest.bytes().enumerate()).find_map(|(at, b)| Some((at, escaped(b)?)));
    while let Some((at, entity)) = special(rest) {
        out.push_str(&rest[..at]);
        out.push_str(entity);
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// What an HTML-special byte is written as.
fn escaped(b: u8) -> Option<&'static str> {
    match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'"' => Some("&quot;"),
        b'\'' => Some("&#x27;"),
        _ => None,
    }
}
