//! Error pages, as nginx's `error_page`: a page of your own (a file, HTML,
//! or a path the wrapped app serves) in place of the body of an error
//! response, and a maintenance switch.
//!
//! A page stands in for responses with its status that say nothing but
//! their status: those made from a [`StatusCode`] (marked
//! [`StatusOnly`]: a dispatcher's 404, a
//! proxy's 502 or 504, a timeout's 503, a policy's 403 or 429) and those
//! with an empty body; or, with [`always`](ErrorPages::always), every one
//! (an app's own error pages too). The status and the other fields stay
//! (`Retry-After`, `WWW-Authenticate`); the page brings its own
//! `Content-Type`.
//!
//! The maintenance switch is a file: while it exists, every request gets
//! 503 with `Retry-After` and the 503 page (or a plain one), whatever the
//! app would say; creating or removing it (`touch`, `rm`) turns it on and
//! off for every process at once. It is looked at once a second at most.
//!
//! # Example
//!
//! ```
//! use http::StatusCode;
//! use stackway::testing::Client;
//! use stackway_middleware::ErrorPages;
//! use stackway_middleware::error_pages::Page;
//!
//! let down = |_req: stackway::Request| async { StatusCode::BAD_GATEWAY };
//! let app = ErrorPages::new(down).page(502..=504, Page::html("<h1>Back soon</h1>"));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/").await.assert_status(502).assert_text("<h1>Back soon</h1>");
//! # });
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderValue, StatusCode, Uri};
use http_body::Body as _;
use stackway::response::StatusOnly;
use stackway::{App, Body, Connection, Request, Response};

/// Serves pages of its own for error responses; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ErrorPages<A> {
    inner: A,
    pages: HashMap<u16, Page>,
    /// Whether a page is asked of the wrapped app ([`Page::uri`]).
    asks: bool,
    always: bool,
    maintenance: Option<Arc<Maintenance>>,
}

/// A page: bytes and their type, or a path the wrapped app serves.
#[derive(Debug, Clone)]
pub struct Page(Source);

#[derive(Debug, Clone)]
enum Source {
    Fixed {
        body: Bytes,
        content_type: HeaderValue,
    },
    Uri(Uri),
}

impl Page {
    /// An HTML page.
    pub fn html(html: impl Into<String>) -> Self {
        Self(Source::Fixed {
            body: Bytes::from(html.into()),
            content_type: HeaderValue::from_static("text/html; charset=utf-8"),
        })
    }

    /// What the wrapped app answers to a `GET` of `path` (nginx's
    /// `error_page 502 /50x.html`: a mount, a static export, a route of its
    /// own), when that is a `2xx`; otherwise the error response stays as it
    /// was. A path that is not one is `/`.
    pub fn uri(path: &str) -> Self {
        Self(Source::Uri(
            path.parse().unwrap_or_else(|_| Uri::from_static("/")),
        ))
    }

    /// The file at `path`, read now, its type from its name (as SharedData
    /// gives it).
    pub fn file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref();
        let body = std::fs::read(path)?;
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let content_type = match mime.type_() == mime_guess::mime::TEXT {
            true => format!("{mime}; charset=utf-8"),
            false => mime.to_string(),
        };
        Ok(Self(Source::Fixed {
            body: body.into(),
            content_type: HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        }))
    }
}

impl Page {
    /// The page's `Content-Type` and bytes; `None` for a [`uri`](Self::uri),
    /// which only the wrapped app can answer. For handing the same page to
    /// the server's own errors (`Server::error_page`).
    pub fn fixed(&self) -> Option<(&HeaderValue, &Bytes)> {
        match &self.0 {
            Source::Fixed { body, content_type } => Some((content_type, body)),
            Source::Uri(_) => None,
        }
    }
}

/// The switch: a file's existence, looked at once a second at most.
#[derive(Debug)]
struct Maintenance {
    flag: PathBuf,
    retry_after: HeaderValue,
    on: AtomicBool,
    started: Instant,
    /// When it is next looked at, in milliseconds since `started`.
    next_look: AtomicU64,
}

impl Maintenance {
    fn on(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        if now >= self.next_look.load(Ordering::Relaxed) {
            self.next_look.store(now + 1000, Ordering::Relaxed);
            self.on.store(self.flag.exists(), Ordering::Relaxed);
        }
        self.on.load(Ordering::Relaxed)
    }
}

impl<A> ErrorPages<A> {
    /// Wraps `inner`, with no page yet.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            pages: HashMap::new(),
            asks: false,
            always: false,
            maintenance: None,
        }
    }

    /// Serves `page` for the `statuses` (`502..=504`, `[404]`).
    pub fn page(mut self, statuses: impl IntoIterator<Item = u16>, page: Page) -> Self {
        self.asks |= matches!(page.0, Source::Uri(_));
        let pages = statuses
            .into_iter()
            .map(move |status| (status, page.clone()));
        self.pages.extend(pages);
        self
    }

    /// Stands in for every response with a page's status, whatever its body.
    pub fn always(mut self) -> Self {
        self.always = true;
        self
    }

    /// Answers every request with 503, `Retry-After` and the 503 page while
    /// the file `flag` exists.
    pub fn maintenance(mut self, flag: impl Into<PathBuf>, retry_after: Duration) -> Self {
        self.maintenance = Some(Arc::new(Maintenance {
            flag: flag.into(),
            retry_after: HeaderValue::from(retry_after.as_secs().max(1)),
            on: AtomicBool::new(false),
            started: Instant::now(),
            next_look: AtomicU64::new(0),
        }));
        self
    }

    inner_accessors!();
}

impl<A: App> App for ErrorPages<A> {
    // Not an `async fn`, which would keep a copy of the request; a page's
    // making is boxed where it is waited for. Neither is room in every
    // request's future, which is boxed on every request and, under a
    // kilobyte, comes from the allocator's per-thread cache.
    #[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        async move {
            // A page asked of the app is asked for the same host and client.
            let asker = self.asks.then(|| Asker {
                host: req.headers().get(HOST).cloned(),
                connection: req.extensions().get::<Connection>().cloned(),
            });
            if let Some(maintenance) = self.maintenance.as_ref().filter(|m| m.on()) {
                let page = self.pages.get(&503).cloned().unwrap_or_else(|| {
                    Page::html("<!doctype html>\n<title>Down for maintenance</title>\n<h1>Down for maintenance</h1>\n<p>Please try again soon.</p>\n")
                });
                let mut res = Response::new(Body::default());
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                res.headers_mut()
                    .insert(RETRY_AFTER, maintenance.retry_after.clone());
                return Box::pin(self.with_page(res, &page, asker)).await;
            }
            let res = self.inner.call(req).await;
            let Some(page) = self.pages.get(&res.status().as_u16()) else {
                return res;
            };
            let says_only_its_status =
                res.extensions().get::<StatusOnly>().is_some() || res.body().is_end_stream();
            match self.always || says_only_its_status {
                true => Box::pin(self.with_page(res, page, asker)).await,
                false => res,
            }
        }
    }
}

/// Who asked, for a page asked of the app.
struct Asker {
    host: Option<HeaderValue>,
    connection: Option<Connection>,
}

impl<A: App> ErrorPages<A> {
    /// `res` with `page` for its body (the status and other fields kept).
    async fn with_page(&self, res: Response, page: &Page, asker: Option<Asker>) -> Response {
        let (body, content_type) = match &page.0 {
            Source::Fixed { body, content_type } => {
                (Body::from(body.clone()), content_type.clone())
            }
            Source::Uri(uri) => {
                let mut ask = Request::new(Body::default());
                *ask.uri_mut() = uri.clone();
                if let Some(Asker { host, connection }) = asker {
                    if let Some(host) = host {
                        ask.headers_mut().insert(HOST, host);
                    }
                    if let Some(connection) = connection {
                        ask.extensions_mut().insert(connection);
                    }
                }
                let answer = self.inner.call(ask).await;
                if !answer.status().is_success() {
                    return res;
                }
                let (parts, body) = answer.into_parts();
                let content_type = (parts.headers.get(CONTENT_TYPE).cloned())
                    .unwrap_or(HeaderValue::from_static("text/html; charset=utf-8"));
                (body, content_type)
            }
        };
        let (mut parts, _) = res.into_parts();
        parts.headers.remove(CONTENT_ENCODING);
        parts.headers.remove(CONTENT_LENGTH);
        parts.headers.insert(CONTENT_TYPE, content_type);
        parts.extensions.remove::<StatusOnly>();
        Response::from_parts(parts, body)
    }
}
