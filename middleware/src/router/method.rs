//! A route's handlers by method: `get(show).put(update)`, HEAD answered by
//! GET, 405 with `Allow`, and OPTIONS.

use std::fmt;

use http::header::ALLOW;
use http::{HeaderValue, Method, StatusCode};
use stackway::{App, Body, BoxApp, IntoResponse, Request, Response};

/// The handlers of one route, by method; made by [`get`], [`post`] and the
/// others, and chained: `get(show).put(update)`.
#[derive(Clone, Default)]
pub struct MethodRouter {
    pub(super) handlers: Vec<(Method, BoxApp)>,
    pub(super) any: Option<BoxApp>,
}

macro_rules! method_fns {
    ($($name:ident => $method:ident),*) => {
        $(
            #[doc = concat!("A route answering `", stringify!($method), "` with `app`.")]
            pub fn $name(app: impl App) -> MethodRouter {
                MethodRouter::default().on(Method::$method, app)
            }

            impl MethodRouter {
                #[doc = concat!("Also answers `", stringify!($method), "` with `app`.")]
                pub fn $name(self, app: impl App) -> Self {
                    self.on(Method::$method, app)
                }
            }
        )*
    };
}

method_fns!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE, options => OPTIONS, head => HEAD);

/// A route answering every method with `app`.
pub fn any(app: impl App) -> MethodRouter {
    MethodRouter {
        handlers: Vec::new(),
        any: Some(BoxApp::new(app)),
    }
}

/// A route answering `method` with `app`.
pub fn on(method: Method, app: impl App) -> MethodRouter {
    MethodRouter::default().on(method, app)
}

impl MethodRouter {
    /// Also answers `method` with `app`.
    pub fn on(mut self, method: Method, app: impl App) -> Self {
        self.handlers.retain(|(m, _)| *m != method);
        self.handlers.push((method, BoxApp::new(app)));
        self
    }

    fn handler(&self, method: &Method) -> Option<&BoxApp> {
        self.handlers
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, app)| app)
            .or(self.any.as_ref())
    }

    /// `Allow` for this route: its methods, `HEAD` with `GET`, and `OPTIONS`.
    fn allow(&self) -> HeaderValue {
        if self.any.is_some() {
            return HeaderValue::from_static("*");
        }
        let mut methods: Vec<&str> = self.handlers.iter().map(|(m, _)| m.as_str()).collect();
        if methods.contains(&"GET") {
            methods.push("HEAD");
        }
        methods.push("OPTIONS");
        let order = |m: &&str| {
            ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .iter()
                .position(|known| known == m)
                .unwrap_or(usize::MAX)
        };
        methods.sort_by_key(order);
        methods.dedup();
        HeaderValue::from_str(&methods.join(", ")).unwrap_or(HeaderValue::from_static("OPTIONS"))
    }

    /// Merges `other`'s methods in; a method in both is a conflict.
    pub(super) fn merge(&mut self, other: Self) -> Result<(), String> {
        for (method, app) in other.handlers {
            if self.handlers.iter().any(|(m, _)| *m == method) {
                return Err(format!("{method} is routed there already"));
            }
            self.handlers.push((method, app));
        }
        if let Some(app) = other.any {
            if self.any.is_some() {
                return Err("any method is routed there already".to_owned());
            }
            self.any = Some(app);
        }
        Ok(())
    }
}

/// Calls the handler for the request's method, or answers 405 / OPTIONS.
/// Not an `async fn`, which would keep a copy of the request.
#[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
pub(super) fn dispatch(
    methods: &MethodRouter,
    req: Request,
) -> impl Future<Output = Response> + Send + '_ {
    async move {
        let method = req.method().clone();
        if let Some(app) = methods.handler(&method) {
            return app.call(req).await;
        }
        if method == Method::HEAD {
            if let Some(app) = methods.handler(&Method::GET) {
                let res = app.call(req).await;
                // The head of the GET response, without its body.
                let (parts, _) = res.into_parts();
                return Response::from_parts(parts, Body::empty());
            }
        }
        let status = match method {
            Method::OPTIONS => StatusCode::NO_CONTENT,
            _ => StatusCode::METHOD_NOT_ALLOWED,
        };
        let mut res = match status {
            StatusCode::NO_CONTENT => {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = status;
                res
            }
            _ => status.into_response(),
        };
        res.headers_mut().insert(ALLOW, methods.allow());
        res
    }
}

impl fmt::Debug for MethodRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods: Vec<&str> = self.handlers.iter().map(|(m, _)| m.as_str()).collect();
        f.debug_struct("MethodRouter")
            .field("methods", &methods)
            .field("any", &self.any.is_some())
            .finish()
    }
}
