//! Reading a request: its query, a JSON or form body, multipart uploads,
//! cookies and shared state, with errors that are the right 4xx response.
//!
//! # Example
//!
//! ```
//! use serde::Deserialize;
//! use stackway::{Extract, Json, Rejection, Request, testing::Client, with_state};
//!
//! #[derive(Deserialize)]
//! struct NewUser { name: String }
//!
//! struct Greeting(&'static str);
//!
//! async fn create(mut req: Request) -> Result<Json<String>, Rejection> {
//!     let greeting = req.state::<Greeting>().map_or("hello", |g| g.0);
//!     let user: NewUser = req.json().await?; // 415, 413 or 400 on a bad body
//!     Ok(Json(format!("{greeting}, {}", user.name)))
//! }
//! let app = with_state(create, Greeting("welcome"));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.post("/").header("content-type", "application/json").body(r#"{"name":"ada"}"#)
//!     .await.assert_text(r#""welcome, ada""#);
//! client.post("/").header("content-type", "application/json").body("{").await.assert_status(400);
//! client.post("/").body("name=ada").await.assert_status(415);
//! # });
//! ```

use std::fmt;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, COOKIE};
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::{App, IntoResponse, Request, Response};

/// The largest body [`Extract::json`] and [`Extract::form`] read, unless a
/// [`ReadLimit`] says otherwise: 2 MiB.
pub const BODY_LIMIT: usize = 2 << 20;

/// The largest body [`Extract::json`] and [`Extract::form`] read, for the
/// requests of one app: given as state.
///
/// ```
/// use stackway::extract::ReadLimit;
/// use stackway::{Extract, IntoResponse, Request, testing::Client, with_state};
///
/// let app = |mut req: Request| async move {
///     match req.json::<serde_json::Value>().await {
///         Ok(_) => "read".into_response(),
///         Err(rejection) => rejection.into_response(),
///     }
/// };
/// let app = with_state(app, ReadLimit(16)); // bytes
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let client = Client::new(app);
/// let post = |body: &'static str| client.post("/").header("content-type", "application/json").body(body);
/// post(r#"{"a":1}"#).await.assert_text("read");
/// post(r#"{"a":"more than sixteen"}"#).await.assert_status(413);
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit(pub usize);

/// Why a request could not be read as asked: a 4xx response with a short
/// body saying why. `Display` is the same sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    why: String,
}

impl Rejection {
    fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }

    /// The status the response has: 400, 413 or 415.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Rejection {}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.why)).into_response()
    }
}

/// So that `?` works in handlers whose error type is `Response`.
impl From<Rejection> for Response {
    fn from(rejection: Rejection) -> Self {
        rejection.into_response()
    }
}

/// Reading the parts of a request; implemented for [`Request`].
pub trait Extract {
    /// The query string as `T` (serde, `application/x-www-form-urlencoded`
    /// rules); a query that does not fit is a 400.
    fn query<T: DeserializeOwned>(&self) -> Result<T, Rejection>;

    /// The body as JSON: it must say `Content-Type: application/json` (or
    /// `+json`), else 415; be at most [`BODY_LIMIT`] (or the app's
    /// [`ReadLimit`]), else 413; and parse as
    /// `T`, else 400 with serde's line and column. The body is taken.
    fn json<T: DeserializeOwned>(&mut self) -> impl Future<Output = Result<T, Rejection>> + Send;

    /// The body as an urlencoded form (`application/x-www-form-urlencoded`,
    /// else 415), at most [`BODY_LIMIT`] (or the app's [`ReadLimit`]). The
    /// body is taken.
    fn form<T: DeserializeOwned>(&mut self) -> impl Future<Output = Result<T, Rejection>> + Send;

    /// The body as `multipart/form-data` (else 415), read part by part as it
    /// streams in, each part at most `part_limit` bytes (else 413). The body is taken.
    #[cfg(feature = "multipart")]
    fn multipart(&mut self, part_limit: u64) -> Result<multer::Multipart<'static>, Rejection>;

    /// The cookies the client sent; malformed ones are left out.
    fn cookies(&self) -> Vec<cookie::Cookie<'static>>;

    /// The value [`with_state`] gives every request, if one of this type was given.
    fn state<T: Send + Sync + 'static>(&self) -> Option<&T>;
}

impl Extract for Request {
    fn query<T: DeserializeOwned>(&self) -> Result<T, Rejection> {
        let query = self.uri().query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map_err(|e| Rejection::new(StatusCode::BAD_REQUEST, format!("bad query string: {e}")))
    }

    async fn json<T: DeserializeOwned>(&mut self) -> Result<T, Rejection> {
        let is_json = media_type(self.headers()).is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
        if !is_json {
            return Err(unsupported("application/json"));
        }
        let bytes = take_body(self).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Rejection::new(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
    }

    async fn form<T: DeserializeOwned>(&mut self) -> Result<T, Rejection> {
        if media_type(self.headers()).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(unsupported("application/x-www-form-urlencoded"));
        }
        let bytes = take_body(self).await?;
        serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| Rejection::new(StatusCode::BAD_REQUEST, format!("bad form: {e}")))
    }

    #[cfg(feature = "multipart")]
    fn multipart(&mut self, part_limit: u64) -> Result<multer::Multipart<'static>, Rejection> {
        let boundary = self
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| multer::parse_boundary(v).ok())
            .ok_or_else(|| unsupported("multipart/form-data"))?;
        let body = std::mem::take(self.body_mut());
        let stream = http_body_util::BodyDataStream::new(body);
        let limits =
            multer::Constraints::new().size_limit(multer::SizeLimit::new().per_field(part_limit));
        Ok(multer::Multipart::with_constraints(
            stream, boundary, limits,
        ))
    }

    fn cookies(&self) -> Vec<cookie::Cookie<'static>> {
        self.headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| cookie::Cookie::split_parse_encoded(v.to_owned()))
            .filter_map(Result::ok)
            .collect()
    }

    fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions().get::<State<T>>().map(|s| &*s.0)
    }
}

/// What a multipart error answers: 413 for a part over the limit, else 400.
#[cfg(feature = "multipart")]
impl From<multer::Error> for Rejection {
    fn from(e: multer::Error) -> Self {
        let status = match e {
            multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, format!("bad multipart body: {e}"))
    }
}

/// The media type of `Content-Type`, lower-case, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim();
    Some(media.to_ascii_lowercase())
}

fn unsupported(wanted: &str) -> Rejection {
    Rejection::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("expected a body of type {wanted}"),
    )
}

/// The whole body, at most [`BODY_LIMIT`] bytes or the app's [`ReadLimit`]
/// (413 past it).
async fn take_body(req: &mut Request) -> Result<bytes::Bytes, Rejection> {
    let limit = req.state::<ReadLimit>().map_or(BODY_LIMIT, |limit| limit.0);
    let body = std::mem::take(req.body_mut());
    body.collect(limit)
        .await
        .map_err(|e| match e.is_too_large() {
            true => Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} bytes"),
            ),
            false if e.is_timeout() => {
                Rejection::new(StatusCode::REQUEST_TIMEOUT, "the body stopped coming")
            }
            false => Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            ),
        })
}

/// The extension [`with_state`] puts on every request.
struct State<T>(Arc<T>);

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Gives `state` to every request `app` answers, read with
/// [`Extract::state`]: a connection pool, a configuration, a cache.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use stackway::{Extract, Request, testing::Client, with_state};
///
/// struct Pool { hits: AtomicU64 } // stands for a database pool
///
/// let app = with_state(
///     |req: Request| async move {
///         let pool = req.state::<Pool>().expect("given by with_state");
///         let n = pool.hits.fetch_add(1, Ordering::Relaxed) + 1;
///         format!("request {n}")
///     },
///     Pool { hits: AtomicU64::new(0) },
/// );
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let client = Client::new(app);
/// client.get("/").await.assert_text("request 1");
/// client.get("/").await.assert_text("request 2");
/// # });
/// ```
pub fn with_state<A: App, T: Send + Sync + 'static>(app: A, state: T) -> WithState<A, T> {
    WithState {
        inner: app,
        state: State(Arc::new(state)),
    }
}

/// The app [`with_state`] returns.
pub struct WithState<A, T> {
    inner: A,
    state: State<T>,
}

impl<A: App, T: Send + Sync + 'static> App for WithState<A, T> {
    async fn call(&self, mut req: Request) -> Response {
        req.extensions_mut().insert(self.state.clone());
        self.inner.call(req).await
    }
}

impl<A, T> fmt::Debug for WithState<A, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithState")
            .field("state", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}
