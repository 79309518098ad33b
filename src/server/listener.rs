//! Listening sockets: TCP (optionally with `SO_REUSEPORT`) and unix, each
//! with its own TLS and PROXY protocol settings, and the stream a connection
//! accepted on either is.

use std::fmt;
use std::io;
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::{
    Shutdown, SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream, ToSocketAddrs,
};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::{setsockopt_impl, sockopt_impl};
use rustix::net::RecvFlags;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::sendfile::FileWrite;
use super::tls::Tls;
use crate::error::{Error, Kind};

/// How many connections may wait to be accepted (nginx's `backlog` is 511,
/// gunicorn's 2048); the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 1024;

/// A listening socket and how connections on it are read: in the clear or
/// over TLS, with or without a PROXY protocol header first.
///
/// ```no_run
/// # fn main() -> stackway::Result<()> {
/// use stackway::server::{Listener, Tls};
///
/// let tls = Tls::from_pem_files("cert.pem", "key.pem")?;
/// let server = stackway::Server::new([
///     Listener::bind("0.0.0.0:8443")?.tls(tls),
///     Listener::bind_unix("/run/app.sock")?.proxy_protocol(true),
/// ])?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Listener {
    pub(super) socket: Socket,
    pub(super) addr: ListenAddr,
    pub(super) tls: Option<Tls>,
    pub(super) proxy_protocol: bool,
    pub(super) uwsgi: bool,
}

/// Where a [`Listener`] listens; shown as a URL (`http://127.0.0.1:8000`,
/// `https://[::1]:8443`, `unix:/run/app.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address, with `tls` true when connections speak TLS.
    Tcp {
        /// The address, with the real port when bound to port 0.
        addr: SocketAddr,
        /// Whether connections speak TLS.
        tls: bool,
    },
    /// A unix socket's path (empty for an unnamed socket).
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { addr, tls: false } => write!(f, "http://{addr}"),
            Self::Tcp { addr, tls: true } => write!(f, "https://{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Listener {
    /// Listens on `addr`, TCP (port 0 picks a free port).
    ///
    /// Fails with [`Error::is_bind`] when the address cannot be listened on
    /// (in use, not local, no permission).
    pub fn bind(addr: impl ToSocketAddrs) -> crate::Result<Self> {
        Self::bind_tcp(addr, false)
    }

    /// Listens on `addr` with `SO_REUSEPORT`, so that other processes (a new
    /// version of this one) may listen on it too and the kernel spreads new
    /// connections between them. Connections already queued on a socket are
    /// lost when it closes: for restarts without a dropped connection, hand
    /// the socket over instead (systemd socket activation, or `stackway
    /// serve`'s SIGUSR2).
    pub fn bind_reuse_port(addr: impl ToSocketAddrs) -> crate::Result<Self> {
        Self::bind_tcp(addr, true)
    }

    fn bind_tcp(addr: impl ToSocketAddrs, reuse_port: bool) -> crate::Result<Self> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "resolves to no address");
        for addr in addr.to_socket_addrs().map_err(bind_error)? {
            match tcp_socket(addr, reuse_port) {
                Ok(socket) => return Self::from_socket(socket),
                Err(e) => last = e,
            }
        }
        Err(bind_error(last))
    }

    /// Listens on a unix socket at `path`, replacing a stale socket file no
    /// server listens on. The file stays when the server stops (the next
    /// `bind_unix` replaces it); REMOTE_ADDR is empty for its clients, as
    /// gunicorn leaves it.
    ///
    /// Fails with [`Error::is_bind`] when another server listens there, or
    /// the path is a file that is not a socket.
    pub fn bind_unix(path: impl AsRef<Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(bind_error(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                )));
            }
            match StdUnixStream::connect(path) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(bind_error)?;
                }
                _ => {
                    return Err(bind_error(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("a server already listens on {}", path.display()),
                    )));
                }
            }
        }
        let listener = StdUnixListener::bind(path).map_err(bind_error)?;
        Self::from_socket(Socket::from(std::os::fd::OwnedFd::from(listener)))
    }

    /// Sets a unix socket file's permission bits (as in `0o660`), so that
    /// only a proxy's group may connect. Does nothing for a TCP listener.
    pub fn mode(self, mode: u32) -> crate::Result<Self> {
        if let ListenAddr::Unix(path) = &self.addr {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(bind_error)?;
        }
        Ok(self)
    }

    /// Serves on a TCP listener bound elsewhere.
    pub fn tcp(listener: StdTcpListener) -> crate::Result<Self> {
        Self::from_socket(Socket::from(std::os::fd::OwnedFd::from(listener)))
    }

    /// Serves on a unix listener bound elsewhere (socket activation).
    pub fn unix(listener: StdUnixListener) -> crate::Result<Self> {
        Self::from_socket(Socket::from(std::os::fd::OwnedFd::from(listener)))
    }

    fn from_socket(socket: Socket) -> crate::Result<Self> {
        let local = socket.local_addr().map_err(bind_error)?;
        let addr = match (local.as_socket(), local.as_pathname()) {
            (Some(addr), _) => ListenAddr::Tcp { addr, tls: false },
            (None, Some(path)) => ListenAddr::Unix(path.to_owned()),
            (None, None) if local.is_unix() => ListenAddr::Unix(PathBuf::new()),
            (None, None) => {
                return Err(bind_error(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a TCP or unix socket",
                )));
            }
        };
        if socket.r#type().map_err(bind_error)? != Type::STREAM {
            return Err(bind_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a stream socket",
            )));
        }
        socket.set_nonblocking(true).map_err(bind_error)?;
        Ok(Self {
            socket,
            addr,
            tls: None,
            proxy_protocol: false,
            uwsgi: false,
        })
    }

    /// Speaks TLS on this listener (HTTP/2 and HTTP/1.1 offered by ALPN);
    /// requests on it have the scheme `https`.
    pub fn tls(mut self, tls: Tls) -> Self {
        if let ListenAddr::Tcp { tls: on, .. } = &mut self.addr {
            *on = true;
        }
        self.tls = Some(tls);
        self
    }

    /// Expects every connection to begin with a PROXY protocol header
    /// (version 1 or 2, as HAProxy's `send-proxy` and cloud TCP balancers
    /// send), whose source address becomes the request's REMOTE_ADDR. A
    /// connection without a valid header is closed.
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// Speaks the uwsgi protocol instead of HTTP, as nginx's `uwsgi_pass`
    /// does (uWSGI's `--socket`): each connection is one request, its CGI
    /// variables in a packet, then its body; the response goes back as raw
    /// HTTP. The front is trusted as a proxy is: REMOTE_ADDR and HTTPS
    /// become the client's address and the scheme, SCRIPT_NAME the prefix
    /// the front mounted this server at ([`Forwarded::prefix`](crate::Forwarded::prefix)).
    /// Not with TLS.
    ///
    /// On TCP, connections are accepted once their packet has arrived
    /// (`TCP_DEFER_ACCEPT`, as uWSGI sets on its sockets): the front sends
    /// it with the connection, so a process takes a request it can read at
    /// once rather than a connection to wait on.
    pub fn uwsgi(mut self, on: bool) -> Self {
        if (on || self.uwsgi) && matches!(self.addr, ListenAddr::Tcp { .. }) {
            // A second, at most, before a silent connection is accepted anyway.
            let seconds = libc::c_int::from(on);
            if let Err(e) = nix::sys::socket::setsockopt(&self.socket, DeferAccept, &seconds) {
                tracing::debug!("TCP_DEFER_ACCEPT not set on {}: {e}", self.addr);
            }
        }
        self.uwsgi = on;
        self
    }

    /// Whether this listener speaks uwsgi (see [`uwsgi`](Self::uwsgi)).
    pub fn is_uwsgi(&self) -> bool {
        self.uwsgi
    }

    /// Where this listener listens.
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
    }

    pub(super) fn try_clone(&self) -> io::Result<Socket> {
        self.socket.try_clone()
    }
}

impl AsFd for Listener {
    /// The listening socket, to hand over to another process.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

fn tcp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

// The option's setter by nix's own macro for the options it does not name
// (its unsafe call stays nix's).
sockopt_impl!(
    /// `TCP_DEFER_ACCEPT`: a connection is handed to `accept` once its first
    /// bytes have arrived, or after the seconds given.
    DeferAccept,
    SetOnly,
    libc::IPPROTO_TCP,
    libc::TCP_DEFER_ACCEPT,
    libc::c_int
);

fn bind_error(e: io::Error) -> Error {
    Error::new(Kind::Bind).with(e)
}

/// An accepted connection's socket.
///
/// It starts outside the reactor (`Fresh`): reads and writes go straight to
/// the socket, and it is registered with epoll only once a call would block.
/// The first read that would block goes around the task once first, so a
/// connection served within the poll that read its request (a uwsgi request
/// from nginx, an HTTP/1.0 one) costs no `epoll_ctl` to add it, and none to
/// remove it at close.
#[derive(Debug)]
pub(super) enum Io {
    Fresh(Fresh),
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Registering it failed, and the socket is closed.
    Gone,
}

/// The most a read of a fresh socket takes (a request head's worth; more
/// takes another read).
const FRESH_READ: usize = 4096;

/// A socket not registered with the reactor, in non-blocking mode.
#[derive(Debug)]
pub(super) struct Fresh {
    socket: Stream,
    /// A read would have blocked, and the task was woken to come back: the
    /// next read registers.
    yielded: bool,
}

#[derive(Debug)]
enum Stream {
    Tcp(StdTcpStream),
    Unix(StdUnixStream),
}

/// Runs `$call` with `$io` bound to whichever stream is registered (the
/// caller has registered a fresh one first).
macro_rules! registered {
    ($self:expr, $io:ident => $call:expr) => {
        match $self {
            Io::Tcp($io) => $call,
            Io::Unix($io) => $call,
            Io::Fresh(_) | Io::Gone => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    };
}

impl Io {
    /// Registers a fresh socket with the reactor; if that fails, it is closed.
    fn register(&mut self) -> io::Result<()> {
        *self = match std::mem::replace(self, Self::Gone) {
            Self::Fresh(Fresh {
                socket: Stream::Tcp(s),
                ..
            }) => Self::Tcp(TcpStream::from_std(s)?),
            Self::Fresh(Fresh {
                socket: Stream::Unix(s),
                ..
            }) => Self::Unix(UnixStream::from_std(s)?),
            io => io,
        };
        Ok(())
    }

    /// Tries `op` on a fresh socket: its outcome, unless it would block; then
    /// the socket is registered and the caller waits through the reactor
    /// (`None`, as for a registered socket).
    fn fresh<T>(&mut self, op: impl FnOnce(&Fresh) -> io::Result<T>) -> Option<io::Result<T>> {
        match self {
            Self::Fresh(fresh) => match op(fresh) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.register().err().map(Err),
                done => Some(done),
            },
            Self::Gone => Some(Err(io::ErrorKind::NotConnected.into())),
            Self::Tcp(_) | Self::Unix(_) => None,
        }
    }

    /// Tries `op` on a fresh socket. The first time it would block, goes
    /// around the task once (the client's bytes may be on their way) rather
    /// than registering; the next time, registers it. `None`: the socket is
    /// registered, to be waited on through the reactor.
    fn poll_fresh<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&Fresh) -> io::Result<T>,
    ) -> Poll<Option<io::Result<T>>> {
        if let Self::Fresh(fresh) = self {
            if !fresh.yielded {
                return match op(fresh) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        fresh.yielded = true;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    done => Poll::Ready(Some(done)),
                };
            }
            if let Err(e) = self.register() {
                return Poll::Ready(Some(Err(e)));
            }
        }
        Poll::Ready(None)
    }

    /// A read of a socket not registered yet (out of line: a registered
    /// socket's reads are the ones every request makes).
    #[inline(never)]
    fn poll_read_fresh(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(read) = std::task::ready!(self.poll_fresh(cx, |fresh| fresh.read(buf))) {
            return Poll::Ready(read);
        }
        registered!(self, io => Pin::new(io).poll_read(cx, buf))
    }

    /// A write to a socket not registered yet.
    #[inline(never)]
    fn poll_write_fresh(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(written) = self.fresh(|fresh| fresh.write_vectored(bufs)) {
            return Poll::Ready(written);
        }
        registered!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    /// Looks at the bytes the client has sent without reading them: ready
    /// once more than `seen` of them are here (as many as fit in `buf`), or
    /// with none when the client has closed. A fresh socket waits as a read
    /// of it does.
    pub(super) fn poll_peek(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        seen: usize,
    ) -> Poll<io::Result<usize>> {
        fn peek(from: impl AsFd, buf: &mut [u8], seen: usize) -> io::Result<usize> {
            match rustix::net::recv(from, buf, RecvFlags::PEEK)?.0 {
                // Nothing new: wait until the socket is readable again.
                n if n > 0 && n <= seen => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
        if let Some(peeked) = std::task::ready!(self.poll_fresh(cx, |fresh| peek(fresh, buf, seen)))
        {
            return Poll::Ready(peeked);
        }
        loop {
            let peeked = registered!(self, io => {
                std::task::ready!(io.poll_read_ready(cx))?;
                io.try_io(Interest::READABLE, || peek(&*io, buf, seen))
            });
            match peeked {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                peeked => return Poll::Ready(peeked),
            }
        }
    }

    /// Whether the client has sent bytes not read yet; what they are does not
    /// matter (the connection is closing). Never registers a fresh socket.
    pub(super) fn poll_unread(&mut self, cx: &mut Context<'_>) -> bool {
        // Never read back, so never zeroed.
        let mut discard = [MaybeUninit::<u8>::uninit(); 4096];
        let mut buf = ReadBuf::uninit(&mut discard);
        let polled = match self {
            Self::Fresh(fresh) => Poll::Ready(fresh.read(&mut buf)),
            Self::Gone => return false,
            Self::Tcp(io) => Pin::new(io).poll_read(cx, &mut buf),
            Self::Unix(io) => Pin::new(io).poll_read(cx, &mut buf),
        };
        matches!(polled, Poll::Ready(Ok(()))) && !buf.filled().is_empty()
    }

    /// Sends what `write` names of its file to the socket with `sendfile`:
    /// from the page cache, never through this process's memory.
    #[cfg(target_os = "linux")]
    pub(super) fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        write: &FileWrite,
    ) -> Poll<io::Result<usize>> {
        fn send(to: impl AsFd, write: &FileWrite) -> io::Result<usize> {
            let mut offset = write.offset;
            match rustix::fs::sendfile(to, &*write.file, Some(&mut offset), write.len)? {
                // The file is shorter than it was: end the response, not pad it.
                0 => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the response did",
                )),
                sent => Ok(sent),
            }
        }
        if let Some(sent) = self.fresh(|fresh| send(fresh, write)) {
            return Poll::Ready(sent);
        }
        loop {
            let sent = registered!(self, io => {
                std::task::ready!(io.poll_write_ready(cx))?;
                io.try_io(Interest::WRITABLE, || send(&*io, write))
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn poll_sendfile(
        &mut self,
        _: &mut Context<'_>,
        _: &FileWrite,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

impl From<StdTcpStream> for Io {
    fn from(stream: StdTcpStream) -> Self {
        Self::Fresh(Fresh {
            socket: Stream::Tcp(stream),
            yielded: false,
        })
    }
}

impl From<StdUnixStream> for Io {
    fn from(stream: StdUnixStream) -> Self {
        Self::Fresh(Fresh {
            socket: Stream::Unix(stream),
            yielded: false,
        })
    }
}

impl AsFd for Fresh {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Fresh {
    /// Reads what has arrived, through a buffer on the stack: reading into
    /// `buf`'s own uninitialized bytes takes unsafe code, and zeroing them
    /// first would touch pages of hyper's buffer that an idle connection
    /// never needs.
    fn read(&self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); FRESH_READ];
        let want = buf.remaining().min(FRESH_READ);
        let (read, _) = rustix::io::read(self, &mut chunk[..want])?;
        buf.put_slice(read);
        Ok(())
    }

    fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &self.socket {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
        }
    }

    fn shutdown(&self) -> io::Result<()> {
        match &self.socket {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl AsyncRead for Io {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_read(cx, buf),
            Self::Unix(io) => Pin::new(io).poll_read(cx, buf),
            this => this.poll_read_fresh(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Unix(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            this => this.poll_write_fresh(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Neither stream buffers what it is given.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(shut) = this.fresh(Fresh::shutdown) {
            return Poll::Ready(shut);
        }
        registered!(this, io => Pin::new(io).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A client, and the server's end as the accept loop gives it.
    fn connected() -> (StdTcpStream, Io) {
        let listener = StdTcpListener::bind("127.0.0.1:0").unwrap();
        let client = StdTcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        (client, Io::from(accepted))
    }

    /// Counts its wake-ups.
    struct Woken(AtomicUsize);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection reads what has arrived without the reactor; the first
    /// read that would block wakes the task to come back, and only the next
    /// one registers, to wait for bytes as any socket does.
    #[tokio::test]
    async fn a_fresh_socket_registers_at_the_second_read_that_would_block() {
        let (mut client, mut io) = connected();
        let woken = Arc::new(Woken(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut bytes = [0; 16];
        let mut read = |io: &mut Io, cx: &mut Context<'_>| {
            let mut buf = ReadBuf::new(&mut bytes);
            match Pin::new(io).poll_read(cx, &mut buf) {
                Poll::Ready(read) => Some(read.map(|()| buf.filled().to_vec())),
                Poll::Pending => None,
            }
        };

        client.write_all(b"GET").unwrap();
        assert_eq!(read(&mut io, &mut cx).unwrap().unwrap(), b"GET");
        assert!(read(&mut io, &mut cx).is_none());
        assert_eq!(woken.0.load(Ordering::Relaxed), 1, "woken to come back");
        assert!(matches!(io, Io::Fresh(_)), "not registered yet");
        assert!(read(&mut io, &mut cx).is_none());
        assert!(matches!(io, Io::Tcp(_)), "registered");

        client.write_all(b" /").unwrap();
        let mut rest = [0; 2];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b" /");
    }

    /// Writes and the look for unread bytes at close never register a fresh
    /// socket that has not had to wait.
    #[tokio::test]
    async fn a_connection_served_in_one_go_never_registers() {
        let (mut client, mut io) = connected();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);

        let polled = Pin::new(&mut io).poll_write_vectored(&mut cx, &[io::IoSlice::new(b"200")]);
        assert!(matches!(polled, Poll::Ready(Ok(3))));
        assert!(!io.poll_unread(&mut cx), "the client sent nothing");
        client.write_all(b"more").unwrap();
        assert!(io.poll_unread(&mut cx), "the client sent more");
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(matches!(io, Io::Fresh(_)));
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"200");
    }

    /// When the listener's `accept` takes a connection whose client sent
    /// nothing for 50 ms, then a byte: while it was silent, once it spoke,
    /// or not within 2 s.
    fn accepted(listener: &Listener) -> Option<&'static str> {
        let ListenAddr::Tcp { addr, .. } = *listener.local_addr() else {
            unreachable!("a TCP listener")
        };
        let mut client = StdTcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if listener.socket.accept().is_ok() {
            return Some("silent");
        }
        client.write_all(b"\0").unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if listener.socket.accept().is_ok() {
                return Some("spoke");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// A uwsgi listener takes a connection once its packet is there; an
    /// HTTP one (and one no longer uwsgi) as soon as it is made.
    #[test]
    fn a_uwsgi_connection_is_accepted_with_its_first_bytes() {
        let uwsgi = Listener::bind("127.0.0.1:0").unwrap().uwsgi(true);
        assert_eq!(accepted(&uwsgi), Some("spoke"));
        let http = Listener::bind("127.0.0.1:0").unwrap();
        assert_eq!(accepted(&http), Some("silent"));
        let undone = Listener::bind("127.0.0.1:0")
            .unwrap()
            .uwsgi(true)
            .uwsgi(false);
        assert_eq!(accepted(&undone), Some("silent"));
    }
}
