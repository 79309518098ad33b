//! Active health checks: each upstream is asked for a path at an interval,
//! and left out of the balance while it does not answer 2xx or 3xx (HAProxy's
//! `option httpchk`). Passive checks, in `upstream.rs`, see only failures of
//! real requests; these also see an upstream that answers, but badly.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Request;
use stackway::Body;

use super::upstream::Upstream;

/// What to ask, and how often.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) path: String,
    pub(crate) interval: Duration,
}

/// Checks `upstream` until it is dropped, on the current runtime.
pub(crate) fn spawn(upstream: &Arc<Upstream>, check: Check) {
    let upstream = Arc::downgrade(upstream);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(check.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(healthy) = probe(&upstream, &check).await else {
                return; // the proxy is gone
            };
            match upstream.upgrade() {
                Some(upstream) => upstream.set_healthy(healthy),
                None => return,
            }
        }
    });
}

/// One check: `None` once the upstream is gone, else whether it passed.
async fn probe(upstream: &Weak<Upstream>, check: &Check) -> Option<bool> {
    let sent = {
        let upstream = upstream.upgrade()?;
        let req = Request::get(upstream.uri(check.path.clone()))
            .body(Body::empty())
            .ok()?;
        upstream.send(req, false, false)
    };
    // A check that takes longer than the interval has failed.
    let answered = tokio::time::timeout(check.interval, sent).await;
    Some(
        matches!(answered, Ok(Ok(res)) if res.status().is_success() || res.status().is_redirection()),
    )
}
