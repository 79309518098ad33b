//! From a request's PATH_INFO to path segments that are safe to join to an
//! export root: the one place where untrusted text meets the file system.
//!
//! Everything here is pure (no file system), so every rule is table-tested
//! below and fuzzed (`fuzz/fuzz_targets/resolve.rs`).

use std::path::{Component, Path};

use percent_encoding::percent_decode_str;

/// Why a path is not served. Each variant names the attack it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// PATH_INFO that is neither empty nor starts with `/` (`*` of `OPTIONS *`).
    NotAPath,
    /// Not UTF-8 once decoded: overlong encodings such as `%c0%ae` (a `.` to a
    /// lax decoder) end here.
    NotUtf8,
    /// `//` inside the path: `/static//etc/passwd` is absolute to some joins.
    EmptySegment,
    /// `.` or `..`, plain or encoded (`%2e%2e`): climbing out of the root.
    DotSegment,
    /// `%2F` decoded to `/`: `..%2F..%2Fsecret` would be two segments later.
    Slash,
    /// `\` (raw or `%5c`): a separator on Windows (`..\..\win.ini`).
    Backslash,
    /// `:`: a drive (`c:/windows`, tower-http #204) or an NTFS stream (`a::$DATA`).
    Colon,
    /// NUL (`%00`) or another control character: truncates C strings.
    Control,
    /// `< > " | ? *`: wildcards and reserved characters on Windows.
    WindowsReserved,
    /// A trailing `.` or space, which Windows strips: `secret.txt.` opens `secret.txt`.
    TrailingDotOrSpace,
    /// A Windows device name (`CON`, `nul.txt`, `COM1`, `LPT¹`): reads hang.
    DeviceName,
    /// A dot-file or dot-directory (`.env`, `.git/config`), unless allowed.
    Hidden,
}

/// Splits raw (percent-encoded) PATH_INFO into decoded segments, decoding
/// each exactly once. A trailing `/` gives a last empty segment, which
/// [`check`] reads as "the directory itself".
///
/// ```text
/// ""              →  []
/// /               →  [""]
/// /css/a%20b.css  →  ["css", "a b.css"]
/// /css/           →  ["css", ""]
/// /%252e          →  ["%2e"]        (decoded once: a file literally named %2e)
/// ```
pub(crate) fn segments(path_info: &str) -> Result<Vec<String>, Refused> {
    if path_info.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path_info.strip_prefix('/').ok_or(Refused::NotAPath)?;
    rest.split('/')
        .map(|raw| {
            let decoded = percent_decode_str(raw).decode_utf8();
            decoded
                .map(|s| s.into_owned())
                .map_err(|_| Refused::NotUtf8)
        })
        .collect()
}

/// Checks the segments below an export's prefix, which will be joined to its
/// root. The last segment may be empty (a trailing `/`); no other may.
pub(crate) fn check(rest: &[String], hidden_files: bool) -> Result<(), Refused> {
    let (last, init) = match rest.split_last() {
        Some((last, init)) => (last, init),
        None => return Ok(()),
    };
    for segment in init {
        check_segment(segment, hidden_files)?;
    }
    if last.is_empty() {
        Ok(())
    } else {
        check_segment(last, hidden_files)
    }
}

/// A relative path the operator configured (`css/site.css`, an index or SPA
/// fallback file name) as segments, if it is one of plain names.
pub(crate) fn relative(name: &str) -> Option<Vec<String>> {
    let segments: Vec<String> = name.split('/').map(str::to_owned).collect();
    let plain = !name.is_empty() && !name.ends_with('/') && check(&segments, true).is_ok();
    plain.then_some(segments)
}

fn check_segment(segment: &str, hidden_files: bool) -> Result<(), Refused> {
    match segment {
        "" => return Err(Refused::EmptySegment),
        "." | ".." => return Err(Refused::DotSegment),
        _ => {}
    }
    for c in segment.chars() {
        let refused = match c {
            '/' => Refused::Slash,
            '\\' => Refused::Backslash,
            ':' => Refused::Colon,
            '<' | '>' | '"' | '|' | '?' | '*' => Refused::WindowsReserved,
            c if c.is_control() => Refused::Control,
            _ => continue,
        };
        return Err(refused);
    }
    if segment.ends_with(['.', ' ']) {
        return Err(Refused::TrailingDotOrSpace);
    }
    if is_device_name(segment) {
        return Err(Refused::DeviceName);
    }
    if segment.starts_with('.') && !hidden_files {
        return Err(Refused::Hidden);
    }
    // What the rules above promise, checked the way the join will read it:
    // one plain name, so `root.join(segment)` stays directly under `root`.
    let mut components = Path::new(segment).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => Err(Refused::Slash),
    }
}

/// Windows opens a device for these names whatever follows the first `.`,
/// and ignores spaces before it: `CON`, `con.txt`, `CON .txt.html`, `COM1`,
/// `LPT¹`, `CONIN$`.
fn is_device_name(segment: &str) -> bool {
    let stem = segment
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_end_matches(' ');
    let upper = stem.to_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" | "CLOCK$" => true,
        _ => {
            let numbered = upper
                .strip_prefix("COM")
                .or_else(|| upper.strip_prefix("LPT"));
            matches!(
                numbered,
                Some("0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes and checks a whole PATH_INFO as a directory export at `/` does.
    fn resolve(path_info: &str) -> Result<Vec<String>, Refused> {
        let segments = segments(path_info)?;
        check(&segments, false)?;
        Ok(segments)
    }

    macro_rules! cases {
        ($($path:literal => $expected:expr,)*) => {
            $(assert_eq!(resolve($path), $expected, "PATH_INFO {:?}", $path);)*
        };
    }

    fn ok(segments: &[&str]) -> Result<Vec<String>, Refused> {
        Ok(segments.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn plain_paths_decode_once() {
        cases! {
            "" => ok(&[]),
            "/" => ok(&[""]),
            "/a.txt" => ok(&["a.txt"]),
            "/css/site.css" => ok(&["css", "site.css"]),
            "/dir/" => ok(&["dir", ""]),
            "/a%20b.txt" => ok(&["a b.txt"]),
            "/%C3%A4%C3%B6%C3%BC" => ok(&["äöü"]),
            "/äöü" => ok(&["äöü"]),
            // Decoded once: `%252e` is a file named `%2e`, not a dot.
            "/%252e%252e/x" => ok(&["%2e%2e", "x"]),
            "/a+b" => ok(&["a+b"]),
            "*" => Err(Refused::NotAPath),
            "/.well-known" => Err(Refused::Hidden),
            "/CONFIG.txt" => ok(&["CONFIG.txt"]),
            "/console.log" => ok(&["console.log"]),
            "/COM10" => ok(&["COM10"]),
            "/a..b" => ok(&["a..b"]),
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        use Refused::*;
        cases! {
            "/../secret" => Err(DotSegment),
            "/a/../../secret" => Err(DotSegment),
            "/%2e%2e/secret" => Err(DotSegment),
            "/%2E%2E/secret" => Err(DotSegment),
            "/.%2e/secret" => Err(DotSegment),
            "/./a.txt" => Err(DotSegment),
            "/a/." => Err(DotSegment),
            "/a/.." => Err(DotSegment),
            "/..%2fsecret" => Err(Slash),
            "/..%2F..%2Fetc%2Fpasswd" => Err(Slash),
            "/%2fetc%2fpasswd" => Err(Slash),
            "/built%2F..%2F..%2F" => Err(Slash),        // Ghost GHSA-wf7x-fh6w-34r6
            "//etc/passwd" => Err(EmptySegment),
            "/a//b" => Err(EmptySegment),
            "/..%5c..%5cwin.ini" => Err(Backslash),     // akka-http #346
            "/%5c..%5cwindows%5cwin.ini" => Err(Backslash),
            "/foobar\\..\\..\\Windows\\win.ini" => Err(Backslash), // ran #29
            "/c:/windows/win.ini" => Err(Colon),        // tower-http #204
            "/foo/bar/c:/windows/web/screen/img101.png" => Err(Colon),
            "/C%3A%5Cwindows" => Err(Colon),
            "/a.txt::$DATA" => Err(Colon),
            "/a.txt%00.png" => Err(Control),
            "/%00" => Err(Control),
            "/a%0ab" => Err(Control),
            "/%c0%ae%c0%ae/secret" => Err(NotUtf8),      // overlong `..`
            "/%e0%80%ae" => Err(NotUtf8),
            "/%ff" => Err(NotUtf8),
            "/a%3Fb" => Err(WindowsReserved),
            "/*" => Err(WindowsReserved),
            "/secret.txt." => Err(TrailingDotOrSpace),
            "/secret.txt%20" => Err(TrailingDotOrSpace),
            "/..." => Err(TrailingDotOrSpace),
            "/CON" => Err(DeviceName),
            "/con" => Err(DeviceName),
            "/CON.txt" => Err(DeviceName),              // Werkzeug CVE-2026-21860
            "/CON.txt.html" => Err(DeviceName),
            "/CON%20%20.txt" => Err(DeviceName),
            "/CON%20.%20txt" => Err(DeviceName),
            "/subdir/NUL" => Err(DeviceName),           // Werkzeug CVE-2026-27199
            "/b/CON" => Err(DeviceName),
            "/com1.txt" => Err(DeviceName),             // tower-http #663
            "/LPT%C2%B9" => Err(DeviceName),
            "/CONOUT$" => Err(DeviceName),
            "/.env" => Err(Hidden),
            "/.git/config" => Err(Hidden),
            "/a/.htpasswd" => Err(Hidden),
        }
    }

    #[test]
    fn configured_names_are_relative_paths_of_plain_names() {
        assert_eq!(
            path_of("css/site.css"),
            Some(vec!["css".into(), "site.css".into()])
        );
        assert_eq!(
            path_of(".well-known/x"),
            Some(vec![".well-known".into(), "x".into()])
        );
        for bad in ["", "/abs", "dir/", "a//b", "../x", "a/./b", "c:x", "CON"] {
            assert_eq!(path_of(bad), None, "{bad:?}");
        }
    }

    fn path_of(name: &str) -> Option<Vec<String>> {
        relative(name)
    }

    #[test]
    fn hidden_files_can_be_allowed() {
        let well_known = segments("/.well-known/security.txt").unwrap();
        assert_eq!(check(&well_known, true), Ok(()));
        let dots = segments("/.well-known/..").unwrap();
        assert_eq!(check(&dots, true), Err(Refused::DotSegment));
    }

    /// A property over many generated paths: whatever is accepted joins to a
    /// path strictly below the root, with no hidden or special names.
    #[test]
    fn accepted_paths_stay_below_the_root() {
        const PIECES: &[&str] = &[
            "/", "a", ".", "..", "%2e", "%2E", "%2f", "%5c", "\\", "%00", ":", "c", "%3a", "CON",
            "nul", ".txt", " ", "%20", "%c0%ae", "%25", "2e", "ä", "?", "%", "lpt", "1", "¹",
        ];
        let root = Path::new("/srv/root");
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50_000 {
            let mut path = String::new();
            for _ in 0..(state % 9) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                path.push_str(PIECES[(state % PIECES.len() as u64) as usize]);
            }
            let Ok(segments) = resolve(&path) else {
                continue;
            };
            let mut joined = root.to_path_buf();
            joined.extend(segments.iter().filter(|s| !s.is_empty()));
            assert!(joined.starts_with(root), "{path:?} left the root");
            let below: Vec<_> = joined.strip_prefix(root).unwrap().components().collect();
            assert!(
                below.iter().all(|c| matches!(c, Component::Normal(_))),
                "{path:?} joined to {joined:?}"
            );
            assert!(
                segments
                    .iter()
                    .all(|s| !s.starts_with('.') && !s.contains(['\\', ':', '\0']))
            );
        }
    }
}
