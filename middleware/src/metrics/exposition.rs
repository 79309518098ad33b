//! The metrics in Prometheus' text exposition format: every family, encoded
//! from the counters at each scrape.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use stackway::readings::{CacheReading, PoolReading, UpstreamReading};

use super::{METHODS, OUTCOMES, STATUSES, State};

/// Renders the metrics in the text exposition format.
pub(super) fn render(state: &Arc<State>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collect(state.clone())));
    let mut out = String::new();
    let _ = text::encode(&mut out, &registry);
    out
}

/// A family read from a part's reading: its name, help, type and value.
type Family<R> = (&'static str, &'static str, MetricType, fn(&R) -> f64);

/// Each of `families`, one sample per reading, labelled `label` with the
/// reading's name; nothing when there is no reading.
fn families<R>(
    encoder: &mut DescriptorEncoder<'_>,
    label: &'static str,
    readings: &[(&str, R)],
    families: &[Family<R>],
) -> fmt::Result {
    if readings.is_empty() {
        return Ok(());
    }
    for (name, help, kind, value) in families {
        let mut family = encoder.encode_descriptor(name, help, None, *kind)?;
        for (who, reading) in readings {
            let labels = [(label, *who)];
            let mut metric = family.encode_family(&labels)?;
            match kind {
                MetricType::Gauge => metric.encode_gauge(&value(reading))?,
                _ => metric.encode_counter::<NoLabelSet, f64, u64>(&value(reading), None)?,
            }
        }
    }
    Ok(())
}

/// The state, encoded at each scrape.
#[derive(Debug)]
struct Collect(Arc<State>);

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

fn counter<const N: usize>(
    encoder: &mut MetricEncoder<'_>,
    labels: &Labels<'_, N>,
    value: u64,
) -> fmt::Result {
    encoder
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

impl Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let state = &self.0;
        let mounts = state.mounts_sorted();

        let mut family = encoder.encode_descriptor(
            "stackway_requests",
            "Requests answered, by mount, method and status class.",
            None,
            MetricType::Counter,
        )?;
        for (mount, stats) in &mounts {
            for (m, method) in METHODS.iter().enumerate() {
                for (s, status) in STATUSES.iter().enumerate() {
                    let n = stats.requests[m][s].load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [("mount", &**mount), ("method", method), ("status", status)];
                        counter(&mut family, &labels, n)?;
                    }
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "stackway_request_duration_seconds",
            "Time until the response head, by mount.",
            None,
            MetricType::Histogram,
        )?;
        for (mount, stats) in &mounts {
            let (sum, count, buckets) = stats.latency.snapshot();
            family
                .encode_family(&[("mount", &**mount)])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let in_flight = state.in_flight() as i64;
        encoder
            .encode_descriptor(
                "stackway_requests_in_flight",
                "Requests being answered.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&in_flight)?;
        for (name, help, total) in [
            (
                "stackway_request_bytes",
                "Bytes of request bodies read.",
                &state.bytes_in,
            ),
            (
                "stackway_response_bytes",
                "Bytes of response bodies sent.",
                &state.bytes_out,
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, u64, u64>(&total.load(Ordering::Relaxed), None)?;
        }
        let mut family = encoder.encode_descriptor(
            "stackway_static",
            "SharedData's answers: a file read from disk, from its memory cache, or a miss passed on.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in OUTCOMES.iter().zip(&state.statics) {
            counter(
                &mut family,
                &[("outcome", outcome)],
                n.load(Ordering::Relaxed),
            )?;
        }
        if let Some(read) = &state.server {
            let server = read();
            for (name, help, kind, value) in [
                (
                    "stackway_connections_accepted",
                    "Connections accepted.",
                    MetricType::Counter,
                    server.connections_accepted,
                ),
                (
                    "stackway_connections_open",
                    "Connections open.",
                    MetricType::Gauge,
                    server.connections_open,
                ),
                (
                    "stackway_handshakes",
                    "TLS handshakes and PROXY headers completed.",
                    MetricType::Counter,
                    server.handshakes,
                ),
                (
                    "stackway_handshake_failures",
                    "TLS handshakes and PROXY headers that failed.",
                    MetricType::Counter,
                    server.handshake_failures,
                ),
            ] {
                let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
                match kind {
                    MetricType::Gauge => metric.encode_gauge(&value)?,
                    _ => metric.encode_counter::<NoLabelSet, u64, u64>(&value, None)?,
                }
            }
        }
        let upstreams: Vec<(&str, UpstreamReading)> = state
            .upstreams
            .iter()
            .flat_map(|(mount, read)| read().into_iter().map(move |u| (mount.as_str(), u)))
            .collect();
        if !upstreams.is_empty() {
            for (name, help, kind, value) in [
                (
                    "stackway_upstream_requests",
                    "Requests an upstream answered.",
                    MetricType::Counter,
                    (|u: &UpstreamReading| u.answered) as fn(&UpstreamReading) -> u64,
                ),
                (
                    "stackway_upstream_failures",
                    "Attempts that failed: no connection, no or a broken response head.",
                    MetricType::Counter,
                    |u| u.failed,
                ),
                (
                    "stackway_upstream_up",
                    "1 while the balancer may choose the upstream.",
                    MetricType::Gauge,
                    |u| u64::from(u.up),
                ),
                (
                    "stackway_upstream_in_flight",
                    "Requests sent to the upstream and not answered in full.",
                    MetricType::Gauge,
                    |u| u.in_flight,
                ),
                (
                    "stackway_upstream_connections",
                    "Connections open to the upstream, idle in a pool or carrying a request.",
                    MetricType::Gauge,
                    |u| u.connections,
                ),
            ] {
                let mut family = encoder.encode_descriptor(name, help, None, kind)?;
                for (mount, upstream) in &upstreams {
                    let labels = [("mount", *mount), ("upstream", upstream.name.as_str())];
                    let mut metric = family.encode_family(&labels)?;
                    match kind {
                        MetricType::Gauge => metric.encode_gauge(&value(upstream))?,
                        _ => {
                            metric.encode_counter::<NoLabelSet, u64, u64>(&value(upstream), None)?
                        }
                    }
                }
            }
        }
        let pools: Vec<(&str, PoolReading)> = (state.pools.iter())
            .map(|(mount, read)| (mount.as_str(), read()))
            .collect();
        let pool_families: [Family<PoolReading>; 6] = [
            (
                "stackway_pool_threads",
                "Threads in the pool.",
                MetricType::Gauge,
                |r| r.threads as f64,
            ),
            (
                "stackway_pool_busy",
                "Threads running a request.",
                MetricType::Gauge,
                |r| r.busy as f64,
            ),
            (
                "stackway_pool_queued",
                "Requests waiting for a free thread.",
                MetricType::Gauge,
                |r| r.queued as f64,
            ),
            (
                "stackway_pool_jobs",
                "Requests a thread has taken.",
                MetricType::Counter,
                |r| r.jobs as f64,
            ),
            (
                "stackway_pool_wait_seconds",
                "Seconds requests waited for a thread, in all.",
                MetricType::Counter,
                |r| r.waited_seconds,
            ),
            (
                "stackway_pool_harakiri",
                "Requests cut off for running past their limit.",
                MetricType::Counter,
                |r| r.harakiri as f64,
            ),
        ];
        families(&mut encoder, "mount", &pools, &pool_families)?;
        let caches: Vec<(&str, CacheReading)> = (state.caches.iter())
            .map(|(name, read)| (name.as_str(), read()))
            .collect();
        let cache_families: [Family<CacheReading>; 6] = [
            (
                "stackway_cache_hits",
                "Requests answered from the cache without the app.",
                MetricType::Counter,
                |r| r.hits as f64,
            ),
            (
                "stackway_cache_misses",
                "Requests that went to the app with nothing usable stored.",
                MetricType::Counter,
                |r| r.misses as f64,
            ),
            (
                "stackway_cache_revalidated",
                "Stored responses the app said were still good.",
                MetricType::Counter,
                |r| r.revalidated as f64,
            ),
            (
                "stackway_cache_stored",
                "Responses stored.",
                MetricType::Counter,
                |r| r.stored as f64,
            ),
            (
                "stackway_cache_responses",
                "Responses held.",
                MetricType::Gauge,
                |r| r.responses as f64,
            ),
            (
                "stackway_cache_bytes",
                "Bytes held, bodies and fields.",
                MetricType::Gauge,
                |r| r.bytes as f64,
            ),
        ];
        families(&mut encoder, "cache", &caches, &cache_families)?;
        let uptime = state.started.elapsed().as_secs_f64();
        encoder
            .encode_descriptor(
                "stackway_uptime_seconds",
                "Seconds since the stack was built.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&uptime)?;
        Ok(())
    }
}
