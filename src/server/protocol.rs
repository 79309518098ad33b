//! Which HTTP a connection speaks, and hyper's connection for it.
//!
//! hyper-util's `auto` connection tells HTTP/1 from HTTP/2 by reading the
//! client's first bytes, and holds either protocol's state inline, so every
//! HTTP/1 connection carries room for HTTP/2's (1.6 KB against 0.7). Here a
//! plain connection's first bytes are looked at where they lie in the socket
//! (`MSG_PEEK`), not read, and HTTP/2's state is boxed: the HTTP/1
//! connections most clients open, idle or not, are as large as HTTP/1 needs.
//! A TLS connection says which by ALPN (RFC 9113, section 3.2: HTTP/2 over
//! TLS is negotiated, never assumed).
//!
//! ```text
//! plain:  "GET / HTTP/1.1…"            → HTTP/1 (told at the first byte)
//!         "PRI * HTTP/2.0\r\n\r\nSM…"   → HTTP/2 (all 24 bytes of the preface)
//!         "PR" and a pause              → wait for more, as hyper-util does
//! TLS:    ALPN "h2" → HTTP/2; "http/1.1" or none → HTTP/1
//! uwsgi:  HTTP/1, one request, no upgrade
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio_util::either::Either;

use super::connection::Tracked;
use super::request::ServerBody;
use super::shared::Shared;
use super::stream::StreamExecutor;

/// What HTTP is read from and written to: the socket, or TLS over it.
pub(super) type HttpIo = Either<Tracked, Box<tokio_rustls::server::TlsStream<Tracked>>>;

/// HTTP/2's connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What hyper calls for each request of a connection.
pub(super) trait Service:
    HttpService<Incoming, ResBody = ServerBody, Error = Infallible, Future: Send + 'static> + Unpin
{
}

impl<S> Service for S where
    S: HttpService<Incoming, ResBody = ServerBody, Error = Infallible, Future: Send + 'static>
        + Unpin
{
}

/// hyper's connection for the HTTP the client speaks; a future that ends
/// when the connection does (or hands its socket to an upgrade).
pub(super) enum Http<'a, S: HttpService<Incoming>> {
    /// A plain connection whose first bytes have not told yet: `seen` of
    /// them are here, all HTTP/2's preface so far.
    Peeking {
        tracked: Tracked,
        service: S,
        shared: &'a Shared,
        seen: usize,
    },
    Http1(http1::UpgradeableConnection<TokioIo<HttpIo>, S>),
    /// A uwsgi request's: HTTP/1, the one request its packet carries.
    Uwsgi(http1::Connection<TokioIo<HttpIo>, S>),
    /// Boxed: most connections are HTTP/1, and hold no room for it.
    Http2(Pin<Box<http2::Connection<TokioIo<HttpIo>, S, StreamExecutor>>>),
    /// Closed before it said which: shut down, or the socket failed.
    Closed,
}

impl<'a, S: Service> Http<'a, S> {
    /// A connection of a uwsgi listener (`uwsgi`) or an HTTP one.
    pub(super) fn new(io: HttpIo, service: S, shared: &'a Shared, uwsgi: bool) -> Self {
        match io {
            io if uwsgi => Self::Uwsgi(shared.uwsgi.serve_connection(TokioIo::new(io), service)),
            Either::Left(tracked) => Self::Peeking {
                tracked,
                service,
                shared,
                seen: 0,
            },
            Either::Right(tls) => {
                let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                Self::serve(Either::Right(tls), service, shared, http2)
            }
        }
    }

    fn serve(io: HttpIo, service: S, shared: &Shared, http2: bool) -> Self {
        let io = TokioIo::new(io);
        match http2 {
            true => Self::Http2(Box::pin(shared.http2.serve_connection(io, service))),
            false => Self::Http1(shared.http1.serve_connection(io, service).with_upgrades()),
        }
    }

    /// Finishes what is in flight, then closes; one that has not said which
    /// HTTP it speaks closes now. A uwsgi connection carries one request,
    /// read already: it closes once answered.
    pub(super) fn graceful_shutdown(&mut self) {
        match self {
            Self::Peeking { .. } => *self = Self::Closed,
            Self::Http1(conn) => Pin::new(conn).graceful_shutdown(),
            Self::Http2(conn) => conn.as_mut().graceful_shutdown(),
            Self::Uwsgi(_) | Self::Closed => {}
        }
    }
}

impl<S: Service> Future for Http<'_, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let served = match this {
                Self::Peeking { tracked, seen, .. } => {
                    let mut first = [0; PREFACE.len()];
                    let Ok(n) = ready!(tracked.poll_peek(cx, &mut first, *seen)) else {
                        *this = Self::Closed;
                        continue;
                    };
                    match speaks_http2(&first[..n]) {
                        None => *seen = n,
                        Some(http2) => {
                            let Self::Peeking {
                                tracked,
                                service,
                                shared,
                                ..
                            } = std::mem::replace(this, Self::Closed)
                            else {
                                unreachable!("peeking")
                            };
                            *this = Self::serve(Either::Left(tracked), service, shared, http2);
                        }
                    }
                    continue;
                }
                Self::Http1(conn) => Pin::new(conn).poll(cx),
                Self::Uwsgi(conn) => Pin::new(conn).poll(cx),
                Self::Http2(conn) => conn.as_mut().poll(cx),
                Self::Closed => return Poll::Ready(()),
            };
            // hyper's errors are the client's (a bad request, a reset): hyper
            // has answered what it could, and the connection is over either way.
            return served.map(drop);
        }
    }
}

/// Whether a connection's first bytes are HTTP/2's preface: yes once all 24
/// are, no as soon as one is not (or the client closed with none sent);
/// `None` while those here are its start.
fn speaks_http2(first: &[u8]) -> Option<bool> {
    match first {
        [] => Some(false),
        _ if first.len() >= PREFACE.len() => Some(first[..PREFACE.len()] == PREFACE[..]),
        _ => (!PREFACE.starts_with(first)).then_some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::speaks_http2;

    #[test]
    fn the_first_bytes_tell_http2_from_http1() {
        assert_eq!(speaks_http2(b"GET / HTTP/1.1\r\n"), Some(false));
        // WebDAV's PROPFIND parts from the preface at its third byte.
        assert_eq!(speaks_http2(b"PROPFIND / HTTP/1.1"), Some(false));
        assert_eq!(
            speaks_http2(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(true)
        );
        assert_eq!(
            speaks_http2(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"),
            Some(true)
        );
        // A preface wrong at its last byte is HTTP/1's to refuse.
        assert_eq!(
            speaks_http2(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r"),
            Some(false)
        );
        for start in [&b"P"[..], b"PR", b"PRI * HTTP/2.0\r\n"] {
            assert_eq!(speaks_http2(start), None, "{start:?}");
        }
        // Closed before a byte: nothing to serve, HTTP/1's to close.
        assert_eq!(speaks_http2(b""), Some(false));
    }
}
