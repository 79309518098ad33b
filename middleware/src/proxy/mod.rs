//! An app that runs elsewhere: forwards each request to an upstream server
//! (over TCP or a unix socket, one or a balanced pool) and streams its answer
//! back, as nginx's `proxy_pass` does (and `uwsgi_pass` and `fastcgi_pass`,
//! to uWSGI, PHP-FPM and flup backends);
//! Werkzeug's `ProxyMiddleware`, made for production.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, RequestExt, testing::Client};
//! use stackway_middleware::{Dispatcher, Proxy};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // An upstream on a free port, answering with the path it was asked for.
//! let upstream = stackway::Server::bind("127.0.0.1:0").unwrap();
//! let url = format!("http://{}/v1", upstream.local_addr());
//! tokio::spawn(upstream.serve(|req: Request| async move { req.uri().to_string() }));
//!
//! let app = Dispatcher::default().mount("/api", Proxy::to(&url));
//! let client = Client::new(app);
//! client.get("/api/users?page=2").await.assert_text("/v1/users?page=2");
//! # });
//! ```
//!
//! # How the request changes
//!
//! The upstream sees its base path followed by PATH_INFO, raw (the bytes the
//! client sent, never decoded and re-encoded), and the query string:
//!
//! | mounted at | upstream | request | upstream sees |
//! |---|---|---|---|
//! | `/api` | `http://10.0.0.5:9000` | `/api/users?x=1` | `/users?x=1` |
//! | `/api` | `http://10.0.0.5:9000/v1` | `/api/a%2Fb` | `/v1/a%2Fb` |
//! | `/api` | `http://10.0.0.5:9000/v1` | `/api` | `/v1` |
//! | `/` | `unix:/run/app.sock` | `/` | `/` |
//!
//! Hop-by-hop headers are removed both ways (RFC 9110 §7.6.1: `Connection`
//! and every header it names, `Keep-Alive`, `TE`, `Transfer-Encoding`,
//! `Upgrade`, `Proxy-*`; `Trailer` stays, as it declares the trailers that
//! follow the body, end to end). A `Proxy` header never passes either: a CGI
//! app would read it as `HTTP_PROXY`, the variable that names an HTTP client's
//! proxy ("httpoxy", CVE-2016-5385), where nginx needs `fastcgi_param
//! HTTP_PROXY ""` to stop it. Nor does a header whose name has a `_` (but
//! in a gRPC call), as nginx leaves them out: to a WSGI or CGI gateway
//! behind the upstream, `X_Forwarded_For` is the `HTTP_X_FORWARDED_FOR` the
//! proxy sets. The upstream learns about the
//! client from `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `-Host`,
//! `-Port` and `X-Forwarded-Prefix` (SCRIPT_NAME, so an app behind Werkzeug's
//! `ProxyFix(x_prefix=1)` builds URLs under the mount), and from RFC 7239
//! `Forwarded` when [asked](Proxy::forwarded). `Host` is the upstream's unless
//! [preserved](Proxy::preserve_host). `Location`, `Content-Location` and
//! `Refresh`'s URL into the upstream's base come back pointing into the mount
//! (nginx's `proxy_redirect default`), and cookie paths too when
//! [asked](Proxy::rewrite_cookie_paths). A `TRACE` is answered 405 and never
//! passed, as nginx answers it: the upstream's echo would show the client
//! the fields added for the upstream.
//!
//! # Streaming, upgrades and failures
//!
//! Bodies stream both ways with backpressure and in constant memory; trailers
//! pass. A `101 Switching Protocols` (WebSocket) splices the two connections
//! until either side closes. Failures are responses: an upstream that cannot
//! be reached gives 502, one that takes no byte of the request body, or sends
//! no response head, for the [read timeout](Proxy::read_timeout) 504, a malformed or oversized head 502;
//! one that fails or stalls mid-body aborts the client's connection, so a
//! truncated body never looks complete. Each is logged with the upstream.
//!
//! # gRPC
//!
//! gRPC passes as any HTTP/2 traffic: mount the service's path on an
//! upstream that speaks h2 ([`http2`](Proxy::http2) for h2c, or an `https://`
//! upstream that offers it by ALPN), and calls stream both ways with their
//! trailers (`grpc-status`, `grpc-message`, metadata). A call's
//! `grpc-timeout` bounds the wait for the upstream's answer, and the proxy's
//! own failures come back as gRPC statuses in a trailers-only answer: a
//! timeout `DEADLINE_EXCEEDED`, no upstream `UNAVAILABLE`.
//!
//! ```
//! use stackway_middleware::{Dispatcher, Proxy};
//!
//! let app = Dispatcher::default()
//!     .mount("/helloworld.Greeter", Proxy::to("http://127.0.0.1:50051/helloworld.Greeter").http2(true));
//! ```
//!
//! # Balancing
//!
//! [`Proxy::balance`] spreads requests over several upstreams,
//! [round-robin, to the least busy, or by a hash of the client or a
//! key](Balance), as nginx's methods do. Each may be followed by
//! nginx's `server` parameters: `weight=N` (shared as nginx's smooth weighted
//! round robin shares it), `backup` (asked only when no other is live, or
//! all others failed the request), `down` (never asked), `max_conns=N` (not
//! asked while N of its requests are in flight; with every member so, 502),
//! and `max_fails=N` and `fail_timeout=T` (`30`, `30s`, `500ms`, `1m`) for
//! that member alone:
//!
//! ```
//! # use stackway_middleware::Proxy;
//! let pool = Proxy::balance([
//!     "http://10.0.0.2:8000 weight=3",
//!     "http://10.0.0.3:8000 max_fails=3 fail_timeout=30s",
//!     "http://10.0.0.4:8000 backup",
//! ]);
//! ```
//!
//! An upstream that fails
//! [`max_fails`](Proxy::max_fails) times in a row is left out for
//! [`fail_timeout`](Proxy::fail_timeout) (nginx's passive health checks). A
//! request whose connection fails (which sent nothing) goes on to the next
//! upstream, whatever its method and with its body, and so does an
//! idempotent one whose upstream closed before any answer or gave none
//! within the [read timeout](Proxy::read_timeout) (RFC 9110 §9.2.2), as
//! nginx's default `proxy_next_upstream error timeout` sends them: each
//! upstream of the pool is tried once at most, and losing replicas fails no
//! request that could go elsewhere. An idempotent request whose kept-alive
//! connection the upstream closed as it went is asked again on a new one, as
//! nginx asks again after a cached connection fails. A body goes on whole:
//! what was sent of it is kept for the next asking, up to 1 MiB (nginx reads
//! a body whole first, `proxy_request_buffering`); a request whose body went
//! past that, or had trailers, is not asked again.
//! [Active health checks](Proxy::health_check) ask each upstream for a path at
//! an interval and leave out those that answer badly.

mod body;
mod cgi;
mod dns;
mod fastcgi;
mod grpc;
mod h1;
mod hash;
mod headers;
mod health;
mod pool;
mod stats;
mod tls;
mod upgrade;
mod upstream;
mod uwsgi;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use stackway::{App, Body, Forwarded, IntoResponse, Request, RequestExt, Response};

use self::body::{Progress, UpstreamBody};
pub use self::hash::HashKey;
pub use self::stats::ProxyStats;
pub use self::tls::{TlsError, UpstreamTls};
pub use self::upstream::SpecError;
use self::upstream::{Protocol, Resolve, SendError, Spec, Upstream};
use crate::profiler::Timings;

/// Forwards requests to one upstream or a balanced pool; see the
/// [module docs](self).
#[doc(alias = "proxy_pass")]
#[doc(alias = "ProxyMiddleware")]
#[doc(alias = "upstream")]
pub struct Proxy {
    specs: Vec<Spec>,
    settings: Settings,
    /// Built on the first request, once the settings are final; shared with
    /// [`ProxyStats`].
    upstreams: Arc<OnceLock<dns::Members>>,
    next: AtomicUsize,
    /// Held while the members' weights are counted for the next pick.
    weighing: std::sync::Mutex<()>,
    /// `hash KEY consistent`'s circle, for the members it was made of.
    circle: std::sync::Mutex<Option<Arc<hash::Circle>>>,
}

/// How [`Proxy::balance`] chooses an upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each in turn, shared by weight. The default.
    #[default]
    RoundRobin,
    /// The one with the fewest requests in flight for its weight, ties shared
    /// as round robin shares them (nginx's `least_conn`).
    LeastOutstanding,
    /// Each client to one upstream, by its network (the first three bytes of
    /// an IPv4 address, all of an IPv6 one), as nginx's `ip_hash` sends it.
    IpHash,
    /// Each request to an upstream by its `key` (nginx's `hash KEY`), as
    /// nginx sends it; `consistent`, on a ketama circle (nginx's `hash KEY
    /// consistent`), so that an upstream joining or leaving moves only its
    /// share of the keys.
    Hash {
        /// What is hashed.
        key: HashKey,
        /// On a circle.
        consistent: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) max_idle: usize,
    pub(crate) http2: bool,
    pub(crate) max_fails: u32,
    pub(crate) fail_timeout: Duration,
    balance: Balance,
    health_check: Option<health::Check>,
    preserve_host: bool,
    forwarded: bool,
    rewrite_cookies: bool,
    buffer_request: bool,
    buffer_response: bool,
    pub(crate) fastcgi_root: Option<Arc<Path>>,
    /// For `https://` upstreams; the system's roots when not given.
    pub(crate) tls: Option<UpstreamTls>,
    /// How often a host name's addresses are asked for (each a member).
    resolve: Option<Duration>,
    /// Whom to ask; the system's nameservers when empty.
    nameservers: Vec<std::net::SocketAddr>,
}

/// The bytes of a buffered body kept in memory; more go to a temporary file.
const BUFFER_MEMORY: usize = 1 << 20;

/// Gives `outgoing` its body once more, for another asking (held again if
/// `more` may follow); false if what was sent of it was not kept.
fn body_again(
    outgoing: &mut Outgoing,
    held: &mut Option<body::Held>,
    progress: &Arc<Progress>,
    empty: bool,
    more: bool,
) -> bool {
    let Some(hold) = held.take() else {
        return empty;
    };
    let Some((body, hold)) = hold.again(more) else {
        return false;
    };
    *held = hold;
    outgoing.body = Some(body::sent(body, progress.clone()));
    true
}

impl Proxy {
    /// Forwards to one upstream: `http://HOST:PORT[/base]`,
    /// `https://HOST:PORT[/base]`, `unix:/path/to.sock[:/base]`, or
    /// `http+srv://NAME[/base]`, whose SRV records say where it is (see
    /// [`resolve`](Self::resolve)); or one that speaks uwsgi (uWSGI's
    /// `--socket`, as nginx's `uwsgi_pass` reaches it):
    /// `uwsgi://HOST:PORT[/base]`, `uwsgi+unix:/path/to.sock[:/base]`; or
    /// FastCGI (PHP-FPM, flup; nginx's `fastcgi_pass`), `fastcgi://` and
    /// `fastcgi+unix:` the same way, with [`fastcgi_root`](Self::fastcgi_root).
    ///
    /// # Panics
    ///
    /// If the spec is not one of those; [`try_to`](Self::try_to) returns the
    /// error instead.
    #[track_caller]
    pub fn to(upstream: &str) -> Self {
        Self::try_to(upstream).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Forwards to one upstream, or says why the spec is not one.
    pub fn try_to(upstream: &str) -> Result<Self, SpecError> {
        Self::try_balance([upstream])
    }

    /// Spreads requests over several upstreams.
    ///
    /// # Panics
    ///
    /// If a spec is invalid or there are none; [`try_balance`](Self::try_balance)
    /// returns the error instead.
    #[track_caller]
    pub fn balance<'a>(upstreams: impl IntoIterator<Item = &'a str>) -> Self {
        Self::try_balance(upstreams).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Spreads requests over several upstreams, or says why it cannot.
    pub fn try_balance<'a>(
        upstreams: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, SpecError> {
        let specs = upstreams
            .into_iter()
            .map(Spec::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if specs.is_empty() {
            return Err(SpecError::none());
        }
        Ok(Self {
            specs,
            settings: Settings {
                connect_timeout: Duration::from_secs(60),
                read_timeout: Duration::from_secs(60),
                body_timeout: Duration::from_secs(60),
                max_idle: 64,
                http2: false,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                balance: Balance::default(),
                health_check: None,
                preserve_host: false,
                forwarded: false,
                rewrite_cookies: false,
                buffer_request: false,
                buffer_response: false,
                fastcgi_root: None,
                tls: None,
                resolve: None,
                nameservers: Vec::new(),
            },
            upstreams: Arc::default(),
            next: AtomicUsize::new(0),
            weighing: std::sync::Mutex::new(()),
            circle: std::sync::Mutex::default(),
        })
    }

    /// How long connecting to an upstream may take; then 502. Default 60 s,
    /// as nginx's `proxy_connect_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long the upstream may go without progress before its response
    /// head: taking no byte of the request body, or, once the body is sent,
    /// sending no response head; then 504, or, for an idempotent request of a
    /// pool, the next upstream (see [Balancing](self#balancing)). An upload
    /// that keeps moving is never cut off. Default 60 s, as nginx's
    /// `proxy_send_timeout` and `proxy_read_timeout`.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.settings.read_timeout = timeout;
        self
    }

    /// How long a response body may go without a byte from the upstream; then
    /// the client's connection is aborted. Default 60 s.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.settings.body_timeout = timeout;
        self
    }

    /// How many idle connections each worker keeps open to each upstream
    /// (nginx's `keepalive`, also per worker). Default 64: a connection comes
    /// back to the pool a moment after its response, so a bound at the
    /// worker's concurrency makes the pool close connections it then reopens.
    pub fn max_idle(mut self, connections: usize) -> Self {
        self.settings.max_idle = connections;
        self
    }

    /// Speaks HTTP/2 over cleartext (h2c, prior knowledge) to the upstreams.
    /// Off by default: HTTP/1.1.
    pub fn http2(mut self, on: bool) -> Self {
        self.settings.http2 = on;
        self
    }

    /// How requests are spread; see [`Balance`].
    pub fn balance_by(mut self, balance: Balance) -> Self {
        self.settings.balance = balance;
        self
    }

    /// Failures in a row (no connection, no response head, a broken one)
    /// after which an upstream is left out for [`fail_timeout`](Self::fail_timeout).
    /// Default 1, as nginx's `max_fails`; 0 never leaves one out.
    pub fn max_fails(mut self, failures: u32) -> Self {
        self.settings.max_fails = if failures == 0 { u32::MAX } else { failures };
        self
    }

    /// How long a failing upstream is left out. Default 10 s, as nginx's
    /// `fail_timeout`.
    pub fn fail_timeout(mut self, timeout: Duration) -> Self {
        self.settings.fail_timeout = timeout;
        self
    }

    /// Sends the client's `Host` instead of the upstream's (nginx's
    /// `proxy_set_header Host $host`). Off by default.
    pub fn preserve_host(mut self, on: bool) -> Self {
        self.settings.preserve_host = on;
        self
    }

    /// Also sends RFC 7239 `Forwarded` (`for`, `host`, `proto`). Off by default.
    pub fn forwarded(mut self, on: bool) -> Self {
        self.settings.forwarded = on;
        self
    }

    /// Rewrites the `Path` of `Set-Cookie` from the upstream's base into the
    /// mount, as `Location` always is (nginx's `proxy_cookie_path`). Off by
    /// default.
    pub fn rewrite_cookie_paths(mut self, on: bool) -> Self {
        self.settings.rewrite_cookies = on;
        self
    }

    /// Reads the client's request body whole (the first MiB in memory, the
    /// rest in an unnamed temporary file) before the upstream is asked, so
    /// that a slow upload holds no upstream connection or worker (nginx's
    /// `proxy_request_buffering`). Off by default: the body streams.
    pub fn buffer_request(mut self, on: bool) -> Self {
        self.settings.buffer_request = on;
        self
    }

    /// Takes the upstream's response body as fast as it comes, kept (the
    /// first MiB in memory, the rest in an unnamed temporary file) until the
    /// client reads it, so that a slow client never holds the upstream
    /// (nginx's `proxy_buffering`: what keeps a gunicorn sync worker free).
    /// Each part is still sent as soon as it comes. Off by default.
    pub fn buffer_response(mut self, on: bool) -> Self {
        self.settings.buffer_response = on;
        self
    }

    /// Where a FastCGI upstream's scripts are: `SCRIPT_FILENAME` is this
    /// root followed by the path below the mount (nginx's `root` with
    /// `fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name`),
    /// and `DOCUMENT_ROOT` is it. Without it, `SCRIPT_FILENAME` is the path.
    pub fn fastcgi_root(mut self, root: impl AsRef<Path>) -> Self {
        self.settings.fastcgi_root = Some(root.as_ref().into());
        self
    }

    /// What `https://` upstreams are checked against and shown: by default
    /// the system's root certificates; see [`UpstreamTls`]. The upstream's
    /// certificate must hold the name it is reached by; one that does not
    /// is a 502, logged with why.
    pub fn tls(mut self, tls: UpstreamTls) -> Self {
        self.settings.tls = Some(tls);
        self
    }

    /// Makes each upstream given by a host name (not an address) one member
    /// of the pool per address the name has, A and AAAA, each with its own
    /// health and connections, and asks for the addresses again every
    /// `interval` (nginx's `resolve`): members that appear join the balance,
    /// members that disappear leave it and finish what they were sent, so a
    /// pool that scales (a Kubernetes headless service) loses no request.
    /// Off by default: a name is one upstream, resolved at each connection.
    ///
    /// An `http+srv://NAME` upstream is one member per address of each
    /// target of NAME's SRV records, at the record's port (nginx's
    /// `service=`). Requests go to the lowest priority number that has a
    /// live member, the others standing by, and round robin shares them by
    /// the records' weights. Without `resolve`, each connection asks, and
    /// tries the lowest priority's targets in the order they came.
    pub fn resolve(mut self, interval: Duration) -> Self {
        self.settings.resolve = Some(interval);
        self
    }

    /// The nameservers [`resolve`](Self::resolve) asks (nginx's `resolver`),
    /// after the hosts file; by default the system's, from `/etc/resolv.conf`.
    pub fn nameservers(
        mut self,
        nameservers: impl IntoIterator<Item = std::net::SocketAddr>,
    ) -> Self {
        self.settings.nameservers = nameservers.into_iter().collect();
        self
    }

    /// Asks each upstream for `path` (below its base) every `interval`, and
    /// leaves out of the balance those that do not answer 2xx or 3xx within
    /// it, until they do again (HAProxy's `option httpchk`). Off by default.
    /// The checks start with the first request, on its runtime. What a URI
    /// may not hold as it is goes percent-encoded (`/a b` asks for `/a%20b`).
    pub fn health_check(mut self, path: &str, interval: Duration) -> Self {
        use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
        const NOT_IN_A_URI: &AsciiSet = &CONTROLS
            .add(b' ')
            .add(b'"')
            .add(b'#')
            .add(b'<')
            .add(b'>')
            .add(b'\\')
            .add(b'^')
            .add(b'`')
            .add(b'{')
            .add(b'|')
            .add(b'}');
        let slash = if path.starts_with('/') { "" } else { "/" };
        let path = format!("{slash}{}", utf8_percent_encode(path, NOT_IN_A_URI));
        self.settings.health_check = Some(health::Check { path, interval });
        self
    }

    /// A live view of the upstreams' counters and health, for
    /// [`Metrics::upstreams`](crate::Metrics::upstreams) and status pages.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            upstreams: self.upstreams.clone(),
            specs: self.specs.iter().map(ToString::to_string).collect(),
        }
    }

    /// The upstreams as they stand. The first call builds them and starts
    /// their health checks and the resolving of their names.
    fn upstreams(&self) -> Arc<[Arc<Upstream>]> {
        let members = self.upstreams.get_or_init(|| {
            // A pool from DNS asks its nameservers from the start: until the
            // first answer, each connection does. So does an SRV name, always.
            let resolving = self.settings.resolve.is_some();
            let asks = |s: &Spec| s.srv || (resolving && s.host_name().is_some());
            let resolver = (self.specs.iter().any(asks))
                .then(|| dns::resolver(&self.settings.nameservers))
                .and_then(|made| {
                    made.inspect_err(|e| tracing::error!("cannot resolve upstream host names: {e}"))
                        .ok()
                        .map(Arc::new)
                });
            let upstreams: Vec<Arc<Upstream>> = (self.specs.iter())
                .map(|spec| {
                    let resolve = match &resolver {
                        Some(resolver) if spec.srv => Resolve::Srv(resolver.clone()),
                        Some(resolver) if asks(spec) => Resolve::Dns(resolver.clone()),
                        _ => Resolve::System,
                    };
                    Arc::new(Upstream::new(spec.clone(), &self.settings, resolve))
                })
                .collect();
            if let Some(check) = &self.settings.health_check {
                for upstream in &upstreams {
                    health::spawn(upstream, check.clone());
                }
            }
            if let (Some(every), Some(resolver)) = (self.settings.resolve, &resolver) {
                for spec in self.specs.iter().filter(|s| s.host_name().is_some()) {
                    let members = Arc::downgrade(&self.upstreams);
                    let (spec, settings) = (spec.clone(), self.settings.clone());
                    dns::spawn(members, spec, settings, resolver.clone(), every);
                }
            }
            dns::Members::new(upstreams)
        });
        members.now()
    }

    /// The upstream for the next request, other than those `tried`, `down`
    /// or at their `max_conns`: the live ones first; if none is live, any. Of
    /// those, only the lowest priority's (backups stand by; SRV records', RFC
    /// 2782).
    fn pick(
        &self,
        upstreams: &[Arc<Upstream>],
        tried: &[usize],
        turn: Option<&mut hash::Turn>,
    ) -> Option<usize> {
        if let Some(turn) = turn {
            let round_robin = |named: &[usize]| self.round_robin(upstreams, named);
            if let Some(i) = hash::pick(upstreams, tried, turn, round_robin) {
                return Some(i);
            }
        }
        let others = (0..upstreams.len()).filter(|&i| {
            let upstream = &upstreams[i];
            !tried.contains(&i) && !upstream.spec.member.down && !upstream.is_full()
        });
        let live: Vec<usize> = others.clone().filter(|&i| upstreams[i].is_up()).collect();
        let mut candidates: Vec<usize> = if live.is_empty() {
            others.collect()
        } else {
            live
        };
        let first = candidates.iter().map(|&i| upstreams[i].priority).min()?;
        candidates.retain(|&i| upstreams[i].priority == first);
        match self.settings.balance {
            Balance::LeastOutstanding => {
                // The fewest in flight for its weight; ties shared by round robin,
                // as nginx's least_conn shares them.
                let load = |i: usize| upstreams[i].outstanding.load(Ordering::Relaxed);
                let lighter = |a: usize, b: usize| {
                    load(a) * upstreams[b].weight < load(b) * upstreams[a].weight
                };
                let least = candidates
                    .iter()
                    .copied()
                    .reduce(|a, b| if lighter(b, a) { b } else { a })?;
                candidates.retain(|&i| !lighter(least, i));
                self.round_robin(upstreams, &candidates)
            }
            // What a hash falls back to, as nginx's does.
            _ => self.round_robin(upstreams, &candidates),
        }
    }

    /// One of `candidates` in turn, shared by weight.
    fn round_robin(&self, upstreams: &[Arc<Upstream>], candidates: &[usize]) -> Option<usize> {
        let weight = |&i: &usize| upstreams[i].weight;
        let first = weight(candidates.first()?);
        if candidates.iter().all(|i| weight(i) == first) {
            let turn = self.next.fetch_add(1, Ordering::Relaxed);
            return Some(candidates[turn % candidates.len()]);
        }
        // nginx's smooth weighted round robin: each gains its weight, and the
        // one that stands highest is picked and loses them all (3, 1: a, a,
        // b, a, then again).
        let _weighing = self.weighing.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = candidates.iter().map(weight).sum();
        let mut best: Option<(usize, i64)> = None;
        for &i in candidates {
            let gain = upstreams[i].weight as i64;
            let now = upstreams[i].current.fetch_add(gain, Ordering::Relaxed) + gain;
            if best.is_none_or(|(_, high)| now > high) {
                best = Some((i, now));
            }
        }
        let (i, _) = best?;
        (upstreams[i].current).fetch_sub(total as i64, Ordering::Relaxed);
        Some(i)
    }
}

/// What the client asked for, as it goes to an upstream.
struct Outgoing {
    method: Method,
    /// Base-less: PATH_INFO and the query, raw.
    path_and_query: String,
    headers: HeaderMap,
    body: Option<Body>,
    /// The values of [`CGI_ENDS`] for a CGI upstream. Boxed: only a CGI
    /// upstream is told them, and every request's future would keep room.
    cgi_ends: Option<Box<[Option<HeaderValue>; 4]>>,
}

/// What the proxy tells a CGI upstream alone (see [`cgi::REMOTE_PORT`]).
const CGI_ENDS: [http::HeaderName; 4] = [
    cgi::REMOTE_PORT,
    cgi::SERVER_ADDR,
    cgi::SERVER_PROTOCOL,
    cgi::REMOTE_USER,
];

impl Outgoing {
    /// The request for `upstream`; unless `may_retry`, the last one made, so
    /// it takes the headers instead of copying them.
    fn request(&mut self, upstream: &Upstream, may_retry: bool) -> http::Request<Body> {
        let uri = upstream.uri(match may_retry {
            true => self.path_and_query.clone(),
            false => std::mem::take(&mut self.path_and_query),
        });
        let mut req = http::Request::new(self.body.take().unwrap_or_else(Body::empty));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = match may_retry {
            true => self.headers.clone(),
            false => std::mem::take(&mut self.headers),
        };
        if upstream.spec.protocol != Protocol::Http {
            let none = Default::default();
            let ends = self.cgi_ends.as_deref().unwrap_or(&none);
            for (name, value) in CGI_ENDS.into_iter().zip(ends) {
                match value {
                    Some(value) => drop(req.headers_mut().insert(name, value.clone())),
                    None => drop(req.headers_mut().remove(name)),
                }
            }
        }
        req
    }
}

/// How a try at an upstream went wrong.
enum Failure {
    Connect(SendError),
    Timeout,
    /// The client's request body failed on the way.
    Client(SendError),
    /// The client stopped sending its body.
    ClientStalled,
    Other(SendError),
    /// The pooled connection closed under the request: asked again.
    Stale(SendError),
}

/// Whether a `%` in `path` is not followed by two hex digits (RFC 3986
/// §2.1's pct-encoded).
fn stray_percent(path: &str) -> bool {
    let bytes = path.as_bytes();
    (bytes.iter().enumerate()).any(|(i, &b)| {
        b == b'%'
            && !(bytes.get(i + 1..i + 3)).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// Whether one of `e`'s causes is an `E` that `is` holds for.
fn caused_by<E: std::error::Error + 'static>(e: &SendError, is: impl Fn(&E) -> bool) -> bool {
    std::iter::successors(std::error::Error::source(e), |cause| cause.source())
        .any(|cause| cause.downcast_ref::<E>().is_some_and(&is))
}

/// Whether hyper says the error came from our side of the request: the body
/// we gave it (the client's, which failed), not the upstream.
fn is_client_fault(e: &SendError) -> bool {
    caused_by(e, hyper::Error::is_user)
}

/// Whether the request body failed because the client stopped sending it.
fn client_timed_out(e: &SendError) -> bool {
    caused_by(e, stackway::Error::is_timeout)
}

impl App for Proxy {
    // Not `async fn`s, here and in `forward`: one keeps a copy of its
    // arguments beside what its body makes of them, and the future is
    // boxed on every request (a mount's), where more than 1 KiB leaves
    // the allocator's per-thread cache for its slower path.
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        let grpc = grpc::is_call(&req);
        // Mapped, not awaited in an `async` block, which would keep room for
        // the future it captured beside the one it awaits.
        self.forward(req, grpc)
            .map(move |forwarded| match forwarded {
                Ok(res) => res,
                Err(status) if grpc => grpc::failure(status),
                Err(status) => status.into_response(),
            })
    }
}

impl Proxy {
    /// The upstream's answer to `req` (a gRPC call's, `grpc`), or the status
    /// of the proxy's own.
    #[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
    fn forward(
        &self,
        mut req: Request,
        grpc: bool,
    ) -> impl Future<Output = Result<Response, StatusCode>> + Send + '_ {
        async move {
            let upstreams = &*self.upstreams();
            let upgrading = upgrade::is_upgrade(&req);
            let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
            let cgi = self.specs.iter().any(|s| s.protocol != Protocol::Http);
            let (mount, mut outgoing) = self.outgoing(&req, upgrading, cgi)?;
            // A gRPC call's deadline bounds the wait for the head, whatever the read
            // timeout. Boxed: a gRPC call with one is rare, and the future of every
            // request would otherwise keep room for its clock.
            let mut deadline = (grpc.then(|| grpc::timeout(req.headers())).flatten())
                .map(|t| Box::pin(tokio::time::sleep_until(tokio::time::Instant::now() + t)));
            let timings = req.extensions().get::<Timings>().cloned();
            let started = std::time::Instant::now();
            let empty = http_body::Body::size_hint(req.body()).exact() == Some(0);
            let idempotent = req.method().is_idempotent();
            let mut progress = Progress::new();
            let mut held = None;
            if !empty {
                // uwsgi and FastCGI need the body's length: one of unknown length is read
                // first (boxed: its reading is not room in every request's future).
                let unknown = http_body::Body::size_hint(req.body()).exact().is_none();
                // Taken, not the request consumed: its head may be needed again.
                let body = std::mem::replace(req.body_mut(), Body::empty());
                let body = match self.settings.buffer_request || (unknown && cgi) {
                    false => body,
                    true => match Box::pin(body.buffer(BUFFER_MEMORY)).await {
                        Ok(body) => body,
                        Err(e) => {
                            tracing::info!("the request body did not arrive whole: {e}");
                            let status = match e.is_timeout() {
                                true => StatusCode::REQUEST_TIMEOUT,
                                false => StatusCode::BAD_REQUEST,
                            };
                            return Err(status);
                        }
                    },
                };
                // Kept while it may be sent again: to the next upstream, or, for an
                // idempotent request, on a new connection to the same one.
                let (body, hold) = body::Held::if_more(body, idempotent || upstreams.len() > 1);
                held = hold;
                outgoing.body = Some(body::sent(body, progress.clone()));
            }

            // The upstreams asked, each once at most; with a hash, where it led.
            let mut tried = Vec::new();
            let mut turn = match &self.settings.balance {
                Balance::IpHash => Some(hash::Turn::ip(req.remote_addr().map(|a| a.ip()))),
                Balance::Hash { key, consistent } => Some(match consistent {
                    false => hash::Turn::key(key.of(&req)),
                    true => hash::Circle::of(&self.circle, upstreams).start(&key.of(&req)),
                }),
                Balance::RoundRobin | Balance::LeastOutstanding => None,
            }
            .map(Box::new);
            // An idempotent request whose pooled connection closed under it (its
            // upstream's keep-alive ran out as it went) is asked again once, with its
            // body, on a new connection to the same upstream, as nginx does with a
            // cached connection; it is no failure of the upstream's.
            let (mut again, mut asked_again) = (None, false);
            let (upstream, res, in_flight) = loop {
                let Some(i) = again
                    .take()
                    .or_else(|| self.pick(upstreams, &tried, turn.as_deref_mut()))
                else {
                    return Err(StatusCode::BAD_GATEWAY);
                };
                let upstream = &upstreams[i];
                let may_retry = tried.len() + 1 < upstreams.len();
                let in_flight = upstream.begin();
                let req_out = outgoing.request(upstream, may_retry);
                let sent = upstream.send(req_out, upgrading, asked_again);
                let failure = tokio::select! {
                    res = sent => match res {
                        Ok(res) => break (upstream, res, in_flight),
                        Err(e) if e.is_stale() && idempotent && !asked_again => Failure::Stale(e),
                        Err(e) if e.is_connect() => Failure::Connect(e),
                        Err(e) if is_client_fault(&e) => Failure::Client(e),
                        Err(e) => Failure::Other(e),
                    },
                    client = progress.stalled(self.settings.read_timeout) => match client {
                        false => Failure::Timeout,
                        true => Failure::ClientStalled,
                    },
                    () = async {
                        match deadline.as_mut() {
                            Some(at) => at.await,
                            None => std::future::pending().await,
                        }
                    } => {
                        tracing::info!(upstream = %upstream.name, "the gRPC call's deadline (grpc-timeout) passed before the upstream answered");
                        return Err(StatusCode::GATEWAY_TIMEOUT);
                    }
                };
                drop(in_flight);
                if let Failure::Stale(e) = &failure {
                    outgoing = self.outgoing(&req, upgrading, cgi)?.1;
                    progress = Progress::new();
                    if body_again(&mut outgoing, &mut held, &progress, empty, may_retry) {
                        tracing::debug!(upstream = %upstream.name, "asked again on a new connection: {}", error_chain(e));
                        (again, asked_again) = (Some(i), true);
                        continue;
                    }
                }
                let (status, what) = match &failure {
                    Failure::Connect(e) | Failure::Other(e) | Failure::Stale(e) => {
                        (StatusCode::BAD_GATEWAY, error_chain(e))
                    }
                    Failure::Timeout => (
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("no progress for {:?}", self.settings.read_timeout),
                    ),
                    Failure::ClientStalled => {
                        tracing::info!(upstream = %upstream.name, timeout = ?self.settings.read_timeout, "the client sent no byte of its body for the read timeout");
                        return Err(StatusCode::REQUEST_TIMEOUT);
                    }
                    Failure::Client(e) => {
                        // The client's body broke: not the upstream's fault. One the
                        // server timed out (its body timeout) is the client's 408.
                        tracing::info!(upstream = %upstream.name, "the request body failed: {}", error_chain(e));
                        return Err(match client_timed_out(e) {
                            true => StatusCode::REQUEST_TIMEOUT,
                            false => StatusCode::BAD_REQUEST,
                        });
                    }
                };
                tracing::warn!(upstream = %upstream.name, "{what}");
                upstream.record(false, &self.settings);
                // On to the next upstream: what a failed connection never sent,
                // and an idempotent request that got no answer at all, or none in
                // time (RFC 9110 §9.2.2), as nginx's `proxy_next_upstream error
                // timeout` does.
                let next = match &failure {
                    Failure::Connect(_) => true,
                    Failure::Other(e) => idempotent && e.closed_before_answer(),
                    Failure::Timeout => idempotent,
                    _ => false,
                };
                if !(may_retry && next) {
                    return Err(status);
                }
                tried.push(i);
                progress = Progress::new();
                let more = idempotent || tried.len() + 1 < upstreams.len();
                if !body_again(&mut outgoing, &mut held, &progress, empty, more) {
                    return Err(status);
                }
            };
            // Answered: nothing more of the body is kept.
            drop(held);
            upstream.record(true, &self.settings);
            if let Some(timings) = timings {
                timings.add("upstream", started.elapsed(), None);
            }

            let (mut parts, incoming) = res.into_parts();
            if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                drop(in_flight);
                let upstream_res = http::Response::from_parts(parts.clone(), incoming);
                return match client_upgrade {
                    Some(client) => Ok(upgrade::splice(
                        client,
                        upstream_res,
                        upstream.name.clone(),
                        self.settings.read_timeout,
                    )),
                    None => Err(StatusCode::BAD_GATEWAY),
                };
            }
            // A Transfer-Encoding overrides a Content-Length, which then says
            // nothing of the body: forwarded, it would frame the client's
            // reading of a body of another length (RFC 9112 §6.3).
            if parts.headers.contains_key(TRANSFER_ENCODING) {
                parts.headers.remove(CONTENT_LENGTH);
            }
            headers::last_content_type(&mut parts.headers);
            headers::strip_hop_by_hop(&mut parts.headers, false);
            // The upstream's version is its hop's (a uwsgi app's answer is HTTP/1.0):
            // the client's connection has its own.
            parts.version = Version::default();
            let rewrite = headers::Rewrite {
                origin: &upstream.origin,
                base: &upstream.spec.base,
                mount: &mount,
            };
            // A uwsgi or FastCGI app knows its mount (SCRIPT_NAME): its redirects
            // already point into it, as behind nginx's uwsgi_pass and fastcgi_pass.
            if upstream.spec.protocol == Protocol::Http {
                rewrite.apply(&mut parts.headers, self.settings.rewrite_cookies);
            }
            let body = Body::new(UpstreamBody::new(
                incoming,
                upstream,
                in_flight,
                self.settings.body_timeout,
            ));
            let body = match self.settings.buffer_response {
                true => body.spool(BUFFER_MEMORY),
                false => body,
            };
            Ok(Response::from_parts(parts, body))
        }
    }

    /// The request's head as it goes to the upstreams, and the mount the
    /// proxy answers under; made again for a request whose pooled connection
    /// closed under it.
    fn outgoing(
        &self,
        req: &Request,
        upgrading: bool,
        cgi: bool,
    ) -> Result<(String, Outgoing), StatusCode> {
        // TRACE asks the last server to echo the request back, fields and all:
        // those this proxy adds (`X-Forwarded-*`, a credential a layer sets for
        // the upstream) would reach the client. nginx refuses it too.
        if req.method() == Method::TRACE {
            return Err(StatusCode::METHOD_NOT_ALLOWED);
        }
        let env = req.environ();
        // The host the client asked for (a trusted proxy's, HTTP/2's
        // authority), when it is one: it is quoted into `Forwarded` below.
        let client_host = env.http_host().filter(|host| headers::is_authority(host));
        // A uwsgi or FastCGI upstream is told the path decoded, and PHP-FPM
        // runs the root joined with it: a NUL decoded from it (PHP-FPM takes
        // SCRIPT_FILENAME up to its first NUL) or a dot segment made of a
        // `%2F` (`/..%2F..%2Fetc/x.php`, one segment to the Dispatcher) would
        // name a file other than the one asked for, outside the root even.
        // nginx answers 400 to both where they climb above the root, to
        // `OPTIONS *`, whose `*` is no path to join to a root, and to a `%`
        // that escapes no byte (`%zz`, a `%` at the end), which leaves the
        // path no decoded form to tell.
        if cgi {
            let path = env.path_info_decoded();
            if path == "*"
                || path.contains('\0')
                || path.split('/').any(|s| s == "." || s == "..")
                || stray_percent(env.path_info())
            {
                return Err(StatusCode::BAD_REQUEST);
            }
        }
        let mount = env.mount_path().into_owned();
        // Exactly as long as it is: the upstream's URI may take it as it is.
        let (path, query) = (env.path_info(), req.uri().query());
        let mut path_and_query =
            String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
        path_and_query.push_str(path);
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        // With room for what is added below: a clone has none, and would
        // grow as they are.
        let mut headers = HeaderMap::with_capacity(req.headers().len() + 6);
        let grpc = grpc::is_call(req);
        for (name, value) in req.headers() {
            if headers::passes(name, grpc) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers::strip_hop_by_hop(&mut headers, upgrading);
        if req.version() >= http::Version::HTTP_2 {
            headers::join_cookies(&mut headers);
        }
        headers::forward(&mut headers, &env, client_host);
        // Inside a TraceContext, this server's span is the upstream's parent.
        if let Some(trace) = crate::trace_context::Trace::of(req) {
            let value = trace.traceparent().parse().expect("hex and dashes");
            headers.insert("traceparent", value);
        }
        if self.settings.forwarded {
            headers::forwarded(&mut headers, &env, client_host);
        }
        match (&client_host, self.settings.preserve_host) {
            (Some(host), true) => {
                if let Ok(host) = HeaderValue::from_str(host) {
                    headers.insert(HOST, host);
                }
            }
            _ => drop(headers.remove(HOST)),
        }
        // Only a CGI upstream is told them: none of the work for the others.
        let cgi_ends = cgi.then(|| {
            let remote_port = (env.remote_addr().map(|a| a.port()))
                .filter(|&p| p != 0)
                .map(HeaderValue::from);
            let server_addr = (env.local_addr())
                .and_then(|a| HeaderValue::try_from(stackway::environ::ip_text(a.ip())).ok());
            let server_protocol = Some(HeaderValue::from_static(env.server_protocol()));
            // The user `BasicAuth` (or a front) let in.
            let remote_user = (req.extensions().get::<Forwarded>())
                .and_then(|front| front.vars.iter().find(|(name, _)| name == "REMOTE_USER"))
                .and_then(|(_, user)| HeaderValue::from_bytes(user).ok());
            Box::new([remote_port, server_addr, server_protocol, remote_user])
        });
        let outgoing = Outgoing {
            method: req.method().clone(),
            path_and_query,
            headers,
            body: None,
            cgi_ends,
        };
        Ok((mount, outgoing))
    }
}

/// An error and its causes, for the log: `client error (Connect): tcp
/// connect error: Connection refused (os error 111)`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let upstreams: Vec<String> = self.specs.iter().map(ToString::to_string).collect();
        f.debug_struct("Proxy")
            .field("upstreams", &upstreams)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
