//! A shared HTTP cache (RFC 9111) in front of any app: responses that may
//! be stored are kept in memory (or on disk, [`on_disk`](Cache::on_disk))
//! and served again while fresh, stale ones are revalidated with the app,
//! and what changes the app's state invalidates what it stored.
//!
//! - **Storing** (§3): `GET` responses with a final status, not `no-store`
//!   (request or response) nor `private`, with explicit freshness (`max-age`,
//!   `s-maxage`, `Expires`, `public`) or a status cacheable by default;
//!   responses to a request with `Authorization` only with `public`,
//!   `s-maxage` or `must-revalidate`. Hop-by-hop fields are not stored. The
//!   body is kept as it streams to the client, never held back from it; one
//!   longer than [`max_object`](Cache::max_object) is passed on unstored.
//! - **Freshness** (§4.2): `s-maxage`, `max-age`, `Expires` less `Date`, else
//!   a tenth of the time since `Last-Modified` (at most a day); an invalid
//!   value is stale. The age counts `Age`, the response's delay and its time
//!   here, and is sent as `Age`. A request's `max-age`, `min-fresh`,
//!   `max-stale`, `no-cache` (and `Pragma: no-cache`) and `only-if-cached`
//!   are honoured.
//! - **Validation** (§4.3): a stale response with a validator is
//!   revalidated with `If-None-Match`/`If-Modified-Since`; a `304` updates
//!   the stored fields and serves the stored body. A client's own
//!   conditional request, and ranges of a stored whole response
//!   (`If-Range` compared strongly), are answered from the cache.
//! - **Stale content** (RFC 5861): within `stale-while-revalidate` a stale
//!   response is served while a task of its own revalidates it (one a
//!   target); within `stale-if-error` it answers in place of a server error.
//!   Never for `must-revalidate`, `proxy-revalidate` or `s-maxage`.
//! - **`CDN-Cache-Control`** (RFC 9213), when valid, takes the place of
//!   `Cache-Control` and `Expires` for this cache; so does nginx's
//!   `X-Accel-Expires` (`0`: not stored, `N`: N seconds, `@T`: until T), for
//!   apps written for `proxy_cache`.
//! - **Variants** (§4.1): `Vary` selects among responses stored for one
//!   target, the fields' lines combined and their members trimmed; `Vary: *`
//!   is never reused.
//! - **Invalidation** (§4.4): a successful unsafe request (`POST`, `PUT`,
//!   `DELETE`, …) forgets its target, and its `Location` and
//!   `Content-Location` on the same origin.
//! - **Collapsing**: while a miss for a target is being fetched, other
//!   misses for it wait for that response (nginx's `proxy_cache_lock`) for
//!   at most [`lock_timeout`](Cache::lock_timeout), then are answered from
//!   the cache or go to the app themselves.
//! - **`Cache-Status`** (RFC 9211) on every response says what the cache did:
//!   `stackway; hit`, `stackway; fwd=uri-miss; stored`,
//!   `stackway; fwd=stale; fwd-status=304`, …
//! - **On disk** ([`Cache::on_disk`]): bodies in files, written as they
//!   stream by and put in place whole, sent with `sendfile`; they outlive a
//!   restart and are shared by the processes that open one directory.
//! - **Purging**: [`Cache::purger`] forgets by URL, prefix or tag
//!   (`Cache-Tag`, `Surrogate-Key`).
//!
//! # Example
//!
//! ```
//! use stackway::testing::Client;
//! use stackway_middleware::Cache;
//!
//! let app = Cache::new(
//!     |_req: stackway::Request| async {
//!         http::Response::builder()
//!             .header("cache-control", "max-age=60")
//!             .body(stackway::Body::from("expensive"))
//!             .unwrap()
//!     },
//!     64 << 20,
//! );
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let client = Client::new(app);
//! client.get("/page").await.assert_header("cache-status", "stackway; fwd=uri-miss; stored");
//! client.get("/page").await.assert_header("cache-status", "stackway; hit; ttl=60");
//! # });
//! ```

mod directives;
mod disk;
mod freshness;
mod keys;
mod payload;
mod store;

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    LAST_MODIFIED, LOCATION, PRAGMA, RANGE,
};
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use stackway::range::{self, Ranges};
use stackway::readings::CacheReading;
use stackway::{App, Body, FilePart, Request, Response};
use tokio::sync::watch;

use directives::Directives;
use freshness::Timing;
use keys::Variant;
use payload::{Contents, Payload};
use store::{Store, Stored};

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A shared HTTP cache in front of an app; see the [module docs](self).
pub struct Cache<A> {
    /// Shared with the background revalidations of `stale-while-revalidate`.
    inner: Arc<A>,
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    max_object: usize,
    lock_timeout: Duration,
    /// Misses being fetched, by key: the others wait for the sender to go.
    fetching: Mutex<HashMap<String, watch::Receiver<()>>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    revalidated: AtomicU64,
    stored: AtomicU64,
}

impl<A> Cache<A> {
    /// Caches `inner`'s responses in at most `capacity` bytes of memory
    /// (bodies and fields), the least recently used going first.
    pub fn new(inner: A, capacity: usize) -> Self {
        Self {
            inner: Arc::new(inner),
            shared: Arc::new(Shared {
                store: Store::new(capacity),
                max_object: capacity / 4,
                lock_timeout: Duration::from_secs(5),
                fetching: Mutex::default(),
                counters: Counters::default(),
            }),
        }
    }

    /// The largest body stored; longer ones are passed on unstored. Default:
    /// a quarter of the capacity.
    pub fn max_object(mut self, bytes: usize) -> Self {
        self.shared_mut().max_object = bytes;
        self
    }

    /// How long a miss waits for another request's fetch of the same
    /// target before going to the app itself. Default 5 s (nginx's
    /// `proxy_cache_lock_timeout`).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.shared_mut().lock_timeout = timeout;
        self
    }

    /// Keeps the bodies in files under `dir` (made if need be) in place of
    /// memory, `capacity` then bounding the bytes there; fields stay in
    /// memory too. What an earlier cache stored in `dir` is served again,
    /// and several processes may share one: each finds what another
    /// stored, and keeps the bound over the responses it has seen. A body
    /// is written as it streams to the client and served from its file as
    /// soon as it is whole, while the file is synced and renamed into
    /// place; a crash mid-write leaves nothing to serve. A `304`'s fields
    /// update a stored response in memory only: after a restart it is
    /// revalidated once more.
    pub fn on_disk(mut self, dir: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let capacity = self.shared.store.capacity();
        self.shared_mut().store = Store::on_disk(capacity, dir.as_ref())?;
        Ok(self)
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.shared).expect("configured before it is shared")
    }

    /// What the cache did and holds, live, for metrics and status pages.
    pub fn stats(&self) -> CacheStats {
        CacheStats(self.shared.clone())
    }

    /// What forgets stored responses on demand, from anywhere (an admin
    /// endpoint, a deploy hook).
    pub fn purger(&self) -> Purger {
        Purger(self.shared.clone())
    }

    /// The wrapped app.
    pub fn get_ref(&self) -> &A {
        &self.inner
    }
}

/// Forgets what a cache stored, by target, by prefix or by tag; each call
/// says how many responses (variants included) it forgot. See
/// [`Cache::purger`].
#[derive(Clone)]
pub struct Purger(Arc<Shared>);

impl Purger {
    /// The responses stored for `url`: a whole URL (`https://example.com/a?b`)
    /// names one target, a path with its query (`/a?b`) that target on
    /// every host.
    pub fn url(&self, url: &str) -> usize {
        self.0
            .store
            .remove_where(|key, _| match url.contains("://") {
                true => key.eq_ignore_ascii_case(url),
                false => keys::target(key) == url,
            })
    }

    /// The responses stored for every target under `prefix`, a whole URL's
    /// or a path's (then on every host).
    pub fn prefix(&self, prefix: &str) -> usize {
        self.0
            .store
            .remove_where(|key, _| match prefix.contains("://") {
                true => key.starts_with(prefix),
                false => keys::target(key).starts_with(prefix),
            })
    }

    /// The responses tagged `tag` by their `Cache-Tag` (comma-separated) or
    /// `Surrogate-Key` (space-separated) field, as CDNs purge them.
    pub fn tag(&self, tag: &str) -> usize {
        let tagged = |stored: &Stored, name: &str, separator: char| {
            (stored.headers.get_all(name).iter()).any(|line| {
                (line.to_str().unwrap_or_default().split(separator)).any(|t| t.trim() == tag)
            })
        };
        self.0.store.remove_where(|_, stored| {
            tagged(stored, "cache-tag", ',') || tagged(stored, "surrogate-key", ' ')
        })
    }
}

impl fmt::Debug for Purger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Purger").finish_non_exhaustive()
    }
}

/// A cache's counters: see [`Cache::stats`].
#[derive(Clone)]
pub struct CacheStats(Arc<Shared>);

impl CacheStats {
    /// Requests answered from the cache without the app.
    pub fn hits(&self) -> u64 {
        self.0.counters.hits.load(Ordering::Relaxed)
    }

    /// Requests that went to the app with nothing usable stored.
    pub fn misses(&self) -> u64 {
        self.0.counters.misses.load(Ordering::Relaxed)
    }

    /// Stored responses the app said were still good (a `304`).
    pub fn revalidated(&self) -> u64 {
        self.0.counters.revalidated.load(Ordering::Relaxed)
    }

    /// Responses stored, since the start.
    pub fn stored(&self) -> u64 {
        self.0.counters.stored.load(Ordering::Relaxed)
    }

    /// Responses held now.
    pub fn responses(&self) -> usize {
        self.0.store.held().responses
    }

    /// Bytes held now, bodies and fields.
    pub fn bytes(&self) -> usize {
        self.0.store.held().bytes
    }

    /// All of the above at once, as metrics read them ([`Metrics::cache`](crate::Metrics::cache)).
    pub fn reading(&self) -> CacheReading {
        let held = self.0.store.held();
        CacheReading {
            hits: self.hits(),
            misses: self.misses(),
            revalidated: self.revalidated(),
            stored: self.stored(),
            responses: held.responses as u64,
            bytes: held.bytes as u64,
        }
    }
}

impl fmt::Debug for CacheStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheStats")
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .field("responses", &self.responses())
            .finish_non_exhaustive()
    }
}

impl<A: fmt::Debug> fmt::Debug for Cache<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("max_object", &self.shared.max_object)
            .finish_non_exhaustive()
    }
}

/// What a request asks of the cache.
struct Asked {
    cc: Directives,
    /// `no-cache`, or `Pragma: no-cache` without `Cache-Control`.
    no_cache: bool,
    head: bool,
}

impl<A: App> App for Cache<A> {
    // A hit is answered without waiting. What waits (a fetch, a revalidation,
    // a pass) is boxed where it is waited for, so that the request's future,
    // boxed on every request, stays under a kilobyte: the allocator's
    // per-thread cache holds no larger block.
    async fn call(&self, req: Request) -> Response {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return Box::pin(self.pass(req, &method)).await;
        }
        let key = keys::primary(&req);
        let cc = Directives::of(req.headers(), &CACHE_CONTROL);
        let no_cache = cc.no_cache
            || (!req.headers().contains_key(CACHE_CONTROL)
                && (req.headers().get_all(PRAGMA).iter())
                    .any(|p| p.as_bytes().eq_ignore_ascii_case(b"no-cache")));
        let asked = Asked {
            cc,
            no_cache,
            head: method == Method::HEAD,
        };
        if asked.cc.no_store {
            return Box::pin(self.fetch(req, key, &asked, "fwd=request", None)).await;
        }
        let mut waited = false;
        loop {
            if let Some(stored) = self.shared.store.find(&key, req.headers()) {
                let Ok(contents) = stored.payload.open() else {
                    // Its file gone: another process evicted or purged it.
                    self.shared.store.forget(&key, &stored);
                    continue;
                };
                let now = SystemTime::now();
                let age = stored.age(now);
                let detail = match usable(&stored, age, &asked) {
                    Use::Fresh | Use::Stale => "",
                    Use::Refresh => {
                        self.refresh_in_background(&req, &key, &stored);
                        "; detail=stale-while-revalidate"
                    }
                    Use::Validate if asked.cc.only_if_cached => return gateway_timeout(),
                    Use::Validate => {
                        return Box::pin(self.revalidate(req, key, stored, contents, &asked)).await;
                    }
                };
                self.shared.counters.hits.fetch_add(1, Ordering::Relaxed);
                // A negative ttl: stale, as max-stale or stale-while-revalidate allows.
                let ttl = stored.lifetime.as_secs() as i64 - age.as_secs() as i64;
                let what = format!("hit; ttl={ttl}{detail}");
                return serve(req.method(), req.headers(), &stored, &contents, age, &what);
            }
            if asked.cc.only_if_cached {
                return gateway_timeout();
            }
            let fwd = if self.shared.store.has(&key) {
                "fwd=vary-miss"
            } else {
                "fwd=uri-miss"
            };
            if asked.head || waited || req.headers().contains_key(AUTHORIZATION) {
                return Box::pin(self.fetch(req, key, &asked, fwd, None)).await;
            }
            match self.shared.lock(&key) {
                Lock::Leader(leader) => {
                    return Box::pin(self.fetch(req, key, &asked, fwd, Some(leader))).await;
                }
                Lock::Wait(mut done) => {
                    let _ = tokio::time::timeout(self.shared.lock_timeout, done.changed()).await;
                    waited = true;
                }
            }
        }
    }
}

/// How a stored response may answer a request.
enum Use {
    Fresh,
    /// Stale, and the request's `max-stale` allows it.
    Stale,
    /// Stale within the response's `stale-while-revalidate`: served, and
    /// revalidated in the background.
    Refresh,
    Validate,
}

fn usable(stored: &Stored, age: Duration, asked: &Asked) -> Use {
    if stored.cc.no_cache || asked.no_cache {
        return Use::Validate;
    }
    if asked
        .cc
        .max_age
        .is_some_and(|max| age.as_secs() > max.or(0))
    {
        return Use::Validate;
    }
    let left = stored.lifetime.saturating_sub(age);
    if let Some(min_fresh) = asked.cc.min_fresh {
        if left.as_secs() < min_fresh.or(u64::MAX) || left.is_zero() {
            return Use::Validate;
        }
    }
    if age < stored.lifetime {
        return Use::Fresh;
    }
    if !stored.may_be_served_stale() {
        return Use::Validate;
    }
    let stale_for = (age - stored.lifetime).as_secs();
    match asked.cc.max_stale {
        Some(None) => return Use::Stale,
        Some(Some(limit)) if stale_for <= limit => return Use::Stale,
        _ => {}
    }
    match stored.cc.stale_while_revalidate {
        Some(window) if stale_for <= window.or(0) => Use::Refresh,
        _ => Use::Validate,
    }
}

/// Whether `stored`, stale by `age`, may answer in place of a server error:
/// the response's or the request's `stale-if-error` (RFC 5861 §4).
fn stale_if_error(stored: &Stored, age: Duration, asked: &Asked) -> bool {
    let stale_for = age.saturating_sub(stored.lifetime).as_secs();
    let window = asked.cc.stale_if_error.or(stored.cc.stale_if_error);
    stored.may_be_served_stale() && window.is_some_and(|w| stale_for <= w.or(0))
}

impl<A: App> Cache<A> {
    /// A request the cache does not answer: passed on; an unsafe one that
    /// succeeds invalidates what is stored for its target (§4.4).
    async fn pass(&self, req: Request, method: &Method) -> Response {
        let unsafe_method = !matches!(*method, Method::OPTIONS | Method::TRACE);
        let key = unsafe_method.then(|| keys::primary(&req));
        let mut res = self.inner.call(req).await;
        if let Some(key) = key {
            if res.status().is_success() || res.status().is_redirection() {
                for field in [LOCATION, CONTENT_LOCATION] {
                    let other = res.headers().get(&field).and_then(|v| v.to_str().ok());
                    if let Some(other) = other.and_then(|uri| keys::same_origin(&key, uri)) {
                        self.shared.store.remove(&other);
                    }
                }
                self.shared.store.remove(&key);
            }
        }
        cache_status(&mut res, "fwd=method");
        res
    }

    /// Goes to the app for `req`, storing the response if it may be.
    async fn fetch(
        &self,
        req: Request,
        key: String,
        asked: &Asked,
        fwd: &str,
        leader: Option<Leader>,
    ) -> Response {
        self.shared.counters.misses.fetch_add(1, Ordering::Relaxed);
        let get = req.method() == Method::GET && !asked.cc.no_store;
        let headers = req.headers().clone();
        let requested = SystemTime::now();
        let res = self.inner.call(req).await;
        let timing = Timing {
            requested,
            received: SystemTime::now(),
        };
        let mut res = res;
        if !get {
            cache_status(&mut res, fwd);
            return res;
        }
        if let Some(why) = unstorable(&headers, &res) {
            cache_status(&mut res, &format!("{fwd}; detail={why}"));
            return res;
        }
        self.shared.tee(res, key, &headers, timing, fwd, leader)
    }

    /// Asks the app whether `stored` is still good: a `304` serves it
    /// updated, a server error may serve it stale (`stale-if-error`), and
    /// any other answer is passed on (and stored in its place if it may be).
    async fn revalidate(
        &self,
        req: Request,
        key: String,
        stored: Arc<Stored>,
        contents: Contents,
        asked: &Asked,
    ) -> Response {
        let (parts, body) = req.into_parts();
        // The client's own conditions are answered here, from what comes back.
        let client = parts.headers.clone();
        let method = parts.method.clone();
        let (refreshed, timing) =
            refresh(&*self.inner, &self.shared, parts, body, &key, &stored).await;
        let res = match refreshed {
            Ok(updated) => {
                let age = updated.age(timing.received);
                return serve(
                    &method,
                    &client,
                    &updated,
                    &contents,
                    age,
                    "fwd=stale; fwd-status=304",
                );
            }
            Err(res) => res,
        };
        let age = stored.age(timing.received);
        if res.status().is_server_error() && stale_if_error(&stored, age, asked) {
            let what = format!(
                "fwd=stale; fwd-status={}; detail=stale-if-error",
                res.status().as_u16()
            );
            return serve(&method, &client, &stored, &contents, age, &what);
        }
        let unstored = match unstorable(&client, &res) {
            Some(why) => Some(format!("fwd=stale; detail={why}")),
            None => asked.head.then(|| "fwd=stale".to_owned()),
        };
        if let Some(what) = unstored {
            let mut res = res;
            cache_status(&mut res, &what);
            return res;
        }
        self.shared
            .tee(res, key, &client, timing, "fwd=stale", None)
    }

    /// Revalidates `stored` in a task of its own (one at a time for a
    /// target), with the request's head and none of its conditions.
    fn refresh_in_background(&self, req: &Request, key: &str, stored: &Arc<Stored>) {
        let Lock::Leader(leader) = self.shared.lock(key) else {
            return;
        };
        let mut head = Request::new(Body::default());
        *head.method_mut() = Method::GET;
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        *head.extensions_mut() = req.extensions().clone();
        let (parts, body) = head.into_parts();
        let (inner, shared) = (self.inner.clone(), self.shared.clone());
        let (key, stored) = (key.to_owned(), stored.clone());
        tokio::spawn(async move {
            let request = parts.headers.clone();
            let (refreshed, timing) = refresh(&*inner, &shared, parts, body, &key, &stored).await;
            let Err(res) = refreshed else { return };
            if unstorable(&request, &res).is_some() {
                return;
            }
            // Stored as it is read: no client reads it here.
            let mut body = shared
                .tee(res, key, &request, timing, "", Some(leader))
                .into_body();
            while let Some(Ok(_)) = body.chunk().await {}
        });
    }
}

/// Asks `inner` about `stored` with its validators (`If-None-Match`,
/// `If-Modified-Since`) in place of the client's: a `304` updates it in the
/// store and comes back as `Ok`; any other answer comes back as it is.
async fn refresh<A: App>(
    inner: &A,
    shared: &Shared,
    mut parts: http::request::Parts,
    body: Body,
    key: &str,
    stored: &Arc<Stored>,
) -> (Result<Arc<Stored>, Response>, Timing) {
    parts.headers.remove(IF_NONE_MATCH);
    parts.headers.remove(IF_MODIFIED_SINCE);
    let etag = stored.headers.get(ETAG).cloned();
    let modified = stored.headers.get(LAST_MODIFIED).cloned();
    let validated = etag.is_some() || modified.is_some();
    if let Some(etag) = etag {
        parts.headers.insert(IF_NONE_MATCH, etag);
    }
    if let Some(modified) = modified {
        parts.headers.insert(IF_MODIFIED_SINCE, modified);
    }
    let requested = SystemTime::now();
    let res = inner.call(Request::from_parts(parts, body)).await;
    let timing = Timing {
        requested,
        received: SystemTime::now(),
    };
    if !validated || res.status() != StatusCode::NOT_MODIFIED {
        shared.counters.misses.fetch_add(1, Ordering::Relaxed);
        return (Err(res), timing);
    }
    shared.counters.revalidated.fetch_add(1, Ordering::Relaxed);
    let updated = Arc::new(Stored::new(
        stored.status,
        updated_fields(&stored.headers, res.headers()),
        stored.payload.clone(),
        stored.variant.clone(),
        timing,
    ));
    shared.store.update(key, stored, updated.clone());
    (Ok(updated), timing)
}

/// Whether a response to a request with `request` fields may be stored (§3).
/// Why a response to a request with `request` fields may not be stored
/// (§3), as `Cache-Status` says it (`detail=`); `None` when it may be.
fn unstorable(request: &HeaderMap, res: &Response) -> Option<&'static str> {
    let status = res.status();
    let (cc, _) = directives::of_response(res.headers());
    // must-understand: a status whose caching rules are known here lets no-store go.
    let understood = status.canonical_reason().is_some();
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Some("status");
    }
    if cc.no_store && !(cc.must_understand && understood) {
        return Some("no-store");
    }
    if cc.private {
        return Some("private");
    }
    if request.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Some("authorization");
    }
    let explicit = cc.public
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || res.headers().contains_key(http::header::EXPIRES);
    (!explicit && !freshness::heuristically_cacheable(status)).then_some("no-freshness")
}

/// Fields that are not stored (§3.1): the hop-by-hop ones, and those the
/// response's `Connection` names.
fn storable_fields(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for value in headers.get_all(CONNECTION) {
        for name in value.to_str().unwrap_or_default().split(',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                kept.remove(name);
            }
        }
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authentication-info",
        "proxy-authorization",
    ] {
        kept.remove(name);
    }
    kept.remove(CACHE_STATUS);
    kept
}

/// The stored fields, updated by a `304`'s (§4.3.4): each field it has
/// replaces the stored one, but the body's own framing stays.
fn updated_fields(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut updated = stored.clone();
    let fresh = storable_fields(not_modified);
    for name in fresh.keys() {
        if *name == CONTENT_LENGTH {
            continue;
        }
        updated.remove(name);
        for value in fresh.get_all(name) {
            updated.append(name.clone(), value.clone());
        }
    }
    updated
}

/// The stored response for a `method` request with `request` fields: a
/// `304` when the client's own conditions hold, else the response itself,
/// its body left out for HEAD.
fn serve(
    method: &Method,
    request: &HeaderMap,
    stored: &Stored,
    contents: &Contents,
    age: Duration,
    what: &str,
) -> Response {
    let (status, headers, body) = if not_modified(request, stored) {
        let mut headers = HeaderMap::new();
        for name in [
            "cache-control",
            "content-location",
            "date",
            "etag",
            "expires",
            "vary",
            "last-modified",
        ] {
            for value in stored.headers.get_all(name) {
                headers.append(name, value.clone());
            }
        }
        (StatusCode::NOT_MODIFIED, headers, Body::default())
    } else if let Some((status, headers, body)) = part(method, request, stored, contents) {
        (status, headers, body)
    } else {
        let body = match *method == Method::HEAD {
            true => Body::default(),
            false => contents.body(vec![FilePart::Range(0..stored.payload.len())]),
        };
        (stored.status, stored.headers.clone(), body)
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res.headers_mut()
        .insert(http::header::AGE, HeaderValue::from(age.as_secs()));
    append_status(res.headers_mut(), what);
    res
}

/// The parts of a stored `200` that a `GET` with ranges asks for (206, as
/// `multipart/byteranges` for several), or `416` for ranges outside it;
/// `None` (the whole response) without a usable `Range`, or with an
/// `If-Range` the stored response fails.
fn part(
    method: &Method,
    request: &HeaderMap,
    stored: &Stored,
    contents: &Contents,
) -> Option<(StatusCode, HeaderMap, Body)> {
    if *method != Method::GET || stored.status != StatusCode::OK {
        return None;
    }
    let asked = request.get(RANGE)?.to_str().ok()?;
    if let Some(condition) = request.get(IF_RANGE) {
        // A strong validator only (RFC 9110 §13.1.5): an ETag compared strongly, or
        // the exact Last-Modified date.
        let condition = condition.as_bytes();
        let holds = match condition.first() {
            Some(b'"') => stored
                .headers
                .get(ETAG)
                .is_some_and(|etag| etag.as_bytes() == condition),
            _ => stored
                .headers
                .get(LAST_MODIFIED)
                .is_some_and(|modified| modified.as_bytes() == condition),
        };
        if !holds {
            return None;
        }
    }
    let len = stored.payload.len();
    let mut headers = stored.headers.clone();
    headers.remove(CONTENT_LENGTH);
    match range::parse(asked, len) {
        Ranges::Ignore => None,
        Ranges::Satisfiable(ranges) if ranges.len() > 1 => {
            let content_type = (stored.headers.get(CONTENT_TYPE))
                .and_then(|value| value.to_str().ok())
                .unwrap_or("application/octet-stream");
            let (parts, content_type) = range::multipart(ranges, len, content_type);
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(&content_type).ok()?);
            Some((StatusCode::PARTIAL_CONTENT, headers, contents.body(parts)))
        }
        Ranges::Satisfiable(ranges) => {
            let part = &ranges[0];
            let content_range = format!("bytes {}-{}/{len}", part.start, part.end - 1);
            headers.insert(CONTENT_RANGE, HeaderValue::from_str(&content_range).ok()?);
            let body = contents.body(vec![FilePart::Range(part.clone())]);
            Some((StatusCode::PARTIAL_CONTENT, headers, body))
        }
        Ranges::Unsatisfiable => {
            headers.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).ok()?,
            );
            Some((StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::default()))
        }
    }
}

/// Whether the client's `If-None-Match` (else `If-Modified-Since`) holds
/// for the stored response (RFC 9110 §13.2.2).
fn not_modified(request: &HeaderMap, stored: &Stored) -> bool {
    if stored.status != StatusCode::OK {
        return false;
    }
    if request.contains_key(IF_NONE_MATCH) {
        let Some(etag) = stored.headers.get(ETAG).and_then(|e| e.to_str().ok()) else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        return request.get_all(IF_NONE_MATCH).iter().any(|line| {
            line.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|tag| tag.trim() == "*" || opaque(tag) == opaque(etag))
        });
    }
    let since = request
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| freshness::http_date(v.as_bytes()));
    let modified = stored
        .headers
        .get(LAST_MODIFIED)
        .and_then(|v| freshness::http_date(v.as_bytes()));
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

fn gateway_timeout() -> Response {
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    cache_status(&mut res, "fwd=miss; detail=only-if-cached");
    res
}

fn cache_status(res: &mut Response, what: &str) {
    append_status(res.headers_mut(), what);
}

/// Adds this cache's member to `Cache-Status` (after those of the caches
/// nearer the origin).
fn append_status(headers: &mut HeaderMap, what: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("stackway; {what}")) {
        headers.append(CACHE_STATUS, value);
    }
}

/// The right to fetch a target for the others waiting on it; they are let
/// go when it is dropped (its response stored, or found not to be).
struct Leader {
    shared: Arc<Shared>,
    key: String,
    _done: watch::Sender<()>,
}

enum Lock {
    Leader(Leader),
    Wait(watch::Receiver<()>),
}

impl Shared {
    /// Stores `res` as its body streams by: its response, with the
    /// `Cache-Status` of a `fwd` that stored it.
    fn tee(
        self: &Arc<Self>,
        res: Response,
        key: String,
        request: &HeaderMap,
        timing: Timing,
        fwd: &str,
        leader: Option<Leader>,
    ) -> Response {
        let declared = res.body().size_hint().upper();
        if declared.is_some_and(|len| len > self.max_object as u64) {
            let mut res = res;
            cache_status(&mut res, &format!("{fwd}; detail=too-large"));
            return res;
        }
        let (mut parts, body) = res.into_parts();
        let status = parts.status;
        let headers = storable_fields(&parts.headers);
        let variant = Variant::of(&parts.headers, request);
        let sink = match self.store.disk() {
            None => Sink::Memory(BytesMut::new()),
            Some(disk) => match disk.create(&key, status, &headers, &variant, timing) {
                Ok(writer) => Sink::File(writer),
                Err(error) => {
                    tracing::warn!(%error, "a cache file could not be made");
                    append_status(&mut parts.headers, fwd);
                    return Response::from_parts(parts, body);
                }
            },
        };
        let keeper = Keeper {
            shared: self.clone(),
            key,
            status,
            headers,
            variant,
            timing,
        };
        // Where a server stops polling: the body's own length, else the head's.
        let expected = body.size_hint().exact().or_else(|| {
            let length = parts.headers.get(CONTENT_LENGTH)?;
            length.to_str().ok()?.parse().ok()
        });
        let body = Body::new(Tee {
            expected,
            body,
            seen: 0,
            max: self.max_object as u64,
            sink: Some((sink, keeper)),
            leader,
        });
        append_status(&mut parts.headers, &format!("{fwd}; stored"));
        Response::from_parts(parts, body)
    }

    fn lock(self: &Arc<Self>, key: &str) -> Lock {
        let mut fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = fetching.get(key) {
            return Lock::Wait(done.clone());
        }
        let (done, waiting) = watch::channel(());
        fetching.insert(key.to_owned(), waiting);
        Lock::Leader(Leader {
            shared: self.clone(),
            key: key.to_owned(),
            _done: done,
        })
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        (self
            .shared
            .fetching
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
        .remove(&self.key);
    }
}

/// A body passed on as it comes and kept on the side: stored once whole
/// (its end seen, or its declared length reached: a server stops polling a
/// body there), dropped once longer than `max` or failed.
struct Tee {
    body: Body,
    expected: Option<u64>,
    seen: u64,
    max: u64,
    /// Where the body goes, and what stores it once whole.
    sink: Option<(Sink, Keeper)>,
    /// Let go once the body is stored, or fails, or the client goes away.
    leader: Option<Leader>,
}

/// What stores a body once it is whole.
struct Keeper {
    shared: Arc<Shared>,
    key: String,
    status: StatusCode,
    headers: HeaderMap,
    variant: Variant,
    timing: Timing,
}

impl Keeper {
    fn keep(self, payload: Payload) -> (Arc<Shared>, String, Arc<Stored>) {
        let stored = Arc::new(Stored::new(
            self.status,
            self.headers,
            payload,
            self.variant,
            self.timing,
        ));
        self.shared.counters.stored.fetch_add(1, Ordering::Relaxed);
        self.shared.store.insert(&self.key, stored.clone());
        (self.shared, self.key, stored)
    }
}

enum Sink {
    Memory(BytesMut),
    File(disk::Writer),
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = stackway::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, stackway::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    let kept = match &mut this.sink {
                        Some(_) if this.seen > this.max => false,
                        Some((Sink::Memory(kept), _)) => {
                            kept.extend_from_slice(data);
                            true
                        }
                        Some((Sink::File(writer), _)) => writer.write(data).is_ok(),
                        None => true,
                    };
                    if !kept {
                        this.sink = None;
                    }
                }
                if this.body.is_end_stream() || this.expected == Some(this.seen) {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => {
                this.sink = None;
                this.leader = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // An empty body is polled once all the same, and stored then.
        self.sink.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Tee {
    /// The body has ended: stored if it is whole, and the misses waiting
    /// for it let go. A file is served through its descriptor at once, and
    /// synced and put in place off the runtime's threads.
    fn finish(&mut self) {
        let _leader = self.leader.take();
        let whole = self.expected.is_none_or(|len| len == self.seen);
        let Some((sink, keeper)) = self.sink.take().filter(|_| whole) else {
            return;
        };
        match sink {
            Sink::Memory(kept) => drop(keeper.keep(Payload::Memory(kept.freeze()))),
            Sink::File(mut writer) => {
                let open = match writer.finish() {
                    Ok(open) => open,
                    Err(error) => {
                        tracing::warn!(%error, "a cache file could not be finished");
                        return;
                    }
                };
                let (shared, key, pending) = keeper.keep(open);
                let commit = move || match writer.commit() {
                    Ok(payload) => {
                        let settled = pending.with_payload(payload);
                        shared.store.update(&key, &pending, Arc::new(settled));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "a cache file could not be put in place");
                        shared.store.forget(&key, &pending);
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(commit)),
                    Err(_) => commit(),
                }
            }
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if self.expected == Some(self.seen) {
            self.finish();
        }
    }
}
