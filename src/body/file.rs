//! A body read from an open file at offsets: ranges of it, with bytes of
//! their own between them (a `multipart/byteranges` response). Nothing reads
//! through the file's cursor, so one open file serves any number of
//! responses at once.
//!
//! Read as a body, it yields chunks read with `pread`: at once when the page
//! cache holds them (`preadv2` with `RWF_NOWAIT`), else on the blocking pool.
//! The server may instead send them from the page cache straight to the
//! socket (`sendfile`, see `server/sendfile.rs`) when the body reaches it
//! unchanged: it then takes each chunk the page cache holds as a stand-in of
//! the chunk's length, which only its socket reads.

use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use sync_wrapper::SyncWrapper;
use tokio::task::JoinHandle;

use crate::error::{Error, Kind};

/// The most of a file one chunk holds.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The least a chunk holds for the server to send it with `sendfile`:
/// below it, a read and a copy cost less than the syscalls that check the
/// page cache and send (a 1000-byte range: 11.3 µs of server CPU read, 12.1
/// µs sent, `benches/peers/run.py --scenarios static-range`).
const SENDFILE_MIN: usize = 32 * 1024;

/// A piece of a [`Body::from_file_parts`](crate::Body::from_file_parts) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilePart {
    /// Bytes of its own, such as a multipart boundary.
    Bytes(Bytes),
    /// A range of the file's bytes.
    Range(Range<u64>),
}

impl FilePart {
    /// How many bytes it adds to the body.
    pub fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::Range(range) => range.end.saturating_sub(range.start),
        }
    }

    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The outcome of one poll of a body.
pub(crate) type Polled = Poll<Option<Result<Frame<Bytes>, Error>>>;

/// What [`Body::inspect`](crate::Body::inspect) was given.
pub(super) type Look = Box<dyn FnMut(&Polled) + Send>;

/// Sends `len` bytes of the file from `offset` another way, and returns the
/// bytes that stand in for them.
pub(crate) type StandIn<'a> = &'a mut dyn FnMut(&Arc<std::fs::File>, u64, usize) -> Bytes;

pub(super) struct FileBody {
    file: Arc<std::fs::File>,
    parts: std::vec::IntoIter<FilePart>,
    /// What is left of the range being sent.
    slice: Range<u64>,
    /// A chunk being read on the blocking pool.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// Bytes not yet yielded.
    remaining: u64,
    /// Called with every poll's outcome.
    pub(super) looks: SyncWrapper<Vec<Look>>,
    done: bool,
}

impl FileBody {
    pub(super) fn new(file: Arc<std::fs::File>, parts: Vec<FilePart>) -> Self {
        Self {
            file,
            remaining: parts.iter().map(FilePart::len).sum(),
            parts: parts.into_iter(),
            slice: 0..0,
            reading: None,
            looks: SyncWrapper::new(Vec::new()),
            done: false,
        }
    }

    /// The next chunk; with `stand_in`, a chunk the page cache holds goes
    /// to it, and what it returns is yielded instead.
    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        stand_in: Option<StandIn<'_>>,
    ) -> Polled {
        let polled = match self.done {
            true => Poll::Ready(None),
            false => self.poll_next(cx, stand_in),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.remaining -= frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(_) => self.done = true,
            Poll::Pending => {}
        }
        for look in self.looks.get_mut() {
            look(&polled);
        }
        polled
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, mut stand_in: Option<StandIn<'_>>) -> Polled {
        loop {
            if let Some(reading) = &mut self.reading {
                let read = ready!(Pin::new(reading).poll(cx));
                self.reading = None;
                let chunk = match read {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(read_error(e)))),
                    Err(e) => return Poll::Ready(Some(Err(Error::new(Kind::Body).with(e)))),
                };
                self.slice.start += chunk.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if self.slice.is_empty() {
                match self.parts.next() {
                    None => return Poll::Ready(None),
                    Some(FilePart::Bytes(bytes)) if bytes.is_empty() => {}
                    Some(FilePart::Bytes(bytes)) => {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    Some(FilePart::Range(range)) => self.slice = range,
                }
                continue;
            }
            let offset = self.slice.start;
            let len = (self.slice.end - offset).min(CHUNK as u64) as usize;
            if let Some(stand_in) = stand_in.as_mut().filter(|_| len >= SENDFILE_MIN) {
                if cached(&self.file, offset, len) {
                    self.slice.start += len as u64;
                    return Poll::Ready(Some(Ok(Frame::data(stand_in(&self.file, offset, len)))));
                }
            }
            let mut buf = vec![0; len];
            let read = read_cached(&self.file, &mut buf, offset);
            if read == len {
                self.slice.start += len as u64;
                return Poll::Ready(Some(Ok(Frame::data(buf.into()))));
            }
            let file = self.file.clone();
            self.reading = Some(tokio::task::spawn_blocking(move || {
                file.read_exact_at(&mut buf[read..], offset + read as u64)?;
                Ok(Bytes::from(buf))
            }));
        }
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.done || self.remaining == 0
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        self.get_mut().poll_frame(cx, None)
    }

    fn is_end_stream(&self) -> bool {
        self.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint()
    }
}

/// A file that ends before a range of it does is a length error: the
/// response never lies about its length.
fn read_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            Error::new(Kind::Length).with("the file ended before the body did")
        }
        _ => Error::new(Kind::Body).with(e),
    }
}

/// Reads what of `buf` the page cache holds from `offset` on, without
/// waiting for the disk (`preadv2` with `RWF_NOWAIT`); how many bytes.
#[cfg(target_os = "linux")]
fn read_cached(file: &std::fs::File, buf: &mut [u8], offset: u64) -> usize {
    use rustix::io::{ReadWriteFlags, preadv2};
    let mut done = 0;
    while done < buf.len() {
        let slices = &mut [io::IoSliceMut::new(&mut buf[done..])];
        match preadv2(file, slices, offset + done as u64, ReadWriteFlags::NOWAIT) {
            Ok(0) | Err(_) => break, // the end, not cached (EAGAIN), or no RWF_NOWAIT here
            Ok(n) => done += n,
        }
    }
    done
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_: &std::fs::File, _: &mut [u8], _: u64) -> usize {
    0
}

/// Whether the page cache holds the first and last byte of `len` bytes
/// at `offset`: read ahead in order, the bytes between are then held too,
/// so sending them does not wait for the disk (and a file cut short since
/// is read, and found short, the usual way).
fn cached(file: &std::fs::File, offset: u64, len: usize) -> bool {
    let mut byte = [0u8];
    let last = offset + len as u64 - 1;
    [offset, last]
        .into_iter()
        .all(|at| read_cached(file, &mut byte, at) == 1)
}
