//! The sockets `stackway serve` listens on: `--bind` values (TCP, `unix:PATH`,
//! `fd:N`, and the uwsgi protocol's `uwsgi://HOST:PORT`, `uwsgi+unix:PATH`) and the sockets handed to the process by systemd socket activation
//! or by the process it replaces (see `restart.rs`), both as `LISTEN_FDS`.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use stackway::server::{Listener, Tls};

/// Where one `--bind` (or a config file's `[[listen]]`) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Tcp(String),
    Unix(PathBuf),
    /// A descriptor passed as systemd passes them (`LISTEN_FDS`).
    Fd(i32),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => f.write_str(addr),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

/// A `--bind` value: where, and whether it speaks uwsgi rather than HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub(crate) bind: Bind,
    pub(crate) uwsgi: bool,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.bind, self.uwsgi) {
            (Bind::Tcp(addr), true) => write!(f, "uwsgi://{addr}"),
            (Bind::Unix(path), true) => write!(f, "uwsgi+unix:{}", path.display()),
            (bind, _) => bind.fmt(f),
        }
    }
}

/// `uwsgi://HOST:PORT` and `uwsgi+unix:PATH` speak uwsgi; the rest is [`parse_bind`]'s.
pub(crate) fn parse_address(value: &str) -> Result<Address, String> {
    let uwsgi = |bind| Ok(Address { bind, uwsgi: true });
    if let Some(addr) = value.strip_prefix("uwsgi://") {
        return match parse_bind(addr) {
            Ok(bind @ Bind::Tcp(_)) => uwsgi(bind),
            _ => Err(format!(
                "expected uwsgi://HOST:PORT, as in uwsgi://127.0.0.1:3031, not {value:?}"
            )),
        };
    }
    if let Some(path) = value.strip_prefix("uwsgi+unix:") {
        if path.is_empty() {
            return Err("expected uwsgi+unix:PATH, as in uwsgi+unix:/run/app.sock".into());
        }
        return uwsgi(Bind::Unix(path.into()));
    }
    parse_bind(value).map(|bind| Address { bind, uwsgi: false })
}

pub(crate) fn parse_bind(value: &str) -> Result<Bind, String> {
    if let Some(path) = value.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("expected unix:PATH, as in unix:/run/stackway.sock".into());
        }
        return Ok(Bind::Unix(path.into()));
    }
    if let Some(fd) = value.strip_prefix("fd:") {
        return match fd.parse::<i32>() {
            Ok(fd) if fd >= 3 => Ok(Bind::Fd(fd)),
            _ => Err(format!(
                "expected fd:N with N a descriptor from 3 up, as in fd:3, not {value:?}"
            )),
        };
    }
    match value.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(_)) => Ok(Bind::Tcp(value.to_owned())),
        Ok(None) => Err(format!("{value} resolves to no address")),
        Err(e) => Err(format!(
            "{e} (expected HOST:PORT, unix:PATH or fd:N, as in 127.0.0.1:8000)"
        )),
    }
}

/// One listener as asked for, with its options.
#[derive(Debug, Clone)]
pub(crate) struct ListenSpec {
    pub(crate) bind: Bind,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// With `tls`: the CA whose client certificates are asked for, and whether one is needed.
    pub(crate) client_ca: Option<(PathBuf, bool)>,
    pub(crate) proxy_protocol: bool,
    /// Speaks uwsgi (nginx's `uwsgi_pass`) instead of HTTP.
    pub(crate) uwsgi: bool,
    pub(crate) reuse_port: bool,
    /// A unix socket file's permission bits.
    pub(crate) mode: Option<u32>,
}

/// The listeners, the TLS configurations to reload on SIGHUP, and the unix
/// socket files this process made (removed when it exits, unless handed over).
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) listeners: Vec<Listener>,
    /// The admin listener's place in `listeners`
    /// ([`Connection::listener`](stackway::Connection::listener) of its requests).
    pub(crate) admin: Option<usize>,
    pub(crate) tls: Vec<Tls>,
    pub(crate) unix_files: Vec<PathBuf>,
}

/// A socket handed to this process, and its descriptor number there.
enum Passed {
    Tcp(i32, TcpListener),
    Unix(i32, UnixListener),
}

/// Opens every listener `specs` asks for, then the `admin` one, using a
/// passed socket where one listens on the same address (so that a restart
/// keeps it) and binding the rest. Passed sockets no spec names are served
/// too (systemd passed them to be served); with neither, the app listens on
/// `127.0.0.1:8000`, with an admin listener or without.
pub(crate) fn open(specs: &[ListenSpec], admin: Option<&ListenSpec>) -> Result<Opened, String> {
    let mut passed = passed_sockets()?;
    let mut opened = Opened {
        listeners: Vec::new(),
        admin: None,
        tls: Vec::new(),
        unix_files: Vec::new(),
    };
    let default = [ListenSpec {
        bind: Bind::Tcp("127.0.0.1:8000".into()),
        tls: None,
        client_ca: None,
        proxy_protocol: false,
        uwsgi: false,
        reuse_port: false,
        mode: None,
    }];
    let specs = match specs {
        [] if !passed.is_empty() => &[],
        [] => &default[..],
        specs => specs,
    };
    type TlsFiles = ((PathBuf, PathBuf), Option<(PathBuf, bool)>);
    let mut tls_by_files: Vec<(TlsFiles, Tls)> = Vec::new();
    let handed_over = crate::restart::handed_over_to_me();
    for (i, spec) in specs.iter().chain(admin).enumerate() {
        if i == specs.len() {
            opened.admin = Some(opened.listeners.len());
        }
        let listener = match take_passed(&mut passed, &spec.bind, handed_over)? {
            Some(listener) => {
                // Handed over by the process this one replaces: its files are this one's now.
                if let (true, Bind::Unix(path)) = (handed_over, &spec.bind) {
                    opened.unix_files.push(path.clone());
                }
                listener
            }
            None => bind(spec, &mut opened.unix_files)?,
        };
        let listener = match &spec.tls {
            None => listener,
            Some(files) => {
                let files = (files.clone(), spec.client_ca.clone());
                let tls = match tls_by_files.iter().find(|(f, _)| *f == files) {
                    Some((_, tls)) => tls.clone(),
                    None => {
                        let failed = |e: stackway::Error| format!("{e}: {}", cause(&e));
                        let mut tls =
                            Tls::from_pem_files(&files.0.0, &files.0.1).map_err(failed)?;
                        if let Some((ca, required)) = &files.1 {
                            tls = tls.client_ca(ca, *required).map_err(failed)?;
                        }
                        tls_by_files.push((files, tls.clone()));
                        tls
                    }
                };
                listener.tls(tls)
            }
        };
        opened.listeners.push(
            listener
                .proxy_protocol(spec.proxy_protocol)
                .uwsgi(spec.uwsgi),
        );
    }
    for socket in passed {
        let listener = listener(socket)?;
        tracing::info!("serving the passed socket {}", listener.local_addr());
        opened.listeners.push(listener);
    }
    opened.tls = tls_by_files.into_iter().map(|(_, tls)| tls).collect();
    Ok(opened)
}

fn bind(spec: &ListenSpec, unix_files: &mut Vec<PathBuf>) -> Result<Listener, String> {
    let failed = |e: stackway::Error| format!("cannot listen on {}: {}", spec.bind, cause(&e));
    match &spec.bind {
        Bind::Tcp(addr) if spec.reuse_port => Listener::bind_reuse_port(addr.as_str()),
        Bind::Tcp(addr) => Listener::bind(addr.as_str()),
        Bind::Unix(path) => {
            let listener = Listener::bind_unix(path).map_err(failed)?;
            unix_files.push(path.clone());
            match spec.mode {
                Some(mode) => listener.mode(mode),
                None => Ok(listener),
            }
        }
        Bind::Fd(fd) => {
            return Err(format!(
                "cannot listen on fd:{fd}: no such socket was passed to stackway \
                 (descriptors are taken as systemd passes them, with LISTEN_FDS)"
            ));
        }
    }
    .map_err(failed)
}

/// The sockets passed with `LISTEN_FDS` (and `LISTEN_PID`, when set, naming
/// this process), from descriptor 3 up.
fn passed_sockets() -> Result<Vec<Passed>, String> {
    let first: i32 = std::env::var("LISTEN_FDS_FIRST_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut fds = listenfd::ListenFd::from_env();
    let mut passed = Vec::new();
    let report = crate::restart::report_index(first);
    for index in 0..fds.len() {
        let fd = first + i32::try_from(index).unwrap_or(i32::MAX - first);
        if Some(index) == report {
            match fds.take_unix_datagram(index) {
                Ok(Some(pair)) => crate::restart::report_to(pair),
                _ => {
                    return Err(format!(
                        "descriptor {fd} (STACKWAY_HANDOVER) is not a unix datagram socket"
                    ));
                }
            }
            continue;
        }
        let socket = match fds.take_tcp_listener(index) {
            Ok(Some(listener)) => Passed::Tcp(fd, listener),
            _ => match fds.take_unix_listener(index) {
                Ok(Some(listener)) => Passed::Unix(fd, listener),
                _ => {
                    return Err(format!(
                        "descriptor {fd} (LISTEN_FDS) is not a listening TCP or unix stream socket"
                    ));
                }
            },
        };
        passed.push(socket);
    }
    Ok(passed)
}

/// The passed socket `bind` names: by descriptor, or by its address. After a
/// restart, an address with port 0 names the socket the process before chose
/// for it (the same host, any port).
fn take_passed(
    passed: &mut Vec<Passed>,
    bind: &Bind,
    restarted: bool,
) -> Result<Option<Listener>, String> {
    let wanted: Vec<SocketAddr> = match bind {
        Bind::Tcp(addr) => addr.to_socket_addrs().map_err(|e| e.to_string())?.collect(),
        _ => Vec::new(),
    };
    let same = |have: SocketAddr| {
        wanted
            .iter()
            .any(|want| *want == have || (restarted && want.port() == 0 && want.ip() == have.ip()))
    };
    let matches = |socket: &Passed| match (socket, bind) {
        (Passed::Tcp(fd, _) | Passed::Unix(fd, _), Bind::Fd(want)) => fd == want,
        (Passed::Tcp(_, l), Bind::Tcp(_)) => l.local_addr().is_ok_and(same),
        (Passed::Unix(_, l), Bind::Unix(path)) => l
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned))
            .is_some_and(|p| same_path(&p, path)),
        _ => false,
    };
    let Some(at) = passed.iter().position(matches) else {
        return Ok(None);
    };
    listener(passed.remove(at)).map(Some)
}

fn listener(socket: Passed) -> Result<Listener, String> {
    match socket {
        Passed::Tcp(_, l) => Listener::tcp(l),
        Passed::Unix(_, l) => Listener::unix(l),
    }
    .map_err(|e| cause(&e))
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || std::path::absolute(a).ok() == std::path::absolute(b).ok()
}

/// Where `listener` listens, as `--bind` says it (`uwsgi://` for a uwsgi one).
pub(crate) fn shown(listener: &Listener) -> String {
    match (listener.local_addr(), listener.is_uwsgi()) {
        (stackway::server::ListenAddr::Tcp { addr, .. }, true) => format!("uwsgi://{addr}"),
        (stackway::server::ListenAddr::Unix(path), true) => {
            format!("uwsgi+unix:{}", path.display())
        }
        (addr, false) => addr.to_string(),
    }
}

/// An error's cause, which says more than its kind.
pub(crate) fn cause(e: &stackway::Error) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string)
}
