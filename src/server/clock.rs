//! The clocks that close a connection which makes no progress: slow to open
//! (a TLS handshake, a PROXY header, a uwsgi packet), idle with no request in
//! flight, slow to send a request head, or unable to write a byte of its
//! response because the client does not read.
//!
//! The socket and the request bookkeeping note what happens in an
//! [`Activity`]. A worker's [`Clocks`] look at all of its connections' at
//! once, every tick (as nginx's timer tree serves all of a worker's
//! connections), and wake a connection whose clock has run out; a connection
//! carries no timer of its own, and opening one arms none. The arithmetic is
//! the pure [`Reading::verdict`], tested below.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use slab::Slab;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Config;
use super::sendfile::StandIns;

/// The clocks of one worker's connections.
pub(super) struct Clocks {
    limits: Limits,
    /// How often they are looked at: an eighth of the shortest limit, within
    /// 10 ms and 1 s. A connection is closed at most this long after its
    /// deadline, never before it.
    tick: Duration,
    watched: Mutex<Slab<Arc<Activity>>>,
}

impl Clocks {
    pub(super) fn new(config: &Config) -> Self {
        let shortest = [
            config.handshake_timeout,
            config.idle_timeout,
            config.header_read_timeout,
            config.send_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::MAX);
        Self {
            limits: Limits::new(config),
            tick: (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            watched: Mutex::new(Slab::new()),
        }
    }

    fn watched(&self) -> MutexGuard<'_, Slab<Arc<Activity>>> {
        // Nothing panics while holding it; were it poisoned, the slab is whole.
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks at every connection's clocks each tick, and wakes all of them
    /// when `phase` changes (the server's, that each of them reads); runs
    /// until dropped.
    pub(super) async fn run<T>(&self, mut phase: watch::Receiver<T>) {
        let mut every = tokio::time::interval(self.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let now = Instant::now();
                    for (_, activity) in self.watched().iter() {
                        activity.look(now, self.limits);
                    }
                }
                // A closed channel disables this arm until the next tick.
                Ok(()) = phase.changed() => {
                    for (_, activity) in self.watched().iter() {
                        activity.watchdog.wake();
                    }
                }
            }
        }
    }

    /// Puts a connection on the clocks until the guard is dropped.
    pub(super) fn watch(&self, activity: &Arc<Activity>) -> Watched<'_> {
        Watched {
            clocks: self,
            key: self.watched().insert(activity.clone()),
        }
    }
}

/// A connection on its worker's clocks; dropped, it is off them.
pub(super) struct Watched<'a> {
    clocks: &'a Clocks,
    key: usize,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.clocks.watched().remove(self.key);
    }
}

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
    /// The connection is still opening: its handshake, header or packet.
    opening: AtomicBool,
    /// The clock that ran out, set by the worker's [`Clocks`]: an
    /// [`Expired`] plus one, or 0 while none has.
    expired: AtomicU8,
    /// The connection's task, woken when a clock runs out.
    watchdog: AtomicWaker,
    /// A request body was left unread: the client may still be sending it.
    pub(super) unread_body: AtomicBool,
    /// The connection speaks HTTP/2 (seen on its first request).
    pub(super) http2: AtomicBool,
    /// A request has begun on the connection.
    begun: AtomicBool,
    /// The server is closing it (graceful shutdown) while the client may be
    /// sending: pipelined requests hyper has read but will not answer.
    pub(super) closing: AtomicBool,
    /// A `101 Switching Protocols` was answered: the socket carries the
    /// other protocol from then on, and a shutdown is a half-close.
    pub(super) upgraded: AtomicBool,
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
#[repr(u8)]
pub(super) enum Expired {
    /// Not opened (TLS handshake, PROXY header, uwsgi packet) within
    /// `handshake_timeout`.
    Handshake,
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
    opening: bool,
    in_flight: bool,
    idle_since: u64,
    first_byte: u64,
    write_blocked: u64,
}

/// The timeouts in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    handshake: u64,
    idle: u64,
    header: u64,
    send: u64,
}

impl Limits {
    fn new(config: &Config) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NEVER / 2);
        Self {
            handshake: ms(config.handshake_timeout),
            idle: ms(config.idle_timeout),
            header: ms(config.header_read_timeout),
            send: ms(config.send_timeout),
        }
    }
}

impl Reading {
    /// Which clock has run out, if one has.
    ///
    /// ```text
    /// opening (handshake, header, packet):  opened      + handshake → Handshake
    /// no request in flight, nothing read:   idle_since  + idle      → Idle
    /// no request in flight, a head begun:   first_byte  + header    → Header
    /// a write blocked (in flight or not):   write_blocked + send    → Send
    /// a request in flight, writes flowing:  none
    /// ```
    fn verdict(self, limits: Limits) -> Option<Expired> {
        if self.opening {
            return (limits.handshake <= self.now).then_some(Expired::Handshake);
        }
        let send = (self.write_blocked != NEVER).then(|| {
            (
                self.write_blocked.saturating_add(limits.send),
                Expired::Send,
            )
        });
        let quiet = (!self.in_flight).then(|| match self.first_byte {
            NEVER => (self.idle_since.saturating_add(limits.idle), Expired::Idle),
            first => (first.saturating_add(limits.header), Expired::Header),
        });
        [send, quiet]
            .into_iter()
            .flatten()
            .find(|(at, _)| *at <= self.now)
            .map(|(_, why)| why)
    }
}

impl Activity {
    /// `plain`: no TLS, so the socket may send files itself; `opening`:
    /// something comes before HTTP (a handshake, a header, a packet), until
    /// [`opened`](Self::opened).
    pub(super) fn new(plain: bool, opening: bool) -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NEVER),
            write_blocked: AtomicU64::new(NEVER),
            opening: AtomicBool::new(opening),
            expired: AtomicU8::new(0),
            watchdog: AtomicWaker::new(),
            unread_body: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            begun: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            stand_ins: (plain && cfg!(target_os = "linux")).then(StandIns::default),
            socket: Socket::default(),
        }
    }

    fn now(&self) -> u64 {
        self.since_opened(Instant::now())
    }

    fn since_opened(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.opened);
        u64::try_from(elapsed.as_millis()).unwrap_or(NEVER - 1)
    }

    /// What came before HTTP is done: the handshake clock stops, the idle one starts.
    pub(super) fn opened(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.opening.store(false, Ordering::Relaxed);
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
        } else if !blocked && since != NEVER {
            self.write_blocked.store(NEVER, Ordering::Relaxed);
        }
    }

    /// The clock that has run out, if one has.
    fn ran_out(&self) -> Option<Expired> {
        match self.expired.load(Ordering::Acquire) {
            0 => None,
            n => Some(EXPIRED[usize::from(n - 1)]),
        }
    }

    /// Ready with the clock that has run out; if none has, the task is woken
    /// when one does, or when the server's phase moves on.
    pub(super) fn poll_expired(&self, cx: &Context<'_>) -> Poll<Expired> {
        if let Some(why) = self.ran_out() {
            return Poll::Ready(why);
        }
        self.watchdog.register(cx.waker());
        self.ran_out().map_or(Poll::Pending, Poll::Ready)
    }

    /// Completes when a clock has run out, saying which.
    pub(super) fn expired(&self) -> impl Future<Output = Expired> + '_ {
        std::future::poll_fn(move |cx| self.poll_expired(cx))
    }

    /// Looks at the clocks at `now`, and wakes the connection if one ran out.
    fn look(&self, now: Instant, limits: Limits) {
        if self.expired.load(Ordering::Relaxed) != 0 {
            return;
        }
        let reading = Reading {
            now: self.since_opened(now),
            opening: self.opening.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed) > 0,
            idle_since: self.idle_since.load(Ordering::Relaxed),
            first_byte: self.first_byte.load(Ordering::Relaxed),
            write_blocked: self.write_blocked.load(Ordering::Relaxed),
        };
        if let Some(why) = reading.verdict(limits) {
            self.expired.store(why as u8 + 1, Ordering::Release);
            self.watchdog.wake();
        }
    }
}

/// Every [`Expired`], in the order of its discriminant.
const EXPIRED: [Expired; 4] = [
    Expired::Handshake,
    Expired::Idle,
    Expired::Header,
    Expired::Send,
];

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
        handshake: 10_000,
        idle: 60_000,
        header: 30_000,
        send: 10_000,
    };

    fn at(now: u64) -> Reading {
        Reading {
            now,
            opening: false,
            in_flight: false,
            idle_since: 0,
            first_byte: NEVER,
            write_blocked: NEVER,
        }
    }

    #[test]
    fn an_idle_connection_expires_after_the_idle_timeout_and_not_before() {
        assert_eq!(at(0).verdict(LIMITS), None);
        assert_eq!(at(59_999).verdict(LIMITS), None);
        assert_eq!(at(60_000).verdict(LIMITS), Some(Expired::Idle));
        let after_a_request = Reading {
            idle_since: 5_000,
            ..at(64_000)
        };
        assert_eq!(after_a_request.verdict(LIMITS), None);
        let later = Reading {
            now: 65_000,
            ..after_a_request
        };
        assert_eq!(later.verdict(LIMITS), Some(Expired::Idle));
    }

    #[test]
    fn an_opening_connection_has_the_handshake_timeout_only() {
        let opening = Reading {
            opening: true,
            first_byte: 1_000,
            write_blocked: 0,
            ..at(9_999)
        };
        // A byte read and a write blocked, yet only the handshake's clock counts.
        assert_eq!(opening.verdict(LIMITS), None);
        let late = Reading {
            now: 10_000,
            ..opening
        };
        assert_eq!(late.verdict(LIMITS), Some(Expired::Handshake));
    }

    #[test]
    fn a_begun_head_has_the_header_timeout_from_its_first_byte() {
        let begun = Reading {
            first_byte: 50_000,
            ..at(70_000)
        };
        // Past the idle deadline, but the head's clock is the one that counts.
        assert_eq!(begun.verdict(LIMITS), None);
        let late = Reading {
            now: 80_000,
            ..begun
        };
        assert_eq!(late.verdict(LIMITS), Some(Expired::Header));
    }

    #[test]
    fn a_request_in_flight_stops_the_idle_and_header_clocks() {
        let busy = Reading {
            in_flight: true,
            first_byte: 0,
            ..at(1_000_000)
        };
        assert_eq!(busy.verdict(LIMITS), None);
    }

    #[test]
    fn a_blocked_write_expires_after_the_send_timeout_in_flight_or_not() {
        for in_flight in [true, false] {
            let blocked = Reading {
                in_flight,
                idle_since: 100_000,
                write_blocked: 100_000,
                ..at(109_999)
            };
            assert_eq!(blocked.verdict(LIMITS), None, "{in_flight}");
            let stalled = Reading {
                now: 110_000,
                ..blocked
            };
            assert_eq!(stalled.verdict(LIMITS), Some(Expired::Send), "{in_flight}");
        }
    }

    #[test]
    fn deadlines_far_away_do_not_overflow() {
        let limits = Limits {
            handshake: NEVER / 2,
            idle: NEVER / 2,
            header: NEVER / 2,
            send: NEVER / 2,
        };
        let reading = Reading {
            idle_since: NEVER - 1,
            write_blocked: NEVER - 1,
            ..at(NEVER - 1)
        };
        assert_eq!(reading.verdict(limits), None);
    }

    #[test]
    fn every_expired_is_found_by_its_discriminant() {
        for (n, why) in EXPIRED.iter().enumerate() {
            assert_eq!(*why as usize, n);
        }
    }

    /// The sweep wakes the connection whose clock ran out, and only it; a
    /// connection off the clocks is not looked at.
    #[tokio::test(start_paused = true)]
    async fn the_sweep_wakes_a_connection_when_its_clock_runs_out() {
        let config = Config {
            idle_timeout: Duration::from_secs(2),
            ..Config::default()
        };
        let clocks = Clocks::new(&config);
        assert_eq!(clocks.tick, Duration::from_millis(250));
        let idle = Arc::new(Activity::new(true, false));
        let busy = Arc::new(Activity::new(true, false));
        let gone = Arc::new(Activity::new(true, false));
        let _idle = clocks.watch(&idle);
        let _busy = clocks.watch(&busy);
        drop(clocks.watch(&gone));
        let _in_flight = InFlight::begin(busy.clone());
        let started = tokio::time::Instant::now();
        tokio::select! {
            () = clocks.run(watch::channel(()).1) => unreachable!("runs until dropped"),
            expired = idle.expired() => assert_eq!(expired, Expired::Idle),
        }
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(2), "{waited:?}");
        assert!(waited <= Duration::from_millis(2_250), "{waited:?}");
        assert_eq!(busy.expired.load(Ordering::Relaxed), 0);
        assert_eq!(gone.expired.load(Ordering::Relaxed), 0);
        assert_eq!(clocks.watched().len(), 2);
    }

    /// A change of phase wakes every connection on the clocks, at once.
    #[tokio::test(start_paused = true)]
    async fn a_new_phase_wakes_every_connection() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let clocks = Clocks::new(&Config::default());
        let (tell, phase) = watch::channel(0);
        let flags: Vec<_> = (0..3)
            .map(|_| Arc::new(Flag(AtomicBool::new(false))))
            .collect();
        let activities: Vec<_> = flags
            .iter()
            .map(|flag| {
                let activity = Arc::new(Activity::new(true, false));
                let waker = std::task::Waker::from(flag.clone());
                assert!(
                    activity
                        .poll_expired(&Context::from_waker(&waker))
                        .is_pending()
                );
                activity
            })
            .collect();
        let _watched: Vec<_> = activities.iter().map(|a| clocks.watch(a)).collect();
        let woken = || flags.iter().filter(|f| f.0.load(Ordering::Relaxed)).count();
        let started = Instant::now();
        tokio::select! {
            () = clocks.run(phase) => unreachable!("runs until dropped"),
            () = async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                assert_eq!(woken(), 0, "nothing ran out, and the phase is the same");
                tell.send_replace(1);
                while woken() < 3 {
                    tokio::task::yield_now().await;
                }
            } => {}
        }
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(activities.iter().all(|a| a.ran_out().is_none()));
    }
}
