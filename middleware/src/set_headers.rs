//! Sets response headers: set (replace), append, or set only if the app did
//! not; and [`SetHeaders::secure`], the security headers most sites want.
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::SetHeaders;
//!
//! let app = SetHeaders::secure(stackway::apps::hello)
//!     .if_missing("cache-control", "no-store")
//!     .set("server", "stackway");
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/").await
//!     .assert_header("x-content-type-options", "nosniff")
//!     .assert_header("cache-control", "no-store")
//!     .assert_header("server", "stackway")
//!     .assert_no_header("strict-transport-security"); // plain http
//! # });
//! ```

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use stackway::{App, Request, RequestExt, Response};

/// Sets response headers; see the [module docs](self).
#[doc(alias = "SecureHeaders")]
#[derive(Clone)]
pub struct SetHeaders<A> {
    inner: A,
    rules: Vec<(HeaderName, HeaderValue, How)>,
    /// `Strict-Transport-Security`, sent only over https.
    hsts: Option<HeaderValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Set,
    Append,
    IfMissing,
}

impl<A> SetHeaders<A> {
    /// Wraps `inner`, setting nothing yet.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            rules: Vec::new(),
            hsts: None,
        }
    }

    /// The usual security headers, each only where the app set none:
    /// `X-Content-Type-Options: nosniff`, `Referrer-Policy:
    /// strict-origin-when-cross-origin`, `X-Frame-Options: DENY`, and over
    /// https `Strict-Transport-Security: max-age=63072000; includeSubDomains`
    /// (sent over plain http it would be ignored, or pin a site to https by
    /// accident). Add a CSP with [`content_security_policy`](Self::content_security_policy).
    pub fn secure(inner: A) -> Self {
        let mut this = Self::new(inner)
            .if_missing("x-content-type-options", "nosniff")
            .if_missing("referrer-policy", "strict-origin-when-cross-origin")
            .if_missing("x-frame-options", "DENY");
        this.hsts = Some(HeaderValue::from_static(
            "max-age=63072000; includeSubDomains",
        ));
        this
    }

    /// `Content-Security-Policy: policy`, where the app set none.
    #[track_caller]
    pub fn content_security_policy(self, policy: &str) -> Self {
        self.if_missing("content-security-policy", policy)
    }

    /// Sets `name: value`, replacing what the app set.
    ///
    /// # Panics
    ///
    /// If the name or value is not valid in a header.
    #[track_caller]
    pub fn set(self, name: &str, value: &str) -> Self {
        self.rule(name, value, How::Set)
    }

    /// Adds `name: value` beside what the app set.
    #[track_caller]
    pub fn append(self, name: &str, value: &str) -> Self {
        self.rule(name, value, How::Append)
    }

    /// Sets `name: value` only when the app set no `name`.
    #[track_caller]
    pub fn if_missing(self, name: &str, value: &str) -> Self {
        self.rule(name, value, How::IfMissing)
    }

    #[track_caller]
    fn rule(mut self, name: &str, value: &str, how: How) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("{name:?} is not a header name"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("{value:?} is not a header value"));
        self.rules.push((name, value, how));
        self
    }

    inner_accessors!();
}

impl<A: App> App for SetHeaders<A> {
    async fn call(&self, req: Request) -> Response {
        let https = req.environ().url_scheme() == &http::uri::Scheme::HTTPS;
        let mut res = self.inner.call(req).await;
        let headers = res.headers_mut();
        for (name, value, how) in &self.rules {
            match how {
                How::Set => drop(headers.insert(name, value.clone())),
                How::Append => {
                    headers.append(name, value.clone());
                }
                How::IfMissing if !headers.contains_key(name) => {
                    headers.insert(name, value.clone());
                }
                How::IfMissing => {}
            }
        }
        if let Some(hsts) = self.hsts.as_ref().filter(|_| https) {
            headers
                .entry(http::header::STRICT_TRANSPORT_SECURITY)
                .or_insert_with(|| hsts.clone());
        }
        res
    }
}

impl<A> fmt::Debug for SetHeaders<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|(n, _, _)| n.as_str()).collect();
        f.debug_struct("SetHeaders")
            .field("headers", &names)
            .field("hsts", &self.hsts.is_some())
            .finish_non_exhaustive()
    }
}
