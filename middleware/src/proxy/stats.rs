//! A proxy's upstreams as they stand, for metrics and status pages.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use stackway::readings::UpstreamReading;

use super::dns::Members;

/// A proxy's upstreams as they stand: see [`Proxy::stats`](super::Proxy::stats).
#[derive(Clone)]
pub struct ProxyStats {
    pub(super) upstreams: Arc<OnceLock<Members>>,
    pub(super) specs: Vec<String>,
}

impl ProxyStats {
    /// Each upstream, in the order configured (all up and at zero before the
    /// first request); a host name [resolved](super::Proxy::resolve) again and
    /// again is one per address it has now. An upstream is up when its health
    /// check passes and no run of failures left it out.
    pub fn upstreams(&self) -> Vec<UpstreamReading> {
        match self.upstreams.get() {
            Some(upstreams) => upstreams
                .now()
                .iter()
                .map(|u| UpstreamReading {
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
                .map(|name| UpstreamReading {
                    name: name.clone(),
                    up: true,
                    ..UpstreamReading::default()
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
