//! Mounts apps under URL prefixes, as Werkzeug's `DispatcherMiddleware` does:
//! the longest mounted prefix wins, and moves from PATH_INFO to SCRIPT_NAME.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, RequestExt, response, testing::Client};
//! use stackway_middleware::Dispatcher;
//!
//! let whereami = |req: Request| async move {
//!     let env = req.environ();
//!     response::text(format!("{} {}", env.script_name(), env.path_info()))
//! };
//! let app = Dispatcher::new(whereami).mount("/api", whereami).mount("/api/v2", whereami);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/api/users").await.assert_text("/api /users");
//! client.get("/api/v2/users").await.assert_text("/api/v2 /users");
//! client.get("/apiary").await.assert_text(" /apiary"); // the default app
//! # });
//! ```
//!
//! # How the path changes
//!
//! Mounts `/a`, `/a/b` and `/c/` (the trailing `/` is ignored), default app `D`:
//!
//! | request     | app | SCRIPT_NAME | PATH_INFO | why |
//! |-------------|-----|-------------|-----------|-----|
//! | `/a`        | A   | `/a`        | ``        | exactly the prefix: PATH_INFO is empty |
//! | `/a/`       | A   | `/a`        | `/`       | |
//! | `/a/x/y`    | A   | `/a`        | `/x/y`    | |
//! | `/ab`       | D   | ``          | `/ab`     | `/a` matches whole segments only |
//! | `/a/b/c`    | AB  | `/a/b`      | `/c`      | the longest prefix wins |
//! | `/a/bc`     | A   | `/a`        | `/bc`     | |
//! | `/c`, `/c/x`| C   | `/c`        | ``, `/x`  | Werkzeug's `/c/` matches only `/c/` |
//! | `/a//b`     | A   | `/a`        | `//b`     | slashes are not squeezed |
//! | `/a%2Fb`    | D   | ``          | `/a%2Fb`  | `%2F` is not a separator |
//! | `/x/../a`   | —   |             |           | 400: dot segments are refused |
//! | `/`         | D   | ``          | `/`       | a mount at `/` or `` is the default |
//!
//! Segments are compared percent-decoded, so a mount at `/café` (or `/caf%C3%A9`)
//! answers `/caf%C3%A9/x`, while SCRIPT_NAME and PATH_INFO stay raw slices of the
//! request's path (see [`stackway::environ`]). Dispatchers nest: an app mounted
//! at `/b` in a dispatcher mounted at `/a` sees SCRIPT_NAME `/a/b`.
//!
//! **Differences from Werkzeug, on purpose.** Werkzeug's mount `/c/` only ever
//! matches `/c/` itself, and its mount `/` only matches `/`: here both are
//! normalised. Werkzeug passes `/x/%2e%2e/a` on with PATH_INFO `/x/../a`; here a
//! `.` or `..` segment (plain or encoded) in PATH_INFO gets 400, since a
//! client that normalises it would mean another mount than the one it would
//! reach. Browsers never send dot segments.
//!
//! **Hosts**, as Rack's `URLMap` does: a mount `http://admin.example.com/x`
//! matches only requests for that host (case-insensitive, port ignored), and
//! host mounts are tried before the others.
//!
//! # When not to use this
//!
//! When the apps are separate processes, or need separate limits, TLS or
//! logs, mount them in the reverse proxy in front instead (nginx `location`
//! blocks with `proxy_pass`), and let each see its own prefix through
//! `X-Forwarded-Prefix`.

use std::collections::HashMap;
use std::fmt;

use http::header::{HOST, LOCATION};
use http::{HeaderValue, StatusCode};
use percent_encoding::percent_decode_str;
use stackway::{App, BoxApp, Request, RequestExt, Response, response};

/// Mounts apps under URL prefixes; see the [module docs](self).
#[doc(alias = "mount")]
#[doc(alias = "URLMap")]
#[doc(alias = "nest")]
#[derive(Default)]
pub struct Dispatcher {
    /// Mounts without a host; its root app is the default app.
    any: Node,
    /// Mounts for one host each, by lower-case host name.
    hosts: HashMap<String, Node>,
    /// Whether `/` was mounted (once allowed, replacing the default).
    root_mounted: bool,
    redirect_slash: bool,
}

/// One segment of the mount tree.
#[derive(Default)]
struct Node {
    app: Option<BoxApp>,
    children: HashMap<Box<str>, Self>,
}

impl Dispatcher {
    /// A dispatcher that sends requests no mount matches to `default`.
    ///
    /// `Dispatcher::default()` answers those with 404 instead.
    pub fn new(default: impl App) -> Self {
        let mut dispatcher = Self::default();
        dispatcher.any.app = Some(BoxApp::new(default));
        dispatcher
    }

    /// Mounts `app` at `prefix`.
    ///
    /// # Panics
    ///
    /// If the prefix is invalid or already mounted; [`try_mount`](Self::try_mount)
    /// returns the error instead.
    #[track_caller]
    pub fn mount(self, prefix: &str, app: impl App) -> Self {
        self.try_mount(prefix, app)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts `app` at `prefix`, or says why it cannot.
    ///
    /// A prefix starts with `/` (or is `http://HOST/...` for one host only); a
    /// trailing `/` is ignored, and `/` or `` mounts the default app. Segments
    /// may be percent-encoded; they may not be empty, `.` or `..`, nor use
    /// wildcard syntax (`*`, `{`, `}`, a leading `:`).
    pub fn try_mount(mut self, prefix: &str, app: impl App) -> Result<Self, MountError> {
        let error = |reason| MountError {
            prefix: prefix.to_owned(),
            reason,
        };
        let (host, segments) = parse_prefix(prefix).map_err(error)?;
        let is_default = host.is_none() && segments.is_empty();
        if is_default {
            // The default given to `new` may be replaced by one mount at the root.
            if self.root_mounted {
                return Err(error(Reason::Duplicate));
            }
            self.root_mounted = true;
        }
        let mut node = match host {
            Some(host) => self.hosts.entry(host).or_default(),
            None => &mut self.any,
        };
        for segment in segments {
            node = node.children.entry(segment.into()).or_default();
        }
        if node.app.is_some() && !is_default {
            return Err(error(Reason::Duplicate));
        }
        node.app = Some(BoxApp::new(app));
        Ok(self)
    }

    /// Answers a request for exactly a mounted prefix (`/docs`) with a redirect
    /// to it with a slash (`/docs/`), keeping the query; the app then always
    /// sees a PATH_INFO that starts with `/`. Off by default.
    pub fn redirect_slash(mut self, on: bool) -> Self {
        self.redirect_slash = on;
        self
    }

    /// The app and the bytes of PATH_INFO its prefix covers, or `Err` for a dot
    /// segment.
    fn find(&self, req: &Request) -> Result<Option<(&BoxApp, usize)>, DotSegment> {
        let path_info = req.environ().path_info();
        if !self.hosts.is_empty() {
            if let Some(node) = request_host(req).and_then(|host| self.hosts.get(&host)) {
                if let Some(found) = node.find(path_info)? {
                    return Ok(Some(found));
                }
            }
        }
        self.any.find(path_info)
    }
}

impl Node {
    /// Walks the tree along the segments of `path_info`.
    ///
    /// ```text
    /// mounts /a and /a/b;  path_info = /a/b%2Fc/d
    ///   segment "a"      → node /a    (an app: best so far, 2 bytes)
    ///   segment "b%2Fc"  → decoded "b/c": no such child, stop
    ///   → /a, and SCRIPT_NAME gains "/a"
    /// ```
    fn find(&self, path_info: &str) -> Result<Option<(&BoxApp, usize)>, DotSegment> {
        let mut best = self.app.as_ref().map(|app| (app, 0));
        let mut node = Some(self);
        let mut consumed = 0;
        for raw in path_info.split('/').skip(1) {
            let segment = percent_decode_str(raw).decode_utf8_lossy();
            if segment == "." || segment == ".." {
                return Err(DotSegment);
            }
            node = node.and_then(|n| n.children.get(&*segment));
            if let Some(n) = node {
                consumed += 1 + raw.len();
                if let Some(app) = &n.app {
                    best = Some((app, consumed));
                }
            }
        }
        Ok(best)
    }
}

/// A `.` or `..` segment in PATH_INFO.
struct DotSegment;

/// The host the request is for, lower-case and without a port.
fn request_host(req: &Request) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(authority) => authority.host().to_owned(),
        None => {
            let host = req.headers().get(HOST)?.to_str().ok()?;
            host.parse::<http::uri::Authority>().ok()?.host().to_owned()
        }
    };
    Some(authority.to_ascii_lowercase())
}

impl App for Dispatcher {
    async fn call(&self, mut req: Request) -> Response {
        let (app, len) = match self.find(&req) {
            Err(DotSegment) => return response::status(StatusCode::BAD_REQUEST),
            Ok(None) => return response::status(StatusCode::NOT_FOUND),
            Ok(Some(found)) => found,
        };
        if len > 0 {
            if self.redirect_slash && req.environ().path_info().len() == len {
                return redirect_with_slash(&req);
            }
            let moved = req.push_script_name(len);
            debug_assert!(moved, "mount segments are whole and non-empty");
        }
        app.call(req).await
    }
}

/// `308` to the request's own path with a `/` added, query kept.
fn redirect_with_slash(req: &Request) -> Response {
    let mut location = format!("{}/", req.uri().path());
    if let Some(query) = req.uri().query() {
        location = format!("{location}?{query}");
    }
    let mut res = response::status(StatusCode::PERMANENT_REDIRECT);
    // The path came from a valid URI, so it is a valid header value.
    if let Ok(location) = HeaderValue::try_from(location) {
        res.headers_mut().insert(LOCATION, location);
    }
    res
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("hosts", &self.hosts.keys().collect::<Vec<_>>())
            .field("redirect_slash", &self.redirect_slash)
            .finish_non_exhaustive()
    }
}

/// Splits a mount prefix into its host (if any) and its decoded segments.
///
/// ```text
/// "/api/v2/"              → (None, ["api", "v2"])
/// "/caf%C3%A9"            → (None, ["café"])
/// "http://Admin.io:80/x"  → (Some("admin.io"), ["x"])
/// "/" or ""               → (None, [])          the root
/// ```
fn parse_prefix(prefix: &str) -> Result<(Option<String>, Vec<String>), Reason> {
    let (host, path) = match prefix
        .strip_prefix("http://")
        .or_else(|| prefix.strip_prefix("https://"))
    {
        Some(rest) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority: http::uri::Authority = authority.parse().map_err(|_| Reason::Host)?;
            (Some(authority.host().to_ascii_lowercase()), path)
        }
        None => (None, prefix),
    };
    if !path.is_empty() && !path.starts_with('/') {
        return Err(Reason::Slash);
    }
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Ok((host, Vec::new()));
    }
    let mut segments = Vec::new();
    for raw in path[1..].split('/') {
        if raw.is_empty() {
            return Err(Reason::Empty);
        }
        if raw.contains(['*', '{', '}']) || raw.starts_with(':') {
            return Err(Reason::Wildcard);
        }
        let segment = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Reason::Encoding)?;
        if segment == "." || segment == ".." {
            return Err(Reason::Dot);
        }
        segments.push(segment.into_owned());
    }
    Ok((host, segments))
}

/// Why a prefix cannot be mounted; its `Display` is a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    prefix: String,
    reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Slash,
    Empty,
    Wildcard,
    Dot,
    Encoding,
    Host,
    Duplicate,
}

impl MountError {
    /// The prefix that was refused.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the prefix was refused because it is mounted already.
    pub fn is_duplicate(&self) -> bool {
        self.reason == Reason::Duplicate
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            Reason::Slash => "a prefix must start with /",
            Reason::Empty => "a prefix may not have empty segments (//)",
            Reason::Wildcard => "a prefix is literal: *, {, } and a leading : are not allowed",
            Reason::Dot => "a prefix may not have . or .. segments",
            Reason::Encoding => "its percent-encoding does not decode to UTF-8",
            Reason::Host => "the host in it is not valid",
            Reason::Duplicate => "something is mounted there already",
        };
        write!(f, "cannot mount at {:?}: {why}", self.prefix)
    }
}

impl std::error::Error for MountError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised_or_refused() {
        let ok = |p: &str| parse_prefix(p).unwrap();
        assert_eq!(
            ok("/api/v2/"),
            (None, vec!["api".to_owned(), "v2".to_owned()])
        );
        assert_eq!(ok("/caf%C3%A9"), (None, vec!["café".to_owned()]));
        assert_eq!(ok("/a%2Fb"), (None, vec!["a/b".to_owned()]));
        assert_eq!(
            ok("http://Admin.Example.com:8080/x/"),
            (Some("admin.example.com".to_owned()), vec!["x".to_owned()])
        );
        assert_eq!(
            ok("https://admin.example.com"),
            (Some("admin.example.com".to_owned()), vec![])
        );
        assert_eq!(ok("/"), (None, vec![]));
        assert_eq!(ok(""), (None, vec![]));
        let err = |p: &str| parse_prefix(p).unwrap_err();
        assert_eq!(err("api"), Reason::Slash);
        assert_eq!(err("/a//b"), Reason::Empty);
        assert_eq!(err("//"), Reason::Empty);
        assert_eq!(err("/files/*path"), Reason::Wildcard);
        assert_eq!(err("/users/{id}"), Reason::Wildcard);
        assert_eq!(err("/users/:id"), Reason::Wildcard);
        assert_eq!(err("/a/../b"), Reason::Dot);
        assert_eq!(err("/a/%2e"), Reason::Dot);
        assert_eq!(err("/%FF"), Reason::Encoding);
        assert_eq!(err("http://bad host/x"), Reason::Host);
    }
}
