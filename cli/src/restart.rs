//! Restarts that drop no connection, and readiness for systemd.
//!
//! On SIGUSR2 the running server starts the binary again (the new one, after
//! an upgrade) with the same arguments and hands it its listening sockets, as
//! nginx's and gunicorn's binary upgrades do. Both processes accept from the
//! same sockets, so nothing queued is lost; once the new one says it is ready,
//! the old one drains and stops as on SIGTERM.
//!
//! ```text
//! old: SIGUSR2 → spawn `stackway serve ARGS`  fds 3.. = the listeners, LISTEN_FDS=n,
//!                                             STACKWAY_HANDOVER=@socket
//!      ◀──── "READY=1" on @socket ────────── new: listening, serving
//!      tell systemd MAINPID=new, then drain and stop; the sockets stay open in the new
//! ```
//!
//! Readiness uses systemd's notification protocol (one datagram, `READY=1`,
//! to the unix socket `NOTIFY_SOCKET` names); a new process reports to the old
//! one instead, which forwards it to systemd with the new main pid.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use stackway::server::Listener;

/// Where a new process reports that it is ready, set by the old one.
const HANDOVER: &str = "STACKWAY_HANDOVER";

/// How long a new process may take to start (import its apps, bind) before
/// the old one gives up on it and goes on serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether this process was started by a restart, with the sockets of the
/// process it replaces (rather than by systemd).
pub(crate) fn handed_over_to_me() -> bool {
    std::env::var_os(HANDOVER).is_some()
}

/// Says `READY=1`: to the process this one replaces, or to systemd.
pub(crate) fn notify_ready() {
    if let Some(old) = std::env::var_os(HANDOVER) {
        send(&old.to_string_lossy(), "READY=1");
    } else if let Some(systemd) = std::env::var_os("NOTIFY_SOCKET") {
        send(&systemd.to_string_lossy(), "READY=1");
    }
}

/// Tells systemd the server is stopping.
pub(crate) fn notify_stopping() {
    if let Some(systemd) = std::env::var_os("NOTIFY_SOCKET") {
        send(&systemd.to_string_lossy(), "STOPPING=1");
    }
}

/// Sends one notification datagram to `socket` (a path, or `@name` for an
/// abstract socket); failures are logged, never fatal.
fn send(socket: &str, message: &str) {
    let sent = address(socket).and_then(|addr| {
        let datagram = UnixDatagram::unbound()?;
        datagram.send_to_addr(message.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify {socket}: {e}");
    }
}

fn address(socket: &str) -> io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(socket),
    }
}

/// The sockets to hand over, duplicated when the server starts.
#[derive(Debug)]
pub(crate) struct Handover {
    sockets: Vec<OwnedFd>,
}

impl Handover {
    pub(crate) fn new(listeners: &[Listener]) -> io::Result<Self> {
        let sockets = listeners
            .iter()
            .map(|l| l.as_fd().try_clone_to_owned())
            .collect::<io::Result<_>>()?;
        Ok(Self { sockets })
    }

    /// Starts this binary again with `args`, hands it the sockets, and waits
    /// until it is ready. On success the caller stops serving; on failure it
    /// goes on (a new process that started is stopped).
    pub(crate) fn restart(&self, args: &[std::ffi::OsString]) -> io::Result<u32> {
        let name = format!("stackway-handover-{}-{}", std::process::id(), unique());
        let inbox = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name)?)?;
        inbox.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mappings = self
            .sockets
            .iter()
            .zip(3..)
            .map(|(socket, child_fd)| {
                Ok(FdMapping {
                    parent_fd: socket.try_clone()?,
                    child_fd,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut command = Command::new(current_exe()?);
        command
            .args(args)
            .env("LISTEN_FDS", self.sockets.len().to_string())
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS_FIRST_FD")
            .env(HANDOVER, format!("@{name}"))
            .fd_mappings(mappings)
            .map_err(|_| io::Error::other("descriptor numbers collide"))?;
        let mut child = command.spawn()?;
        drop(command);
        let started = Instant::now();
        let mut message = [0u8; 64];
        loop {
            match inbox.recv(&mut message) {
                Ok(n) if message[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") => {
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "the new process exited before it was ready ({status})"
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "the new process was not ready within {START_TIMEOUT:?}"
                )));
            }
        }
        let pid = child.id();
        // Reap it in the background should it exit while this process drains.
        std::thread::spawn(move || child.wait());
        if let Some(systemd) = std::env::var_os("NOTIFY_SOCKET") {
            send(
                &systemd.to_string_lossy(),
                &format!("MAINPID={pid}\nREADY=1"),
            );
        }
        Ok(pid)
    }
}

/// The binary this process runs; after an upgrade replaced the file, the
/// new one at the same path.
fn current_exe() -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.to_string_lossy();
    Ok(match path.strip_suffix(" (deleted)") {
        Some(original) => original.into(),
        None => exe,
    })
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
