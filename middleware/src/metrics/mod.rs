//! Prometheus metrics for a stack, in the text exposition format, as nginx's
//! `stub_status` and HAProxy's stats say what they are doing.
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::{Dispatcher, Metrics};
//!
//! let app = Metrics::new(Dispatcher::default().mount("/api", stackway::apps::hello));
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/api/you").await.assert_status(200);
//! let scraped = client.get("/metrics").await;
//! assert!(scraped.text().contains(
//!     r#"stackway_requests_total{mount="/api",method="GET",status="2xx"} 1"#
//! ));
//! # });
//! ```
//!
//! # What is measured
//!
//! | metric | labels |
//! |---|---|
//! | `stackway_requests_total` (counter) | `mount`, `method` (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, other), `status` (1xx … 5xx) |
//! | `stackway_request_duration_seconds` (histogram, until the response head) | `mount` |
//! | `stackway_requests_in_flight` (gauge) | |
//! | `stackway_request_bytes_total`, `stackway_response_bytes_total` (counters) | |
//! | `stackway_static_total` (counter: SharedData's answers) | `outcome` (file, memory, miss) |
//! | `stackway_connections_accepted_total`, `stackway_connections_open`, `stackway_handshakes_total`, `stackway_handshake_failures_total` | with [`server`](Metrics::server) |
//!
//! `mount` is the prefix a [`Dispatcher`](crate::Dispatcher) mount or a
//! [`SharedData`](crate::SharedData) export was configured with (the
//! outermost one a request went through), `none` for a request neither
//! handled: never the request's path, so no request can add a label value.

mod exposition;
mod status;

use self::exposition::render;
pub use status::StatusPage;

use std::collections::HashMap;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::Either;
use http::{HeaderValue, Method, header};
use http_body::Body as _;

use stackway::app::BoxFuture;
use stackway::environ::Packet;
use stackway::notes::{Mount, Notes, Noting, Served};
use stackway::readings::{CacheReading, PoolReading, ServerReading, UpstreamReading};
use stackway::{App, IntoResponse, Request, Response};

/// Serves Prometheus metrics at a path and counts every other request; see
/// the [module docs](self).
#[derive(Debug, Clone)]
pub struct Metrics<A> {
    inner: A,
    /// Where the exposition is served, if in the stack at all.
    path: Option<String>,
    state: Arc<State>,
}

impl<A> Metrics<A> {
    /// Counts requests to `inner` and serves the metrics at `/metrics`.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            path: Some("/metrics".to_owned()),
            state: Arc::new(State {
                started: Instant::now(),
                clock: quanta::Clock::new(),
                server: None,
                started_requests: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                bytes_in: Arc::new(AtomicU64::new(0)),
                bytes_out: Arc::new(AtomicU64::new(0)),
                statics: Default::default(),
                mounts: RwLock::default(),
                cached: (0..CACHED_MOUNTS).map(|_| OnceLock::new()).collect(),
                unmounted: Arc::default(),
                errors: Mutex::default(),
                upstreams: Vec::new(),
                pools: Vec::new(),
                caches: Vec::new(),
            }),
        }
    }

    /// Serves the metrics at `path` instead (a request for it is not counted).
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// Counts without serving the metrics in the stack: serve
    /// [`exposition`](Self::exposition) elsewhere (an admin listener).
    pub fn no_endpoint(mut self) -> Self {
        self.path = None;
        self
    }

    /// An app that serves these metrics at `path` (404 elsewhere).
    pub fn exposition(&self, path: &str) -> Exposition {
        Exposition {
            state: self.state.clone(),
            path: path.to_owned(),
        }
    }

    /// Also reports the upstreams of a pool mounted at `mount`: `read` is
    /// called at each scrape (`stackway_upstream_*{mount, upstream}`), as in
    /// `.upstreams("/api", move || stats.upstreams())` with a
    /// [`Proxy::stats`](crate::proxy::Proxy::stats).
    pub fn upstreams(
        mut self,
        mount: &str,
        read: impl Fn() -> Vec<UpstreamReading> + Send + Sync + 'static,
    ) -> Self {
        Arc::get_mut(&mut self.state)
            .expect("configured before it is shared")
            .upstreams
            .push((mount.to_owned(), Box::new(read)));
        self
    }

    /// Also reports a thread pool (a WSGI mount's Python threads) at `mount`:
    /// `read` is called at each scrape (`stackway_pool_*{mount}`), as in
    /// `.pool("/app", move || stats.reading())` with a WSGI mount's stats.
    pub fn pool(
        mut self,
        mount: &str,
        read: impl Fn() -> PoolReading + Send + Sync + 'static,
    ) -> Self {
        Arc::get_mut(&mut self.state)
            .expect("configured before it is shared")
            .pools
            .push((mount.to_owned(), Box::new(read)));
        self
    }

    /// Also reports an HTTP cache named `name`: `read` is called at each
    /// scrape (`stackway_cache_*{cache}`), as in `.cache("pages", move ||
    /// stats.reading())` with a [`Cache::stats`](crate::Cache::stats).
    pub fn cache(
        mut self,
        name: &str,
        read: impl Fn() -> CacheReading + Send + Sync + 'static,
    ) -> Self {
        Arc::get_mut(&mut self.state)
            .expect("configured before it is shared")
            .caches
            .push((name.to_owned(), Box::new(read)));
        self
    }

    /// Also reports the server's connections and handshakes: `read` is
    /// called at each scrape, as in `.server(move || stats.reading())` with
    /// the [`Server::stats`](stackway::Server::stats) taken before it runs.
    pub fn server(mut self, read: impl Fn() -> ServerReading + Send + Sync + 'static) -> Self {
        Arc::get_mut(&mut self.state)
            .expect("configured before it is shared")
            .server = Some(Box::new(read));
        self
    }

    /// The live status page over these counters (at `/status`, its JSON at
    /// `/status.json`); serve it apart, on an admin listener, or in front of
    /// the stack.
    pub fn status_page(&self) -> StatusPage {
        StatusPage::new(self.state.clone())
    }

    /// The metrics in the text exposition format, as a scrape gets them.
    pub fn render(&self) -> String {
        render(&self.state)
    }
}

impl<A: App> App for Metrics<A> {
    // Not an `async fn`: the request is handed to the inner app before the
    // future is made, and the future is a struct of its own, so it holds the
    // inner one and a few numbers once (an `async` block holding the inner
    // future would hold it twice: as captured, and as pinned to poll).
    fn call(&self, mut req: Request) -> impl Future<Output = Response> + Send {
        let state = &*self.state;
        if self.path.as_deref() == Some(req.uri().path()) {
            return Either::Left(std::future::ready(Exposition::respond(render(&self.state))));
        }
        state.started_requests.fetch_add(1, Ordering::Relaxed);
        let method = method_class(req.method());
        count_body(req.body_mut(), &state.bytes_in);
        let started = state.clock.raw();
        Either::Right(Counted {
            answered: Notes::scope(self.inner.call(req)),
            state,
            started,
            method,
            done: false,
        })
    }

    /// A uwsgi packet the app behind takes is counted as its request would
    /// be (it has no body); the exposition's is answered as a request.
    fn call_packet(&self, packet: Box<Packet>) -> Result<BoxFuture<'_, Response>, Box<Packet>> {
        if self.path.as_deref() == Some(packet.target().path()) {
            return Err(packet);
        }
        let method = method_class(packet.method());
        let state = &*self.state;
        let started = state.clock.raw();
        let answered = self.inner.call_packet(packet)?;
        state.started_requests.fetch_add(1, Ordering::Relaxed);
        Ok(Box::pin(Counted {
            answered: Notes::scope(answered),
            state,
            started,
            method,
            done: false,
        }))
    }

    fn takes_packets(&self) -> bool {
        self.inner.takes_packets()
    }
}

pin_project_lite::pin_project! {
    /// A request being answered under [`Metrics`], counted when the answer
    /// comes (or as cancelled if it is dropped before).
    struct Counted<'a, F: Future> {
        #[pin]
        answered: Noting<F>,
        state: &'a State,
        started: u64,
        method: usize,
        done: bool,
    }

    impl<F: Future> PinnedDrop for Counted<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            if !this.done {
                this.state.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<F: Future<Output = Response>> Future for Counted<'_, F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let mut this = self.project();
        let mut res = std::task::ready!(this.answered.as_mut().poll(cx));
        let state = *this.state;
        let elapsed = state.clock.delta_as_nanos(*this.started, state.clock.raw());
        *this.done = true;
        let method = *this.method;
        let notes = this.answered.take_value().unwrap_or_default();
        let label = notes.mount();
        let stats = match label {
            Some(label) => state.mount(label),
            None => Found::Cached(&state.unmounted),
        };
        let status = usize::from(res.status().as_u16() / 100).clamp(1, 5) - 1;
        if status == 4 {
            state.failed(method, res.status().as_u16(), label);
        }
        stats.requests[method][status].fetch_add(1, Ordering::Relaxed);
        stats.latency.observe(elapsed);
        if let Some(served) = notes.served() {
            let outcome = match served {
                Served::File => 0,
                Served::Memory => 1,
                Served::Passed => 2,
            };
            state.statics[outcome].fetch_add(1, Ordering::Relaxed);
        }
        count_body(res.body_mut(), &state.bytes_out);
        Poll::Ready(res)
    }
}

/// Serves a [`Metrics`]' counters in the text exposition format, apart
/// from the stack it counts; see [`Metrics::exposition`].
#[derive(Debug, Clone)]
pub struct Exposition {
    state: Arc<State>,
    path: String,
}

impl Exposition {
    /// Whether `req` asks for the metrics.
    pub fn serves(&self, req: &Request) -> bool {
        self.serves_path(req.uri().path())
    }

    /// Whether a request for `path` asks for the metrics.
    pub fn serves_path(&self, path: &str) -> bool {
        path == self.path
    }

    /// The metrics in the text exposition format, as a scrape gets them.
    pub fn render(&self) -> String {
        render(&self.state)
    }

    /// A scrape's response for `text` (an exposition, perhaps several
    /// summed): its content type, and not to be cached.
    pub fn respond(text: String) -> Response {
        let mut res = text.into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

impl App for Exposition {
    async fn call(&self, req: Request) -> Response {
        match req.uri().path() == self.path {
            true => Self::respond(self.render()),
            false => stackway::http::StatusCode::NOT_FOUND.into_response(),
        }
    }
}

/// What `Body::inspect` shows of each poll.
type Polled = Poll<Option<Result<http_body::Frame<bytes::Bytes>, stackway::Error>>>;

/// Adds the length of `body` to `total`: at once when it is known (an
/// empty body adds nothing), else as its frames pass.
fn count_body(body: &mut stackway::Body, total: &Arc<AtomicU64>) {
    match body.size_hint().exact() {
        Some(0) => {}
        Some(len) => {
            total.fetch_add(len, Ordering::Relaxed);
        }
        None => {
            let total = total.clone();
            *body = std::mem::take(body).inspect(move |polled: &Polled| {
                if let Poll::Ready(Some(Ok(frame))) = polled {
                    let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                    total.fetch_add(len, Ordering::Relaxed);
                }
            });
        }
    }
}

const NONE: &str = "none";
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const OUTCOMES: [&str; 3] = ["file", "memory", "miss"];

fn method_class(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The upper bounds of the latency buckets, in seconds (Prometheus' defaults
/// with a 0.5 ms bucket in front).
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// [`BUCKETS`] in nanoseconds, as requests are timed.
const BUCKET_NANOS: [u64; BUCKETS.len()] = {
    let mut nanos = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        nanos[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// How many mounts (by [`Mount::index`]) a [`State`] finds without a lookup.
const CACHED_MOUNTS: usize = 256;

struct State {
    started: Instant,
    /// Times requests: the CPU's time-stamp counter where it is steady
    /// (calibrated once, here): half the cost of two `Instant` readings.
    clock: quanta::Clock,
    server: Option<Reader<ServerReading>>,
    /// Requests begun; less those answered and those cancelled, the
    /// requests in flight (one counter a request, not two).
    started_requests: AtomicU64,
    /// Requests whose future was dropped before the answer (the client
    /// went away).
    cancelled: AtomicU64,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    statics: [AtomicU64; 3],
    /// By mount prefix; only prefixes configured in the stack ever arrive.
    mounts: RwLock<HashMap<Box<str>, Arc<MountStats>>>,
    /// The same stats by [`Mount::index`], once a request found them: a
    /// request costs no lookup and no lock.
    cached: Box<[OnceLock<Arc<MountStats>>]>,
    /// Requests no mount answered (`mount="none"`).
    unmounted: Arc<MountStats>,
    /// The last 5xx answers, newest last, for the status page.
    errors: Mutex<VecDeque<Failure>>,
    /// Upstream pools reported, by mount prefix: read at each scrape.
    upstreams: Vec<(String, Reader<Vec<UpstreamReading>>)>,
    /// Thread pools reported, by mount prefix: read at each scrape.
    pools: Vec<(String, Reader<PoolReading>)>,
    /// HTTP caches reported, by name: read at each scrape.
    caches: Vec<(String, Reader<CacheReading>)>,
}

/// How a statistic kept elsewhere is read at each scrape.
type Reader<T> = Box<dyn Fn() -> T + Send + Sync>;

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("mounts", &self.mounts)
            .field(
                "upstreams",
                &self.upstreams.iter().map(|(m, _)| m).collect::<Vec<_>>(),
            )
            .field(
                "pools",
                &self.pools.iter().map(|(m, _)| m).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A 5xx answer, for the status page.
#[derive(Debug)]
struct Failure {
    at: Instant,
    method: &'static str,
    status: u16,
    mount: String,
}

/// How many 5xx answers the status page lists.
const FAILURES: usize = 20;

#[derive(Debug, Default)]
pub(crate) struct MountStats {
    requests: [[AtomicU64; 5]; 8],
    latency: Histogram,
}

/// A histogram of atomics: one bucket counter each, a count and a sum.
#[derive(Debug, Default)]
struct Histogram {
    /// One counter per bucket, the `+Inf` one last: their sum is the count.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, nanos: u64) {
        let at = BUCKET_NANOS
            .iter()
            .position(|&le| nanos <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// The sum, the count, and each bucket's own count (the encoder adds
    /// them up), with the `+Inf` bucket (`f64::MAX` to the encoder) last.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .chain([&f64::MAX])
            .zip(&self.buckets)
            .map(|(&le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

impl State {
    fn failed(&self, method: usize, status: u16, label: Option<&Mount>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() == FAILURES {
            errors.pop_front();
        }
        errors.push_back(Failure {
            at: Instant::now(),
            method: METHODS[method],
            status,
            mount: label.map_or(NONE, Mount::as_str).to_owned(),
        });
    }

    /// Requests begun and neither answered nor cancelled. The counters are
    /// read one after the other, so a request that ends in between may be
    /// missed: never less than zero.
    fn in_flight(&self) -> u64 {
        let answered: u64 = self
            .mounts
            .read()
            .expect("not poisoned")
            .values()
            .chain([&self.unmounted])
            .map(|stats| stats.latency.count())
            .sum();
        let ended = answered + self.cancelled.load(Ordering::Relaxed);
        self.started_requests
            .load(Ordering::Relaxed)
            .saturating_sub(ended)
    }

    /// Every mount counted so far, `none` among them, by label.
    fn mounts_sorted(&self) -> Vec<(Arc<str>, Arc<MountStats>)> {
        let mut mounts: Vec<(Arc<str>, Arc<MountStats>)> = self
            .mounts
            .read()
            .expect("not poisoned")
            .iter()
            .map(|(label, stats)| (Arc::from(&**label), stats.clone()))
            .chain([(Arc::from(NONE), self.unmounted.clone())])
            .filter(|(_, stats)| stats.latency.count() > 0)
            .collect();
        mounts.sort_by(|a, b| a.0.cmp(&b.0));
        mounts
    }

    /// The stats of `mount`: found by its index after the first request.
    fn mount(&self, mount: &Mount) -> Found<'_> {
        match self.cached.get(mount.index()) {
            Some(slot) => Found::Cached(slot.get_or_init(|| self.stats_of(mount.as_str()))),
            None => Found::Looked(self.stats_of(mount.as_str())),
        }
    }

    /// The stats of the mount named `name`, made on its first request.
    fn stats_of(&self, name: &str) -> Arc<MountStats> {
        let known = self.mounts.read().expect("not poisoned").get(name).cloned();
        known.unwrap_or_else(|| {
            let mut mounts = self.mounts.write().expect("not poisoned");
            mounts.entry(name.into()).or_default().clone()
        })
    }
}

/// A mount's stats, from the cache by index or looked up.
enum Found<'a> {
    Cached(&'a MountStats),
    Looked(Arc<MountStats>),
}

impl std::ops::Deref for Found<'_> {
    type Target = MountStats;

    fn deref(&self) -> &MountStats {
        match self {
            Self::Cached(stats) => stats,
            Self::Looked(stats) => stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_lands_in_the_first_bucket_it_fits_and_the_sum_keeps_it_exact() {
        assert_eq!(BUCKET_NANOS[0], 500_000);
        assert_eq!(BUCKET_NANOS[BUCKETS.len() - 1], 2_500_000_000);
        let histogram = Histogram::default();
        for nanos in [500_000, 500_001, 2_500_000_000, 2_500_000_001] {
            histogram.observe(nanos);
        }
        let (sum, count, buckets) = histogram.snapshot();
        let counts: Vec<u64> = buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
        assert_eq!(count, 4);
        assert_eq!(sum, 5.001000002);
    }
}
