//! `Range: bytes=…` (RFC 9110 §14): parsing that never panics and bounds its
//! work, and the ranges a response will carry; what a static file server and
//! a cache answering from a stored response both read.

use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

use crate::FilePart;

/// More ranges than this in one header are not worth serving: the header is
/// ignored and the whole file sent (RFC 9110 §14.2 allows ignoring it).
const MAX_RANGES: usize = 64;

/// Ranges closer than this are sent as one part: a part's own headers cost
/// about as much (RFC 9110 §14.2: a server may coalesce such ranges).
const COALESCE_GAP: u64 = 80;

/// What a `Range` header asks of a representation `len` bytes long.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// No usable header (absent, another unit, bad syntax, too many ranges):
    /// send the whole representation with 200.
    Ignore,
    /// Nothing requested lies inside it: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
    /// One or more ranges, ascending and apart, each non-empty and inside.
    Satisfiable(Vec<Range<u64>>),
}

/// Parses a `Range` header value against a representation of `len` bytes.
///
/// ```text
/// len 1000:  bytes=0-499       → [0..500]
///            bytes=-100        → [900..1000]      (the last 100)
///            bytes=900-        → [900..1000]
///            bytes=0-0,-1      → [0..1, 999..1000]
///            bytes=0-10,5-20   → [0..21]          (overlapping: coalesced)
///            bytes=1000-       → Unsatisfiable
///            bytes=5-1, bytes= → Ignore           (invalid syntax)
/// ```
pub fn parse(header: &str, len: u64) -> Ranges {
    let Some(specs) = strip_unit(header) else {
        return Ranges::Ignore;
    };
    let mut ranges = Vec::new();
    for (i, spec) in specs.split(',').enumerate() {
        if i == MAX_RANGES {
            return Ranges::Ignore;
        }
        let spec = spec.trim_matches([' ', '\t']);
        if spec.is_empty() {
            continue; // `bytes=0-1,,2-3`: empty list elements are allowed (RFC 9110 §5.6.1)
        }
        let Some(range) = parse_spec(spec, len) else {
            return Ranges::Ignore;
        };
        ranges.extend(range);
    }
    if ranges.is_empty() {
        // Syntax was fine but no spec at all (`bytes=,`) is no request.
        return match specs.trim_matches([' ', '\t', ',']) {
            "" => Ranges::Ignore,
            _ => Ranges::Unsatisfiable,
        };
    }
    Ranges::Satisfiable(coalesce(ranges))
}

/// `bytes=` with the unit matched case-insensitively.
/// A `multipart/byteranges` body (RFC 9110 §14.6) of `ranges` of a
/// representation `len` bytes long whose type is `content_type`: each
/// range after a head of its own, then the closing delimiter; with the
/// `Content-Type` that names its boundary. The boundary is random per
/// response, so no representation can be made to contain it.
///
/// ```
/// use stackway::FilePart;
///
/// let (parts, content_type) = stackway::range::multipart(vec![0..1, 9..10], 10, "text/plain");
/// assert!(content_type.starts_with("multipart/byteranges; boundary=stackway-"));
/// assert!(matches!(parts[1], FilePart::Range(ref r) if *r == (0..1)));
/// assert_eq!(parts.len(), 5);
/// ```
pub fn multipart(ranges: Vec<Range<u64>>, len: u64, content_type: &str) -> (Vec<FilePart>, String) {
    let boundary = format!("stackway-{:016x}", RandomState::new().hash_one(len));
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for range in ranges {
        let head = format!(
            "\r\n--{boundary}\r\ncontent-type: {content_type}\r\ncontent-range: bytes {}-{}/{len}\r\n\r\n",
            range.start,
            range.end - 1
        );
        parts.push(FilePart::Bytes(head.into()));
        parts.push(FilePart::Range(range));
    }
    parts.push(FilePart::Bytes(format!("\r\n--{boundary}--\r\n").into()));
    (parts, format!("multipart/byteranges; boundary={boundary}"))
}

fn strip_unit(header: &str) -> Option<&str> {
    let (unit, specs) = header.trim().split_once('=')?;
    unit.trim().eq_ignore_ascii_case("bytes").then_some(specs)
}

/// One spec: `Some(Some(range))` if satisfiable, `Some(None)` if valid but
/// outside, `None` if invalid.
fn parse_spec(spec: &str, len: u64) -> Option<Option<Range<u64>>> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (
        first.trim_matches([' ', '\t']),
        last.trim_matches([' ', '\t']),
    );
    if first.is_empty() {
        // `-n`: the last n bytes.
        let n = number(last)?;
        return Some((n > 0 && len > 0).then(|| len - n.min(len)..len));
    }
    let first = number(first)?;
    let end = match last {
        "" => len,
        last => {
            let last = number(last)?;
            if last < first {
                return None;
            }
            last.saturating_add(1).min(len)
        }
    };
    Some((first < len).then_some(first..end))
}

/// A run of ASCII digits that fits in a u64; `+5`, ` 5` and `0x5` are not numbers.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Sorts the ranges and merges those that overlap or nearly touch, so that a
/// header of many tiny or overlapping ranges cannot make the response larger
/// than the file plus a little.
fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(COALESCE_GAP) => {
                last.end = last.end.max(range.end);
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ranges: &[(u64, u64)]) -> Ranges {
        Ranges::Satisfiable(ranges.iter().map(|&(start, end)| start..end).collect())
    }

    #[test]
    fn single_ranges() {
        let cases = [
            ("bytes=0-499", ok(&[(0, 500)])),
            ("bytes=0-0", ok(&[(0, 1)])),
            ("bytes=500-999", ok(&[(500, 1000)])),
            ("bytes=500-5000", ok(&[(500, 1000)])),
            ("bytes=900-", ok(&[(900, 1000)])),
            ("bytes=0-", ok(&[(0, 1000)])),
            ("bytes=-100", ok(&[(900, 1000)])),
            ("bytes=-5000", ok(&[(0, 1000)])),
            ("BYTES = 1-2", ok(&[(1, 3)])),
            ("bytes=\t1 - 2 ", ok(&[(1, 3)])),
            ("bytes=999-999", ok(&[(999, 1000)])),
        ];
        for (header, expected) in cases {
            assert_eq!(parse(header, 1000), expected, "{header}");
        }
    }

    #[test]
    fn several_ranges_are_sorted_and_coalesced() {
        let cases = [
            ("bytes=0-0,-1", ok(&[(0, 1), (999, 1000)])),
            ("bytes=500-599,0-99", ok(&[(0, 100), (500, 600)])),
            ("bytes=0-10,5-20", ok(&[(0, 21)])),
            ("bytes=0-10,50-60", ok(&[(0, 61)])), // a 39-byte gap costs less than a part
            ("bytes=0-1,,200-201", ok(&[(0, 2), (200, 202)])),
            ("bytes=0-1,2000-3000", ok(&[(0, 2)])), // the unsatisfiable one is dropped
        ];
        for (header, expected) in cases {
            assert_eq!(parse(header, 1000), expected, "{header}");
        }
    }

    #[test]
    fn invalid_headers_are_ignored() {
        let cases = [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=--1",
            "items=0-1",
            "bytes=0-1,x",
            "bytes=99999999999999999999-",
            "bytes=-99999999999999999999",
            "=0-1",
        ];
        for header in cases {
            assert_eq!(parse(header, 1000), Ranges::Ignore, "{header:?}");
        }
    }

    #[test]
    fn ranges_outside_the_file_are_unsatisfiable() {
        for header in [
            "bytes=1000-",
            "bytes=1000-2000",
            "bytes=-0",
            "bytes=5000-,6000-7000",
        ] {
            assert_eq!(parse(header, 1000), Ranges::Unsatisfiable, "{header}");
        }
        // An empty file has no bytes to ask for.
        assert_eq!(parse("bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(parse("bytes=-1", 0), Ranges::Unsatisfiable);
    }

    #[test]
    fn many_ranges_bound_the_work() {
        // 64 tiny ranges are served, coalesced into one part...
        let tiny: Vec<String> = (0..64).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(
            parse(&format!("bytes={}", tiny.join(",")), 1000),
            ok(&[(0, 64)])
        );
        // ...65 are not worth it, and neither is a huge header of overlapping ones.
        let many: Vec<String> = (0..65)
            .map(|i| format!("{}-{}", i * 100, i * 100))
            .collect();
        assert_eq!(
            parse(&format!("bytes={}", many.join(",")), 10_000),
            Ranges::Ignore
        );
        let overlapping = format!("bytes={}", ["0-"; 10_000].join(","));
        assert_eq!(parse(&overlapping, 1000), Ranges::Ignore);
    }
}
