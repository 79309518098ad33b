//! A worker: an accept loop per listener, the connections they started, and
//! the worker's part of draining and graceful shutdown.

use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use http::uri::Scheme;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use rustix::net::{SocketFlags, acceptfrom_with};
use socket2::Socket;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::clock::Clocks;
use super::connection::{serve_connection, serve_uwsgi};
use super::listener::{Io, ListenAddr, Listener};
use super::shared::{Door, Lifecycle, Phase, Shared};
use super::stream::StreamExecutor;
use super::{Config, io_error};
use crate::App;

/// The accept loops of one worker and the connections they started.
pub(super) struct Worker<A> {
    listeners: Vec<(Socket, Arc<Door>)>,
    config: Config,
    app: Arc<A>,
    lifecycle: Arc<Lifecycle>,
    connections: Arc<Semaphore>,
}

impl<A: App> Worker<A> {
    pub(super) fn new(
        listeners: &[Listener],
        config: Config,
        app: Arc<A>,
        lifecycle: Arc<Lifecycle>,
        connections: Arc<Semaphore>,
    ) -> crate::Result<Self> {
        let listeners = listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                let door = Door {
                    listener: index,
                    local_addr: match listener.local_addr() {
                        ListenAddr::Tcp { addr, .. } => Some(*addr),
                        ListenAddr::Unix(_) => None,
                    },
                    scheme: match listener.tls {
                        Some(_) => Scheme::HTTPS,
                        None => Scheme::HTTP,
                    },
                    // A uwsgi listener speaks to its front in the clear.
                    tls: listener.tls.clone().filter(|_| !listener.uwsgi),
                    proxy_protocol: listener.proxy_protocol,
                    uwsgi: listener.uwsgi,
                    packets: listener.uwsgi && app.takes_packets(),
                };
                Ok((listener.try_clone().map_err(io_error)?, Arc::new(door)))
            })
            .collect::<crate::Result<_>>()?;
        Ok(Self {
            listeners,
            config,
            app,
            lifecycle,
            connections,
        })
    }

    pub(super) async fn run(self) {
        let http1 = |uwsgi: bool| {
            let mut http1 = http1::Builder::new();
            // No timer: the connection's own clock (clock.rs) bounds reading a
            // request head, and hyper's would arm and clear a timer on every
            // request besides. uwsgi's fronts send one request a connection.
            (http1.max_buf_size(self.config.max_header_size))
                .half_close(uwsgi)
                .keep_alive(!uwsgi);
            http1
        };
        let mut http2 = http2::Builder::new(StreamExecutor {
            send_timeout: self.config.send_timeout,
        });
        // Extended CONNECT (RFC 8441), for WebSockets over HTTP/2.
        (http2.enable_connect_protocol())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.config.max_header_size).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            http1: http1(false),
            uwsgi: http1(true),
            http2,
            clocks: Clocks::new(&self.config),
            config: self.config,
            lifecycle: self.lifecycle,
        });
        let clocks = tokio::spawn({
            let shared = shared.clone();
            async move { shared.clocks.run(shared.lifecycle.watch()).await }
        });
        let tracker = TaskTracker::new();
        let accepting: Vec<_> = self
            .listeners
            .into_iter()
            .map(|(socket, door)| {
                let accept = Accept {
                    door,
                    shared: shared.clone(),
                    app: self.app.clone(),
                    connections: self.connections.clone(),
                    tracker: tracker.clone(),
                };
                tokio::spawn(accept.run(socket))
            })
            .collect();
        for accepting in accepting {
            let _ = accepting.await;
        }
        // Shutting down: no more accepting; in-flight requests get the grace
        // period, then whatever is still open is dropped.
        tracker.close();
        if tokio::time::timeout(shared.config.grace_period, tracker.wait())
            .await
            .is_err()
        {
            shared.lifecycle.enter(Phase::Aborted);
            tracker.wait().await;
        }
        clocks.abort();
    }
}

/// One listener's accept loop.
struct Accept<A> {
    door: Arc<Door>,
    shared: Arc<Shared>,
    app: Arc<A>,
    connections: Arc<Semaphore>,
    tracker: TaskTracker,
}

/// A listening socket, its readiness from the worker's reactor. What it
/// accepts starts outside the reactor (`Io::Fresh`).
struct Socketed {
    /// The listening socket, registered for readiness as tokio's safe API
    /// allows, through a stream type: its readiness and its descriptor are
    /// all that is used, for `accept4` (tokio's own `accept` would register
    /// every connection it returns).
    socket: TcpStream,
    unix: bool,
}

impl Socketed {
    /// The listening socket on this worker's runtime. A TCP one carries
    /// `TCP_NODELAY`, which Linux hands to each connection it accepts: a
    /// response's last bytes go out without waiting for the client's ACK, and
    /// a connection costs no `setsockopt` of its own.
    fn new(socket: Socket) -> io::Result<Self> {
        let unix = socket.local_addr().is_ok_and(|a| a.is_unix());
        if !unix {
            let _ = socket.set_tcp_nodelay(true);
        }
        let socket = TcpStream::from_std(socket.into())?;
        Ok(Self { socket, unix })
    }

    /// The next connection, non-blocking from `accept4` on; none once the
    /// server is stopping, which is looked at before each `accept4`, so that
    /// no connection is taken after it stopped, however the wake-ups fall.
    async fn accept(&self, lifecycle: &Lifecycle) -> io::Result<Option<(Io, Option<SocketAddr>)>> {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let accept = || Ok(acceptfrom_with(&self.socket, flags)?);
        let (fd, peer) = loop {
            self.socket.readable().await?;
            if lifecycle.phase() >= Phase::Stopping {
                return Ok(None);
            }
            match self.socket.try_io(Interest::READABLE, accept) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                accepted => break accepted?,
            }
        };
        if self.unix {
            return Ok(Some((StdUnixStream::from(fd).into(), None)));
        }
        let stream = StdTcpStream::from(fd);
        if !cfg!(target_os = "linux") {
            let _ = stream.set_nodelay(true);
        }
        Ok(Some((stream.into(), peer.and_then(|p| p.try_into().ok()))))
    }
}

impl<A: App> Accept<A> {
    async fn run(self, socket: Socket) {
        let listener = match Socketed::new(socket) {
            Ok(listener) => listener,
            Err(e) => return tracing::error!("cannot use the listening socket: {e}"),
        };
        // One clone in each uwsgi connection that had to wait, as a task.
        let waiting = Arc::new(());
        // Made once: watching the phase anew for each connection would
        // subscribe to it, and register and unregister a waiter, every time.
        let stopping = self.shared.lifecycle.reached(Phase::Stopping);
        tokio::pin!(stopping);
        loop {
            // A uwsgi connection that waits for its packet is a task, which
            // runs only when this loop gives the worker up: while one waits,
            // each turn does, or it would wait behind every connection the
            // listener's queue holds (as many as tokio's budget lets through).
            if Arc::strong_count(&waiting) > 1 {
                tokio::task::yield_now().await;
            }
            // The phase's watch is polled only when the loop waits: the
            // accept looks at the phase itself.
            let permit = match self.connections.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => tokio::select! {
                    biased;
                    permit = self.connections.clone().acquire_owned() => permit.expect("never closed"),
                    () = &mut stopping => break,
                },
            };
            let (io, peer) = tokio::select! {
                biased;
                accepted = listener.accept(&self.shared.lifecycle) => match accepted {
                    Ok(Some(accepted)) => accepted,
                    Ok(None) => break,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: wait a moment rather than spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stopping => break,
            };
            let stats = self.shared.lifecycle.stats.clone();
            stats.accepted();
            let (door, shared, app) = (self.door.clone(), self.shared.clone(), self.app.clone());
            let closed = move |()| {
                stats.closed();
                drop(permit);
            };
            if !self.door.uwsgi {
                self.tracker
                    .spawn(serve_connection(io, peer, door, shared, app).map(closed));
                continue;
            }
            let conn = serve_uwsgi(io, peer, door, shared, app).map(closed);
            // A uwsgi connection carries one request: it is served here until
            // it has to wait, as a process of uWSGI serves the connection it
            // accepted before it accepts another. Most end in this poll, never
            // a task; and connections left in the listener's queue go to
            // whichever process (or worker) asks first, rather than all of them
            // into this one. (Boxed to be polled before it is spawned, which a
            // connection that stays, keep-alive HTTP, would carry as a second
            // allocation while it idles.)
            let mut conn = Box::pin(conn);
            match futures_util::poll!(AssertUnwindSafe(conn.as_mut()).catch_unwind()) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_panic)) => tracing::error!("a connection's task panicked"),
                Poll::Pending => {
                    let waiting = waiting.clone();
                    drop(self.tracker.spawn(conn.map(move |()| drop(waiting))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener's `TCP_NODELAY` is what a connection gets: Linux copies
    /// it at `accept`, and elsewhere the connection sets its own.
    #[tokio::test]
    async fn an_accepted_connection_sends_without_delay() {
        let socket = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(8).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let listener = Socketed::new(socket).unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let lifecycle = Lifecycle::new(crate::server::Stats::default());
        let (Io::Fresh(stream), _) = listener.accept(&lifecycle).await.unwrap().unwrap() else {
            panic!("a connection starts outside the reactor");
        };
        assert!(socket2::SockRef::from(&stream).tcp_nodelay().unwrap());
    }
}
