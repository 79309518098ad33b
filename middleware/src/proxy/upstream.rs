//! One upstream: where it is (TCP or a unix socket, and a base path), what it
//! speaks (HTTP, uwsgi or FastCGI), each thread's pool of connections to it,
//! and what the balancer knows of its health.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use http::Uri;
use http::uri::PathAndQuery;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use stackway::Body;
use tokio_rustls::rustls::pki_types::ServerName;

use super::Settings;
use super::cgi::Writer;
use super::dns;
use super::fastcgi::FastCgi;
use super::pool::{self, Leased};
use super::tls::{self, UpstreamTls};
use super::uwsgi::{self, Uwsgi};

/// Where an upstream listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// `host:port`, as written.
    Tcp(String),
    Unix(PathBuf),
}

/// Why an upstream spec does not parse; `Display` is a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    spec: String,
    why: std::borrow::Cow<'static, str>,
}

impl SpecError {
    pub(crate) fn none() -> Self {
        Self {
            spec: String::new(),
            why: "there is no upstream to balance over".into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot proxy to {:?}: {}", self.spec, self.why)
    }
}

impl std::error::Error for SpecError {}

/// What an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    /// uWSGI's protocol (uwsgi.rs): one request a connection, never pooled.
    Uwsgi,
    /// FastCGI (fastcgi.rs), the same way.
    FastCgi,
}

/// An upstream spec: `http://HOST:PORT[/base]`, `https://HOST:PORT[/base]`,
/// `http+srv://NAME[/base]` or `unix:/path/to.sock[:/base]`, or the same in
/// uwsgi (`uwsgi://`, `uwsgi+unix:`) or FastCGI (`fastcgi://`, `fastcgi+unix:`);
/// then, after spaces, nginx's `server` parameters (see [`Member`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    pub(crate) address: Address,
    pub(crate) protocol: Protocol,
    /// Over TLS (`https://`): the name the upstream's certificate must hold.
    pub(crate) tls: Option<ServerName<'static>>,
    /// Raw (percent-encoded) path without a trailing `/`: `""` or `/base`.
    pub(crate) base: String,
    /// `http+srv://`: the host is a name whose SRV records say where the
    /// upstream is (targets and ports); the address has no port.
    pub(crate) srv: bool,
    pub(crate) member: Member,
}

/// How a pool treats one of its upstreams: nginx's `server` parameters,
/// written after the spec (`http://10.0.0.2:8000 weight=3 max_fails=2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// `weight=N`: its share of the requests against the others' (1).
    pub(crate) weight: usize,
    /// `backup`: asked only when no other member is live, or every other
    /// has been tried for the request.
    pub(crate) backup: bool,
    /// `down`: never asked.
    pub(crate) down: bool,
    /// `max_conns=N`: not asked while it has this many requests in flight.
    pub(crate) max_conns: Option<usize>,
    /// `max_fails=N` and `fail_timeout=T` (`10`, `10s`, `500ms`, `1m`, `1h`):
    /// the pool's, for this member.
    pub(crate) max_fails: Option<u32>,
    pub(crate) fail_timeout: Option<Duration>,
}

impl Default for Member {
    fn default() -> Self {
        Self {
            weight: 1,
            backup: false,
            down: false,
            max_conns: None,
            max_fails: None,
            fail_timeout: None,
        }
    }
}

impl Member {
    /// Takes one parameter.
    fn set(&mut self, parameter: &str) -> Result<(), String> {
        let bad = || {
            format!(
                "{parameter:?} is no weight=N, max_conns=N, max_fails=N, fail_timeout=T, backup or down"
            )
        };
        match parameter.split_once('=') {
            None if parameter == "backup" => self.backup = true,
            None if parameter == "down" => self.down = true,
            Some(("weight", n)) => match n.parse::<u16>() {
                Ok(n) if n > 0 => self.weight = n.into(),
                _ => {
                    return Err(format!(
                        "weight={n}: a weight is a whole number from 1 to 65535"
                    ));
                }
            },
            Some(("max_conns", n)) => {
                let n: usize = n.parse().map_err(|_| bad())?;
                self.max_conns = (n > 0).then_some(n);
            }
            Some(("max_fails", n)) => {
                let n: u32 = n.parse().map_err(|_| bad())?;
                self.max_fails = Some(if n == 0 { u32::MAX } else { n });
            }
            Some(("fail_timeout", t)) => self.fail_timeout = Some(nginx_time(t).ok_or_else(bad)?),
            _ => return Err(bad()),
        }
        Ok(())
    }
}

/// A time as nginx writes one: a whole number of `ms`, `s` (the unit when
/// none is said), `m` or `h`.
fn nginx_time(time: &str) -> Option<Duration> {
    let unit = time.trim_start_matches(|c: char| c.is_ascii_digit());
    let n: u64 = time[..time.len() - unit.len()].parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

impl Spec {
    /// Parses a spec.
    ///
    /// ```text
    /// http://127.0.0.1:9000           → Tcp("127.0.0.1:9000"), base ""
    /// http://localhost:9000/api/      → Tcp("localhost:9000"),  base "/api"
    /// unix:/run/app.sock              → Unix("/run/app.sock"),  base ""
    /// unix:/run/app.sock:/api         → Unix("/run/app.sock"),  base "/api"
    /// http+srv://_http._tcp.api.internal → Tcp("_http._tcp.api.internal"), SRV
    /// ```
    pub(crate) fn parse(spec: &str) -> Result<Self, SpecError> {
        let error = |why: String| SpecError {
            spec: spec.to_owned(),
            why: why.into(),
        };
        let mut words = spec.split_ascii_whitespace();
        let mut parsed =
            Self::parse_url(words.next().unwrap_or_default()).map_err(|e| SpecError {
                spec: spec.to_owned(),
                ..e
            })?;
        for parameter in words {
            parsed.member.set(parameter).map_err(error)?;
        }
        if parsed.srv && (parsed.member.weight != 1 || parsed.member.backup) {
            return Err(error(
                "SRV records give the weights and which stand by: say neither".into(),
            ));
        }
        Ok(parsed)
    }

    /// Parses the spec's URL.
    fn parse_url(spec: &str) -> Result<Self, SpecError> {
        let error = |why: &'static str| SpecError {
            spec: spec.to_owned(),
            why: why.into(),
        };
        let scheme = |name: &str| {
            let rest = spec.strip_prefix(name)?;
            Some((rest.strip_prefix("+unix:"), rest.strip_prefix("://")))
        };
        let https = spec.strip_prefix("https://");
        let srv = spec.strip_prefix("http+srv://");
        let (protocol, (unix, tcp)) = match (scheme("uwsgi"), scheme("fastcgi")) {
            (Some(rest), _) => (Protocol::Uwsgi, rest),
            (_, Some(rest)) => (Protocol::FastCgi, rest),
            _ => (
                Protocol::Http,
                (
                    spec.strip_prefix("unix:"),
                    spec.strip_prefix("http://").or(https).or(srv),
                ),
            ),
        };
        let mut tls = None;
        let (address, base) = if let Some(rest) = unix {
            let (path, base) = match rest.split_once(":/") {
                Some((path, base)) => (path, format!("/{base}")),
                None => (rest, String::new()),
            };
            if !path.starts_with('/') {
                return Err(error(
                    "a unix socket path must be absolute (unix:/run/app.sock)",
                ));
            }
            (Address::Unix(PathBuf::from(path)), base)
        } else if let Some(rest) = tcp {
            let (authority, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let parsed: http::uri::Authority = authority
                .parse()
                .map_err(|_| error("the host:port is not valid"))?;
            if srv.is_some() {
                if parsed.port().is_some() || parsed.as_str().contains(['@', '[']) {
                    return Err(error(
                        "an SRV record gives the port: say a name alone (http+srv://NAME/base)",
                    ));
                }
                if parsed.host().parse::<IpAddr>().is_ok() {
                    return Err(error("an address has no SRV records: say a name"));
                }
            } else if parsed.port_u16().is_none() || parsed.as_str().contains('@') {
                return Err(error("say the port, and no user (http://HOST:PORT/base)"));
            }
            if https.is_some() {
                let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
                tls = Some(
                    ServerName::try_from(host.to_owned())
                        .map_err(|_| error("the host is no name a certificate can hold"))?,
                );
            }
            (Address::Tcp(parsed.as_str().to_owned()), base.to_owned())
        } else {
            return Err(error(
                "expected http://HOST:PORT[/base], https://HOST:PORT[/base], \
                 http+srv://NAME[/base] or unix:/PATH[:/base] (uwsgi://HOST:PORT[/base] or \
                 uwsgi+unix:/PATH[:/base] for uwsgi)",
            ));
        };
        let base = base.trim_end_matches('/').to_owned();
        if base.contains(['?', '#'])
            || (!base.is_empty() && base.parse::<http::uri::PathAndQuery>().is_err())
        {
            return Err(error("the base path is not a plain path"));
        }
        Ok(Self {
            address,
            protocol,
            tls,
            base,
            srv: srv.is_some(),
            member: Member::default(),
        })
    }
}

impl Spec {
    /// The host, when it is a name (not an address) to resolve.
    pub(crate) fn host_name(&self) -> Option<String> {
        let Address::Tcp(authority) = &self.address else {
            return None;
        };
        let authority: http::uri::Authority = authority.parse().ok()?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        host.parse::<IpAddr>().is_err().then(|| host.to_owned())
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tcp, unix) = match self.protocol {
            Protocol::Http if self.tls.is_some() => ("https://", "unix:"),
            Protocol::Http if self.srv => ("http+srv://", "unix:"),
            Protocol::Http => ("http://", "unix:"),
            Protocol::Uwsgi => ("uwsgi://", "uwsgi+unix:"),
            Protocol::FastCgi => ("fastcgi://", "fastcgi+unix:"),
        };
        match &self.address {
            Address::Tcp(authority) => write!(f, "{tcp}{authority}{}", self.base),
            Address::Unix(path) if self.base.is_empty() => write!(f, "{unix}{}", path.display()),
            Address::Unix(path) => write!(f, "{unix}{}:{}", path.display(), self.base),
        }
    }
}

/// An upstream with its pools and its health.
pub(crate) struct Upstream {
    pub(crate) spec: Spec,
    /// For a member of a pool from DNS: the one address of the spec's host
    /// it connects to, at the spec's port (0) or its SRV record's.
    pub(crate) pinned: Option<SocketAddr>,
    /// Its SRV record's priority and weight, or its spec's (`backup`: 1,
    /// else 0; `weight=`): the balancer sends to the lowest priority that has
    /// a live member, and shares its requests by weight.
    pub(crate) priority: u16,
    pub(crate) weight: usize,
    /// Where it stands in nginx's smooth weighted round robin.
    pub(crate) current: AtomicI64,
    /// Alive as long as the upstream: each thread's pools for it go once it
    /// is gone (a member DNS no longer names).
    alive: Arc<()>,
    /// `spec` as text, for log lines that outlive a borrow of the upstream.
    pub(crate) name: Arc<str>,
    /// `http://AUTHORITY` (`https://`): how the upstream's absolute redirects begin.
    pub(crate) origin: String,
    /// Tells this upstream's pools apart in each thread's [`POOLS`].
    id: u64,
    connector: Connector,
    /// Over TLS, upgrades (WebSocket) need HTTP/1.1: their own pools, whose
    /// connections offer only that.
    upgrades: Option<Connector>,
    pool: hyper_util::client::legacy::Builder,
    /// How many idle connections each thread's pool keeps.
    max_idle: usize,
    /// What a plain HTTP upstream's pool dials: `http://AUTHORITY/`.
    dial: Uri,
    /// The authority requests are sent to: the TCP address, or `localhost`
    /// for a unix socket (the `Host` a server on a socket expects).
    pub(crate) authority: http::uri::Authority,
    /// The `Host` of a request to it over plain HTTP/1.1, made once: the
    /// authority without port 80, as hyper-util's client would make it for
    /// each request. `None` where the connection may be HTTP/2 or is not HTTP:
    /// `Some` says the upstream's requests go on hyper's own HTTP/1.1
    /// connections, in each thread's [`pool::Pool`].
    pub(crate) host: Option<http::HeaderValue>,
    /// Requests sent and not yet answered in full.
    pub(crate) outstanding: Arc<AtomicUsize>,
    failures: AtomicU32,
    /// Milliseconds after `EPOCH` until which it is out, or 0.
    down_until: AtomicU64,
    /// Failed its last active health check.
    unhealthy: AtomicBool,
    /// Requests that reached it, and attempts that failed, since the start.
    pub(crate) answered: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// A thread's pool for an upstream.
enum Pool {
    /// hyper's HTTP/1.1 connections, pooled here: a plain HTTP upstream.
    Http1(Arc<pool::Pool>),
    /// hyper-util's pooled client: TLS, HTTP/2, uwsgi and FastCGI.
    Client(Box<Client<Connector, Body>>),
}

impl Pool {
    /// `fresh`: on a new connection (hyper-util's client chooses itself).
    fn send(
        &self,
        req: http::Request<Body>,
        fresh: bool,
    ) -> impl Future<Output = Result<http::Response<Leased>, SendError>> + Send + use<> {
        use futures_util::{TryFutureExt, future::Either};
        match self {
            Self::Http1(pool) => Either::Left(pool.clone().send(req, fresh)),
            Self::Client(client) => Either::Right(
                (client.request(req))
                    .map_ok(|res| res.map(Leased::unpooled))
                    .map_err(SendError::Client),
            ),
        }
    }
}

/// A thread's pools: by upstream id and whether for upgrades, each with the
/// token that says its upstream still lives.
/// Looked up on every request: foldhash, not SipHash, for the keys are ours.
type Pools = std::collections::HashMap<(u64, bool), (Weak<()>, Pool), foldhash::fast::RandomState>;

/// How long a pooled connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    /// Each thread's pools.
    ///
    /// A pooled connection is driven by a task on the runtime that opened it;
    /// handed to a request on another worker's runtime, every request and
    /// response would cross threads (a wakeup, a context switch, and
    /// allocations freed on the other thread). So each worker thread keeps
    /// its own pool per upstream, as each nginx worker does.
    static POOLS: std::cell::RefCell<Pools> = std::cell::RefCell::default();
}

/// Why a request did not reach its upstream, or its answer did not come.
/// `Display` and the causes read as hyper-util's client's errors do.
#[derive(Debug)]
pub(crate) enum SendError {
    Client(hyper_util::client::legacy::Error),
    Connect(io::Error),
    Request(hyper::Error),
    /// A request without a body, sent and answered in its own task.
    Bare(super::h1::Error),
    /// The pooled connection the request went on closed before any answer.
    Stale(Box<dyn std::error::Error + Send + Sync>),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            Self::Client(e) => e.is_connect(),
            Self::Connect(_) => true,
            Self::Request(_) | Self::Bare(_) | Self::Stale(_) => false,
        }
    }

    pub(crate) fn is_stale(&self) -> bool {
        matches!(self, Self::Stale(_))
    }

    /// Whether the connection closed (or was reset) before any answer came:
    /// no answer, rather than a bad one.
    pub(crate) fn closed_before_answer(&self) -> bool {
        match self {
            Self::Request(e) => super::pool::closed_under(e),
            Self::Bare(e) => e.closed_before_answer(),
            Self::Stale(_) => true,
            Self::Client(_) | Self::Connect(_) => false,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Client(e) => e.fmt(f),
            Self::Connect(_) => f.write_str("client error (Connect)"),
            Self::Request(_) | Self::Bare(_) | Self::Stale(_) => {
                f.write_str("client error (SendRequest)")
            }
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Client(e) => e.source(),
            Self::Connect(e) => Some(e),
            Self::Request(e) => Some(e),
            Self::Bare(e) => Some(e),
            Self::Stale(e) => Some(&**e),
        }
    }
}

impl Upstream {
    /// `resolve`: how a TCP spec's host becomes addresses.
    pub(crate) fn new(spec: Spec, settings: &Settings, resolve: Resolve) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let pinned = match resolve {
            Resolve::Pinned(addr) => Some(addr),
            _ => None,
        };
        let dial = match &spec.address {
            Address::Tcp(_) => {
                let mut http = HttpConnector::new_with_resolver(resolve);
                http.set_connect_timeout(Some(settings.connect_timeout));
                http.set_nodelay(true);
                // `https://` URIs too: the handshake follows the connect.
                http.enforce_http(false);
                Dial::Tcp(http)
            }
            Address::Unix(path) => Dial::Unix(Arc::new(path.clone())),
        };
        let tls = spec.tls.as_ref().map(|name| {
            let roots = settings
                .tls
                .clone()
                .unwrap_or_else(UpstreamTls::system_roots);
            tls::Dial::new(&roots, name.clone(), settings.http2)
        });
        let connector = Connector {
            dial,
            tls,
            http1: false,
            timeout: settings.connect_timeout,
            protocol: spec.protocol,
            fastcgi_root: settings.fastcgi_root.clone(),
            open: Arc::default(),
        };
        let upgrades = spec.tls.is_some().then(|| Connector {
            http1: true,
            ..connector.clone()
        });
        let mut pool = Client::builder(TokioExecutor::new());
        // A uwsgi or FastCGI connection carries one request.
        let max_idle = match spec.protocol {
            Protocol::Http => settings.max_idle,
            Protocol::Uwsgi | Protocol::FastCgi => 0,
        };
        pool.pool_max_idle_per_host(max_idle)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .http2_only(settings.http2);
        let authority = match &spec.address {
            Address::Tcp(authority) => authority.parse().expect("checked by Spec::parse"),
            Address::Unix(_) => http::uri::Authority::from_static("localhost"),
        };
        let plain_http1 = spec.tls.is_none() && !settings.http2 && spec.protocol == Protocol::Http;
        let host = plain_http1.then(|| {
            let value = match authority.port_u16() {
                Some(80) | None => authority.host().to_owned(),
                Some(port) => format!("{}:{port}", authority.host()),
            };
            http::HeaderValue::try_from(value).expect("an authority is a header value")
        });
        let scheme = if spec.tls.is_some() { "https" } else { "http" };
        let name = match pinned {
            Some(addr) if addr.port() == 0 => format!("{spec} ({})", addr.ip()),
            Some(addr) => format!("{spec} ({addr})"),
            None => spec.to_string(),
        };
        Self {
            name: name.into(),
            pinned,
            priority: u16::from(spec.member.backup),
            weight: spec.member.weight,
            current: AtomicI64::new(0),
            alive: Arc::default(),
            origin: format!("{scheme}://{authority}"),
            spec,
            id: IDS.fetch_add(1, Ordering::Relaxed),
            dial: format!("http://{authority}/")
                .parse()
                .expect("an authority"),
            connector,
            upgrades,
            pool,
            max_idle,
            authority,
            host,
            outstanding: Arc::default(),
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            unhealthy: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Connections open to it, idle in a pool or carrying a request.
    pub(crate) fn connections(&self) -> usize {
        self.connector.open.load(Ordering::Relaxed)
    }

    /// `req`, sent by this thread's pool for the upstream (`fresh`: on a new
    /// connection); for an `upgrade` over TLS, by one whose connections speak
    /// HTTP/1.1. Its `Host` is set here where the client's is not passed on
    /// (as hyper-util's client would set it from the URI).
    pub(crate) fn send(
        &self,
        mut req: http::Request<Body>,
        upgrade: bool,
        fresh: bool,
    ) -> impl Future<Output = Result<http::Response<Leased>, SendError>> + Send + 'static {
        if let Some(host) = &self.host {
            req.headers_mut()
                .entry(http::header::HOST)
                .or_insert_with(|| host.clone());
        }
        let connector = match (&self.upgrades, upgrade) {
            (Some(upgrades), true) => upgrades,
            _ => &self.connector,
        };
        POOLS.with_borrow_mut(|pools| {
            let key = (self.id, connector.http1);
            if let Some((_, pool)) = pools.get(&key) {
                return pool.send(req, fresh);
            }
            // The pools of upstreams gone close their idle connections.
            pools.retain(|_, (alive, _)| alive.strong_count() > 0);
            let pool = match self.host {
                Some(_) => Pool::Http1(pool::Pool::new(
                    connector.clone(),
                    self.dial.clone(),
                    self.max_idle,
                    IDLE_TIMEOUT,
                )),
                None => Pool::Client(Box::new(self.pool.build(connector.clone()))),
            };
            let sent = pool.send(req, fresh);
            pools.insert(key, (Arc::downgrade(&self.alive), pool));
            sent
        })
    }

    /// The URI of `path_and_query` (raw, below the base) at this upstream: in
    /// origin form (`/base/path?query`) for a plain HTTP/1.1 upstream.
    pub(crate) fn uri(&self, path_and_query: String) -> Uri {
        let base = &self.spec.base;
        // Below no base, a path is the URI's as it is: no copy. So is `*`
        // (`OPTIONS *`, the server as a whole), under any base: joined to
        // one, it would name a resource.
        let path = if (base.is_empty() && path_and_query.starts_with('/')) || path_and_query == "*"
        {
            path_and_query
        } else {
            let slash = base.is_empty();
            // Exactly as long as it will be, so that it becomes the URI's bytes
            // without another allocation.
            let mut path =
                String::with_capacity(base.len() + usize::from(slash) + path_and_query.len());
            path.push_str(base);
            if slash {
                path.push('/');
            }
            path.push_str(&path_and_query);
            path
        };
        let path = PathAndQuery::try_from(path)
            .expect("a request URI's path, or a health check's encoded");
        // This thread's pool of hyper's connections sends the URI as it is;
        // hyper-util's client wants it whole.
        let scheme = match (&self.host, &self.spec.tls) {
            (Some(_), _) => return Uri::from(path),
            (None, Some(_)) => http::uri::Scheme::HTTPS,
            (None, None) => http::uri::Scheme::HTTP,
        };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone());
        (uri.path_and_query(path).build()).expect("the parts were valid on their own")
    }

    /// A request sent to it, counted in flight until the guard is dropped:
    /// when it fails, when its client gives up, or with the response's body.
    pub(crate) fn begin(&self) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(self.outstanding.clone())
    }

    /// Whether it has as many requests in flight as its `max_conns`.
    pub(crate) fn is_full(&self) -> bool {
        (self.spec.member.max_conns)
            .is_some_and(|max| self.outstanding.load(Ordering::Relaxed) >= max)
    }

    /// Whether the balancer may choose it now.
    pub(crate) fn is_up(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
            && self.down_until.load(Ordering::Relaxed) <= now_ms()
    }

    /// The outcome of an active health check; a pass also ends a passive
    /// time-out.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        if self.unhealthy.swap(!healthy, Ordering::Relaxed) == healthy {
            let state = if healthy {
                "passes its health check again"
            } else {
                "fails its health check"
            };
            tracing::warn!(upstream = %self.name, "{state}");
        }
        if healthy {
            self.down_until.store(0, Ordering::Relaxed);
        }
    }

    /// Notes a request that reached it (or not); after `max_fails` failures in
    /// a row it is out for `fail_timeout` (nginx's passive health checks).
    pub(crate) fn record(&self, ok: bool, settings: &Settings) {
        let counter = if ok { &self.answered } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let member = &self.spec.member;
        if failures >= member.max_fails.unwrap_or(settings.max_fails) {
            let fail_timeout = member.fail_timeout.unwrap_or(settings.fail_timeout);
            let until = now_ms() + u64::try_from(fail_timeout.as_millis()).unwrap_or(0);
            self.down_until.store(until, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %self.spec, ?fail_timeout, "left out after {failures} failures in a row");
        }
    }
}

/// A request in flight at an upstream; see [`Upstream::begin`].
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    // +1 so that 0 always means "not down".
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// Connects to an upstream over TCP or a unix socket, and counts the
/// connections open (the size of its pools).
#[derive(Clone)]
pub(crate) struct Connector {
    dial: Dial,
    /// For an `https://` upstream, the handshake after the TCP connect.
    tls: Option<tls::Dial>,
    /// Offers only HTTP/1.1 over TLS (for upgrades).
    http1: bool,
    /// Bounds the connect and the TLS handshake together.
    timeout: Duration,
    protocol: Protocol,
    fastcgi_root: Option<Arc<Path>>,
    open: Arc<AtomicUsize>,
}

#[derive(Clone)]
enum Dial {
    Tcp(HttpConnector<Resolve>),
    Unix(Arc<PathBuf>),
}

/// How a TCP upstream's host becomes addresses at each connection: the
/// system's resolver, the nameservers of a pool from DNS, the SRV records of
/// an `http+srv://` name (the targets of the lowest priority), or the one
/// address of a pool's member (its port 0 for the spec's).
#[derive(Clone)]
pub(crate) enum Resolve {
    System,
    Dns(Arc<TokioResolver>),
    Srv(Arc<TokioResolver>),
    Pinned(SocketAddr),
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for Resolve {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self {
            Self::System => {
                let resolving = GaiResolver::new().call(name);
                Box::pin(async move { Ok(resolving.await?.collect::<Vec<_>>().into_iter()) })
            }
            Self::Dns(resolver) => {
                let resolver = resolver.clone();
                Box::pin(async move {
                    let found =
                        (resolver.lookup_ip(name.as_str()).await).map_err(io::Error::other)?;
                    Ok(found
                        .iter()
                        .map(|ip| SocketAddr::new(ip, 0))
                        .collect::<Vec<_>>()
                        .into_iter())
                })
            }
            Self::Srv(resolver) => {
                let resolver = resolver.clone();
                Box::pin(async move {
                    let found = dns::srv(&resolver, name.as_str()).await;
                    let found = found.map_err(io::Error::other)?;
                    let first = found.first().map(|&(priority, ..)| priority);
                    Ok((found.into_iter())
                        .filter(|&(priority, ..)| Some(priority) == first)
                        .map(|(.., addr)| addr)
                        .collect::<Vec<_>>()
                        .into_iter())
                })
            }
            Self::Pinned(addr) => Box::pin(std::future::ready(Ok(vec![*addr].into_iter()))),
        }
    }
}

/// A connection to an upstream, counted open until it is dropped.
pub(crate) struct Stream {
    io: Io,
    speaks: Speaks,
    open: Arc<AtomicUsize>,
}

/// What a connection turns hyper's HTTP/1.1 into.
enum Speaks {
    Http,
    /// The request head becomes a packet on the way out; the answer's head
    /// loses its `Transfer-Encoding` on the way in.
    Uwsgi(Box<(Writer<Uwsgi>, uwsgi::Answer)>),
    /// Requests go out as records, and answers come back from them.
    FastCgi(Box<FastCgi>),
}

enum Io {
    Tcp(TokioIo<tokio::net::TcpStream>),
    Unix(TokioIo<tokio::net::UnixStream>),
    /// Boxed: rustls' state is large.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.dial {
            Dial::Tcp(http) => http.poll_ready(cx).map_err(io::Error::other),
            Dial::Unix(..) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let open = self.open.clone();
        let (protocol, root) = (self.protocol, self.fastcgi_root.clone());
        let counted = move |io| {
            open.fetch_add(1, Ordering::Relaxed);
            let speaks = match protocol {
                Protocol::Http => Speaks::Http,
                Protocol::Uwsgi => {
                    Speaks::Uwsgi(Box::new((Writer::new(Uwsgi), uwsgi::Answer::default())))
                }
                Protocol::FastCgi => Speaks::FastCgi(Box::new(FastCgi::new(root))),
            };
            Stream { io, speaks, open }
        };
        let timeout = self.timeout;
        let tls = self.tls.as_ref().map(|tls| {
            let connector = if self.http1 { &tls.http1 } else { &tls.any };
            (connector.clone(), tls.name.clone())
        });
        let connecting: Pin<Box<dyn Future<Output = io::Result<Io>> + Send>> = match &mut self.dial
        {
            Dial::Tcp(http) => {
                let connecting = http.call(uri);
                Box::pin(async move {
                    let tcp = connecting.await.map_err(io::Error::other)?;
                    Ok(match tls {
                        None => Io::Tcp(tcp),
                        Some((tls, name)) => {
                            let tls = tls.connect(name, tcp.into_inner()).await?;
                            Io::Tls(Box::new(TokioIo::new(tls)))
                        }
                    })
                })
            }
            Dial::Unix(path) => {
                let path = path.clone();
                Box::pin(async move {
                    let stream = tokio::net::UnixStream::connect(&*path).await?;
                    Ok(Io::Unix(TokioIo::new(stream)))
                })
            }
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(io) => Ok(counted(io?)),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            }
        })
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match &self.io {
            Io::Tcp(tcp) => tcp.connected(),
            Io::Unix(_) => Connected::new(),
            Io::Tls(tls) => {
                let (tcp, session) = tls.inner().get_ref();
                let connected = tcp.connected();
                match session.alpn_protocol() {
                    Some(b"h2") => connected.negotiated_h2(),
                    _ => connected,
                }
            }
        }
    }
}

/// A socket, as hyper reads and writes it.
trait Socket: Read + Write + Unpin {}

impl<T: Read + Write + Unpin> Socket for T {}

impl Io {
    fn socket(&mut self) -> Pin<&mut dyn Socket> {
        match self {
            Self::Tcp(s) => Pin::new(s),
            Self::Unix(s) => Pin::new(s),
            Self::Tls(s) => Pin::new(&mut **s),
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.io.socket();
        match &mut this.speaks {
            Speaks::Http => io.poll_read(cx, buf),
            Speaks::Uwsgi(uwsgi) => uwsgi.1.poll_read(io, cx, buf),
            Speaks::FastCgi(fastcgi) => fastcgi.poll_read(io, cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let io = this.io.socket();
        match &mut this.speaks {
            Speaks::Http => io.poll_write(cx, buf),
            Speaks::Uwsgi(uwsgi) => uwsgi.0.poll_write(io, cx, buf),
            Speaks::FastCgi(fastcgi) => fastcgi.poll_write(io, cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let io = this.io.socket();
        match &mut this.speaks {
            Speaks::Http => io.poll_flush(cx),
            Speaks::Uwsgi(uwsgi) => uwsgi.0.poll_flush(io, cx),
            Speaks::FastCgi(fastcgi) => fastcgi.poll_flush(io, cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io.socket().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upstream the proxy builds for `spec`.
    fn upstream(spec: &str, http2: bool) -> Arc<Upstream> {
        crate::proxy::Proxy::to(spec).http2(http2).upstreams()[0].clone()
    }

    #[test]
    fn the_host_made_once_is_the_one_hyper_util_makes_and_only_for_plain_http1() {
        let host = |spec: &str| upstream(spec, false).host.clone();
        let value = http::HeaderValue::from_static;
        assert_eq!(
            host("http://example.com:80/base"),
            Some(value("example.com"))
        );
        assert_eq!(
            host("http://example.com:8080"),
            Some(value("example.com:8080"))
        );
        assert_eq!(host("http://[::1]:9000"), Some(value("[::1]:9000")));
        assert_eq!(host("unix:/run/app.sock"), Some(value("localhost")));
        // hyper-util makes it where the connection may be HTTP/2, or is not HTTP.
        assert_eq!(upstream("http://example.com:8080", true).host, None);
        assert_eq!(host("https://example.com:443"), None);
        assert_eq!(host("uwsgi://127.0.0.1:3031"), None);
    }

    #[test]
    fn the_uri_puts_the_path_below_the_base_and_always_starts_with_a_slash() {
        let uri = |spec: &str, path: &str| upstream(spec, false).uri(path.into()).to_string();
        // In origin form for a plain HTTP/1.1 upstream, whose pool sends it as it is.
        assert_eq!(uri("http://h:1", ""), "/");
        assert_eq!(uri("http://h:1", "?q=1"), "/?q=1");
        assert_eq!(uri("http://h:1", "/a/b?q=1"), "/a/b?q=1");
        assert_eq!(uri("http://h:1/base", ""), "/base");
        assert_eq!(uri("http://h:1/base", "?q"), "/base?q");
        assert_eq!(uri("http://h:1/base", "/x"), "/base/x");
        // Whole for hyper-util's client.
        assert_eq!(uri("https://h:1/base", "/x"), "https://h:1/base/x");
        assert_eq!(
            upstream("http://h:1", true).uri("?q".into()).to_string(),
            "http://h:1/?q"
        );
    }

    #[test]
    fn specs() {
        let ok = |spec: &str| Spec::parse(spec).unwrap();
        assert_eq!(
            ok("http://127.0.0.1:9000"),
            Spec {
                address: Address::Tcp("127.0.0.1:9000".into()),
                protocol: Protocol::Http,
                tls: None,
                base: String::new(),
                srv: false,
                member: Member::default(),
            }
        );
        assert_eq!(ok("http://localhost:9000/api/").base, "/api");
        assert_eq!(ok("http://[::1]:9000/a%20b").base, "/a%20b");
        assert_eq!(
            ok("unix:/run/app.sock"),
            Spec {
                address: Address::Unix("/run/app.sock".into()),
                protocol: Protocol::Http,
                tls: None,
                base: String::new(),
                srv: false,
                member: Member::default(),
            }
        );
        assert_eq!(ok("unix:/run/app.sock:/api").base, "/api");
        assert_eq!(
            ok("unix:/run/app.sock:/api").to_string(),
            "unix:/run/app.sock:/api"
        );
        assert_eq!(ok("http://h:1/b/").to_string(), "http://h:1/b");
        let https = ok("https://api.example.com:8443/v1/");
        assert_eq!(
            https.tls,
            Some(ServerName::try_from("api.example.com").unwrap())
        );
        assert_eq!(https.to_string(), "https://api.example.com:8443/v1");
        assert_eq!(
            ok("https://[::1]:8443").tls,
            Some(ServerName::try_from("::1").unwrap())
        );
        for uwsgi in ["uwsgi://127.0.0.1:3031", "uwsgi+unix:/run/app.sock:/api"] {
            assert_eq!(ok(uwsgi).protocol, Protocol::Uwsgi);
            assert_eq!(ok(uwsgi).to_string(), uwsgi);
        }
        let srv = ok("http+srv://_http._tcp.api.internal/v1/");
        assert!(srv.srv);
        assert_eq!(srv.host_name().as_deref(), Some("_http._tcp.api.internal"));
        assert_eq!(srv.to_string(), "http+srv://_http._tcp.api.internal/v1");
        for bad in [
            "http+srv://_http._tcp.api.internal:80",
            "http+srv://127.0.0.1",
            "http+srv://[::1]",
            "http+srv://user@api.internal",
            "127.0.0.1:9000",
            "http://127.0.0.1",
            "http://user@h:1",
            "http://bad host:1",
            "unix:run/app.sock",
            "http://h:1/a?b",
            "https://h",
            "https+unix:/run/app.sock",
            "ftp://h:1",
            "uwsgi://h",
            "uwsgi+unix:run/app.sock",
            "uwsgi:/run/app.sock",
            "",
        ] {
            assert!(Spec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn members() {
        let member = |spec: &str| Spec::parse(spec).map(|s| s.member);
        assert_eq!(member("http://h:1"), Ok(Member::default()));
        let named =
            Spec::parse("http://h:1/b  weight=3 backup max_fails=0 fail_timeout=1m").unwrap();
        assert_eq!(named.to_string(), "http://h:1/b");
        assert_eq!(
            named.member,
            Member {
                weight: 3,
                backup: true,
                down: false,
                max_conns: None,
                max_fails: Some(u32::MAX),
                fail_timeout: Some(Duration::from_secs(60)),
            }
        );
        assert!(member("unix:/run/a.sock down").unwrap().down);
        assert_eq!(member("http://h:1 max_conns=4").unwrap().max_conns, Some(4));
        assert_eq!(member("http://h:1 max_conns=0").unwrap().max_conns, None);
        for (time, ms) in [
            ("30", 30_000),
            ("30s", 30_000),
            ("250ms", 250),
            ("2h", 7_200_000),
        ] {
            let spec = format!("http://h:1 fail_timeout={time}");
            assert_eq!(
                member(&spec).unwrap().fail_timeout,
                Some(Duration::from_millis(ms))
            );
        }
        for bad in [
            "http://h:1 weight=0",
            "http://h:1 weight=-1",
            "http://h:1 weight",
            "http://h:1 fail_timeout=1d",
            "http://h:1 fail_timeout=s",
            "http://h:1 max_fails=x",
            "http://h:1 max_conns=-1",
            "http://h:1 slow_start=10s",
            "http+srv://_http._tcp.api.internal weight=2",
            "http+srv://_http._tcp.api.internal backup",
        ] {
            let e = Spec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad:?}: {e}");
        }
    }
}
