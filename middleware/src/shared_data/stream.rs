//! Streaming a file's bytes, or pieces of them, as a response body.

use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use stackway::Body;

use super::entry::Content;

/// How much of a large file one trip to the blocking pool reads.
const CHUNK: u64 = 256 * 1024;

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

/// Reads up to [`CHUNK`] bytes of `slice` into the buffer that is sent (one
/// copy per chunk): at once when the bytes are in the page cache (a read
/// that may not wait for the disk), else on the blocking pool. A file that
/// ends early is an error, so a response never lies about its length.
async fn read_chunk(file: Arc<std::fs::File>, slice: Range<u64>) -> io::Result<Bytes> {
    let want = (slice.end - slice.start).min(CHUNK) as usize;
    let mut buf = vec![0; want];
    let cached = read_cached(&file, &mut buf, slice.start);
    if cached == want {
        return Ok(Bytes::from(buf));
    }
    let read = tokio::task::spawn_blocking(move || {
        file.read_exact_at(&mut buf[cached..], slice.start + cached as u64)?;
        Ok(Bytes::from(buf))
    });
    read.await.unwrap_or_else(|e| Err(io::Error::other(e)))
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
            Self::Open(opened) => opened.file,
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
            let chunk = read_chunk(file.clone(), slice.clone()).await?;
            let rest = slice.start + chunk.len() as u64..slice.end;
            Ok(Some((chunk, (file, pieces, rest))))
        });
        Body::from_stream(chunks).exact_size(total)
    }
}
