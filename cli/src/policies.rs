//! The gateway's policies as `stackway serve` and its config file give them,
//! for the server (`--rate-limit`, `--access`, `--basic-auth`) or one
//! `[[mount]]`: a rate limit in one line, as nginx's `limit_req` reads
//! (`10r/s burst=20 nodelay`), rules of access by address in nginx's words,
//! and an htpasswd file.

use serde::de::Deserializer;
use stackway::http::StatusCode;
use stackway::{BoxApp, Server};
use std::path::PathBuf;

use stackway_middleware::access::Peers;
use stackway_middleware::basic_auth::Htpasswd;
use stackway_middleware::error_pages::Page;
use stackway_middleware::rate_limit::RateKey;
use stackway_middleware::{Access, BasicAuth, ErrorPages, ForwardAuth, Proxy, RateLimit};

/// How long clients are told to wait while in maintenance.
const MAINTENANCE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

use crate::values::checked;

/// The policies in front of an app.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policies {
    /// `allow …` / `deny …`, checked in order.
    pub(crate) access: Vec<String>,
    pub(crate) rate_limit: Option<RateSpec>,
    /// An htpasswd file, and the realm its users log in to.
    pub(crate) basic_auth: Option<PathBuf>,
    pub(crate) basic_auth_realm: Option<String>,
    /// The auth service asked about each request (`http://auth:9000/verify`),
    /// and the fields of its yes taken into the request.
    pub(crate) forward_auth: Option<String>,
    pub(crate) forward_auth_copy: Vec<String>,
    /// How long a yes of the auth service is remembered.
    pub(crate) forward_auth_remember: Option<std::time::Duration>,
    /// Pages for error statuses, and the file whose existence means maintenance.
    pub(crate) error_pages: Vec<ErrorPageSpec>,
    pub(crate) maintenance: Option<PathBuf>,
}

/// `502,503,504=/srv/errors/50x.html`, `500-599=uri:/errors/5xx.html`:
/// statuses and a page, a file or a path the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorPageSpec {
    statuses: Vec<u16>,
    page: PageSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PageSpec {
    File(PathBuf),
    Uri(String),
}

/// A rate limit: `10r/s burst=20 nodelay key=client conn=5 keys=100000`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RateSpec {
    per_second: Option<f64>,
    burst: u32,
    nodelay: bool,
    key: RateKey,
    concurrency: Option<u32>,
    max_keys: Option<usize>,
}

impl Policies {
    /// `app` behind them, in nginx's order: the rate limit first (a
    /// client guessing passwords is slowed down too), then access by
    /// address, then the auth service, then the password; the error pages outside them all, so
    /// that what they refuse gets a page too. The htpasswd file read is
    /// added to `files`, which SIGHUP reads again.
    pub(crate) fn wrap(
        &self,
        mut app: BoxApp,
        files: &mut Vec<Htpasswd>,
    ) -> Result<BoxApp, String> {
        if let Some(path) = &self.basic_auth {
            let users = Htpasswd::load(path).map_err(|e| e.to_string())?;
            let realm = self.basic_auth_realm.as_deref().unwrap_or("Restricted");
            app = BoxApp::new(BasicAuth::new(app, users.clone(), realm));
            files.push(users);
        } else if self.basic_auth_realm.is_some() {
            return Err("basic_auth_realm needs basic_auth, the htpasswd file".to_owned());
        }
        if let Some(url) = &self.forward_auth {
            let (origin, path) = split_auth_url(url)?;
            let service = Proxy::to(&origin);
            let mut auth = ForwardAuth::new(app, service, &path).copy(&self.forward_auth_copy);
            if let Some(ttl) = self.forward_auth_remember {
                auth = auth.remember(ttl);
            }
            app = BoxApp::new(auth);
        } else if !self.forward_auth_copy.is_empty() || self.forward_auth_remember.is_some() {
            return Err(
                "forward_auth_copy and forward_auth_remember need forward_auth, the service to ask"
                    .to_owned(),
            );
        }
        if !self.access.is_empty() {
            let mut access = Access::new(app);
            for rule in &self.access {
                access = access.rule(rule).map_err(|e| e.to_string())?;
            }
            app = BoxApp::new(access);
        }
        if let Some(spec) = &self.rate_limit {
            app = BoxApp::new(spec.limit(app));
        }
        if !self.error_pages.is_empty() || self.maintenance.is_some() {
            let mut pages = ErrorPages::new(app);
            for spec in &self.error_pages {
                pages = pages.page(spec.statuses.iter().copied(), spec.load()?);
            }
            if let Some(flag) = &self.maintenance {
                pages = pages.maintenance(flag, MAINTENANCE_RETRY);
            }
            app = BoxApp::new(pages);
        }
        Ok(app)
    }
}

impl ErrorPageSpec {
    fn load(&self) -> Result<Page, String> {
        match &self.page {
            PageSpec::File(file) => {
                Page::file(file).map_err(|e| format!("error page {}: {e}", file.display()))
            }
            PageSpec::Uri(path) => Ok(Page::uri(path)),
        }
    }
}

/// `server` with the pages among `specs` for the errors it answers itself
/// (400, 413, 500): those from files, as a path is the app's to serve.
pub(crate) fn server_pages(mut server: Server, specs: &[ErrorPageSpec]) -> Result<Server, String> {
    const OWN: [StatusCode; 3] = [
        StatusCode::BAD_REQUEST,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::INTERNAL_SERVER_ERROR,
    ];
    for spec in specs {
        let own: Vec<_> = (OWN.into_iter())
            .filter(|status| spec.statuses.contains(&status.as_u16()))
            .collect();
        if own.is_empty() {
            continue;
        }
        let page = spec.load()?;
        let Some((content_type, body)) = page.fixed() else {
            continue;
        };
        for status in own {
            server = server.error_page(status, content_type.clone(), body.clone());
        }
    }
    Ok(server)
}

impl RateSpec {
    fn limit(&self, app: BoxApp) -> RateLimit<BoxApp> {
        let mut limit = RateLimit::new(app).burst(self.burst).key(self.key.clone());
        if let Some(per_second) = self.per_second {
            limit = limit.rate(per_second);
        }
        if self.nodelay {
            limit = limit.nodelay();
        }
        if let Some(requests) = self.concurrency {
            limit = limit.concurrency(requests);
        }
        if let Some(keys) = self.max_keys {
            limit = limit.max_keys(keys);
        }
        limit
    }
}

/// `10r/s`, `30r/m`, then `burst=N`, `nodelay`, `key=client|mount|header:NAME`,
/// `conn=N` (requests of a key in flight), `keys=N` (keys remembered).
pub(crate) fn parse_rate_limit(value: &str) -> Result<RateSpec, String> {
    let mut spec = RateSpec {
        per_second: None,
        burst: 0,
        nodelay: false,
        key: RateKey::Client,
        concurrency: None,
        max_keys: None,
    };
    let number = |name: &str, n: &str| {
        n.parse::<u32>()
            .map_err(|_| format!("{name}={n:?}: expected a whole number"))
    };
    for word in value.split_whitespace() {
        match word.split_once('=') {
            None if word == "nodelay" => spec.nodelay = true,
            None => {
                let (count, per) = (word.strip_suffix("r/s").map(|n| (n, 1.0)))
                    .or_else(|| word.strip_suffix("r/m").map(|n| (n, 60.0)))
                    .ok_or_else(|| format!("{word:?}: expected a rate (10r/s, 30r/m), burst=N, nodelay, key=…, conn=N or keys=N"))?;
                let count: f64 = (count.parse().ok())
                    .filter(|n: &f64| *n > 0.0 && n.is_finite())
                    .ok_or_else(|| format!("{word:?}: expected a positive rate"))?;
                spec.per_second = Some(count / per);
            }
            Some(("burst", n)) => spec.burst = number("burst", n)?,
            Some(("conn", n)) => spec.concurrency = Some(number("conn", n)?).filter(|n| *n > 0),
            Some(("keys", n)) => spec.max_keys = Some(number("keys", n)? as usize),
            Some(("key", "client")) => spec.key = RateKey::Client,
            Some(("key", "mount")) => spec.key = RateKey::Mount,
            Some(("key", other)) => {
                let header = other
                    .strip_prefix("header:")
                    .and_then(|name| name.parse().ok());
                spec.key = RateKey::Header(header.ok_or_else(|| {
                    format!("key={other:?}: expected client, mount or header:NAME")
                })?);
            }
            Some((name, _)) => {
                return Err(format!("{name:?}: expected burst, key, conn or keys"));
            }
        }
    }
    if spec.per_second.is_none() && spec.concurrency.is_none() {
        return Err(format!("{value:?}: give a rate (10r/s) or conn=N"));
    }
    Ok(spec)
}

/// `http://auth:9000/verify`: the service's origin, and the path asked.
fn split_auth_url(url: &str) -> Result<(String, String), String> {
    let uri: stackway::http::Uri = url
        .parse()
        .map_err(|_| format!("{url:?}: expected http://HOST:PORT/PATH"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority)) => Ok((
            format!("{scheme}://{authority}"),
            uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        )),
        _ => Err(format!("{url:?}: expected http://HOST:PORT/PATH")),
    }
}

/// `CODES=FILE` or `CODES=uri:/PATH`: codes (`502,503`) or ranges
/// (`500-599`) of 300 to 599.
pub(crate) fn parse_error_page(value: &str) -> Result<ErrorPageSpec, String> {
    let (codes, file) = (value.split_once('=')).ok_or_else(|| {
        format!("{value:?}: expected CODES=FILE, as in 502,503,504=/srv/50x.html")
    })?;
    let code = |text: &str| {
        (text.trim().parse::<u16>().ok())
            .filter(|code| (300..=599).contains(code))
            .ok_or_else(|| format!("{text:?}: expected a status from 300 to 599"))
    };
    let mut statuses = Vec::new();
    for part in codes.split(',') {
        match part.split_once('-') {
            Some((first, last)) => statuses.extend(code(first)?..=code(last)?),
            None => statuses.push(code(part)?),
        }
    }
    let page = match file.trim().strip_prefix("uri:") {
        Some(path) if path.starts_with('/') => PageSpec::Uri(path.to_owned()),
        Some(path) => return Err(format!("uri:{path}: expected a path from /")),
        None => PageSpec::File(PathBuf::from(file.trim())),
    };
    Ok(ErrorPageSpec { statuses, page })
}

pub(crate) fn error_pages<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<ErrorPageSpec>>, D::Error> {
    checked(d, |pages: Vec<String>| {
        pages.iter().map(|page| parse_error_page(page)).collect()
    })
}

/// A peer as `Peers` reads it: an address, a network, `unix`, `all`.
pub(crate) fn parse_peer(value: &str) -> Result<String, String> {
    Peers::new([value])
        .map(|_| value.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// An access rule, checked as `Access` reads it.
pub(crate) fn parse_access(value: &str) -> Result<String, String> {
    Access::new(())
        .rule(value)
        .map(|_| value.trim().to_owned())
        .map_err(|e| e.to_string())
}

pub(crate) fn rate_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateSpec>, D::Error> {
    checked(d, |s: String| parse_rate_limit(&s))
}

pub(crate) fn peers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    checked(d, |peers: Vec<String>| {
        peers.iter().map(|peer| parse_peer(peer)).collect()
    })
}

pub(crate) fn access<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    checked(d, |rules: Vec<String>| {
        rules.iter().map(|rule| parse_access(rule)).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_reads_as_nginx_writes_it_and_says_what_is_wrong() {
        let spec = parse_rate_limit("30r/m burst=5 nodelay key=header:x-api-key conn=2").unwrap();
        assert_eq!(spec.per_second, Some(0.5));
        assert_eq!(
            (spec.burst, spec.nodelay, spec.concurrency),
            (5, true, Some(2))
        );
        assert_eq!(spec.key, RateKey::Header("x-api-key".parse().unwrap()));
        assert_eq!(parse_rate_limit("conn=10").unwrap().per_second, None);
        let split = split_auth_url("http://auth:9000/verify?x=1").unwrap();
        assert_eq!(
            split,
            ("http://auth:9000".to_owned(), "/verify?x=1".to_owned())
        );
        assert!(split_auth_url("auth:9000/verify").is_err());
        let page = parse_error_page("404,500-502=/srv/e.html").unwrap();
        assert_eq!(page.statuses, [404, 500, 501, 502]);
        assert_eq!(
            parse_error_page("502=uri:/errors/50x.html").unwrap().page,
            PageSpec::Uri("/errors/50x.html".to_owned())
        );
        assert!(
            parse_error_page("502=uri:x")
                .unwrap_err()
                .contains("expected a path from /")
        );
        assert!(
            parse_error_page("200=/x")
                .unwrap_err()
                .contains("from 300 to 599")
        );
        assert!(
            parse_error_page("/x")
                .unwrap_err()
                .contains("expected CODES=FILE")
        );
        for (bad, says) in [
            ("10/s", "expected a rate"),
            ("0r/s", "expected a positive rate"),
            ("10r/s burst=-1", "burst=\"-1\": expected a whole number"),
            ("10r/s key=ip", "expected client, mount or header:NAME"),
            ("10r/s zone=one", "\"zone\": expected burst"),
            ("burst=5", "give a rate (10r/s) or conn=N"),
        ] {
            let error = parse_rate_limit(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
