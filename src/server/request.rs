//! One request: the gate it passes (RFC 9112's Host rule, the body limit),
//! the app's call with panics caught, and the bodies that keep count.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, TRANSFER_ENCODING,
};
use http::{StatusCode, Version};
use http_body::{Frame, SizeHint};

use super::ErrorPages;
use super::clock::{Activity, InFlight};
use super::shared::Shared;
use super::stream::SendClock;
use crate::error::{Error, Kind};
use crate::{App, Body, Connection, IntoResponse, Response};

/// Answers one request: the checks and the request's wrapping happen here,
/// at once, so that the future hyper keeps (in a slot each connection
/// allocates, idle or not) holds only the app's call and what its answer
/// needs, not the request it started from.
pub(super) fn handle<A: App, B: Incoming>(
    app: Arc<A>,
    shared: &Shared,
    activity: &Arc<Activity>,
    info: &Connection,
    req: http::Request<B>,
) -> impl Future<Output = Result<http::Response<ServerBody>, Infallible>> + use<A, B> {
    let answer = Answer::begin(shared, activity, req.version());
    let bodiless = req.method() == http::Method::HEAD;
    let called = gate(shared, activity, info, req);
    let pages = shared.config.error_pages.clone();
    async move {
        let (req, failed) = match called {
            Gate::Answer(res) => return answer.with(*res, None),
            Gate::Call(req, failed) => (req, failed),
        };
        // A panic in `call` itself (an app that routes or checks before it
        // makes its future) is caught as one in the future is.
        let caught = match std::panic::catch_unwind(AssertUnwindSafe(|| app.call(*req))) {
            Ok(called) => AssertUnwindSafe(called).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        let mut res = match caught {
            Ok(res) => res,
            // The panic hook has printed the message; the client gets a 500.
            Err(_panic) => closing(StatusCode::INTERNAL_SERVER_ERROR, pages.as_deref()),
        };
        // Changed in place: a response is moved by `memcpy`.
        match failed.map_or(READ_OK, |failed| failed.load(Ordering::Relaxed)) {
            TOO_LARGE => res = closing(StatusCode::PAYLOAD_TOO_LARGE, pages.as_deref()),
            // The app answered as it chose; the client, stalled, is not kept.
            TIMED_OUT => close(&mut res),
            _ => {}
        }
        answer.framed(res, bodiless, pages.as_deref())
    }
}

/// Answers a uwsgi request without a body from its packet, where the app
/// takes it so ([`App::call_packet`]); `Err` gives it back, for the request
/// made of it to be [`handle`]d. What the request would pass on its way to
/// the app, it passes here: the health check (never a packet's), no gate
/// (`uwsgi::plain` takes only packets it lets through).
pub(super) fn handle_packet<'a, A: App>(
    app: &'a A,
    shared: &Shared,
    activity: &Arc<Activity>,
    packet: Box<crate::environ::Packet>,
) -> Result<
    impl Future<Output = Result<http::Response<ServerBody>, Infallible>> + 'a,
    Box<crate::environ::Packet>,
> {
    if shared.config.health_path.as_deref() == Some(packet.target.path()) {
        return Err(packet);
    }
    let answer = Answer::begin(shared, activity, packet.version);
    let bodiless = packet.method == http::Method::HEAD;
    let pages = shared.config.error_pages.clone();
    let called = match std::panic::catch_unwind(AssertUnwindSafe(|| app.call_packet(packet))) {
        Ok(Ok(called)) => Some(called),
        Ok(Err(packet)) => return Err(packet),
        Err(_panic) => None,
    };
    Ok(async move {
        let caught = match called {
            Some(called) => AssertUnwindSafe(called).catch_unwind().await.ok(),
            None => None,
        };
        let res =
            caught.unwrap_or_else(|| closing(StatusCode::INTERNAL_SERVER_ERROR, pages.as_deref()));
        answer.framed(res, bodiless, pages.as_deref())
    })
}

/// A request's body as the server reads it: hyper's, or none (a uwsgi
/// request without one, answered without hyper).
pub(super) trait Incoming:
    http_body::Body<Data = Bytes, Error: Into<crate::error::BoxError>> + Send + Unpin + 'static
{
}

impl<B> Incoming for B where
    B: http_body::Body<Data = Bytes, Error: Into<crate::error::BoxError>> + Send + Unpin + 'static
{
}

/// What turns the app's response into the server's.
struct Answer {
    in_flight: InFlight,
    /// Draining: an HTTP/1 response closes its connection.
    close: bool,
    /// HTTP/1: on a connection with stand-ins, the socket sends a file
    /// body's bytes itself (sendfile.rs).
    http1: bool,
}

impl Answer {
    /// A request of `version` on its way in.
    fn begin(shared: &Shared, activity: &Arc<Activity>, version: Version) -> Self {
        let http1 = version < Version::HTTP_2;
        if version == Version::HTTP_2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        Self {
            in_flight: InFlight::begin(activity.clone()),
            close: shared.lifecycle.draining() && http1,
            http1,
        }
    }

    /// The app's response, checked: one that cannot be sent is a 500.
    fn framed(
        self,
        mut res: Response,
        bodiless: bool,
        pages: Option<&ErrorPages>,
    ) -> Result<http::Response<ServerBody>, Infallible> {
        let owed = match framed(&res, bodiless) {
            Ok(owed) => owed,
            Err(why) => {
                tracing::error!("the app's response cannot be sent: {why}; answered 500 instead");
                res = closing(StatusCode::INTERNAL_SERVER_ERROR, pages);
                None
            }
        };
        self.with(res, owed)
    }

    /// `owed`: the bytes a streamed body's `Content-Length` says it has.
    fn with(
        self,
        mut res: Response,
        owed: Option<u64>,
    ) -> Result<http::Response<ServerBody>, Infallible> {
        if self.close {
            close(&mut res);
        }
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            (self.in_flight.activity().upgraded).store(true, Ordering::Relaxed);
        }
        // A status without a reason of its own (`999`, an ASGI app's or an
        // upstream's) has an empty one, as nginx writes it: hyper's is `<none>`.
        if res.status().canonical_reason().is_none() {
            (res.extensions_mut())
                .get_or_insert_with(|| hyper::ext::ReasonPhrase::from_static(b""));
        }
        Ok(res.map(|body| ServerBody {
            body,
            // Set on HTTP/2 streams, whose stalls the connection cannot see.
            send_clock: SendClock::current(),
            http1: self.http1,
            in_flight: self.in_flight,
            owed,
            failed: None,
        }))
    }
}

/// What passing the gate leads to.
enum Gate {
    /// The app is called with the request; the flag is set by its body when
    /// reading it fails on the server's side. Boxed: the future keeps room
    /// for what it captured after the app took it, and inline the request
    /// would make the slot hyper gives the future in every connection, idle
    /// or not, larger by all of it.
    Call(Box<crate::Request>, Option<Arc<AtomicU8>>),
    /// The server's own answer: the health check, a refused request. Boxed:
    /// inline, it would make the future hyper keeps for every request (and
    /// every connection's slot for it) larger by a response, moved by `memcpy`.
    Answer(Box<Response>),
}

/// The server's part before the app: the health check, RFC 9112's Host
/// rule, request-target forms and body framing, and the declared body size;
/// then the request as the app gets it.
fn gate<B: Incoming>(
    shared: &Shared,
    activity: &Arc<Activity>,
    info: &Connection,
    mut req: http::Request<B>,
) -> Gate {
    if let Some(path) = &shared.config.health_path {
        if req.uri().path() == path {
            return Gate::Answer(Box::new(health(shared.lifecycle.draining())));
        }
    }
    let refuse = |status, body: &B| {
        if !body.is_end_stream() {
            activity.unread_body.store(true, Ordering::Relaxed);
        }
        Gate::Answer(Box::new(closing(
            status,
            shared.config.error_pages.as_deref(),
        )))
    };

    // RFC 9112 §3.2: a server MUST respond 400 to a request with more than
    // one Host header or an invalid one, and to an HTTP/1.1 request without
    // one; the target's authority (HTTP/2's `:authority`, HTTP/1's absolute
    // form) is the host too, with no userinfo, and an HTTP/2 request's `Host`
    // names the same host and port as its `:authority` (RFC 9113 §8.3.1; nginx
    // refuses any difference), lest a check in front read one and an app
    // behind the other. Two `Authorization` fields are refused as nginx refuses
    // them: one field's credentials (RFC 9110 §11.6.2), for the same reason.
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some()
        || host.map_or(req.version() == Version::HTTP_11, |h| {
            !valid_host(h.as_bytes())
        })
        || (req.uri().authority()).is_some_and(|a| !valid_host(a.as_str().as_bytes()))
        || (req.version() >= Version::HTTP_2
            && (host.zip(req.uri().authority()))
                .is_some_and(|(host, authority)| !names(host.as_bytes(), authority, req.uri())))
        || (req.headers().get_all(AUTHORIZATION).iter())
            .nth(1)
            .is_some()
    {
        return refuse(StatusCode::BAD_REQUEST, req.body());
    }
    if req.uri().scheme().is_none() && req.uri().authority().is_some() {
        // RFC 9112 §3.2.3: the authority form (`CONNECT host:443`) asks a
        // forward proxy for a tunnel, which this server is not (501); with
        // any other method the target is malformed.
        let status = match req.method() == http::Method::CONNECT {
            true => StatusCode::NOT_IMPLEMENTED,
            false => StatusCode::BAD_REQUEST,
        };
        return refuse(status, req.body());
    }
    if req.uri().path() == "*" && req.method() != http::Method::OPTIONS {
        // RFC 9112 §3.2.4: the asterisk form (the server as a whole) is
        // OPTIONS's alone; nginx and gunicorn answer 400 to any other.
        return refuse(StatusCode::BAD_REQUEST, req.body());
    }
    if req.version() >= Version::HTTP_2 && !req.headers().contains_key(HOST) {
        // An HTTP/2 request names its host in `:authority` (the URI's), and
        // apps that read headers look for `Host`: it is given, as RFC 9113
        // §8.3.1 asks of anything that passes the request on as HTTP/1.1.
        let host = req.uri().authority().map(|a| a.as_str());
        if let Some(host) = host.and_then(|host| HeaderValue::from_str(host).ok()) {
            req.headers_mut().insert(HOST, host);
        }
    }
    let limit = shared.config.max_body_size;
    // A request without a body (most GETs) has nothing to limit, time or
    // leave unread: no look at its length, no wrapper, and no three
    // allocations for it.
    let has_body = !req.body().is_end_stream();
    if has_body && req.version() < Version::HTTP_2 {
        if let Some(status) = framing_refused(req.headers()) {
            return refuse(status, req.body());
        }
    }
    let declared = || {
        let declared = req.headers().get(CONTENT_LENGTH)?;
        declared.to_str().ok()?.parse::<u64>().ok()
    };
    if has_body
        && declared()
            .zip(limit)
            .is_some_and(|(declared, limit)| declared > limit)
    {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, req.body());
    }
    let failed = has_body.then(|| Arc::new(AtomicU8::new(READ_OK)));
    let mut req = req.map(|body| match &failed {
        None => Body::empty(),
        Some(failed) => Body::new(RequestBody {
            body,
            remaining: limit.unwrap_or(u64::MAX),
            timeout: shared.config.body_timeout,
            waiting: None,
            failed: failed.clone(),
            activity: activity.clone(),
        }),
    });
    req.extensions_mut().insert(info.clone());
    Gate::Call(Box::new(req), failed)
}

/// Whether a valid `Host` value names the host and port `authority` names,
/// a missing port being the scheme's.
fn names(host: &[u8], authority: &http::uri::Authority, uri: &http::Uri) -> bool {
    let default = match uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        true => 443,
        false => 80,
    };
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(colon) if !host[colon..].contains(&b']') => {
            let port = std::str::from_utf8(&host[colon + 1..]).ok();
            (&host[..colon], port.and_then(|p| p.parse::<u16>().ok()))
        }
        _ => (host, None),
    };
    name.eq_ignore_ascii_case(authority.host().as_bytes())
        && port.unwrap_or(default) == authority.port_u16().unwrap_or(default)
}

/// Whether `host` is a Host field value (RFC 9110 §7.2): a name or an
/// address in brackets, then an optional port; no userinfo, path, space or
/// quote, which an app building URLs from the field would copy into them.
/// Empty is valid: the target had no authority.
pub(super) fn valid_host(host: &[u8]) -> bool {
    // RFC 3986's reg-name: unreserved, sub-delims and `%`; in brackets, `:`
    // too. Looked up by byte: the server asks this of every request.
    const NAME: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            table[byte] = matches!(byte as u8,
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'%'
                | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=');
            byte += 1;
        }
        table
    };
    let name_byte = |b: &u8| NAME[usize::from(*b)];
    let (name, port) = match host.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(end) if end > 0 && rest[..end].iter().all(|b| name_byte(b) || *b == b':') => {
                rest.split_at(end + 1)
            }
            _ => return false,
        },
        None => {
            let end = host
                .iter()
                .position(|b| !name_byte(b))
                .unwrap_or(host.len());
            host.split_at(end)
        }
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => !name.is_empty() && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// What an HTTP/1 request body framed by anything but `chunked` alone gets
/// (RFC 9112 §6): a transfer coding the server does not know is 501, as
/// §6.1 asks (hyper would hand the app its bytes still coded), and
/// `chunked` twice or beside a `Content-Length` is 400, the marks of a
/// smuggling attempt (§6.3 lets a server refuse them; nginx does).
fn framing_refused(headers: &http::HeaderMap) -> Option<StatusCode> {
    let mut chunked = 0;
    let codings = (headers.get_all(TRANSFER_ENCODING).iter())
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    for coding in codings {
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Some(StatusCode::NOT_IMPLEMENTED);
        }
        chunked += 1;
    }
    let refused = chunked > 1 || (chunked == 1 && headers.contains_key(CONTENT_LENGTH));
    refused.then_some(StatusCode::BAD_REQUEST)
}

/// How the reading of a request body ended, if it failed on the server's side.
const READ_OK: u8 = 0;
const TOO_LARGE: u8 = 1;
const TIMED_OUT: u8 = 2;

/// Whether the app's `Content-Length`, if any, frames its response: a
/// length, and the body's own where the body knows it (the answer to a
/// `HEAD`, a 204 or a 304 may declare the length of a body it leaves out).
/// hyper sends nothing for the one, and for the other a length the bytes
/// after it do not keep, which leaves the client waiting or reading the next
/// response into this one. A streamed body's declared length is returned,
/// for [`ServerBody`] to count down.
fn framed(res: &Response, bodiless: bool) -> Result<Option<u64>, String> {
    let Some(declared) = crate::response::declared_length(res.headers())? else {
        return Ok(None);
    };
    let bodiless = bodiless
        || matches!(
            res.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    match http_body::Body::size_hint(res.body()).exact() {
        Some(known) if known != declared && !(bodiless && known == 0) => Err(format!(
            "Content-Length says {declared} but the body is {known} bytes"
        )),
        Some(_) => Ok(None),
        None => Ok(Some(declared)),
    }
}

/// The health check's answer: 200 while serving, 503 once draining, so that
/// a balancer stops sending before the server stops accepting.
fn health(draining: bool) -> Response {
    let (status, text) = match draining {
        false => (StatusCode::OK, "ok\n"),
        true => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
    };
    let mut res = text.into_response();
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    res
}

/// An error response that also closes the connection: the server's page
/// for `status`, or plain text.
fn closing(status: StatusCode, pages: Option<&ErrorPages>) -> Response {
    let mut res = match pages.and_then(|pages| pages.get(&status)) {
        Some((content_type, page)) => {
            let mut res = Response::new(Body::from(page.clone()));
            *res.status_mut() = status;
            res.headers_mut().insert(CONTENT_TYPE, content_type.clone());
            res
        }
        None => status.into_response(),
    };
    close(&mut res);
    res
}

/// Makes `res` close the connection once it is sent.
fn close(res: &mut Response) {
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}

/// A request body that fails once it passes the size limit or the client
/// stalls for the body timeout, and says so; and notes, when dropped unread,
/// that the connection must linger when it closes.
struct RequestBody<B: Incoming> {
    body: B,
    remaining: u64,
    timeout: Duration,
    /// Running while the app waits for bytes that have not come.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: Arc<AtomicU8>,
    activity: Arc<Activity>,
}

impl<B: Incoming> Drop for RequestBody<B> {
    fn drop(&mut self) {
        if !self.body.is_end_stream() {
            self.activity.unread_body.store(true, Ordering::Relaxed);
        }
    }
}

impl<B: Incoming> http_body::Body for RequestBody<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(Error::new(Kind::Body).with(e))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            // Only a runtime has a clock: a body read from elsewhere waits as long as it must.
            Poll::Pending if tokio::runtime::Handle::try_current().is_err() => {
                return Poll::Pending;
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                std::task::ready!(waiting.as_mut().poll(cx));
                this.failed.store(TIMED_OUT, Ordering::Relaxed);
                let e = Error::new(Kind::Timeout).with(format!(
                    "no byte of the request body arrived for {timeout:?}"
                ));
                return Poll::Ready(Some(Err(e)));
            }
        };
        this.waiting = None;
        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
        match this.remaining.checked_sub(len) {
            Some(remaining) => {
                this.remaining = remaining;
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                this.failed.store(TOO_LARGE, Ordering::Relaxed);
                let e = Error::new(Kind::TooLarge)
                    .with("the request body is larger than the server's limit");
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request counted as in flight until sent,
/// on HTTP/2 tells its stream's send clock when a frame waits for the
/// client, and on a plain HTTP/1 connection lets the socket send a file
/// body's bytes itself.
///
/// A body that fails ends the response one poll later: hyper drops what it
/// has not written when a body fails, and the client would get nothing, not
/// even the head an upstream sent before breaking off (nginx sends it, then
/// closes). The poll between lets hyper write out what it holds. A streamed
/// body that ends short of its `Content-Length` fails so too: the client
/// gets what there was and a closed connection, as from gunicorn, where
/// hyper sent nothing at all.
pub(super) struct ServerBody {
    body: Body,
    send_clock: Option<Arc<SendClock>>,
    http1: bool,
    in_flight: InFlight,
    /// The bytes a streamed body's `Content-Length` says are still to come.
    owed: Option<u64>,
    failed: Option<Error>,
}

impl http_body::Body for ServerBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let stand_ins = (this.in_flight.activity().stand_ins.as_ref()).filter(|_| this.http1);
        let polled = match stand_ins {
            Some(stand_ins) => this.body.poll_frame_sending(cx, &mut |file, offset, len| {
                stand_ins.stand_in(file, offset, len)
            }),
            None => Pin::new(&mut this.body).poll_frame(cx),
        };
        if let Some(clock) = &this.send_clock {
            // Polled again: the last frame was taken. A new one now waits.
            clock.waiting(matches!(&polled, Poll::Ready(Some(Ok(_)))));
        }
        let failed = match polled {
            Poll::Ready(Some(Err(e))) => e,
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(owed), Some(data)) = (&mut this.owed, frame.data_ref()) {
                    *owed = owed.saturating_sub(data.len() as u64);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) if this.owed.is_some_and(|owed| owed > 0) => {
                let owed = this.owed.take().unwrap_or_default();
                let why = format!("the app's body ended {owed} bytes short of its Content-Length");
                tracing::error!("{why}; the connection is closed");
                Error::new(Kind::Body).with(why)
            }
            polled => return polled,
        };
        this.failed = Some(failed);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
