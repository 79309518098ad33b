//! stackway: one callable interface for apps and middleware, in the spirit of
//! WSGI, so that they stack like decorators.
//!
//! ```
//! use stackway::{App, Builder, Request, RequestExt, Response, from_fn, testing::Client};
//!
//! // An app is an async function from a request to a response.
//! async fn whoami(req: Request) -> String {
//!     format!("mounted at {:?}", req.environ().script_name())
//! }
//!
//! // A middleware is an app that holds another app.
//! struct PoweredBy<A>(A);
//!
//! impl<A: App> App for PoweredBy<A> {
//!     async fn call(&self, req: Request) -> Response {
//!         let mut res = self.0.call(req).await;
//!         res.headers_mut().insert("x-powered-by", "stackway".parse().unwrap());
//!         res
//!     }
//! }
//!
//! let app = Builder::new()
//!     .wrap(PoweredBy)
//!     .wrap(from_fn(|mut req: Request, next| async move {
//!         req.push_script_name("/v1".len()); // mount everything below at /v1
//!         next.run(req).await
//!     }))
//!     .run(whoami);
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app)
//!     .get("/v1/users")
//!     .await
//!     .assert_status(200)
//!     .assert_header("x-powered-by", "stackway")
//!     .assert_text(r#"mounted at "/v1""#);
//! # });
//! ```
//!
//! The pieces:
//! - [`App`], the interface, and [`BoxApp`], its type-erased form; middleware
//!   and how a stack is ordered in [`app`].
//! - [`Request`] and [`Response`] are the `http` crate's, with a streaming
//!   [`Body`]; [`RequestExt::environ`] reads SCRIPT_NAME, PATH_INFO and the rest
//!   of the [`environ`].
//! - [`testing::Client`] calls any app in-process.
//! - [`Server`] and [`serve`] run any app over HTTP/1.1 and HTTP/2.
//! - [`apps`] holds the built-in `hello` and `demo` apps.

pub mod app;
pub mod apps;
mod body;
pub mod environ;
mod error;
pub mod extract;
pub mod notes;
pub mod prelude;
pub mod range;
pub mod readings;
pub mod response;
pub mod server;
pub mod testing;

pub use app::{App, BoxApp, Builder, Layer, Next, Request, Response, from_fn};
pub use body::{Body, FilePart, Spooler};
pub use cookie;
pub use environ::{Connection, Environ, Forwarded, RequestExt};
pub use error::{BoxError, Error, Result};
pub use extract::{Extract, Rejection, WithState, with_state};
pub use http;
#[cfg(feature = "multipart")]
pub use multer;
pub use response::{Html, IntoResponse, Json};
pub use server::ClientCert;
pub use server::{Server, serve};
