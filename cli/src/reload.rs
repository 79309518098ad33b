//! `stackway serve --reload`: for development, the server runs as a child
//! process, restarted when a Python file it may have imported changes, as
//! gunicorn's `--reload` and Werkzeug's reloader do (reloading modules inside
//! a running interpreter is not reliable).
//!
//! ```text
//! supervisor ── spawns ──▶ stackway serve ARGS (without --reload)
//!     │ every 0.5 s: any *.py under the working directory or --pythonpath changed?
//!     ├─ stackway serve ARGS --check   (imports everything, binds nothing)
//!     │     fails → print why, keep the old server
//!     └─ passes → SIGTERM the old server, wait for it to drain, spawn the new one
//! ```

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::listen::Bind;

/// The most files watched; a tree larger than this is probably not the app.
const MAX_FILES: usize = 20_000;

/// Runs the server as a child with `args` (the command line without
/// `--reload`), restarting it when a Python file under `roots` changes.
pub(crate) fn supervise(mut args: Vec<String>, binds: &[Bind], roots: &[PathBuf]) -> ExitCode {
    // Every child must listen where the first did: pick the ports now that are 0.
    let fixed: Vec<String> = binds.iter().map(fixed_address).collect();
    if fixed.iter().zip(binds).any(|(f, b)| *f != b.to_string()) {
        let mut rest = std::mem::take(&mut args).into_iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--bind" => drop(rest.next()),
                _ if arg.starts_with("--bind=") => {}
                _ => args.push(arg),
            }
        }
        for bind in fixed {
            args.extend(["--bind".to_owned(), bind]);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("stackway: reload: cannot watch for signals: {e}");
            return ExitCode::from(1);
        }
    }
    let mut child = spawn(&args);
    let mut seen = snapshot(roots);
    eprintln!("stackway: reload: watching {} Python files", seen.len());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let now = snapshot(roots);
        if now == seen {
            continue;
        }
        seen = now;
        eprintln!("stackway: reload: a Python file changed; checking the new code");
        if !check(&args) {
            eprintln!("stackway: reload: the new code does not load; still serving the old code");
            continue;
        }
        if let Some(old) = child.take() {
            stop_child(old);
        }
        child = spawn(&args);
    }
    if let Some(child) = child {
        stop_child(child);
    }
    ExitCode::SUCCESS
}

/// `bind`, with a free port chosen when it asks for port 0.
fn fixed_address(bind: &Bind) -> String {
    let fixed = || {
        let Bind::Tcp(addr) = bind else { return None };
        let addr = addr.to_socket_addrs().ok()?.next()?;
        if addr.port() != 0 {
            return None;
        }
        let probe = std::net::TcpListener::bind(addr).ok()?;
        Some(probe.local_addr().ok()?.to_string())
    };
    fixed().unwrap_or_else(|| bind.to_string())
}

fn command(args: &[String]) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("stackway"));
    let mut command = Command::new(exe);
    // It ends with this process (see `supervisor::follow_parent`).
    command
        .args(args)
        .env(crate::supervisor::PARENT, std::process::id().to_string());
    command
}

fn spawn(args: &[String]) -> Option<Child> {
    match command(args).spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("stackway: reload: cannot start the server: {e}");
            None
        }
    }
}

/// Whether the server would start: `--check` imports every app and binds nothing.
fn check(args: &[String]) -> bool {
    command(args)
        .arg("--check")
        .status()
        .is_ok_and(|status| status.success())
}

/// SIGTERM, then waits while the server finishes its requests.
fn stop_child(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let _ = child.wait();
}

/// Every `*.py` file under `roots` with its modification time and size.
fn snapshot(roots: &[PathBuf]) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut files = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && !skipped(&path) {
                dirs.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "py") {
                if let Ok(meta) = entry.metadata() {
                    files.insert(
                        path,
                        (
                            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            meta.len(),
                        ),
                    );
                }
            }
            if files.len() >= MAX_FILES {
                return files;
            }
        }
    }
    files
}

/// Directories no app's code lives in: hidden ones, caches, build output.
fn skipped(dir: &Path) -> bool {
    dir.file_name().and_then(|n| n.to_str()).is_none_or(|name| {
        name.starts_with('.') || matches!(name, "__pycache__" | "node_modules" | "target")
    })
}
