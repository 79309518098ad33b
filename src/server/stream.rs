//! HTTP/2 streams, each run as a task of its own with a send clock: a stream
//! whose response waits for the send timeout because the client keeps its
//! flow-control window shut is reset, and the connection's other streams go
//! on.
//!
//! The socket's clock ([`Activity`](super::clock::Activity)) cannot see such a
//! stall: the client reads the socket, so writes never block, while hyper
//! holds the stalled stream's next frame until the window opens. What shows
//! it is the response body: it has handed over a frame and is not asked for
//! the next.
//!
//! ```text
//! stream 1: frame ─▶ taken ─▶ frame ─▶ taken ─▶ …          (flowing)
//! stream 3: frame ─▶ (window shut: not taken for send_timeout) → RST_STREAM
//! ```

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    /// The send clock of the HTTP/2 stream whose task is running.
    static CLOCK: Arc<SendClock>;
}

/// Since when a stream's response body has had a frame waiting to be taken.
#[derive(Debug)]
pub(super) struct SendClock {
    started: Instant,
    /// Milliseconds after `started`, plus one; 0 while nothing waits.
    waiting_since: AtomicU64,
}

impl SendClock {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            waiting_since: AtomicU64::new(0),
        }
    }

    /// The clock of the HTTP/2 stream being served, or `None` on HTTP/1.1,
    /// where the socket's clock sees every stall.
    pub(super) fn current() -> Option<Arc<Self>> {
        CLOCK.try_with(Arc::clone).ok()
    }

    /// A frame was handed over and waits to be taken (`true`), or the body
    /// was asked for the next one (`false`).
    pub(super) fn waiting(&self, waiting: bool) {
        let since = match waiting {
            true => u64::try_from(self.started.elapsed().as_millis()).map_or(u64::MAX, |ms| ms + 1),
            false => 0,
        };
        self.waiting_since.store(since, Ordering::Relaxed);
    }

    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.waiting_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.started + Duration::from_millis(since - 1) + timeout),
        }
    }
}

/// Spawns hyper's HTTP/2 stream tasks with a send clock each.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamExecutor {
    pub(super) send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let timeout = self.send_timeout;
        tokio::spawn(async move {
            let clock = Arc::new(SendClock::new());
            let mut stream = pin!(CLOCK.scope(clock.clone(), stream));
            let mut stalled = pin!(tokio::time::sleep(timeout));
            // The clock changes while the stream is polled, so it is read after
            // every poll; a stalled stream is not woken, and its sleep is.
            poll_fn(|cx| {
                if stream.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                let Some(deadline) = clock.deadline(timeout) else {
                    return Poll::Pending;
                };
                if stalled.deadline() != deadline {
                    stalled.as_mut().reset(deadline);
                }
                if stalled.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Dropping the stream's task resets the stream (RST_STREAM CANCEL).
                tracing::warn!(?timeout, "reset an HTTP/2 stream: the client took no byte of its response for the send timeout");
                Poll::Ready(())
            })
            .await;
        });
    }
}
