//! The upstream's response body on its way to the client: it fails, rather
//! than ends, when the upstream breaks or stalls, so the client's connection
//! is aborted instead of a truncated body looking complete; and it keeps its
//! request counted as outstanding until it is done.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::pool::Leased;
use super::upstream::{InFlight, Upstream};

pub(crate) struct UpstreamBody {
    incoming: Leased,
    /// Released with the body.
    _in_flight: InFlight,
    timeout: Duration,
    /// Running while no frame has come: the idle body timeout.
    waiting: Option<Pin<Box<Sleep>>>,
    /// For the log: which upstream.
    upstream: Arc<str>,
}

impl UpstreamBody {
    /// Wraps `incoming`, whose request is counted `in_flight` at `upstream`.
    pub(crate) fn new(
        incoming: Leased,
        upstream: &Upstream,
        in_flight: InFlight,
        timeout: Duration,
    ) -> Self {
        Self {
            incoming,
            _in_flight: in_flight,
            timeout,
            waiting: None,
            upstream: upstream.name.clone(),
        }
    }
}

/// Why a response body from the upstream stopped short.
#[derive(Debug)]
pub(crate) struct Broken(String);

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Broken {}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                let why = format!("{}: the response body broke off: {e}", this.upstream);
                tracing::warn!("{why}");
                Poll::Ready(Some(Err(Broken(why))))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(waiting.as_mut().poll(cx));
                let why = format!(
                    "{}: no byte of the response body for {timeout:?}",
                    this.upstream
                );
                tracing::warn!("{why}");
                Poll::Ready(Some(Err(Broken(why))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// When the request to an upstream last made progress: sent, or a frame of
/// its body taken by the upstream connection. The response head is due
/// within the read timeout of that, so a long upload that keeps moving is not
/// cut off (nginx's `proxy_send_timeout` and `proxy_read_timeout` at once).
#[derive(Debug)]
pub(crate) struct Progress {
    started: Instant,
    /// Milliseconds after `started`.
    last: AtomicU64,
    /// The body waits for the client, not the upstream for the body.
    waiting_on_client: AtomicBool,
}

impl Progress {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout`, saying whether the
    /// client was the one not sending.
    pub(crate) async fn stalled(&self, timeout: Duration) -> bool {
        loop {
            let last = self.last.load(Ordering::Relaxed);
            let deadline = self.started + Duration::from_millis(last) + timeout;
            tokio::time::sleep_until(deadline.into()).await;
            if self.last.load(Ordering::Relaxed) == last {
                return self.waiting_on_client.load(Ordering::Relaxed);
            }
        }
    }
}

/// A request body on its way to an upstream, noting each frame taken (and
/// when it waits for the client) in `progress`.
pub(crate) fn sent(body: stackway::Body, progress: Arc<Progress>) -> stackway::Body {
    body.inspect(move |polled| {
        progress
            .waiting_on_client
            .store(polled.is_pending(), Ordering::Relaxed);
        if polled.is_ready() {
            progress.touch();
        }
    })
}

/// A request body that can be taken back until its first frame is asked
/// for: a request whose connection to its upstream failed never sent a byte
/// of it, and goes to the next upstream of the pool with it, whatever its
/// method, as nginx's `proxy_next_upstream error` sends it; so does an
/// idempotent one whose upstream took none of its body.
pub(crate) struct Held(Arc<std::sync::Mutex<Option<stackway::Body>>>);

impl Held {
    /// `body` to send, and, if `more` upstreams are left to go to, the hold
    /// on it.
    pub(crate) fn if_more(body: stackway::Body, more: bool) -> (stackway::Body, Option<Self>) {
        if !more {
            return (body, None);
        }
        let slot = Arc::new(std::sync::Mutex::new(Some(body)));
        let sent = HeldBody {
            slot: slot.clone(),
            body: None,
        };
        (stackway::Body::new(sent), Some(Self(slot)))
    }

    /// The body, if nothing of it was asked for.
    pub(crate) fn take_back(&self) -> Option<stackway::Body> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

struct HeldBody {
    slot: Arc<std::sync::Mutex<Option<stackway::Body>>>,
    /// Out of the slot once a frame was asked for.
    body: Option<stackway::Body>,
}

impl HeldBody {
    fn in_slot<R>(&self, f: impl FnOnce(&stackway::Body) -> R) -> Option<R> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(f)
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = stackway::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.body.is_none() {
            let taken = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            self.body = taken;
        }
        match &mut self.body {
            Some(body) => http_body::Body::poll_frame(Pin::new(body), cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => http_body::Body::is_end_stream(body),
            None => (self.in_slot(http_body::Body::is_end_stream)).unwrap_or(true),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => http_body::Body::size_hint(body),
            None => (self.in_slot(http_body::Body::size_hint))
                .unwrap_or_else(|| SizeHint::with_exact(0)),
        }
    }
}
