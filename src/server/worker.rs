//! A worker: one accept loop, the connections it started, and its part of
//! graceful shutdown.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use super::connection::serve_connection;
use super::stream::StreamExecutor;
use super::{Config, io_error};
use crate::App;

/// One accept loop and the connections it started.
pub(super) struct Worker<A> {
    listener: StdListener,
    local_addr: SocketAddr,
    config: Config,
    app: Arc<A>,
    stopped: watch::Receiver<bool>,
    connections: Arc<Semaphore>,
}

impl<A: App> Worker<A> {
    pub(super) fn new(
        listener: &StdListener,
        config: Config,
        app: Arc<A>,
        stopped: watch::Receiver<bool>,
        connections: Arc<Semaphore>,
    ) -> crate::Result<Self> {
        let listener = listener.try_clone().map_err(io_error)?;
        let local_addr = listener.local_addr().map_err(io_error)?;
        Ok(Self {
            connections,
            listener,
            local_addr,
            config,
            app,
            stopped,
        })
    }

    pub(super) async fn accept_loop(self) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(e) => return tracing::error!("cannot use the listening socket: {e}"),
        };
        let mut builder = auto::Builder::new(StreamExecutor {
            send_timeout: self.config.send_timeout,
        });
        // No timer for HTTP/1.1: the connection's own clock (clock.rs) bounds
        // reading a request head, and hyper's would arm and clear a timer on
        // every request besides.
        builder.http1().max_buf_size(self.config.max_header_size);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.config.max_header_size).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            builder,
            config: self.config,
            local_addr: self.local_addr,
        });
        let tracker = TaskTracker::new();
        let (abort, aborted) = watch::channel(false);
        let mut stopped = self.stopped;
        loop {
            let permit = tokio::select! {
                permit = self.connections.clone().acquire_owned() => permit.expect("never closed"),
                () = stopped.wait_for(|stop| *stop).map(drop) => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: wait a moment rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stopped.wait_for(|stop| *stop).map(drop) => break,
            };
            let _ = stream.set_nodelay(true);
            let signals = (stopped.clone(), aborted.clone());
            let conn = serve_connection(stream, peer, shared.clone(), self.app.clone(), signals);
            tracker.spawn(conn.map(move |()| drop(permit)));
        }
        // Shutting down: stop accepting, give in-flight requests the grace period,
        // then drop whatever is still open.
        drop(listener);
        tracker.close();
        if tokio::time::timeout(shared.config.grace_period, tracker.wait())
            .await
            .is_err()
        {
            let _ = abort.send(true);
            tracker.wait().await;
        }
    }
}

/// What every connection of a worker shares.
pub(super) struct Shared {
    pub(super) builder: auto::Builder<StreamExecutor>,
    pub(super) config: Config,
    pub(super) local_addr: SocketAddr,
}
