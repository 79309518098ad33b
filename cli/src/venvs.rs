//! Python mounts with a virtualenv of their own (`--venv PREFIX=PATH`, a
//! `[[mount]]`'s `venv`; uWSGI's `home`): two projects whose dependencies
//! conflict, under one Dispatcher, one port and one TLS setup.
//!
//! One interpreter has one `sys.path`, so such a mount runs in processes of
//! its own: a `stackway serve` for that mount alone, started by the process
//! the user started (the supervisor, or the only server), with the
//! virtualenv's `bin` first on `PATH` (the interpreter takes its home from
//! there, as in an activated virtualenv) and the Python flags (`--processes`,
//! `--wsgi-threads`, `--harakiri`, `--max-requests`, `--max-rss`,
//! `--max-lifetime`, `--reload`), so it scales and is recycled on its own,
//! under a supervisor of its own whenever the server has one. It listens on a
//! uwsgi socket in a private directory, and the server processes mount a uwsgi
//! proxy to it at the prefix: the app sees the prefix as SCRIPT_NAME and the
//! client's address, as it would in the server's own process.
//!
//! ```text
//! stackway serve --mount /a=wsgi:app:application --venv /a=/srv/a/.venv
//!   └─ PATH=/srv/a/.venv/bin:… stackway serve --bind uwsgi+unix:$TMP/stackway-PID/0.sock
//!                                             --mount /=wsgi:app:application
//! ```
//!
//! A group that exits is started again (backoff 0.5 s doubling to 30 s); one
//! that cannot start stops the server with its reason; each ends with the
//! process that started it (`PR_SET_PDEATHSIG`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::args::{Mount, ServeArgs, Target};
use crate::tree::{PARENT, is_worker};

/// How long a group may take to start (import its app).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The uwsgi socket the group of the mount at `prefix` listens on; the same
/// in every process of the tree (named by the process that started it).
pub(crate) fn socket(args: &ServeArgs, prefix: &str) -> Option<PathBuf> {
    let n = args.venvs.iter().position(|(p, _)| p == prefix)?;
    Some(dir().join(format!("{n}.sock")))
}

/// The tree's private directory for the groups' sockets.
fn dir() -> PathBuf {
    let top = std::env::var(PARENT).unwrap_or_else(|_| std::process::id().to_string());
    std::env::temp_dir().join(format!("stackway-{top}"))
}

/// The groups of the mounts with a virtualenv, as the process that started
/// the tree keeps them.
pub(crate) struct Groups {
    groups: Vec<Group>,
    stopped: bool,
}

struct Group {
    prefix: String,
    command: Vec<String>,
    venv: PathBuf,
    sock: PathBuf,
    child: Option<Child>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Groups {
    /// Starts a group for each mount with a virtualenv, and waits until each
    /// listens; one that exits first stops the server with its reason. Only
    /// the process that starts the tree has groups.
    pub(crate) fn start(args: &ServeArgs) -> Result<Self, String> {
        let mut groups = Self {
            groups: Vec::new(),
            stopped: false,
        };
        // A server process of a supervisor uses the supervisor's groups.
        if args.venvs.is_empty() || is_worker() {
            return Ok(groups);
        }
        let dir = dir();
        std::fs::create_dir_all(&dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        for (prefix, venv) in &args.venvs {
            let sock = socket(args, prefix).expect("a venv of the list");
            let _ = std::fs::remove_file(&sock);
            let command = command(args, prefix, &sock)?;
            let mut group = Group {
                prefix: prefix.clone(),
                command,
                venv: venv.clone(),
                sock,
                child: None,
                failures: 0,
                retry_at: None,
            };
            group.child = Some(group.spawn().map_err(|e| group.says(&e.to_string()))?);
            groups.groups.push(group);
        }
        for group in &mut groups.groups {
            group.wait_ready()?;
        }
        Ok(groups)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Starts again each group that exited, with backoff; none once stopped.
    pub(crate) fn look_after(&mut self) {
        if self.stopped {
            return;
        }
        for group in &mut self.groups {
            group.look_after();
        }
    }

    /// Sends `signal` to each group's server.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        for child in self.groups.iter().filter_map(|group| group.child.as_ref()) {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        }
    }

    /// Each group drains (SIGTERM) and is waited for; the directory goes.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        self.signal(nix::sys::signal::Signal::SIGTERM);
        for group in &mut self.groups {
            if let Some(mut child) = group.child.take() {
                let _ = child.wait();
            }
        }
        if !self.groups.is_empty() {
            let _ = std::fs::remove_dir_all(dir());
        }
    }
}

impl Group {
    fn says(&self, what: &str) -> String {
        format!(
            "the mount {} (virtualenv {}): {what}",
            self.prefix,
            self.venv.display()
        )
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let bin = self.venv.join("bin");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
            .map_err(std::io::Error::other)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(&self.command)
            .env("PATH", path)
            .env("VIRTUAL_ENV", &self.venv)
            .env(PARENT, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // What the tree was handed is the tree's, not the group's.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("LISTEN_") || (name.starts_with("STACKWAY_") && name != PARENT) {
                command.env_remove(&*name);
            }
        }
        command.spawn()
    }

    /// Waits until the group's socket takes connections.
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("started");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.says(&format!("its server failed to start ({status})")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(self.says(&format!("not listening within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn look_after(&mut self) {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::warn!(mount = %self.prefix, "the virtualenv's server exited ({status}); starting another");
                    self.child = None;
                    self.failures += 1;
                    let backoff =
                        Duration::from_millis(500) * 2u32.saturating_pow(self.failures - 1);
                    self.retry_at = Some(Instant::now() + backoff.min(Duration::from_secs(30)));
                }
                _ => {
                    if self.failures > 0
                        && std::os::unix::net::UnixStream::connect(&self.sock).is_ok()
                    {
                        self.failures = 0;
                    }
                    return;
                }
            }
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        match self.spawn() {
            Ok(child) => self.child = Some(child),
            Err(e) => {
                tracing::error!(mount = %self.prefix, "cannot start the virtualenv's server: {e}")
            }
        }
    }
}

/// The `stackway serve` arguments of the group for the mount at `prefix`.
fn command(args: &ServeArgs, prefix: &str, sock: &Path) -> Result<Vec<String>, String> {
    let target = args
        .mounts
        .iter()
        .find(|Mount { prefix: p, .. }| p == prefix)
        .map(|mount| &mount.target);
    let (spec, threads, stream_input) = match target {
        Some(Target::Wsgi(spec, options)) => (
            format!("wsgi:{spec}"),
            options.threads.unwrap_or(args.wsgi_threads),
            options.stream_input || args.wsgi_stream_input,
        ),
        Some(Target::Asgi(spec)) => (format!("asgi:{spec}"), args.wsgi_threads, false),
        _ => return Err(format!("--venv {prefix}: no wsgi: or asgi: mount there")),
    };
    let secs = |d: Duration| d.as_secs_f64().to_string();
    let mut command: Vec<String> = [
        "serve",
        "--bind",
        &format!("uwsgi+unix:{}", sock.display()),
        "--mount",
        &format!("/={spec}"),
        "--wsgi-threads",
        &threads.to_string(),
        "--grace-period",
        &secs(args.grace_period),
        "--max-requests-jitter",
        &args.max_requests_jitter.to_string(),
        "--log-level",
        &args.log_level.to_string(),
        "--log-format",
        &args.log_format,
    ]
    .map(str::to_owned)
    .to_vec();
    // The mount's own pythonpath, else the server's.
    let own = args.mount_paths.iter().find(|(p, _)| p == prefix);
    for dir in own.map_or(&args.python_path, |(_, paths)| paths) {
        command.extend(["--pythonpath".to_owned(), dir.display().to_string()]);
    }
    let flags = [
        ("--processes", args.processes.map(|n| n.to_string())),
        ("--harakiri", args.harakiri.map(secs)),
        ("--max-requests", args.max_requests.map(|n| n.to_string())),
        ("--max-rss", args.max_rss.map(|n| n.to_string())),
        ("--max-lifetime", args.max_lifetime.map(secs)),
    ];
    for (flag, value) in flags {
        if let Some(value) = value {
            command.extend([flag.to_owned(), value]);
        }
    }
    if stream_input {
        command.push("--wsgi-stream-input".to_owned());
    }
    if args.reload {
        command.push("--reload".to_owned());
    }
    Ok(command)
}
