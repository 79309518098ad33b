//! The connections to a plain HTTP/1.1 upstream that one worker thread keeps:
//! hyper's client connections, each driven by a task on the worker's runtime,
//! taken newest first and given back when their response has been read to
//! its end, as each nginx worker keeps its `keepalive` connections.
//!
//! hyper-util's pooled client does the same for every other upstream (TLS,
//! HTTP/2, uwsgi and FastCGI), at a price a plain HTTP/1.1 request need not
//! pay: its pool is a map hashed with SipHash on every checkout and return,
//! and each response spawns a task that waits to give its connection back.
//! Here the response's body gives it back itself (see [`Leased`]).
//!
//! A request without a body needs no task at all: it is written and its
//! answer read in its own task, on connections of this pool that hyper does
//! not drive ([`h1`](super::h1)).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{self, Either};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use stackway::Body;
use tower_service::Service;

use super::h1;
use super::upstream::{Connector, SendError, Stream};

pub(crate) type Sending = Pin<Box<dyn Future<Output = Result<Response<Leased>, SendError>> + Send>>;

/// One worker's connections to one upstream.
pub(crate) struct Pool {
    idle: Mutex<Idle>,
    max_idle: usize,
    /// Opens a connection: the upstream's connector, and the URI it dials.
    connector: Connector,
    dial: Uri,
    /// Counts the reaper's rounds; an idle connection notes the round it was
    /// given back in, and is closed two rounds later: idle for between one and
    /// two idle timeouts, as hyper-util's pool closes its own.
    round: AtomicU32,
}

/// The idle connections, each with the round it was given back in: hyper's,
/// and those a request reads itself. At most `max_idle` of both.
#[derive(Default)]
struct Idle {
    hyper: Vec<(SendRequest<Body>, u32)>,
    bare: Vec<(h1::Conn, u32)>,
}

impl Idle {
    fn len(&self) -> usize {
        self.hyper.len() + self.bare.len()
    }
}

impl Pool {
    /// A pool for this thread, which closes connections idle for
    /// `idle_timeout` and keeps at most `max_idle`. Must be made on a runtime.
    pub(crate) fn new(
        connector: Connector,
        dial: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            idle: Mutex::default(),
            max_idle,
            connector,
            dial,
            round: AtomicU32::new(0),
        });
        tokio::spawn(reap(Arc::downgrade(&pool), idle_timeout));
        pool
    }

    /// Sends `req` (its URI in origin form, its `Host` set) on an idle
    /// connection, or on a new one. A request that a pooled connection could
    /// not take (it closed as the request was sent: the upstream's keep-alive
    /// ran out) goes once more, on a new connection.
    ///
    /// Boxed, as hyper-util's client boxes its own: held inline, it would
    /// take the proxy's future, which a mount boxes, past the 1,032 bytes
    /// glibc's per-thread cache holds. Made of combinators, not an `async`
    /// block, which would keep room for the request beside hyper's future
    /// that took it.
    ///
    /// One that went out on a pooled connection and found it closed before
    /// any answer fails as [`SendError::Stale`], for the caller to make again
    /// where it may (`fresh`: on a new connection).
    pub(crate) fn send(self: Arc<Self>, req: Request<Body>, fresh: bool) -> Sending {
        if h1::takes(&req) {
            return h1::send(self, req, fresh);
        }
        let Some(mut sender) = self.checkout().filter(|_| !fresh) else {
            return self.on_new_connection(req, fresh);
        };
        let sent = sender.try_send_request(req);
        Box::pin(sent.then(move |sent| match sent {
            Ok(res) => Either::Left(future::ready(Ok(self.leased(sender, res)))),
            Err(mut e) => match e.take_message() {
                Some(req) if e.error().is_canceled() => {
                    Either::Right(self.on_new_connection(req, true))
                }
                _ => {
                    let e = e.into_error();
                    let e = match closed_under(&e) {
                        true => SendError::Stale(Box::new(e)),
                        false => SendError::Request(e),
                    };
                    Either::Left(future::ready(Err(e)))
                }
            },
        }))
    }

    /// Sends `req` on a connection new to hyper: an idle one a request read
    /// itself (unless `fresh`), as nginx takes any kept connection for any
    /// request, or a new one. Boxed: it is the rare case, and its connect and
    /// handshake are larger than the rest of the request.
    fn on_new_connection(self: Arc<Self>, req: Request<Body>, fresh: bool) -> Sending {
        Box::pin(async move {
            let kept = (!fresh).then(|| self.take_bare()).flatten();
            let reused = kept.is_some();
            let stream = match kept {
                Some(conn) => conn.into_stream(),
                None => self.open().await?,
            };
            let mut sender = self.handshake(stream).await?;
            match sender.send_request(req).await {
                Ok(res) => Ok(self.leased(sender, res)),
                Err(e) if reused && closed_under(&e) => Err(SendError::Stale(Box::new(e))),
                Err(e) => Err(SendError::Request(e)),
            }
        })
    }

    /// The newest idle connection ready for a request; closed ones are dropped
    /// on the way.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let idle = &mut self.idle.lock().expect("never held across a panic").hyper;
        while let Some((newest, _)) = idle.last() {
            if newest.is_ready() {
                return idle.pop().map(|(sender, _)| sender);
            }
            if !newest.is_closed() {
                break;
            }
            idle.pop();
        }
        // The newest still finishes a request body its upstream answered
        // before reading it all: one below it may be ready.
        let ready = idle.iter().rposition(|(sender, _)| sender.is_ready())?;
        Some(idle.remove(ready).0)
    }

    /// The newest idle connection a request reads itself; those closed are
    /// dropped on the way.
    pub(crate) fn take_bare(&self) -> Option<h1::Conn> {
        let idle = &mut self.idle.lock().expect("never held across a panic").bare;
        std::iter::from_fn(|| idle.pop()).find_map(|(mut conn, _)| conn.is_idle().then_some(conn))
    }

    pub(crate) fn give_back_bare(&self, mut conn: h1::Conn) {
        conn.rest();
        let mut idle = self.idle.lock().expect("never held across a panic");
        if idle.len() < self.max_idle {
            let round = self.round.load(Ordering::Relaxed);
            idle.bare.push((conn, round));
        }
    }

    /// A new connection to the upstream.
    pub(crate) async fn open(&self) -> Result<Stream, SendError> {
        (self.connector.clone().call(self.dial.clone()).await).map_err(SendError::Connect)
    }

    /// hyper's connection on `stream`, its task spawned on this runtime.
    async fn handshake(&self, stream: Stream) -> Result<SendRequest<Body>, SendError> {
        let (sender, conn) = http1::handshake(stream)
            .await
            .map_err(|e| SendError::Connect(io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("an upstream connection closed: {e}");
            }
        });
        Ok(sender)
    }

    /// `res`, whose body gives `sender` back once read to its end; a
    /// connection that switched protocols is not given back.
    fn leased(
        self: Arc<Self>,
        sender: SendRequest<Body>,
        res: Response<Incoming>,
    ) -> Response<Leased> {
        let lease = (res.status() != StatusCode::SWITCHING_PROTOCOLS)
            .then_some(Lease { sender, pool: self });
        res.map(|incoming| Leased::Hyper { incoming, lease })
    }

    fn give_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("never held across a panic");
        if idle.len() < self.max_idle {
            let round = self.round.load(Ordering::Relaxed);
            idle.hyper.push((sender, round));
        }
    }
}

/// Whether a request's connection closed under it before any answer: the
/// upstream's end of an idle connection, met as the request went out.
pub(crate) fn closed_under(e: &hyper::Error) -> bool {
    let reset = || {
        let io = std::error::Error::source(e).and_then(|e| e.downcast_ref::<io::Error>());
        io.is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            )
        })
    };
    e.is_incomplete_message() || e.is_canceled() || reset()
}

/// Each idle timeout, closes the connections idle since two rounds ago, and
/// those their upstream closed; ends with the pool. The connections no task
/// drives are looked at every second besides, so that one its upstream
/// closed is not counted open for long.
async fn reap(pool: Weak<Pool>, idle_timeout: Duration) {
    let tick = idle_timeout.min(Duration::from_secs(1));
    let ticks_a_round = u32::try_from(idle_timeout.as_millis() / tick.as_millis().max(1))
        .unwrap_or(u32::MAX)
        .max(1);
    let mut ticks = tokio::time::interval(tick);
    ticks.tick().await;
    for n in 1u32.. {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle.lock().expect("never held across a panic");
        idle.bare.retain_mut(|(conn, _)| conn.is_idle());
        if n % ticks_a_round == 0 {
            let round = pool.round.fetch_add(1, Ordering::Relaxed) + 1;
            let recent = |given_back: u32| round.wrapping_sub(given_back) < 2;
            (idle.hyper).retain(|(sender, given_back)| !sender.is_closed() && recent(*given_back));
            idle.bare.retain(|(_, given_back)| recent(*given_back));
        }
    }
}

/// A pooled connection lent to one request.
pub(crate) struct Lease {
    sender: SendRequest<Body>,
    pool: Arc<Pool>,
}

/// An upstream's response body. One from this pool gives its connection
/// back once read to its end; dropped before that, the connection closes
/// (no connection is reused with a response half read).
pub(crate) enum Leased {
    Hyper {
        incoming: Incoming,
        lease: Option<Lease>,
    },
    /// Read by the request itself ([`h1`]).
    Bare(h1::Answer),
}

/// Why an upstream's response body stopped short.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Leased {
    /// A body with no connection to give back: hyper-util's client does that.
    pub(crate) fn unpooled(incoming: Incoming) -> Self {
        Self::Hyper {
            incoming,
            lease: None,
        }
    }

    fn give_back(lease: &mut Option<Lease>) {
        if let Some(Lease { sender, pool }) = lease.take() {
            pool.give_back(sender);
        }
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if let Self::Hyper { incoming, lease } = self {
            if incoming.is_end_stream() {
                Self::give_back(lease);
            }
        }
    }
}

impl http_body::Body for Leased {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Hyper { incoming, lease } => {
                let polled = Pin::new(&mut *incoming).poll_frame(cx);
                // The end seen (or known from the length): the connection can carry
                // the next request while this one's answer is still on its way out.
                if matches!(polled, Poll::Ready(None)) || incoming.is_end_stream() {
                    Self::give_back(lease);
                }
                polled.map(|frame| frame.map(|frame| frame.map_err(Into::into)))
            }
            Self::Bare(answer) => Pin::new(answer)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper { incoming, .. } => incoming.is_end_stream(),
            Self::Bare(answer) => answer.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Hyper { incoming, .. } => incoming.size_hint(),
            Self::Bare(answer) => answer.size_hint(),
        }
    }
}
