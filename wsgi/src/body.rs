//! The request body as `wsgi.input` reads it: blocking reads, for code that
//! runs on a Python thread or on a worker held by Python.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};

use bytes::{Buf, Bytes};
use futures_util::TryStreamExt;
use http::StatusCode;
use http_body_util::BodyExt;
use stackway::{Body, IntoResponse, Response};
use tokio_util::io::{StreamReader, SyncIoBridge};

/// A blocking reader over the request body, buffered where it has to be: a
/// body kept in memory is read from its own chunks, with no buffer between.
pub(crate) type BodyReader = Box<dyn BufRead + Send>;

/// The body as it arrives: each read waits for the client, through the
/// runtime the body belongs to, so never call it on that runtime's thread.
pub(crate) fn streamed(body: Body) -> BodyReader {
    let stream = body.into_data_stream().map_err(io::Error::other);
    Box::new(SyncIoBridge::new(StreamReader::new(stream)))
}

/// The body read whole before the app is called, so that reading it never
/// waits for the client nor for a runtime: the first `memory` bytes kept in
/// memory, the rest in an unnamed temporary file (written on the blocking
/// pool). A body that fails gives the answer for it: 408 when the client
/// stalled, 400 when it broke off (the server has made one over its size
/// limit a 413 already), 500 when the file cannot be written.
pub(crate) async fn whole(mut body: Body, memory: usize) -> Result<BodyReader, Response> {
    // Most requests have none: nothing to gather, nor to allocate.
    if http_body::Body::is_end_stream(&body) {
        return Ok(Box::new(io::empty()));
    }
    let mut kept = Chunks::default();
    let mut spilled: Option<File> = None;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Err(e) if e.is_timeout() => return Err(StatusCode::REQUEST_TIMEOUT.into_response()),
            Err(_) => return Err(StatusCode::BAD_REQUEST.into_response()),
        };
        if data.is_empty() {
            continue;
        }
        if spilled.is_none() && kept.len + data.len() <= memory {
            kept.push(data);
            continue;
        }
        let file = spilled.take();
        let written = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(file) => file,
                None => tempfile::tempfile()?,
            };
            file.write_all(&data).map(|()| file)
        })
        .await;
        match written {
            Ok(Ok(file)) => spilled = Some(file),
            Ok(Err(e)) => {
                tracing::error!("cannot keep a request body in a temporary file: {e}");
                return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            Err(_) => return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        }
    }
    Ok(match spilled {
        None => Box::new(kept),
        Some(mut file) => {
            if file.rewind().is_err() {
                return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            Box::new(kept.chain(BufReader::with_capacity(64 * 1024, file)))
        }
    })
}

/// Chunks of a body kept in memory, read in order; none of them empty.
#[derive(Default)]
struct Chunks {
    chunks: VecDeque<Bytes>,
    /// The bytes kept, read or not.
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunks {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Ok(self.chunks.front().map_or(&[], |chunk| chunk))
    }

    fn consume(&mut self, n: usize) {
        if let Some(chunk) = self.chunks.front_mut() {
            chunk.advance(n);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}
