//! What changes in the headers on the way to the upstream and back: hop-by-hop
//! headers go (RFC 9110 §7.6.1), the client is named in `X-Forwarded-*`, and
//! redirects into the upstream's base are turned into the mount's.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::net::IpAddr;
use std::thread::LocalKey;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{
    CONNECTION, CONTENT_LOCATION, CONTENT_TYPE, COOKIE, EXPECT, HOST, HeaderName, HeaderValue,
    LOCATION, REFRESH, SET_COOKIE, TE, TRANSFER_ENCODING, UPGRADE,
};
use stackway::Environ;
use stackway::environ::ip_text;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1),
/// besides those `Connection` lists. `Trailer` is not among them: it is
/// end-to-end (RFC 9110 §6.6.2), and hyper sends only the trailer fields it
/// declares, so removing it would drop the trailers.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    // HTTP/2's cleartext upgrade (RFC 7540 §3.2): this hop's, never the upstream's.
    HeaderName::from_static("http2-settings"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRANSFER_ENCODING,
    http::header::PROXY_AUTHORIZATION,
    http::header::PROXY_AUTHENTICATE,
];

/// Whether header `name`'s comma-separated values hold `token` (any case).
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    (headers.get_all(name).iter()).any(|value| lists(value, token))
}

/// Whether one line's comma-separated values hold `token` (any case).
pub(crate) fn lists(value: &HeaderValue, token: &str) -> bool {
    (value.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether a client's header goes on to the upstream (before the hop-by-hop
/// ones are taken out). Not `Expect`: 100-continue is between the client and
/// this server. Not `Proxy`, which a CGI app would read as `HTTP_PROXY`
/// ("httpoxy"). Not a name with `_`, which nginx leaves out too: a gateway
/// behind the upstream that spells `X_Forwarded_For` and `X-Forwarded-For`
/// both `HTTP_X_FORWARDED_FOR` would let a client's stand for the proxy's;
/// but in a gRPC call, whose metadata keys may have one and whose upstream is
/// no such gateway.
pub(crate) fn passes(name: &HeaderName, grpc: bool) -> bool {
    name != EXPECT && name.as_str() != "proxy" && (grpc || !name.as_str().contains('_'))
}

/// An HTTP/2 client's cookies, which it may send a field each, made one
/// `Cookie` joined by `; `, as RFC 9113 §8.2.3 asks before an HTTP/1.1 hop
/// (an app behind would read `a=1, b=2` as one cookie) and nginx joins them.
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let crumbs: Vec<&[u8]> = headers
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&crumbs.join(&b"; "[..])) {
        headers.insert(COOKIE, value);
    }
}

/// Removes the hop-by-hop headers, and every header `Connection` names
/// (nginx keeps those: RFC 9110 says they go). `Upgrade` and
/// `Connection: upgrade` stay when `upgrading`; `TE: trailers` stays, as this
/// proxy passes trailers on (a server sends them only to a client that says so).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // Most messages carry none: a look at the names they have costs less than
    // a removal (a hash and a probe) for each name that could be there.
    if !upgrading && !(headers.keys()).any(|name| name == UPGRADE || HOP_BY_HOP.contains(name)) {
        return;
    }
    let te_trailers = has_token(headers, TE, "trailers");
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(&HOP_BY_HOP) {
        if upgrading && (name == UPGRADE || name == CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if upgrading {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// An answer's `Content-Type` sent twice, a field that is one value (RFC
/// 9110 §8.3): the last stands, as nginx keeps it, not two types each client
/// reads its own way.
pub(crate) fn last_content_type(headers: &mut HeaderMap) {
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    if let (Some(_), Some(second)) = (types.next(), types.next()) {
        let last = types.next_back().unwrap_or(second).clone();
        headers.insert(CONTENT_TYPE, last);
    }
}

/// Names the client to the upstream, as nginx configs and Werkzeug's ProxyFix
/// expect: `X-Forwarded-For` gains the client's address; `-Proto`, `-Host`,
/// `-Port` and `-Prefix` (SCRIPT_NAME, when mounted) say what the client asked for.
pub(crate) fn forward(headers: &mut HeaderMap, env: &Environ<'_>, client_host: Option<&str>) {
    thread_local! {
        static FOR: Last<IpAddr> = const { RefCell::new(None) };
        static PORT: Last<u16> = const { RefCell::new(None) };
        static PREFIX: Last<String> = const { RefCell::new(None) };
    }
    if let Some(ip) = env.remote_addr().map(|a| a.ip()) {
        let value = match joined(headers, X_FORWARDED_FOR) {
            // Its own bytes, not a copy.
            Some(before) => {
                HeaderValue::from_maybe_shared(Bytes::from(format!("{before}, {}", ip_text(ip))))
                    .ok()
            }
            // A connection's requests come from one address.
            None => made_once(&FOR, &ip, |&ip| HeaderValue::try_from(ip_text(ip)).ok()),
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    // The usual two without copying them.
    match env.url_scheme().as_str() {
        "http" => drop(headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"))),
        "https" => drop(headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"))),
        other => set(headers, X_FORWARDED_PROTO, other),
    }
    match client_host {
        // The client's own `Host` (the outgoing head's copy) shared, not copied.
        Some(host) => match (headers.get(HOST))
            .filter(|v| v.as_bytes() == host.as_bytes())
            .cloned()
        {
            Some(same) => drop(headers.insert(X_FORWARDED_HOST, same)),
            None => set(headers, X_FORWARDED_HOST, host),
        },
        None => drop(headers.remove(X_FORWARDED_HOST)),
    }
    if let Some(port) = made_once(&PORT, &env.server_port(), |&port| Some(port.into())) {
        headers.insert(X_FORWARDED_PORT, port);
    }
    match env.mount_path() {
        prefix if prefix.is_empty() => drop(headers.remove(X_FORWARDED_PREFIX)),
        prefix => match made_once(&PREFIX, &*prefix, |p| HeaderValue::from_str(p).ok()) {
            Some(prefix) => drop(headers.insert(X_FORWARDED_PREFIX, prefix)),
            None => drop(headers.remove(X_FORWARDED_PREFIX)),
        },
    }
}

/// Whether `host` is an authority (`host[:port]`), as the `Host` it is
/// quoted into (`Forwarded`) or sent as must be. A connection's requests ask
/// for one host: the last one found valid is known a thread, not parsed again.
pub(crate) fn is_authority(host: &str) -> bool {
    thread_local! {
        static VALID: RefCell<String> = const { RefCell::new(String::new()) };
    }
    VALID.with_borrow_mut(|valid| {
        if valid == host {
            return true;
        }
        let is = host.parse::<http::uri::Authority>().is_ok();
        if is {
            valid.clear();
            valid.push_str(host);
        }
        is
    })
}

/// A thread's last header value made by [`made_once`], and what it was made for.
type Last<K> = RefCell<Option<(K, HeaderValue)>>;

/// The header value `make` gives for `key`, made once a thread for the key it
/// last had and shared after (a clone shares the bytes), where each made anew
/// is an allocation: for a client's address, a listener's port, a mount's
/// prefix.
fn made_once<K, Q>(
    last: &'static LocalKey<Last<K>>,
    key: &Q,
    make: impl FnOnce(&Q) -> Option<HeaderValue>,
) -> Option<HeaderValue>
where
    K: Borrow<Q>,
    Q: PartialEq + ToOwned<Owned = K> + ?Sized,
{
    last.with_borrow_mut(|last| match last {
        Some((made_for, value)) if Borrow::<Q>::borrow(made_for) == key => Some(value.clone()),
        _ => Some(last.insert((key.to_owned(), make(key)?)).1.clone()),
    })
}

// Named once: a name given as text is parsed again at every use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// RFC 7239 `Forwarded`, appended to what came: `for`, `proto`, `host`.
pub(crate) fn forwarded(headers: &mut HeaderMap, env: &Environ<'_>, client_host: Option<&str>) {
    let mut element = String::new();
    if let Some(ip) = env.remote_addr().map(|addr| addr.ip()) {
        element = match ip.is_ipv4() {
            true => format!("for={}", ip_text(ip)),
            false => format!("for=\"[{}]\"", ip_text(ip)),
        };
    }
    if let Some(host) = client_host {
        // A quoted-string (RFC 7239 §4, RFC 9110 §5.6.4): quotes and
        // backslashes escaped, so the client's Host cannot end it and add
        // parameters (`x", for=6.6.6.6;host="x`).
        let host = host.replace('\\', "\\\\").replace('"', "\\\"");
        element.push_str(&format!(";host=\"{host}\""));
    }
    element.push_str(&format!(";proto={}", env.url_scheme()));
    let element = element.trim_start_matches(';');
    let value = match joined(headers, http::header::FORWARDED) {
        Some(before) => format!("{before}, {element}"),
        None => element.to_owned(),
    };
    set(headers, HeaderName::from_static("forwarded"), &value);
}

/// Every line of a list header that came, joined as one (RFC 9110 §5.3): a
/// hop's entry goes after all of them, none dropped, as nginx's
/// `$proxy_add_x_forwarded_for` has it. `None` when none came.
fn joined(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let mut lines = (headers.get_all(name).iter()).filter_map(|v| v.to_str().ok());
    let first = lines.next()?;
    Some(lines.fold(first.to_owned(), |all, line| all + ", " + line))
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Where the upstream is, as its redirects name it, and where it is mounted.
pub(crate) struct Rewrite<'a> {
    /// `http://127.0.0.1:9000` (or `http://localhost` on a unix socket).
    pub(crate) origin: &'a str,
    /// The upstream's base path: `""` or `/base`.
    pub(crate) base: &'a str,
    /// SCRIPT_NAME: where the proxy is mounted.
    pub(crate) mount: &'a str,
}

impl Rewrite<'_> {
    /// A `Location` into the upstream's base, made into the mount
    /// (nginx's `proxy_redirect default`); anything else is left alone, and
    /// so is a path already in the mount: the app read `X-Forwarded-Prefix`
    /// (Werkzeug's `ProxyFix(x_prefix=1)`), and it is the front's path.
    ///
    /// ```text
    /// origin http://127.0.0.1:9000, base /app, mounted at /api:
    ///   http://127.0.0.1:9000/app/login?next=/  →  /api/login?next=/
    ///   /app/login                             →  /api/login
    ///   /app                                   →  /api
    ///   /application, https://example.com/x    →  unchanged
    /// origin http://127.0.0.1:9000, no base, mounted at /api:
    ///   /login                                 →  /api/login
    ///   /api/login                             →  unchanged
    ///   http://127.0.0.1:9000/api/login        →  /api/api/login (the app's own /api)
    /// ```
    fn location(&self, location: &str) -> Option<String> {
        let (path, absolute) = match location.strip_prefix(self.origin) {
            Some(path) => (path, true),
            None => (location, false),
        };
        if !path.starts_with('/') || path.starts_with("//") {
            return None;
        }
        if !absolute && !self.mount.is_empty() && within(path, self.mount).is_some() {
            return None;
        }
        let rest = within(path, self.base)?;
        let rewritten = format!("{}{rest}", self.mount);
        let rewritten = if rewritten.is_empty() || rewritten.starts_with(['?', '#']) {
            format!("/{rewritten}")
        } else {
            rewritten
        };
        // `/app//evil.example/` under base /app must not become `//evil.example/`,
        // a redirect to another site: such a one is left as the upstream wrote it.
        (!leaves_the_site(&rewritten)).then_some(rewritten)
    }

    /// `Refresh: 5; url=…` with its URL rewritten as a `Location` (nginx's
    /// `proxy_redirect` rewrites both fields).
    fn refresh(&self, refresh: &str) -> Option<String> {
        let at = refresh.to_ascii_lowercase().find("url=")? + "url=".len();
        let url = self.location(&refresh[at..])?;
        Some(format!("{}{url}", &refresh[..at]))
    }

    /// Rewrites `Location`, `Content-Location` and `Refresh`'s URL, and with
    /// `cookies` the `Path` of each `Set-Cookie`, from the upstream's base
    /// into the mount.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, cookies: bool) {
        for name in [LOCATION, CONTENT_LOCATION, REFRESH] {
            let rewritten =
                headers
                    .get(&name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| match name == REFRESH {
                        true => self.refresh(v),
                        false => self.location(v),
                    });
            if let Some(value) = rewritten.and_then(|v| HeaderValue::from_str(&v).ok()) {
                headers.insert(name, value);
            }
        }
        if !cookies {
            return;
        }
        let cookies: Vec<HeaderValue> = headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|cookie| {
                cookie
                    .to_str()
                    .ok()
                    .and_then(|c| self.cookie_path(c))
                    .and_then(|c| HeaderValue::from_str(&c).ok())
                    .unwrap_or_else(|| cookie.clone())
            })
            .collect();
        if !cookies.is_empty() {
            headers.remove(SET_COOKIE);
            for cookie in cookies {
                headers.append(SET_COOKIE, cookie);
            }
        }
    }

    /// `id=1; Path=/app/x; HttpOnly` → `id=1; Path=/api/x; HttpOnly`.
    fn cookie_path(&self, cookie: &str) -> Option<String> {
        let mut changed = false;
        let parts: Vec<String> = cookie
            .split(';')
            .map(|part| {
                let trimmed = part.trim_start();
                let is_path = trimmed.len() >= 5 && trimmed[..5].eq_ignore_ascii_case("path=");
                match is_path.then(|| self.location(&trimmed[5..])).flatten() {
                    Some(path) => {
                        changed = true;
                        format!(" Path={path}")
                    }
                    None => part.to_owned(),
                }
            })
            .collect();
        changed.then(|| parts.join(";"))
    }
}

/// What follows `prefix` in `path`, when `path` is `prefix` or below it
/// (`/app?x`, `/app/x`; not `/application`).
fn within<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

/// Whether a browser reads `path` as another site's: `//host/…`, or `/\host/…`.
fn leaves_the_site(path: &str) -> bool {
    path.starts_with("//") || path.starts_with("/\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_made_once_is_the_one_asked_for_whatever_came_before() {
        thread_local! {
            static PORT: Last<u16> = const { RefCell::new(None) };
            static PREFIX: Last<String> = const { RefCell::new(None) };
        }
        for port in [8080, 8080, 443, 8080, 0, 65535, 443] {
            let made = made_once(&PORT, &port, |&port| Some(port.into()));
            assert_eq!(made.unwrap(), port.to_string().as_str());
        }
        for prefix in ["/a", "/a", "/b", "/a", "/bad\n", "/a"] {
            let made = made_once(&PREFIX, prefix, |p| HeaderValue::from_str(p).ok());
            assert_eq!(
                made.as_ref().map(|v| v.to_str().unwrap()),
                (prefix != "/bad\n").then_some(prefix)
            );
        }
    }

    #[test]
    fn no_rewritten_location_or_cookie_path_leaves_the_site() {
        let rewrite = Rewrite {
            origin: "http://127.0.0.1:9000",
            base: "/app",
            mount: "",
        };
        for location in [
            "/app//evil.example/",
            "/app/\\evil.example/",
            "http://127.0.0.1:9000/app//x",
        ] {
            assert_eq!(rewrite.location(location), None, "{location}");
        }
        assert_eq!(rewrite.location("/app/ok").as_deref(), Some("/ok"));
        assert_eq!(rewrite.cookie_path("a=1; Path=/app//evil"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret, close"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("trailer", "x-checksum"),
            ("x-kept", "yes"),
        ] {
            headers.append(name, value.parse().unwrap());
        }
        let mut upgrading = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers["x-kept"], "yes");
        assert_eq!(
            headers["trailer"], "x-checksum",
            "end-to-end: it declares the trailers"
        );
        strip_hop_by_hop(&mut upgrading, true);
        assert_eq!(upgrading["upgrade"], "websocket");
        assert_eq!(upgrading["connection"], "upgrade");
        assert!(upgrading.get("x-secret").is_none());
        let mut te = HeaderMap::new();
        te.insert(TE, "trailers, deflate;q=0.5".parse().unwrap());
        strip_hop_by_hop(&mut te, false);
        assert_eq!(
            te[TE], "trailers",
            "the one TE a proxy that forwards trailers passes"
        );
    }

    #[test]
    fn redirects_into_the_base_are_moved_into_the_mount() {
        let rewrite = Rewrite {
            origin: "http://127.0.0.1:9000",
            base: "/app",
            mount: "/api",
        };
        let table = [
            (
                "http://127.0.0.1:9000/app/login?next=/",
                Some("/api/login?next=/"),
            ),
            ("/app/login", Some("/api/login")),
            ("/app", Some("/api")),
            ("/app?x=1", Some("/api?x=1")),
            ("/application", None),
            ("/other", None),
            ("https://example.com/app/x", None),
            ("//evil.example/app", None),
            ("login", None),
        ];
        for (location, want) in table {
            assert_eq!(rewrite.location(location).as_deref(), want, "{location}");
        }
        // A path the app already wrote into the mount is left alone; one
        // from its own origin's URL is its own path, and moves.
        let no_base = Rewrite {
            origin: "http://127.0.0.1:9000",
            base: "",
            mount: "/api",
        };
        let table = [
            ("/login", Some("/api/login")),
            ("/api/login", None),
            ("/api", None),
            ("/api?x=1", None),
            ("/apiary", Some("/api/apiary")),
            ("http://127.0.0.1:9000/api/login", Some("/api/api/login")),
        ];
        for (location, want) in table {
            assert_eq!(no_base.location(location).as_deref(), want, "{location}");
        }
        assert_eq!(
            rewrite
                .refresh("5; URL=http://127.0.0.1:9000/app/next")
                .as_deref(),
            Some("5; URL=/api/next")
        );
        assert_eq!(rewrite.refresh("5; url=https://example.com/app"), None);
        assert_eq!(rewrite.refresh("5"), None);
        let at_root = Rewrite {
            origin: "http://127.0.0.1:9000",
            base: "",
            mount: "",
        };
        assert_eq!(at_root.location("/x").as_deref(), Some("/x"));
        let base_only = Rewrite {
            origin: "http://h:1",
            base: "/app",
            mount: "",
        };
        assert_eq!(base_only.location("/app").as_deref(), Some("/"));
        assert_eq!(base_only.location("/app?q").as_deref(), Some("/?q"));
    }

    #[test]
    fn cookie_paths_follow_when_asked() {
        let rewrite = Rewrite {
            origin: "http://h:1",
            base: "/app",
            mount: "/api",
        };
        assert_eq!(
            rewrite
                .cookie_path("id=1; Path=/app/x; HttpOnly")
                .as_deref(),
            Some("id=1; Path=/api/x; HttpOnly")
        );
        assert_eq!(
            rewrite.cookie_path("id=1; path=/app").as_deref(),
            Some("id=1; Path=/api")
        );
        assert_eq!(rewrite.cookie_path("id=1; Path=/elsewhere"), None);
        assert_eq!(rewrite.cookie_path("id=1"), None);
    }
}
