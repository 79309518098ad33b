//! What some tests need from outside Rust (a Python module, curl, Chromium):
//! found, or the test is skipped with one line naming what is missing.
//!
//! The line is written to the process's standard error itself, past the test
//! harness's capture, so that `cargo test` shows it even for a test that
//! passes. Under CI (`CI=true`) a missing tool fails the test instead:
//! `.ci/run` installs everything, so nothing is skipped silently there.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The system's CPython, the one `stackway-wsgi` embeds (`.cargo/config.toml`).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3.11";

/// Whether the embedded (system) Python imports every one of `modules`;
/// `package` names what provides them.
pub fn python_modules(modules: &[&str], package: &str) -> bool {
    let imports = format!("import {}", modules.join(", "));
    python_imports(SYSTEM_PYTHON, &imports, package)
}

/// Whether `python` runs `imports` (`import x` or `from x import y`).
pub fn python_imports(python: &str, imports: &str, package: &str) -> bool {
    let found = Command::new(python)
        .args(["-c", imports])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    found || missing(&format!("{python} cannot `{imports}` ({package})"))
}

/// Whether `program` is on the PATH (it answers `--version`).
pub fn command(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    found || missing(&format!("{program} is not installed ({package})"))
}

/// Whether `path` exists; `what` says what it is.
pub fn exists(path: &Path, what: &str) -> bool {
    path.exists() || missing(&format!("{} is not there ({what})", path.display()))
}

/// The first of `paths` that exists.
pub fn file(paths: &[&'static str], package: &str) -> Option<&'static str> {
    let found = paths.iter().copied().find(|path| Path::new(path).exists());
    if found.is_none() {
        missing(&format!("none of {paths:?} exists ({package})"));
    }
    found
}

/// Says what is missing, and whether the test may go on (never: `false`).
/// Under CI it panics instead.
fn missing(what: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{test}: {what}; under CI nothing is skipped (.ci/run installs it)");
    }
    let line = format!("skipped {test}: {what}; .ci/run installs it\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// A virtualenv of the system's Python at `dir`, with `requirements` installed
/// from PyPI, made on the first call and found on later ones: its
/// `site-packages`, to put on the embedded interpreter's path as a user
/// points stackway at their own venv. `None` (the test skipped, saying why)
/// when `venv` or PyPI is out of reach.
pub fn python_venv(dir: &Path, requirements: &[&str]) -> Option<std::path::PathBuf> {
    // One at a time: two tests of a binary asking for the same virtualenv on a new
    // machine would both make it, and one pip would trip over the other's files.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let site = dir.join("lib/python3.11/site-packages");
    let ready = dir.join("stackway-requirements.txt");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&ready).is_ok_and(|had| had == wanted) {
        return Some(site);
    }
    let made = Command::new(SYSTEM_PYTHON)
        .args(["-m", "venv", "--clear"])
        .arg(dir)
        .status()
        .is_ok_and(|status| status.success());
    if !made {
        missing(&format!(
            "{SYSTEM_PYTHON} -m venv failed (Debian's python3.11-venv)"
        ));
        return None;
    }
    let installed = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(requirements)
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        missing(&format!("pip cannot install {requirements:?} from PyPI"));
        return None;
    }
    std::fs::write(&ready, wanted).ok()?;
    Some(site)
}
