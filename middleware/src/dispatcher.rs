//! Mounts apps under URL prefixes, as Werkzeug's `DispatcherMiddleware` does:
//! the longest mounted prefix wins, and moves from PATH_INFO to SCRIPT_NAME.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, RequestExt, testing::Client};
//! use stackway_middleware::Dispatcher;
//!
//! let whereami = |req: Request| async move {
//!     let env = req.environ();
//!     format!("{} {}", env.script_name(), env.path_info())
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

use futures_util::future::Either;

use http::StatusCode;
use stackway::app::BoxFuture;
use stackway::environ::Packet;
use stackway::notes::Mount;
use stackway::{App, BoxApp, IntoResponse, Request, RequestExt, Response};

pub use crate::prefix::MountError;
use crate::prefix::{self, Prefix};

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

/// An app and its prefix as configured (its metrics label).
type Mounted = (BoxApp, &'static Mount);

/// One segment of the mount tree.
#[derive(Default)]
struct Node {
    /// The app mounted here, and its prefix as configured (its metrics label).
    app: Option<Mounted>,
    children: Children,
}

/// A node's children by decoded segment. Most nodes have a few, and comparing
/// a few names costs less than hashing one: a list up to [`FEW`], a hash map
/// past it.
enum Children {
    Few(Vec<(Box<str>, Node)>),
    /// foldhash, seeded per process: a lookup hashes each segment of every
    /// request, and SipHash cost as much as the rest of the walk. The keys are
    /// the operator's, so a client cannot fill a chain.
    Many(HashMap<Box<str>, Node, foldhash::fast::RandomState>),
}

/// The most children a node looks through in order.
const FEW: usize = 8;

impl Default for Children {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl Children {
    fn get(&self, segment: &str) -> Option<&Node> {
        match self {
            Self::Few(few) => position(few, segment).map(|i| &few[i].1),
            Self::Many(many) => many.get(segment),
        }
    }

    /// The child at `segment`, made if there is none.
    fn get_or_make(&mut self, segment: &str) -> &mut Node {
        if let Self::Few(few) = self
            && few.len() == FEW
            && position(few, segment).is_none()
        {
            *self = Self::Many(few.drain(..).collect());
        }
        match self {
            Self::Few(few) => {
                let i = position(few, segment).unwrap_or_else(|| {
                    few.push((segment.into(), Node::default()));
                    few.len() - 1
                });
                &mut few[i].1
            }
            Self::Many(many) => many.entry(segment.into()).or_default(),
        }
    }
}

/// Where `segment` is among a few children.
fn position(few: &[(Box<str>, Node)], segment: &str) -> Option<usize> {
    few.iter().position(|(name, _)| **name == *segment)
}

impl Dispatcher {
    /// A dispatcher that sends requests no mount matches to `default`.
    ///
    /// `Dispatcher::default()` answers those with 404 instead.
    pub fn new(default: impl App) -> Self {
        let mut dispatcher = Self::default();
        dispatcher.any.app = Some((BoxApp::new(default), Mount::named("/")));
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
    /// The prefix follows [the grammar](crate::prefix) that every mounting
    /// middleware shares: `/` then literal segments, or `http://HOST/...` for
    /// one host only; a trailing `/` is ignored, and `/` or `` mounts the
    /// default app.
    pub fn try_mount(mut self, prefix: &str, app: impl App) -> Result<Self, MountError> {
        let parsed = Prefix::parse(prefix).map_err(|e| MountError::invalid(prefix, e))?;
        let is_default = parsed.host().is_none() && parsed.is_root();
        if is_default {
            // The default given to `new` may be replaced by one mount at the root.
            if self.root_mounted {
                return Err(MountError::duplicate(prefix));
            }
            self.root_mounted = true;
        }
        let label = Mount::named(&parsed.name());
        let mut node = match parsed.host() {
            Some(host) => self.hosts.entry(host.to_owned()).or_default(),
            None => &mut self.any,
        };
        for segment in parsed.segments() {
            node = node.children.get_or_make(segment);
        }
        if node.app.is_some() && !is_default {
            return Err(MountError::duplicate(prefix));
        }
        node.app = Some((BoxApp::new(app), label));
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
    fn find(&self, req: &Request) -> Result<Option<(&Mounted, usize)>, DotSegment> {
        let path_info = req.environ().path_info();
        if !self.hosts.is_empty() {
            if let Some(node) = prefix::request_host(req).and_then(|host| self.hosts.get(&host)) {
                if let Some(found) = node.find(path_info)? {
                    return Ok(Some(found));
                }
            }
        }
        self.any.find(path_info)
    }
}

impl Node {
    /// Whether an app mounted here or below takes packets.
    fn takes_packets(&self) -> bool {
        self.app
            .as_ref()
            .is_some_and(|(app, _)| app.takes_packets())
            || match &self.children {
                Children::Few(few) => few.iter().any(|(_, node)| node.takes_packets()),
                Children::Many(many) => many.values().any(Self::takes_packets),
            }
    }

    /// Walks the tree along the segments of `path_info`.
    ///
    /// ```text
    /// mounts /a and /a/b;  path_info = /a/b%2Fc/d
    ///   segment "a"      → node /a    (an app: best so far, 2 bytes)
    ///   segment "b%2Fc"  → decoded "b/c": no such child, stop
    ///   → /a, and SCRIPT_NAME gains "/a"
    /// ```
    fn find(&self, path_info: &str) -> Result<Option<(&Mounted, usize)>, DotSegment> {
        let mut best = self.app.as_ref().map(|app| (app, 0));
        let mut node = Some(self);
        let mut consumed = 0;
        for raw in prefix::segments(path_info) {
            if prefix::is_dot_segment(raw) {
                return Err(DotSegment);
            }
            // A segment that does not decode matches no mount, nor does an
            // empty one (mounts have none): the root's `/` looks nothing up.
            node = node
                .filter(|_| !raw.is_empty())
                .and_then(|n| n.children.get(prefix::decode_segment(raw)?.as_ref()));
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

impl App for Dispatcher {
    // Not an `async fn`: the mount is found and the request handed to its app
    // before the future is made, so the future holds the app's call, not the
    // request beside it (a third of the size, boxed on every request when the
    // Dispatcher is itself mounted). Nor does it hold a `Response`: its own
    // answers are a status, made into one when polled, or a box, so that the
    // future is a few words that every wrapper moves in registers rather than
    // by `memcpy`.
    fn call(&self, mut req: Request) -> impl Future<Output = Response> + Send {
        let ((app, label), len) = match self.find(&req) {
            Err(DotSegment) => return Either::Left(status(StatusCode::BAD_REQUEST)),
            Ok(None) => return Either::Left(status(StatusCode::NOT_FOUND)),
            Ok(Some(found)) => found,
        };
        let mut redirect = None;
        if len > 0 {
            if self.redirect_slash && req.environ().path_info().len() == len {
                redirect = prefix::redirect_with_slash(&req).map(Box::new);
            }
            if redirect.is_none() {
                let moved = req.push_script_name(len);
                debug_assert!(moved, "mount segments are whole and non-empty");
            }
        }
        let label = *label;
        let answer = match redirect {
            Some(redirect) => Err(redirect),
            None => Ok(app.call(req)),
        };
        // Noted when polled, inside whatever `Metrics` scope polls it.
        Either::Right(async move {
            label.answered();
            match answer {
                Ok(called) => called.await,
                Err(redirect) => *redirect,
            }
        })
    }

    /// A packet goes to the mount its path finds, as a request would, for
    /// that app to take; any other (a host's mounts, no mount, a redirect)
    /// is given back, to be called as a request.
    fn call_packet(&self, mut packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        if !self.hosts.is_empty() {
            return Err(packet);
        }
        let ((app, label), len) = match self.any.find(packet.path_info()) {
            Ok(Some(found)) => found,
            _ => return Err(packet),
        };
        if len > 0 {
            if self.redirect_slash && packet.path_info().len() == len {
                return Err(packet);
            }
            let moved = packet.push_script_name(len);
            debug_assert!(moved, "mount segments are whole and non-empty");
        }
        let label = *label;
        let called = app.call_packet(packet)?;
        Ok(Box::pin(async move {
            label.answered();
            called.await
        }))
    }

    fn takes_packets(&self) -> bool {
        self.hosts.is_empty() && self.any.takes_packets()
    }
}

/// The Dispatcher's own answer, made when polled.
async fn status(status: StatusCode) -> Response {
    status.into_response()
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("hosts", &self.hosts.keys().collect::<Vec<_>>())
            .field("redirect_slash", &self.redirect_slash)
            .finish_non_exhaustive()
    }
}
