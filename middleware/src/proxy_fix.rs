//! Takes the client's address, scheme, host, port and mount prefix from the
//! `X-Forwarded-*` headers that trusted proxies in front set, as Werkzeug's
//! `ProxyFix` does, so the app builds its URLs and redirects as the client
//! sees them.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, RequestExt, testing::Client};
//! use stackway_middleware::ProxyFix;
//!
//! let app = |req: Request| async move {
//!     let env = req.environ();
//!     format!("{} {}", env.remote_addr().unwrap().ip(), env.application_uri())
//! };
//! // One proxy in front sets all of them.
//! let app = ProxyFix::new(app).x_host(1).x_port(1).x_prefix(1);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app)
//!     .get("/")
//!     .header("x-forwarded-for", "203.0.113.9")
//!     .header("x-forwarded-proto", "https")
//!     .header("x-forwarded-host", "shop.example")
//!     .header("x-forwarded-port", "8443")
//!     .header("x-forwarded-prefix", "/store")
//!     .await
//!     .assert_text("203.0.113.9 https://shop.example:8443/store");
//! # });
//! ```
//!
//! # Trust
//!
//! Each header has its own count of trusted proxies (`x_for`, `x_proto`,
//! `x_host`, `x_port`, `x_prefix`; 1, 1, 0, 0, 0 by default, as Werkzeug's).
//! Every proxy appends to the comma-separated list, so the value taken is the
//! one that many places from the right: what the outermost trusted proxy
//! saw. A header with fewer values than trusted is ignored, as is an invalid
//! value: a client cannot push a trusted value out of reach by sending its
//! own. A count of 0 ignores the header. Lists are read as Werkzeug 3.1 reads
//! them: a comma inside a quoted string does not split, a quoted value loses
//! its quotes, and empty items do not count.
//!
//! | header | changes | |
//! |---|---|---|
//! | `X-Forwarded-For` | the client's address | `Environ::remote_addr` |
//! | `X-Forwarded-Proto` | the scheme | `Environ::url_scheme` |
//! | `X-Forwarded-Host` | the host | `http_host` (HTTP_HOST), `server_name`, `application_uri` |
//! | `X-Forwarded-Port` | the port, in the host too | `server_port`, `http_host`, `application_uri` |
//! | `X-Forwarded-Prefix` | comes before SCRIPT_NAME | `Environ::mount_path`, and every redirect built from it |
//!
//! HTTP_HOST is what Werkzeug's ProxyFix makes it, so a WSGI app (Flask's
//! `url_for(..., _external=True)`) builds URLs for the host the client
//! named:
//!
//! ```text
//! Host: 10.0.0.5:8000, X-Forwarded-Host: shop.example                      →  shop.example
//! Host: 10.0.0.5:8000, X-Forwarded-Port: 8443                              →  10.0.0.5:8443
//! Host: 10.0.0.5:8000, X-Forwarded-Host: shop.example, X-Forwarded-Port: 443
//!                                                 →  shop.example:443 (URLs leave out :443 over https)
//! ```
//!
//! Where Werkzeug takes any text, values are checked here: a host must be
//! `host[:port]` (no quote, space, path or user can reach a URL or a header
//! built from it), a scheme `http` or `https`, a port a number, a prefix a
//! path; anything else is ignored. A forwarded host without a port means the
//! scheme's default port (Werkzeug keeps the port the proxy connected to).
//!
//! Werkzeug replaces SCRIPT_NAME with the prefix; here the prefix is put in
//! front of it, which is the same at the top of a stack and stays right under
//! a mount. The connection's own values stay in [`stackway::Connection`] and
//! the headers themselves.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::uri::{Authority, Scheme};
use stackway::{App, Connection, Forwarded, Request, RequestExt, Response};

use crate::access::Peers;

/// Applies trusted `X-Forwarded-*` headers; see the [module docs](self).
#[doc(alias = "X-Forwarded-For")]
#[derive(Debug, Clone)]
pub struct ProxyFix<A> {
    inner: A,
    trust: Trust,
    /// The peers whose headers are read; `None`: every peer's.
    peers: Option<Peers>,
}

/// How many proxies are trusted to set each header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trust {
    x_for: usize,
    x_proto: usize,
    x_host: usize,
    x_port: usize,
    x_prefix: usize,
}

impl<A> ProxyFix<A> {
    /// Wraps `inner`, trusting one proxy for `X-Forwarded-For` and
    /// `X-Forwarded-Proto` and none for the others, as Werkzeug does.
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            trust: Trust {
                x_for: 1,
                x_proto: 1,
                x_host: 0,
                x_port: 0,
                x_prefix: 0,
            },
            peers: None,
        }
    }

    /// Proxies trusted to set `X-Forwarded-For`.
    pub fn x_for(mut self, trusted: usize) -> Self {
        self.trust.x_for = trusted;
        self
    }

    /// Proxies trusted to set `X-Forwarded-Proto`.
    pub fn x_proto(mut self, trusted: usize) -> Self {
        self.trust.x_proto = trusted;
        self
    }

    /// Proxies trusted to set `X-Forwarded-Host`.
    pub fn x_host(mut self, trusted: usize) -> Self {
        self.trust.x_host = trusted;
        self
    }

    /// Proxies trusted to set `X-Forwarded-Port`.
    pub fn x_port(mut self, trusted: usize) -> Self {
        self.trust.x_port = trusted;
        self
    }

    /// Proxies trusted to set `X-Forwarded-Prefix`.
    pub fn x_prefix(mut self, trusted: usize) -> Self {
        self.trust.x_prefix = trusted;
        self
    }

    /// Reads the headers only from a connection whose peer is one of
    /// `peers` (gunicorn's `forwarded_allow_ips`, nginx's
    /// `set_real_ip_from`); from any other peer they are ignored, as a
    /// client could have written them.
    ///
    /// ```
    /// use stackway_middleware::{ProxyFix, access::Peers};
    ///
    /// let peers = Peers::new(["10.0.0.0/8", "unix"])?;
    /// let app = ProxyFix::new(|_req: stackway::Request| async { "" }).trusted(peers);
    /// # Ok::<(), stackway_middleware::access::AccessError>(())
    /// ```
    pub fn trusted(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    inner_accessors!();
}

/// The value `trusted` places from the right of a comma-separated header
/// (all its lines together), or `None` when there are fewer, or none trusted.
///
/// ```text
/// X-Forwarded-For: 192.168.0.3, 192.168.0.1   trusted 1 → 192.168.0.1
///                                             trusted 2 → 192.168.0.3
///                                             trusted 3 → None (a client may have sent the rest)
/// ```
///
/// The list is read as Werkzeug's `parse_list_header` reads it: a comma in a
/// quoted string does not split, empty items do not count, a quoted item
/// loses its quotes, and an unclosed quote makes the whole header say nothing.
fn trusted_value(headers: &HeaderMap, name: &str, trusted: usize) -> Option<String> {
    if trusted == 0 {
        return None;
    }
    let mut items: Vec<String> = Vec::new();
    for line in headers.get_all(name) {
        items.extend(list_items(line.to_str().ok()?)?);
    }
    items
        .len()
        .checked_sub(trusted)
        .map(|i| items.swap_remove(i))
}

/// The non-empty items of one comma-separated line, unquoted; `None` when a
/// quoted string is not closed.
///
/// ```text
/// a, "b, c",, "d\"e"   →   ["a", "b, c", "d\"e"]
/// ```
fn list_items(line: &str) -> Option<Vec<String>> {
    let (mut items, mut item) = (Vec::new(), String::new());
    let (mut quoted, mut escaped) = (false, false);
    for c in line.chars().chain([',']) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                let trimmed = item.trim();
                if !trimmed.is_empty() {
                    items.push(unquote(trimmed));
                }
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    (!quoted).then_some(items)
}

/// `"x\"y"` → `x"y`: a wholly quoted item without its quotes and escapes.
fn unquote(item: &str) -> String {
    let Some(inner) = item
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return item.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => chars.next().unwrap_or(c),
            c => c,
        });
    }
    out
}

/// `203.0.113.9`, `203.0.113.9:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn client_addr(value: &str) -> Option<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = value.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

/// `shop.example`, `shop.example:8443` or `[2001:db8::1]:8443`: a host and
/// a port that can be one, nothing else (no user, no empty host).
fn host(value: &str) -> Option<Authority> {
    let authority: Authority = value.parse().ok()?;
    let host = authority.host();
    let exact = match authority.port_u16() {
        Some(port) => authority.as_str() == format!("{host}:{port}"),
        None => authority.as_str() == host,
    };
    (exact && !host.is_empty()).then_some(authority)
}

impl Trust {
    /// What the trusted headers say, or `None` when they say nothing usable.
    fn forwarded(self, req: &Request) -> Option<Forwarded> {
        let headers = req.headers();
        let value = |name, trusted| trusted_value(headers, name, trusted);
        let mut forwarded = Forwarded::default();
        forwarded.remote_addr = value("x-forwarded-for", self.x_for).and_then(|v| client_addr(&v));
        forwarded.scheme = value("x-forwarded-proto", self.x_proto).and_then(|proto| {
            match proto.to_ascii_lowercase().as_str() {
                "http" => Some(Scheme::HTTP),
                "https" => Some(Scheme::HTTPS),
                _ => None,
            }
        });
        let host = value("x-forwarded-host", self.x_host).and_then(|h| host(&h));
        forwarded.port = value("x-forwarded-port", self.x_port).and_then(|p| p.parse().ok());
        forwarded.host = match forwarded.port {
            None => host,
            // The port replaces the one in the host: the forwarded host's,
            // else the request's own, as Werkzeug's HTTP_HOST.
            //   Host: spam:9000, X-Forwarded-Port: 8080  →  spam:8080
            Some(port) => host
                .or_else(|| req.environ().http_host()?.parse().ok())
                .and_then(|host| format!("{}:{port}", host.host()).parse().ok()),
        };
        forwarded.prefix = value("x-forwarded-prefix", self.x_prefix)
            .map(|prefix| prefix.trim_end_matches('/').to_owned())
            .filter(|prefix| {
                prefix.starts_with('/')
                    && !prefix.starts_with("//")
                    && prefix.parse::<http::uri::PathAndQuery>().is_ok()
                    && !prefix.contains(['?', '#'])
            });
        let said_something = forwarded != Forwarded::default();
        said_something.then_some(forwarded)
    }
}

impl<A: App> App for ProxyFix<A> {
    async fn call(&self, mut req: Request) -> Response {
        let peer = || {
            let connection = req.extensions().get::<Connection>();
            connection.and_then(|c| c.remote_addr).map(|addr| addr.ip())
        };
        if self
            .peers
            .as_ref()
            .is_some_and(|peers| !peers.contains(peer()))
        {
            return self.inner.call(req).await;
        }
        if let Some(forwarded) = self.trust.forwarded(&req) {
            req.extensions_mut().insert(forwarded);
        }
        self.inner.call(req).await
    }
}
