//! Cross-origin resource sharing: which other sites' pages may call the app
//! from a browser, answering preflights without reaching the app.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::Method;
//! use stackway::testing::Client;
//! use stackway_middleware::Cors;
//!
//! let app = Cors::new(stackway::apps::hello)
//!     .allow_origin("https://app.example")
//!     .allow_methods([Method::GET, Method::POST])
//!     .allow_headers(["content-type"])
//!     .max_age(Duration::from_secs(600));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.request(Method::OPTIONS, "/")
//!     .header("origin", "https://app.example")
//!     .header("access-control-request-method", "POST")
//!     .await
//!     .assert_status(204)
//!     .assert_header("access-control-allow-origin", "https://app.example")
//!     .assert_header("access-control-allow-methods", "GET, POST")
//!     .assert_header("access-control-max-age", "600");
//! client.get("/").header("origin", "https://evil.example").await
//!     .assert_no_header("access-control-allow-origin");
//! # });
//! ```
//!
//! Nothing is allowed until configured. `Vary: Origin` is sent whenever the
//! answer depends on the origin, so caches keep one copy per origin. A layer
//! that allows any origin *and* credentials is refused when it is built
//! (browsers refuse `*` with credentials, and echoing every origin with
//! credentials would let any site act as the user).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderName,
    HeaderValue, ORIGIN, VARY,
};
use http::{Method, StatusCode};
use stackway::{App, Body, Request, Response};

/// Answers CORS preflights and marks allowed responses; see the
/// [module docs](self).
#[derive(Clone)]
pub struct Cors<A> {
    inner: A,
    origins: Origins,
    methods: Vec<Method>,
    headers: Vec<HeaderName>,
    /// Whatever request headers a preflight names are allowed.
    any_header: bool,
    expose: Vec<HeaderName>,
    credentials: bool,
    max_age: Option<Duration>,
}

#[derive(Clone)]
enum Origins {
    List(HashSet<String>),
    Any,
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl<A> Cors<A> {
    /// Wraps `inner`, allowing no other origin yet.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            origins: Origins::List(HashSet::new()),
            methods: vec![Method::GET, Method::HEAD, Method::POST],
            headers: Vec::new(),
            any_header: false,
            expose: Vec::new(),
            credentials: false,
            max_age: None,
        }
    }

    /// Allows pages from `origin` (`https://app.example`, exactly as browsers
    /// send it: scheme, host and a port other than the default), besides the
    /// origins listed before (a predicate or any-origin given before is replaced).
    pub fn allow_origin(mut self, origin: &str) -> Self {
        match &mut self.origins {
            Origins::List(list) => {
                list.insert(origin.to_owned());
            }
            other => *other = Origins::List(HashSet::from([origin.to_owned()])),
        }
        self
    }

    /// Allows the origins for which `allowed` is true, instead of any given before.
    pub fn allow_origin_fn(
        mut self,
        allowed: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.origins = Origins::Predicate(Arc::new(allowed));
        self
    }

    /// Allows every origin (`Access-Control-Allow-Origin: *`).
    ///
    /// # Panics
    ///
    /// If credentials are allowed: see the [module docs](self).
    #[track_caller]
    pub fn allow_any_origin(mut self) -> Self {
        assert!(
            !self.credentials,
            "Cors: any origin with credentials would let every site act as the user; list the origins"
        );
        self.origins = Origins::Any;
        self
    }

    /// The methods cross-origin requests may use. GET, HEAD and POST by default.
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// The request headers cross-origin requests may send.
    ///
    /// # Panics
    ///
    /// If a name is not a header name.
    #[track_caller]
    pub fn allow_headers<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.headers = names.into_iter().map(header_name).collect();
        self.any_header = false;
        self
    }

    /// Allows whatever request headers a preflight names, its
    /// `Access-Control-Request-Headers` answered back, as Flask-CORS allows
    /// them by default (`allow_headers="*"`); in place of a list given before.
    pub fn allow_any_header(mut self) -> Self {
        self.headers.clear();
        self.any_header = true;
        self
    }

    /// The response headers scripts of other origins may read.
    #[track_caller]
    pub fn expose_headers<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.expose = names.into_iter().map(header_name).collect();
        self
    }

    /// Lets cross-origin requests carry cookies and credentials.
    ///
    /// # Panics
    ///
    /// If any origin is allowed: see the [module docs](self).
    #[track_caller]
    pub fn allow_credentials(mut self, on: bool) -> Self {
        assert!(
            !(on && matches!(self.origins, Origins::Any)),
            "Cors: credentials with any origin would let every site act as the user; list the origins"
        );
        self.credentials = on;
        self
    }

    /// How long browsers may cache a preflight's answer.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    inner_accessors!();

    fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.contains(origin),
            Origins::Predicate(allowed) => allowed(origin),
        }
    }

    /// The headers every answer to an allowed `origin` carries.
    fn allow(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        let value = match (&self.origins, self.credentials) {
            (Origins::Any, false) => HeaderValue::from_static("*"),
            _ => origin.clone(),
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn vary(&self, headers: &mut HeaderMap) {
        if !matches!(self.origins, Origins::Any) || self.credentials {
            headers.append(VARY, HeaderValue::from_static("origin"));
        }
    }
}

#[track_caller]
fn header_name(name: &str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes())
        .unwrap_or_else(|_| panic!("{name:?} is not a header name"))
}

fn list<T: AsRef<str>>(items: &[T]) -> Option<HeaderValue> {
    let joined = items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    (!joined.is_empty())
        .then(|| HeaderValue::from_str(&joined).ok())
        .flatten()
}

impl<A: App> App for Cors<A> {
    async fn call(&self, req: Request) -> Response {
        let origin = req.headers().get(ORIGIN).cloned();
        let allowed = origin
            .as_ref()
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| self.allows(o));
        let preflight = req.method() == Method::OPTIONS
            && origin.is_some()
            && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let requested_headers = req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS).cloned();
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NO_CONTENT;
            let headers = res.headers_mut();
            self.vary(headers);
            headers.append(
                VARY,
                HeaderValue::from_static("access-control-request-method"),
            );
            headers.append(
                VARY,
                HeaderValue::from_static("access-control-request-headers"),
            );
            if let (true, Some(origin)) = (allowed, &origin) {
                self.allow(origin, headers);
                if let Some(methods) =
                    list(&self.methods.iter().map(Method::as_str).collect::<Vec<_>>())
                {
                    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
                }
                let names = match self.any_header {
                    true => requested_headers,
                    false => list(
                        &self
                            .headers
                            .iter()
                            .map(HeaderName::as_str)
                            .collect::<Vec<_>>(),
                    ),
                };
                if let Some(names) = names {
                    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, names);
                }
                if let Some(max_age) = self.max_age {
                    headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.as_secs().into());
                }
            }
            return res;
        }
        let mut res = self.inner.call(req).await;
        let headers = res.headers_mut();
        self.vary(headers);
        if let (true, Some(origin)) = (allowed, &origin) {
            self.allow(origin, headers);
            if let Some(names) = list(
                &self
                    .expose
                    .iter()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>(),
            ) {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, names);
            }
        }
        res
    }
}

impl<A> fmt::Debug for Cors<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins = match &self.origins {
            Origins::Any => "*".to_owned(),
            Origins::List(list) => format!("{list:?}"),
            Origins::Predicate(_) => "a predicate".to_owned(),
        };
        f.debug_struct("Cors")
            .field("origins", &origins)
            .field("methods", &self.methods)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}
