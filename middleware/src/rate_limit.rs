//! Request rate and concurrency limits per client (or per header value, or
//! for everything through the app), as nginx's `limit_req` and
//! `limit_conn`.
//!
//! The rate is nginx's leaky bucket: each key's requests drain at `rate`
//! a second, up to `burst` may be waiting beyond it; one more is refused
//! with 429 and a `Retry-After` saying when it would pass. Within the
//! burst a request is delayed until its turn, as nginx does by default, or
//! let through at once with [`nodelay`](RateLimit::nodelay). The
//! concurrency limit refuses (429) a key's request while that many of its
//! requests are in flight, counted until their responses' bodies end. A
//! request without a key (no client address, as on a unix socket, or
//! without the header counted by) is not limited, as in nginx.
//!
//! Memory is bounded however many keys come: at most
//! [`max_keys`](RateLimit::max_keys) are remembered (100,000 by default,
//! about 6 MB), the least recently seen forgotten first (a forgotten key
//! starts again with an empty bucket). The counts are per process: under
//! `--processes N` a client may get N times the rate.
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::RateLimit;
//!
//! // 1 request a second per client, 2 more at once, then 429.
//! let app = RateLimit::new(|_req: stackway::Request| async { "ok" }).rate(1.0).burst(2).nodelay();
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! let from = "192.0.2.1:4000".parse().unwrap();
//! for _ in 0..3 {
//!     client.get("/").remote_addr(from).await.assert_text("ok");
//! }
//! let refused = client.get("/").remote_addr(from).await;
//! refused.assert_status(429);
//! refused.assert_header("retry-after", "1");
//! # });
//! ```

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderName, HeaderValue, StatusCode};
use lru::LruCache;
use stackway::{App, IntoResponse, Request, RequestExt, Response};

/// Shards of the keys' states, each behind a lock of its own.
const SHARDS: usize = 16;

/// Limits requests by rate and concurrency per key; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RateLimit<A> {
    inner: A,
    limits: Arc<Limits>,
}

/// What a [`RateLimit`] counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address (after ProxyFix or the PROXY protocol), as
    /// nginx's `$binary_remote_addr`.
    Client,
    /// A request header's value (an API key).
    Header(HeaderName),
    /// Nothing: every request through the app shares one bucket.
    Mount,
}

#[derive(Debug)]
struct Limits {
    /// Requests a second; `None`: no rate limit.
    rate: Option<f64>,
    burst: f64,
    nodelay: bool,
    concurrency: Option<u32>,
    key: RateKey,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    clock: quanta::Clock,
    started: quanta::Instant,
}

/// A shard's keys, by their hash: hashed once, with the limiter's random key.
type Shard = LruCache<u64, State, BuildHasherDefault<Prehashed>>;

/// The hasher of keys that are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// One key's bucket and requests in flight.
#[derive(Debug, Clone, Copy)]
struct State {
    /// Requests beyond the rate, as of `last` (nginx's `excess`).
    excess: f64,
    /// Seconds since the limiter started.
    last: f64,
    in_flight: u32,
}

/// What a request may do.
enum Admit {
    /// Go, after `delay`; counted in flight while `Some`.
    Go(Duration, Option<InFlight>),
    /// Refused: over the rate, passing again in this many seconds.
    OverRate(u64),
    /// Refused: too many of the key's requests in flight.
    Crowded,
}

impl<A> RateLimit<A> {
    /// Wraps `inner` with no limit yet: see [`rate`](Self::rate) and
    /// [`concurrency`](Self::concurrency).
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            limits: Arc::new(Limits {
                rate: None,
                burst: 0.0,
                nodelay: false,
                concurrency: None,
                key: RateKey::Client,
                hasher: RandomState::new(),
                shards: shards(100_000),
                clock: quanta::Clock::new(),
                started: quanta::Instant::now(),
            }),
        }
    }

    /// At most `per_second` requests a second per key (nginx's `rate=10r/s`;
    /// `0.5` is one every two seconds).
    pub fn rate(mut self, per_second: f64) -> Self {
        self.limits_mut().rate = (per_second > 0.0).then_some(per_second);
        self
    }

    /// Up to `requests` beyond the rate wait their turn (or, with
    /// [`nodelay`](Self::nodelay), go at once) rather than being refused.
    /// Default 0.
    pub fn burst(mut self, requests: u32) -> Self {
        self.limits_mut().burst = f64::from(requests);
        self
    }

    /// Requests within the burst go at once instead of being spaced out at the rate.
    pub fn nodelay(mut self) -> Self {
        self.limits_mut().nodelay = true;
        self
    }

    /// At most `requests` of a key in flight at once (nginx's `limit_conn`,
    /// counted by request).
    pub fn concurrency(mut self, requests: u32) -> Self {
        self.limits_mut().concurrency = Some(requests);
        self
    }

    /// What requests are counted by. Default: [`RateKey::Client`].
    pub fn key(mut self, key: RateKey) -> Self {
        self.limits_mut().key = key;
        self
    }

    /// How many keys are remembered at most. Default 100,000.
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.limits_mut().shards = shards(keys);
        self
    }

    /// How many keys are remembered now.
    pub fn keys(&self) -> usize {
        (self.limits.shards.iter())
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    fn limits_mut(&mut self) -> &mut Limits {
        Arc::get_mut(&mut self.limits).expect("configured before it is shared")
    }

    inner_accessors!();
}

impl<A: App> App for RateLimit<A> {
    async fn call(&self, req: Request) -> Response {
        let Some(key) = self.limits.key_of(&req) else {
            return self.inner.call(req).await;
        };
        match self.limits.admit(key) {
            Admit::Go(delay, in_flight) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let res = self.inner.call(req).await;
                match in_flight {
                    // Counted until the body ends (or is dropped).
                    Some(in_flight) => res.map(|body| body.inspect(move |_| _ = &in_flight)),
                    None => res,
                }
            }
            Admit::OverRate(seconds) => {
                let mut res = StatusCode::TOO_MANY_REQUESTS.into_response();
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
                res
            }
            Admit::Crowded => StatusCode::TOO_MANY_REQUESTS.into_response(),
        }
    }
}

impl Limits {
    /// The hash of the request's key, `None` when it has none.
    fn key_of(&self, req: &Request) -> Option<u64> {
        match &self.key {
            RateKey::Client => {
                let bits = match req.remote_addr()?.ip().to_canonical() {
                    IpAddr::V4(ip) => u128::from(ip.to_bits()),
                    IpAddr::V6(ip) => ip.to_bits(),
                };
                Some(self.hasher.hash_one(bits))
            }
            RateKey::Header(name) => {
                let value = req.headers().get(name)?.as_bytes();
                (!value.is_empty()).then(|| self.hasher.hash_one(value))
            }
            RateKey::Mount => Some(0),
        }
    }

    fn admit(self: &Arc<Self>, key: u64) -> Admit {
        let now = (self.clock.now() - self.started).as_secs_f64();
        let mut shard = self.shards[key as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let state = shard.get_or_insert_mut(key, || State {
            excess: 0.0,
            last: now,
            in_flight: 0,
        });
        if self.concurrency.is_some_and(|max| state.in_flight >= max) {
            return Admit::Crowded;
        }
        let mut delay = Duration::ZERO;
        if let Some(rate) = self.rate {
            // Drained since the last request let through, plus this one.
            let excess = (state.excess - rate * (now - state.last)).max(0.0) + 1.0;
            if excess > self.burst + 1.0 {
                let seconds = ((excess - 1.0 - self.burst) / rate).ceil().max(1.0);
                return Admit::OverRate(seconds as u64);
            }
            (state.excess, state.last) = (excess, now);
            if !self.nodelay {
                delay = Duration::from_secs_f64((excess - 1.0) / rate);
            }
        }
        let in_flight = self.concurrency.map(|_| {
            state.in_flight += 1;
            InFlight {
                limits: self.clone(),
                key,
            }
        });
        Admit::Go(delay, in_flight)
    }
}

/// Room for `keys` keys in all, shard by shard.
fn shards(keys: usize) -> Box<[Mutex<Shard>]> {
    let per_shard = NonZeroUsize::new(keys.div_ceil(SHARDS)).unwrap_or(NonZeroUsize::MIN);
    (0..SHARDS)
        .map(|_| {
            Mutex::new(LruCache::with_hasher(
                per_shard,
                BuildHasherDefault::default(),
            ))
        })
        .collect()
}

/// A request counted in flight until this is dropped.
struct InFlight {
    limits: Arc<Limits>,
    key: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut shard = self.limits.shards[self.key as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A key forgotten meanwhile has started again from none.
        if let Some(state) = shard.peek_mut(&self.key) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}
