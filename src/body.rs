//! [`Body`]: the request and response body, streamed both ways in constant memory.
//!
//! # Example
//!
//! ```
//! use stackway::{Body, Request, testing::Client};
//!
//! // WSGI's iterable: the chunks are produced while the response is sent.
//! let app = |_req: Request| async {
//!     let chunks = (1..=3).map(|n| format!("chunk {n}\n"));
//!     Body::from_chunks(chunks)
//! };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! Client::new(app).get("/").await.assert_text("chunk 1\nchunk 2\nchunk 3\n");
//! # });
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt, stream};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, StreamBody};
use sync_wrapper::SyncWrapper;
use tokio::io::AsyncRead;
use tokio_util::io::ReaderStream;

use crate::error::{BoxError, Error, Kind};

mod file;
mod spool;

pub use file::FilePart;
pub(crate) use file::{CHUNK as FILE_CHUNK, StandIn};
use file::{FileBody, Polled};
pub use spool::Spooler;

/// How many bytes a file or reader body reads at a time.
const READ_CHUNK: usize = 64 * 1024;

type DynBody = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>;

/// A request or response body: bytes in memory, or a stream read as it is sent.
///
/// A body made from bytes or a string knows its exact size; so does one made
/// from a file, and a stream given [`exact_size`](Self::exact_size). The server
/// sends those with `Content-Length`, and the others chunked.
///
/// `Body` implements [`http_body::Body`], so it plugs into hyper and the rest of
/// the ecosystem; any `http_body::Body` becomes one with [`Body::new`].
pub struct Body {
    kind: BodyKind,
}

enum BodyKind {
    /// Bytes in memory; `None` once they were handed out.
    Full(Option<Bytes>),
    Stream(Box<Streaming>),
    /// Parts of an open file, which the server may send with `sendfile`.
    File(Box<FileBody>),
}

struct Streaming {
    // `SyncWrapper` makes the body `Sync` (so `&Request` may be held across an
    // await) without asking every stream to be `Sync`: it is only ever polled
    // through `&mut`.
    inner: SyncWrapper<DynBody>,
    /// The inner body's size hint when it was wrapped; `yielded` is subtracted.
    hint: SizeHint,
    yielded: u64,
    /// Set by `exact_size`: the stream must yield exactly this many bytes.
    declared: Option<u64>,
    /// Set by `limit`: the stream may yield at most this many bytes.
    limit: Option<u64>,
    done: bool,
}

impl Body {
    /// An empty body.
    pub const fn empty() -> Self {
        Self {
            kind: BodyKind::Full(None),
        }
    }

    /// Wraps any [`http_body::Body`], such as hyper's `Incoming`.
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let hint = body.size_hint();
        // An ended body says so from the start: an HTTP/2 response ends with
        // its head (a gRPC trailers-only answer), not with an empty DATA frame.
        let done = body.is_end_stream();
        Self {
            kind: BodyKind::Stream(Box::new(Streaming {
                inner: SyncWrapper::new(Box::pin(body.map_err(Into::into))),
                hint,
                yielded: 0,
                declared: None,
                limit: None,
                done,
            })),
        }
    }

    /// A body read from a stream of chunks, as they are produced.
    pub fn from_stream<S, D, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<D, E>> + Send + 'static,
        D: Into<Bytes> + 'static,
        E: Into<BoxError> + 'static,
    {
        Self::new(StreamBody::new(
            stream
                .map_ok(|data| Frame::data(data.into()))
                .map_err(Into::into),
        ))
    }

    /// A body from an iterator of chunks, pulled one at a time as the body is
    /// sent: WSGI's response iterable.
    pub fn from_chunks<I>(chunks: I) -> Self
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Into<Bytes> + 'static,
    {
        let chunks = chunks.into_iter().map(Ok::<_, std::convert::Infallible>);
        Self::from_stream(stream::iter(chunks))
    }

    /// A body read from `reader` in 64 KiB chunks; `len`, when given, is its exact
    /// length (see [`exact_size`](Self::exact_size)).
    pub fn from_reader<R>(reader: R, len: Option<u64>) -> Self
    where
        R: AsyncRead + Send + 'static,
    {
        let body = Self::from_stream(ReaderStream::with_capacity(reader, READ_CHUNK));
        match len {
            Some(len) => body.exact_size(len),
            None => body,
        }
    }

    /// A body that streams a whole file, with its length from the file's metadata.
    ///
    /// The file is read from its current position, at offsets (see
    /// [`from_file_parts`](Self::from_file_parts)).
    pub async fn from_file(mut file: tokio::fs::File) -> std::io::Result<Self> {
        use tokio::io::AsyncSeekExt as _;
        let start = file.stream_position().await?;
        let len = file.metadata().await?.len();
        let file = Arc::new(file.into_std().await);
        Ok(Self::from_file_parts(
            file,
            vec![FilePart::Range(start..len.max(start))],
        ))
    }

    /// A body made of ranges of an open file and bytes between them (a
    /// `multipart/byteranges` response), of exactly their total length.
    ///
    /// The file is read at offsets, never through its cursor, so one open
    /// file can serve any number of bodies at once. A chunk the page cache
    /// holds is read at once, others on the blocking pool; and when the body
    /// reaches the server unchanged (or only watched, with
    /// [`inspect`](Self::inspect)) on a plain HTTP/1 connection, the server
    /// sends it from the page cache with `sendfile`, never copying it. A
    /// file that turns out shorter than a range ends the body with an error
    /// for which [`Error::is_length_mismatch`] is true (and a response cut
    /// short). Bytes handed to the socket are the page cache's until the
    /// client has them, so a file rewritten in place while it is sent may
    /// arrive as it now is, as from nginx: replace files by renaming them.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stackway::{Body, FilePart};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut file = tempfile::tempfile().unwrap();
    /// std::io::Write::write_all(&mut file, b"0123456789").unwrap();
    /// let parts = vec![FilePart::Range(2..4), FilePart::Bytes("|".into()), FilePart::Range(7..10)];
    /// let body = Body::from_file_parts(Arc::new(file), parts);
    /// assert_eq!(body.collect(1024).await.unwrap(), "23|789");
    /// # });
    /// ```
    pub fn from_file_parts(file: Arc<std::fs::File>, parts: Vec<FilePart>) -> Self {
        Self {
            kind: BodyKind::File(Box::new(FileBody::new(file, parts))),
        }
    }

    /// Declares that the body is exactly `len` bytes long, so it can be sent with
    /// `Content-Length`.
    ///
    /// If the body then yields more or fewer bytes, it ends with an error for
    /// which [`Error::is_length_mismatch`] is true, rather than sending a
    /// response whose length lies.
    pub fn exact_size(self, len: u64) -> Self {
        let mut streaming = self.into_streaming();
        // A body empty from the start and declared longer fails when read,
        // as any short one does.
        if len > 0 && streaming.yielded == 0 {
            streaming.done = false;
        }
        streaming.declared = Some(len.saturating_add(streaming.yielded));
        Self {
            kind: BodyKind::Stream(streaming),
        }
    }

    /// Fails, once more than `max` bytes have come, with an error for which
    /// [`Error::is_too_large`] is true: a request body limit for one app.
    pub fn limit(self, max: u64) -> Self {
        let mut streaming = self.into_streaming();
        streaming.limit = Some(max.saturating_add(streaming.yielded));
        Self {
            kind: BodyKind::Stream(streaming),
        }
    }

    fn into_streaming(self) -> Box<Streaming> {
        match self.kind {
            BodyKind::Stream(streaming) => streaming,
            BodyKind::File(file) => match Self::new(*file).kind {
                BodyKind::Stream(streaming) => streaming,
                _ => unreachable!("Body::new always streams"),
            },
            BodyKind::Full(bytes) => {
                let frames = stream::iter(bytes.map(|b| Ok::<_, BoxError>(Frame::data(b))));
                match Self::new(StreamBody::new(frames)).kind {
                    BodyKind::Stream(streaming) => streaming,
                    _ => unreachable!("Body::new always streams"),
                }
            }
        }
    }

    /// Reads the next chunk of data, or `None` at the end (trailers are skipped).
    pub async fn chunk(&mut self) -> Option<Result<Bytes, Error>> {
        loop {
            match self.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some(Ok(data)),
                    Err(_trailers) => continue,
                },
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Calls `look` with the outcome of every poll of the body (a frame, the
    /// end, an error, or `Pending`), for middleware that watch a body go by
    /// without changing it: counting bytes, noticing an error or a stall.
    /// Whatever `look` captures is dropped with the body.
    ///
    /// A file body ([`from_file_parts`](Self::from_file_parts)) stays one, so
    /// the server may still send it with `sendfile`: `look` then sees frames
    /// of the right length whose bytes are stand-ins, not the file's. Look at
    /// lengths, ends and errors here; a middleware that reads the bytes wraps
    /// the body with [`Body::new`].
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let counter = seen.clone();
    /// let body = stackway::Body::from("hello").inspect(move |polled| {
    ///     if let std::task::Poll::Ready(Some(Ok(frame))) = polled {
    ///         counter.fetch_add(frame.data_ref().map_or(0, |d| d.len() as u64), Ordering::Relaxed);
    ///     }
    /// });
    /// assert_eq!(body.collect(1024).await.unwrap(), "hello");
    /// assert_eq!(seen.load(Ordering::Relaxed), 5);
    /// # });
    /// ```
    pub fn inspect<F>(self, look: F) -> Self
    where
        F: FnMut(&Poll<Option<Result<Frame<Bytes>, Error>>>) + Send + Unpin + 'static,
    {
        match self.kind {
            BodyKind::File(mut file) => {
                file.looks.get_mut().push(Box::new(look));
                Self {
                    kind: BodyKind::File(file),
                }
            }
            kind => Self::new(Inspected {
                body: Self { kind },
                look,
            }),
        }
    }

    /// Polls the body as the server sends it: a file body hands each chunk
    /// the page cache holds to `stand_in`, and yields what it returns.
    pub(crate) fn poll_frame_sending(
        &mut self,
        cx: &mut Context<'_>,
        stand_in: StandIn<'_>,
    ) -> Polled {
        match &mut self.kind {
            BodyKind::File(file) => file.poll_frame(cx, Some(stand_in)),
            _ => http_body::Body::poll_frame(Pin::new(self), cx),
        }
    }

    /// Reads the whole body into memory, refusing one longer than `limit` bytes.
    ///
    /// A body that declares a size over the limit is refused before any of it is
    /// read; one that turns out longer stops being read once it passes the limit.
    /// Either way the error's [`is_too_large`](Error::is_too_large) is true.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, Error> {
        let too_large = || Error::new(Kind::TooLarge).with(format!("limit is {limit} bytes"));
        if http_body::Body::size_hint(&self).lower() > limit as u64 {
            return Err(too_large());
        }
        if let BodyKind::Full(bytes) = &mut self.kind {
            return Ok(bytes.take().unwrap_or_default());
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

/// The body [`Body::inspect`] returns.
struct Inspected<F> {
    body: Body,
    look: F,
}

impl<F> http_body::Body for Inspected<F>
where
    F: FnMut(&Poll<Option<Result<Frame<Bytes>, Error>>>) + Send + Unpin + 'static,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        (this.look)(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Streaming {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = ready!(self.inner.get_mut().as_mut().poll_frame(cx));
        let result = match polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.yielded += data.len() as u64;
                }
                match (self.declared, self.limit) {
                    (Some(declared), _) if self.yielded > declared => {
                        Some(Err(Error::new(Kind::Length).with(format!(
                            "the body yielded more than its declared {declared} bytes"
                        ))))
                    }
                    (_, Some(limit)) if self.yielded > limit => Some(Err(Error::new(
                        Kind::TooLarge,
                    )
                    .with(format!("the limit is {limit} bytes")))),
                    _ => Some(Ok(frame)),
                }
            }
            // stackway's own errors (a server's body limit or timeout) keep their kind.
            Some(Err(e)) => Some(Err(match e.downcast::<Error>() {
                Ok(e) => *e,
                Err(e) => Error::new(Kind::Body).with(e),
            })),
            None => match self.declared {
                Some(declared) if self.yielded < declared => Some(Err(Error::new(Kind::Length)
                    .with(format!(
                        "the body ended after {} of its declared {declared} bytes",
                        self.yielded
                    )))),
                _ => None,
            },
        };
        if !matches!(result, Some(Ok(_))) {
            self.done = true;
        }
        Poll::Ready(result)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(declared) = self.declared {
            return SizeHint::with_exact(declared.saturating_sub(self.yielded));
        }
        let mut hint = SizeHint::new();
        hint.set_lower(self.hint.lower().saturating_sub(self.yielded));
        if let Some(upper) = self.hint.upper() {
            hint.set_upper(upper.saturating_sub(self.yielded));
        }
        hint
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Stream(streaming) => streaming.poll_frame(cx),
            BodyKind::File(file) => file.poll_frame(cx, None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            BodyKind::Stream(streaming) => streaming.done,
            BodyKind::File(file) => file.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            BodyKind::Stream(streaming) => streaming.size_hint(),
            BodyKind::File(file) => file.size_hint(),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::Full(bytes) => f.debug_tuple("Body").field(bytes).finish(),
            BodyKind::Stream(_) => f.write_str("Body(<stream>)"),
            BodyKind::File(_) => f.write_str("Body(<file>)"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self {
            kind: BodyKind::Full(Some(bytes)),
        }
    }
}

macro_rules! body_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Body {
            fn from(value: $ty) -> Self {
                Self::from(Bytes::from(value))
            }
        }
    )*};
}
body_from!(String, &'static str, Vec<u8>, &'static [u8]);

impl From<()> for Body {
    fn from((): ()) -> Self {
        Self::empty()
    }
}

impl From<hyper::body::Incoming> for Body {
    fn from(body: hyper::body::Incoming) -> Self {
        Self::new(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn exact_size_counts_what_was_already_read() {
        run(async {
            let mut body = Body::from_chunks(["ab", "cd", "ef"]);
            assert_eq!(body.chunk().await.unwrap().unwrap(), "ab");
            let body = body.exact_size(4);
            assert_eq!(http_body::Body::size_hint(&body).exact(), Some(4));
            assert_eq!(body.collect(100).await.unwrap(), "cdef");
        });
    }

    #[test]
    fn exact_size_on_bytes_checks_the_length() {
        run(async {
            let err = Body::from("abc")
                .exact_size(5)
                .collect(100)
                .await
                .unwrap_err();
            assert!(err.is_length_mismatch(), "{err}");
            let ok = Body::from("abc").exact_size(3).collect(100).await.unwrap();
            assert_eq!(ok, "abc");
        });
    }

    #[test]
    fn size_hint_shrinks_as_a_wrapped_body_is_read() {
        run(async {
            let full = http_body_util::Full::new(Bytes::from_static(b"hello"));
            let body = Body::new(full);
            assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
            let mut body = body;
            body.chunk().await.unwrap().unwrap();
            assert_eq!(http_body::Body::size_hint(&body).exact(), Some(0));
            assert!(body.chunk().await.is_none());
            assert!(http_body::Body::is_end_stream(&body));
        });
    }
}
