//! `stackway serve --reload`: for development, the supervisor replaces every
//! server process when a Python file they may have imported changes, as
//! gunicorn's `--reload` and Werkzeug's reloader do (reloading modules inside
//! a running interpreter is not reliable). The listening sockets stay with
//! the supervisor, so the port never closes.
//!
//! ```text
//! supervisor: every 0.5 s, has any *.py under the working directory or --pythonpath changed?
//!     ├─ stackway serve ARGS --check   (imports everything, binds nothing)
//!     │     fails → print why, keep the old processes
//!     └─ passes → replace every process: the new one ready, then the old one drains
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The most files watched; a tree larger than this is probably not the app.
const MAX_FILES: usize = 20_000;

/// How often the files are looked at.
const EVERY: Duration = Duration::from_millis(500);

/// The Python files under some roots, as last seen.
#[derive(Debug)]
pub(crate) struct Watch {
    roots: Vec<PathBuf>,
    seen: BTreeMap<PathBuf, (SystemTime, u64)>,
    looked: Instant,
}

impl Watch {
    /// Watches the working directory and `python_path`.
    pub(crate) fn new(python_path: &[PathBuf]) -> Self {
        let mut roots = vec![PathBuf::from(".")];
        roots.extend(python_path.iter().cloned());
        let seen = snapshot(&roots);
        eprintln!("stackway: reload: watching {} Python files", seen.len());
        Self {
            roots,
            seen,
            looked: Instant::now(),
        }
    }

    /// Whether a file changed since last asked (looked at twice a second).
    pub(crate) fn changed(&mut self) -> bool {
        if self.looked.elapsed() < EVERY {
            return false;
        }
        self.looked = Instant::now();
        let now = snapshot(&self.roots);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

/// Every `*.py` file under `roots` with its modification time and size.
fn snapshot(roots: &[PathBuf]) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut files = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && !skipped(&path) {
                dirs.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "py") {
                if let Ok(meta) = entry.metadata() {
                    files.insert(
                        path,
                        (
                            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            meta.len(),
                        ),
                    );
                }
            }
            if files.len() >= MAX_FILES {
                return files;
            }
        }
    }
    files
}

/// Directories no app's code lives in: hidden ones, caches, build output.
fn skipped(dir: &Path) -> bool {
    dir.file_name().and_then(|n| n.to_str()).is_none_or(|name| {
        name.starts_with('.') || matches!(name, "__pycache__" | "node_modules" | "target")
    })
}
