//! The environ every request carries: where the app is mounted (SCRIPT_NAME), the
//! rest of the path (PATH_INFO), the connection's addresses and scheme, and a CGI
//! view of it all.
//!
//! # Example
//!
//! ```
//! use stackway::{Request, RequestExt, testing::Client};
//!
//! let app = |mut req: Request| async move {
//!     // What a dispatcher does when it mounts an app at `/api`.
//!     assert!(req.push_script_name("/api".len()));
//!     let env = req.environ();
//!     format!("{} | {}", env.script_name(), env.path_info())
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/api/a%2Fb?x=1").await.assert_text("/api | /a%2Fb");
//! # });
//! ```
//!
//! # Raw and decoded
//!
//! SCRIPT_NAME and PATH_INFO are slices of the request's raw, percent-encoded
//! path, which is never rewritten: mounting only moves the boundary between the
//! two. So `%2F` inside a segment can never turn into a separator, and nothing is
//! decoded twice. The `*_decoded` views decode once, for display and for apps
//! that want text.
//!
//! ```text
//! uri.path()  = /api/a%2Fb
//!               └┬─┘└──┬─┘
//!      SCRIPT_NAME    PATH_INFO        decoded: "/api" and "/a/b"
//! ```

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST};
use http::uri::{Authority, Scheme};
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use crate::ClientCert;
use percent_encoding::percent_decode_str;

mod packet;

pub use packet::Packet;
pub(crate) use packet::{PLACES, Place, Vars};

/// What the server knows of the connection a request came on.
///
/// The server and the [test client](crate::testing::Client) insert it into each
/// request's extensions; [`Environ`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The client's address (REMOTE_ADDR, REMOTE_PORT).
    pub remote_addr: Option<SocketAddr>,
    /// The address the server accepted the connection on.
    pub local_addr: Option<SocketAddr>,
    /// `http` or `https` (wsgi.url_scheme).
    pub scheme: Scheme,
    /// Which listener accepted the connection: its place among those the
    /// [`Server`](crate::Server) was given, from 0. A listener with a role of
    /// its own (an admin port, whatever its address family) is told apart by
    /// this.
    pub listener: usize,
}

impl Default for Connection {
    fn default() -> Self {
        Self {
            remote_addr: None,
            local_addr: None,
            scheme: Scheme::HTTP,
            listener: 0,
        }
    }
}

/// What trusted proxies in front said about the request (set by a middleware
/// such as `ProxyFix` from `X-Forwarded-*`): each value given replaces what
/// the connection says in the [`Environ`], while the connection's own values
/// stay in [`Connection`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forwarded {
    /// The client's address (REMOTE_ADDR); port 0 when the proxy gave none.
    pub remote_addr: Option<SocketAddr>,
    /// The scheme the client used (wsgi.url_scheme).
    pub scheme: Option<Scheme>,
    /// The host (and port) the client asked for: HTTP_HOST as the app sees
    /// it, and SERVER_NAME (and SERVER_PORT, the scheme's default when it
    /// names none) unless [`port`](Self::port) says otherwise.
    pub host: Option<Authority>,
    /// The port the client connected to (SERVER_PORT).
    pub port: Option<u16>,
    /// The server's name as the front has it (SERVER_NAME): over uwsgi,
    /// nginx's `$server_name`, which the app sees as uWSGI passes it,
    /// whatever host the client named.
    pub server_name: Option<String>,
    /// Where the proxy mounted this server (`/app`, never ending in `/`): it
    /// comes before SCRIPT_NAME in every URL the app builds.
    pub prefix: Option<String>,
    /// The request's target as the client sent it, where the front says so
    /// and it is not the target that reached this server (over uwsgi,
    /// nginx's `REQUEST_URI` when a SCRIPT_NAME was taken off the path or
    /// nginx normalised it): REQUEST_URI as the app sees it
    /// ([`Environ::request_target`]).
    pub request_uri: Option<String>,
    /// Variables the front set for the app beyond those the request is made
    /// of (over uwsgi: `REMOTE_USER` from nginx's `auth_basic`,
    /// `DOCUMENT_ROOT`, a deployment's own `uwsgi_param`): passed on as they
    /// are by [`Environ::cgi`] and a WSGI environ, where neither has a
    /// variable of that name. Names and values are bytes as the front sent
    /// them (over uwsgi, slices of its packet: no copy a variable).
    pub vars: Vec<(Bytes, Bytes)>,
}

/// SCRIPT_NAME as it was set: a prefix of the raw path.
///
/// Kept as text rather than an index so that a middleware that later replaces
/// the URI cannot make it point at the wrong bytes: if the new path no longer
/// starts with it on a segment boundary, SCRIPT_NAME is empty again.
#[derive(Debug, Clone)]
struct ScriptName(String);

/// Reads and moves a request's environ. Implemented for every `http::Request`.
pub trait RequestExt {
    /// A view of the request's environ.
    fn environ(&self) -> Environ<'_>;

    /// The client's address, as [`Environ::remote_addr`] gives it (a trusted
    /// proxy's client, else the connection's peer), read without the rest
    /// of the environ: what a policy on every request looks at.
    fn remote_addr(&self) -> Option<SocketAddr>;

    /// Moves the first `len` bytes of PATH_INFO to the end of SCRIPT_NAME, as a
    /// dispatcher does when it hands the request to an app mounted there.
    ///
    /// The bytes moved must be whole segments: they start with `/`, do not end
    /// with `/`, and what stays in PATH_INFO is empty or starts with `/`.
    /// Otherwise nothing moves and `false` is returned.
    ///
    /// ```text
    /// PATH_INFO /api/users, len 4  →  SCRIPT_NAME += /api, PATH_INFO = /users
    /// PATH_INFO /api,       len 4  →  SCRIPT_NAME += /api, PATH_INFO = ""
    /// PATH_INFO /apix,      len 4  →  false: /api is not a whole segment here
    /// ```
    fn push_script_name(&mut self, len: usize) -> bool;

    /// Moves the next segment of PATH_INFO to SCRIPT_NAME and returns it
    /// decoded, as wsgiref's `shift_path_info` does; `None` (and nothing moves)
    /// when PATH_INFO is empty, `/`, or starts with an empty segment (`//x`).
    ///
    /// ```text
    /// SCRIPT_NAME "", PATH_INFO /a%20b/c  →  Some("a b"); SCRIPT_NAME /a%20b, PATH_INFO /c
    /// ```
    fn shift_path_info(&mut self) -> Option<String>;
}

impl<B> RequestExt for Request<B> {
    fn environ(&self) -> Environ<'_> {
        let path = self.uri().path();
        let script_end = match self.extensions().get::<ScriptName>() {
            Some(ScriptName(script)) if is_segment_prefix(script, path) => script.len(),
            _ => 0,
        };
        Environ {
            method: self.method(),
            uri: self.uri(),
            version: self.version(),
            headers: self.headers(),
            extensions: self.extensions(),
            connection: OnceCell::new(),
            forwarded: OnceCell::new(),
            script_end,
        }
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        let forwarded = self.extensions().get::<Forwarded>();
        (forwarded.and_then(|f| f.remote_addr))
            .or_else(|| self.extensions().get::<Connection>()?.remote_addr)
    }

    fn push_script_name(&mut self, len: usize) -> bool {
        let (path, script_end) = (self.uri().path(), self.environ().script_end);
        let Some(script) = path.get(..script_end + len) else {
            return false;
        };
        // PATH_INFO is empty or starts with `/`, so a non-empty move starts with one.
        let whole_segments = len > 0 && !script.ends_with('/') && is_segment_prefix(script, path);
        if whole_segments {
            let script = script.to_owned();
            self.extensions_mut().insert(ScriptName(script));
        }
        whole_segments
    }

    fn shift_path_info(&mut self) -> Option<String> {
        let env = self.environ();
        let rest = env.path_info().strip_prefix('/')?;
        let segment = &rest[..rest.find('/').unwrap_or(rest.len())];
        if segment.is_empty() {
            return None;
        }
        let name = decode_lossy(segment).into_owned();
        let len = 1 + segment.len();
        self.push_script_name(len).then_some(name)
    }
}

/// An IP address as text, as REMOTE_ADDR and `X-Forwarded-For` give it: what
/// `to_string` gives, but an IPv4 address is written by itoa rather than through
/// `fmt`'s padding, which costs a thousand instructions on every request that
/// names its client.
///
/// ```
/// use std::net::IpAddr;
///
/// let ip: IpAddr = "192.0.2.10".parse().unwrap();
/// assert_eq!(stackway::environ::ip_text(ip), "192.0.2.10");
/// ```
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(ip) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity("255.255.255.255".len());
    let mut digits = itoa::Buffer::new();
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(digits.format(octet));
    }
    text
}

/// A version as CGI and WSGI name it ([`Environ::server_protocol`]).
fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// [`Environ::ssl_client`] without a client certificate: `NONE` on TLS.
fn ssl_client_unverified(scheme: &Scheme) -> Vec<(&'static str, String)> {
    match *scheme == Scheme::HTTPS {
        true => vec![("SSL_CLIENT_VERIFY", "NONE".to_owned())],
        false => Vec::new(),
    }
}

/// `raw` percent-decoded once, invalid UTF-8 replaced by `�`. Without a `%`
/// (most paths) it is `raw` itself, not checked again for being UTF-8.
fn decode_lossy(raw: &str) -> Cow<'_, str> {
    // A loop over a path's few bytes, where `contains` calls `memchr`.
    if !raw.bytes().any(|b| b == b'%') {
        return Cow::Borrowed(raw);
    }
    percent_decode_str(raw).decode_utf8_lossy()
}

/// Whether `host` parses as an [`Authority`]: a name or an address with a
/// port at most, as nearly every request's host is, is one as it stands,
/// and is not copied into one to tell.
fn is_authority(host: &str) -> bool {
    let mut colons = 0;
    let plain = !host.is_empty()
        && host.bytes().all(|b| {
            colons += usize::from(b == b':');
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')
        });
    (plain && colons <= 1) || host.parse::<Authority>().is_ok()
}

/// A valid authority's host, as `Authority::host` gives it (`[::1]` of
/// `user@[::1]:8080`), read back from its end byte by byte: what SERVER_NAME
/// asks of every request, where `host`'s searches cost a few hundred
/// instructions.
fn host_of(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    let start = bytes
        .iter()
        .rposition(|b| *b == b'@')
        .map_or(0, |at| at + 1);
    let host_port = &authority[start..];
    match host_port.bytes().rposition(|b| b == b':' || b == b']') {
        Some(colon) if host_port.as_bytes()[colon] == b':' => &host_port[..colon],
        _ => host_port,
    }
}

/// SERVER_NAME as [`Environ::server_name`] makes it of a request's host
/// where no front names the server, if it reads so as it stands: the host
/// of a valid authority, already lower case.
pub(crate) fn server_name_of(host: &str) -> Option<&str> {
    let name = host_of(host);
    (is_authority(host) && !name.bytes().any(|b| b.is_ascii_uppercase())).then_some(name)
}

/// Whether `prefix` is `path` cut at a segment boundary: `/a` of `/a` or `/a/b`,
/// but not of `/ab`. The empty prefix always is.
fn is_segment_prefix(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || (prefix.starts_with('/')
            && path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// A view of one request's environ; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Environ<'a> {
    method: &'a Method,
    uri: &'a Uri,
    version: Version,
    headers: &'a HeaderMap,
    /// Where the connection, a trusted proxy's word and a client certificate
    /// are, looked up only by the views that read them: most requests pass
    /// several middleware that want only SCRIPT_NAME and PATH_INFO.
    extensions: &'a Extensions,
    /// The connection and the proxy's word, each looked up once: a gateway's
    /// environ reads them for a dozen variables.
    connection: OnceCell<Option<&'a Connection>>,
    forwarded: OnceCell<Option<&'a Forwarded>>,
    script_end: usize,
}

impl<'a> Environ<'a> {
    fn connection(&self) -> Option<&'a Connection> {
        *self.connection.get_or_init(|| self.extensions.get())
    }

    fn forwarded(&self) -> Option<&'a Forwarded> {
        *self.forwarded.get_or_init(|| self.extensions.get())
    }

    fn client_cert(&self) -> Option<&'a ClientCert> {
        self.extensions.get()
    }

    /// Where the current app is mounted, raw (percent-encoded): `""` at the root,
    /// otherwise starting with `/` and never ending with one.
    pub fn script_name(&self) -> &'a str {
        &self.uri.path()[..self.script_end]
    }

    /// The rest of the path, raw (percent-encoded): empty, or starting with `/`.
    pub fn path_info(&self) -> &'a str {
        &self.uri.path()[self.script_end..]
    }

    /// Where the app is mounted as seen from the client: the prefix a trusted
    /// proxy mounted this server at ([`Forwarded::prefix`]) followed by
    /// SCRIPT_NAME. Build URLs and redirects from this; it is SCRIPT_NAME when
    /// no proxy says otherwise.
    ///
    /// ```text
    /// X-Forwarded-Prefix /app (trusted), request /api/users, mounted at /api
    ///   script_name /api,  mount_path /app/api,  path_info /users
    /// ```
    pub fn mount_path(&self) -> Cow<'a, str> {
        match self.forwarded().and_then(|f| f.prefix.as_deref()) {
            Some(prefix) => Cow::Owned(format!("{prefix}{}", self.script_name())),
            None => Cow::Borrowed(self.script_name()),
        }
    }

    /// SCRIPT_NAME percent-decoded once, with invalid UTF-8 replaced by `�`.
    pub fn script_name_decoded(&self) -> Cow<'a, str> {
        decode_lossy(self.script_name())
    }

    /// PATH_INFO percent-decoded once, with invalid UTF-8 replaced by `�`.
    pub fn path_info_decoded(&self) -> Cow<'a, str> {
        decode_lossy(self.path_info())
    }

    /// The raw query string, without the `?`; empty when there is none.
    pub fn query_string(&self) -> &'a str {
        self.uri.query().unwrap_or("")
    }

    /// The request's target (its path and query, raw) as the client sent
    /// it, CGI's REQUEST_URI; a front's word for it where it gave one
    /// ([`Forwarded::request_uri`]).
    pub fn request_target(&self) -> &'a str {
        match self.forwarded().and_then(|f| f.request_uri.as_deref()) {
            Some(uri) => uri,
            None => self.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        }
    }

    /// The client's address, when the request came over a connection (or a
    /// trusted proxy named it).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.forwarded()
            .and_then(|f| f.remote_addr)
            .or_else(|| self.connection().and_then(|c| c.remote_addr))
    }

    /// The server's address the connection was accepted on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.connection().and_then(|c| c.local_addr)
    }

    /// `http` or `https`.
    pub fn url_scheme(&self) -> &'a Scheme {
        if let Some(scheme) = self.forwarded().and_then(|f| f.scheme.as_ref()) {
            return scheme;
        }
        match self.connection() {
            Some(c) => &c.scheme,
            None => self.uri.scheme().unwrap_or(&Scheme::HTTP),
        }
    }

    /// The host the request is for, as HTTP_HOST gives it (`host[:port]`):
    /// a trusted proxy's ([`Forwarded::host`]), else the request target's
    /// authority (HTTP/2's `:authority`, an absolute-form target), else the
    /// `Host` header. Every view of the request (the CGI view, a WSGI
    /// environ, the URLs built here) reads the host from this one place.
    ///
    /// ```text
    /// Host: internal:8000                             →  internal:8000
    /// Host: internal:8000, X-Forwarded-Host: shop.example (trusted)
    ///                                                 →  shop.example
    /// HTTP/2 :authority example.com                   →  example.com
    /// ```
    pub fn http_host(&self) -> Option<&'a str> {
        if let Some(host) = self.forwarded().and_then(|f| f.host.as_ref()) {
            return Some(host.as_str());
        }
        if let Some(authority) = self.uri.authority() {
            return Some(authority.as_str());
        }
        self.headers.get(HOST)?.to_str().ok()
    }

    /// [`http_host`](Self::http_host), when it is a valid authority.
    fn authority(&self) -> Option<Authority> {
        self.http_host()?.parse().ok()
    }

    /// [`authority`](Self::authority) as it was sent, without a copy.
    fn authority_str(&self) -> Option<&'a str> {
        self.http_host().filter(|host| is_authority(host))
    }

    /// The protocol as CGI and WSGI name it: `HTTP/1.0`, `HTTP/1.1`, and
    /// `HTTP/2` (as RFC 9113 names it; ASGI servers give `http_version` "2").
    pub fn server_protocol(&self) -> &'static str {
        protocol_name(self.version)
    }

    /// The URL of the app the request reached: scheme, host (with its port
    /// unless it is the scheme's default) and SCRIPT_NAME, or `/` at the root,
    /// as wsgiref's `application_uri`. Percent-encoding is kept as it came.
    ///
    /// ```text
    /// GET /api/users?x=1, Host: example.com:8080, mounted at /api
    ///   application_uri  http://example.com:8080/api
    ///   request_uri      http://example.com:8080/api/users?x=1
    /// ```
    pub fn application_uri(&self) -> String {
        let mount = self.mount_path();
        let path = if mount.is_empty() { "/" } else { &mount };
        format!("{}://{}{path}", self.url_scheme(), self.host())
    }

    /// The URL of the request as the client asked for it, rebuilt from the
    /// environ (wsgiref's `request_uri`), with the query if `include_query`.
    pub fn request_uri(&self, include_query: bool) -> String {
        let prefix = self
            .forwarded()
            .and_then(|f| f.prefix.as_deref())
            .unwrap_or("");
        let mut url = format!(
            "{}://{}{prefix}{}",
            self.url_scheme(),
            self.host(),
            self.uri.path()
        );
        if let Some(query) = self.uri.query().filter(|_| include_query) {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The port a URL of this scheme needs no mention of.
    fn default_port(&self) -> u16 {
        match *self.url_scheme() == Scheme::HTTPS {
            true => 443,
            false => 80,
        }
    }

    /// `host[:port]` for URLs: the request's host, else SERVER_NAME with
    /// SERVER_PORT; the port left out when it is the scheme's default, as
    /// browsers and Werkzeug do.
    fn host(&self) -> String {
        let (host, port) = match self.authority() {
            Some(authority) => match authority.port_u16() {
                Some(port) => (authority.host().to_owned(), port),
                None => return authority.as_str().to_owned(),
            },
            None => (self.server_name(), self.server_port()),
        };
        match port == self.default_port() {
            true => host,
            false => format!("{host}:{port}"),
        }
    }

    /// The host name the request was sent to: the front's word for it
    /// ([`Forwarded::server_name`]), else from the request's host
    /// ([`http_host`](Self::http_host)), else the local address; `localhost`
    /// if none is known.
    pub fn server_name(&self) -> String {
        if let Some(name) = self.forwarded().and_then(|f| f.server_name.as_deref()) {
            return name.to_owned();
        }
        match (self.authority_str(), self.local_addr()) {
            (Some(authority), _) => host_of(authority).to_ascii_lowercase(),
            (None, Some(local)) => local.ip().to_string(),
            (None, None) => "localhost".to_owned(),
        }
    }

    /// The port the request was received on: a trusted proxy's (its port, else
    /// its host's, else the scheme's default), else the local address's, else
    /// the request host's, else the scheme's default.
    pub fn server_port(&self) -> u16 {
        if let Some(forwarded) = self.forwarded() {
            if let Some(port) = forwarded.port {
                return port;
            }
            if let Some(host) = &forwarded.host {
                return host.port_u16().unwrap_or(self.default_port());
            }
        }
        self.local_addr()
            .map(|a| a.port())
            .or_else(|| self.authority()?.port_u16())
            .unwrap_or(self.default_port())
    }

    /// The environ as CGI meta-variables (RFC 3875 names), sorted by name.
    ///
    /// `REQUEST_METHOD`, `SCRIPT_NAME` and `PATH_INFO` (decoded), `QUERY_STRING`
    /// (raw), `SERVER_NAME`, `SERVER_PORT`, `SERVER_PROTOCOL`, `SERVER_SOFTWARE`,
    /// `GATEWAY_INTERFACE`, `REMOTE_ADDR` (when known), `CONTENT_TYPE` and
    /// `CONTENT_LENGTH` (when sent), and `HTTP_*` for every other header (repeated
    /// headers joined by `, `, cookies by `; `). `HTTP_HOST` is the request's
    /// host ([`http_host`](Self::http_host)): a trusted proxy's, or HTTP/2's
    /// authority. Also the names nginx and Apache add: `REMOTE_PORT`,
    /// `REQUEST_SCHEME` and `REQUEST_URI` (raw), and a mutual-TLS client's
    /// certificate ([`ssl_client`](Self::ssl_client)).
    ///
    /// Headers whose names contain `_` are left out, as nginx and Apache do:
    /// `X-User_Id` and `X-User-Id` would both become `HTTP_X_USER_ID`, and a
    /// client could smuggle one past a proxy that checks the other.
    /// Values that are not UTF-8 are decoded lossily.
    pub fn cgi(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut set = |name: &str, value: String| {
            env.insert(name.to_owned(), value);
        };
        set("GATEWAY_INTERFACE", "CGI/1.1".to_owned());
        set("REQUEST_METHOD", self.method.to_string());
        let mount = self.mount_path();
        set("SCRIPT_NAME", decode_lossy(&mount).into_owned());
        set("PATH_INFO", self.path_info_decoded().into_owned());
        set("QUERY_STRING", self.query_string().to_owned());
        set("REQUEST_URI", self.request_target().to_owned());
        set("REQUEST_SCHEME", self.url_scheme().to_string());
        set("SERVER_NAME", self.server_name());
        set("SERVER_PORT", self.server_port().to_string());
        set("SERVER_PROTOCOL", self.server_protocol().to_owned());
        set(
            "SERVER_SOFTWARE",
            concat!("stackway/", env!("CARGO_PKG_VERSION")).to_owned(),
        );
        if let Some(remote) = self.remote_addr() {
            set("REMOTE_ADDR", ip_text(remote.ip()));
            set("REMOTE_PORT", remote.port().to_string());
        }
        for (name, value) in self.ssl_client() {
            set(name, value);
        }
        self.for_each_cgi_header(|name, value| {
            set(name, String::from_utf8_lossy(value).into_owned());
        });
        for (name, value) in self.front_vars() {
            env.entry(String::from_utf8_lossy(name).into_owned())
                .or_insert_with(|| String::from_utf8_lossy(value).into_owned());
        }
        env
    }

    /// The variables a front set for the app beyond the request's own
    /// ([`Forwarded::vars`]); none without a front that sets them.
    pub fn front_vars(&self) -> &'a [(Bytes, Bytes)] {
        self.forwarded().map_or(&[], |f| &f.vars)
    }

    /// What a mutual-TLS client showed, as nginx and Apache name it: with a
    /// [`ClientCert`], `SSL_CLIENT_VERIFY=SUCCESS`, `SSL_CLIENT_S_DN`,
    /// `SSL_CLIENT_I_DN` and `SSL_CLIENT_FINGERPRINT`; on another TLS
    /// connection `SSL_CLIENT_VERIFY=NONE`; nothing over plain HTTP.
    pub fn ssl_client(&self) -> Vec<(&'static str, String)> {
        match self.client_cert() {
            Some(cert) => vec![
                ("SSL_CLIENT_VERIFY", "SUCCESS".to_owned()),
                ("SSL_CLIENT_S_DN", cert.subject().to_owned()),
                ("SSL_CLIENT_I_DN", cert.issuer().to_owned()),
                ("SSL_CLIENT_FINGERPRINT", cert.fingerprint().to_owned()),
            ],
            None => match self.connection() {
                Some(connection) => ssl_client_unverified(&connection.scheme),
                None => Vec::new(),
            },
        }
    }

    /// The request's headers as CGI variables, with their values as sent:
    /// `CONTENT_TYPE`, `CONTENT_LENGTH`, and `HTTP_*` for every other header
    /// (repeated headers joined by `, `, cookies by `; `). `HTTP_HOST` is the
    /// request's host ([`http_host`](Self::http_host)). Headers whose names
    /// contain `_` are left out (see [`cgi`](Self::cgi)). A gateway that
    /// needs bytes, as WSGI's latin-1 environ does, builds on this, or on
    /// [`for_each_cgi_header`](Self::for_each_cgi_header), which gives the
    /// same without collecting them.
    pub fn cgi_headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut vars = Vec::with_capacity(self.headers.keys_len() + 1);
        self.for_each_cgi_header(|name, value| vars.push((name.to_owned(), value.to_vec())));
        vars
    }

    /// Calls `f` with each of [`cgi_headers`](Self::cgi_headers)' variables
    /// in turn, its name and value lent for the call: a header sent once
    /// (nearly every one) is passed as it lies in the request, and the names
    /// are spelled in one buffer, so a request's headers cost no allocation
    /// each.
    pub fn for_each_cgi_header(&self, mut f: impl FnMut(&str, &[u8])) {
        let host = self.http_host();
        if let Some(host) = host {
            f("HTTP_HOST", host.as_bytes());
        }
        let mut spelled = String::new();
        let mut joined = Vec::new();
        for name in self.headers.keys() {
            if name.as_str().contains('_') || (name == HOST && host.is_some()) {
                continue;
            }
            let mut values = self.headers.get_all(name).iter();
            let first = values.next().map_or(&b""[..], |v| v.as_bytes());
            let value = match values.next() {
                None => first,
                Some(second) => {
                    let separator: &[u8] = if name == COOKIE { b"; " } else { b", " };
                    joined.clear();
                    joined.extend_from_slice(first);
                    for more in std::iter::once(second).chain(values) {
                        joined.extend_from_slice(separator);
                        joined.extend_from_slice(more.as_bytes());
                    }
                    &joined[..]
                }
            };
            // `HTTP_` and the field's name, upper case with `_` for `-`
            // (header names are lower-case ASCII).
            let cgi = if name == CONTENT_TYPE {
                "CONTENT_TYPE"
            } else if name == CONTENT_LENGTH {
                "CONTENT_LENGTH"
            } else {
                spelled.clear();
                // Room for most names at once, where growing to each longer
                // one would move it.
                spelled.reserve(("HTTP_".len() + name.as_str().len()).max(32));
                spelled.push_str("HTTP_");
                spelled.extend(name.as_str().chars().map(|c| match c {
                    '-' => '_',
                    c => c.to_ascii_uppercase(),
                }));
                &spelled
            };
            f(cgi, value);
        }
    }
}

#[cfg(test)]
mod tests;
