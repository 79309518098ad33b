//! The Python mounts, as the binary that links the interpreter provides them.
//!
//! `stackway` links no interpreter: a process of it serving hello, static
//! files and proxies never loads libpython (3.0 MiB of a resting process's
//! 9.5). A command that mounts a Python app in its own process is handed over
//! at its start to `stackway-python`, beside it: the same command, with the
//! same pid, arguments and descriptors (`exec`), which provides [`Python`].

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use stackway::BoxApp;
use stackway::readings::PoolReading;

use crate::args::{ServeArgs, Target};

/// The binary with the interpreter, beside `stackway`.
pub const BINARY: &str = "stackway-python";

/// The interpreter's side of `stackway serve`: what `wsgi:` and `asgi:`
/// mounts and `--pythonpath` need.
pub trait Python: Sync {
    /// Puts `dir` first on `sys.path`.
    fn add_path(&self, dir: &Path) -> Result<(), String>;

    /// The WSGI app at `spec` (`MODULE:CALLABLE`), imported.
    fn wsgi(&self, spec: &str, settings: WsgiSettings) -> Result<Mounted, String>;

    /// The ASGI app at `spec` (`MODULE:APP`), imported, its lifespan started.
    fn asgi(&self, spec: &str, harakiri: Option<Harakiri>) -> Result<Mounted, String>;

    /// Runs a worker thread's `serve` attached to the interpreter, for
    /// Python that runs on the workers (`--wsgi-threads 0`).
    fn worker_context(&self, serve: &mut (dyn FnMut() + Send));
}

/// How a WSGI mount runs.
#[derive(Debug, Clone, Copy)]
pub struct WsgiSettings {
    /// Python threads; 0 runs the app on the worker threads.
    pub threads: usize,
    /// `wsgi.input` as the body arrives, rather than read whole first.
    pub stream_input: bool,
    /// The limit on a request's time in Python.
    pub harakiri: Option<Harakiri>,
    /// `wsgi.multithread`: calls may overlap in the process.
    pub multithread: bool,
    /// `wsgi.multiprocess`: other processes run the app too.
    pub multiprocess: bool,
}

/// A request's limit in Python, and what to do past it: the process is
/// replaced (`--harakiri`).
#[derive(Debug, Clone, Copy)]
pub struct Harakiri {
    /// The time a request may take.
    pub limit: Duration,
    /// Called from the watching thread once one took longer.
    pub then: fn(),
}

/// A Python app, ready to mount, and what the server keeps of it.
pub struct Mounted {
    /// The app.
    pub app: BoxApp,
    /// A WSGI app's Python threads: their number and their reading for the
    /// metrics.
    pub pool: Option<Pool>,
    /// An ASGI app's lifespan shutdown, run once the server has drained.
    pub shutdown: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("app", &self.app)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A WSGI mount's Python threads.
pub struct Pool {
    /// How many: 0 when Python runs on the workers.
    pub threads: usize,
    /// Their reading now.
    pub reading: Box<dyn Fn() -> PoolReading + Send + Sync>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Whether this process would run a Python app itself: a `wsgi:` or
/// `asgi:` mount without a virtualenv of its own (whose processes run it),
/// in a process that serves (a supervisor's processes do).
pub(crate) fn needed(args: &ServeArgs) -> bool {
    !crate::supervisor::wanted(args)
        && args.mounts.iter().any(|mount| {
            matches!(mount.target, Target::Wsgi(..) | Target::Asgi(_))
                && crate::venvs::socket(args, &mount.prefix).is_none()
        })
}

/// Runs this command as [`BINARY`], beside this one: only returns the
/// failure to.
pub(crate) fn hand_over() -> ExitCode {
    let mut argv = std::env::args_os();
    let arg0 = argv.next().unwrap_or_else(|| OsString::from("stackway"));
    let binary = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(BINARY),
        Err(e) => {
            eprintln!("stackway: a Python mount is served by {BINARY}, which cannot be found: {e}");
            return ExitCode::from(1);
        }
    };
    let e = std::process::Command::new(&binary)
        .arg0(arg0)
        .args(argv)
        .exec();
    eprintln!(
        "stackway: a Python mount is served by {BINARY}, which `cargo install` and \
         `cargo build -p stackway-cli` put beside stackway: cannot run {}: {e}",
        binary.display()
    );
    ExitCode::from(1)
}
