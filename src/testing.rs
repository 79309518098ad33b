//! An in-process test client: call any app without a socket, as Werkzeug's test
//! `Client` does.
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(stackway::apps::hello);
//! client
//!     .get("/world")
//!     .await
//!     .assert_status(200)
//!     .assert_header("content-type", "text/html; charset=utf-8")
//!     .assert_text("<h1>Hello, world!</h1>");
//! # });
//! ```
//!
//! Each request carries a [`Connection`] as the server's would: the client is
//! `127.0.0.1`, the scheme is the URL's (`http` by default), and `Host` is
//! `localhost` unless the path is an absolute URL or a `Host` header is given.
//! Responses are read whole into memory by `.await`; to read one as a stream, use
//! [`RequestBuilder::stream`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::{App, Body, BoxApp, Connection, Request, Response};

/// Calls an app in-process; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Client {
    app: BoxApp,
}

impl Client {
    /// A client for `app`.
    pub fn new(app: impl App) -> Self {
        Self {
            app: BoxApp::new(app),
        }
    }

    /// Starts a request. `target` is a path with an optional query
    /// (`/a/b?x=1`), or an absolute URL (`https://example.com/a`), which also
    /// sets the scheme and the `Host` header.
    ///
    /// # Panics
    ///
    /// If `target` is not a valid request target.
    #[track_caller]
    pub fn request(&self, method: Method, target: &str) -> RequestBuilder {
        let target = if target.is_empty() { "/" } else { target };
        let uri: Uri = target
            .parse()
            .unwrap_or_else(|e| panic!("the test client cannot request {target:?}: {e}"));
        let mut req = Request::new(Body::empty());
        *req.method_mut() = method;
        let host = uri.authority().map_or("localhost", |a| a.as_str());
        req.headers_mut().insert(
            HOST,
            HeaderValue::from_str(host).expect("an authority is a valid header"),
        );
        req.extensions_mut().insert(Connection {
            remote_addr: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 50000))),
            local_addr: None,
            scheme: uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
            listener: 0,
        });
        // Like a server, hand the app the origin form (`/a?b`): the authority went to Host.
        *req.uri_mut() = match uri.path_and_query() {
            Some(pq) => Uri::from(pq.clone()),
            None => Uri::from_static("/"),
        };
        RequestBuilder {
            app: self.app.clone(),
            req,
        }
    }

    /// Starts a `GET` request; see [`request`](Self::request).
    #[track_caller]
    pub fn get(&self, target: &str) -> RequestBuilder {
        self.request(Method::GET, target)
    }

    /// Starts a `HEAD` request.
    #[track_caller]
    pub fn head(&self, target: &str) -> RequestBuilder {
        self.request(Method::HEAD, target)
    }

    /// Starts a `POST` request.
    #[track_caller]
    pub fn post(&self, target: &str) -> RequestBuilder {
        self.request(Method::POST, target)
    }

    /// Starts a `PUT` request.
    #[track_caller]
    pub fn put(&self, target: &str) -> RequestBuilder {
        self.request(Method::PUT, target)
    }

    /// Starts a `DELETE` request.
    #[track_caller]
    pub fn delete(&self, target: &str) -> RequestBuilder {
        self.request(Method::DELETE, target)
    }
}

/// A request being built; `.await` it to send it and read the whole response.
#[must_use = "a request is sent when it is awaited"]
#[derive(Debug)]
pub struct RequestBuilder {
    app: BoxApp,
    req: Request,
}

impl RequestBuilder {
    /// Adds a header (a repeated name adds another value; `Host` replaces).
    ///
    /// # Panics
    ///
    /// If the name or value is not valid in HTTP.
    #[track_caller]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name =
            HeaderName::try_from(name).unwrap_or_else(|e| panic!("header name {name:?}: {e}"));
        let value =
            HeaderValue::try_from(value).unwrap_or_else(|e| panic!("header value {value:?}: {e}"));
        if name == HOST {
            self.req.headers_mut().insert(name, value);
        } else {
            self.req.headers_mut().append(name, value);
        }
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Body>) -> Self {
        *self.req.body_mut() = body.into();
        self
    }

    /// Sets the HTTP version the app sees (HTTP/1.1 by default).
    pub fn version(mut self, version: Version) -> Self {
        *self.req.version_mut() = version;
        self
    }

    /// Sets the client's address the app sees (`127.0.0.1:50000` by default).
    pub fn remote_addr(mut self, addr: SocketAddr) -> Self {
        if let Some(conn) = self.req.extensions_mut().get_mut::<Connection>() {
            conn.remote_addr = Some(addr);
        }
        self
    }

    /// Adds a request extension, as a middleware in front of the app would.
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.req.extensions_mut().insert(value);
        self
    }

    /// Sends the request and returns the response with its body unread, to be
    /// read as a stream.
    pub async fn stream(self) -> Response {
        self.app.call(self.req).await
    }

    async fn send(self) -> TestResponse {
        let res = self.stream().await;
        let (parts, body) = res.into_parts();
        let body = body
            .collect(usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("the response body failed: {e}"));
        TestResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }
}

impl IntoFuture for RequestBuilder {
    type Output = TestResponse;
    type IntoFuture = Pin<Box<dyn Future<Output = TestResponse> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A response read whole, with fluent assertions.
///
/// The `assert_*` methods panic with the response shown when the assertion
/// fails, and return `&Self` so they chain.
pub struct TestResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl TestResponse {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of header `name`, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text, with invalid UTF-8 replaced by `�`.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status code.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "unexpected status\n{self:?}");
        self
    }

    /// Asserts that header `name` has exactly one value, `value`.
    #[track_caller]
    pub fn assert_header(&self, name: &str, value: &str) -> &Self {
        let values: Vec<_> = self.headers.get_all(name).iter().collect();
        assert!(
            values.len() == 1 && values[0] == value,
            "expected header {name}: {value:?}, found {values:?}\n{self:?}"
        );
        self
    }

    /// Asserts that header `name` is absent.
    #[track_caller]
    pub fn assert_no_header(&self, name: &str) -> &Self {
        assert!(
            !self.headers.contains_key(name),
            "unexpected header {name}\n{self:?}"
        );
        self
    }

    /// Asserts the body, as text.
    #[track_caller]
    pub fn assert_text(&self, expected: &str) -> &Self {
        assert_eq!(self.text(), expected, "unexpected body\n{self:?}");
        self
    }

    /// Asserts that the body contains `needle`.
    #[track_caller]
    pub fn assert_text_contains(&self, needle: &str) -> &Self {
        assert!(
            self.text().contains(needle),
            "body lacks {needle:?}\n{self:?}"
        );
        self
    }
}

impl fmt::Debug for TestResponse {
    /// The response as it would go over the wire, the body cut at 1 KiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} {}", self.version, self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
        }
        let shown = &self.body[..self.body.len().min(1024)];
        write!(f, "\n{}", String::from_utf8_lossy(shown))?;
        if shown.len() < self.body.len() {
            write!(f, "… ({} bytes in all)", self.body.len())?;
        }
        Ok(())
    }
}
