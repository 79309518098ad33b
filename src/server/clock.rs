//! The clocks that close a connection which makes no progress: idle with no
//! request in flight, slow to send a request head, or unable to write a byte
//! of its response because the client does not read.
//!
//! The socket and the request bookkeeping note what happens in an
//! [`Activity`]; [`Activity::expired`] sleeps until the earliest deadline and
//! says which one passed. The arithmetic is the pure [`Reading::verdict`],
//! tested below.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::Config;
use super::sendfile::StandIns;

/// What a connection did and when, in milliseconds since it opened.
pub(super) struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: AtomicU64,
    /// The first byte read after `idle_since`, or `NEVER`.
    first_byte: AtomicU64,
    /// Since when a write has found the socket full, or `NEVER`.
    write_blocked: AtomicU64,
    /// Wakes [`expired`](Self::expired) when a deadline comes nearer: a
    /// write starts to block.
    changed: Notify,
    /// A request body was left unread: the client may still be sending it.
    pub(super) unread_body: AtomicBool,
    /// The connection speaks HTTP/2 (seen on its first request).
    pub(super) http2: AtomicBool,
    /// A request has begun on the connection.
    begun: AtomicBool,
    /// The server is closing it (graceful shutdown) while the client may be
    /// sending: pipelined requests hyper has read but will not answer.
    pub(super) closing: AtomicBool,
    /// What the stand-ins for file bytes handed to hyper stand for, on a
    /// connection that sends files with `sendfile` (a plain one, on Linux).
    pub(super) stand_ins: Option<StandIns>,
    /// After an upgrade: the socket, in the hands of whoever took it.
    pub(super) socket: Socket,
}

/// The socket as its owner leaves it for the connection's books, which
/// outlive hyper's hold on it when a connection is upgraded (a WebSocket):
/// whether it is still open, whether it moved bytes since last looked at,
/// and a way to close it from outside.
#[derive(Default)]
pub(super) struct Socket {
    closed: AtomicBool,
    /// Notified when the socket is dropped.
    dropped: Notify,
    /// Reads and writes that moved bytes; only the socket's owner adds to it.
    moved: AtomicU64,
    /// Set to cut the socket off: its reads and writes fail from then on.
    pub(super) cut: AtomicBool,
    /// The tasks waiting on the socket, woken when it is cut off.
    pub(super) reader: AtomicWaker,
    pub(super) writer: AtomicWaker,
}

impl Socket {
    /// Whether the socket is still open somewhere.
    pub(super) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    pub(super) fn dropped(&self) {
        self.closed.store(true, Ordering::Release);
        self.dropped.notify_one();
    }

    /// A read or write moved bytes.
    pub(super) fn moved(&self) {
        let n = self.moved.load(Ordering::Relaxed);
        self.moved.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Makes every read and write of the socket fail, and wakes the tasks
    /// waiting on it to see so.
    pub(super) fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    /// Completes when the socket has moved no byte for `idle`, or when it is
    /// dropped (`false`).
    pub(super) async fn idle_for(&self, idle: Duration) -> bool {
        // Looked at four times an idle period: closed between 1 and 1.25 of it.
        let tick = (idle / 4).max(Duration::from_millis(1));
        let (mut seen, mut quiet) = (self.moved.load(Ordering::Relaxed), Duration::ZERO);
        while self.is_open() {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = self.dropped.notified() => {}
            }
            let now = self.moved.load(Ordering::Relaxed);
            quiet = if now == seen {
                quiet + tick
            } else {
                Duration::ZERO
            };
            seen = now;
            if quiet >= idle {
                return true;
            }
        }
        false
    }
}

const NEVER: u64 = u64::MAX;

/// Why a connection is closed by its clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// No request in flight and no byte read for `idle_timeout`.
    Idle,
    /// A request head begun and not completed within `header_read_timeout`.
    Header,
    /// No byte of a response could be written for `send_timeout`.
    Send,
}

/// The clocks read at one moment.
#[derive(Debug, Clone, Copy)]
struct Reading {
    now: u64,
    in_flight: bool,
    idle_since: u64,
    first_byte: u64,
    write_blocked: u64,
}

/// The timeouts in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: u64,
    header: u64,
    send: u64,
}

impl Limits {
    fn new(config: &Config) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NEVER / 2);
        Self {
            idle: ms(config.idle_timeout),
            header: ms(config.header_read_timeout),
            send: ms(config.send_timeout),
        }
    }
}

impl Reading {
    /// Which clock has run out, or how long until the next one might.
    ///
    /// ```text
    /// no request in flight, nothing read:   idle_since  + idle    → Idle
    /// no request in flight, a head begun:   first_byte  + header  → Header
    /// a write blocked (in flight or not):   write_blocked + send  → Send
    /// a request in flight, writes flowing:  none; look again after the shortest limit
    /// ```
    ///
    /// A head's first byte does not wake the clock (that would cost every
    /// request a wakeup and a new timer): an idle connection is looked at
    /// again within the header timeout instead, in time to hold a head that
    /// begins meanwhile to its own deadline.
    fn verdict(self, limits: Limits) -> Result<u64, Expired> {
        let send = (self.write_blocked != NEVER).then(|| {
            let at = self.write_blocked.saturating_add(limits.send);
            (at, Expired::Send)
        });
        let quiet = (!self.in_flight).then(|| match self.first_byte {
            NEVER => (self.idle_since.saturating_add(limits.idle), Expired::Idle),
            first => (first.saturating_add(limits.header), Expired::Header),
        });
        let deadlines = [send, quiet].into_iter().flatten();
        if let Some((_, why)) = deadlines.clone().find(|(at, _)| *at <= self.now) {
            return Err(why);
        }
        let look_again = match (self.in_flight, self.first_byte) {
            (true, _) => limits.idle.min(limits.header).min(limits.send),
            (false, NEVER) => limits.header,
            (false, _) => NEVER,
        };
        let next = deadlines.map(|(at, _)| at - self.now).min();
        Ok(next.map_or(look_again, |next| next.min(look_again)))
    }
}

impl Activity {
    /// `plain`: no TLS, so the socket may send files itself.
    pub(super) fn new(plain: bool) -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NEVER),
            write_blocked: AtomicU64::new(NEVER),
            changed: Notify::new(),
            unread_body: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            begun: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stand_ins: (plain && cfg!(target_os = "linux")).then(StandIns::default),
            socket: Socket::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// Whether the client may still be sending when the server closes: a body
    /// left unread, a request under way, bytes of a next one already here, or
    /// a shutdown that stopped reading requests the client had sent.
    pub(super) fn client_may_be_sending(&self) -> bool {
        self.unread_body.load(Ordering::Relaxed)
            || self.closing.load(Ordering::Relaxed)
            || self.in_flight.load(Ordering::Relaxed) > 0
            || self.first_byte.load(Ordering::Relaxed) != NEVER
    }

    /// Whether the connection has not yet begun a request, nor sent a byte
    /// of one: just accepted.
    pub(super) fn untouched(&self) -> bool {
        !self.begun.load(Ordering::Relaxed) && self.first_byte.load(Ordering::Relaxed) == NEVER
    }

    pub(super) fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.first_byte.load(Ordering::Relaxed) == NEVER
        {
            self.first_byte.store(self.now(), Ordering::Relaxed);
        }
    }

    /// A write found the socket full (`blocked`), or wrote bytes (`!blocked`).
    pub(super) fn write_blocked(&self, blocked: bool) {
        let since = self.write_blocked.load(Ordering::Relaxed);
        if blocked && since == NEVER {
            self.write_blocked.store(self.now(), Ordering::Relaxed);
            self.changed.notify_one();
        } else if !blocked && since != NEVER {
            self.write_blocked.store(NEVER, Ordering::Relaxed);
        }
    }

    /// Completes when a clock has run out, saying which.
    pub(super) async fn expired(&self, config: &Config) -> Expired {
        let limits = Limits::new(config);
        loop {
            let reading = Reading {
                now: self.now(),
                in_flight: self.in_flight.load(Ordering::Relaxed) > 0,
                idle_since: self.idle_since.load(Ordering::Relaxed),
                first_byte: self.first_byte.load(Ordering::Relaxed),
                write_blocked: self.write_blocked.load(Ordering::Relaxed),
            };
            let wait = match reading.verdict(limits) {
                Err(expired) => return expired,
                Ok(wait) => Duration::from_millis(wait.max(1)),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// Counts a request as in flight from when it arrives until its response body
/// has been sent (or dropped).
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.begun.store(true, Ordering::Relaxed);
        Self(activity)
    }

    pub(super) fn activity(&self) -> &Activity {
        &self.0
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        idle: 60_000,
        header: 30_000,
        send: 10_000,
    };

    fn at(now: u64) -> Reading {
        Reading {
            now,
            in_flight: false,
            idle_since: 0,
            first_byte: NEVER,
            write_blocked: NEVER,
        }
    }

    #[test]
    fn an_idle_connection_expires_after_the_idle_timeout_and_not_before() {
        // Looked at again within the header timeout, should a head begin.
        assert_eq!(at(0).verdict(LIMITS), Ok(30_000));
        assert_eq!(at(30_000).verdict(LIMITS), Ok(30_000));
        assert_eq!(at(59_999).verdict(LIMITS), Ok(1));
        assert_eq!(at(60_000).verdict(LIMITS), Err(Expired::Idle));
        let after_a_request = Reading {
            idle_since: 5_000,
            ..at(64_000)
        };
        assert_eq!(after_a_request.verdict(LIMITS), Ok(1_000));
    }

    #[test]
    fn a_begun_head_has_the_header_timeout_from_its_first_byte() {
        let begun = Reading {
            first_byte: 50_000,
            ..at(70_000)
        };
        // Past the idle deadline, but the head's clock is the one that counts.
        assert_eq!(begun.verdict(LIMITS), Ok(10_000));
        let late = Reading {
            now: 80_000,
            ..begun
        };
        assert_eq!(late.verdict(LIMITS), Err(Expired::Header));
    }

    #[test]
    fn a_head_begun_while_the_clock_sleeps_is_held_to_its_own_deadline() {
        // Idle at 0: the clock sleeps 30 s. A head begins at 10 s, unseen.
        assert_eq!(at(0).verdict(LIMITS), Ok(30_000));
        let woken = Reading {
            first_byte: 10_000,
            ..at(30_000)
        };
        // Woken at 30 s, in time: the head's deadline is 40 s.
        assert_eq!(woken.verdict(LIMITS), Ok(10_000));
        let late = Reading {
            now: 40_000,
            ..woken
        };
        assert_eq!(late.verdict(LIMITS), Err(Expired::Header));
    }

    #[test]
    fn a_request_in_flight_stops_the_idle_and_header_clocks() {
        let busy = Reading {
            in_flight: true,
            first_byte: 0,
            ..at(1_000_000)
        };
        // Nothing can expire; look again after the shortest limit.
        assert_eq!(busy.verdict(LIMITS), Ok(10_000));
    }

    #[test]
    fn a_blocked_write_expires_after_the_send_timeout_in_flight_or_not() {
        for in_flight in [true, false] {
            let blocked = Reading {
                in_flight,
                idle_since: 100_000,
                write_blocked: 100_000,
                ..at(104_000)
            };
            assert_eq!(blocked.verdict(LIMITS), Ok(6_000), "{in_flight}");
            let stalled = Reading {
                now: 110_000,
                ..blocked
            };
            assert_eq!(stalled.verdict(LIMITS), Err(Expired::Send), "{in_flight}");
        }
    }

    #[test]
    fn deadlines_far_away_do_not_overflow() {
        let limits = Limits {
            idle: NEVER / 2,
            header: NEVER / 2,
            send: NEVER / 2,
        };
        let reading = Reading {
            idle_since: NEVER - 1,
            write_blocked: NEVER - 1,
            ..at(NEVER - 1)
        };
        assert!(reading.verdict(limits).is_ok());
    }
}
