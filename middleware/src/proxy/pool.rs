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

use super::upstream::{Connector, SendError};

pub(crate) type Sending = Pin<Box<dyn Future<Output = Result<Response<Leased>, SendError>> + Send>>;

/// One worker's connections to one upstream.
pub(crate) struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    /// Opens a connection: the upstream's connector, and the URI it dials.
    connector: Connector,
    dial: Uri,
    /// Counts the reaper's rounds; an idle connection notes the round it was
    /// given back in, and is closed two rounds later: idle for between one and
    /// two idle timeouts, as hyper-util's pool closes its own.
    round: AtomicU32,
}

struct Idle {
    sender: SendRequest<Body>,
    round: u32,
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
        let Some(mut sender) = self.checkout().filter(|_| !fresh) else {
            return self.on_new_connection(req);
        };
        let sent = sender.try_send_request(req);
        Box::pin(sent.then(move |sent| match sent {
            Ok(res) => Either::Left(future::ready(Ok(self.leased(sender, res)))),
            Err(mut e) => match e.take_message() {
                Some(req) if e.error().is_canceled() => Either::Right(self.on_new_connection(req)),
                _ => {
                    let e = e.into_error();
                    let e = match closed_under(&e) {
                        true => SendError::Stale(e),
                        false => SendError::Request(e),
                    };
                    Either::Left(future::ready(Err(e)))
                }
            },
        }))
    }

    /// Sends `req` on a new connection. Boxed: it is the rare case, and its
    /// connect and handshake are larger than the rest of the request.
    fn on_new_connection(self: Arc<Self>, req: Request<Body>) -> Sending {
        Box::pin(async move {
            let mut sender = self.connect().await?;
            let res = sender.send_request(req).await.map_err(SendError::Request)?;
            Ok(self.leased(sender, res))
        })
    }

    /// The newest idle connection ready for a request; closed ones are dropped
    /// on the way.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().expect("never held across a panic");
        while let Some(newest) = idle.last() {
            if newest.sender.is_ready() {
                return idle.pop().map(|idle| idle.sender);
            }
            if !newest.sender.is_closed() {
                break;
            }
            idle.pop();
        }
        // The newest still finishes a request body its upstream answered
        // before reading it all: one below it may be ready.
        let ready = idle.iter().rposition(|idle| idle.sender.is_ready())?;
        Some(idle.remove(ready).sender)
    }

    /// A new connection, its task spawned on this runtime.
    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let stream =
            (self.connector.clone().call(self.dial.clone()).await).map_err(SendError::Connect)?;
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
        res.map(|incoming| Leased { incoming, lease })
    }

    fn give_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("never held across a panic");
        if idle.len() < self.max_idle {
            let round = self.round.load(Ordering::Relaxed);
            idle.push(Idle { sender, round });
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
/// those their upstream closed; ends with the pool.
async fn reap(pool: Weak<Pool>, idle_timeout: Duration) {
    let mut rounds = tokio::time::interval(idle_timeout);
    rounds.tick().await;
    loop {
        rounds.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let round = pool.round.fetch_add(1, Ordering::Relaxed) + 1;
        let mut idle = pool.idle.lock().expect("never held across a panic");
        idle.retain(|idle| !idle.sender.is_closed() && round.wrapping_sub(idle.round) < 2);
    }
}

/// A pooled connection lent to one request.
struct Lease {
    sender: SendRequest<Body>,
    pool: Arc<Pool>,
}

/// An upstream's response body. One from this pool gives its connection
/// back once read to its end; dropped before that, the connection closes
/// (hyper cannot reuse a connection with a response half read).
pub(crate) struct Leased {
    incoming: Incoming,
    lease: Option<Lease>,
}

impl Leased {
    /// A body with no connection to give back: hyper-util's client does that.
    pub(crate) fn unpooled(incoming: Incoming) -> Self {
        Self {
            incoming,
            lease: None,
        }
    }

    fn give_back(&mut self) {
        if let Some(Lease { sender, pool }) = self.lease.take() {
            pool.give_back(sender);
        }
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if self.incoming.is_end_stream() {
            self.give_back();
        }
    }
}

impl http_body::Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.incoming).poll_frame(cx);
        // The end seen (or known from the length): the connection can carry
        // the next request while this one's answer is still on its way out.
        if matches!(polled, Poll::Ready(None)) || this.incoming.is_end_stream() {
            this.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
