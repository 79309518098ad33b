//! ASGI `websocket` scopes, over HTTP/1.1's Upgrade or HTTP/2's extended
//! CONNECT (RFC 8441): the handshake answered with the app's
//! `websocket.accept` (or refused with its `websocket.close` or its own
//! response), then the upgraded connection or stream, framed by tokio-tungstenite:
//! messages read ahead of the app's `receive` up to [`READ_AHEAD`] bytes (so
//! that a client's pings and close are answered while an app only sends), a
//! message written each time it sends one. A client's close is answered
//! before the connection ends (RFC 6455 §5.5.1); a message over
//! [`MAX_MESSAGE`] ends the connection (uvicorn's `--ws-max-size`).

use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use stackway::{Body, Request, Response};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::bridge::Shared;
use super::conn::{Head, Out, Room};

/// The largest message either way, as uvicorn's default.
const MAX_MESSAGE: usize = 16 << 20;

/// How many bytes of messages are read for the app before it asks for them:
/// past that, the client waits (its TCP window fills) until the app has
/// taken them all.
const READ_AHEAD: usize = 64 << 10;

/// Whether `req` opens a WebSocket: RFC 6455 over HTTP/1.1, or RFC 8441's
/// extended CONNECT over HTTP/2.
pub(crate) fn is_websocket(req: &Request) -> bool {
    if req.version() == http::Version::HTTP_2 {
        return req.method() == http::Method::CONNECT
            && (req.extensions().get::<hyper::ext::Protocol>())
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    }
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    req.version() == http::Version::HTTP_11
        && req.method() == http::Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
        && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

/// The answer to an accepted handshake, with the headers of the app's
/// `websocket.accept` (its subprotocol among them): `101 Switching
/// Protocols` for the client's `key` over HTTP/1.1, `200` to HTTP/2's
/// CONNECT (which has no key).
pub(crate) fn accepted(key: Option<&HeaderValue>, head: Head) -> Response {
    let mut res = Response::new(Body::empty());
    *res.headers_mut() = head.headers;
    let Some(key) = key else {
        return res;
    };
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

/// The accepted socket of request `id`: frames in as the app wants them,
/// out as it sends them, until either side closes.
pub(crate) async fn run(
    upgrade: OnUpgrade,
    shared: Arc<Shared>,
    id: u64,
    want: Arc<Notify>,
    mut out: mpsc::UnboundedReceiver<Out>,
    room: Arc<Room>,
) {
    let Ok(upgraded) = upgrade.await else {
        return shared.closed(id, 1006, String::new());
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (mut sink, mut stream) = socket.split();
    let reading = async {
        // Bytes handed to the app since it last found its inbox empty.
        let mut ahead = 0;
        loop {
            // The app asks only once it has taken every message handed to it.
            if want.notified().now_or_never().is_some() {
                ahead = 0;
            }
            if ahead >= READ_AHEAD {
                want.notified().await;
                ahead = 0;
            }
            // Pings are answered by the socket itself; they are no message.
            let message = match stream.next().await {
                Some(Ok(Frame::Text(text))) => Out::Text(text.to_string()),
                Some(Ok(Frame::Binary(data))) => Out::Bytes(data),
                Some(Ok(Frame::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (f.code.into(), f.reason.to_string())
                    });
                    // Reading on sends the answer to the client's close and
                    // sees the connection end.
                    while let Some(Ok(_)) = stream.next().await {}
                    return shared.closed(id, code, reason);
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return shared.closed(id, 1006, String::new()),
            };
            ahead += message.len();
            shared.received(id, message);
        }
    };
    let writing = async {
        // The app ending without a close closes normally.
        let mut closing = Out::Close(1000, String::new());
        while let Some(message) = out.recv().await {
            let frame = match message {
                Out::Text(text) => Frame::text(text),
                Out::Bytes(data) => Frame::binary(data),
                close @ Out::Close(..) => {
                    closing = close;
                    break;
                }
            };
            let len = frame.len();
            if sink.send(frame).await.is_err() {
                return;
            }
            shared.sent(id, &room, len);
        }
        if let Out::Close(code, reason) = closing {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = sink.send(Frame::Close(Some(frame))).await;
        }
    };
    // Either side done ends the socket: the client closed (the app has been
    // told), or the app ended (its close has gone out).
    tokio::select! {
        () = reading => {}
        () = writing => {}
    }
}
