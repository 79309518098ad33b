//! The request headers that choose what a file's response is: conditionals
//! (RFC 9110 §13) and Accept-Encoding (§12.5.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    ACCEPT_ENCODING, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
};
use http::{HeaderMap, Method};

/// A representation's validators: a strong ETag (with its quotes) and the
/// modification time, whole seconds, when there is one HTTP can carry.
#[derive(Debug, Clone)]
pub(crate) struct Validators {
    pub(crate) etag: String,
    pub(crate) modified: Option<SystemTime>,
}

impl Validators {
    /// `"<len>-<secs>.<nanos>"` in hex: changes when the file is rewritten or
    /// replaced (not with inode numbers, so replicas of a tree agree).
    pub(crate) fn for_file(len: u64, modified: Option<SystemTime>) -> Self {
        let since = modified.and_then(|m| m.duration_since(UNIX_EPOCH).ok());
        let etag = match since {
            Some(d) => format!("\"{len:x}-{:x}.{:x}\"", d.as_secs(), d.subsec_nanos()),
            None => format!("\"{len:x}\""),
        };
        Self {
            etag,
            modified: modified.and_then(http_time),
        }
    }

    /// The same validators for the file's `.br` / `.gz` sibling: a different
    /// representation needs a different strong ETag.
    pub(crate) fn for_encoding(mut self, encoding: Option<&str>) -> Self {
        if let Some(encoding) = encoding {
            self.etag
                .insert_str(self.etag.len() - 1, &format!("-{encoding}"));
        }
        self
    }
}

/// `time` truncated to whole seconds, or `None` when an HTTP-date cannot
/// carry it (before 1970, or after 9999: httpdate would panic).
fn http_time(time: SystemTime) -> Option<SystemTime> {
    const YEAR_10000: u64 = 253_402_300_800;
    let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (secs < YEAR_10000).then(|| UNIX_EPOCH + Duration::from_secs(secs))
}

/// What the conditional headers decide, in RFC 9110 §13.2.2's order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Go on: serve the representation (or the range asked).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates If-Match, If-Unmodified-Since, If-None-Match and
/// If-Modified-Since against `v`, in that order of precedence.
pub(crate) fn precondition(method: &Method, headers: &HeaderMap, v: &Validators) -> Precondition {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if let Some(value) = header_str(headers, &IF_MATCH) {
        if !etag_list_matches(value, &v.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) = (date(headers, &IF_UNMODIFIED_SINCE), v.modified)
    {
        if modified > since {
            return Precondition::Failed;
        }
    }
    if let Some(value) = header_str(headers, &IF_NONE_MATCH) {
        if etag_list_matches(value, &v.etag, Comparison::Weak) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if let (true, Some(since), Some(modified)) =
        (get_or_head, date(headers, &IF_MODIFIED_SINCE), v.modified)
    {
        if modified <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether a `Range` may be honoured: no If-Range, or one that names this
/// representation (a strong ETag match, or exactly its Last-Modified date).
pub(crate) fn if_range_holds(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(value) = headers.get(IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return opaque(value, Comparison::Strong)
            .is_some_and(|tag| Some(tag) == opaque(&v.etag, Comparison::Strong));
    }
    match (httpdate::parse_http_date(value), v.modified) {
        (Ok(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[derive(Clone, Copy)]
enum Comparison {
    Strong,
    Weak,
}

/// `*`, or a comma-separated list of entity tags, one of which matches `etag`.
fn etag_list_matches(list: &str, etag: &str, comparison: Comparison) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let ours = opaque(etag, comparison);
    list.split(',')
        .filter_map(|tag| opaque(tag.trim(), comparison))
        .any(|tag| Some(tag) == ours)
}

/// The quoted part of an entity tag, `"x"` of `W/"x"`; a weak tag never
/// matches in a strong comparison.
fn opaque(tag: &str, comparison: Comparison) -> Option<&str> {
    let (weak, quoted) = match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    if weak && matches!(comparison, Comparison::Strong) {
        return None;
    }
    (quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"')).then_some(quoted)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Option<&'a str> {
    // A header that is not text matches nothing rather than being ignored.
    headers.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// A valid HTTP-date in a header; RFC 9110 says to ignore anything else.
fn date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// Content codings of precompressed siblings, best first: (coding, file suffix).
pub(crate) const ENCODINGS: [(&str, &str); 3] = [("br", "br"), ("zstd", "zst"), ("gzip", "gz")];

/// The [`ENCODINGS`] the client accepts, best first: by q-value, then by our
/// order. `identity` is always possible, so it is not listed.
pub(crate) fn accepted_encodings(headers: &HeaderMap) -> Vec<(&'static str, &'static str)> {
    let mut accepted = Vec::new();
    let mut star = None;
    let mut named = [None; ENCODINGS.len()];
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or_default().trim();
            let q = params
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| qvalue(v.trim()))
                })
                .unwrap_or(Some(1000));
            let Some(q) = q else { continue };
            if coding == "*" {
                star = Some(q);
            } else if let Some(i) = ENCODINGS
                .iter()
                .position(|(c, _)| coding.eq_ignore_ascii_case(c))
            {
                named[i] = Some(q);
            } else if coding.eq_ignore_ascii_case("x-gzip") {
                named[2] = named[2].or(Some(q));
            }
        }
    }
    for (i, encoding) in ENCODINGS.into_iter().enumerate() {
        match named[i].or(star) {
            Some(q) if q > 0 => accepted.push((q, i, encoding)),
            _ => {}
        }
    }
    accepted.sort_by_key(|&(q, i, _)| (std::cmp::Reverse(q), i));
    accepted
        .into_iter()
        .map(|(_, _, encoding)| encoding)
        .collect()
}

/// A q-value as thousandths: `0.5` → 500; `None` if malformed.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac),
        "1" if frac == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const MODIFIED: u64 = 1_700_000_000;

    fn validators() -> Validators {
        Validators::for_file(42, Some(UNIX_EPOCH + Duration::new(MODIFIED, 500)))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn date_at(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn check(pairs: &[(&'static str, &str)]) -> Precondition {
        precondition(&Method::GET, &headers(pairs), &validators())
    }

    #[test]
    fn etag_changes_with_content_and_encoding() {
        let v = validators();
        assert_eq!(v.etag, format!("\"2a-{MODIFIED:x}.1f4\""));
        assert_eq!(
            v.clone().for_encoding(Some("br")).etag,
            format!("\"2a-{MODIFIED:x}.1f4-br\"")
        );
        assert_ne!(Validators::for_file(43, v.modified).etag, v.etag);
        // Before 1970 there is no Last-Modified, and nothing panics.
        let old = Validators::for_file(1, UNIX_EPOCH.checked_sub(Duration::from_secs(10)));
        assert_eq!((old.etag.as_str(), old.modified), ("\"1\"", None));
    }

    #[test]
    fn conditionals_in_rfc_order() {
        use Precondition::*;
        let etag = validators().etag;
        let weak = format!("W/{etag}");
        let listed = format!("\"a\", {etag}");
        let (before, at, after) = (
            date_at(MODIFIED - 1),
            date_at(MODIFIED),
            date_at(MODIFIED + 1),
        );
        let cases: Vec<(Vec<(&'static str, &str)>, Precondition)> = vec![
            (vec![], Proceed),
            (vec![("if-match", &etag)], Proceed),
            (vec![("if-match", "*")], Proceed),
            (vec![("if-match", "\"other\", \"x\"")], Failed),
            (vec![("if-match", &weak)], Failed), // If-Match compares strongly
            (vec![("if-unmodified-since", &before)], Failed),
            (vec![("if-unmodified-since", &at)], Proceed),
            (vec![("if-unmodified-since", "not a date")], Proceed),
            // If-Match present: If-Unmodified-Since is not looked at.
            (
                vec![("if-match", &etag), ("if-unmodified-since", &before)],
                Proceed,
            ),
            (vec![("if-none-match", &etag)], NotModified),
            (vec![("if-none-match", &weak)], NotModified), // weak comparison
            (vec![("if-none-match", "*")], NotModified),
            (vec![("if-none-match", &listed)], NotModified),
            (vec![("if-none-match", "\"a\", \"b\"")], Proceed),
            (vec![("if-modified-since", &at)], NotModified),
            (vec![("if-modified-since", &after)], NotModified),
            (vec![("if-modified-since", &before)], Proceed),
            // If-None-Match present: If-Modified-Since is not looked at.
            (
                vec![("if-none-match", "\"a\""), ("if-modified-since", &after)],
                Proceed,
            ),
            (
                vec![("if-match", "\"a\""), ("if-none-match", &etag)],
                Failed,
            ),
            (
                vec![("if-modified-since", &at), ("if-modified-since", &at)],
                Proceed,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(check(&pairs), expected, "{pairs:?}");
        }
        let put = precondition(
            &Method::PUT,
            &headers(&[("if-none-match", "*")]),
            &validators(),
        );
        assert_eq!(put, Failed);
    }

    #[test]
    fn if_range_needs_an_exact_validator() {
        let v = validators();
        let holds = |value: &str| if_range_holds(&headers(&[("if-range", value)]), &v);
        assert!(if_range_holds(&HeaderMap::new(), &v));
        assert!(holds(&v.etag));
        assert!(holds(&date_at(MODIFIED)));
        assert!(!holds(&format!("W/{}", v.etag)));
        assert!(!holds("\"other\""));
        assert!(!holds(&date_at(MODIFIED + 1)));
        assert!(!holds("garbage"));
    }

    #[test]
    fn accept_encoding_with_q_values() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("gzip", &["gzip"]),
            ("gzip, deflate, br, zstd", &["br", "zstd", "gzip"]),
            ("br;q=0.5, gzip", &["gzip", "br"]),
            ("br;q=0, gzip;q=0.001", &["gzip"]),
            ("*", &["br", "zstd", "gzip"]),
            ("*;q=0.1, gzip;q=0", &["br", "zstd"]),
            ("identity", &[]),
            ("GZIP;Q=1.0", &["gzip"]),
            ("x-gzip", &["gzip"]),
            ("br;q=2, gzip;q=0.5x", &[]),
        ];
        for (value, expected) in cases {
            let got: Vec<&str> = accepted_encodings(&headers(&[("accept-encoding", value)]))
                .into_iter()
                .map(|(coding, _)| coding)
                .collect();
            assert_eq!(got, *expected, "{value:?}");
        }
    }
}
