//! Middleware for stackway: each one an app that wraps another app.
//!
//! Each middleware is behind a feature of its name (`cors`, `shared-data`,
//! `proxy`, …), all on by default but `otel`; with `default-features =
//! false`, a program compiles only the middleware it names, and only their
//! dependencies (`compress` brings async-compression, `metrics`
//! prometheus-client, `proxy` hyper's client, `router` matchit). The prefix
//! grammar ([`prefix`]) is always there.
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
#[allow(unused_macros)] // with no middleware's feature on
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

#[cfg(feature = "access")]
pub mod access;
#[cfg(feature = "access-log")]
pub mod access_log;
#[cfg(feature = "basic-auth")]
pub mod basic_auth;
#[cfg(feature = "body-limit")]
pub mod body_limit;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "catch-panic")]
pub mod catch_panic;
#[cfg(feature = "compress")]
pub mod compress;
#[cfg(feature = "cors")]
pub mod cors;
#[cfg(feature = "dispatcher")]
pub mod dispatcher;
#[cfg(feature = "error-pages")]
pub mod error_pages;
#[cfg(feature = "forward-auth")]
pub mod forward_auth;
#[cfg(feature = "lint")]
pub mod lint;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod prefix;
#[cfg(feature = "profiler")]
pub mod profiler;
#[cfg(feature = "proxy")]
pub mod proxy;
#[cfg(feature = "proxy-fix")]
pub mod proxy_fix;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "request-id")]
pub mod request_id;
#[cfg(feature = "router")]
pub mod router;
#[cfg(feature = "set-headers")]
pub mod set_headers;
#[cfg(feature = "shared-data")]
pub mod shared_data;
#[cfg(feature = "timeout")]
pub mod timeout;
#[cfg(feature = "trace-context")]
pub mod trace_context;

#[cfg(feature = "access")]
pub use access::Access;
#[cfg(feature = "access-log")]
pub use access_log::AccessLog;
#[cfg(feature = "basic-auth")]
pub use basic_auth::BasicAuth;
#[cfg(feature = "body-limit")]
pub use body_limit::BodyLimit;
#[cfg(feature = "cache")]
pub use cache::Cache;
#[cfg(feature = "catch-panic")]
pub use catch_panic::CatchPanic;
#[cfg(feature = "compress")]
pub use compress::Compress;
#[cfg(feature = "cors")]
pub use cors::Cors;
#[cfg(feature = "dispatcher")]
pub use dispatcher::Dispatcher;
#[cfg(feature = "error-pages")]
pub use error_pages::ErrorPages;
#[cfg(feature = "forward-auth")]
pub use forward_auth::ForwardAuth;
#[cfg(feature = "lint")]
pub use lint::Lint;
#[cfg(feature = "metrics")]
pub use metrics::Metrics;
pub use prefix::MountError;
#[cfg(feature = "profiler")]
pub use profiler::Profiler;
#[cfg(feature = "proxy")]
pub use proxy::Proxy;
#[cfg(feature = "proxy-fix")]
pub use proxy_fix::ProxyFix;
#[cfg(feature = "rate-limit")]
pub use rate_limit::RateLimit;
#[cfg(feature = "request-id")]
pub use request_id::RequestIds;
#[cfg(feature = "router")]
pub use router::Router;
#[cfg(feature = "set-headers")]
pub use set_headers::SetHeaders;
#[cfg(feature = "shared-data")]
pub use shared_data::{ExportError, SharedData};
#[cfg(feature = "timeout")]
pub use timeout::Timeout;
#[cfg(feature = "trace-context")]
pub use trace_context::TraceContext;
