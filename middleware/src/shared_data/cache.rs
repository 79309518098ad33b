//! Small files kept in memory for a moment, as nginx's `open_file_cache`
//! keeps descriptors: a hit costs no file-system call and no trip to the
//! blocking pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::entry::{Content, File, Found};
use super::headers::Validators;

/// The most bytes the cache of one export holds; past it, it starts over.
const MAX_BYTES: usize = 16 << 20;

/// Files read whole (up to 64 KiB), by request path and accepted codings,
/// trusted for `ttl` after they were read.
pub(super) struct FileCache {
    ttl: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Cached>,
    bytes: usize,
}

struct Cached {
    name: String,
    encoding: Option<&'static str>,
    validators: Validators,
    bytes: Bytes,
    read_at: Instant,
}

impl FileCache {
    pub(super) fn new(ttl: Option<Duration>) -> Self {
        Self {
            ttl: ttl.filter(|ttl| !ttl.is_zero()),
            state: Mutex::default(),
        }
    }

    pub(super) fn is_on(&self) -> bool {
        self.ttl.is_some()
    }

    /// The key for a GET or HEAD: its decoded path below the prefix (a
    /// trailing `""` for a slash) and the sibling codings it accepts, in order.
    /// Segments were checked, so none holds `/` or NUL.
    pub(super) fn key(rest: &[String], encodings: &[(&str, &str)]) -> String {
        // `/a` and `/a/` differ, as do `` and `/`.
        let mut key: String = rest.iter().flat_map(|s| ["/", s]).collect();
        for (coding, _) in encodings {
            key.push('\0');
            key.push_str(coding);
        }
        key
    }

    pub(super) fn get(&self, key: &str) -> Option<File> {
        let ttl = self.ttl?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let cached = state.files.get(key)?;
        if cached.read_at.elapsed() > ttl {
            let stale = state.files.remove(key)?;
            state.bytes -= stale.bytes.len();
            return None;
        }
        Some(File {
            name: cached.name.clone(),
            encoding: cached.encoding,
            found: Found {
                len: cached.bytes.len() as u64,
                validators: cached.validators.clone(),
                content: Content::Memory(cached.bytes.clone()),
            },
        })
    }

    /// Keeps `file` if it was read whole.
    pub(super) fn put(&self, key: String, file: &File) {
        let Content::Memory(bytes) = &file.found.content else {
            return;
        };
        if self.ttl.is_none() {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.bytes + bytes.len() > MAX_BYTES {
            *state = State::default();
        }
        state.bytes += bytes.len();
        let cached = Cached {
            name: file.name.clone(),
            encoding: file.encoding,
            validators: file.found.validators.clone(),
            bytes: bytes.clone(),
            read_at: Instant::now(),
        };
        if let Some(old) = state.files.insert(key, cached) {
            state.bytes -= old.bytes.len();
        }
    }
}

impl Clone for FileCache {
    /// A clone starts empty: the cache belongs to one export.
    fn clone(&self) -> Self {
        Self::new(self.ttl)
    }
}

impl fmt::Debug for FileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_paths_slashes_and_codings_apart() {
        let key = |rest: &[&str], codings: &[(&str, &str)]| {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            FileCache::key(&rest, codings)
        };
        let keys = [
            key(&[], &[]),
            key(&[""], &[]),
            key(&["a"], &[]),
            key(&["a", ""], &[]),
            key(&["a", "b"], &[]),
            key(&["a"], &[("br", "br")]),
            key(&["a"], &[("gzip", "gz"), ("br", "br")]),
            key(&["a"], &[("br", "br"), ("gzip", "gz")]),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }
}
