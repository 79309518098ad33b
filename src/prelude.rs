//! What an app needs, in one `use`: the interface, reading requests, writing
//! responses, and the `http` names every handler meets.
//!
//! ```
//! use stackway::prelude::*;
//!
//! async fn create(mut req: Request) -> Result<(StatusCode, Json<String>), Rejection> {
//!     let name: String = req.json().await?;
//!     Ok((StatusCode::CREATED, Json(format!("made {name}"))))
//! }
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! stackway::testing::Client::new(create)
//!     .post("/").header("content-type", "application/json").body(r#""ada""#)
//!     .await
//!     .assert_status(201)
//!     .assert_text(r#""made ada""#);
//! # });
//! ```

pub use crate::response;
pub use crate::{
    App, Body, BoxApp, Builder, Extract, Html, IntoResponse, Json, Rejection, Request, RequestExt,
    Response, from_fn, with_state,
};
pub use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
