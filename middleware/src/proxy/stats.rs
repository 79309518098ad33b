//! A proxy's upstreams as they stand, for metrics and status pages.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use super::upstream::Upstream;

/// A proxy's upstreams as they stand: see [`Proxy::stats`](super::Proxy::stats).
#[derive(Clone)]
pub struct ProxyStats {
    pub(super) upstreams: Arc<OnceLock<Vec<Arc<Upstream>>>>,
    pub(super) specs: Vec<String>,
}

/// One upstream as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStats {
    /// The upstream as configured (`http://127.0.0.1:9000`).
    pub name: String,
    /// Requests that got a response head from it.
    pub answered: u64,
    /// Attempts that failed (no connection, no or a broken response head).
    pub failed: u64,
    /// Whether the balancer may choose it now (its health check passes and
    /// no run of failures left it out).
    pub up: bool,
    /// Requests sent to it and not yet answered in full.
    pub in_flight: u64,
    /// Connections open to it, idle in a pool or carrying a request.
    pub connections: u64,
}

impl ProxyStats {
    /// Each upstream, in the order configured (all up and at zero before the
    /// first request).
    pub fn upstreams(&self) -> Vec<UpstreamStats> {
        match self.upstreams.get() {
            Some(upstreams) => upstreams
                .iter()
                .map(|u| UpstreamStats {
                    name: u.name.to_string(),
                    answered: u.answered.load(Ordering::Relaxed),
                    failed: u.failed.load(Ordering::Relaxed),
                    up: u.is_up(),
                    in_flight: u.outstanding.load(Ordering::Relaxed) as u64,
                    connections: u.connections() as u64,
                })
                .collect(),
            None => self
                .specs
                .iter()
                .map(|name| UpstreamStats {
                    name: name.clone(),
                    answered: 0,
                    failed: 0,
                    up: true,
                    in_flight: 0,
                    connections: 0,
                })
                .collect(),
        }
    }
}

impl fmt::Debug for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyStats")
            .field("upstreams", &self.specs)
            .finish()
    }
}
