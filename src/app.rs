//! The one callable interface: [`App`], its type-erased form [`BoxApp`], and the
//! ways to stack middleware ([`Builder`], [`Layer`], [`from_fn`]).
//!
//! # Example
//!
//! ```
//! use stackway::http::StatusCode;
//! use stackway::{App, Builder, IntoResponse, Request, Response, from_fn, testing::Client};
//!
//! /// A middleware: a struct that holds the app it wraps, and is itself an app.
//! struct Server<A>(A);
//!
//! impl<A: App> App for Server<A> {
//!     async fn call(&self, req: Request) -> Response {
//!         let mut res = self.0.call(req).await;
//!         res.headers_mut().insert("server", "stackway".parse().unwrap());
//!         res
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let app = Builder::new()
//!     .wrap(Server)
//!     .wrap(from_fn(|req: Request, next| async move {
//!         if req.uri().path() == "/secret" {
//!             return StatusCode::FORBIDDEN.into_response();
//!         }
//!         next.run(req).await
//!     }))
//!     .run(stackway::apps::hello);
//!
//! let client = Client::new(app);
//! client.get("/you").await.assert_status(200).assert_header("server", "stackway");
//! client.get("/secret").await.assert_status(403).assert_header("server", "stackway");
//! # });
//! ```
//!
//! # Order
//!
//! A stack is an onion. The layer written first is the outermost: it sees the
//! request first and the response last.
//!
//! ```text
//! Builder::new().wrap(A).wrap(B).run(app)   ==   A::new(B::new(app))
//!
//!         request ──▶ A ──▶ B ──▶ app
//!        response ◀── A ◀── B ◀──┘
//! ```
//!
//! This is the order of Rack's `Builder` (first `use` is outermost) and of tower's
//! `ServiceBuilder`; every stacking API in stackway keeps it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Body;
use crate::environ::Packet;

/// A request, as every app receives it.
pub type Request = http::Request<Body>;

/// A response, as every app answers.
pub type Response = http::Response<Body>;

/// An application, and so also a middleware: something that answers a request.
///
/// Apps are called through `&self`, may be shared by any number of connections,
/// and never fail: errors are responses (a 404, a 500), and a panic becomes a 500
/// at the server's edge. There is no readiness step.
///
/// Plain async functions and closures taking a [`Request`] and returning a
/// [`Response`] (or anything [`IntoResponse`](crate::IntoResponse)) are apps:
///
/// ```
/// use stackway::{Request, Response, IntoResponse};
///
/// async fn index(_req: Request) -> Response {
///     "home".into_response()
/// }
/// fn is_app(_: impl stackway::App) {}
/// is_app(index);
/// is_app(|req: Request| async move { req.uri().path().to_owned() });
/// ```
///
/// A middleware is a struct that holds its inner app; see the
/// [module docs](crate::app) for one written out and for how stacks are ordered.
pub trait App: Send + Sync + 'static {
    /// Answers one request.
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send;

    /// Answers a request that came as a uwsgi packet without a body, from
    /// the packet's variables, where the app has no use for the
    /// [`Request`] the server would make of them: a WSGI app, which makes
    /// its environ from them as uWSGI does, and a middleware that only
    /// passes the request on to one (the Dispatcher choosing a mount) or
    /// observes it (an access log, metrics). Such a middleware notes or
    /// counts the packet only once the app it wraps has taken it: one given
    /// back comes again, as its request, to `call`.
    ///
    /// `Err` gives the packet back, and the request is made of it and
    /// [`call`](Self::call)ed instead: what every other app does, by
    /// default. An app that answers here must answer as its `call` would
    /// for that request; [`Packet`]'s views are those of the request's
    /// [`Environ`](crate::Environ).
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        Err(packet)
    }

    /// Whether [`call_packet`](Self::call_packet) may take a packet: `true`
    /// for an app that overrides it (for a middleware, as its app says), so
    /// that a uwsgi listener serving it reads packets for it as they are.
    /// `false` by default: the server then makes each request of its packet
    /// at once.
    fn takes_packets(&self) -> bool {
        false
    }
}

/// The future a [`BoxApp`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`App`], implemented for every app.
trait DynApp: Send + Sync + 'static {
    fn call_boxed(&self, req: Request) -> BoxFuture<'_, Response>;

    fn call_packet_dyn(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>>;

    fn takes_packets_dyn(&self) -> bool;
}

impl<A: App> DynApp for A {
    fn call_boxed(&self, req: Request) -> BoxFuture<'_, Response> {
        Box::pin(self.call(req))
    }

    fn call_packet_dyn(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        self.call_packet(packet)
    }

    fn takes_packets_dyn(&self) -> bool {
        self.takes_packets()
    }
}

/// A type-erased, cheaply clonable app, for tables of apps of different types.
///
/// Cloning shares the app (an [`Arc`]). Each call costs one boxed future.
///
/// ```
/// use stackway::{BoxApp, Request, apps};
///
/// let table: Vec<BoxApp> = vec![
///     BoxApp::new(apps::hello),
///     BoxApp::new(|_req: Request| async { "other" }),
/// ];
/// let shared = table[0].clone();
/// # let _ = shared;
/// ```
#[derive(Clone)]
pub struct BoxApp(Arc<dyn DynApp>);

impl BoxApp {
    /// Erases the type of `app`. Boxing a `BoxApp` again returns it unchanged.
    pub fn new<A: App>(app: A) -> Self {
        // Boxing a `BoxApp` again would add a second indirection to every call.
        let mut slot = Some(app);
        if let Some(boxed) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Self>>() {
            return boxed.take().expect("the slot is full");
        }
        Self(Arc::new(slot.expect("the slot is full")))
    }
}

impl App for BoxApp {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        self.0.call_boxed(req)
    }

    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        self.0.call_packet_dyn(packet)
    }

    fn takes_packets(&self) -> bool {
        self.0.takes_packets_dyn()
    }
}

impl fmt::Debug for BoxApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxApp")
    }
}

/// Something that wraps an app in middleware: `inner ↦ Middleware::new(inner)`.
///
/// Any `FnOnce(A) -> B` where `B` is an app is a layer, so a middleware's
/// constructor is one (`Builder::new().wrap(Logger::new)`), and so is a closure
/// that configures it (`.wrap(|app| SetHeader::new(app, "x-a", "1"))`).
pub trait Layer<A> {
    /// The wrapped app.
    type App: App;

    /// Wraps `inner`.
    fn layer(self, inner: A) -> Self::App;
}

impl<A, B, F> Layer<A> for F
where
    F: FnOnce(A) -> B,
    B: App,
{
    type App = B;

    fn layer(self, inner: A) -> B {
        self(inner)
    }
}

/// Stacks middleware in the order they are written: the first is the outermost.
///
/// ```text
/// Builder::new().wrap(A).wrap(B).run(app)   ==   A::new(B::new(app))
/// ```
///
/// See the [module docs](crate::app) for an example and the onion picture.
#[derive(Debug, Clone)]
#[must_use = "a Builder does nothing until `run` is called"]
pub struct Builder<L = Identity> {
    layers: L,
}

impl Builder {
    /// An empty stack.
    pub fn new() -> Self {
        Self { layers: Identity }
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl<L> Builder<L> {
    /// Adds a layer inside the ones added so far.
    pub fn wrap<M>(self, layer: M) -> Builder<Stack<M, L>> {
        Builder {
            layers: Stack {
                inner: layer,
                outer: self.layers,
            },
        }
    }

    /// Wraps `app` in every layer and returns the finished app.
    pub fn run<A>(self, app: A) -> L::App
    where
        L: Layer<A>,
    {
        self.layers.layer(app)
    }
}

/// The layer that wraps nothing: an app stays as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl<A: App> Layer<A> for Identity {
    type App = A;

    fn layer(self, inner: A) -> A {
        inner
    }
}

/// Two layers, `outer` around `inner`; built by [`Builder::wrap`].
#[derive(Debug, Clone)]
pub struct Stack<Inner, Outer> {
    inner: Inner,
    outer: Outer,
}

impl<A, Inner, Outer> Layer<A> for Stack<Inner, Outer>
where
    Inner: Layer<A>,
    Outer: Layer<Inner::App>,
{
    type App = Outer::App;

    fn layer(self, app: A) -> Self::App {
        self.outer.layer(self.inner.layer(app))
    }
}

/// Makes a one-off middleware from an async function of the request and the
/// rest of the stack.
///
/// `f(req, next)` may answer by itself (short-circuit), or call
/// `next.run(req).await` and change the response on the way out:
///
/// ```
/// use stackway::{Builder, Request, from_fn, testing::Client};
///
/// let app = Builder::new()
///     .wrap(from_fn(|req: Request, next| async move {
///         let mut res = next.run(req).await;
///         res.headers_mut().insert("x-frame-options", "DENY".parse().unwrap());
///         res
///     }))
///     .run(stackway::apps::hello);
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// Client::new(app).get("/").await.assert_header("x-frame-options", "DENY");
/// # });
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFnLayer<F>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send,
{
    FromFnLayer { f }
}

/// The [`Layer`] that [`from_fn`] returns.
#[derive(Debug, Clone)]
pub struct FromFnLayer<F> {
    f: F,
}

impl<A, F, Fut> Layer<A> for FromFnLayer<F>
where
    A: App,
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send,
{
    type App = FromFn<F>;

    fn layer(self, inner: A) -> FromFn<F> {
        FromFn::new(inner, self.f)
    }
}

/// A middleware made from a function; see [`from_fn`].
pub struct FromFn<F> {
    f: F,
    inner: BoxApp,
}

impl<F> FromFn<F> {
    /// Wraps `inner` with the middleware function `f`.
    pub fn new<A: App>(inner: A, f: F) -> Self {
        Self {
            f,
            inner: BoxApp::new(inner),
        }
    }
}

impl<F, Fut> App for FromFn<F>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send,
{
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        (self.f)(
            req,
            Next {
                inner: self.inner.clone(),
            },
        )
    }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

/// The rest of the stack, handed to a [`from_fn`] middleware.
#[derive(Debug, Clone)]
pub struct Next {
    inner: BoxApp,
}

impl Next {
    /// Calls the rest of the stack with `req`.
    pub async fn run(self, req: Request) -> Response {
        self.inner.call(req).await
    }
}
