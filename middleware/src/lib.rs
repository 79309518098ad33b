//! Middleware for stackway: each one an app that wraps another app.
//!
//! # Example
//!
//! ```
//! use stackway::{Builder, testing::Client};
//! use stackway_middleware::AccessLog;
//!
//! let app = Builder::new()
//!     .wrap(|app| AccessLog::new(app).sink(|_line: &str| {}))
//!     .run(stackway::apps::hello);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/").await.assert_status(200);
//! # });
//! ```

pub mod access_log;
pub mod dispatcher;
pub mod shared_data;

pub use access_log::AccessLog;
pub use dispatcher::{Dispatcher, MountError};
pub use shared_data::SharedData;
