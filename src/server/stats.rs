//! What a server has done so far, for metrics and status pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::readings::ServerReading;

/// A running server's counters, read at any time from any thread; clones
/// share them. Get one with [`Server::stats`](super::Server::stats) before
/// the server runs.
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    closed: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_failures: AtomicU64,
}

impl Stats {
    /// Connections accepted since the server started.
    pub fn connections_accepted(&self) -> u64 {
        self.0.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        // Read `closed` first: a connection is counted closed only after accepted.
        let closed = self.0.closed.load(Ordering::Relaxed);
        self.0
            .accepted
            .load(Ordering::Relaxed)
            .saturating_sub(closed)
    }

    /// Connections opened by a handshake on a TLS or PROXY protocol
    /// listener: the TLS handshake done and the PROXY header read.
    pub fn handshakes(&self) -> u64 {
        self.0.tls_handshakes.load(Ordering::Relaxed)
    }

    /// Handshakes that failed or timed out: a TLS handshake refused, a PROXY
    /// protocol header missing or invalid.
    pub fn handshake_failures(&self) -> u64 {
        self.0.tls_failures.load(Ordering::Relaxed)
    }

    /// All of the above at once, as metrics and status pages read them.
    pub fn reading(&self) -> ServerReading {
        ServerReading {
            connections_accepted: self.connections_accepted(),
            connections_open: self.connections_open(),
            handshakes: self.handshakes(),
            handshake_failures: self.handshake_failures(),
        }
    }

    pub(super) fn accepted(&self) {
        self.0.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn closed(&self) {
        self.0.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn handshake(&self, ok: bool) {
        let counter = if ok {
            &self.0.tls_handshakes
        } else {
            &self.0.tls_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
