//! Protocol upgrades (WebSocket): the upstream's `101 Switching Protocols`
//! goes to the client, and the two connections are then spliced byte for
//! byte until either side closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use stackway::{Body, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::headers::has_token;
use super::pool::Leased;

/// Whether the client asks to switch to WebSocket (`Connection: upgrade` and
/// `Upgrade: websocket`, on HTTP/1.1). Other upgrades (`h2c`, TLS) are this
/// hop's: the request goes on without them.
pub(crate) fn is_upgrade(req: &Request) -> bool {
    req.version() == http::Version::HTTP_11
        && has_token(req.headers(), http::header::UPGRADE, "websocket")
        && has_token(req.headers(), http::header::CONNECTION, "upgrade")
}

/// Answers the client with the upstream's 101 and splices the connections
/// once both have switched, until either side closes or no byte has moved
/// either way for `idle` (the proxy's read timeout, as nginx's
/// `proxy_read_timeout` closes a silent WebSocket).
pub(crate) fn splice(
    client: OnUpgrade,
    mut upstream_res: http::Response<Leased>,
    name: Arc<str>,
    idle: Duration,
) -> Response {
    let upstream = hyper::upgrade::on(&mut upstream_res);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => return tracing::warn!(upstream = %name, "upgrade failed: {e}"),
        };
        let moved = Arc::new(AtomicU64::new(0));
        let mut upstream = Counted {
            io: TokioIo::new(upstream),
            moved: moved.clone(),
        };
        let mut client = TokioIo::new(client);
        // Either side closing (or failing) ends both.
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            () = quiet(&moved, idle) => {
                tracing::info!(upstream = %name, ?idle, "closed an upgraded connection: no byte either way for the read timeout");
            }
        }
    });
    let (parts, _) = upstream_res.into_parts();
    Response::from_parts(parts, Body::empty())
}

/// Completes once `moved` has stayed the same for `idle`, looked at four
/// times an idle period.
async fn quiet(moved: &AtomicU64, idle: Duration) {
    let tick = (idle / 4).max(Duration::from_millis(1));
    let (mut seen, mut still) = (moved.load(Ordering::Relaxed), Duration::ZERO);
    while still < idle {
        tokio::time::sleep(tick).await;
        let now = moved.load(Ordering::Relaxed);
        still = if now == seen {
            still + tick
        } else {
            Duration::ZERO
        };
        seen = now;
    }
}

pin_project_lite::pin_project! {
    /// A stream that counts the reads and writes that moved bytes.
    struct Counted<T> {
        #[pin]
        io: T,
        moved: Arc<AtomicU64>,
    }
}

/// Counts a read or write that moved bytes.
fn note<R>(moved: &AtomicU64, polled: &Poll<io::Result<R>>) {
    if matches!(polled, Poll::Ready(Ok(_))) {
        moved.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: AsyncRead> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.io.poll_read(cx, buf);
        note(this.moved, &polled);
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        note(this.moved, &polled);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
