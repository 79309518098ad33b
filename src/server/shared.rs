//! What a worker, its connections and their requests share: the server's
//! phase, how a listener's connections are opened, and the settings. Its own
//! module, so that the worker, the connection and the request each import it
//! and none imports the one that calls it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use http::uri::Scheme;
use hyper::server::conn::{http1, http2};
use tokio::sync::watch;

use super::Config;
use super::clock::Clocks;
use super::stats::Stats;
use super::stream::StreamExecutor;
use super::tls::Tls;

/// Where the server is in its life; every connection watches it (woken by
/// its worker's clocks when it changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum Phase {
    Serving,
    /// Shutdown has begun, with a drain delay: still accepting and serving,
    /// but the health check says 503 and connections are not kept.
    Draining,
    /// Not accepting; in-flight requests finish within the grace period.
    Stopping,
    /// The grace period is over: whatever is still open is dropped.
    Aborted,
}

/// The phase, for the server to set and every connection to read.
#[derive(Debug)]
pub(super) struct Lifecycle {
    now: AtomicU8,
    changed: watch::Sender<Phase>,
    /// How long shutdown drains before it stops accepting, in nanoseconds.
    drain_delay: AtomicU64,
    pub(super) stats: Stats,
}

impl Lifecycle {
    pub(super) fn new(stats: Stats) -> Self {
        Self {
            now: AtomicU8::new(Phase::Serving as u8),
            changed: watch::Sender::new(Phase::Serving),
            drain_delay: AtomicU64::new(0),
            stats,
        }
    }

    /// Enters `phase`, unless the server is there or past it already.
    pub(super) fn enter(&self, phase: Phase) {
        // Under the watch's lock, so that two threads entering phases leave
        // the later one, in both places.
        self.changed.send_if_modified(|now| {
            if *now >= phase {
                return false;
            }
            *now = phase;
            self.now.store(phase as u8, Ordering::Release);
            true
        });
    }

    pub(super) fn drain_delay(&self) -> Duration {
        Duration::from_nanos(self.drain_delay.load(Ordering::Relaxed))
    }

    pub(super) fn set_drain_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.drain_delay.store(nanos, Ordering::Relaxed);
    }

    /// Begins the shutdown: draining when there is a drain delay, else
    /// stopping, at once.
    pub(super) fn begin_shutdown(&self) {
        self.enter(if self.drain_delay().is_zero() {
            Phase::Stopping
        } else {
            Phase::Draining
        });
    }

    /// Completes once the server has reached `phase` or passed it.
    pub(super) async fn reached(&self, phase: Phase) {
        let mut now = self.watch();
        drop(now.wait_for(|now| *now >= phase).await);
    }

    pub(super) fn phase(&self) -> Phase {
        match self.now.load(Ordering::Acquire) {
            0 => Phase::Serving,
            1 => Phase::Draining,
            2 => Phase::Stopping,
            _ => Phase::Aborted,
        }
    }

    pub(super) fn draining(&self) -> bool {
        self.phase() != Phase::Serving
    }

    pub(super) fn watch(&self) -> watch::Receiver<Phase> {
        self.changed.subscribe()
    }
}

/// How connections accepted on one listener are opened.
pub(super) struct Door {
    /// The listener's place among the server's ([`Connection::listener`](crate::Connection::listener)).
    pub(super) listener: usize,
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) scheme: Scheme,
    pub(super) tls: Option<Tls>,
    pub(super) proxy_protocol: bool,
    /// Connections speak uwsgi (uwsgi.rs), not HTTP.
    pub(super) uwsgi: bool,
    /// The app takes a uwsgi packet as it is ([`App::takes_packets`](crate::App::takes_packets)):
    /// a plain one is read for it so.
    pub(super) packets: bool,
}

/// What every connection of a worker shares.
pub(super) struct Shared {
    /// HTTP/1 connections' (protocol.rs tells HTTP/1 from HTTP/2).
    pub(super) http1: http1::Builder,
    /// uwsgi's: the request head made from the packet is HTTP/1; the front
    /// sends one request and nothing after it, so hyper does not read for its
    /// end while the app runs (HTTP/1 half-close allowed): a front that has
    /// gone is found at the response's write, as uWSGI finds it.
    pub(super) uwsgi: http1::Builder,
    pub(super) http2: http2::Builder<StreamExecutor>,
    pub(super) config: Config,
    pub(super) clocks: Clocks,
    pub(super) lifecycle: Arc<Lifecycle>,
}
