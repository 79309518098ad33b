//! Forward authentication, as nginx's `auth_request` and Caddy's
//! `forward_auth`: each request is first asked about at an auth service,
//! and goes on only if it says yes.
//!
//! The question is a `GET` of the auth path with the request's fields (its
//! body left out) and what it asked for in `X-Original-Method`,
//! `X-Original-URI`, `X-Forwarded-Method` and `X-Forwarded-Uri`; a
//! [`Proxy`](crate::Proxy) to the service adds `X-Forwarded-For`, `-Proto`
//! and `-Host` and brings its pool, timeouts and health checks (any app
//! will do, a Rust one in the same process too). A `2xx` lets the request
//! through, with the fields named by [`copy`](ForwardAuth::copy) (`X-User`)
//! taken from the answer into the request, in place of any the client
//! sent; a `401`, `403` or redirect goes back to the client as it is (a
//! login page); anything else, the service failing or unreachable
//! included, is a 503: never an open door.
//!
//! With [`remember`](ForwardAuth::remember), a yes is kept for a short while
//! and asked again after it: for the same method, target, `Authorization`,
//! `Cookie` and client address (the fields auth services decide on), the
//! request goes through with the fields copied then, without a question. A
//! no is never remembered. At most 10,000 answers are kept, the least
//! recently used forgotten first; they are per process.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, RequestExt, testing::Client};
//! use stackway_middleware::ForwardAuth;
//!
//! // The auth service, here in the same process: the header says who.
//! let auth = |req: Request| async move {
//!     match req.headers().get("authorization").map(|v| v.as_bytes()) {
//!         Some(b"Bearer alice") => http::Response::builder().header("x-user", "alice").body(stackway::Body::empty()).unwrap(),
//!         _ => http::Response::builder().status(401).body(stackway::Body::from("who are you?")).unwrap(),
//!     }
//! };
//! let app = |req: Request| async move { format!("hello {}", req.headers()["x-user"].to_str().unwrap()) };
//! let app = ForwardAuth::new(app, auth, "/verify").copy(["x-user"]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/").header("authorization", "Bearer alice").await.assert_text("hello alice");
//! client.get("/").header("x-user", "mallory").await.assert_status(401).assert_text("who are you?");
//! # });
//! ```

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use lru::LruCache;
use stackway::{App, Body, Connection, Forwarded, IntoResponse, Request, RequestExt, Response};

/// Asks an auth service about each request first; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ForwardAuth<A, S> {
    inner: A,
    service: S,
    path: Uri,
    copy: Vec<HeaderName>,
    remembered: Option<Arc<Remembered>>,
}

/// The yeses kept, with how long each is.
#[derive(Debug)]
struct Remembered {
    ttl: Duration,
    yeses: Mutex<LruCache<Asker, Yes>>,
}

/// What a yes is remembered for.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Asker {
    method: Method,
    target: String,
    authorization: Option<HeaderValue>,
    cookies: Vec<HeaderValue>,
    client: Option<IpAddr>,
}

/// A remembered yes: until when, and the fields copied from it.
#[derive(Debug, Clone)]
struct Yes {
    until: Instant,
    fields: Vec<(HeaderName, HeaderValue)>,
}

/// The most yeses remembered.
const REMEMBERED: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

impl Asker {
    fn of(req: &Request) -> Self {
        Self {
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            authorization: req.headers().get(AUTHORIZATION).cloned(),
            cookies: req.headers().get_all(COOKIE).iter().cloned().collect(),
            client: req.remote_addr().map(|addr| addr.ip()),
        }
    }
}

impl<A, S> ForwardAuth<A, S> {
    /// Lets through to `inner` the requests `service` says yes to when
    /// asked at `path` (`/verify`); a path that is not one is `/`.
    pub fn new(inner: A, service: S, path: &str) -> Self {
        Self {
            inner,
            service,
            path: path.parse().unwrap_or_else(|_| Uri::from_static("/")),
            copy: Vec::new(),
            remembered: None,
        }
    }

    /// Remembers each yes for `ttl` (a few seconds, as a session's checks
    /// go): a request with the same method, target, `Authorization`,
    /// `Cookie` and client address is let through without asking. For auth
    /// services that decide on those alone.
    pub fn remember(mut self, ttl: Duration) -> Self {
        self.remembered = Some(Arc::new(Remembered {
            ttl,
            yeses: Mutex::new(LruCache::new(REMEMBERED)),
        }));
        self
    }

    /// Takes these fields of a yes into the request (those the client sent
    /// by the same names are removed first, so that none can pass for the
    /// service's). Names that are not field names are left out.
    pub fn copy<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let names = names.into_iter().filter_map(|n| n.as_ref().parse().ok());
        self.copy.extend(names);
        self
    }

    inner_accessors!();
}

impl<A: App, S: App> App for ForwardAuth<A, S> {
    async fn call(&self, mut req: Request) -> Response {
        let asker = self.remembered.as_ref().map(|_| Asker::of(&req));
        if let Some(yes) = asker.as_ref().and_then(|asker| self.recall(asker)) {
            self.let_in(&mut req, yes.fields);
            return self.inner.call(req).await;
        }
        // Boxed: the service's call (a proxied request) is not room in every
        // request's future, which is boxed on every request and, under a
        // kilobyte, comes from the allocator's per-thread cache.
        let answer = Box::pin(self.service.call(self.question(&req))).await;
        let status = answer.status();
        if status.is_success() {
            let fields: Vec<_> = (self.copy.iter())
                .flat_map(|name| {
                    let values = answer.headers().get_all(name).iter();
                    values.map(move |value| (name.clone(), value.clone()))
                })
                .collect();
            if let (Some(remembered), Some(asker)) = (&self.remembered, asker) {
                let until = Instant::now() + remembered.ttl;
                let yes = Yes {
                    until,
                    fields: fields.clone(),
                };
                remembered
                    .yeses
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .put(asker, yes);
            }
            self.let_in(&mut req, fields);
            return self.inner.call(req).await;
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            || status.is_redirection()
        {
            return answer;
        }
        tracing::warn!(%status, "the auth service did not answer yes or no: 503");
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }
}

impl<A, S> ForwardAuth<A, S> {
    /// A yes remembered for `asker` and not yet out of date.
    fn recall(&self, asker: &Asker) -> Option<Yes> {
        let remembered = self.remembered.as_ref()?;
        let mut yeses = remembered
            .yeses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match yeses.get(asker) {
            Some(yes) if yes.until > Instant::now() => Some(yes.clone()),
            Some(_) => {
                yeses.pop(asker);
                None
            }
            None => None,
        }
    }

    /// `req` with the fields of a yes in place of the client's own by
    /// those names.
    fn let_in(&self, req: &mut Request, fields: Vec<(HeaderName, HeaderValue)>) {
        let headers = req.headers_mut();
        for name in &self.copy {
            headers.remove(name);
        }
        for (name, value) in fields {
            headers.append(name, value);
        }
    }

    /// The `GET` that asks about `req`.
    fn question(&self, req: &Request) -> Request {
        let mut question = Request::new(Body::default());
        *question.method_mut() = Method::GET;
        *question.uri_mut() = self.path.clone();
        *question.version_mut() = req.version();
        let headers = question.headers_mut();
        *headers = req.headers().clone();
        for name in [CONTENT_LENGTH, TRANSFER_ENCODING, CONTENT_TYPE] {
            headers.remove(name);
        }
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let method = HeaderValue::from_str(req.method().as_str()).ok();
        let target = HeaderValue::from_str(target).ok();
        for (name, value) in [
            ("x-original-method", &method),
            ("x-forwarded-method", &method),
            ("x-original-uri", &target),
            ("x-forwarded-uri", &target),
        ] {
            if let Some(value) = value {
                headers.insert(name, value.clone());
            }
        }
        // Who is asking: the connection, and what a trusted proxy said of it.
        if let Some(connection) = req.extensions().get::<Connection>() {
            question.extensions_mut().insert(connection.clone());
        }
        if let Some(forwarded) = req.extensions().get::<Forwarded>() {
            question.extensions_mut().insert(forwarded.clone());
        }
        question
    }
}
