//! Small constructors for the responses apps answer with most.
//!
//! # Example
//!
//! ```
//! use http::StatusCode;
//! use stackway::{Request, response, testing::Client};
//!
//! let app = |req: Request| async move {
//!     match req.uri().path() {
//!         "/" => response::html("<p>home</p>"),
//!         _ => response::status(StatusCode::NOT_FOUND),
//!     }
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/").await.assert_status(200).assert_text("<p>home</p>");
//! client.get("/x").await.assert_status(404).assert_text("404 Not Found");
//! # });
//! ```

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};

use crate::{Body, Response};

/// `200 OK` with `Content-Type: text/plain; charset=utf-8`.
pub fn text(body: impl Into<Body>) -> Response {
    with_type(body.into(), "text/plain; charset=utf-8")
}

/// `200 OK` with `Content-Type: text/html; charset=utf-8`.
pub fn html(body: impl Into<Body>) -> Response {
    with_type(body.into(), "text/html; charset=utf-8")
}

/// A plain-text response with `status` and its code and reason as the body
/// (`404 Not Found`).
pub fn status(status: StatusCode) -> Response {
    let mut res = text(status.to_string());
    *res.status_mut() = status;
    res
}

fn with_type(body: Body, content_type: &'static str) -> Response {
    let mut res = Response::new(body);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// Escapes `&`, `<`, `>`, `"` and `'` so that `text` is safe inside HTML text and
/// quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}
