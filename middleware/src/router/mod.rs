//! Routes requests by path pattern and method to handlers, on `matchit`: the
//! app that answers "which handler owns this path", as Werkzeug's
//! `routing.Map` and axum's `Router` do, mounted like any other app.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, testing::Client};
//! use stackway_middleware::router::{RouteParams, Router, get};
//!
//! let show = |req: Request| async move { format!("user {}", req.param("id").unwrap()) };
//! let update = |_req: Request| async { "updated" };
//! let file = |req: Request| async move { req.param("path").unwrap().to_owned() };
//! let app = Router::new()
//!     .route("/users/{id}", get(show).put(update))
//!     .route("/files/{*path}", get(file));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/users/42").await.assert_text("user 42");
//! client.put("/users/42").await.assert_text("updated");
//! client.delete("/users/42").await.assert_status(405).assert_header("allow", "GET, HEAD, PUT, OPTIONS");
//! client.get("/files/a%2Fb/c.txt").await.assert_text("a/b/c.txt");
//! # });
//! ```
//!
//! # Paths and parameters
//!
//! Patterns are matchit's (`{name}` for one segment, `{*name}` for the rest)
//! and are matched against PATH_INFO, so a Router mounted at `/api` routes
//! `/users/1` when the request was for `/api/users/1` (and `/` for `/api`
//! itself, whose PATH_INFO is empty). The path is compared
//! decoded, except that `%2F` (and `%25`) stay as they are: an encoded slash
//! never becomes a separator. Parameters are percent-decoded exactly once:
//!
//! | pattern | request path | parameter |
//! |---|---|---|
//! | `/users/{id}` | `/users/42` | `id` = `42` |
//! | `/users/{id}` | `/users/a%2Fb` | `id` = `a/b` (one segment) |
//! | `/users/{id}` | `/users/caf%C3%A9` | `id` = `café` |
//! | `/files/{*path}` | `/files/x/y%20z` | `path` = `x/y z` |
//! | `/café` | `/caf%C3%A9` | (matches) |
//!
//! # Methods
//!
//! `HEAD` is answered by the `GET` handler (without its body) unless a `HEAD`
//! handler exists; a path that matches with another method gets 405 with
//! `Allow`, and `OPTIONS` without a handler 204 with `Allow`. A path that
//! matches nothing goes to the [fallback](Router::fallback) (404 unless set).
//!
//! A path segment whose escapes do not decode to UTF-8 matches no literal
//! segment (a parameter gets it decoded lossily), and a request with a `.` or
//! `..` segment, plain or encoded, gets 400, as from the Dispatcher.
//!
//! # Mounting
//!
//! [`Router::mount`] gives a prefix to an app, as the Dispatcher does, with
//! [the same grammar](crate::prefix) and the same answers: the matched part
//! moves from PATH_INFO to SCRIPT_NAME, so a Dispatcher, a SharedData or
//! another Router inside sees a correct environ, and observers see the mount
//! that answered ([`stackway::notes::Mount`]).

mod method;
mod path;

use std::collections::HashMap;
use std::fmt;

use http::StatusCode;
use stackway::notes::Mount;
use stackway::{App, BoxApp, IntoResponse, Layer, Request, RequestExt, Response};

use self::method::dispatch;
pub use self::method::{MethodRouter, any, delete, get, head, on, options, patch, post, put};
use self::path::{decode_param, normalise_path, normalise_pattern};
use crate::prefix::{self, MountError, Prefix};

/// Routes requests to handlers by path pattern and method; see the
/// [module docs](self).
#[doc(alias = "Map")]
#[doc(alias = "routing")]
pub struct Router {
    paths: matchit::Router<usize>,
    /// What each inserted pattern leads to, by the index matchit stores.
    targets: Vec<Target>,
    /// Each pattern as given, to merge methods into one route.
    patterns: HashMap<String, usize>,
    fallback: Option<BoxApp>,
    /// The 404 when there is no fallback, once a [`layer`](Router::layer)
    /// wraps it (it is no fallback: merging keeps the other's).
    not_found: Option<BoxApp>,
    redirect_slash: bool,
}

enum Target {
    Methods(MethodRouter),
    /// An app mounted at a prefix, and the name observers know it by.
    Mount(BoxApp, Prefix, &'static Mount),
}

/// Why a route could not be added; `Display` is a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pattern: String,
    why: String,
}

impl RouteError {
    /// The pattern that was refused.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot route {:?}: {}", self.pattern, self.why)
    }
}

impl std::error::Error for RouteError {}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with no routes, answering 404.
    pub fn new() -> Self {
        Self {
            paths: matchit::Router::new(),
            targets: Vec::new(),
            patterns: HashMap::new(),
            fallback: None,
            not_found: None,
            redirect_slash: false,
        }
    }

    /// Routes `pattern` to the handlers in `methods`.
    ///
    /// # Panics
    ///
    /// If the pattern is invalid or conflicts with another;
    /// [`try_route`](Self::try_route) returns the error instead.
    #[track_caller]
    pub fn route(self, pattern: &str, methods: MethodRouter) -> Self {
        self.try_route(pattern, methods)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Routes `pattern` to the handlers in `methods`, or says why it cannot:
    /// the pattern is empty or does not start with `/`, is not valid for
    /// matchit, cannot be told apart from a route already there, or routes a
    /// method that is routed there already. The same pattern given again adds
    /// its methods.
    pub fn try_route(mut self, pattern: &str, methods: MethodRouter) -> Result<Self, RouteError> {
        let error = |why: String| RouteError {
            pattern: pattern.to_owned(),
            why,
        };
        let normal = normalise_pattern(pattern).map_err(|why| error(why.to_owned()))?;
        if let Some(&at) = self.patterns.get(&normal) {
            return match &mut self.targets[at] {
                Target::Methods(existing) => existing.merge(methods).map(|()| self).map_err(error),
                Target::Mount(..) => Err(error("an app is mounted there".to_owned())),
            };
        }
        self.insert(&normal, Target::Methods(methods))
            .map_err(error)?;
        Ok(self)
    }

    /// Mounts `app` (another Router, a Dispatcher, any app) at `prefix`: it
    /// answers the prefix and everything below,
    /// with the prefix moved from PATH_INFO to SCRIPT_NAME, as the
    /// [`Dispatcher`](crate::Dispatcher) does.
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route); [`try_mount`](Self::try_mount) returns the error.
    #[doc(alias = "nest")]
    #[doc(alias = "nest_service")]
    #[track_caller]
    pub fn mount(self, prefix: &str, app: impl App) -> Self {
        self.try_mount(prefix, app)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Mounts `app` at `prefix`, or says why it cannot: the prefix breaks
    /// [the grammar](crate::prefix) every mount shares (refused with the
    /// Dispatcher's sentence), names a host, or cannot be told apart from a
    /// route or mount already there.
    pub fn try_mount(mut self, prefix: &str, app: impl App) -> Result<Self, MountError> {
        let parsed = Prefix::parse(prefix).map_err(|e| MountError::invalid(prefix, e))?;
        if parsed.host().is_some() {
            return Err(MountError::unsupported(
                prefix,
                "a Router's mounts are not per host: mount the Router under the host with a Dispatcher",
            ));
        }
        // The prefix as a matchit pattern, in the form paths are matched in.
        let base: String = parsed
            .segments()
            .iter()
            .map(|segment| format!("/{}", segment.replace('%', "%25").replace('/', "%2F")))
            .collect();
        let label = Mount::named(&parsed.name());
        let app = BoxApp::new(app);
        let rest = format!("{base}/{{*{REST}}}");
        let patterns = [base.clone(), format!("{base}/"), rest];
        for pattern in patterns.iter().filter(|p| !p.is_empty()) {
            let target = Target::Mount(app.clone(), parsed.clone(), label);
            self.insert(pattern, target)
                .map_err(|why| MountError::taken(prefix, why))?;
        }
        if base.is_empty() {
            // A mount at the root also answers the empty PATH_INFO.
            self.fallback.get_or_insert_with(|| app.clone());
        }
        Ok(self)
    }

    fn insert(&mut self, pattern: &str, target: Target) -> Result<(), String> {
        let at = self.targets.len();
        self.paths.insert(pattern, at).map_err(|e| match e {
            matchit::InsertError::Conflict { with } => {
                format!("it cannot be told apart from {with:?}")
            }
            other => other.to_string().to_lowercase(),
        })?;
        self.targets.push(target);
        self.patterns.insert(pattern.to_owned(), at);
        Ok(())
    }

    /// Answers requests that match no route with `app` instead of 404.
    pub fn fallback(mut self, app: impl App) -> Self {
        self.fallback = Some(BoxApp::new(app));
        self
    }

    /// Takes in every route, mount and the fallback of `other` (axum's
    /// `merge`): a pattern both route gets the methods of both.
    ///
    /// # Panics
    ///
    /// As [`try_merge`](Self::try_merge) fails.
    #[track_caller]
    pub fn merge(self, other: Self) -> Self {
        self.try_merge(other).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Takes in every route, mount and the fallback of `other`, or says why
    /// it cannot: a method both route at one pattern, a pattern one routes
    /// and the other mounts at, patterns that cannot be told apart, or a
    /// fallback in both.
    pub fn try_merge(mut self, other: Self) -> Result<Self, RouteError> {
        let Self {
            patterns,
            targets,
            fallback,
            ..
        } = other;
        let mut targets: Vec<Option<Target>> = targets.into_iter().map(Some).collect();
        let mut patterns: Vec<(String, usize)> = patterns.into_iter().collect();
        patterns.sort();
        for (pattern, at) in patterns {
            let error = |why: String| RouteError {
                pattern: pattern.clone(),
                why,
            };
            let target = targets[at].take().expect("one pattern per target");
            match (
                self.patterns.get(&pattern).map(|&at| &mut self.targets[at]),
                target,
            ) {
                (Some(Target::Methods(mine)), Target::Methods(theirs)) => {
                    mine.merge(theirs).map_err(error)?;
                }
                (Some(_), _) => return Err(error("both routers use it".to_owned())),
                (None, target) => self.insert(&pattern, target).map_err(error)?,
            }
        }
        if let Some(fallback) = fallback {
            if self.fallback.is_some() {
                return Err(RouteError {
                    pattern: "(fallback)".to_owned(),
                    why: "both routers have a fallback".to_owned(),
                });
            }
            self.fallback = Some(fallback);
        }
        Ok(self)
    }

    /// Applies `layer` to every route, mount and the fallback (404 when none
    /// was given) added so far, as axum's `layer`: the middleware sees every
    /// request the Router answers but a slash redirect.
    #[allow(clippy::needless_pass_by_value)] // cloned per route; by value as every builder takes it
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxApp> + Clone,
    {
        let last = match &mut self.fallback {
            Some(fallback) => fallback,
            None => self.not_found.get_or_insert_with(|| {
                BoxApp::new(|_req: Request| async { StatusCode::NOT_FOUND })
            }),
        };
        *last = BoxApp::new(layer.clone().layer(last.clone()));
        self.route_layer(layer)
    }

    /// Applies `layer` to every route and mount added so far (axum's
    /// `route_layer`): middleware that runs only for matched routes.
    #[allow(clippy::needless_pass_by_value)] // cloned per route; by value as every builder takes it
    pub fn route_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxApp> + Clone,
    {
        let wrap = |app: &mut BoxApp| *app = BoxApp::new(layer.clone().layer(app.clone()));
        for target in &mut self.targets {
            match target {
                Target::Methods(methods) => {
                    methods.handlers.iter_mut().for_each(|(_, app)| wrap(app));
                    methods.any.iter_mut().for_each(wrap);
                }
                Target::Mount(app, ..) => wrap(app),
            }
        }
        self
    }

    /// When a path matches nothing but would with a trailing `/` added or
    /// removed, answers 308 to that path (built from SCRIPT_NAME, so right
    /// under any mount), query kept. Off by default.
    pub fn redirect_slash(mut self, on: bool) -> Self {
        self.redirect_slash = on;
        self
    }

    /// The other form of `path` (with or without its trailing slash), if a
    /// route answers it.
    fn slash_twin(&self, path: &str) -> Option<String> {
        let twin = match path.strip_suffix('/') {
            Some("") | None => format!("{path}/"),
            Some(without) => without.to_owned(),
        };
        self.paths.at(&twin).is_ok().then_some(twin)
    }
}

/// The name under which a mount's catch-all holds the rest of the path.
const REST: &str = "__stackway_rest";

/// Parameters the Router found in the request's path, decoded once.
#[derive(Debug, Clone, Default)]
struct Params(Vec<(String, String)>);

/// Reading the parameters a [`Router`] matched; implemented for requests.
pub trait RouteParams {
    /// The parameter `name`, percent-decoded once (`%2F` gives `/`).
    fn param(&self, name: &str) -> Option<&str>;

    /// Every parameter, in the order of the pattern, outer routers' first.
    fn params(&self) -> &[(String, String)];
}

impl<B> RouteParams for http::Request<B> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params()
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn params(&self) -> &[(String, String)] {
        self.extensions()
            .get::<Params>()
            .map_or(&[], |p| p.0.as_slice())
    }
}

impl App for Router {
    // Not an `async fn`, which would keep a copy of the request beside the
    // one it changes: the future is boxed on every request (a mount's), and
    // under a kilobyte the box comes from the allocator's per-thread cache.
    #[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
    fn call(&self, mut req: Request) -> impl Future<Output = Response> + Send {
        async move {
            // What the match needs is read while the path is borrowed; the request
            // changes (parameters, SCRIPT_NAME) only after.
            let found = {
                let env = req.environ();
                if prefix::segments(env.path_info()).any(prefix::is_dot_segment) {
                    return StatusCode::BAD_REQUEST.into_response();
                }
                // A router mounted at `/api` asked for `/api` itself routes `/`.
                let raw = match env.path_info() {
                    "" => "/",
                    raw => raw,
                };
                let path = normalise_path(raw);
                self.paths.at(&path).ok().and_then(|matched| {
                    let target = *matched.value;
                    let params: Vec<(String, String)> = matched
                        .params
                        .iter()
                        .filter(|(name, _)| *name != REST)
                        .map(|(name, value)| (name.to_owned(), decode_param(value)))
                        .collect();
                    let moved = match &self.targets[target] {
                        Target::Mount(_, prefix, _) => prefix.match_len(env.path_info())?,
                        Target::Methods(_) => 0,
                    };
                    let exact = moved > 0 && moved == env.path_info().len();
                    Some((target, params, moved, exact))
                })
            };
            let Some((target, params, moved, exact)) = found else {
                // Boxed: a miss's future is not room in every request's.
                return Box::pin(self.miss(req)).await;
            };
            if !params.is_empty() {
                let all = req.extensions_mut().get_or_insert_default::<Params>();
                all.0.extend(params);
            }
            match &self.targets[target] {
                Target::Mount(app, _, label) => {
                    label.answered();
                    if exact && self.redirect_slash {
                        if let Some(redirect) = prefix::redirect_with_slash(&req) {
                            return redirect;
                        }
                    }
                    if moved > 0 {
                        let pushed = req.push_script_name(moved);
                        debug_assert!(pushed, "mount prefixes are whole segments");
                    }
                    app.call(req).await
                }
                Target::Methods(methods) => dispatch(methods, req).await,
            }
        }
    }
}

impl Router {
    /// No route matched: a slash redirect, the fallback, or 404.
    async fn miss(&self, req: Request) -> Response {
        let env = req.environ();
        let raw = env.path_info();
        if self.redirect_slash && !raw.is_empty() && self.slash_twin(&normalise_path(raw)).is_some()
        {
            let twin = match raw.strip_suffix('/') {
                Some(without) => without.to_owned(),
                None => format!("{raw}/"),
            };
            if let Some(redirect) = prefix::redirect_to(&req, &twin) {
                return redirect;
            }
        }
        match self.fallback.as_ref().or(self.not_found.as_ref()) {
            Some(app) => app.call(req).await,
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut patterns: Vec<&String> = self.patterns.keys().collect();
        patterns.sort();
        f.debug_struct("Router")
            .field("routes", &patterns)
            .field("redirect_slash", &self.redirect_slash)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_checked() {
        let err = |p: &str| {
            Router::new()
                .try_route(p, any(stackway::apps::hello))
                .unwrap_err()
                .to_string()
        };
        assert!(err("").contains("may not be empty"));
        assert!(err("users").contains("starts with /"));
        assert!(err("/{id").contains("valid name"), "{}", err("/{id"));
        let conflict = Router::new()
            .route("/users/{id}", get(stackway::apps::hello))
            .try_route("/users/{name}", get(stackway::apps::hello))
            .unwrap_err();
        assert!(
            conflict.to_string().contains("cannot be told apart"),
            "{conflict}"
        );
        let twice = Router::new()
            .route("/x", get(stackway::apps::hello))
            .try_route("/x", get(stackway::apps::hello))
            .unwrap_err();
        assert!(
            twice.to_string().contains("GET is routed there already"),
            "{twice}"
        );
    }
}
