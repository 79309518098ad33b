//! Streaming a file's bytes, or pieces of them, as a response body.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

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
