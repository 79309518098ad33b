//! A body taken from its source as fast as the source makes it, kept in
//! memory up to a bound and in an unnamed temporary file past it, and sent
//! to the client as the client reads: nginx's `proxy_buffering`. The source
//! (a Python thread, an upstream) is never held by a slow client.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::stream;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::Notify;

use super::Body;
use crate::error::{Error, Kind};

impl Body {
    /// This body, read from its source by a task of its own as fast as the
    /// source gives it: the first `memory` bytes not yet sent are kept in
    /// memory, the rest in a temporary file (unnamed, gone with the body),
    /// and the client gets them as it reads. Errors and trailers keep their
    /// place. When the client goes away, the source is dropped once it gives
    /// its next frame. Needs a tokio runtime.
    pub fn spool(self, memory: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                in_memory: 0,
                file: None,
                written: 0,
                ended: false,
                reader_gone: false,
            }),
            more: Notify::new(),
        });
        tokio::spawn(fill(self, shared.clone(), memory));
        let reader = Reader(shared);
        Self::new(http_body_util::StreamBody::new(stream::unfold(
            reader,
            |reader| async move {
                let frame = reader.next().await?;
                Some((frame, reader))
            },
        )))
    }
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
    /// The source has ended.
    ended: bool,
    reader_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    /// A frame was kept, or the source ended (one reader, so a permit is
    /// never lost between its look and its wait).
    more: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, kept: Kept) {
        self.state().frames.push_back(kept);
        self.more.notify_one();
    }
}

/// Takes the source's frames as they come, until it ends or the client
/// goes away.
async fn fill(mut source: Body, shared: Arc<Shared>, memory: usize) {
    while let Some(frame) = source.frame().await {
        if shared.state().reader_gone {
            return;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                shared.keep(Kept::Failed(e));
                break;
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    shared.keep(Kept::Trailers(trailers));
                }
                continue;
            }
        };
        let spill = {
            let mut state = shared.state();
            if state.file.is_none() && state.in_memory + data.len() <= memory {
                state.in_memory += data.len();
                None
            } else {
                let at = state.written;
                state.written += data.len() as u64;
                Some((state.file.clone(), at))
            }
        };
        let kept = match spill {
            None => Kept::Memory(data),
            Some((file, at)) => match write(&shared, file, at, data).await {
                Ok(len) => Kept::File { at, len },
                Err(e) => Kept::Failed(Error::new(Kind::Body).with(e)),
            },
        };
        let failed = matches!(kept, Kept::Failed(_));
        shared.keep(kept);
        if failed {
            break;
        }
    }
    shared.state().ended = true;
    shared.more.notify_one();
}

/// Writes `data` at `at` in the file (made on the first write), off the
/// runtime's threads.
async fn write(
    shared: &Shared,
    file: Option<Arc<File>>,
    at: u64,
    data: Bytes,
) -> io::Result<usize> {
    let file = match file {
        Some(file) => file,
        None => {
            let file = Arc::new(tokio::task::spawn_blocking(tempfile::tempfile).await??);
            shared.state().file = Some(file.clone());
            file
        }
    };
    let len = data.len();
    tokio::task::spawn_blocking(move || file.write_all_at(&data, at)).await??;
    Ok(len)
}

/// The client's side.
struct Reader(Arc<Shared>);

impl Reader {
    async fn next(&self) -> Option<Result<Frame<Bytes>, Error>> {
        loop {
            let (kept, file) = {
                let mut state = self.0.state();
                match state.frames.pop_front() {
                    Some(kept) => {
                        if let Kept::Memory(data) = &kept {
                            state.in_memory -= data.len();
                        }
                        (Some(kept), state.file.clone())
                    }
                    None if state.ended => return None,
                    None => (None, None),
                }
            };
            match kept {
                Some(Kept::Memory(data)) => return Some(Ok(Frame::data(data))),
                Some(Kept::Trailers(trailers)) => return Some(Ok(Frame::trailers(trailers))),
                Some(Kept::Failed(e)) => return Some(Err(e)),
                Some(Kept::File { at, len }) => return Some(read(file, at, len).await),
                None => self.0.more.notified().await,
            }
        }
    }
}

async fn read(file: Option<Arc<File>>, at: u64, len: usize) -> Result<Frame<Bytes>, Error> {
    let failed = |e: io::Error| Error::new(Kind::Body).with(e);
    let file = file.ok_or_else(|| failed(io::Error::other("the spool file is gone")))?;
    let data = tokio::task::spawn_blocking(move || {
        let mut data = vec![0; len];
        file.read_exact_at(&mut data, at).map(|()| data)
    })
    .await
    .map_err(|e| failed(io::Error::other(e)))?
    .map_err(failed)?;
    Ok(Frame::data(Bytes::from(data)))
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.state().reader_gone = true;
    }
}
