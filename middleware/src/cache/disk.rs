//! Stored responses on disk: one file each, its fields first and its body
//! after them, so a hit is sent from the page cache and a large body never
//! sits in memory.
//!
//! A file is written under `tmp/` as the body streams by and renamed into
//! place only once whole, its body's length written into its head last and
//! its data synced first: a file cut short by a crash is never found, and
//! one whose length disagrees with its head is removed when read. A
//! target's files share a directory named by a hash of its key, so a
//! process finds what another stored; every file is read back when the
//! store opens, so they outlive a restart.

use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::freshness::Timing;
use super::keys::Variant;
use super::payload::Payload;

const MAGIC: &str = "stackway-cache 1";
/// The body's length, as 20 digits written over when the body is whole.
const LENGTH_DIGITS: usize = 20;
/// The longest head read back.
const HEAD_MAX: u64 = 1 << 20;
/// How long a file being written may go untouched before a store that
/// opens takes it for a crashed writer's and removes it.
const ABANDONED: Duration = Duration::from_secs(600);

/// A cache directory.
#[derive(Debug)]
pub(crate) struct Disk {
    dir: PathBuf,
    written: AtomicU64,
}

/// A response read back from its file.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) key: String,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) variant: Variant,
    pub(crate) timing: Timing,
    pub(crate) payload: Payload,
    written: SystemTime,
}

/// A response whose head is written and whose body is being: see [`Disk::create`].
pub(crate) struct Writer {
    file: Arc<File>,
    temporary: PathBuf,
    destination: PathBuf,
    length_at: u64,
    head_len: u64,
    body_len: u64,
    committed: bool,
}

impl Disk {
    /// The store in `dir`, made if need be; files that were being written
    /// when a process stopped are removed.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir.join("tmp"))?;
        for entry in fs::read_dir(dir.join("tmp"))? {
            let entry = entry?;
            let idle = (entry.metadata()?.modified()?.elapsed()).unwrap_or_default();
            if idle > ABANDONED {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            written: AtomicU64::new(0),
        })
    }

    /// Every response stored, with its key, the least recently written
    /// first; a file that cannot be read as one is removed.
    pub(crate) fn load(&self) -> Vec<Found> {
        let mut found = Vec::new();
        for level in read_dirs(&self.dir) {
            if level.file_name().is_some_and(|name| name == "tmp") {
                continue;
            }
            for target in read_dirs(&level) {
                found.extend(read_target(&target));
            }
        }
        found.sort_by_key(|found| found.written);
        found
    }

    /// The responses stored for `key`, as another process may have written them.
    pub(crate) fn probe(&self, key: &str) -> Vec<Found> {
        let mut found = read_target(&self.target_dir(key));
        found.retain(|found| found.key == key);
        found
    }

    fn target_dir(&self, key: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let hash = format!("{:016x}", hasher.finish());
        self.dir.join(&hash[..2]).join(&hash[2..])
    }

    /// Starts the file of a response for `key`: its head now, its body as
    /// it comes ([`Writer::write`]), in place once [committed](Writer::commit).
    pub(crate) fn create(
        &self,
        key: &str,
        status: StatusCode,
        headers: &HeaderMap,
        variant: &Variant,
        timing: Timing,
    ) -> io::Result<Writer> {
        let name = format!(
            "{}-{}",
            std::process::id(),
            self.written.fetch_add(1, Ordering::Relaxed)
        );
        let temporary = self.dir.join("tmp").join(&name);
        let destination = self.target_dir(key).join(name);
        let mut head = Vec::with_capacity(1024);
        let nanos = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        writeln!(head, "{MAGIC}")?;
        writeln!(head, "key {key}")?;
        writeln!(head, "requested {}", nanos(timing.requested))?;
        writeln!(head, "received {}", nanos(timing.received))?;
        writeln!(head, "status {}", status.as_u16())?;
        match variant.fields() {
            None => writeln!(head, "vary *")?,
            Some(fields) => {
                for (name, value) in fields {
                    match value {
                        Some(value) => writeln!(head, "vary {name}: {value}")?,
                        None => writeln!(head, "vary {name}")?,
                    }
                }
            }
        }
        for (name, value) in headers {
            write!(head, "field {name}: ")?;
            head.extend_from_slice(value.as_bytes());
            head.push(b'\n');
        }
        write!(head, "body ")?;
        let length_at = head.len() as u64;
        writeln!(head, "{:0LENGTH_DIGITS$}\n", 0)?;
        let file = (File::options().read(true).write(true))
            .create_new(true)
            .open(&temporary)?;
        let writer = Writer {
            file: Arc::new(file),
            temporary,
            destination,
            length_at,
            head_len: head.len() as u64,
            body_len: 0,
            committed: false,
        };
        // Removed by the writer's drop if this fails.
        (&*writer.file).write_all(&head)?;
        Ok(writer)
    }
}

impl Writer {
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        (&*self.file).write_all(data)?;
        self.body_len += data.len() as u64;
        Ok(())
    }

    /// The body is whole: its length goes into the head, and it can be
    /// served from the open file while [`commit`](Self::commit) puts it in place.
    pub(crate) fn finish(&mut self) -> io::Result<Payload> {
        let length = format!("{:0LENGTH_DIGITS$}", self.body_len);
        self.file.write_all_at(length.as_bytes(), self.length_at)?;
        Ok(Payload::Open {
            file: self.file.clone(),
            offset: self.head_len,
            len: self.body_len,
        })
    }

    /// Syncs the [finished](Self::finish) file and puts it in place. Blocks.
    pub(crate) fn commit(mut self) -> io::Result<Payload> {
        self.file.sync_data()?;
        fs::create_dir_all(self.destination.parent().unwrap_or(Path::new(".")))?;
        fs::rename(&self.temporary, &self.destination)?;
        self.committed = true;
        Ok(Payload::File {
            path: self.destination.clone(),
            offset: self.head_len,
            len: self.body_len,
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

/// The directories in `dir`.
fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    (entries.flatten())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect()
}

/// The responses in a target's directory, each with when it was written
/// and its key; the files that are not whole responses are removed.
fn read_target(dir: &Path) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match read(&path) {
            Ok(read) => found.push(read),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "removing an unreadable cache file");
                let _ = fs::remove_file(&path);
            }
        }
    }
    found
}

fn read(path: &Path) -> io::Result<Found> {
    let file = File::open(path)?;
    let metadata = file.metadata()?;
    let mut head = BufReader::new(file).take(HEAD_MAX);
    let mut line = Vec::new();
    let mut next_line = |line: &mut Vec<u8>| -> io::Result<usize> {
        line.clear();
        let read = head.read_until(b'\n', line)?;
        if line.pop() != Some(b'\n') {
            return Err(invalid("a head cut short"));
        }
        Ok(read)
    };
    let mut head_len = next_line(&mut line)? as u64;
    if line != MAGIC.as_bytes() {
        return Err(invalid("not a cache file"));
    }
    let (mut key, mut requested, mut received, mut status, mut body_len) =
        (None, None, None, None, None);
    let mut vary = Some(Vec::new());
    let mut headers = HeaderMap::new();
    loop {
        head_len += next_line(&mut line)? as u64;
        if line.is_empty() {
            break;
        }
        let at = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
        let (what, value) = (&line[..at], line.get(at + 1..).unwrap_or_default());
        let text = || std::str::from_utf8(value).map_err(|_| invalid("a value not UTF-8"));
        let number = || text()?.parse::<u128>().map_err(|_| invalid("a bad number"));
        match what {
            b"key" => key = Some(text()?.to_owned()),
            b"requested" => requested = Some(time(number()?)),
            b"received" => received = Some(time(number()?)),
            b"status" => {
                status =
                    Some(StatusCode::from_u16(number()? as u16).map_err(|_| invalid("status"))?)
            }
            b"body" => body_len = Some(number()? as u64),
            b"vary" if value == b"*" => vary = None,
            b"vary" => {
                let (name, value) = match text()?.split_once(": ") {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (text()?, None),
                };
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("name"))?;
                vary.get_or_insert_default().push((name, value));
            }
            b"field" => {
                let at = (value.windows(2).position(|w| w == b": ")).ok_or(invalid("field"))?;
                let name = HeaderName::from_bytes(&value[..at]).map_err(|_| invalid("name"))?;
                let value =
                    HeaderValue::from_bytes(&value[at + 2..]).map_err(|_| invalid("value"))?;
                headers.append(name, value);
            }
            _ => return Err(invalid("an unknown line")),
        }
    }
    let (Some(key), Some(requested), Some(received), Some(status), Some(body_len)) =
        (key, requested, received, status, body_len)
    else {
        return Err(invalid("a head without all it needs"));
    };
    if metadata.len() != head_len + body_len {
        return Err(invalid("a body of another length than its head says"));
    }
    let payload = Payload::File {
        path: path.to_owned(),
        offset: head_len,
        len: body_len,
    };
    let timing = Timing {
        requested,
        received,
    };
    Ok(Found {
        key,
        status,
        headers,
        variant: Variant::from_fields(vary),
        timing,
        payload,
        written: metadata.modified()?,
    })
}

fn time(nanos: u128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}
