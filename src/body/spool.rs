//! A body taken from its source as fast as the source makes it, kept in
//! memory up to a bound and in an unnamed temporary file past it, and sent
//! to the client as the client reads: nginx's `proxy_buffering`. The source
//! (a Python thread, an upstream) is never held by a slow client.
//!
//! The source writes through a [`Spooler`] (from any thread, no runtime
//! needed) and the body reads what it kept; no task stands between them.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use super::Body;
use crate::error::{BoxError, Error, Kind};

impl Body {
    /// A body and the [`Spooler`] that feeds it: what is sent through the
    /// spooler is kept (the first `memory` bytes not yet read in memory, the
    /// rest in a temporary file, unnamed and gone with the body) until the
    /// client reads it, so the sender never waits for the client. The body
    /// ends when the spooler is finished or dropped.
    pub fn spooled(memory: usize) -> (Spooler, Self) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                in_memory: 0,
                file: None,
                written: 0,
                ended: false,
                reader_gone: false,
            }),
            reader: AtomicWaker::new(),
        });
        let reader = Reader {
            shared: shared.clone(),
            reading: None,
        };
        (Spooler { shared, memory }, Self::new(reader))
    }

    /// This body, read from its source by a task of its own as fast as the
    /// source gives it, and kept as [`spooled`](Self::spooled) keeps it until
    /// the client reads. Errors and trailers keep their place. When the
    /// client goes away, the source is dropped once it gives its next frame.
    /// Needs a tokio runtime.
    pub fn spool(mut self, memory: usize) -> Self {
        let (spooler, body) = Self::spooled(memory);
        let spooler = Arc::new(spooler);
        tokio::spawn(async move {
            if let Err(e) = drain(&mut self, &spooler).await {
                spooler.fail_with(e);
            }
        });
        body
    }

    /// This body read whole, kept as [`spooled`](Self::spooled) keeps it,
    /// and given back with its exact size: nginx's `proxy_request_buffering`,
    /// so that what it goes to never waits for a slow sender. Fails as the
    /// body fails (the client went away or stalled, or passed a size limit).
    pub async fn buffer(mut self, memory: usize) -> Result<Self, Error> {
        let (spooler, body) = Self::spooled(memory);
        let spooler = Arc::new(spooler);
        let len = drain(&mut self, &spooler).await?;
        spooler.finish();
        Ok(body.exact_size(len))
    }
}

/// The sending side of a [spooled](Body::spooled) body.
pub struct Spooler {
    shared: Arc<Shared>,
    memory: usize,
}

impl Spooler {
    /// Keeps `data` for the client; never waits for it. Past the memory
    /// bound this writes to the file, so call it where blocking is allowed
    /// (see [`spills`](Self::spills)). Fails once the client has gone
    /// ([`Error::is_body`]), and when the file cannot be written (the body
    /// then ends in that error).
    pub fn send(&self, data: Bytes) -> crate::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let (file, at) = {
            let mut state = self.shared.state();
            if state.reader_gone {
                return Err(Error::new(Kind::Body).with("the body's reader is gone"));
            }
            if state.file.is_none() && state.in_memory + data.len() <= self.memory {
                state.in_memory += data.len();
                drop(state);
                self.keep(Kept::Memory(data));
                return Ok(());
            }
            let at = state.written;
            state.written += data.len() as u64;
            (state.file.clone(), at)
        };
        let written = file
            .map_or_else(|| self.make_file(), Ok)
            .and_then(|file| file.write_all_at(&data, at));
        match written {
            Ok(()) => self.keep(Kept::File {
                at,
                len: data.len(),
            }),
            Err(e) => {
                let why = e.to_string();
                self.fail(e);
                return Err(Error::new(Kind::Body).with(why));
            }
        }
        Ok(())
    }

    /// Whether sending `len` more bytes now would write to the file.
    pub fn spills(&self, len: usize) -> bool {
        let state = self.shared.state();
        state.file.is_some() || state.in_memory + len > self.memory
    }

    /// Ends the body with an error (`why`) after what was sent: the client's
    /// response is aborted rather than passing for whole.
    pub fn fail(&self, why: impl Into<BoxError>) {
        self.fail_with(Error::new(Kind::Body).with(why));
    }

    fn fail_with(&self, error: Error) {
        self.keep(Kept::Failed(error));
        self.finish();
    }

    /// Sends trailers after what was sent.
    pub fn trailers(&self, trailers: HeaderMap) {
        self.keep(Kept::Trailers(trailers));
    }

    /// Ends the body after what was sent (as dropping the spooler does).
    pub fn finish(&self) {
        self.shared.state().ended = true;
        self.shared.reader.wake();
    }

    fn keep(&self, kept: Kept) {
        let mut state = self.shared.state();
        if !state.ended {
            state.frames.push_back(kept);
        }
        drop(state);
        self.shared.reader.wake();
    }

    fn make_file(&self) -> io::Result<Arc<File>> {
        let file = Arc::new(tempfile::tempfile()?);
        self.shared.state().file = Some(file.clone());
        Ok(file)
    }
}

impl Drop for Spooler {
    fn drop(&mut self) {
        self.finish();
    }
}

impl fmt::Debug for Spooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spooler")
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

/// Sends the source's frames to `spooler` as they come, until the source
/// ends (its length) or fails (its error), or the reader goes away; a write
/// to the file goes to the blocking pool.
async fn drain(source: &mut Body, spooler: &Arc<Spooler>) -> Result<u64, Error> {
    let mut len = 0;
    while let Some(frame) = source.frame().await {
        let data = match frame?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    spooler.trailers(trailers);
                }
                continue;
            }
        };
        len += data.len() as u64;
        let sent = match spooler.spills(data.len()) {
            false => spooler.send(data),
            true => {
                let spooler = spooler.clone();
                let sent = tokio::task::spawn_blocking(move || spooler.send(data)).await;
                sent.map_err(|e| Error::new(Kind::Body).with(e))
                    .and_then(|sent| sent)
            }
        };
        if sent.is_err() {
            break;
        }
    }
    Ok(len)
}

/// A frame kept until the client reads it.
enum Kept {
    Memory(Bytes),
    /// `len` bytes of the file, from `at`.
    File {
        at: u64,
        len: usize,
    },
    Trailers(HeaderMap),
    Failed(Error),
}

struct State {
    frames: VecDeque<Kept>,
    /// Bytes of `Kept::Memory` frames.
    in_memory: usize,
    file: Option<Arc<File>>,
    /// Bytes written to the file so far.
    written: u64,
    /// Nothing more will be sent.
    ended: bool,
    reader_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    reader: AtomicWaker,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client's side.
struct Reader {
    shared: Arc<Shared>,
    /// A kept frame being read back from the file.
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl http_body::Body for Reader {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(reading) = &mut this.reading {
                let read = ready!(Pin::new(reading).poll(cx));
                this.reading = None;
                let failed = |e: io::Error| Error::new(Kind::Body).with(e);
                let data = read
                    .map_err(|e| failed(io::Error::other(e)))?
                    .map_err(failed)?;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))));
            }
            let mut state = this.shared.state();
            let kept = match state.frames.pop_front() {
                Some(kept) => kept,
                None if state.ended => return Poll::Ready(None),
                None => {
                    // Under the lock: a frame kept after this look wakes us.
                    this.shared.reader.register(cx.waker());
                    return Poll::Pending;
                }
            };
            return Poll::Ready(Some(match kept {
                Kept::Memory(data) => {
                    state.in_memory -= data.len();
                    Ok(Frame::data(data))
                }
                Kept::Trailers(trailers) => Ok(Frame::trailers(trailers)),
                Kept::Failed(e) => Err(e),
                Kept::File { at, len } => {
                    let Some(file) = state.file.clone() else {
                        let gone = io::Error::other("the spool file is gone");
                        return Poll::Ready(Some(Err(Error::new(Kind::Body).with(gone))));
                    };
                    drop(state);
                    this.reading = Some(tokio::task::spawn_blocking(move || {
                        let mut data = vec![0; len];
                        file.read_exact_at(&mut data, at).map(|()| data)
                    }));
                    continue;
                }
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.shared.state();
        self.reading.is_none() && state.ended && state.frames.is_empty()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.state().reader_gone = true;
    }
}
