//! Takes the client's address, scheme, host, port and mount prefix from the
//! `X-Forwarded-*` headers that trusted proxies in front set, as Werkzeug's
//! `ProxyFix` does, so the app builds its URLs and redirects as the client
//! sees them.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, RequestExt, response, testing::Client};
//! use stackway_middleware::ProxyFix;
//!
//! let app = |req: Request| async move {
//!     let env = req.environ();
//!     response::text(format!("{} {}", env.remote_addr().unwrap().ip(), env.application_uri()))
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
//! own. A count of 0 ignores the header.
//!
//! | header | changes | |
//! |---|---|---|
//! | `X-Forwarded-For` | the client's address | `Environ::remote_addr` |
//! | `X-Forwarded-Proto` | the scheme | `Environ::url_scheme` |
//! | `X-Forwarded-Host` | the host | `server_name`, `application_uri` |
//! | `X-Forwarded-Port` | the port in the host | `server_port`, `application_uri` |
//! | `X-Forwarded-Prefix` | comes before SCRIPT_NAME | `Environ::mount_path`, and every redirect built from it |
//!
//! Werkzeug replaces SCRIPT_NAME with the prefix; here the prefix is put in
//! front of it, which is the same at the top of a stack and stays right under
//! a mount. The connection's own values stay in [`stackway::Connection`] and
//! the headers themselves.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::uri::{Authority, Scheme};
use stackway::{App, Forwarded, Request, RequestExt, Response};

/// Applies trusted `X-Forwarded-*` headers; see the [module docs](self).
#[doc(alias = "X-Forwarded-For")]
#[derive(Debug, Clone)]
pub struct ProxyFix<A> {
    inner: A,
    trust: Trust,
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
fn trusted_value<'h>(headers: &'h HeaderMap, name: &str, trusted: usize) -> Option<&'h str> {
    if trusted == 0 {
        return None;
    }
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let value = *values.get(values.len().checked_sub(trusted)?)?;
    (!value.is_empty()).then_some(value)
}

/// `203.0.113.9`, `203.0.113.9:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn client_addr(value: &str) -> Option<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = value.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

impl Trust {
    /// What the trusted headers say, or `None` when they say nothing usable.
    fn forwarded(self, req: &Request) -> Option<Forwarded> {
        let headers = req.headers();
        let mut forwarded = Forwarded::default();
        forwarded.remote_addr =
            trusted_value(headers, "x-forwarded-for", self.x_for).and_then(client_addr);
        forwarded.scheme = trusted_value(headers, "x-forwarded-proto", self.x_proto)
            .map(str::to_ascii_lowercase)
            .and_then(|proto| match proto.as_str() {
                "http" => Some(Scheme::HTTP),
                "https" => Some(Scheme::HTTPS),
                _ => None,
            });
        let host = trusted_value(headers, "x-forwarded-host", self.x_host)
            .and_then(|host| host.parse::<Authority>().ok());
        let port = trusted_value(headers, "x-forwarded-port", self.x_port)
            .and_then(|port| port.parse::<u16>().ok());
        let scheme = forwarded
            .scheme
            .clone()
            .unwrap_or_else(|| req.environ().url_scheme().clone());
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        forwarded.host = match (host, port) {
            // The scheme's own port is left out of the host, as browsers and Werkzeug do.
            (host, Some(port)) if port == default_port => match host {
                Some(host) => host.host().parse().ok(),
                None => req.environ().server_name().parse().ok(),
            },
            (host, Some(port)) => {
                // The port goes with the forwarded host, else the one the client sent.
                let host =
                    host.map_or_else(|| req.environ().server_name(), |h| h.host().to_owned());
                let host = match host.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => format!("[{host}]"),
                    Err(_) => host,
                };
                format!("{host}:{port}").parse().ok()
            }
            (host, None) => host,
        };
        forwarded.prefix = trusted_value(headers, "x-forwarded-prefix", self.x_prefix)
            .map(|prefix| prefix.trim_end_matches('/'))
            .filter(|prefix| {
                prefix.starts_with('/')
                    && !prefix.starts_with("//")
                    && prefix.parse::<http::uri::PathAndQuery>().is_ok()
                    && !prefix.contains(['?', '#'])
            })
            .map(str::to_owned);
        let said_something = forwarded.remote_addr.is_some()
            || forwarded.scheme.is_some()
            || forwarded.host.is_some()
            || forwarded.prefix.is_some();
        said_something.then_some(forwarded)
    }
}

impl<A: App> App for ProxyFix<A> {
    async fn call(&self, mut req: Request) -> Response {
        if let Some(forwarded) = self.trust.forwarded(&req) {
            req.extensions_mut().insert(forwarded);
        }
        self.inner.call(req).await
    }
}
