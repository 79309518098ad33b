//! What an export serves, its options, and the choice of what to answer.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::ALLOW;
use http::{HeaderValue, Method, StatusCode};
use stackway::notes::{Mount, Notes, Served};
use stackway::{IntoResponse, Request, Response};

use super::cache::FileCache;
use super::entry::{Content, Entry, File, Found, Memory, disk_entry, embedded_entry, open_file};
use super::error::Reason;
use super::respond::{self, listing};
use super::{headers, path};
use crate::prefix::redirect_with_slash;
use crate::profiler::Timings;

/// Which symlinks a directory export follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Symlinks {
    /// Follow links whose target is inside the export root; a link that leads
    /// out of it is a miss. The default.
    #[default]
    WithinRoot,
    /// Never follow a link below the root (the root itself may be one): any
    /// link on the way is a miss, as nginx's `disable_symlinks on`.
    Deny,
    /// Follow every link, wherever it points: for trees whose every link the
    /// operator made. Dot segments and the other path rules still apply.
    Follow,
}

/// What an export serves and how; built from a path with `From`, or with
/// [`Export::dir`], [`Export::file`], [`Export::embedded`], [`Export::bytes`].
#[derive(Debug, Clone)]
pub struct Export {
    source: Source,
    pub(super) cache_control: Option<String>,
    pub(super) index_file: Option<String>,
    listing: bool,
    hidden_files: bool,
    symlinks: Symlinks,
    precompressed: bool,
    fallback_type: String,
    spa_fallback: Option<String>,
    cache: FileCache,
    /// Reached only through an app's `X-Accel-Redirect`.
    pub(super) internal: bool,
    /// The prefix it is exported at, as configured: the `mount` of its metrics.
    pub(super) label: &'static Mount,
}

#[derive(Debug, Clone)]
enum Source {
    /// A path from the user, not yet checked; `Some(true)` if it must be a
    /// directory, `Some(false)` a file.
    Unchecked(PathBuf, Option<bool>),
    /// A canonical directory.
    Dir(PathBuf),
    /// A canonical file, served for the prefix itself.
    File(PathBuf),
    /// Files compiled into the binary, by relative path.
    Embedded(Arc<BTreeMap<String, Memory>>),
    /// One file compiled into the binary, with the name its type comes from.
    Bytes(String, Memory),
}

impl Export {
    /// A directory or a file, whichever `path` is when the export is added.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::new(Source::Unchecked(path.into(), None))
    }

    /// A directory, whose files are served below the prefix.
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        Self::new(Source::Unchecked(path.into(), Some(true)))
    }

    /// A single file, served for the prefix itself (`/favicon.ico`).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::new(Source::Unchecked(path.into(), Some(false)))
    }

    /// Files compiled into the binary, served as a directory is.
    pub fn embedded(files: Embedded) -> Self {
        Self::new(Source::Embedded(Arc::new(files.files)))
    }

    /// One file compiled into the binary, served for the prefix itself; its
    /// `Content-Type` comes from `name`.
    pub fn bytes(name: &str, bytes: &'static [u8]) -> Self {
        Self::new(Source::Bytes(
            name.to_owned(),
            Memory::new(Bytes::from_static(bytes)),
        ))
    }

    fn new(source: Source) -> Self {
        Self {
            source,
            cache_control: None,
            index_file: Some("index.html".to_owned()),
            listing: false,
            hidden_files: false,
            symlinks: Symlinks::default(),
            precompressed: true,
            fallback_type: "application/octet-stream".to_owned(),
            spa_fallback: None,
            cache: FileCache::new(Some(Duration::from_secs(1))),
            internal: false,
            label: Mount::named(""),
        }
    }

    /// `Cache-Control` for this export's responses, as given (no header by
    /// default, as nginx).
    pub fn cache_control(mut self, value: &str) -> Self {
        self.cache_control = Some(value.to_owned());
        self
    }

    /// `Cache-Control: public, max-age=…` (whole seconds).
    pub fn max_age(self, max_age: Duration) -> Self {
        self.cache_control(&format!("public, max-age={}", max_age.as_secs()))
    }

    /// `Cache-Control: public, max-age=31536000, immutable`: for files whose
    /// names change when their content does (`app.3f2a1c.js`).
    pub fn immutable(self) -> Self {
        self.cache_control("public, max-age=31536000, immutable")
    }

    /// The file served for a directory requested with its slash; `None` for
    /// none. `index.html` by default.
    pub fn index_file(mut self, name: Option<&str>) -> Self {
        self.index_file = name.map(str::to_owned);
        self
    }

    /// Lists directories without an index file (names HTML-escaped). Off by
    /// default.
    pub fn listing(mut self, on: bool) -> Self {
        self.listing = on;
        self
    }

    /// Serves dot-files and dot-directories (`.well-known/`). Off by default:
    /// `.env` and `.git/` are misses.
    pub fn hidden_files(mut self, on: bool) -> Self {
        self.hidden_files = on;
        self
    }

    /// Which symlinks to follow; see [`Symlinks`].
    pub fn symlinks(mut self, policy: Symlinks) -> Self {
        self.symlinks = policy;
        self
    }

    /// Serves `file.br`, `file.zst` or `file.gz` for `file` when the client
    /// accepts that coding, and sends `Vary: Accept-Encoding`. On by default.
    pub fn precompressed(mut self, on: bool) -> Self {
        self.precompressed = on;
        self
    }

    /// `Content-Type` for files whose extension says nothing.
    /// `application/octet-stream` by default.
    pub fn fallback_content_type(mut self, content_type: &str) -> Self {
        self.fallback_type = content_type.to_owned();
        self
    }

    /// Served only when an app names a file in it with `X-Accel-Redirect`
    /// (nginx's `internal`); a request for it from outside gets 404.
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// For single-page apps: a `GET` or `HEAD` that finds nothing under the
    /// prefix gets this file (relative to the export root) with 200, instead
    /// of going on to the wrapped app. Other methods still go on.
    pub fn spa_fallback(mut self, file: &str) -> Self {
        self.spa_fallback = Some(file.to_owned());
        self
    }

    /// How long a small file (up to 64 KiB) read from disk is served from
    /// memory before the disk is looked at again; `None` to look every time.
    /// One second by default, as nginx's `open_file_cache_valid` is 60: a small
    /// file changed on disk may be served as it was for that long. Larger
    /// files are kept open as long, but their path is looked at (`stat`) on
    /// each use: one replaced, rewritten or removed is never served as it was.
    pub fn memory_cache(mut self, ttl: Option<Duration>) -> Self {
        self.cache = FileCache::new(ttl);
        self
    }

    /// Resolves and checks the source, and the names the options give.
    pub(super) fn check(&mut self) -> Result<(), Reason> {
        if let Source::Unchecked(path, want_dir) = &self.source {
            let shown = path.display();
            if path.as_os_str().is_empty() {
                let why = "the path is empty (say `.` for the working directory)";
                return Err(Reason::Root(why.to_owned()));
            }
            let unusable = |e: io::Error| Reason::Root(format!("{shown}: {e}"));
            let canonical = std::fs::canonicalize(path).map_err(unusable)?;
            let meta = std::fs::metadata(&canonical).map_err(unusable)?;
            self.source = match (meta.is_dir(), meta.is_file(), want_dir) {
                (true, _, None | Some(true)) => Source::Dir(canonical),
                (_, true, None | Some(false)) => Source::File(canonical),
                (_, _, want) => {
                    let what = match want {
                        Some(true) => "is not a directory",
                        Some(false) => "is not a file",
                        None => "is neither a file nor a directory",
                    };
                    return Err(Reason::Root(format!("{shown} {what}")));
                }
            };
        }
        let setting = |why: String| Err(Reason::Setting(why));
        if let Source::Embedded(files) = &self.source {
            if let Some(name) = files.keys().find(|name| path::relative(name).is_none()) {
                return setting(format!(
                    "embedded file name {name:?} is not a relative path of plain names"
                ));
            }
        }
        if let Some(value) = self
            .cache_control
            .as_ref()
            .filter(|v| HeaderValue::from_str(v).is_err())
        {
            return setting(format!("Cache-Control {value:?} is not a header value"));
        }
        if HeaderValue::from_str(&self.fallback_type).is_err() {
            let value = &self.fallback_type;
            return setting(format!("content type {value:?} is not a header value"));
        }
        for (option, name) in [
            ("index file", &self.index_file),
            ("SPA fallback", &self.spa_fallback),
        ] {
            if let Some(name) = name.as_ref().filter(|name| path::relative(name).is_none()) {
                return setting(format!(
                    "{option} {name:?} is not a relative path of plain names"
                ));
            }
        }
        if let Some(name) = &self.spa_fallback {
            if !matches!(self.source, Source::Dir(_) | Source::Embedded(_)) {
                return setting("an SPA fallback needs a directory or embedded export".to_owned());
            }
            if !matches!(self.fallback(&Ask::head()), Ok(Outcome::File(_))) {
                return setting(format!("SPA fallback {name:?} is not a file in the export"));
            }
        }
        Ok(())
    }

    /// Answers a request for `rest` (the decoded segments below the prefix),
    /// or `None` for a miss.
    pub(super) async fn serve(
        self: Arc<Self>,
        req: &Request,
        rest: Vec<String>,
    ) -> Option<Response> {
        if path::check(&rest, self.hidden_files).is_err() {
            return None;
        }
        let get_or_head = req.method() == Method::GET || req.method() == Method::HEAD;
        let ask = Ask {
            encodings: match self.precompressed {
                true => headers::accepted_encodings(req.headers()),
                false => Vec::new(),
            },
            read: req.method() == Method::GET,
            fallback: get_or_head,
        };
        let is_disk = matches!(self.source, Source::Dir(_) | Source::File(_));
        let cacheable = is_disk && get_or_head && self.cache.is_on();
        let key = cacheable.then(|| FileCache::key(&rest, &ask.encodings));
        let this = Arc::clone(&self);
        let outcome = match key.as_deref().and_then(|key| self.cache.get(key)) {
            Some(file) => {
                Notes::note_served(match file.found.content {
                    Content::Memory(_) => Served::Memory,
                    _ => Served::File,
                });
                Ok(Outcome::File(file))
            }
            None => {
                let started = std::time::Instant::now();
                let outcome = match is_disk {
                    // Disk work (canonicalize, stat, open, a small read) in one blocking call.
                    true => tokio::task::spawn_blocking(move || this.decide(&rest, &ask))
                        .await
                        .unwrap_or_else(|e| Err(io::Error::other(e))),
                    false => this.decide(&rest, &ask),
                };
                if let Ok(Outcome::File(file)) = &outcome {
                    Notes::note_served(Served::File);
                    if let Some(key) = key {
                        self.cache.put(key, file);
                    }
                }
                Timings::record(req, "fs", started.elapsed(), None);
                outcome
            }
        };
        let outcome = match outcome {
            Ok(Outcome::Missing) => return None,
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(path = req.uri().path(), "cannot read the file: {e}");
                return Some(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
        };
        if !get_or_head {
            let mut res = StatusCode::METHOD_NOT_ALLOWED.into_response();
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(res);
        }
        match outcome {
            Outcome::File(file) => Some(respond::file(req, file, &self.headers())),
            Outcome::Redirect => redirect_with_slash(req),
            Outcome::Listing(entries) => Some(listing(req, &entries)),
            Outcome::Missing => None,
        }
    }

    /// What this export's options add to every file response.
    fn headers(&self) -> respond::Headers<'_> {
        respond::Headers {
            cache_control: self.cache_control.as_deref(),
            vary: self.precompressed,
            fallback_type: &self.fallback_type,
        }
    }

    /// Finds what to serve, on the blocking pool for disk sources.
    fn decide(&self, rest: &[String], ask: &Ask) -> io::Result<Outcome> {
        let slash = rest.last().is_some_and(String::is_empty);
        let rest = if slash { &rest[..rest.len() - 1] } else { rest };
        let index = |rest: &[String]| {
            let name = self.index_file.clone()?;
            Some([rest, &[name]].concat())
        };
        match self.entry(rest, ask.read_now())? {
            Entry::File(_) if slash => Ok(Outcome::Missing), // `/file.txt/`
            Entry::File(found) => self.choose(rest, found, ask).map(Outcome::File),
            Entry::Dir if !slash => {
                let has_index = index(rest)
                    .is_some_and(|i| matches!(self.entry(&i, false), Ok(Entry::File(_))));
                match has_index || self.listing {
                    true => Ok(Outcome::Redirect),
                    false => self.fallback(ask),
                }
            }
            Entry::Dir => {
                if let Some(index) = index(rest) {
                    if let Entry::File(found) = self.entry(&index, ask.read_now())? {
                        return self.choose(&index, found, ask).map(Outcome::File);
                    }
                }
                match self.listing {
                    true => self.list(rest).map(Outcome::Listing),
                    false => self.fallback(ask),
                }
            }
            Entry::Missing => self.fallback(ask),
        }
    }

    /// The SPA fallback file for a miss, if there is one and the method allows.
    fn fallback(&self, ask: &Ask) -> io::Result<Outcome> {
        let segments = self
            .spa_fallback
            .as_deref()
            .filter(|_| ask.fallback)
            .and_then(path::relative);
        let Some(segments) = segments else {
            return Ok(Outcome::Missing);
        };
        match self.entry(&segments, ask.read_now())? {
            Entry::File(found) => self.choose(&segments, found, ask).map(Outcome::File),
            _ => Ok(Outcome::Missing),
        }
    }

    /// The file to send for `rest`: a precompressed sibling the client
    /// accepts, else `identity` itself.
    fn choose(&self, rest: &[String], identity: Found, ask: &Ask) -> io::Result<File> {
        let name = match (rest.last(), &self.source) {
            (Some(last), _) => last.clone(),
            (None, Source::File(path)) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            (None, Source::Bytes(name, _)) => name.clone(),
            (None, _) => String::new(),
        };
        if let (Some(last), Source::Dir(_) | Source::Embedded(_)) = (rest.last(), &self.source) {
            for &(encoding, suffix) in &ask.encodings {
                let sibling = [&rest[..rest.len() - 1], &[format!("{last}.{suffix}")]].concat();
                if let Entry::File(found) = self.entry(&sibling, ask.read)? {
                    return Ok(File {
                        name,
                        found,
                        encoding: Some(encoding),
                    });
                }
            }
        }
        let found = match identity.content {
            // Looked at before siblings were: open it now.
            Content::Unread(path) if ask.read => match open_file(&path)? {
                Entry::File(found) => found,
                _ => {
                    return Err(io::Error::other(
                        "the file went away while it was being opened",
                    ));
                }
            },
            _ => identity,
        };
        Ok(File {
            name,
            found,
            encoding: None,
        })
    }

    /// What is at `rest` below the root. With `read`, a small file's bytes are
    /// read now and a large one is left open; without, it is only looked at.
    fn entry(&self, rest: &[String], read: bool) -> io::Result<Entry> {
        match &self.source {
            Source::Dir(root) => disk_entry(root, rest, self.symlinks, read),
            Source::File(file) if rest.is_empty() => disk_entry(file, &[], Symlinks::Follow, read),
            Source::Embedded(files) => Ok(embedded_entry(files, &rest.join("/"))),
            Source::Bytes(_, memory) if rest.is_empty() => Ok(Entry::File(memory.found())),
            _ => Ok(Entry::Missing),
        }
    }

    /// A directory's entries that could be served, sorted, directories marked.
    fn list(&self, rest: &[String]) -> io::Result<Vec<(String, bool)>> {
        let mut entries: Vec<(String, bool)> = match &self.source {
            Source::Dir(root) => {
                let mut dir = root.clone();
                dir.extend(rest);
                std::fs::read_dir(dir)?
                    .filter_map(|entry| {
                        let entry = entry.ok()?;
                        let name = entry.file_name().into_string().ok()?;
                        Some((name, entry.file_type().ok()?.is_dir()))
                    })
                    .collect()
            }
            Source::Embedded(files) => {
                let prefix: String = rest.iter().map(|s| format!("{s}/")).collect();
                let mut names: Vec<(String, bool)> = files
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(|k| match k.split_once('/') {
                        Some((dir, _)) => (dir.to_owned(), true),
                        None => (k.to_owned(), false),
                    })
                    .collect();
                names.dedup();
                names
            }
            _ => Vec::new(),
        };
        entries
            .retain(|(name, _)| path::check(std::slice::from_ref(name), self.hidden_files).is_ok());
        entries.sort();
        Ok(entries)
    }
}

/// What a request asks of [`Export::decide`].
struct Ask {
    /// Codings of precompressed siblings to try, best first, with their suffixes.
    encodings: Vec<(&'static str, &'static str)>,
    /// Whether the body will be sent (GET), so the file should be read or opened.
    read: bool,
    /// Whether a miss may be answered with the SPA fallback.
    fallback: bool,
}

impl Ask {
    /// What a HEAD request without Accept-Encoding asks.
    fn head() -> Self {
        Self {
            encodings: Vec::new(),
            read: false,
            fallback: true,
        }
    }

    /// Whether to read the file as soon as it is found: not when a sibling may
    /// be sent instead.
    fn read_now(&self) -> bool {
        self.read && self.encodings.is_empty()
    }
}

/// What to answer, decided on the blocking pool.
enum Outcome {
    File(File),
    Redirect,
    Listing(Vec<(String, bool)>),
    Missing,
}

/// Files compiled into the binary, exported as a directory is; see
/// [`Export::embedded`].
///
/// ```
/// use stackway_middleware::shared_data::{Embedded, Export, SharedData};
///
/// let assets = Embedded::new()
///     .file("index.html", b"<h1>hi</h1>")
///     .file("css/site.css", b"body {}"); // or include_bytes!("../assets/site.css")
/// let app = SharedData::new(stackway::apps::hello).export("/", Export::embedded(assets));
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let client = stackway::testing::Client::new(app);
/// client.get("/").await.assert_text("<h1>hi</h1>");
/// client.get("/css/site.css").await.assert_header("content-type", "text/css; charset=utf-8");
/// # });
/// ```
///
/// Their ETag is a hash of their bytes; their `Last-Modified` is the
/// executable's modification time, which they cannot be newer than.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    files: BTreeMap<String, Memory>,
}

impl Embedded {
    /// No files yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file at `path` (relative, `/`-separated: `css/site.css`).
    pub fn file(mut self, path: &str, bytes: &'static [u8]) -> Self {
        self.files
            .insert(path.to_owned(), Memory::new(Bytes::from_static(bytes)));
        self
    }
}

impl From<&str> for Export {
    fn from(path: &str) -> Self {
        Self::path(path)
    }
}

impl From<String> for Export {
    fn from(path: String) -> Self {
        Self::path(path)
    }
}

impl From<&Path> for Export {
    fn from(path: &Path) -> Self {
        Self::path(path)
    }
}

impl From<PathBuf> for Export {
    fn from(path: PathBuf) -> Self {
        Self::path(path)
    }
}

impl From<Embedded> for Export {
    fn from(files: Embedded) -> Self {
        Self::embedded(files)
    }
}
