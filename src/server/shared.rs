//! What a worker, its connections and their requests share: the server's
//! phase, how a listener's connections are opened, and the settings. Its own
//! module, so that the worker, the connection and the request each import it
//! and none imports the one that calls it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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
    pub(super) stats: Stats,
}

impl Lifecycle {
    pub(super) fn new(stats: Stats) -> Self {
        Self {
            now: AtomicU8::new(Phase::Serving as u8),
            changed: watch::Sender::new(Phase::Serving),
            stats,
        }
    }

    pub(super) fn enter(&self, phase: Phase) {
        self.now.store(phase as u8, Ordering::Release);
        self.changed.send_replace(phase);
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
