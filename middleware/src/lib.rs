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

/// `get_ref`, `get_mut` and `into_inner` for a middleware whose wrapped app
/// is its field `inner`, as every wrapper here has.
macro_rules! inner_accessors {
    () => {
        /// The wrapped app.
        pub fn get_ref(&self) -> &A {
            &self.inner
        }

        /// The wrapped app, mutably.
        pub fn get_mut(&mut self) -> &mut A {
            &mut self.inner
        }

        /// Unwraps the app.
        pub fn into_inner(self) -> A {
            self.inner
        }
    };
}

pub mod access_log;
pub mod body_limit;
pub mod catch_panic;
pub mod compress;
pub mod cors;
pub mod dispatcher;
pub mod lint;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod prefix;
pub mod profiler;
pub mod proxy;
pub mod proxy_fix;
pub mod request_id;
pub mod router;
pub mod set_headers;
pub mod shared_data;
pub mod timeout;
pub mod trace_context;

pub use access_log::AccessLog;
pub use body_limit::BodyLimit;
pub use catch_panic::CatchPanic;
pub use compress::Compress;
pub use cors::Cors;
pub use dispatcher::{Dispatcher, MountError};
pub use lint::Lint;
pub use metrics::Metrics;
pub use profiler::Profiler;
pub use proxy::Proxy;
pub use proxy_fix::ProxyFix;
pub use request_id::RequestIds;
pub use router::Router;
pub use set_headers::SetHeaders;
pub use shared_data::{ExportError, SharedData};
pub use timeout::Timeout;
pub use trace_context::TraceContext;
