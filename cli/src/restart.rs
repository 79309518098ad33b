//! Restarts that drop no connection, and readiness for systemd.
//!
//! On SIGUSR2 the running server starts the binary again (the new one, after
//! an upgrade) with the same arguments and hands it its listening sockets, as
//! nginx's and gunicorn's binary upgrades do. Both processes accept from the
//! same sockets, so nothing queued is lost; once the new one says it is ready,
//! the old one drains and stops as on SIGTERM.
//!
//! ```text
//! old: SIGUSR2 → spawn `stackway serve ARGS`  fds 3..3+n = the listeners, then
//!                                             fd 3+n = one end of a socket pair,
//!                                             LISTEN_FDS=n+1, STACKWAY_HANDOVER=fd:3+n
//!      ◀──── "READY=1" on the pair ───────── new: listening, serving
//!      tell systemd MAINPID=new, then drain and stop; the sockets stay open in the new
//! ```
//!
//! Readiness uses systemd's notification protocol (one datagram, `READY=1`,
//! to the unix socket `NOTIFY_SOCKET` names); a new process reports to the old
//! one instead, which forwards it to systemd with the new main pid. It reports
//! on an unnamed socket pair that only the process it started holds: a socket
//! with a name (even an abstract one, listed in `/proc/net/unix`) would let any
//! local user say `READY=1` and make the old process drain and stop before
//! the new one serves.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use stackway::server::Listener;

/// Where a new process reports that it is ready, set by the old one.
const HANDOVER: &str = "STACKWAY_HANDOVER";

/// How long a new process may take to start (import its apps, bind) before
/// the old one gives up on it and goes on serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// This process's end of the pair it reports on, when a restart or a
/// supervisor started it; taken with the passed sockets.
static REPORT_TO: Mutex<Option<UnixDatagram>> = Mutex::new(None);

/// Whether this process was started by a restart, with the sockets of the
/// process it replaces (rather than by systemd).
pub(crate) fn handed_over_to_me() -> bool {
    std::env::var_os(HANDOVER).is_some()
}

/// Which of the passed descriptors (`LISTEN_FDS`) is the pair to report
/// readiness on, when a restart started this process: `fd:N`, from `first`.
pub(crate) fn report_index(first: i32) -> Option<usize> {
    let fd: i32 = std::env::var(HANDOVER)
        .ok()?
        .strip_prefix("fd:")?
        .parse()
        .ok()?;
    usize::try_from(fd.checked_sub(first)?).ok()
}

/// Keeps the pair to report readiness on (see [`report_index`]).
pub(crate) fn report_to(pair: UnixDatagram) {
    *REPORT_TO.lock().unwrap_or_else(|e| e.into_inner()) = Some(pair);
}

/// Says `READY=1`: to the process that started this one (the one it
/// replaces, or its supervisor), or to systemd.
pub(crate) fn notify_ready() {
    if !report("READY=1") {
        if let Some(systemd) = std::env::var_os("NOTIFY_SOCKET") {
            send(&systemd.to_string_lossy(), "READY=1");
        }
    }
}

/// Says `message` to the process that started this one; false when none did.
pub(crate) fn report(message: &str) -> bool {
    let to = REPORT_TO.lock().unwrap_or_else(|e| e.into_inner());
    let Some(to) = to.as_ref() else {
        return false;
    };
    if let Err(e) = to.send(message.as_bytes()) {
        tracing::warn!("cannot tell the process that started this one {message:?}: {e}");
    }
    true
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

    /// These sockets, in this order.
    pub(crate) fn of(sockets: Vec<OwnedFd>) -> Self {
        Self { sockets }
    }

    /// Starts this binary again with `args`, hands it the sockets, and waits
    /// until it is ready. On success the caller stops serving; on failure it
    /// goes on (a new process that started is stopped).
    pub(crate) fn restart(&self, args: &[std::ffi::OsString]) -> io::Result<u32> {
        let mut new = self.spawn(args, &[])?;
        let started = Instant::now();
        while !new.ready()? {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(status) = new.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "the new process exited before it was ready ({status})"
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = new.child.kill();
                let _ = new.child.wait();
                return Err(io::Error::other(format!(
                    "the new process was not ready within {START_TIMEOUT:?}"
                )));
            }
        }
        let Spawned { mut child, .. } = new;
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

    /// Starts this binary with `args` and `env`, with the sockets at
    /// descriptors 3.. and the pair it reports on after them.
    pub(crate) fn spawn(
        &self,
        args: &[std::ffi::OsString],
        env: &[(&str, String)],
    ) -> io::Result<Spawned> {
        let (inbox, theirs) = UnixDatagram::pair()?;
        inbox.set_nonblocking(true)?;
        let theirs = OwnedFd::from(theirs);
        let report_fd = 3 + self.sockets.len();
        let mappings = self
            .sockets
            .iter()
            .chain([&theirs])
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
            .env("LISTEN_FDS", (self.sockets.len() + 1).to_string())
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS_FIRST_FD")
            .env(HANDOVER, format!("fd:{report_fd}"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .fd_mappings(mappings)
            .map_err(|_| io::Error::other("descriptor numbers collide"))?;
        let child = command.spawn()?;
        // Only the new process holds the other end now.
        drop(command);
        drop(theirs);
        Ok(Spawned { child, inbox })
    }
}

/// A process started with the sockets, and the pair it reports on.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: std::process::Child,
    inbox: UnixDatagram,
}

impl Spawned {
    /// Whether it has said `READY=1` since last asked.
    pub(crate) fn ready(&self) -> io::Result<bool> {
        Ok(self.reports()?.iter().any(|line| line == "READY=1"))
    }

    /// The lines it has reported since last asked, without waiting.
    pub(crate) fn reports(&self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut message = [0u8; 256];
        loop {
            match self.inbox.recv(&mut message) {
                Ok(n) => lines.extend(
                    String::from_utf8_lossy(&message[..n])
                        .lines()
                        .map(str::to_owned),
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(lines),
                Err(e) => return Err(e),
            }
        }
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
