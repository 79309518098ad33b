//! Statistics one part keeps and another reads: the server's connections, a
//! pool of upstreams, a pool of threads. The part that keeps them gives a
//! reading when asked ([`Stats::reading`](crate::server::Stats::reading), a
//! proxy's upstreams, a WSGI mount's thread pool); an observer (Metrics, a
//! status page) asks for one at each scrape, through a closure, so it reads
//! a part written anywhere the same way.
//!
//! Each reading is a plain struct with public fields and a `Default`, so a
//! part written outside this repository builds one with
//! `..Default::default()` for what it does not keep.

/// The server's connections as they stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerReading {
    /// Connections accepted since the server started.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections opened by a handshake on a TLS or PROXY protocol listener.
    pub handshakes: u64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: u64,
}

/// One upstream of a pool as it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamReading {
    /// The upstream as configured (`http://127.0.0.1:9000`).
    pub name: String,
    /// Requests that got a response head from it.
    pub answered: u64,
    /// Attempts that failed (no connection, no or a broken response head).
    pub failed: u64,
    /// Whether a balancer may choose it now.
    pub up: bool,
    /// Requests sent to it and not yet answered in full.
    pub in_flight: u64,
    /// Connections open to it, idle in a pool or carrying a request.
    pub connections: u64,
}

/// A pool of threads (a WSGI mount's Python threads) as it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolReading {
    /// Threads in the pool.
    pub threads: usize,
    /// Threads running a request.
    pub busy: usize,
    /// Requests waiting for a free thread.
    pub queued: usize,
    /// Requests a thread has taken, since the start.
    pub jobs: u64,
    /// Seconds those requests waited for a thread, in all.
    pub waited_seconds: f64,
    /// Requests cut off for running past their limit (harakiri).
    pub harakiri: u64,
}

/// An HTTP cache as it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReading {
    /// Requests answered from the cache without the app.
    pub hits: u64,
    /// Requests that went to the app with nothing usable stored.
    pub misses: u64,
    /// Stored responses the app said were still good (a `304`).
    pub revalidated: u64,
    /// Responses stored, since the start.
    pub stored: u64,
    /// Responses held now.
    pub responses: u64,
    /// Bytes held now, bodies and fields.
    pub bytes: u64,
}
