//! In a supervised process: once the process has served `--max-requests`
//! (plus its jitter) it asks the supervisor for a replacement and drains, as
//! gunicorn's and uWSGI's workers do: that request's response says
//! `Connection: close`, the process accepts nothing more, and the requests
//! in flight finish. What comes meanwhile waits in the slot's socket, which
//! the supervisor holds open, for the other processes or the replacement: no
//! request is refused, and none is served past the limit but those that were
//! in flight when it was reached.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::Either;
use stackway::app::BoxFuture;
use stackway::environ::Packet;
use stackway::http::header::CONNECTION;
use stackway::http::{HeaderValue, StatusCode, Version};
use stackway::server::Shutdown;
use stackway::{App, BoxApp, Request, Response};

use crate::restart;

/// `inner`, counting its requests.
pub(crate) struct AfterRequests {
    inner: BoxApp,
    limit: u64,
    served: AtomicU64,
    shutdown: Shutdown,
}

impl AfterRequests {
    pub(crate) fn new(inner: BoxApp, limit: u64, shutdown: Shutdown) -> Self {
        Self {
            inner,
            limit,
            served: AtomicU64::new(0),
            shutdown,
        }
    }
}

impl App for AfterRequests {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        if !self.counted() {
            return Either::Left(self.inner.call(req));
        }
        let http1 = req.version() < Version::HTTP_2;
        let response = self.inner.call(req);
        Either::Right(async move { last(response.await, http1) })
    }

    /// A uwsgi packet the app takes counts as its request would; one it
    /// hands back is counted as the request made of it.
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        let http1 = packet.version() < Version::HTTP_2;
        let response = self.inner.call_packet(packet)?;
        if !self.counted() {
            return Ok(response);
        }
        Ok(Box::pin(async move { last(response.await, http1) }))
    }

    fn takes_packets(&self) -> bool {
        self.inner.takes_packets()
    }
}

impl AfterRequests {
    /// Counts a request; whether it is the last, for which the server now
    /// stops accepting (before the app has answered: the client's next
    /// connection is not this process's) and a replacement is asked for.
    fn counted(&self) -> bool {
        if self.served.fetch_add(1, Ordering::Relaxed) + 1 != self.limit {
            return false;
        }
        tracing::info!(
            requests = self.limit,
            "max-requests served: draining, a replacement asked for"
        );
        restart::report("RECYCLE=max-requests");
        self.shutdown.begin();
        true
    }
}

/// The last request's response, which says itself that the connection
/// closes, for the drain may come after a quick one's head is out (but a
/// switch to WebSocket says `Upgrade`, and goes on).
fn last(mut response: Response, http1: bool) -> Response {
    if http1 && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
