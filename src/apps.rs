//! The built-in apps: [`hello`] and [`demo`]. The `stackway serve` command line
//! mounts them by name.
//!
//! # Example
//!
//! ```
//! use stackway::{apps, testing::Client};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(apps::demo)
//!     .get("/x?y=1")
//!     .await
//!     .assert_status(200)
//!     .assert_text_contains("PATH_INFO=/x\n")
//!     .assert_text_contains("QUERY_STRING=y=1\n");
//! Client::new(apps::demo)
//!     .get("/x?format=json")
//!     .await
//!     .assert_header("content-type", "application/json")
//!     .assert_text_contains(r#""PATH_INFO":"/x""#);
//! # });
//! ```

use std::fmt::Write;

use crate::response::{escaped_len, push_escaped};
use crate::{Extract, Html, IntoResponse, Json, Request, RequestExt, Response};

/// Greets PATH_INFO: `<h1>Hello, NAME!</h1>`, where NAME is PATH_INFO decoded
/// and without its leading `/`, or `web` when that is empty. NAME is
/// HTML-escaped.
pub async fn hello(req: Request) -> Response {
    let path_info = req.environ().path_info_decoded();
    let name = path_info.strip_prefix('/').unwrap_or(&path_info);
    let name = if name.is_empty() { "web" } else { name };
    // Made to its exact length: the body takes it without another allocation.
    let (head, tail) = ("<h1>Hello, ", "!</h1>");
    let mut page = String::with_capacity(head.len() + escaped_len(name) + tail.len());
    page.push_str(head);
    push_escaped(&mut page, name);
    page.push_str(tail);
    for_head(&req, Html(page).into_response())
}

/// For `HEAD`, the head of the `GET` response: its length, no body.
fn for_head(req: &Request, res: Response) -> Response {
    if req.method() != http::Method::HEAD {
        return res;
    }
    let len = http_body::Body::size_hint(res.body()).exact();
    let (mut parts, _) = res.into_parts();
    if let Some(len) = len {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, len.into());
    }
    Response::from_parts(parts, crate::Body::empty())
}

/// Shows the request's [CGI view](crate::Environ::cgi) as `NAME=VALUE` lines
/// sorted by name, as wsgiref's `demo_app` prints the environ; as a JSON
/// object with `?format=json`.
pub async fn demo(req: Request) -> Response {
    #[derive(serde::Deserialize)]
    struct Options {
        format: Option<String>,
    }
    let options: Option<Options> = req.query().ok();
    if options.and_then(|o| o.format).as_deref() == Some("json") {
        return Json(req.environ().cgi()).into_response();
    }
    let mut body = String::new();
    for (name, value) in req.environ().cgi() {
        let _ = writeln!(body, "{name}={value}");
    }
    for_head(&req, body.into_response())
}
