//! Finding a file, on disk or embedded, and what is known of it.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use stackway::{Body, FilePart};

use super::Symlinks;
use super::headers::Validators;

/// Files up to this size are read whole in the same blocking call that finds
/// them (one thread hop per request); larger ones are streamed.
const SMALL_FILE: u64 = 64 * 1024;

/// Bytes in memory with their validators, computed once.
#[derive(Debug, Clone)]
pub(super) struct Memory {
    bytes: Bytes,
    validators: Validators,
}

impl Memory {
    pub(super) fn new(bytes: Bytes) -> Self {
        // A fixed-key hash, so every process serving these bytes agrees.
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(&bytes);
        let mut validators = Validators::for_file(bytes.len() as u64, executable_modified());
        validators.etag = format!("\"{:x}-{:016x}\"", bytes.len(), hasher.finish());
        Self { bytes, validators }
    }

    pub(super) fn found(&self) -> Found {
        Found {
            len: self.bytes.len() as u64,
            validators: self.validators.clone(),
            content: Content::Memory(self.bytes.clone()),
        }
    }
}

/// When the running executable was last modified: embedded bytes cannot be
/// newer than the binary that holds them.
fn executable_modified() -> Option<SystemTime> {
    static MODIFIED: OnceLock<Option<SystemTime>> = OnceLock::new();
    *MODIFIED.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        std::fs::metadata(exe).and_then(|m| m.modified()).ok()
    })
}

pub(super) fn embedded_entry(files: &BTreeMap<String, Memory>, path: &str) -> Entry {
    if let Some(memory) = files.get(path) {
        return Entry::File(memory.found());
    }
    let dir = format!("{path}/");
    let is_dir = path.is_empty()
        || files
            .range(dir.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dir));
    if is_dir { Entry::Dir } else { Entry::Missing }
}

/// What a path below an export names.
pub(super) enum Entry {
    File(Found),
    Dir,
    Missing,
}

/// A regular file that was found, with what is known of it.
pub(super) struct Found {
    pub(super) len: u64,
    pub(super) validators: Validators,
    pub(super) content: Content,
}

/// A file chosen to be sent: its name (for the type), content, and coding.
pub(super) struct File {
    pub(super) name: String,
    pub(super) found: Found,
    pub(super) encoding: Option<&'static str>,
}

pub(super) enum Content {
    /// All of it, in memory.
    Memory(Bytes),
    /// Open, to be streamed.
    Open(Opened),
    /// Looked at, not opened: the path it was found at, after the symlink policy.
    Unread(PathBuf),
}

impl Content {
    /// A body made of `parts`: slices of the bytes in memory, or of the open
    /// file, read (or sent with `sendfile`) as the response goes out.
    pub(super) fn body(self, parts: Vec<FilePart>) -> Body {
        match self {
            Self::Memory(bytes) => {
                let slice =
                    move |range: Range<u64>| bytes.slice(range.start as usize..range.end as usize);
                if let [FilePart::Range(range)] = &parts[..] {
                    return Body::from(slice(range.clone()));
                }
                let total = parts.iter().map(FilePart::len).sum();
                let chunks = parts.into_iter().map(move |part| match part {
                    FilePart::Bytes(literal) => literal,
                    FilePart::Range(range) => slice(range),
                });
                Body::from_chunks(chunks).exact_size(total)
            }
            Self::Open(opened) => Body::from_file_parts(opened.file, parts),
            Self::Unread(_) => unreachable!("bodies are only made of files opened for reading"),
        }
    }
}

/// A large file, open: shared by the responses streaming it and the open
/// file cache, read at offsets (never through a shared cursor).
#[derive(Clone)]
pub(super) struct Opened {
    pub(super) file: Arc<std::fs::File>,
    /// Where it was opened, after the symlink policy.
    pub(super) path: PathBuf,
    /// What was opened, to tell whether `path` still names it.
    pub(super) identity: Identity,
}

/// Which file, and which version of it: a file replaced (a new inode),
/// rewritten (a new size or modification time) or removed no longer matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Identity {
    pub(super) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// Finds `rest` below `root` under a symlink policy, on the blocking pool.
///
/// ```text
/// root /srv/public (canonical), rest [css, site.css]
///   WithinRoot: canonicalize /srv/public/css/site.css → must start with /srv/public
///   Deny:       lstat /srv/public/css, then …/site.css → no symlink may appear
///   Follow:     stat /srv/public/css/site.css
/// ```
///
/// Errors a hostile path can cause (no such file, not a directory, a name
/// too long, no permission, a symlink loop) are misses, never 5xx.
pub(super) fn disk_entry(
    root: &Path,
    rest: &[String],
    symlinks: Symlinks,
    read: bool,
) -> io::Result<Entry> {
    let mut path = root.to_path_buf();
    path.extend(rest);
    let meta = match symlinks {
        Symlinks::Follow => std::fs::metadata(&path),
        Symlinks::WithinRoot => std::fs::canonicalize(&path).and_then(|canonical| {
            if !canonical.starts_with(root) {
                return Err(io::ErrorKind::NotFound.into());
            }
            path = canonical;
            std::fs::metadata(&path)
        }),
        Symlinks::Deny => {
            let mut walked = root.to_path_buf();
            let mut meta = std::fs::metadata(root);
            for segment in rest {
                walked.push(segment);
                meta = std::fs::symlink_metadata(&walked);
                if meta.as_ref().is_ok_and(|m| m.file_type().is_symlink()) {
                    return Ok(Entry::Missing);
                }
            }
            meta
        }
    };
    let meta = match meta {
        Ok(meta) => meta,
        Err(e) => return miss(e),
    };
    if meta.is_dir() {
        return Ok(Entry::Dir);
    }
    if !meta.is_file() {
        return Ok(Entry::Missing); // a FIFO or device: opening it could hang
    }
    match read {
        true => open_file(&path),
        false => Ok(found(&meta, Content::Unread(path))),
    }
}

/// Opens the regular file found at `path`, reading it whole if it is small.
pub(super) fn open_file(path: &Path) -> io::Result<Entry> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return miss(e),
    };
    // What was opened, not what was looked at before.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Entry::Missing);
    }
    let content = if meta.len() <= SMALL_FILE {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file).take(SMALL_FILE).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != meta.len() {
            return Err(io::Error::other("the file changed while it was being read"));
        }
        Content::Memory(bytes.into())
    } else {
        Content::Open(Opened {
            file: Arc::new(file),
            path: path.to_owned(),
            identity: Identity::of(&meta),
        })
    };
    Ok(found(&meta, content))
}

fn found(meta: &std::fs::Metadata, content: Content) -> Entry {
    Entry::File(Found {
        len: meta.len(),
        validators: Validators::for_file(meta.len(), meta.modified().ok()),
        content,
    })
}

/// A lookup error: a miss if a request path can cause it, else an error.
fn miss(e: io::Error) -> io::Result<Entry> {
    use io::ErrorKind::*;
    match e.kind() {
        NotFound | NotADirectory | PermissionDenied | InvalidFilename | InvalidInput => {
            Ok(Entry::Missing)
        }
        _ if e.raw_os_error() == Some(ELOOP) => Ok(Entry::Missing),
        _ => Err(e),
    }
}

/// `ELOOP`: too many symlinks (a loop), which has no stable `ErrorKind`.
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;
