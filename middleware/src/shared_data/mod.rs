//! Serves static files under URL prefixes, as Werkzeug's `SharedDataMiddleware`
//! does, with nginx's HTTP semantics; anything it does not serve falls
//! through to the wrapped app.
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::shared_data::{Export, SharedData};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let public = dir.path();
//! std::fs::write(public.join("site.css"), "body {}").unwrap();
//!
//! let app = SharedData::new(stackway::apps::hello)
//!     .export("/static", public)
//!     .export("/robots.txt", Export::bytes("robots.txt", b"User-agent: *\n"));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/static/site.css").await
//!     .assert_status(200)
//!     .assert_header("content-type", "text/css; charset=utf-8")
//!     .assert_text("body {}");
//! client.get("/robots.txt").await.assert_text("User-agent: *\n");
//! client.get("/static/missing.css").await.assert_text_contains("Hello"); // the app
//! # });
//! ```
//!
//! # What is served
//!
//! An export maps a URL prefix to a directory, a single file, or bytes compiled
//! into the binary ([`Embedded`], [`Export::bytes`]). The longest prefix
//! matches, on whole segments (`/css` never serves `/css-config.env`),
//! whatever order the exports were added in. Roots are checked when the
//! export is added: a missing one is an error then ([`SharedData::try_export`]),
//! never a quiet fallback to the working directory.
//!
//! For a file: `GET` and `HEAD` (other methods get 405 with `Allow`);
//! `Content-Type` from the extension (with `charset=utf-8` for text),
//! `Content-Length`, `Last-Modified`, a strong `ETag`, `Accept-Ranges`, and
//! `Cache-Control` when the export sets one. Conditionals follow RFC 9110's
//! order: `If-Match` / `If-Unmodified-Since` → 412, `If-None-Match` /
//! `If-Modified-Since` → 304. `Range` gives 206 (several ranges as
//! `multipart/byteranges`), 416 with `Content-Range: bytes */LEN` when nothing
//! asked for exists, and is ignored when malformed or when `If-Range` no
//! longer holds. `file.br`, `file.zst` and `file.gz` beside a file are sent
//! instead when `Accept-Encoding` allows, with `Vary: Accept-Encoding`.
//!
//! Files up to 64 KiB are read whole and kept in memory for a second
//! ([`Export::memory_cache`]); larger ones are kept open as long (checked
//! with a `stat` at each use, so a replaced file is never served as it was)
//! and stream in constant memory.
//!
//! For a directory: its `index.html` (see [`Export::index_file`]); a listing
//! only when [enabled](Export::listing); and a 308 redirect to the slash form
//! when asked for without it, built from SCRIPT_NAME + PATH_INFO so that it
//! is right under any mount.
//!
//! # Protected files (`X-Accel-Redirect`)
//!
//! An [internal](Export::internal) export is never served for a request
//! from outside (404): an app names one of its files with `X-Accel-Redirect:
//! /protected/report.pdf` after checking who asks (Django's protected
//! downloads, nginx's internal locations), and that file is served in place
//! of the app's body, for the client's method, ranges and conditions, with
//! the app's `Content-Type`, `Content-Disposition`, `Set-Cookie`,
//! `Cache-Control` and `Expires`. A name outside the internal exports is 404.
//!
//! # What is not served
//!
//! Before the file system is touched, PATH_INFO is percent-decoded exactly
//! once, segment by segment, and refused if any segment is `.` or `..`,
//! empty (`//`), or holds `/`, `\`, `:`, NUL or another control character,
//! Windows' reserved characters, a trailing dot or space, or a Windows device
//! name (`CON`, `nul.txt`, `COM1`); or is not UTF-8; or is a dot-file, unless
//! [allowed](Export::hidden_files). Symlinks follow [`Symlinks`]: by
//! default, only those that stay inside the export root. Refused paths,
//! missing files and anything but regular files and directories are misses:
//! the request goes on to the wrapped app unchanged, as Werkzeug does, or to
//! a [single-page app's fallback](Export::spa_fallback).

mod cache;
mod entry;
mod error;
mod export;
mod headers;
mod path;
mod respond;

use std::fmt;
use std::sync::Arc;

use futures_util::future::Either;

use http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, EXPIRES, HeaderName, SET_COOKIE,
};
use http::{Method, StatusCode};
use stackway::app::BoxFuture;
use stackway::environ::Packet;
use stackway::notes::{Mount, Notes, Served};
use stackway::{App, Body, IntoResponse, Request, RequestExt, Response};

pub use self::error::ExportError;
use self::error::Reason;
pub use self::export::{Embedded, Export, Symlinks};
use crate::prefix::Prefix;

/// What an app answers to have a file of an internal export served instead.
const X_ACCEL_REDIRECT: HeaderName = HeaderName::from_static("x-accel-redirect");

/// Serves exported files and falls through to `inner`; see the [module docs](self).
#[doc(alias = "static")]
#[doc(alias = "ServeDir")]
#[doc(alias = "SharedDataMiddleware")]
pub struct SharedData<A> {
    inner: A,
    /// Exports by prefix, the longest first.
    exports: Vec<(Prefix, Arc<Export>)>,
    /// Whether an export is internal: the app's responses are then looked
    /// at for `X-Accel-Redirect`.
    redirects: bool,
}

impl<A> SharedData<A> {
    /// Wraps `inner`, which answers whatever no export serves.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            exports: Vec::new(),
            redirects: false,
        }
    }

    /// Exports `target` (a path, or an [`Export`]) at `prefix`.
    ///
    /// # Panics
    ///
    /// If the export is invalid; [`try_export`](Self::try_export) returns the
    /// error instead.
    #[track_caller]
    pub fn export(self, prefix: &str, target: impl Into<Export>) -> Self {
        self.try_export(prefix, target)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Exports `target` at `prefix`, or says why it cannot: the prefix breaks
    /// [the prefix grammar](crate::prefix) (`/static`; a trailing `/` is
    /// ignored and `/` or `` exports at the root), names a host (mount the
    /// SharedData under that host with a [`Dispatcher`](crate::Dispatcher)
    /// instead), or is exported already; the root does not exist or is not
    /// what the export says; or an option names something invalid.
    pub fn try_export(
        mut self,
        prefix: &str,
        target: impl Into<Export>,
    ) -> Result<Self, ExportError> {
        let mut export = target.into();
        let error = |reason| ExportError::new(prefix, reason);
        let parsed = Prefix::parse(prefix).map_err(|e| error(Reason::Invalid(e)))?;
        if parsed.host().is_some() {
            return Err(error(Reason::Host));
        }
        if self.exports.iter().any(|(p, _)| *p == parsed) {
            return Err(error(Reason::Duplicate));
        }
        export.check().map_err(error)?;
        export.label = Mount::named(&parsed.name());
        self.redirects |= export.internal;
        let at = self
            .exports
            .partition_point(|(p, _)| p.segments().len() >= parsed.segments().len());
        self.exports.insert(at, (parsed, Arc::new(export)));
        Ok(self)
    }

    inner_accessors!();

    /// The export for this request and the decoded segments below its prefix.
    fn find(&self, req: &Request) -> Option<(&Arc<Export>, Vec<String>)> {
        self.find_path(req.environ().path_info())
    }

    /// The export for PATH_INFO `path_info`, and the segments below it.
    fn find_path(&self, path_info: &str) -> Option<(&Arc<Export>, Vec<String>)> {
        let (len, export) = self
            .exports
            .iter()
            .find_map(|(prefix, export)| Some((prefix.match_len(path_info)?, export)))?;
        Some((export, path::segments(&path_info[len..]).ok()?))
    }
}

impl<A: App> App for SharedData<A> {
    // Not an `async fn`: a request for none of the exports (most requests to
    // a site's app) costs the inner app's future alone; one for an export
    // gets a boxed future of its own, as answering with a file takes room.
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        match self.find(&req) {
            None if !self.redirects => Either::Left(self.inner.call(req)),
            found => Either::Right(self.answer(found, req)),
        }
    }

    /// A packet for none of the exports goes on as a request would.
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        if self.redirects || self.find_path(packet.path_info()).is_some() {
            return Err(packet);
        }
        self.inner.call_packet(packet)
    }

    fn takes_packets(&self) -> bool {
        !self.redirects && self.inner.takes_packets()
    }
}

impl<A: App> SharedData<A> {
    /// A request for an export, or passed on to be redirected: each case
    /// boxed on its own, as large as it needs. Under a kilobyte, as a file's
    /// is, the box comes from the allocator's per-thread cache.
    fn answer<'a>(
        &'a self,
        found: Option<(&'a Arc<Export>, Vec<String>)>,
        req: Request,
    ) -> BoxFuture<'a, Response> {
        match found {
            Some((export, _)) if export.internal => {
                Box::pin(std::future::ready(StatusCode::NOT_FOUND.into_response()))
            }
            Some((export, rest)) => Box::pin(self.serve(export, rest, req)),
            None => Box::pin(self.pass_redirecting(req)),
        }
    }

    /// Passes `req` on; an answer with `X-Accel-Redirect: /path` is replaced
    /// by that file of an internal export, served for the request's method
    /// and conditions (ranges, validators), with the app's `Content-Type`,
    /// `Content-Disposition`, `Set-Cookie`, `Cache-Control` and `Expires`.
    async fn pass_redirecting(&self, req: Request) -> Response {
        let (method, headers) = (req.method().clone(), req.headers().clone());
        let res = self.inner.call(req).await;
        let Some(target) = res.headers().get(X_ACCEL_REDIRECT) else {
            return res;
        };
        let target = target
            .to_str()
            .ok()
            .and_then(|t| t.split('?').next()?.parse().ok());
        let mut file_req = Request::new(Body::default());
        *file_req.method_mut() = match method {
            Method::HEAD => Method::HEAD,
            _ => Method::GET,
        };
        *file_req.headers_mut() = headers;
        let found = target.and_then(|target| {
            *file_req.uri_mut() = target;
            self.find(&file_req).filter(|(export, _)| export.internal)
        });
        let served = match found {
            Some((export, rest)) => Arc::clone(export).serve(&file_req, rest).await,
            None => None,
        };
        let Some(mut file) = served else {
            tracing::warn!(target = ?res.headers().get(X_ACCEL_REDIRECT), "X-Accel-Redirect names no file of an internal export: 404");
            return StatusCode::NOT_FOUND.into_response();
        };
        let multipart = (file.headers().get(CONTENT_TYPE))
            .is_some_and(|t| t.as_bytes().starts_with(b"multipart/"));
        for name in [
            CONTENT_TYPE,
            CONTENT_DISPOSITION,
            SET_COOKIE,
            CACHE_CONTROL,
            EXPIRES,
        ] {
            if name == CONTENT_TYPE && multipart {
                continue;
            }
            let mut values = res.headers().get_all(&name).iter().peekable();
            if values.peek().is_some() {
                file.headers_mut().remove(&name);
                for value in values {
                    file.headers_mut().append(&name, value.clone());
                }
            }
        }
        file
    }

    /// Answers from `export`, or passes the request on when it has no such
    /// file. Not an `async fn`, which would keep a copy of the request.
    #[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
    fn serve<'a>(
        &'a self,
        export: &'a Arc<Export>,
        rest: Vec<String>,
        req: Request,
    ) -> impl Future<Output = Response> + Send + 'a {
        async move {
            if let Some(res) = Arc::clone(export).serve(&req, rest).await {
                export.label.answered();
                return res;
            }
            Notes::note_served(Served::Passed);
            self.inner.call(req).await
        }
    }
}

impl<A> fmt::Debug for SharedData<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefixes: Vec<String> = self.exports.iter().map(|(p, _)| p.name()).collect();
        f.debug_struct("SharedData")
            .field("exports", &prefixes)
            .finish_non_exhaustive()
    }
}
