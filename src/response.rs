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

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};

use crate::{Body, Request, RequestExt, Response};

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

/// `200 OK` with `value` as JSON (`application/json`); a value that does not
/// serialize (a map with non-string keys) is a 500, with the reason logged.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(bytes.into(), "application/json"),
        Err(e) => {
            tracing::error!("the value does not serialize to JSON: {e}");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

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
        Err(_) => self::status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Adds `Set-Cookie` for `cookie` to `res`. A cookie without a `Path` gets the
/// app's mount point (SCRIPT_NAME, or `/` at the root), so that an app
/// mounted at `/shop` does not set cookies for the whole site.
///
/// ```
/// use cookie::{Cookie, SameSite};
/// use stackway::{Request, response, testing::Client};
///
/// let app = |req: Request| async move {
///     let mut res = response::text("signed in");
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

/// One server-sent event; see [`sse`].
#[derive(Debug, Clone, Default)]
pub struct Event {
    event: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    data: String,
}

impl Event {
    /// An event carrying `data` (several lines become several `data:` lines).
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// The event's type (`event:`); line breaks are removed.
    pub fn event(mut self, name: &str) -> Self {
        self.event = Some(name.replace(['\r', '\n'], ""));
        self
    }

    /// The event's id (`id:`), which the client sends back as `Last-Event-ID`.
    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.replace(['\r', '\n', '\0'], ""));
        self
    }

    /// How long the client waits before reconnecting (`retry:`).
    pub fn retry(mut self, after: Duration) -> Self {
        self.retry = Some(after);
        self
    }

    fn encode(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.len() + 16);
        if let Some(event) = &self.event {
            out.push_str(&format!("event: {event}\n"));
        }
        if let Some(id) = &self.id {
            out.push_str(&format!("id: {id}\n"));
        }
        if let Some(retry) = self.retry {
            out.push_str(&format!("retry: {}\n", retry.as_millis()));
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line.strip_suffix('\r').unwrap_or(line));
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }
}

/// A `text/event-stream` response (server-sent events) from a stream of
/// events, each sent as soon as it comes; when none has come for
/// `keep_alive`, a comment line is sent so that proxies and the client keep
/// the connection open.
pub fn sse<S>(events: S, keep_alive: Duration) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let events = Box::pin(events.map(|event| event.encode()));
    let chunks = futures_util::stream::unfold(events, move |mut events| async move {
        match tokio::time::timeout(keep_alive, events.next()).await {
            Ok(Some(chunk)) => Some((Ok::<_, std::convert::Infallible>(chunk), events)),
            Ok(None) => None,
            Err(_idle) => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), events)),
        }
    });
    let mut res = with_type(Body::from_stream(chunks), "text/event-stream");
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
    let mut out = String::with_capacity(escaped_len(text));
    push_escaped(&mut out, text);
    out
}

/// How long `text` is once escaped by [`escape_html`].
pub(crate) fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'&' => 5,
            b'<' | b'>' => 4,
            b'"' => 6,
            b'\'' => 6,
            _ => 1,
        })
        .sum()
}

/// Appends `text` to `out`, escaped as [`escape_html`] does.
pub(crate) fn push_escaped(out: &mut String, text: &str) {
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
}
