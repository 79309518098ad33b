//! Which process of the tree this is: one the user started, or one a
//! supervisor (or `--reload`) started, told by the environment it was given.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// In a server process a supervisor started: its slot.
pub(crate) const WORKER: &str = "STACKWAY_WORKER";

/// In a process a supervisor, `--reload` or a virtualenv's mount
/// (venvs.rs) started: the pid of the process that started it.
pub(crate) const PARENT: &str = "STACKWAY_PARENT";

/// Whether this process is one a supervisor started.
pub(crate) fn is_worker() -> bool {
    std::env::var_os(WORKER).is_some()
}

/// In a process started by another of the tree: ends it when that one
/// ends, even by SIGKILL (SIGTERM, so that it drains), and at once if that
/// one is already gone.
pub(crate) fn follow_parent() {
    let Some(parent) = std::env::var(PARENT)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid() != Pid::from_raw(parent) {
        std::process::exit(1);
    }
}
