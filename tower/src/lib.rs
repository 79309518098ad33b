//! stackway and the tower ecosystem, both ways: a stackway app as a tower
//! [`Service`] ([`IntoService::into_service`]), a tower service as a stackway
//! app ([`FromService`]), and any tower [`Layer`](tower_layer::Layer) around a
//! stackway app ([`TowerLayer`]), so axum routers, tonic services and
//! tower-http's layers mount and stack beside stackway's own.
//!
//! ```no_run
//! use stackway_middleware::Dispatcher;
//! use stackway_tower::{FromService, IntoService, TowerLayer};
//!
//! // An axum Router mounted by the Dispatcher, beside a stackway app.
//! let api = axum::Router::new().route("/users/{id}", axum::routing::get(|| async { "a user" }));
//! let site = Dispatcher::new(stackway::apps::hello).mount("/api", FromService::new(api));
//!
//! // A stackway app nested in axum.
//! let app = axum::Router::<()>::new().nest_service("/legacy", stackway::apps::demo.into_service());
//! ```
//!
//! # How the URI changes
//!
//! stackway never rewrites the URI: a mount moves the boundary between
//! SCRIPT_NAME and PATH_INFO. A tower service knows only the URI, so at the
//! boundary the mount is expressed as axum's `nest` expresses it: the URI is
//! cut to what lies below the mount, and the whole URI is kept in axum's
//! [`OriginalUri`] extension.
//!
//! | crossing | request `/api/users/7?x=1`, mounted at `/api` |
//! |---|---|
//! | stackway → tower ([`FromService`]) | URI `/users/7?x=1`; `OriginalUri` `/api/users/7?x=1` (kept when already set) |
//! | tower → stackway ([`AppService`]), with an `OriginalUri` ending in the URI's path | URI `/api/users/7?x=1`; SCRIPT_NAME `/api`, PATH_INFO `/users/7` |
//! | tower → stackway, no `OriginalUri` (hyper-util's server) | the URI as it is; SCRIPT_NAME empty |
//!
//! A round trip (a stackway app inside a tower layer inside a mount, or a
//! stackway app nested in an axum router mounted by a Dispatcher) arrives with
//! SCRIPT_NAME and PATH_INFO as if no tower code stood between. Everything
//! else in the request's extensions (the connection's addresses, what
//! ProxyFix found) crosses untouched.
//!
//! # Costs
//!
//! Bodies are never copied: a stackway [`Body`] crossing to tower and back is
//! the same value (no second box), and other bodies are wrapped once. A
//! request at the root crosses without touching its URI.

use std::any::Any;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use axum::extract::OriginalUri;
use bytes::Bytes;
use http::Uri;
use stackway::{App, Body, BoxError, IntoResponse, Request, RequestExt, Response};
use tower_service::Service;

/// The future an [`AppService`] returns.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Turns a stackway app into a tower service: [`into_service`](Self::into_service).
pub trait IntoService: App + Sized {
    /// The app as a tower [`Service`] for requests with any body whose
    /// chunks are [`Bytes`]: always ready, never failing (an app always
    /// answers), cheap to clone.
    fn into_service(self) -> AppService<Self> {
        AppService {
            app: Arc::new(self),
        }
    }
}

impl<A: App> IntoService for A {}

/// A stackway app as a tower [`Service`]; see [`IntoService::into_service`].
#[derive(Debug)]
pub struct AppService<A> {
    app: Arc<A>,
}

impl<A> Clone for AppService<A> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
        }
    }
}

impl<A, B> Service<http::Request<B>> for AppService<A>
where
    A: App,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let app = self.app.clone();
        let req = mount_from_original_uri(req.map(into_body));
        Box::pin(async move { Ok(app.call(req).await) })
    }
}

/// A tower service as a stackway app: cloned for each request (as axum does),
/// waited on until ready; its error becomes a 500 and a `tracing` event; its
/// response body, whatever its type, is streamed.
#[derive(Debug, Clone)]
pub struct FromService<S> {
    service: S,
}

impl<S> FromService<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Self { service }
    }
}

impl<S, B> App for FromService<S>
where
    S: Service<Request, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    async fn call(&self, req: Request) -> Response {
        let mut service = self.service.clone();
        let req = unmount_into_uri(req);
        let answered = match poll_fn(|cx| service.poll_ready(cx).map_err(Into::into)).await {
            Ok(()) => service.call(req).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        match answered {
            Ok(res) => res.map(into_body),
            Err(e) => {
                tracing::error!(error = %e, "the tower service failed; answered 500");
                http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// A tower [`Layer`](tower_layer::Layer) as a stackway layer, for
/// [`Builder::wrap`](stackway::Builder::wrap): the app is turned into a
/// service, the layer wraps it, and the result is an app again.
///
/// ```no_run
/// # use std::time::Duration;
/// use stackway_tower::TowerLayer;
/// use tower_http::compression::CompressionLayer;
///
/// let app = stackway::Builder::new()
///     .wrap(TowerLayer::new(CompressionLayer::new()))
///     .run(stackway::apps::hello);
/// ```
#[derive(Debug, Clone)]
pub struct TowerLayer<L> {
    layer: L,
}

impl<L> TowerLayer<L> {
    /// Wraps `layer`.
    pub fn new(layer: L) -> Self {
        Self { layer }
    }
}

impl<A, L, B> stackway::Layer<A> for TowerLayer<L>
where
    A: App,
    L: tower_layer::Layer<AppService<A>>,
    L::Service: Service<Request, Response = http::Response<B>> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Future: Send,
    <L::Service as Service<Request>>::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type App = FromService<L::Service>;

    fn layer(self, inner: A) -> Self::App {
        FromService::new(self.layer.layer(inner.into_service()))
    }
}

/// Any body as a stackway [`Body`]; a `Body` itself as it is, not boxed again.
fn into_body<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut body = Some(body);
    match (&mut body as &mut dyn Any).downcast_mut::<Option<Body>>() {
        Some(same) => same.take().expect("just put there"),
        None => Body::new(body.expect("not taken")),
    }
}

/// Crossing into tower: the URI becomes PATH_INFO and the query, and the
/// whole URI goes to `OriginalUri` unless an outer crossing put one there.
fn unmount_into_uri(mut req: Request) -> Request {
    let script_len = req.environ().script_name().len();
    if script_len == 0 {
        return req;
    }
    // PATH_INFO and the query follow SCRIPT_NAME in the URI: cut, not rebuilt.
    let whole = req.uri().path_and_query().map_or("", |pq| pq.as_str());
    let below = match &whole[script_len..] {
        "" => "/".parse(),
        rest if rest.starts_with('?') => format!("/{rest}").parse(),
        rest => rest.parse(),
    };
    let Ok(below) = below.map(|pq: http::uri::PathAndQuery| Uri::from(pq)) else {
        return req;
    };
    let original = std::mem::replace(req.uri_mut(), below);
    if req.extensions().get::<OriginalUri>().is_none() {
        req.extensions_mut().insert(OriginalUri(original));
    }
    req
}

/// Crossing back into stackway: when `OriginalUri` ends with the URI's path
/// (the part a `nest` left), the original URI is restored and what was cut
/// off becomes SCRIPT_NAME.
fn mount_from_original_uri(mut req: Request) -> Request {
    let Some(original) = req.extensions().get::<OriginalUri>() else {
        return req;
    };
    let (whole, below) = (original.path(), req.uri().path());
    // axum's nest gives `/` for the mount point itself (`/api` and `/api/`).
    let mount_len = match whole.strip_suffix(below) {
        Some(mount) if below.starts_with('/') || mount.is_empty() => mount.len(),
        _ if below == "/" => whole.trim_end_matches('/').len(),
        _ => return req,
    };
    if mount_len == 0 || original.query() != req.uri().query() {
        return req;
    }
    // Taken, not cloned: the URI is the original again, so the extension says
    // nothing more (a crossing further in puts it back).
    let OriginalUri(original) = req.extensions_mut().remove().expect("just seen");
    *req.uri_mut() = original;
    let already = req.environ().script_name().len();
    if mount_len > already {
        req.push_script_name(mount_len - already);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (OriginalUri, the URI a nest left) → (URI, SCRIPT_NAME, PATH_INFO)
    #[test]
    fn crossing_back_restores_the_mount() {
        for (original, below, uri, script, path) in [
            (
                "/api/users/7?x=1",
                "/users/7?x=1",
                "/api/users/7?x=1",
                "/api",
                "/users/7",
            ),
            ("/api", "/", "/api", "/api", ""),
            ("/api/", "/", "/api/", "/api", "/"),
            ("/a/b/c", "/c", "/a/b/c", "/a/b", "/c"),
            // Not nested (axum's own Router sets OriginalUri too): as it is.
            ("/users/7", "/users/7", "/users/7", "", "/users/7"),
            // Rewritten by something else: the URI the service was given stands.
            ("/api/users/7", "/other", "/other", "", "/other"),
            (
                "/api/users/7?x=1",
                "/users/7?x=2",
                "/users/7?x=2",
                "",
                "/users/7",
            ),
        ] {
            let mut req = http::Request::get(below).body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(OriginalUri(original.parse().unwrap()));
            let req = mount_from_original_uri(req);
            let env = req.environ();
            assert_eq!(
                (
                    req.uri().to_string().as_str(),
                    env.script_name(),
                    env.path_info()
                ),
                (uri, script, path),
                "{original} {below}"
            );
        }
    }

    /// (URI, SCRIPT_NAME length) → (URI given to tower, OriginalUri)
    #[test]
    fn crossing_into_tower_cuts_the_uri() {
        for (uri, mount, below, original) in [
            (
                "/api/users/7?x=1",
                4,
                "/users/7?x=1",
                Some("/api/users/7?x=1"),
            ),
            ("/api", 4, "/", Some("/api")),
            ("/api?x=1", 4, "/?x=1", Some("/api?x=1")),
            ("/api/", 4, "/", Some("/api/")),
            ("/users", 0, "/users", None),
        ] {
            let mut req = http::Request::get(uri).body(Body::empty()).unwrap();
            if mount > 0 {
                assert!(req.push_script_name(mount));
            }
            let req = unmount_into_uri(req);
            let kept = req.extensions().get::<OriginalUri>().map(|o| o.to_string());
            assert_eq!(
                (req.uri().to_string().as_str(), kept.as_deref()),
                (below, original),
                "{uri}"
            );
        }
    }
}

/// The README's examples, run as doctests here: they use every crate of the
/// workspace (axum and tower-http too), which this crate's tests have.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
