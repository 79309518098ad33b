//! URL prefixes: the one grammar that every middleware mounting something at a
//! prefix parses, matches and redirects with (the [`Dispatcher`](crate::Dispatcher)'s
//! and the [`Router`](crate::Router)'s mounts, [`SharedData`](crate::SharedData)'s
//! exports). It is public, so that a mounting middleware written outside this
//! crate reads prefixes, refuses them and redirects exactly as these do.
//!
//! A prefix is `/` followed by literal segments (`/api/v2`), or `http://HOST`
//! (or `https://`) followed by one, for one host only. A trailing `/` is
//! ignored, and `/` or `` is the root. Segments are percent-decoded once and
//! compared decoded, so `/café` and `/caf%C3%A9` are one prefix; they may not
//! be empty (`//`), `.` or `..`, fail to decode to UTF-8, or look like a
//! pattern (`*`, `{`, `}`, a leading `:`: those belong to a router).
//!
//! A prefix matches a request's PATH_INFO on whole segments only:
//!
//! ```text
//! prefix /static    PATH_INFO /static        → 7 bytes  (PATH_INFO left: "")
//!                   PATH_INFO /static/a.css  → 7 bytes  (PATH_INFO left: /a.css)
//!                   PATH_INFO /staticx/a.css → no match (Rack CVE-2026-34785)
//!                   PATH_INFO /st%61tic/a    → 9 bytes  (decoded, the segment is "static")
//!                   PATH_INFO /a%2Fb         → no match for /a/b: %2F is not a separator
//! ```

use std::borrow::Cow;

use http::header::LOCATION;
use http::{HeaderValue, StatusCode};
use percent_encoding::{CONTROLS, percent_decode_str, utf8_percent_encode};
use stackway::{IntoResponse, Request, RequestExt, Response};

/// A parsed prefix: its host, if any, and its decoded segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Lower-case, without a port.
    host: Option<String>,
    segments: Vec<String>,
}

/// Why a prefix does not parse; its `Display` is the rule broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// `api`: not `/…` nor `http://HOST/…`.
    Slash,
    /// `/a//b`.
    Empty,
    /// `/files/*path`, `/users/{id}`, `/users/:id`.
    Pattern,
    /// `/a/../b`, `/a/%2e`.
    Dot,
    /// `/%FF`.
    Encoding,
    /// `http://bad host/x`.
    Host,
}

impl Invalid {
    /// The rule broken, as the end of a sentence.
    pub fn rule(self) -> &'static str {
        match self {
            Self::Slash => "a prefix starts with / (or is http://HOST/...)",
            Self::Empty => "a prefix has no empty segments (//)",
            Self::Pattern => "a prefix is literal: *, {, } and a leading : are not allowed",
            Self::Dot => "a prefix has no . or .. segments",
            Self::Encoding => "its percent-encoding does not decode to UTF-8",
            Self::Host => "the host in it is not valid",
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.rule())
    }
}

impl Prefix {
    /// Parses and normalises a prefix.
    ///
    /// ```text
    /// "/api/v2/"              → host None,             ["api", "v2"]
    /// "/caf%C3%A9"            → host None,             ["café"]
    /// "http://Admin.io:80/x"  → host Some("admin.io"), ["x"]
    /// "/" or ""               → host None,             []         the root
    /// ```
    pub fn parse(prefix: &str) -> Result<Self, Invalid> {
        let (host, path) = match prefix
            .strip_prefix("http://")
            .or_else(|| prefix.strip_prefix("https://"))
        {
            Some(rest) => {
                let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let authority: http::uri::Authority =
                    authority.parse().map_err(|_| Invalid::Host)?;
                (Some(authority.host().to_ascii_lowercase()), path)
            }
            None => (None, prefix),
        };
        if !path.is_empty() && !path.starts_with('/') {
            return Err(Invalid::Slash);
        }
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segments = Vec::new();
        for raw in path.split('/').skip(1) {
            if raw.is_empty() {
                return Err(Invalid::Empty);
            }
            if raw.contains(['*', '{', '}']) || raw.starts_with(':') {
                return Err(Invalid::Pattern);
            }
            let segment = decode_segment(raw).ok_or(Invalid::Encoding)?;
            if segment == "." || segment == ".." {
                return Err(Invalid::Dot);
            }
            segments.push(segment.into_owned());
        }
        Ok(Self { host, segments })
    }

    /// How many bytes of raw PATH_INFO this prefix's segments cover, or `None`
    /// when PATH_INFO does not start with them on a segment boundary. The host
    /// is not looked at. Allocates only for a percent-encoded segment: most
    /// requests that pass a prefix are not for it, and pay only this.
    pub fn match_len(&self, path_info: &str) -> Option<usize> {
        // A request for another prefix is most often told by its first byte:
        // a segment's first byte is its decoded first byte unless it is `%`.
        if let Some(first) = self.segments.first() {
            let byte = *path_info.as_bytes().get(1)?;
            if byte != first.as_bytes()[0] && byte != b'%' {
                return None;
            }
        }
        let mut raw = segments(path_info);
        let mut len = 0;
        for want in &self.segments {
            let segment = raw.next()?;
            if decode_segment(segment)? != want.as_str() {
                return None;
            }
            len += 1 + segment.len();
        }
        Some(len)
    }

    /// The host it is for (lower-case, without a port), if it names one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Its segments, decoded; none for the root.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether it is the root (`/`, on any host).
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The prefix as observers name it (the [`Mount`](stackway::notes::Mount)
    /// a mounting middleware notes): `/api/v2`, `/` for the root,
    /// `http://admin.example/x` with a host.
    pub fn name(&self) -> String {
        let path = format!("/{}", self.segments.join("/"));
        match &self.host {
            Some(host) => format!("http://{host}{path}"),
            None => path,
        }
    }
}

/// A raw path segment percent-decoded once, or `None` when that is not UTF-8.
///
/// Prefixes and requests compare through this one function, so a request
/// segment that cannot decode matches nothing (it is not turned into `�`,
/// which a prefix could name).
pub fn decode_segment(raw: &str) -> Option<Cow<'_, str>> {
    // A loop over a segment's few bytes, where `contains` calls `memchr`.
    if !raw.bytes().any(|b| b == b'%') {
        return Some(Cow::Borrowed(raw));
    }
    percent_decode_str(raw).decode_utf8().ok()
}

/// The raw segments of a PATH_INFO, each what follows a `/`: `/a/b/` has
/// `a`, `b` and `` (none for an empty PATH_INFO). Every request that passes
/// a mounting middleware is cut up by this, so it looks at bytes, not chars.
pub fn segments(path_info: &str) -> impl Iterator<Item = &str> {
    let mut rest = path_info.strip_prefix('/');
    std::iter::from_fn(move || {
        let path = rest?;
        let end = path.bytes().position(|b| b == b'/');
        rest = end.map(|end| &path[end + 1..]);
        Some(&path[..end.unwrap_or(path.len())])
    })
}

/// Whether a raw PATH_INFO segment is `.` or `..`, plain or percent-encoded:
/// a mounting middleware answers 400 to a request with one, so that
/// `/public/%2e%2e/admin` cannot reach a mount it does not name.
pub fn is_dot_segment(raw: &str) -> bool {
    // Every spelling starts with `.` or `%`, and `%2e%2e` is the longest.
    matches!(raw.as_bytes().first(), Some(b'.' | b'%'))
        && raw.len() <= "%2e%2e".len()
        && decode_segment(raw).is_some_and(|s| s == "." || s == "..")
}

/// The host the request is for, lower-case and without a port: the
/// environ's ([`Environ::http_host`](stackway::Environ::http_host)), so a
/// trusted proxy's forwarded host chooses the mount.
pub fn request_host(req: &Request) -> Option<String> {
    let host = req.environ().http_host()?;
    let authority = host.parse::<http::uri::Authority>().ok()?;
    Some(authority.host().to_ascii_lowercase())
}

/// 308 to the request's path with a `/` added (see [`redirect_to`]).
///
/// ```text
/// mounted at /app, SharedData exports /docs:   GET /app/docs/guide?v=2
///   SCRIPT_NAME /app, PATH_INFO /docs/guide  →  Location: /app/docs/guide/?v=2
/// ```
pub fn redirect_with_slash(req: &Request) -> Option<Response> {
    redirect_to(req, &format!("{}/", req.environ().path_info()))
}

/// 308 to the request's path with `path_info` in place of its PATH_INFO
/// (the same path with a `/` added or taken away), built from the mount path
/// (SCRIPT_NAME, after any proxy prefix) so that it is right under any
/// mount, with the query kept and bytes a URI may not hold percent-encoded;
/// `None` when the result would start with `//` (a URL of another host).
pub fn redirect_to(req: &Request, path_info: &str) -> Option<Response> {
    let mut location = format!("{}{path_info}", req.environ().mount_path());
    if location.starts_with("//") {
        return None;
    }
    if let Some(query) = req.uri().query() {
        location.push('?');
        location.push_str(query);
    }
    // A path may hold raw UTF-8 (`/café`); a Location is a URI reference.
    let location = utf8_percent_encode(&location, CONTROLS).to_string();
    let location = HeaderValue::try_from(location).ok()?;
    let mut res = StatusCode::PERMANENT_REDIRECT.into_response();
    res.headers_mut().insert(LOCATION, location);
    Some(res)
}

/// Why an app cannot be mounted at a prefix, for every mounting middleware;
/// its `Display` is a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    prefix: String,
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Reason {
    Invalid(Invalid),
    Duplicate,
    /// Taken by something it cannot be told apart from (a router's route).
    Taken(String),
    Other(&'static str),
}

impl MountError {
    /// `prefix` breaks the grammar.
    pub fn invalid(prefix: &str, invalid: Invalid) -> Self {
        Self::new(prefix, Reason::Invalid(invalid))
    }

    /// Something is mounted (or routed) at `prefix` already.
    pub fn duplicate(prefix: &str) -> Self {
        Self::new(prefix, Reason::Duplicate)
    }

    /// `prefix` cannot be told apart from something there already: `why` is
    /// the end of a sentence ("it cannot be told apart from \"/{id}\"").
    pub fn taken(prefix: &str, why: String) -> Self {
        Self::new(prefix, Reason::Taken(why))
    }

    /// `prefix` is valid, but this middleware cannot mount there: `why` is
    /// the end of a sentence ("a host prefix is the Dispatcher's").
    pub fn unsupported(prefix: &str, why: &'static str) -> Self {
        Self::new(prefix, Reason::Other(why))
    }

    fn new(prefix: &str, reason: Reason) -> Self {
        Self {
            prefix: prefix.to_owned(),
            reason,
        }
    }

    /// The prefix that was refused.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the prefix was refused because it is mounted (or routed) already.
    pub fn is_duplicate(&self) -> bool {
        matches!(self.reason, Reason::Duplicate | Reason::Taken(_))
    }

    /// Whether the prefix was refused because it breaks [the prefix
    /// grammar](self) (or names what this middleware does not mount).
    pub fn is_invalid_prefix(&self) -> bool {
        matches!(self.reason, Reason::Invalid(_) | Reason::Other(_))
    }
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match &self.reason {
            Reason::Invalid(invalid) => invalid.rule(),
            Reason::Duplicate => "something is mounted there already",
            Reason::Taken(why) => why,
            Reason::Other(why) => why,
        };
        write!(f, "cannot mount at {:?}: {why}", self.prefix)
    }
}

impl std::error::Error for MountError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix rule, one row each: what parses to what, and what is refused.
    #[test]
    fn the_grammar() {
        let ok = |host: Option<&str>, segments: &[&str]| {
            Ok(Prefix {
                host: host.map(str::to_owned),
                segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            })
        };
        let table: &[(&str, Result<Prefix, Invalid>)] = &[
            ("/", ok(None, &[])),
            ("", ok(None, &[])),
            ("/api", ok(None, &["api"])),
            ("/api/", ok(None, &["api"])),
            ("/api/v2/", ok(None, &["api", "v2"])),
            ("/caf%C3%A9", ok(None, &["café"])),
            ("/café", ok(None, &["café"])),
            ("/a%2Fb", ok(None, &["a/b"])),
            ("/%25", ok(None, &["%"])),
            ("/a.b/~c-d_e", ok(None, &["a.b", "~c-d_e"])),
            ("/a:b", ok(None, &["a:b"])),
            (
                "http://Admin.Example.com:8080/x/",
                ok(Some("admin.example.com"), &["x"]),
            ),
            (
                "https://admin.example.com",
                ok(Some("admin.example.com"), &[]),
            ),
            ("http://[::1]/x", ok(Some("[::1]"), &["x"])),
            ("api", Err(Invalid::Slash)),
            ("static/", Err(Invalid::Slash)),
            ("http://host.io?x", Err(Invalid::Host)),
            ("//", Err(Invalid::Empty)),
            ("/a//b", Err(Invalid::Empty)),
            ("/a//", Err(Invalid::Empty)),
            ("/files/*path", Err(Invalid::Pattern)),
            ("/*", Err(Invalid::Pattern)),
            ("/users/{id}", Err(Invalid::Pattern)),
            ("/users/:id", Err(Invalid::Pattern)),
            ("/.", Err(Invalid::Dot)),
            ("/a/../b", Err(Invalid::Dot)),
            ("/a/%2e", Err(Invalid::Dot)),
            ("/%2E%2e", Err(Invalid::Dot)),
            ("/%FF", Err(Invalid::Encoding)),
            ("/%c0%ae", Err(Invalid::Encoding)),
            ("http://bad host/x", Err(Invalid::Host)),
            ("http:///x", Err(Invalid::Host)),
        ];
        for (prefix, want) in table {
            assert_eq!(&Prefix::parse(prefix), want, "{prefix:?}");
        }
    }

    /// Matching on whole segments, compared decoded, never across `%2F`.
    #[test]
    fn matching() {
        let table: &[(&str, &str, Option<usize>)] = &[
            ("/", "", Some(0)),
            ("/", "/anything", Some(0)),
            ("/static", "/static", Some(7)),
            ("/static", "/static/", Some(7)),
            ("/static", "/static/a.css", Some(7)),
            ("/static", "/staticx/a.css", None),
            ("/static", "/stat", None),
            ("/static", "", None),
            ("/static", "/st%61tic/a", Some(9)),
            ("/a/b", "/a/b/c", Some(4)),
            ("/a/b", "/a/bc", None),
            ("/%EF%BF%BD", "/%ff", None),
            ("/a/b", "/a%2Fb/c", None),
            ("/a%2Fb", "/a%2Fb/c", Some(6)),
            ("/a%2Fb", "/a/b/c", None),
            ("/café", "/caf%C3%A9/x", Some(10)),
            ("/a", "//a", None),
            ("/a", "/%FF", None),
        ];
        for (prefix, path_info, want) in table {
            let prefix_parsed = Prefix::parse(prefix).unwrap();
            assert_eq!(
                prefix_parsed.match_len(path_info),
                *want,
                "{prefix:?} against {path_info:?}"
            );
        }
    }

    #[test]
    fn request_segments_that_do_not_decode_match_nothing() {
        assert_eq!(decode_segment("%FF"), None);
        assert_eq!(decode_segment("%EF%BF%BD").as_deref(), Some("\u{FFFD}"));
        assert_eq!(decode_segment("plain").as_deref(), Some("plain"));
    }

    /// `segments` cuts as `split('/').skip(1)` does, for every PATH_INFO
    /// (empty, or starting with `/`).
    #[test]
    fn segments_are_what_follows_each_slash() {
        for path_info in [
            "",
            "/",
            "//",
            "/a",
            "/a/",
            "/a//b",
            "/api/v2/x%2Fy",
            "/é/ü/",
        ] {
            let want: Vec<&str> = path_info.split('/').skip(1).collect();
            assert_eq!(
                segments(path_info).collect::<Vec<_>>(),
                want,
                "{path_info:?}"
            );
        }
    }

    #[test]
    fn dot_segments_in_every_spelling() {
        for dot in [".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E."] {
            assert!(is_dot_segment(dot), "{dot:?}");
        }
        for not in [
            "",
            "...",
            "a.",
            ".a",
            "%2e%2e%2e",
            "%2e%2e.",
            "%2f",
            "..%2f",
        ] {
            assert!(!is_dot_segment(not), "{not:?}");
        }
    }
}
