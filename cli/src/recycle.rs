//! In a supervised process: asks the supervisor for a replacement once the
//! process has served `--max-requests` (plus its jitter), as gunicorn's
//! workers do. The process goes on serving until the replacement is ready
//! and the supervisor tells it to drain, so no request is refused.

use std::sync::atomic::{AtomicU64, Ordering};

use stackway::{App, BoxApp, Request, Response};

use crate::restart;

/// `inner`, counting its requests.
pub(crate) struct AfterRequests {
    inner: BoxApp,
    limit: u64,
    served: AtomicU64,
}

impl AfterRequests {
    pub(crate) fn new(inner: BoxApp, limit: u64) -> Self {
        Self {
            inner,
            limit,
            served: AtomicU64::new(0),
        }
    }
}

impl App for AfterRequests {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        if self.served.fetch_add(1, Ordering::Relaxed) + 1 == self.limit {
            tracing::info!(requests = self.limit, "asking to be replaced: max-requests");
            restart::report("RECYCLE=max-requests");
        }
        self.inner.call(req)
    }
}
