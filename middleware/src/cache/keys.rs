//! What a stored response is found by: the request's target (its primary
//! key) and, when the response has `Vary`, the values the request had of
//! the fields it names (RFC 9111 §4.1).

use http::header::{HOST, HeaderName, VARY};
use http::{HeaderMap, Uri};
use stackway::{Request, RequestExt};

/// The primary key: scheme, host and target, as the client asked.
pub(crate) fn primary(req: &Request) -> String {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    format!("{}://{host}{target}", req.environ().url_scheme())
}

/// The target (path and query) of a primary key.
pub(crate) fn target(key: &str) -> &str {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    key[after_scheme..]
        .find('/')
        .map_or("/", |slash| &key[after_scheme + slash..])
}

/// The primary key of `uri` (a `Location` or `Content-Location` of a
/// response to the request of `primary_key`), when it names the same origin.
pub(crate) fn same_origin(primary_key: &str, uri: &str) -> Option<String> {
    let uri: Uri = uri.parse().ok()?;
    let origin_end = primary_key.find("://")? + 3;
    let origin_end = origin_end
        + primary_key[origin_end..]
            .find('/')
            .unwrap_or(primary_key.len() - origin_end);
    let origin = &primary_key[..origin_end];
    match (uri.scheme_str(), uri.authority()) {
        (None, None) => {
            let target = uri.path_and_query()?.as_str();
            target.starts_with('/').then(|| format!("{origin}{target}"))
        }
        (Some(scheme), Some(authority)) => {
            let key = format!(
                "{scheme}://{}{}",
                authority.as_str().to_ascii_lowercase(),
                uri.path_and_query().map_or("/", |p| p.as_str())
            );
            key.starts_with(&format!("{origin}/")).then_some(key)
        }
        _ => None,
    }
}

/// The fields a response varies on, with the values the request had of
/// them; `None` for `Vary: *`, which no later request matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variant(Option<Vec<(HeaderName, Option<String>)>>);

impl Variant {
    pub(crate) fn of(response: &HeaderMap, request: &HeaderMap) -> Self {
        let mut names: Vec<HeaderName> = Vec::new();
        for line in response.get_all(VARY) {
            for name in line.to_str().unwrap_or("*").split(',') {
                let name = name.trim();
                if name == "*" {
                    return Self(None);
                }
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        Self(Some(
            names
                .into_iter()
                .map(|name| {
                    let value = normalized(request, &name);
                    (name, value)
                })
                .collect(),
        ))
    }

    /// The fields and the request's values, as [`of`](Self::of) found them;
    /// `None` for `Vary: *`.
    pub(crate) fn fields(&self) -> Option<&[(HeaderName, Option<String>)]> {
        self.0.as_deref()
    }

    /// The variant of [`fields`](Self::fields).
    pub(crate) fn from_fields(fields: Option<Vec<(HeaderName, Option<String>)>>) -> Self {
        Self(fields)
    }

    /// Whether a request with `headers` selects this response.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        self.0.as_ref().is_some_and(|fields| {
            fields
                .iter()
                .all(|(name, value)| normalized(headers, name) == *value)
        })
    }

    /// Whether two stored responses answer the same requests (a new one replaces the old).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.0.is_some() && self == other
    }
}

/// A field's value as compared for `Vary`: its lines combined, each member
/// stripped of the whitespace around it.
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut members = Vec::new();
    for line in headers.get_all(name) {
        let line = String::from_utf8_lossy(line.as_bytes());
        members.extend(line.split(',').map(|m| m.trim().to_owned()));
    }
    (!members.is_empty()).then(|| members.join(","))
}
