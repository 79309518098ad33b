//! The upstream's response body on its way to the client: it fails, rather
//! than ends, when the upstream breaks or stalls, so the client's connection
//! is aborted instead of a truncated body looking complete; and it keeps its
//! request counted as outstanding until it is done. The request body on its
//! way out: its progress, and what a pool keeps of it for the next upstream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// A request body kept for the next upstream of a pool while one is left to
/// ask: what was sent of it (up to [`KEPT`] bytes) and the rest, not yet
/// read from the client. A request whose upstream failed goes to the next
/// with its body whole, as nginx, which reads a body first
/// (`proxy_request_buffering`), sends it; a body past the bound, or one with
/// trailers, is not kept, and its request is not asked again.
pub(crate) struct Held(Arc<Mutex<Slot>>);

/// The bytes of a request body kept for the next upstream.
const KEPT: usize = 1 << 20;

struct Slot {
    /// Frames an upstream before was sent, to send before the rest.
    again: VecDeque<Bytes>,
    /// The frames sent, while they are kept.
    sent: Option<Vec<Bytes>>,
    kept: usize,
    /// What the client has yet to send; gone once the body is taken back
    /// for the next upstream.
    rest: Option<stackway::Body>,
}

impl Slot {
    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(sent) = &mut self.sent else { return };
        match frame.data_ref() {
            Some(data) if self.kept + data.len() <= KEPT => {
                self.kept += data.len();
                sent.push(data.clone());
            }
            _ => self.sent = None,
        }
    }
}

impl Held {
    /// `body` to send, and, if `more` upstreams are left to go to, the hold
    /// on it.
    pub(crate) fn if_more(body: stackway::Body, more: bool) -> (stackway::Body, Option<Self>) {
        match more {
            true => {
                let (body, held) = Self::hold(VecDeque::new(), body);
                (body, Some(held))
            }
            false => (body, None),
        }
    }

    fn hold(again: VecDeque<Bytes>, rest: stackway::Body) -> (stackway::Body, Self) {
        let slot = Arc::new(Mutex::new(Slot {
            again,
            sent: Some(Vec::new()),
            kept: 0,
            rest: Some(rest),
        }));
        let body = HeldBody { slot: slot.clone() };
        (stackway::Body::new(body), Self(slot))
    }

    /// The body whole once more, for the next upstream (held again if `more`
    /// are left after it), unless what was sent of it was not kept. The
    /// request it went with can send no more of it.
    pub(crate) fn again(self, more: bool) -> Option<(stackway::Body, Option<Self>)> {
        let (again, rest) = {
            let mut slot = lock(&self.0);
            let sent = slot.sent.take()?;
            let rest = slot.rest.take()?;
            let mut again = VecDeque::from(sent);
            again.append(&mut slot.again);
            (again, rest)
        };
        let (body, held) = Self::hold(again, rest);
        Some((body, more.then_some(held)))
    }
}

impl Drop for Held {
    /// Once no upstream is left to go to, nothing more is kept.
    fn drop(&mut self) {
        let mut slot = lock(&self.0);
        slot.sent = None;
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

struct HeldBody {
    slot: Arc<Mutex<Slot>>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = stackway::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut slot = lock(&self.slot);
        let frame = match slot.again.pop_front() {
            Some(data) => Frame::data(data),
            None => {
                let Some(rest) = &mut slot.rest else {
                    // An error, not an end: the upstream this request was
                    // sent to must not take a body cut short for whole.
                    return Poll::Ready(Some(Err("the body went to the next upstream".into())));
                };
                match ready!(Pin::new(rest).poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    other => return Poll::Ready(other.map(|r| r.map_err(Into::into))),
                }
            }
        };
        slot.keep(&frame);
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let slot = lock(&self.slot);
        slot.again.is_empty()
            && slot
                .rest
                .as_ref()
                .is_some_and(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let slot = lock(&self.slot);
        let queued: u64 = slot.again.iter().map(|data| data.len() as u64).sum();
        let rest = slot.rest.as_ref().map(http_body::Body::size_hint);
        let rest = rest.unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + queued);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + queued);
        }
        hint
    }
}
