//! One connection: hyper's driver, the clocks that close it when it stalls,
//! shutdown, and the socket that lingers when it closes.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future;
use hyper::service::service_fn;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::either::Either;

use super::clock::{Activity, Expired, Socket, Watched};
use super::listener::Io;
use super::protocol::{Http, HttpIo, Service};
use super::proxy_protocol;
use super::request::{handle, handle_packet};
use super::sendfile::Write;
use super::shared::{Door, Lifecycle, Phase, Shared};
use super::tls::ClientCert;
use super::uwsgi;
use crate::{App, Connection, Forwarded};

/// Serves an HTTP connection until it closes. An `async` block rather than
/// an `async fn`, which would keep a second copy of its arguments in the
/// state every connection carries.
#[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
pub(super) fn serve_connection<A: App>(
    io: Io,
    peer: Option<SocketAddr>,
    door: Arc<Door>,
    shared: Arc<Shared>,
    app: Arc<A>,
) -> impl Future<Output = ()> {
    async move {
        let plain = door.tls.is_none() && !door.proxy_protocol;
        let activity = Arc::new(Activity::new(door.tls.is_none(), !plain));
        let watched = shared.clocks.watch(&activity);
        // A block, so that what opening the connection leaves is gone from the
        // connection's state while it is served.
        let served = {
            let tracked = Tracked::new(io, &activity, false);
            // The PROXY protocol header and the TLS handshake, within the
            // handshake timeout: a client that connects and says nothing is not
            // kept.
            let (io, remote_addr) = if plain {
                (Either::Left(tracked), peer)
            } else {
                // Boxed: its state (rustls' handshake) is larger than a connection's,
                // and held inline it would make every plain connection as large.
                let opened = tokio::select! {
                    biased;
                    opened = Box::pin(open(tracked, peer, &door)) => Some(opened),
                    _ = activity.expired() => None,
                };
                (shared.lifecycle.stats).handshake(matches!(opened, Some(Ok(_))));
                match opened {
                    Some(Ok(opened)) => {
                        activity.opened();
                        opened
                    }
                    Some(Err(e)) => return closed_unopened(&e, peer, door.proxy_protocol),
                    None => return,
                }
            };
            // The certificate a mutual-TLS client showed, verified in the handshake.
            let client_cert = match &io {
                Either::Right(tls) => (tls.get_ref().1.peer_certificates())
                    .and_then(|chain| chain.first())
                    .and_then(|cert| ClientCert::from_der(cert)),
                Either::Left(_) => None,
            };
            let requests = Box::new(Requests {
                app,
                shared: shared.clone(),
                activity: activity.clone(),
                info: Connection {
                    remote_addr,
                    local_addr: door.local_addr,
                    scheme: door.scheme.clone(),
                    listener: door.listener,
                },
                uwsgi: None,
                client_cert,
            });
            let conn = hyper_connection(io, requests, &shared, false);
            serve_http(conn, watched, &door, (&shared, &activity), peer)
        };
        served.await;
    }
}

/// Serves a uwsgi connection: the one request its packet carries, answered,
/// then the connection closed. A request without a body (most are) is
/// answered without hyper, as uWSGI does; one with a body goes to hyper, which
/// reads it from the packet made into a head. Apart from [`serve_connection`]
/// so that this, the common case, is a future and a poll of its own, not a
/// branch of the one that drives HTTP and TLS connections.
#[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
pub(super) fn serve_uwsgi<A: App>(
    io: Io,
    peer: Option<SocketAddr>,
    door: Arc<Door>,
    shared: Arc<Shared>,
    app: Arc<A>,
) -> impl Future<Output = ()> {
    async move {
        let activity = Arc::new(Activity::new(true, true));
        let watched = shared.clocks.watch(&activity);
        // A block, so that what opening the connection leaves is gone from
        // the connection's state while it is served.
        let served = {
            let tracked = Tracked::new(io, &activity, true);
            // The PROXY protocol header and the packet, within the handshake timeout.
            let opened = tokio::select! {
                biased;
                opened = open_uwsgi(tracked, peer, &door) => opened,
                _ = activity.expired() => return,
            };
            if door.proxy_protocol {
                (shared.lifecycle.stats).handshake(opened.is_ok());
            }
            let (tracked, opened) = match opened {
                Ok(opened) => opened,
                Err(e) => return closed_unopened(&e, peer, true),
            };
            activity.opened();
            serve_packet(
                tracked,
                opened,
                app,
                watched,
                &door,
                (&shared, &activity),
                peer,
            )
        };
        served.await;
    }
}

/// Serves the request a uwsgi packet opened. A plain function: what it takes
/// apart is not carried, beside what it returns, in the connection's state.
fn serve_packet<'a, A: App>(
    tracked: Tracked,
    read: uwsgi::Read,
    app: Arc<A>,
    watched: Watched<'a>,
    door: &'a Door,
    (shared, activity): (&'a Arc<Shared>, &'a Arc<Activity>),
    peer: Option<SocketAddr>,
) -> impl Future<Output = ()> + 'a {
    let small = |len: usize| len <= shared.config.max_header_size;
    let opened = match read {
        uwsgi::Read::Plain(mut packet) if small(packet.vars.len() + 4) => {
            if door.scheme == http::uri::Scheme::HTTPS {
                packet.scheme = http::uri::Scheme::HTTPS;
            }
            let answer = answer_plain(tracked, packet, app, shared, activity, door);
            return future::Either::Left(answering(
                Box::pin(answer),
                watched,
                shared,
                activity,
                peer,
            ));
        }
        uwsgi::Read::Plain(packet) => match uwsgi::reopen(&packet) {
            Ok(opened) => opened,
            Err(refused) => {
                let refused: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
                    closed_unopened(&refuse(tracked, &refused).await, peer, true);
                });
                return future::Either::Right(refused);
            }
        },
        uwsgi::Read::Opened(opened) => opened,
    };
    let info = connection_info(&opened, door);
    if opened.has_body() || !small(opened.packet_len) {
        let served = serve_hyper(
            tracked,
            opened,
            app,
            info,
            watched,
            door,
            (shared, activity),
            peer,
        );
        return future::Either::Right(served);
    }
    // Boxed: held inline, it would be kept twice (the value captured and
    // the place it is pinned), and the connection's future, itself boxed to
    // be polled in the accept loop, past the 1,032 bytes glibc's per-thread
    // cache holds; two allocations from the cache cost less than one past it.
    let answer =
        Box::pin(async move { answer_uwsgi(tracked, opened, app, shared, activity, &info).await });
    future::Either::Left(answering(answer, watched, shared, activity, peer))
}

/// Drives the answer to a uwsgi request read whole: a later phase of the
/// server lets it finish, unless the grace period is over.
#[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
fn answering<'a>(
    mut answer: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    watched: Watched<'a>,
    shared: &'a Arc<Shared>,
    activity: &'a Arc<Activity>,
    peer: Option<SocketAddr>,
) -> impl Future<Output = ()> + 'a {
    async move {
        let _watched = watched;
        let mut seen = Phase::Serving;
        loop {
            tokio::select! {
                biased;
                () = answer.as_mut() => return,
                woken = woken(activity, &shared.lifecycle, seen) => match woken {
                    Woken::Expired(expired) => return send_timed_out(expired, shared, peer),
                    Woken::Phase(Phase::Aborted) => return,
                    Woken::Phase(now) => seen = now,
                },
            }
        }
    }
}

/// What the connection is, as a packet's variables tell it.
fn connection_info(opened: &uwsgi::Opened, door: &Door) -> Connection {
    Connection {
        remote_addr: opened.remote_addr,
        local_addr: door.local_addr,
        scheme: match opened.https {
            true => http::uri::Scheme::HTTPS,
            false => door.scheme.clone(),
        },
        listener: door.listener,
    }
}

/// Serves a uwsgi request with a body through hyper, which reads it.
#[expect(
    clippy::too_many_arguments,
    reason = "the connection's parts, passed on"
)]
fn serve_hyper<'a, A: App>(
    mut tracked: Tracked,
    opened: Box<uwsgi::Opened>,
    app: Arc<A>,
    info: Connection,
    watched: Watched<'a>,
    door: &'a Door,
    (shared, activity): (&'a Arc<Shared>, &'a Arc<Activity>),
    peer: Option<SocketAddr>,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    // Ahead of what is still pending: the bytes a PROXY protocol header came
    // with that the packet's reading left.
    tracked.pending = match tracked.pending.is_empty() {
        true => opened.http1(),
        false => [&opened.http1()[..], &tracked.pending].concat().into(),
    };
    let requests = Box::new(Requests {
        app,
        shared: shared.clone(),
        activity: activity.clone(),
        info,
        uwsgi: Some(Box::new(Front {
            version: opened.head.version,
            forwarded: Cell::new(opened.forwarded),
        })),
        client_cert: None,
    });
    // Boxed: hyper's connection is not carried by every uwsgi request.
    let conn = hyper_connection(Either::Left(tracked), requests, shared, true);
    Box::pin(serve_http(conn, watched, door, (shared, activity), peer))
}

/// Logs why a connection closed before its first request: a PROXY header or
/// a uwsgi packet `refused` (warned of), or a client gone or stalled.
fn closed_unopened(e: &io::Error, peer: Option<SocketAddr>, refused: bool) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    if refused && e.kind() == io::ErrorKind::InvalidData {
        tracing::warn!(peer, "closed the connection: {e}");
    } else {
        tracing::debug!(peer, "closed the connection before its first request: {e}");
    }
}

/// Says why a connection's clock ran out, where the server's log should.
fn send_timed_out(expired: Expired, shared: &Shared, peer: Option<SocketAddr>) {
    if expired == Expired::Send {
        let timeout = shared.config.send_timeout;
        tracing::warn!(
            ?peer,
            ?timeout,
            "closed the connection: the client read no byte of a response for the send timeout"
        );
    }
}

/// hyper's connection for `io`, each request answered by `requests`'s app.
/// `requests` is boxed: hyper keeps the service that holds it in the
/// connection's state, idle or not.
fn hyper_connection<'a, A: App>(
    io: HttpIo,
    requests: Box<Requests<A>>,
    shared: &'a Shared,
    uwsgi: bool,
) -> Http<'a, impl Service> {
    let service = service_fn(move |mut req: http::Request<_>| {
        let Requests {
            app,
            shared,
            activity,
            info,
            uwsgi,
            client_cert,
        } = &*requests;
        // A uwsgi request: the version its front was asked in, and its mount.
        if let Some(uwsgi) = uwsgi {
            *req.version_mut() = uwsgi.version;
            if let Some(forwarded) = uwsgi.forwarded.take() {
                req.extensions_mut().insert(forwarded);
            }
        }
        if let Some(cert) = client_cert {
            req.extensions_mut().insert(cert.clone());
        }
        handle(app.clone(), shared, activity, info, req)
    });
    Http::new(io, service, shared, uwsgi)
}

/// Serves a connection's HTTP with hyper until it closes, then an upgraded
/// connection until its task lets it go. hyper's connection is polled where
/// it lies in this future's state (it is `Unpin`), not moved into a place of
/// its own: most of what an idle connection holds is that connection.
#[expect(clippy::manual_async_fn, reason = "an async fn copies its arguments")]
fn serve_http<'a>(
    mut conn: Http<'a, impl Service + 'a>,
    watched: Watched<'a>,
    door: &'a Door,
    (shared, activity): (&'a Shared, &'a Activity),
    peer: Option<SocketAddr>,
) -> impl Future<Output = ()> + 'a {
    async move {
        // hyper holds the socket until the connection ends, or until it hands it
        // to whoever takes an upgrade (a WebSocket's task).
        'served: {
            let mut seen = Phase::Serving;
            // Boxed when armed (at shutdown only), not carried by every connection.
            let mut first_request: Option<Pin<Box<tokio::time::Sleep>>> = None;
            loop {
                // Whether to close the connection once what is in flight is answered.
                // The connection first, then its clocks: polled in this order
                // each time, not in a random one (tokio's default, for fairness
                // between futures that could each starve the others).
                let shut = tokio::select! {
                    biased;
                    () = &mut conn => break 'served,
                    woken = woken(activity, &shared.lifecycle, seen) => match woken {
                        // An idle or stalled connection is dropped: it has no response to finish.
                        Woken::Expired(expired) => {
                            send_timed_out(expired, shared, peer);
                            break 'served;
                        }
                        Woken::Phase(now) => {
                            seen = now;
                            if seen == Phase::Aborted {
                                break 'served; // the grace period is over
                            }
                            // Draining: HTTP/2 says GOAWAY (the client opens a new connection
                            // for what it sends next); HTTP/1.1 responses say `Connection:
                            // close` (request.rs) rather than closing a connection the client
                            // may be sending on. Stopping: every connection finishes what is
                            // in flight and closes; one accepted a moment ago first gets
                            // its request, which the client has surely sent.
                            // A uwsgi connection carries the one request it was opened
                            // for, read already: it closes once answered.
                            if door.uwsgi {
                                continue;
                            }
                            if seen == Phase::Stopping && activity.untouched() {
                                first_request = Some(Box::pin(tokio::time::sleep(FIRST_REQUEST)));
                                false
                            } else {
                                seen == Phase::Stopping || activity.http2.load(Ordering::Relaxed)
                            }
                        }
                    },
                    () = async { first_request.as_mut().expect("armed").await }, if first_request.is_some() => {
                        first_request = None;
                        true
                    }
                };
                if shut {
                    // A client caught sending (a request in flight, or begun)
                    // may have pipelined more that is read and not answered:
                    // linger, or closing would reset the connection and lose
                    // answers it has not read. An idle one is closed at once,
                    // as nginx closes its idle keep-alive connections; it was
                    // held for the linger's 5 s.
                    if activity.client_may_be_sending() {
                        activity.closing.store(true, Ordering::Relaxed);
                    }
                    conn.graceful_shutdown();
                }
            }
        }
        // The socket, unless an upgrade took it.
        drop(conn);
        // An upgraded connection keeps a clock of its own (`upgraded`).
        drop(watched);
        if activity.socket.is_open() {
            // Boxed: its state would stand beside hyper's connection's in
            // every connection's, though few are upgraded.
            Box::pin(upgraded(&activity.socket, shared, peer)).await;
        }
    }
}

/// What wakes a connection, besides its socket and its app.
enum Woken {
    /// One of its clocks ran out.
    Expired(Expired),
    /// The server entered a later phase.
    Phase(Phase),
}

/// Completes when one of the connection's clocks runs out or the server's
/// phase moves past `seen`; the worker's [`Clocks`](super::clock::Clocks)
/// wake the connection for either.
fn woken<'a>(
    activity: &'a Activity,
    lifecycle: &'a Lifecycle,
    seen: Phase,
) -> impl Future<Output = Woken> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(expired) = activity.poll_expired(cx) {
            return Poll::Ready(Woken::Expired(expired));
        }
        // Read after the waker is registered: a change the clocks announce
        // later wakes this task again.
        let phase = lifecycle.phase();
        if phase > seen {
            Poll::Ready(Woken::Phase(phase))
        } else {
            Poll::Pending
        }
    })
}

/// What each request of a connection is answered with, in one allocation:
/// hyper keeps the service that holds it in the connection's state, idle or
/// not, so inline it would make every connection larger by all of it.
struct Requests<A> {
    app: Arc<A>,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    info: Connection,
    /// Boxed: the packet says much, and most connections have none.
    uwsgi: Option<Box<Front>>,
    client_cert: Option<ClientCert>,
}

/// What a uwsgi packet said of its request beside the head.
struct Front {
    version: http::Version,
    /// Moved into the request: a uwsgi connection carries one.
    forwarded: Cell<Option<Forwarded>>,
}

/// Answers a uwsgi request without a body, without hyper, as uWSGI does: the
/// request made from the packet, the response written to the socket, the
/// connection closed.
///
/// The request is made and passed through the gate before the future is, so
/// that the future holds only the app's call and the writing of its answer.
fn answer_uwsgi<A: App>(
    mut io: Tracked,
    opened: Box<uwsgi::Opened>,
    app: Arc<A>,
    shared: &Shared,
    activity: &Arc<Activity>,
    info: &Connection,
) -> impl Future<Output = ()> + use<A> {
    let head_request = opened.head.method == http::Method::HEAD;
    let mut req = http::Request::from_parts(opened.head, http_body_util::Empty::<Bytes>::new());
    if let Some(forwarded) = opened.forwarded {
        req.extensions_mut().insert(forwarded);
    }
    let handled = handle(app, shared, activity, info, req);
    let peer = info.remote_addr;
    async move {
        let Ok(res) = handled.await;
        respond(&mut io, res, head_request, peer).await;
    }
}

/// Answers a request whose packet the app may take as it is
/// ([`App::call_packet`]); the request made of it where the app gives it back.
async fn answer_plain<A: App>(
    mut io: Tracked,
    packet: Box<crate::environ::Packet>,
    app: Arc<A>,
    shared: &Shared,
    activity: &Arc<Activity>,
    door: &Door,
) {
    let head_request = packet.method == http::Method::HEAD;
    let peer = Some(packet.remote_addr);
    let handled = match handle_packet(&*app, shared, activity, packet) {
        Ok(handled) => handled,
        Err(packet) => {
            return match uwsgi::reopen(&packet) {
                Ok(opened) => {
                    let info = connection_info(&opened, door);
                    answer_uwsgi(io, opened, app.clone(), shared, activity, &info).await;
                }
                Err(refused) => closed_unopened(&refuse(io, &refused).await, peer, true),
            };
        }
    };
    let Ok(res) = handled.await;
    respond(&mut io, res, head_request, peer).await;
}

/// Writes the response to a uwsgi request, and closes the connection.
async fn respond(
    io: &mut Tracked,
    res: http::Response<super::request::ServerBody>,
    head_request: bool,
    peer: Option<SocketAddr>,
) {
    match uwsgi::write_response(io, res, head_request).await {
        Ok(()) => {
            let _ = io.shutdown().await;
        }
        Err(e) => tracing::debug!(?peer, "closed a uwsgi connection mid-response: {e}"),
    }
}

/// An upgraded connection (a WebSocket), its socket in another task's hands:
/// it stays on the server's books (open, inside the connection limit, waited
/// for at shutdown) until that task drops it. It is cut off when it moves no
/// byte either way for the idle timeout, or when a shutdown's grace period
/// is over.
async fn upgraded(socket: &Socket, shared: &Shared, peer: Option<SocketAddr>) {
    let timeout = shared.config.idle_timeout;
    let mut phase = shared.lifecycle.watch();
    tokio::select! {
        idle = socket.idle_for(timeout) => {
            if !idle {
                return;
            }
            tracing::debug!(?peer, ?timeout, "closed an upgraded connection: no byte either way for the idle timeout");
        }
        _ = phase.wait_for(|now| *now == Phase::Aborted) => {}
    }
    socket.cut();
}

/// How long a connection accepted just before the server stops accepting
/// may take to send its first request (whose response then closes it).
const FIRST_REQUEST: Duration = Duration::from_secs(1);

/// Reads what comes before HTTP: the PROXY protocol header, then the TLS
/// handshake; returns the stream HTTP is read from and the client's address.
async fn open(
    mut tracked: Tracked,
    peer: Option<SocketAddr>,
    door: &Door,
) -> io::Result<(HttpIo, Option<SocketAddr>)> {
    let remote_addr = proxied(&mut tracked, peer, door).await?;
    let io = match &door.tls {
        None => Either::Left(tracked),
        // Boxed: rustls' state is large, and held inline it would make every
        // plain connection as large as a TLS one.
        Some(tls) => Either::Right(Box::new(tls.acceptor.accept(tracked).await?)),
    };
    Ok((io, remote_addr))
}

/// Reads what comes before a uwsgi request's head: the PROXY protocol
/// header, then the packet, whose client is the request's (the front's
/// REMOTE_ADDR). A packet refused is answered (400, 501).
async fn open_uwsgi(
    mut tracked: Tracked,
    peer: Option<SocketAddr>,
    door: &Door,
) -> io::Result<(Tracked, uwsgi::Read)> {
    // Boxed, as the refusal below: the rare cases' state is not carried by
    // every request.
    let remote_addr = match door.proxy_protocol {
        true => Box::pin(proxied(&mut tracked, peer, door)).await?,
        false => peer,
    };
    let refused = match uwsgi::read_packet(&mut tracked, door.packets).await? {
        Ok(uwsgi::Read::Opened(mut opened)) => {
            opened.remote_addr = opened.remote_addr.or(remote_addr);
            return Ok((tracked, uwsgi::Read::Opened(opened)));
        }
        // It names its client.
        Ok(plain @ uwsgi::Read::Plain(_)) => return Ok((tracked, plain)),
        Err(refused) => refused,
    };
    Err(Box::pin(refuse(tracked, &refused)).await)
}

/// Answers a packet the server will not serve with why, and closes the
/// connection; the error says so.
async fn refuse(mut tracked: Tracked, refused: &uwsgi::Refused) -> io::Error {
    let _ = tracked.write_all(&refused.response()).await;
    let _ = tracked.shutdown().await;
    let why = format!(
        "refused a uwsgi request ({}): {}",
        refused.status, refused.why
    );
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The client's address: the PROXY protocol header's, where the listener
/// takes one and it names a client, or the peer's.
async fn proxied(
    tracked: &mut Tracked,
    peer: Option<SocketAddr>,
    door: &Door,
) -> io::Result<Option<SocketAddr>> {
    if door.proxy_protocol {
        let (client, rest) = proxy_protocol::read_header(tracked).await?;
        tracked.pending = rest;
        if client.is_some() {
            return Ok(client);
        }
    }
    Ok(peer)
}

/// How long a closing connection keeps reading (and discarding) what the client
/// still sends, so that the kernel does not answer it with a reset that destroys
/// the last response before the client reads it (nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(5);

/// The socket, noting when bytes arrive, and closing it by lingering.
pub(super) struct Tracked {
    io: Io,
    activity: Arc<Activity>,
    /// Set once the write side is shut: the end of the lingering read.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Read before the socket: a uwsgi request's head, made from its packet.
    pending: Bytes,
    /// The client sends one request and nothing after it (a uwsgi front):
    /// no bytes to look for when it closes.
    one_request: bool,
}

impl Tracked {
    fn new(io: Io, activity: &Arc<Activity>, one_request: bool) -> Self {
        Self {
            io,
            activity: activity.clone(),
            linger: None,
            pending: Bytes::new(),
            one_request,
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let socket = &this.activity.socket;
        if socket.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(cut_off()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
            socket.moved();
        } else if polled.is_pending() {
            socket.reader.register(cx.waker());
        }
        polled
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.socket.dropped();
    }
}

/// What a read or write of a socket cut off by the server gets.
fn cut_off() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the server")
}

impl Tracked {
    /// Looks at the client's first bytes without reading them (hyper reads
    /// them next), those pending first: ready once more than `seen` are here,
    /// or with none when the client has closed. Bytes here start the request
    /// head's clock.
    pub(super) fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        seen: usize,
    ) -> Poll<io::Result<usize>> {
        let pending = self.pending.len().min(buf.len());
        buf[..pending].copy_from_slice(&self.pending[..pending]);
        if pending > seen || pending == buf.len() {
            return Poll::Ready(Ok(pending));
        }
        let peeked = std::task::ready!(self.io.poll_peek(cx, &mut buf[pending..], seen - pending))
            .map(|n| if n == 0 { 0 } else { pending + n });
        if matches!(peeked, Ok(n) if n > 0) {
            self.activity.bytes_read();
        }
        Poll::Ready(peeked)
    }

    /// Notes how a write went: bytes moved, or a wait (to be woken if the
    /// socket is cut off meanwhile).
    fn wrote<T>(&self, cx: &Context<'_>, polled: &Poll<io::Result<T>>) {
        self.activity.write_blocked(polled.is_pending());
        match polled {
            Poll::Pending => self.activity.socket.writer.register(cx.waker()),
            Poll::Ready(Ok(_)) => self.activity.socket.moved(),
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.socket.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(cut_off()));
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, &polled);
        polled
    }

    /// Writes what hyper queued, sending the file bytes a stand-in stands
    /// for in its place (sendfile.rs).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.activity.socket.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(cut_off()));
        }
        let write = match &this.activity.stand_ins {
            None => Write::Bytes(bufs.len()),
            Some(stand_ins) => stand_ins.next(bufs)?,
        };
        let polled = match &write {
            Write::Bytes(n) => Pin::new(&mut this.io).poll_write_vectored(cx, &bufs[..*n]),
            Write::File(file) => this.io.poll_sendfile(cx, file),
        };
        if let (Write::File(file), Poll::Ready(Ok(sent)), Some(stand_ins)) =
            (&write, &polled, &this.activity.stand_ins)
        {
            stand_ins.sent(file, *sent);
        }
        this.wrote(cx, &polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// If the client may still be sending, sends FIN and reads until it
    /// closes too (or `LINGER` passes). If not, there is nothing to do:
    /// closing the socket, which follows, sends the FIN (no `shutdown` call
    /// for every connection that closes). An upgraded connection's shutdown
    /// is its owner's half-close (a proxied WebSocket whose upstream ended,
    /// the other way still open): the FIN goes at once, and what the client
    /// sends after is its owner's to read.
    ///
    /// ```text
    /// client: GET /a, GET /b, POST /big (body still arriving) ...
    /// server: 200 /a, then closes (shutdown, 413, Connection: close)
    /// close() with unread bytes → RST → the client's kernel drops 200 /a unread
    /// ```
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.upgraded.load(Ordering::Relaxed) {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            // Bytes already waiting (pipelined requests, the rest of a body) say
            // the client is still sending, whatever the bookkeeping says.
            let unread = !this.one_request && this.io.poll_unread(cx);
            if !unread && !this.activity.client_may_be_sending() {
                return Poll::Ready(Ok(()));
            }
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        // Never read back, so never zeroed.
        let mut discard = [MaybeUninit::<u8>::uninit(); 4096];
        loop {
            if this
                .linger
                .as_mut()
                .is_some_and(|end| end.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::uninit(&mut discard);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
