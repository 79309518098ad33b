//! When a connection last did something, and when it has been idle or
//! stalled for too long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Config;

/// When a connection last did something, in milliseconds since it opened.
pub(super) struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: AtomicU64,
    /// The first byte read after `idle_since`, or `NEVER`.
    first_byte: AtomicU64,
    /// A request body was left unread: the client may still be sending it.
    pub(super) unread_body: AtomicBool,
}

const NEVER: u64 = u64::MAX;

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NEVER),
            unread_body: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// Whether the client may still be sending when the server closes: a body
    /// left unread, a request under way, or bytes of a next one already here.
    pub(super) fn client_may_be_sending(&self) -> bool {
        self.unread_body.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Relaxed) > 0
            || self.first_byte.load(Ordering::Relaxed) != NEVER
    }

    pub(super) fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.first_byte.load(Ordering::Relaxed) == NEVER
        {
            self.first_byte.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Completes when the connection has had no request in flight for too long:
    /// `idle_timeout` with nothing read, or `header_read_timeout` after the first
    /// byte of a request head that has not been completed.
    pub(super) async fn expired(&self, config: &Config) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NEVER / 2);
        let (idle, header) = (ms(config.idle_timeout), ms(config.header_read_timeout));
        loop {
            let deadline = if self.in_flight.load(Ordering::Relaxed) > 0 {
                self.now() + idle.min(header)
            } else {
                match self.first_byte.load(Ordering::Relaxed) {
                    NEVER => self.idle_since.load(Ordering::Relaxed).saturating_add(idle),
                    first => first.saturating_add(header),
                }
            };
            let now = self.now();
            if deadline <= now && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now).max(1))).await;
        }
    }
}

/// Counts a request as in flight from when it arrives until its response body
/// has been sent (or dropped).
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Relaxed);
            activity.first_byte.store(NEVER, Ordering::Relaxed);
        }
    }
}
