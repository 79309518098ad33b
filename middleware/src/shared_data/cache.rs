//! Small files kept in memory for a moment, and large ones kept open, as
//! nginx's `open_file_cache` keeps descriptors: a hit on a small file costs
//! no file-system call, a hit on a large one a `stat` of its path (so a file
//! replaced, rewritten or removed is never served as it was), and neither a
//! trip to the blocking pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::entry::{Content, File, Found, Identity, Opened};
use super::headers::Validators;

/// The most bytes the cache of one export holds; past it, it starts over.
const MAX_BYTES: usize = 16 << 20;

/// The most files it keeps open; past it, it starts over.
const MAX_OPEN: usize = 256;

/// Files read whole (up to 64 KiB), trusted for `ttl` after they were read,
/// and larger files open, checked at each hit and dropped after `ttl`; by
/// request path and accepted codings.
pub(super) struct FileCache {
    ttl: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Cached>,
    bytes: usize,
    open: usize,
}

struct Cached {
    name: String,
    encoding: Option<&'static str>,
    validators: Validators,
    len: u64,
    held: Held,
    read_at: Instant,
}

enum Held {
    Memory(Bytes),
    Open(Opened),
}

impl State {
    fn remove(&mut self, key: &str) {
        match self.files.remove(key).map(|c| c.held) {
            Some(Held::Memory(bytes)) => self.bytes -= bytes.len(),
            Some(Held::Open(_)) => self.open -= 1,
            None => {}
        }
    }
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
        let file = {
            let mut state = self.lock();
            let cached = state.files.get(key)?;
            if cached.read_at.elapsed() > ttl {
                state.remove(key);
                return None;
            }
            cached.file()
        };
        // Outside the lock: a large file is still the one that was opened.
        if let Content::Open(opened) = &file.found.content {
            let current = std::fs::metadata(&opened.path)
                .is_ok_and(|meta| Identity::of(&meta) == opened.identity);
            if !current {
                let mut state = self.lock();
                let same = |c: &Cached| matches!(&c.held, Held::Open(o) if Arc::ptr_eq(&o.file, &opened.file));
                if state.files.get(key).is_some_and(same) {
                    state.remove(key);
                }
                return None;
            }
        }
        Some(file)
    }

    /// Keeps `file` if it was read whole or is open.
    pub(super) fn put(&self, key: String, file: &File) {
        let (held, bytes, open) = match &file.found.content {
            Content::Memory(bytes) => (Held::Memory(bytes.clone()), bytes.len(), 0),
            Content::Open(opened) => (Held::Open(opened.clone()), 0, 1),
            Content::Unread(_) => return,
        };
        if self.ttl.is_none() {
            return;
        }
        let mut state = self.lock();
        state.remove(&key);
        if state.bytes + bytes > MAX_BYTES || state.open + open > MAX_OPEN {
            *state = State::default();
        }
        state.bytes += bytes;
        state.open += open;
        let cached = Cached {
            name: file.name.clone(),
            encoding: file.encoding,
            validators: file.found.validators.clone(),
            len: file.found.len,
            held,
            read_at: Instant::now(),
        };
        state.files.insert(key, cached);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Cached {
    fn file(&self) -> File {
        File {
            name: self.name.clone(),
            encoding: self.encoding,
            found: Found {
                len: self.len,
                validators: self.validators.clone(),
                content: match &self.held {
                    Held::Memory(bytes) => Content::Memory(bytes.clone()),
                    Held::Open(opened) => Content::Open(opened.clone()),
                },
            },
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
