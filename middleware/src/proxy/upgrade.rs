//! Protocol upgrades (WebSocket): the upstream's `101 Switching Protocols`
//! goes to the client, and the two connections are then spliced byte for
//! byte until either side closes.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use stackway::{Body, Request, Response};

use super::headers::has_token;

/// Whether the client asks to switch to WebSocket (`Connection: upgrade` and
/// `Upgrade: websocket`, on HTTP/1.1). Other upgrades (`h2c`, TLS) are this
/// hop's: the request goes on without them.
pub(crate) fn is_upgrade(req: &Request) -> bool {
    req.version() == http::Version::HTTP_11
        && has_token(req.headers(), http::header::UPGRADE, "websocket")
        && has_token(req.headers(), http::header::CONNECTION, "upgrade")
}

/// Answers the client with the upstream's 101 and splices the connections
/// once both have switched.
pub(crate) fn splice(
    client: OnUpgrade,
    mut upstream_res: http::Response<hyper::body::Incoming>,
    name: Arc<str>,
) -> Response {
    let upstream = hyper::upgrade::on(&mut upstream_res);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => return tracing::warn!(upstream = %name, "upgrade failed: {e}"),
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        // Either side closing (or failing) ends both.
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    let (parts, _) = upstream_res.into_parts();
    Response::from_parts(parts, Body::empty())
}
