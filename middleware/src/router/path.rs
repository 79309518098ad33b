//! Paths as the Router matches them: decoded once, except `%2F` and `%25`,
//! segment by segment.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// A pattern as it is matched: decoded, except `%2F` and `%25`.
pub(super) fn normalise_pattern(pattern: &str) -> Result<String, &'static str> {
    if pattern.is_empty() {
        return Err("a pattern may not be empty (say / for the root)");
    }
    if !pattern.starts_with('/') {
        return Err("a pattern starts with /");
    }
    if percent_decode_str(pattern).decode_utf8().is_err() {
        return Err("its percent-encoding does not decode to UTF-8");
    }
    Ok(normalise_path(pattern).into_owned())
}

/// PATH_INFO as it is matched, segment by segment (see [`normalise_segment`]).
///
/// ```text
/// /users/caf%C3%A9   →  /users/café
/// /files/a%2fb%25c   →  /files/a%2Fb%25c
/// /users/%FF         →  /users/%FF       (matches no literal segment)
/// ```
pub(super) fn normalise_path(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let segments: Vec<Cow<'_, str>> = raw.split('/').map(normalise_segment).collect();
    Cow::Owned(segments.join("/"))
}

/// A path segment as it is matched: every escape decoded but `%2F` and
/// `%25` (a slash that must not separate, a percent that must not start a
/// second decoding; written upper-case), so `caf%C3%A9` and `café` are one
/// segment and `a%2Fb` one segment. A segment whose decoding is not UTF-8
/// stays as it came: it then matches no literal segment, as a prefix
/// segment (always UTF-8, `%` written `%25`) cannot name it.
fn normalise_segment(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let hex = |h: u8| (h as char).to_digit(16);
        if let (b'%', [h, l, after @ ..]) = (b, tail) {
            if let (Some(h), Some(l)) = (hex(*h), hex(*l)) {
                match (h * 16 + l) as u8 {
                    b'/' => bytes.extend_from_slice(b"%2F"),
                    b'%' => bytes.extend_from_slice(b"%25"),
                    decoded => bytes.push(decoded),
                }
                rest = after;
                continue;
            }
        }
        bytes.push(b);
        rest = tail;
    }
    String::from_utf8(bytes).map_or(Cow::Borrowed(raw), Cow::Owned)
}

/// Finishes decoding a parameter taken from a normalised path.
pub(super) fn decode_param(value: &str) -> String {
    percent_decode_str(value).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_matched_decoded_except_slashes_and_percents() {
        let table = [
            ("/users/42", "/users/42"),
            ("/caf%C3%A9", "/café"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2Fb"),
            ("/100%25", "/100%25"),
            ("/%41%42", "/AB"),
            ("/bad%zz", "/bad%zz"),
            // Not UTF-8: the segment stays as it came, the others decode.
            ("/%FF", "/%FF"),
            ("/caf%C3%A9/%FF", "/café/%FF"),
            ("", ""),
        ];
        for (raw, want) in table {
            assert_eq!(normalise_path(raw), want, "{raw}");
        }
    }
}
