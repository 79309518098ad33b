//! `Cache-Control` (RFC 9111 §5.2), read as a shared cache reads it: every
//! field line of the message, directive names in any case, arguments as
//! tokens or quoted strings (a comma inside quotes separates nothing).

use http::HeaderMap;
use http::header::HeaderName;

/// The largest delta-seconds a cache must represent (§1.2.2): larger ones,
/// and calculations that pass it, count as this.
pub(crate) const DELTA_MAX: u64 = 1 << 31;

/// A `delta-seconds` argument: seconds, or a value that is not one
/// (`max-age=abc`), which makes a response stale (§4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delta {
    Seconds(u64),
    Invalid,
}

impl Delta {
    /// Seconds, an invalid value counting as `invalid`.
    pub(crate) fn or(self, invalid: u64) -> u64 {
        match self {
            Self::Seconds(s) => s,
            Self::Invalid => invalid,
        }
    }
}

/// The directives of one message's `Cache-Control`; the first occurrence of
/// a repeated one counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) max_age: Option<Delta>,
    pub(crate) s_maxage: Option<Delta>,
    /// `max-stale`, with its limit if it has one.
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) min_fresh: Option<Delta>,
    pub(crate) stale_while_revalidate: Option<Delta>,
    pub(crate) stale_if_error: Option<Delta>,
    pub(crate) no_store: bool,
    /// `no-cache`, with or without field names (those are read as none: the
    /// whole response is validated, which §5.2.2.4 allows).
    pub(crate) no_cache: bool,
    /// `private`, with or without field names (the response is not stored).
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) only_if_cached: bool,
    /// Fresh until this many seconds after the epoch: nginx's
    /// `X-Accel-Expires: @T`.
    pub(crate) until: Option<u64>,
}

impl Directives {
    /// The directives of every `name` field line of `headers`.
    pub(crate) fn of(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut directives = Self::default();
        for line in headers.get_all(name) {
            for (name, value) in items(line.as_bytes()) {
                directives.set(&name, value.as_deref());
            }
        }
        directives
    }

    fn set(&mut self, name: &str, value: Option<&str>) {
        let seconds = || Some(delta(value));
        match name {
            "max-age" => first(&mut self.max_age, seconds),
            "s-maxage" => first(&mut self.s_maxage, seconds),
            "min-fresh" => first(&mut self.min_fresh, seconds),
            "stale-while-revalidate" => first(&mut self.stale_while_revalidate, seconds),
            "stale-if-error" => first(&mut self.stale_if_error, seconds),
            "max-stale" => first(&mut self.max_stale, || {
                Some(value.map(|v| delta(Some(v)).or(0)))
            }),
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }
}

/// The directives a response gives this cache: its `CDN-Cache-Control`'s if
/// it has a valid one, else what its `X-Accel-Expires` says if it has a valid
/// one (then `true`: `Expires` does not count either), else its
/// `Cache-Control`'s.
pub(crate) fn of_response(headers: &HeaderMap) -> (Directives, bool) {
    match targeted(headers).or_else(|| accel_expires(headers)) {
        Some(directives) => (directives, true),
        None => (Directives::of(headers, &http::header::CACHE_CONTROL), false),
    }
}

/// nginx's `X-Accel-Expires`, which an app behind nginx's `proxy_cache` or
/// `uwsgi_cache` sends to tell the cache alone how long to keep a response,
/// in place of `Cache-Control` and `Expires`: `0` not at all, `N` seconds,
/// `@T` until T seconds after the epoch. `None` without one, or with a value
/// that is none of those (then it is ignored, as nginx ignores it).
///
/// ```text
/// X-Accel-Expires: 0            →  no-store
/// X-Accel-Expires: 600          →  max-age=600
/// X-Accel-Expires: @1767225600  →  fresh until 2026-01-01T00:00:00Z
/// ```
fn accel_expires(headers: &HeaderMap) -> Option<Directives> {
    let value = headers.get("x-accel-expires")?.as_bytes();
    let seconds = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let mut directives = Directives::default();
    match value.strip_prefix(b"@") {
        Some(epoch) => directives.until = Some(seconds(epoch)?),
        None => match seconds(value)? {
            0 => directives.no_store = true,
            n => directives.max_age = Some(Delta::Seconds(n.min(DELTA_MAX))),
        },
    }
    Some(directives)
}

/// The directives of a response's `CDN-Cache-Control` (RFC 9213), which a
/// gateway follows in place of `Cache-Control` and `Expires`; `None` when
/// there is none, or it is not a valid Structured Field dictionary with
/// directives of the right types (then it is ignored).
fn targeted(headers: &HeaderMap) -> Option<Directives> {
    let mut lines = headers.get_all("cdn-cache-control").iter().peekable();
    lines.peek()?;
    let mut directives = Directives::default();
    for line in lines {
        for (name, value) in dictionary(line.as_bytes())? {
            const DELTAS: [&str; 4] = [
                "max-age",
                "s-maxage",
                "stale-while-revalidate",
                "stale-if-error",
            ];
            const FLAGS: [&str; 7] = [
                "no-store",
                "no-cache",
                "private",
                "public",
                "must-revalidate",
                "proxy-revalidate",
                "must-understand",
            ];
            match value {
                Item::Integer(n) if DELTAS.contains(&name.as_str()) => {
                    let seconds = u64::try_from(n).ok()?.min(DELTA_MAX);
                    directives.set(&name, Some(&seconds.to_string()));
                }
                Item::True if FLAGS.contains(&name.as_str()) => directives.set(&name, None),
                // A known directive of the wrong type: the field is ignored.
                _ if DELTAS.contains(&name.as_str()) || FLAGS.contains(&name.as_str()) => {
                    return None;
                }
                _ => {}
            }
        }
    }
    Some(directives)
}

/// A Structured Field bare item, as far as cache directives care.
enum Item {
    True,
    Integer(i64),
    Other,
}

/// The members of a Structured Field dictionary (RFC 8941 §3.2) and their
/// values; `None` when the field is not one.
fn dictionary(line: &[u8]) -> Option<Vec<(String, Item)>> {
    let mut members = Vec::new();
    let mut rest = trim(line);
    while !rest.is_empty() {
        let key_len = rest
            .iter()
            .position(|&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)))
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        if !key
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || *b == b'*')
        {
            return None;
        }
        rest = &rest[key_len..];
        let item = match rest.first() {
            Some(b'=') => {
                let (item, after) = bare_item(&rest[1..])?;
                rest = after;
                item
            }
            _ => Item::True,
        };
        // Parameters: `;key[=item]`, read and set aside.
        while let Some(b';') = rest.first() {
            rest = trim(&rest[1..]);
            let len = rest
                .iter()
                .position(|&b| {
                    !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b))
                })
                .unwrap_or(rest.len());
            if len == 0 {
                return None;
            }
            rest = &rest[len..];
            if let Some(b'=') = rest.first() {
                rest = bare_item(&rest[1..])?.1;
            }
        }
        members.push((String::from_utf8_lossy(key).into_owned(), item));
        rest = trim(rest);
        match rest.first() {
            None => break,
            Some(b',') => {
                rest = trim(&rest[1..]);
                if rest.is_empty() {
                    return None;
                }
            }
            Some(_) => return None,
        }
    }
    Some(members)
}

/// One bare item at the start of `input`, and what follows it.
fn bare_item(input: &[u8]) -> Option<(Item, &[u8])> {
    let end = |pred: fn(u8) -> bool| input.iter().position(|&b| !pred(b)).unwrap_or(input.len());
    match input.first()? {
        b'-' | b'0'..=b'9' => {
            let len = 1 + input[1..]
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                .unwrap_or(input.len() - 1);
            let number = std::str::from_utf8(&input[..len]).ok()?;
            let item = match number.contains('.') {
                false if number.trim_start_matches('-').len() <= 15 => {
                    Item::Integer(number.parse().ok()?)
                }
                false => return None,
                true => {
                    number.parse::<f64>().ok()?;
                    Item::Other
                }
            };
            Some((item, &input[len..]))
        }
        b'"' => {
            let mut escaped = false;
            for (i, &b) in input.iter().enumerate().skip(1) {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => return Some((Item::Other, &input[i + 1..])),
                    0x20..=0x7e => {}
                    _ => return None,
                }
            }
            None
        }
        b':' => {
            let len = 1 + input[1..].iter().position(|&b| b == b':')?;
            Some((Item::Other, &input[len + 1..]))
        }
        b'?' => match input.get(1)? {
            b'0' | b'1' => Some((Item::Other, &input[2..])),
            _ => None,
        },
        b if b.is_ascii_alphabetic() || *b == b'*' => {
            let len = end(|b| is_tchar(b) || b == b':' || b == b'/');
            Some((Item::Other, &input[len..]))
        }
        _ => None,
    }
}

fn first<T>(slot: &mut Option<T>, value: impl FnOnce() -> Option<T>) {
    if slot.is_none() {
        *slot = value();
    }
}

/// A delta-seconds argument: digits only (leading zeros allowed), capped at
/// [`DELTA_MAX`]; anything else is invalid.
pub(crate) fn delta(value: Option<&str>) -> Delta {
    match value {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Delta::Seconds(v.parse::<u64>().map_or(DELTA_MAX, |s| s.min(DELTA_MAX)))
        }
        _ => Delta::Invalid,
    }
}

/// The comma-separated items of a field line, each a lowercase name and
/// its argument unquoted. An item whose name is not a token (`max-age =5`)
/// or whose argument is broken is left out.
fn items(line: &[u8]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (item, after) = split_item(rest);
        rest = after;
        if let Some(parsed) = parse_item(trim(item)) {
            out.push(parsed);
        }
    }
    out
}

/// The bytes up to the next comma outside quotes, and what follows it.
fn split_item(line: &[u8]) -> (&[u8], &[u8]) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in line.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return (&line[..i], &line[i + 1..]),
            _ => {}
        }
    }
    (line, &[])
}

fn parse_item(item: &[u8]) -> Option<(String, Option<String>)> {
    if item.is_empty() {
        return None;
    }
    let (name, value) = match item.iter().position(|&b| b == b'=') {
        Some(eq) => (&item[..eq], Some(&item[eq + 1..])),
        None => (item, None),
    };
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let value = match value {
        None => None,
        Some(v) if v.first() == Some(&b'"') => Some(unquote(v)?),
        Some(v) if !v.is_empty() && v.iter().all(|&b| is_tchar(b)) => {
            Some(String::from_utf8_lossy(v).into_owned())
        }
        Some(_) => return None,
    };
    Some((name, value))
}

/// A quoted-string's content, or `None` when it does not end where the item does.
fn unquote(v: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    let mut escaped = false;
    for (i, &b) in v.iter().enumerate().skip(1) {
        match b {
            _ if escaped => {
                out.push(b);
                escaped = false;
            }
            b'\\' => escaped = true,
            b'"' => return (i == v.len() - 1).then(|| String::from_utf8_lossy(&out).into_owned()),
            _ => out.push(b),
        }
    }
    None
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// A byte of a token (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;

    fn of(lines: &[&str]) -> Directives {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, line.parse().unwrap());
        }
        Directives::of(&headers, &CACHE_CONTROL)
    }

    #[test]
    fn x_accel_expires_is_seconds_zero_or_a_time_and_anything_else_is_ignored() {
        let accel = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-accel-expires", value.parse().unwrap());
            headers.insert(CACHE_CONTROL, "private".parse().unwrap());
            let (cc, targeted) = of_response(&headers);
            (cc.max_age, cc.no_store, cc.until, cc.private, targeted)
        };
        let seconds = |n| (Some(Delta::Seconds(n)), false, None, false, true);
        assert_eq!(accel("600"), seconds(600));
        assert_eq!(accel("0600"), seconds(600));
        assert_eq!(accel("99999999999"), seconds(DELTA_MAX));
        assert_eq!(accel("0"), (None, true, None, false, true));
        assert_eq!(
            accel("@1767225600"),
            (None, false, Some(1767225600), false, true)
        );
        // What nginx's number parser refuses: Cache-Control's directives stand.
        for ignored in [
            "",
            "-1",
            "+60",
            "6 0",
            "60s",
            "@",
            "@-1",
            "@x",
            "99999999999999999999999",
        ] {
            assert_eq!(
                accel(ignored),
                (None, false, None, true, false),
                "{ignored:?}"
            );
        }
    }

    #[test]
    fn arguments_are_tokens_or_quoted_strings_and_the_first_occurrence_counts() {
        assert_eq!(of(&["max-age=3600"]).max_age, Some(Delta::Seconds(3600)));
        assert_eq!(of(&["MAX-AGE=003600"]).max_age, Some(Delta::Seconds(3600)));
        assert_eq!(
            of(&["max-age=\"3600\""]).max_age,
            Some(Delta::Seconds(3600))
        );
        assert_eq!(of(&["max-age='3600'"]).max_age, Some(Delta::Invalid));
        assert_eq!(of(&["max-age=3600.0"]).max_age, Some(Delta::Invalid));
        assert_eq!(of(&["max-age=-1"]).max_age, Some(Delta::Invalid));
        assert_eq!(
            of(&["max-age=1, max-age=3600"]).max_age,
            Some(Delta::Seconds(1))
        );
        assert_eq!(
            of(&["max-age=1", "max-age=3600"]).max_age,
            Some(Delta::Seconds(1))
        );
        assert_eq!(
            of(&["max-age=99999999999999999999"]).max_age,
            Some(Delta::Seconds(DELTA_MAX))
        );
        // Inside quotes, neither a comma nor a directive counts.
        let quoted = of(&["foo=\"max-age=3600, public\", no-cache"]);
        assert_eq!(
            (quoted.max_age, quoted.public, quoted.no_cache),
            (None, false, true)
        );
        // Not a token before the `=`, or after it.
        assert_eq!(of(&["max-age =3600"]).max_age, None);
        assert_eq!(of(&["max-age= 3600"]).max_age, None);
        let listed = of(&["private=\"set-cookie\", no-cache=\"x\", max-stale"]);
        assert!(listed.private && listed.no_cache);
        assert_eq!(listed.max_stale, Some(None));
        assert_eq!(of(&["max-stale=10"]).max_stale, Some(Some(10)));
    }
}
