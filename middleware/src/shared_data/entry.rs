//! Finding a file (on disk or embedded) and streaming its bytes.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream;
use stackway::Body;

use super::Symlinks;
use super::headers::Validators;

/// Files up to this size are read whole in the same blocking call that finds
/// them (one thread hop per request); larger ones stream in 256 KiB chunks.
const SMALL_FILE: u64 = 64 * 1024;
const CHUNK: u64 = 256 * 1024;

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

pub(super) enum Content {
    /// All of it, in memory.
    Memory(Bytes),
    /// Open, to be streamed.
    Open(std::fs::File),
    /// Looked at, not opened: the path it was found at, after the symlink policy.
    Unread(PathBuf),
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
        Content::Open(file)
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

/// A piece of a response body: literal bytes, or a range of the file.
pub(super) enum Piece {
    Literal(Bytes),
    Slice(Range<u64>),
}

impl Piece {
    pub(super) fn len(&self) -> u64 {
        match self {
            Self::Literal(bytes) => bytes.len() as u64,
            Self::Slice(range) => range.end - range.start,
        }
    }
}

/// Reads up to [`CHUNK`] bytes of `slice` on the blocking pool, straight
/// into the buffer that is sent (one trip and one copy per chunk); a file that
/// ends early is an error, so a response never lies about its length.
async fn read_chunk(file: std::fs::File, slice: Range<u64>) -> io::Result<(std::fs::File, Bytes)> {
    let want = (slice.end - slice.start).min(CHUNK);
    let read = tokio::task::spawn_blocking(move || {
        let mut file = file;
        file.seek(SeekFrom::Start(slice.start))?;
        let mut buf = Vec::with_capacity(want as usize);
        (&mut file).take(want).read_to_end(&mut buf)?;
        if buf.len() as u64 != want {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        Ok((file, Bytes::from(buf)))
    });
    read.await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

impl Content {
    /// A body of `total` bytes made of `pieces`, streamed from disk in chunks.
    pub(super) fn body(self, pieces: Vec<Piece>, total: u64) -> Body {
        let file = match self {
            Self::Memory(bytes) => {
                if let [Piece::Slice(range)] = &pieces[..] {
                    return Body::from(bytes.slice(range.start as usize..range.end as usize));
                }
                let chunks = pieces.into_iter().map(move |piece| match piece {
                    Piece::Literal(literal) => literal,
                    Piece::Slice(range) => bytes.slice(range.start as usize..range.end as usize),
                });
                return Body::from_chunks(chunks.collect::<Vec<_>>()).exact_size(total);
            }
            Self::Open(file) => file,
            Self::Unread(_) => unreachable!("bodies are only made of files opened for reading"),
        };
        // (file, pieces left, the slice being read: where and how much is left)
        let state = (file, pieces.into_iter(), 0..0);
        let chunks = stream::try_unfold(state, |(file, mut pieces, mut slice)| async move {
            if slice.is_empty() {
                match pieces.next() {
                    None => return Ok::<_, io::Error>(None),
                    Some(Piece::Literal(bytes)) => return Ok(Some((bytes, (file, pieces, 0..0)))),
                    Some(Piece::Slice(next)) => slice = next,
                }
            }
            let (file, chunk) = read_chunk(file, slice.clone()).await?;
            let rest = slice.start + chunk.len() as u64..slice.end;
            Ok(Some((chunk, (file, pieces, rest))))
        });
        Body::from_stream(chunks).exact_size(total)
    }
}
